/**
 * PyTorch's expandable segments (`PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`, Note
 * [Expandable Segments] in `c10/cuda/CUDACachingAllocator.cpp`, PyTorch 2.11): the second
 * faithful baseline, rule for rule, so that it reproduces PyTorch's recorded peaks.
 *
 * Note [Expandable segment rules]
 * -------------------------------
 * - Each stream and pool (small: rounded requests of at most 1 MiB; large: the rest) has one
 *   segment: a virtual reservation larger than the device (`addressReserve`) whose beginning is
 *   backed by pages, each page its own chunk (2 MiB in the small pool, 20 MiB in the large one,
 *   rounded up to the driver's granularity). Blocks tile the segment: allocated, free (mapped,
 *   in the pool) or unmapped (address space with no pages behind it).
 * - Requests are rounded as in the caching allocator (`roundSize`), and a block splits whenever
 *   the remainder is at least 512 B, in both pools: the remainder's tail may share a page with
 *   the next tensor, which is why this mode fragments less.
 * - Best fit per stream and pool, with one twist (`get_free_block`): a free block followed by
 *   unmapped space counts as its size plus that space, and the search moves on to the next
 *   larger block while that one is "smaller" in this sense. So a block that can be served without
 *   growing the segment is preferred to the free tail of the mapped space.
 * - When nothing fits, the segment grows (`try_allocate_expandable_block`): at the lowest
 *   unmapped address of the stream's pool whose run of free and unmapped blocks (starting with
 *   the free block just before it, if any) covers the request, only the missing pages are mapped,
 *   and the free block before them merges with them. A new reservation is made only when no
 *   segment of the stream and pool has the room.
 * - Pages go back to the driver only on `emptyCache` or under memory pressure (a refused
 *   `memCreate`): then every free block gives back the pages wholly inside it, a segment left
 *   wholly unmapped gives back its reservation, and the request is retried once. So peak reserved
 *   is the most that was ever mapped.
 *
 * Note [Growing by pages]
 * -----------------------
 * Growth creates all the pages first, then maps them, then sets access over the new contiguous
 * run in one call, as PyTorch does (`mapAndSetAccess`): set-access is the costly step (per call
 * it costs about as much as a map; `bench/calibration`) and its cost barely grows with the extent. A failure anywhere rolls back what this
 * growth did (unmap, release), so a refused step leaves the device and the policy as they were;
 * a refusal for lack of memory then sends the request down the release-and-retry path.
 *
 * Why one file of ~550 lines: like `Caching.ts`, it follows PyTorch's expandable-segment code rule
 * for rule, so that each rule reads beside PyTorch's own.
 *
 * @since 0.1.0
 */
import type { Allocator, PolicyCounters } from "../../Allocator.ts"
import { zeroCounters } from "../../Allocator.ts"
import { BestFit } from "./BestFit.ts"
import type { DriverPort } from "../../DriverPort.ts"
import { type DriverError, InvalidBlockError, InvalidRequestError, OutOfMemoryError } from "../../Errors.ts"
import { type Address, type BlockId, roundUp } from "../../Units.ts"
import { executeMap, executeUnmap } from "../../vmm/Plan.ts"
import {
  BlockState,
  BlockTable,
  checkRequest,
  type CachingConfig,
  defaultCachingConfig,
  divisionsTable,
  isOutOfMemory,
  kLargeBuffer,
  kMinBlockSize,
  kSmallBuffer,
  kSmallSize,
  largestFree,
  poolKey,
  roundSize
} from "./Caching.ts"

/**
 * The options that apply in expandable mode (PyTorch ignores the rest there); same meaning and
 * defaults as in `CachingConfig`.
 * @category models
 */
export type ExpandableConfig = Pick<CachingConfig, "maxSplitSize" | "maxNonSplitRoundingSize" | "roundupPower2Divisions">

/** PyTorch's defaults. @category constructors */
export const defaultExpandableConfig: ExpandableConfig = {
  maxSplitSize: defaultCachingConfig.maxSplitSize,
  maxNonSplitRoundingSize: defaultCachingConfig.maxNonSplitRoundingSize,
  roundupPower2Divisions: defaultCachingConfig.roundupPower2Divisions
}

const FREE = BlockState.free
const UNMAPPED = BlockState.unmapped

/**
 * PyTorch's expandable segments over a `DriverPort` (Note [Expandable segment rules]).
 * @category constructors
 */
export class ExpandableAllocator implements Allocator {
  readonly policy = "expandable" as const
  readonly config: ExpandableConfig
  /** Page (chunk) size of the small pool and of the large pool: 2 and 20 MiB, rounded up to the granularity. */
  readonly smallPage: number
  readonly largePage: number

  private readonly port: DriverPort
  private readonly divisions: Int32Array | undefined
  private readonly maxSplit: number
  private readonly maxNonSplitRounding: number
  /** Per stream and pool (`poolKey`): the free, mapped blocks, by (size, modelled address). */
  private readonly pools: Array<BestFit | undefined> = []
  /** Per stream and pool: the unmapped blocks, by modelled address. */
  private readonly unmapped: Array<Array<number> | undefined> = []
  private readonly blocks = new BlockTable()
  // Segments (reservations), by id (reused). A segment's modelled base is its id times `stride`,
  // so modelled addresses of different segments never overlap and ids order them.
  private readonly stride: number
  private readonly segPtr: Array<number> = []
  private readonly segSize: Array<number> = []
  private readonly segKey: Array<number> = []
  /** Per segment, the chunk handle behind each page (-1: none). */
  private readonly segHandles: Array<Float64Array> = []
  private readonly spareSegs: Array<number> = []
  /** Mapped bytes. */
  private reservedBytes = 0
  /** Bytes of the free, mapped blocks. */
  private cachedBytes = 0
  private released = 0
  /** The last refused reservation of the current request, if any. */
  private reserveRefused: DriverError | undefined = undefined

  constructor(port: DriverPort, config?: Partial<ExpandableConfig>) {
    this.port = port
    const c: ExpandableConfig = { ...defaultExpandableConfig, ...config }
    this.config = c
    const table = divisionsTable(c)
    this.divisions = table.some((d) => d > 1) ? table : undefined
    this.maxSplit = c.maxSplitSize
    this.maxNonSplitRounding = c.maxNonSplitRoundingSize
    const g = port.granularity
    if (!(Number.isSafeInteger(g) && g > 0)) {
      throw new InvalidRequestError({ detail: `expandable segments need a positive integer granularity, the device reports ${g}` })
    }
    // Pages must be whole multiples of the granularity (cuMemCreate and cuMemMap refuse other sizes).
    this.smallPage = roundUp(kSmallBuffer, g)
    this.largePage = roundUp(kLargeBuffer, g)
    this.stride = Math.max(this.reservation(0), this.reservation(1))
  }

  /**
   * The reservation of a segment: 1 1/8 of the device, in whole pages, as PyTorch reserves
   * (room to map pages at the end after pages earlier in the segment were unmapped). It is only
   * address space.
   */
  private reservation(key: number): number {
    const page = this.pageOf(key)
    const cap = this.port.capacity
    return Math.max(page, roundUp(cap + Math.floor(cap / 8), page))
  }

  private pageOf(key: number): number {
    return (key & 1) === 1 ? this.largePage : this.smallPage
  }

  malloc(size: number, stream: number): BlockId {
    checkRequest(size, stream)
    const rounded = roundSize(size, this.divisions)
    const key = poolKey(stream, rounded <= kSmallSize)
    let s = this.takeFreeBlock(key, rounded)
    if (s < 0) {
      this.reserveRefused = undefined
      s = this.grow(key, rounded)
      if (s < 0) {
        // Out of memory: give back every page no block uses, then retry once.
        this.releaseCached(true)
        this.reserveRefused = undefined
        s = this.grow(key, rounded)
      }
      if (s < 0) {
        // Out of address space, not memory: say so, as PyTorch does (the driver's error).
        if (this.reserveRefused !== undefined) throw this.reserveRefused
        throw new OutOfMemoryError({
          requested: size,
          stream,
          reserved: this.reservedBytes,
          free: this.cachedBytes,
          largestFreeBlock: largestFree(this.pools),
          capacity: this.port.capacity
        })
      }
    }
    return this.handOut(s, rounded, size)
  }

  free(block: BlockId, deferred = false): void {
    const s = this.blocks.slotOf(block, BlockState.allocated)
    if (s < 0) throw this.invalid(block, "free")
    if (deferred) this.blocks.state[s] = BlockState.pending
    else this.freeBlock(s)
  }

  complete(block: BlockId): void {
    const s = this.blocks.slotOf(block, BlockState.pending)
    if (s < 0) {
      throw new InvalidBlockError({ block, operation: "complete", detail: "not a block freed with deferred completion, or already completed" })
    }
    this.freeBlock(s)
  }

  address(block: BlockId): Address {
    const s = this.blocks.slotOf(block, BlockState.allocated)
    if (s < 0) throw this.invalid(block, "address")
    const seg = this.blocks.seg[s]!
    return (this.segPtr[seg]! + (this.blocks.addr[s]! - seg * this.stride)) as Address
  }

  size(block: BlockId): number {
    const s = this.blocks.slotOf(block, BlockState.allocated)
    if (s < 0) throw this.invalid(block, "size")
    return this.blocks.requested[s]!
  }

  emptyCache(): void {
    this.releaseCached(false)
  }

  reserved(): number {
    return this.reservedBytes
  }

  counters(): PolicyCounters {
    return { ...zeroCounters, releasedForPressure: this.released }
  }

  private invalid(block: BlockId, operation: string): InvalidBlockError {
    return new InvalidBlockError({ block, operation, detail: "not a live block (never allocated, or already freed)" })
  }

  // --- pools ---------------------------------------------------------------------------------------

  private poolInsert(s: number): void {
    const b = this.blocks
    const key = this.segKey[b.seg[s]!]!
    let p = this.pools[key]
    if (p === undefined) {
      p = new BestFit()
      this.pools[key] = p
    }
    p.insert(s, b.size[s]!, b.addr[s]!)
    this.cachedBytes += b.size[s]!
  }

  private poolRemove(s: number): void {
    const b = this.blocks
    this.pools[this.segKey[b.seg[s]!]!]!.remove(s, b.size[s]!, b.addr[s]!)
    this.cachedBytes -= b.size[s]!
  }

  private unmappedInsert(s: number): void {
    const key = this.segKey[this.blocks.seg[s]!]!
    let list = this.unmapped[key]
    if (list === undefined) {
      list = []
      this.unmapped[key] = list
    }
    const a = this.blocks.addr[s]!
    let i = list.length
    while (i > 0 && this.blocks.addr[list[i - 1]!]! > a) i--
    list.splice(i, 0, s)
  }

  private unmappedRemove(s: number): void {
    const list = this.unmapped[this.segKey[this.blocks.seg[s]!]!]!
    list.splice(list.indexOf(s), 1)
  }

  /** A block's size plus the unmapped space right after it: what it could grow to. */
  private expandableSize(s: number): number {
    const b = this.blocks
    const n = b.next[s]!
    return n >= 0 && b.state[n] === UNMAPPED ? b.size[s]! + b.size[n]! : b.size[s]!
  }

  /** PyTorch's `get_free_block` in expandable mode (Note [Expandable segment rules]). */
  private takeFreeBlock(key: number, rounded: number): number {
    const p = this.pools[key]
    if (p === undefined) return -1
    let i = p.findIndex(rounded)
    if (i < 0) return -1
    let grows = this.expandableSize(p.idAt(i))
    while (i + 1 < p.length) {
      const next = this.expandableSize(p.idAt(i + 1))
      if (!(next < grows)) break
      grows = next
      i++
    }
    const found = p.sizeAt(i)
    if (rounded < this.maxSplit && found >= this.maxSplit) return -1
    if (rounded >= this.maxSplit && found >= rounded + this.maxNonSplitRounding) return -1
    const s = p.idAt(i)
    this.poolRemove(s)
    return s
  }

  /** Splits when at least 512 B remain (both pools), marks allocated, mints the id. */
  private handOut(s: number, rounded: number, requested: number): BlockId {
    const b = this.blocks
    const remaining = b.size[s]! - rounded
    let a = s
    if (remaining >= kMinBlockSize) {
      const prev = b.prev[s]!
      a = b.make(rounded, b.addr[s]!, b.seg[s]!, prev, s, BlockState.allocated)
      if (prev >= 0) b.next[prev] = a
      b.prev[s] = a
      b.addr[s] = b.addr[s]! + rounded
      b.size[s] = remaining
      b.state[s] = FREE
      this.poolInsert(s)
    }
    b.state[a] = BlockState.allocated
    b.requested[a] = requested
    return b.mint(a)
  }

  private freeBlock(s: number): void {
    this.blocks.state[s] = FREE
    this.absorb(s, FREE)
    this.poolInsert(s)
  }

  /**
   * Merges into `s` its neighbours in `state` (free ones leave their pool, unmapped ones their
   * list). Mapped and unmapped blocks never merge with each other (PyTorch's `try_merge_blocks`).
   */
  private absorb(s: number, state: number): void {
    const b = this.blocks
    const p = b.prev[s]!
    if (p >= 0 && b.state[p] === state) {
      if (state === FREE) this.poolRemove(p)
      else this.unmappedRemove(p)
      b.addr[s] = b.addr[p]!
      b.size[s] = b.size[s]! + b.size[p]!
      const pp = b.prev[p]!
      b.prev[s] = pp
      if (pp >= 0) b.next[pp] = s
      b.drop(p)
    }
    const n = b.next[s]!
    if (n >= 0 && b.state[n] === state) {
      if (state === FREE) this.poolRemove(n)
      else this.unmappedRemove(n)
      b.size[s] = b.size[s]! + b.size[n]!
      const nn = b.next[n]!
      b.next[s] = nn
      if (nn >= 0) b.prev[nn] = s
      b.drop(n)
    }
  }

  // --- growing -------------------------------------------------------------------------------------

  /**
   * PyTorch's `try_allocate_expandable_block`: maps the missing pages where the stream's pool
   * has room and returns the block (out of its pool), or -1 when the device refused.
   */
  private grow(key: number, rounded: number): number {
    const b = this.blocks
    let c = this.findRoom(key, rounded)
    if (c < 0) return -1
    if (b.state[c] === UNMAPPED && !this.mapBlock(c, Math.min(b.size[c]!, rounded))) return -1
    while (b.size[c]! < rounded) {
      // c is free and followed by unmapped space: map what is missing; c merges into it.
      const n = b.next[c]!
      if (!this.mapBlock(n, Math.min(rounded - b.size[c]!, b.size[n]!))) return -1
      c = n
    }
    this.poolRemove(c)
    return c
  }

  /** PyTorch's `find_expandable_block`: the lowest-address room, else a new segment. */
  private findRoom(key: number, rounded: number): number {
    const b = this.blocks
    const list = this.unmapped[key]
    if (list !== undefined) {
      for (let i = 0; i < list.length; i++) {
        let c: number = list[i]!
        const p = b.prev[c]!
        if (p >= 0 && (b.state[p] === FREE || b.state[p] === UNMAPPED)) c = p
        let bytes = 0
        for (let x: number = c; bytes < rounded && x >= 0 && (b.state[x] === FREE || b.state[x] === UNMAPPED); x = b.next[x]!) {
          bytes += b.size[x]!
        }
        if (bytes >= rounded) return c
      }
    }
    return this.newSegment(key)
  }

  /**
   * A new reservation for the stream and pool, as one unmapped block; -1 if the driver refused
   * it for lack of (address) space, after which the request goes down the release-and-retry path
   * like any refusal and, should it fail again, reports the driver's error.
   */
  private newSegment(key: number): number {
    const bytes = this.reservation(key)
    let ptr: number
    try {
      ptr = this.port.addressReserve(bytes)
    } catch (e) {
      if (!isOutOfMemory(e)) throw e
      this.reserveRefused = e as DriverError
      return -1
    }
    const seg = this.spareSegs.length > 0 ? this.spareSegs.pop()! : this.segSize.length
    this.segPtr[seg] = ptr
    this.segSize[seg] = bytes
    this.segKey[seg] = key
    this.segHandles[seg] = new Float64Array(bytes / this.pageOf(key)).fill(-1)
    const s = this.blocks.make(bytes, seg * this.stride, seg, -1, -1, UNMAPPED)
    this.unmappedInsert(s)
    return s
  }

  /**
   * PyTorch's `map_block`: backs the first `bytes` of unmapped block `s` (rounded up to pages)
   * and merges it with free neighbours; false if the device refused for lack of memory.
   */
  private mapBlock(s: number, bytes: number): boolean {
    const b = this.blocks
    const seg = b.seg[s]!
    const page = this.pageOf(this.segKey[seg]!)
    const offset = b.addr[s]! - seg * this.stride
    const begin = offset / page
    const end = Math.ceil((offset + bytes) / page)
    if (!this.mapPages(seg, begin, end)) return false
    const mapped = (end - begin) * page
    this.unmappedRemove(s)
    b.state[s] = FREE
    if (mapped < b.size[s]!) {
      const n = b.next[s]!
      const rest = b.make(b.size[s]! - mapped, b.addr[s]! + mapped, seg, s, n, UNMAPPED)
      if (n >= 0) b.prev[n] = rest
      b.next[s] = rest
      b.size[s] = mapped
      this.unmappedInsert(rest)
    }
    this.absorb(s, FREE)
    this.poolInsert(s)
    this.reservedBytes += mapped
    return true
  }

  /**
   * Creates, maps and gives access to pages [begin, end) of a segment (Note [Growing by pages]),
   * as one map plan (Note [Map plans] in `vmm/Plan.ts`); false if the device refused for lack of
   * memory, with nothing changed.
   */
  private mapPages(seg: number, begin: number, end: number): boolean {
    const page = this.pageOf(this.segKey[seg]!)
    const sizes: Array<number> = []
    for (let i = begin; i < end; i++) sizes.push(page)
    const handles: Array<number> = []
    try {
      executeMap(this.port, { reserve: 0, at: this.segPtr[seg]! + begin * page, sizes, handles, create: true })
    } catch (e) {
      if (isOutOfMemory(e)) return false
      throw e
    }
    this.segHandles[seg]!.set(handles, begin)
    return true
  }

  // --- giving back ---------------------------------------------------------------------------------

  /**
   * PyTorch's `release_cached_blocks` in expandable mode (`release_blocks`, large pool first):
   * every free block gives back the pages wholly inside it; a segment left wholly unmapped gives
   * back its reservation. Returns nothing: the caller retries.
   */
  private releaseCached(pressure: boolean): void {
    const b = this.blocks
    for (const parity of [1, 0]) {
      const toUnmap: Array<number> = []
      for (let key = parity; key < this.pools.length; key += 2) {
        const p = this.pools[key]
        if (p !== undefined) for (let i = 0; i < p.length; i++) toUnmap.push(p.idAt(i))
      }
      // Free blocks are never adjacent (they merge), so unmapping one leaves the others intact.
      for (const s of toUnmap) {
        const pages = this.unmapBlock(s)
        if (pressure) this.released += pages
      }
      // Segments left with nothing mapped (also one whose first growth was refused).
      for (let key = parity; key < this.unmapped.length; key += 2) {
        const list = this.unmapped[key]
        if (list === undefined) continue
        for (let i = list.length - 1; i >= 0; i--) {
          const s = list[i]!
          if (b.prev[s]! < 0 && b.next[s]! < 0) this.releaseSegment(s)
        }
      }
    }
  }

  /** PyTorch's `unmap_block`: gives back the pages wholly inside free block `s`; returns how many. */
  private unmapBlock(s: number): number {
    const b = this.blocks
    const seg = b.seg[s]!
    const page = this.pageOf(this.segKey[seg]!)
    const segBase = seg * this.stride
    const offset = b.addr[s]! - segBase
    const begin = Math.ceil(offset / page)
    const end = Math.floor((offset + b.size[s]!) / page)
    if (begin >= end) return 0
    const handles = this.segHandles[seg]!
    executeUnmap(this.port, {
      at: this.segPtr[seg]! + begin * page,
      bytes: (end - begin) * page,
      handles: handles.subarray(begin, end),
      freeBase: 0,
      freeBytes: 0
    })
    handles.fill(-1, begin, end)
    const start = segBase + begin * page
    const bytes = (end - begin) * page
    this.poolRemove(s)
    const before = start - b.addr[s]!
    if (before > 0) {
      const p = b.prev[s]!
      const x = b.make(before, b.addr[s]!, seg, p, s, FREE)
      if (p >= 0) b.next[p] = x
      b.prev[s] = x
      this.poolInsert(x)
    }
    const after = b.size[s]! - before - bytes
    if (after > 0) {
      const n = b.next[s]!
      const y = b.make(after, start + bytes, seg, s, n, FREE)
      if (n >= 0) b.prev[n] = y
      b.next[s] = y
      this.poolInsert(y)
    }
    b.addr[s] = start
    b.size[s] = bytes
    b.state[s] = UNMAPPED
    this.absorb(s, UNMAPPED)
    this.unmappedInsert(s)
    this.reservedBytes -= bytes
    return end - begin
  }

  /** Frees the reservation of a segment that is one unmapped block. */
  private releaseSegment(s: number): void {
    const seg = this.blocks.seg[s]!
    this.port.addressFree(this.segPtr[seg]! as Address, this.segSize[seg]!)
    this.unmappedRemove(s)
    this.blocks.drop(s)
    this.spareSegs.push(seg)
  }
}
