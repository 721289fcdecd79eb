/**
 * Growable typed columns for decoding traces of any length.
 *
 * Note [Growing columns]
 * ----------------------
 * A decoder does not know how many events a stream holds until it ends, and a trace may hold
 * hundreds of millions. Doubling one typed array copies it, and for a moment holds the old and
 * the new: 3x the final size at the worst moment. Resizable `ArrayBuffer`s grow in place, but V8
 * compiles loads and stores on them 2-20x slower than on plain typed arrays (measured here), and
 * the replay loop reads the columns billions of times. So a column is a list of plain chunks of
 * 2^20 elements (the first one grows fourfold from 64K, so small traces stay small), addressed as
 * `chunk[i >>> 20][i & mask]`; when decoding ends, each column becomes one plain typed array,
 * copied chunk by chunk while the chunks are let go, column after column: the peak is the
 * chunks plus one column.
 *
 * @since 0.2.0
 */

/** The most events (and allocations) a trace may hold: ids are `Int32Array` indexes. @category models */
export const MAX_EVENTS = 2 ** 31 - 1

const SHIFT = 20
const CHUNK = 1 << SHIFT
const MASK = CHUNK - 1
/** The first chunk's first size; it grows by 4x up to a whole chunk (few copies, small traces small). */
const FIRST = 1 << 16

type Typed = Uint8Array | Uint16Array | Int32Array | Float64Array
type TypedConstructor<A extends Typed> = new(length: number) => A

/**
 * One growable column of numbers (Note [Growing columns]).
 * @category models
 */
export class Column<A extends Typed> {
  /** Elements there is room for. */
  capacity = 0
  private chunks: Array<A> = []
  private readonly make: TypedConstructor<A>

  constructor(make: TypedConstructor<A>) {
    this.make = make
  }

  get(i: number): number {
    return this.chunks[i >>> SHIFT]![i & MASK]!
  }

  set(i: number, v: number): void {
    this.chunks[i >>> SHIFT]![i & MASK] = v
  }

  /** Makes room for at least `length` elements. */
  grow(length: number): void {
    if (length > MAX_EVENTS) throw new RangeError(`more than ${MAX_EVENTS} elements`)
    while (this.capacity < length) {
      if (this.capacity < CHUNK) {
        const next = new this.make(Math.min(CHUNK, Math.max(FIRST, this.capacity * 4, length)))
        if (this.chunks.length > 0) next.set(this.chunks[0]!)
        this.chunks[0] = next
        this.capacity = next.length
      } else {
        this.chunks.push(new this.make(CHUNK))
        this.capacity += CHUNK
      }
    }
  }

  /**
   * The first `length` elements as one typed array; the column is empty afterwards. Takes the
   * chunks' memory once more at most for one column at a time.
   */
  take(length: number): A {
    const chunks = this.chunks
    this.chunks = []
    this.capacity = 0
    if (chunks.length <= 1) {
      const only = chunks[0] ?? new this.make(0)
      // Keep a small trace's memory small: copy when most of the chunk would be unused.
      return (only.length > 2 * length + 1024 ? only.slice(0, length) : only.subarray(0, length)) as A
    }
    const out = new this.make(length)
    for (let c = 0; c < chunks.length && c * CHUNK < length; c++) {
      const chunk = chunks[c]!
      out.set(length - c * CHUNK >= CHUNK ? chunk : chunk.subarray(0, length - c * CHUNK), c * CHUNK)
      // Let go of each chunk once copied.
      chunks[c] = undefined as unknown as A
    }
    return out
  }
}
