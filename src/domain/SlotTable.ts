/**
 * Slots with generations: the id table behind every `BlockId` a policy hands out.
 *
 * Note [Block handles]
 * --------------------
 * A policy keeps what a handle names in parallel arrays indexed by slot, and reuses the slots of
 * dead entries. The `BlockId` it hands out is the slot plus a generation bumped each time the slot
 * is handed out again (`generation * 2^24 + slot`, generations wrapping below 2^29 so that every id
 * is an exact double, at most 2^53 - 1, however long the process runs). A stale id (a double
 * free, or a free of a slot that now holds another block) then names the wrong generation and is
 * refused with `InvalidBlockError` instead of freeing someone else's memory.
 *
 * The table owns the generations and a state per slot (its meaning is the owner's; one value
 * means "dead"); owners extend it with their own payload arrays and grow them in `resize`.
 *
 * @since 0.1.0
 */
import type { BlockId } from "./Units.ts"

/** Slots an id can name. @category constants */
export const SLOT_LIMIT = 2 ** 24
const GEN_MASK = 2 ** 29 - 1

/**
 * A table of slots with generations and a state per slot (Note [Block handles]).
 * @category models
 */
export class SlotTable {
  gen: Int32Array<ArrayBuffer>
  state: Uint8Array<ArrayBuffer>
  /** Slots ever used; slots at or past it are fresh. */
  protected used = 0
  /** Dead slots, reused first (last freed, first reused). */
  private readonly spare: Array<number> = []

  /** The state of a slot not in use. */
  readonly dead: number

  constructor(dead: number, capacity = 256) {
    this.dead = dead
    this.gen = new Int32Array(capacity)
    this.state = new Uint8Array(capacity).fill(dead)
  }

  /** Whether a slot can be taken without passing `SLOT_LIMIT`. */
  hasRoom(): boolean {
    return this.spare.length > 0 || this.used < SLOT_LIMIT
  }

  /** A slot in `state`: a dead one reused, else a fresh one (the arrays grow as needed). */
  take(state: number): number {
    let s: number
    if (this.spare.length > 0) s = this.spare.pop()!
    else {
      if (this.used === this.gen.length) this.resize(this.gen.length * 2)
      s = this.used++
    }
    this.state[s] = state
    return s
  }

  /** Marks slot `s` dead and available for reuse. */
  drop(s: number): void {
    this.state[s] = this.dead
    this.spare.push(s)
  }

  /** The id of the entry in slot `s` as it is handed out: a fresh generation of the slot. */
  mint(s: number): BlockId {
    const g = (this.gen[s]! + 1) & GEN_MASK
    this.gen[s] = g
    return (g * SLOT_LIMIT + s) as BlockId
  }

  /** The id slot `s` was last handed out under. */
  idOf(s: number): BlockId {
    return (this.gen[s]! * SLOT_LIMIT + s) as BlockId
  }

  /** The slot `id` names if it is of the slot's current generation, whatever its state; else -1. */
  find(id: number): number {
    if (!(Number.isSafeInteger(id) && id >= 0)) return -1
    const s = id % SLOT_LIMIT
    if (s >= this.used || this.gen[s] !== (id - s) / SLOT_LIMIT) return -1
    return s
  }

  /** The slot `id` names if it is of the current generation and in `state`; else -1. */
  slotOf(id: number, state: number): number {
    const s = this.find(id)
    return s >= 0 && this.state[s] === state ? s : -1
  }

  /** Grows the arrays to `n` slots; owners with payload arrays override it and call `super`. */
  protected resize(n: number): void {
    if (n > SLOT_LIMIT) throw new RangeError(`more than ${SLOT_LIMIT} blocks`)
    const g = new Int32Array(n)
    g.set(this.gen)
    this.gen = g
    const st = new Uint8Array(n).fill(this.dead)
    st.set(this.state)
    this.state = st
  }
}

/** A copy of `a` with room for `n` entries. @category internals */
export const grownF64 = (a: Float64Array<ArrayBuffer>, n: number): Float64Array<ArrayBuffer> => {
  const b = new Float64Array(n)
  b.set(a)
  return b
}

/** A copy of `a` with room for `n` entries. @category internals */
export const grownI32 = (a: Int32Array<ArrayBuffer>, n: number): Int32Array<ArrayBuffer> => {
  const b = new Int32Array(n)
  b.set(a)
  return b
}
