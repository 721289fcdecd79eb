/**
 * The index from a trace's allocation ids to dense allocation numbers (0, 1, 2, ... in order of
 * allocation), for traces of any length.
 *
 * Note [Id index]
 * ---------------
 * A JavaScript `Map` holds at most 2^24 (16.7M) entries, and costs about 50-80 bytes per entry;
 * a long trace has more allocations than that. Recorders number allocations in order, so the
 * index has three modes, and moves to the next only when the ids seen so far require it:
 * - identity: every id so far equals its dense number (0, 1, 2, ...): nothing is stored;
 * - increasing: ids grow with each allocation: they are kept in one `Float64Array`, searched by
 *   bisection (8 bytes per allocation);
 * - hashed: anything else: an open-addressing hash table over typed arrays (24 bytes per
 *   allocation at its fullest), with no ceiling but memory.
 * Every id ever allocated stays in the index, so that an id used twice is found.
 *
 * @since 0.2.0
 */
import { Column } from "./Columns.ts"

const IDENTITY = 0
const INCREASING = 1
const HASHED = 2

/** Mixes an id (a safe integer) into a table slot. */
const hash = (id: number, mask: number): number => {
  const lo = id >>> 0
  const hi = (id / 4294967296) >>> 0
  return (Math.imul(lo ^ Math.imul(hi, 0x9e3779b1), 0x85ebca6b) ^ (lo >>> 15)) & mask
}

/**
 * Raw id -> dense allocation number (Note [Id index]).
 * @category models
 */
export class IdIndex {
  /** Number of ids added; the next dense number. */
  size = 0
  private mode = IDENTITY
  private readonly ids = new Column(Float64Array)
  private keys = new Float64Array(0)
  private values = new Int32Array(0)
  private mask = -1

  /** The dense number of `id`, or -1. */
  get(id: number): number {
    switch (this.mode) {
      case IDENTITY:
        return id < this.size ? id : -1
      case INCREASING: {
        const ids = this.ids
        let lo = 0
        let hi = this.size - 1
        while (lo <= hi) {
          const mid = (lo + hi) >>> 1
          const v = ids.get(mid)
          if (v === id) return mid
          if (v < id) lo = mid + 1
          else hi = mid - 1
        }
        return -1
      }
      default: {
        const keys = this.keys
        const mask = this.mask
        for (let s = hash(id, mask);; s = (s + 1) & mask) {
          const k = keys[s]!
          if (k === id) return this.values[s]!
          if (k === -1) return -1
        }
      }
    }
  }

  /** Adds `id` (not yet present: check with `get`) and returns its dense number. */
  add(id: number): number {
    const d = this.size
    if (this.mode === IDENTITY) {
      if (id === d) {
        this.size++
        return d
      }
      this.ids.grow(Math.max(d + 1, 1024))
      for (let i = 0; i < d; i++) this.ids.set(i, i)
      this.mode = INCREASING
    }
    if (this.mode === INCREASING) {
      if (d === 0 || id > this.ids.get(d - 1)) {
        this.ids.grow(d + 1)
        this.ids.set(d, id)
        this.size++
        return d
      }
      this.rehash(2 ** Math.ceil(Math.log2(Math.max(1024, 4 * (d + 1)))))
      for (let i = 0; i < d; i++) this.put(this.ids.get(i), i)
      this.ids.take(0)
      this.mode = HASHED
    }
    if (2 * (d + 1) > this.keys.length) {
      const keys = this.keys
      const values = this.values
      this.rehash(this.keys.length * 2)
      for (let s = 0; s < keys.length; s++) if (keys[s]! !== -1) this.put(keys[s]!, values[s]!)
    }
    this.put(id, d)
    this.size++
    return d
  }

  private rehash(slots: number): void {
    this.keys = new Float64Array(slots).fill(-1)
    this.values = new Int32Array(slots)
    this.mask = slots - 1
  }

  private put(id: number, d: number): void {
    const keys = this.keys
    const mask = this.mask
    let s = hash(id, mask)
    while (keys[s]! !== -1) s = (s + 1) & mask
    keys[s] = id
    this.values[s] = d
  }
}
