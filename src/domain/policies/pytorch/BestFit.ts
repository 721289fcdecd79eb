/**
 * A best-fit index over free blocks: ordered by (size, tie), where `tie` is whatever breaks ties
 * between equal sizes (an address, a recency stamp). `bestFit(n)` is the smallest block of at
 * least `n` bytes, the lowest tie among equals: PyTorch's `std::set<Block*, BlockComparator>`.
 *
 * Note [Sorted arrays for free lists]
 * -----------------------------------
 * The entries live in three parallel typed arrays kept sorted, searched by binary search and
 * shifted in place. Free lists in the traces hold tens to a few thousand blocks; at that size a
 * memmove of the tail costs less than the pointer chasing and allocation of a balanced tree in
 * JavaScript, and lookups and updates allocate nothing. The policies update their free lists two
 * to four times per allocation and free, which makes this the largest part of replay time: typed
 * columns shifted in place (a short loop for the few entries a typical update moves, `copyWithin`
 * past that) took about a third off each update compared with plain arrays and `splice`, which
 * allocates the array it returns on every call. Ids are doubles, as block ids carry a generation.
 * Removal needs the entry's exact (size, tie), which every caller knows (it is the block's state).
 *
 * @since 0.1.0
 */

/** Below this many entries to move, a loop beats `copyWithin`'s call overhead. */
const LOOP_MOVE = 16

/** @category models */
export class BestFit {
  private sizes: Float64Array
  private ties: Float64Array
  private ids: Float64Array
  private n = 0
  /** Where the keyed methods read an id's size and tie (Note [Keyed entries]), if given. */
  private readonly keySize: ReadonlyArray<number>
  private readonly keyTie: ReadonlyArray<number>

  /**
   * `keys`: the owner's arrays of sizes and ties by id, for the keyed methods (Note [Keyed
   * entries]); the arrays must be the same objects for the index's life.
   */
  constructor(capacity = 64, keys?: { readonly size: ReadonlyArray<number>; readonly tie: ReadonlyArray<number> }) {
    this.sizes = new Float64Array(capacity)
    this.ties = new Float64Array(capacity)
    this.ids = new Float64Array(capacity)
    this.keySize = keys?.size ?? []
    this.keyTie = keys?.tie ?? []
  }

  /** Number of entries. */
  get length(): number {
    return this.n
  }

  /** Index of the first entry not less than (size, tie). */
  private lowerBound(size: number, tie: number): number {
    const sizes = this.sizes
    const ties = this.ties
    let lo = 0
    let hi = this.n
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      const s = sizes[mid]!
      if (s < size || (s === size && ties[mid]! < tie)) lo = mid + 1
      else hi = mid
    }
    return lo
  }

  private grow(): void {
    const cap = this.ids.length * 2
    const sizes = new Float64Array(cap)
    sizes.set(this.sizes)
    this.sizes = sizes
    const ties = new Float64Array(cap)
    ties.set(this.ties)
    this.ties = ties
    const ids = new Float64Array(cap)
    ids.set(this.ids)
    this.ids = ids
  }

  insert(id: number, size: number, tie: number): void {
    if (this.n === this.ids.length) this.grow()
    // the free slot past the last entry moves to the new entry's place (Note [Replace in place])
    this.moveTo(this.n, id, size, tie)
    this.n++
  }

  /** Removes the entry (size, tie) holding `id`; returns whether it was there. */
  remove(id: number, size: number, tie: number): boolean {
    const i = this.find(id, size, tie)
    if (i < 0) return false
    this.removeAt(i)
    return true
  }

  /**
   * Replaces the entry (size, tie) holding `id` with (`newId`, `newSize`, `newTie`); returns
   * whether it was there (if not, nothing changes). The same order as `remove` then `insert`
   * (Note [Replace in place]).
   *
   * Note [Replace in place]
   * -----------------------
   * Splitting a free block and merging freed neighbours take one entry out and put one back,
   * usually near where it was (a block a little smaller or larger). Done as one step, the entries
   * between the two places move by one, once, and the new place is found in one search; a
   * `remove` and an `insert` each search and each move the whole tail past their place. The new
   * place among the other entries is the lower bound of the new key in the full column, less one
   * when it lies past the old entry (the old entry, smaller than the new key, counted in it);
   * equal keys keep the order `insert` gives them (first among equals).
   */
  replace(id: number, size: number, tie: number, newId: number, newSize: number, newTie: number): boolean {
    const i = this.find(id, size, tie)
    if (i < 0) return false
    this.moveTo(i, newId, newSize, newTie)
    return true
  }

  /** The position of the entry (size, tie) holding `id`, or -1. */
  private find(id: number, size: number, tie: number): number {
    let i = this.lowerBound(size, tie)
    const n = this.n
    const sizes = this.sizes
    const ties = this.ties
    const ids = this.ids
    while (i < n && ids[i] !== id) {
      if (sizes[i] !== size || ties[i] !== tie) return -1
      i++
    }
    return i < n ? i : -1
  }

  /** Replaces the entry at position `i` (Note [Replace in place]). */
  private moveTo(i: number, newId: number, newSize: number, newTie: number): void {
    const sizes = this.sizes
    const ties = this.ties
    const ids = this.ids
    let j = this.lowerBound(newSize, newTie)
    if (j > i) {
      j--
      if (j - i > LOOP_MOVE) {
        sizes.copyWithin(i, i + 1, j + 1)
        ties.copyWithin(i, i + 1, j + 1)
        ids.copyWithin(i, i + 1, j + 1)
      } else {
        for (let k = i; k < j; k++) {
          sizes[k] = sizes[k + 1]!
          ties[k] = ties[k + 1]!
          ids[k] = ids[k + 1]!
        }
      }
    } else if (i - j > LOOP_MOVE) {
      sizes.copyWithin(j + 1, j, i)
      ties.copyWithin(j + 1, j, i)
      ids.copyWithin(j + 1, j, i)
    } else {
      for (let k = i; k > j; k--) {
        sizes[k] = sizes[k - 1]!
        ties[k] = ties[k - 1]!
        ids[k] = ids[k - 1]!
      }
    }
    sizes[j] = newSize
    ties[j] = newTie
    ids[j] = newId
  }

  /** Removes the entry at position `i`. */
  private removeAt(i: number): void {
    const n = this.n
    const sizes = this.sizes
    const ties = this.ties
    const ids = this.ids
    if (n - i > LOOP_MOVE) {
      sizes.copyWithin(i, i + 1, n)
      ties.copyWithin(i, i + 1, n)
      ids.copyWithin(i, i + 1, n)
    } else {
      for (let k = i + 1; k < n; k++) {
        sizes[k - 1] = sizes[k]!
        ties[k - 1] = ties[k]!
        ids[k - 1] = ids[k]!
      }
    }
    this.n = n - 1
  }

  // --- keyed entries -----------------------------------------------------------------------------
  //
  // Note [Keyed entries]
  // --------------------
  // The stitching allocator's free blocks are keyed by (size, start address), and an address is
  // past the small-integer range: passed to a call the optimizer does not inline, it becomes a
  // heap number, 16 bytes of garbage per call (Note [Small arguments] in the stitching
  // allocator's `Segments.ts`). Two updates per operation made a million of them per replay of
  // llama1b_ckpt_varlen, a sixth of what it allocated, and young-generation collections then ran
  // inside the replay. An index built with `keys` reads an id's size and tie from the owner's
  // arrays itself, so these methods take ids and positions only. An entry's keys in those arrays
  // must be the ones it was inserted with until it is found (`indexOfKeyed`) or removed.

  /** Inserts `id` under its keys. */
  insertKeyed(id: number): void {
    this.insert(id, this.keySize[id]!, this.keyTie[id]!)
  }

  /** The position of `id` under its keys, or -1. */
  indexOfKeyed(id: number): number {
    return this.find(id, this.keySize[id]!, this.keyTie[id]!)
  }

  /** Removes `id`, found under its keys; returns whether it was there. */
  removeKeyed(id: number): boolean {
    const i = this.indexOfKeyed(id)
    if (i < 0) return false
    this.removeAt(i)
    return true
  }

  /** Puts `newId`, under its keys as they are now, in place of the entry at position `i`. */
  moveKeyed(i: number, newId: number): void {
    this.moveTo(i, newId, this.keySize[newId]!, this.keyTie[newId]!)
  }

  /** Removes the entry at position `i` (from `indexOfKeyed`). */
  removeKeyedAt(i: number): void {
    this.removeAt(i)
  }

  /** Position of the smallest entry of at least `size` bytes (lowest tie first), or -1. */
  findIndex(size: number): number {
    const i = this.lowerBound(size, -Infinity)
    return i < this.n ? i : -1
  }

  /** The id of the smallest entry of at least `size` bytes (lowest tie first), or -1. */
  bestFit(size: number): number {
    const i = this.lowerBound(size, -Infinity)
    return i < this.n ? this.ids[i]! : -1
  }

  /** The entry at a position (0 = smallest). */
  idAt(i: number): number {
    return this.ids[i]!
  }
  sizeAt(i: number): number {
    return this.sizes[i]!
  }

  /** The largest entry's size, or 0. */
  largest(): number {
    return this.n === 0 ? 0 : this.sizes[this.n - 1]!
  }
  tieAt(i: number): number {
    return this.ties[i]!
  }

  clear(): void {
    this.n = 0
  }
}
