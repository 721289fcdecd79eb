/**
 * A best-fit index over free blocks: ordered by (size, tie), where `tie` is whatever breaks ties
 * between equal sizes (an address, a recency stamp). `bestFit(n)` is the smallest block of at
 * least `n` bytes, the lowest tie among equals: PyTorch's `std::set<Block*, BlockComparator>`.
 *
 * Note [Sorted arrays for free lists]
 * -----------------------------------
 * The entries live in three parallel arrays kept sorted, searched by binary search and updated
 * with `splice`. Free lists in the traces hold tens to a few thousand blocks; at that size a
 * memmove of the tail costs less than the pointer chasing and allocation of a balanced tree in
 * JavaScript, and lookups stay allocation-free. Removal needs the entry's exact (size, tie),
 * which every caller knows (it is the block's own state).
 *
 * @since 0.1.0
 */

/** @category models */
export class BestFit {
  private readonly sizes: Array<number> = []
  private readonly ties: Array<number> = []
  private readonly ids: Array<number> = []

  /** Number of entries. */
  get length(): number {
    return this.ids.length
  }

  /** Index of the first entry not less than (size, tie). */
  private lowerBound(size: number, tie: number): number {
    const sizes = this.sizes
    const ties = this.ties
    let lo = 0
    let hi = sizes.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      const s = sizes[mid]!
      if (s < size || (s === size && ties[mid]! < tie)) lo = mid + 1
      else hi = mid
    }
    return lo
  }

  insert(id: number, size: number, tie: number): void {
    const i = this.lowerBound(size, tie)
    this.sizes.splice(i, 0, size)
    this.ties.splice(i, 0, tie)
    this.ids.splice(i, 0, id)
  }

  /** Removes the entry (size, tie) holding `id`; returns whether it was there. */
  remove(id: number, size: number, tie: number): boolean {
    let i = this.lowerBound(size, tie)
    while (i < this.ids.length && this.sizes[i] === size && this.ties[i] === tie) {
      if (this.ids[i] === id) {
        this.sizes.splice(i, 1)
        this.ties.splice(i, 1)
        this.ids.splice(i, 1)
        return true
      }
      i++
    }
    return false
  }

  /** Position of the smallest entry of at least `size` bytes (lowest tie first), or -1. */
  findIndex(size: number): number {
    const i = this.lowerBound(size, -Infinity)
    return i < this.ids.length ? i : -1
  }

  /** The id of the smallest entry of at least `size` bytes (lowest tie first), or -1. */
  bestFit(size: number): number {
    const i = this.findIndex(size)
    return i < 0 ? -1 : this.ids[i]!
  }

  /** The entry at a position (0 = smallest). */
  idAt(i: number): number {
    return this.ids[i]!
  }
  sizeAt(i: number): number {
    return this.sizes[i]!
  }
  tieAt(i: number): number {
    return this.ties[i]!
  }

  /** The largest entry's size, or 0. */
  largest(): number {
    return this.sizes.length === 0 ? 0 : this.sizes[this.sizes.length - 1]!
  }

  clear(): void {
    this.sizes.length = 0
    this.ties.length = 0
    this.ids.length = 0
  }
}
