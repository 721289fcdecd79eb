/**
 * PyTorch's native CUDA caching allocator (`c10/cuda/CUDACachingAllocator.cpp`, PyTorch 2.11),
 * faithful to the byte: the baseline every comparison in the project is measured against (it
 * reproduces PyTorch's recorded peak reserved on the bundled traces). Also home of the size rules and the block table that the expandable
 * baseline (`Expandable.ts`) shares, since they are the same rules in PyTorch.
 *
 * Note [Caching allocator rules]
 * ------------------------------
 * - A request is rounded to 512 B (`roundSize`; optionally to a power-of-two division).
 * - Rounded requests of at most 1 MiB are served from the small pool, whose segments are 2 MiB;
 *   larger ones from the large pool, whose segments are 20 MiB for requests under 10 MiB and
 *   the request rounded up to 2 MiB otherwise (`segmentSize`).
 * - Pools are kept per stream. A request takes the smallest free block of its stream and pool
 *   that fits, the lowest address among equal sizes (`BestFit`). Blocks of at least
 *   `maxSplitSize` serve only requests of at least `maxSplitSize`, and those only from a block
 *   less than `maxNonSplitRoundingSize` (20 MiB) larger.
 * - The block found is split when the remainder is at least 512 B (small pool) or more than
 *   1 MiB (large pool, and only for requests under `maxSplitSize`); the request takes the low
 *   part and the remainder goes back to the pool.
 * - A freed block merges with its free neighbours, which are always in the same segment
 *   (blocks are linked only within a segment), then goes back to its pool.
 * - Only when no cached block fits is a new segment allocated (`cuMemAlloc`). If the device
 *   refuses: free cached oversize segments (only when `maxSplitSize` is set), retry; free every
 *   cached segment that is wholly free, retry; then out of memory.
 *
 * Note [Modelled device addresses]
 * --------------------------------
 * Addresses decide one thing in PyTorch's allocator: which of two equal-size free blocks of
 * different segments is taken (`BlockComparatorSize` orders by size, then pointer). Within a
 * segment, offsets order blocks. So that the choice is the same on the simulator and on any GPU,
 * the policy ignores the addresses the port returns. Instead it keeps its own model of where the
 * driver's `cudaMalloc` puts a segment: in the lowest-address hole that fits, else below
 * everything so far. The driver takes address space in arenas (`kAddressArena`, rounded up to
 * hold the segment), so the unused rest of the newest arena is a hole too, as is the space of a
 * freed segment. Successive small segments thus climb inside an arena while arenas descend.
 * Placing every segment below the last one instead (arenas as small as the segment) also gave
 * the recorded peaks, but it mistimed 26 of the 171 recorded segment allocations of the LoRA trace
 * (small-pool ties, where blocks of equal size in different 2 MiB segments are common). With
 * arenas, all 967 recorded allocations of the four traces happen at the exact request where
 * PyTorch made them. Block ties use these modelled addresses; `address(block)` uses the port's
 * real one.
 *
 * Blocks live in a table of parallel typed arrays indexed by slot, over the slot table shared
 * with the stitching policy (Note [Block handles] in `SlotTable.ts`); slots are reused once a
 * block is merged away.
 *
 * Note [Deferred frees]
 * ---------------------
 * `free(block, true)` is PyTorch's free of a block with recorded stream uses: the block is no
 * longer allocated but its memory is not reusable until the events complete (`complete`). In
 * PyTorch it has `event_count > 0`: it is in no pool, neighbours do not merge with it, and its
 * segment is not wholly free. PyTorch's out-of-memory path and `emptyCache` first synchronize on
 * those events; a policy cannot wait for a device, so here they stay pending until `complete`.
 *
 * Why one file of ~700 lines: it follows the structure of PyTorch's `CUDACachingAllocator.cpp`
 * function by function (malloc's chain of fallbacks, split and merge rules, release, the options), so
 * that each rule can be read beside PyTorch's own; splitting it would break that correspondence.
 *
 * @since 0.1.0
 */
import type { Allocator, PolicyCounters } from "../../Allocator.ts"
import { zeroCounters } from "../../Allocator.ts"
import { BestFit } from "./BestFit.ts"
import type { DriverPort } from "../../DriverPort.ts"
import { DriverError, InvalidBlockError, InvalidRequestError, OutOfMemoryError } from "../../Errors.ts"
import { grownF64, grownI32, SlotTable } from "../../SlotTable.ts"
import { checkSize, checkStream } from "../../Request.ts"
import { type Address, type BlockId, MiB } from "../../Units.ts"

// --- PyTorch's constants -------------------------------------------------------------------------

/** All sizes are rounded to at least this (`kMinBlockSize`). @category constants */
export const kMinBlockSize = 512
/** Largest "small" request (`kSmallSize`). @category constants */
export const kSmallSize: number = MiB(1)
/** Small-pool segment size, and the expandable small-pool page (`kSmallBuffer`). @category constants */
export const kSmallBuffer: number = MiB(2)
/** Requests under this (and over 1 MiB) get a 20 MiB segment (`kMinLargeAlloc`). @category constants */
export const kMinLargeAlloc: number = MiB(10)
/** Large-pool segment for mid-size requests, and the expandable large-pool page (`kLargeBuffer`). @category constants */
export const kLargeBuffer: number = MiB(20)
/** Large segments are rounded to this (`kRoundLarge`). @category constants */
export const kRoundLarge: number = MiB(2)
/** Power-of-two intervals of `roundup_power2_divisions`, from 1 MiB up (`kRoundUpPowerOfTwoIntervals`). @category constants */
export const kRoundUpPowerOfTwoIntervals = 16

// --- configuration -------------------------------------------------------------------------------

/**
 * The `PYTORCH_CUDA_ALLOC_CONF` options of the native allocator, in bytes. The defaults are
 * PyTorch's.
 * @category models
 */
export interface CachingConfig {
  /**
   * `max_split_size_mb`, in bytes: blocks at least this large are never split and serve only
   * requests at least this large. `Infinity` (the default) means unlimited; otherwise it must be
   * more than 20 MiB, as PyTorch requires.
   */
  readonly maxSplitSize: number
  /**
   * `max_non_split_rounding_mb`, in bytes: a request of at least `maxSplitSize` takes a cached
   * block only if it is less than this much larger (default 20 MiB).
   */
  readonly maxNonSplitRoundingSize: number
  /**
   * `roundup_power2_divisions`: one power of two for every size, or one per power-of-two
   * interval starting at 1 MiB (16 entries; the first also covers smaller sizes, the last larger
   * ones). 0 or 1 means plain 512 B rounding (the default).
   */
  readonly roundupPower2Divisions: number | ReadonlyArray<number>
  /**
   * `garbage_collection_threshold` (0 = off, else strictly between 0 and 1): before allocating a
   * new segment while more than this fraction of the allowed memory is reserved, free the
   * least recently reused cached segments of the large pool. As in PyTorch it only acts when a
   * memory fraction is set.
   */
  readonly garbageCollectionThreshold: number
  /**
   * `torch.cuda.set_per_process_memory_fraction` (0..1): the allocator holds at most this
   * fraction of the device capacity. `undefined` (the default) means not set.
   */
  readonly memoryFraction: number | undefined
}

/** PyTorch's defaults. @category constructors */
export const defaultCachingConfig: CachingConfig = {
  maxSplitSize: Infinity,
  maxNonSplitRoundingSize: kLargeBuffer,
  roundupPower2Divisions: 0,
  garbageCollectionThreshold: 0,
  memoryFraction: undefined
}

const configError = (detail: string): InvalidRequestError => new InvalidRequestError({ detail: `allocator configuration: ${detail}` })

const isPowerOfTwo = (n: number): boolean => n >= 1 && Number.isSafeInteger(n) && 2 ** Math.round(Math.log2(n)) === n

/**
 * Checks the options shared by both baselines and expands `roundupPower2Divisions` to one entry
 * per interval. Throws `InvalidRequestError` naming the bad option.
 * @category constructors
 */
export const divisionsTable = (config: Pick<CachingConfig, "maxSplitSize" | "maxNonSplitRoundingSize" | "roundupPower2Divisions">): Int32Array => {
  const { maxSplitSize, maxNonSplitRoundingSize, roundupPower2Divisions } = config
  if (!(maxSplitSize === Infinity || (Number.isSafeInteger(maxSplitSize) && maxSplitSize > kLargeBuffer))) {
    throw configError(`maxSplitSize must be more than 20 MiB (PyTorch's max_split_size_mb > 20) or Infinity, got ${maxSplitSize}`)
  }
  if (!(Number.isSafeInteger(maxNonSplitRoundingSize) && maxNonSplitRoundingSize > 0)) {
    throw configError(`maxNonSplitRoundingSize must be a positive integer, got ${maxNonSplitRoundingSize}`)
  }
  const table = new Int32Array(kRoundUpPowerOfTwoIntervals)
  const entries = typeof roundupPower2Divisions === "number" ? [roundupPower2Divisions] : roundupPower2Divisions
  if (typeof roundupPower2Divisions !== "number" && entries.length !== kRoundUpPowerOfTwoIntervals) {
    throw configError(`roundupPower2Divisions takes one number or ${kRoundUpPowerOfTwoIntervals}, got ${entries.length}`)
  }
  for (let i = 0; i < kRoundUpPowerOfTwoIntervals; i++) {
    const d = typeof roundupPower2Divisions === "number" ? roundupPower2Divisions : entries[i]!
    if (!(d === 0 || (isPowerOfTwo(d) && d <= 2 ** 30))) {
      throw configError(`roundupPower2Divisions must be 0 or a power of two, got ${d}`)
    }
    table[i] = d
  }
  return table
}

// --- size rules ----------------------------------------------------------------------------------

/** The largest power of two not above `n` (n >= 1), exact for any safe integer. */
const powerOfTwoFloor = (n: number): number => {
  let p = 2 ** Math.floor(Math.log2(n))
  if (p > n) p /= 2
  else if (p * 2 <= n) p *= 2
  return p
}

/**
 * PyTorch's `round_size`: at least 512 B, then up to a multiple of 512 B, or with power-of-two
 * divisions configured for the size's interval, up to the next division
 * (`roundup_power2_next_division`: 1200 with 4 divisions of [1024, 2048) becomes 1280).
 * @category size rules
 */
export const roundSize = (size: number, divisions?: Int32Array): number => {
  if (size < kMinBlockSize) return kMinBlockSize
  if (divisions !== undefined) {
    const interval = Math.min(Math.max(Math.floor(Math.log2(size)) - 20, 0), kRoundUpPowerOfTwoIntervals - 1)
    const d = divisions[interval]!
    if (d > 1 && size > kMinBlockSize * d) {
      const floor = powerOfTwoFloor(size)
      if (floor === size) return size
      const step = floor / d
      if (step < 1) return floor * 2
      const down = Math.floor(size / step) * step
      return down === size ? size : down + step
    }
  }
  return Math.ceil(size / kMinBlockSize) * kMinBlockSize
}

/**
 * PyTorch's `get_allocation_size`: the segment a rounded request of `size` gets when nothing
 * cached fits.
 * @category size rules
 */
export const segmentSize = (size: number): number =>
  size <= kSmallSize ? kSmallBuffer : size < kMinLargeAlloc ? kLargeBuffer : Math.ceil(size / kRoundLarge) * kRoundLarge

// --- the block table (shared with Expandable.ts) -------------------------------------------------

/** Block states. @category internals */
export const BlockState = {
  /** Cached: in its pool's best-fit index. */
  free: 0,
  /** Handed out. */
  allocated: 1,
  /** Freed with `deferred`, waiting for `complete` (Note [Deferred frees]). */
  pending: 2,
  /** Expandable segments: address space without pages behind it. */
  unmapped: 3,
  /** Slot not in use. */
  dead: 4
} as const

/**
 * Blocks as parallel arrays indexed by slot (ids through maps, not object graphs), over the shared slot table
 * (Note [Block handles] in `SlotTable.ts`). `addr` is the modelled address (Note [Modelled device
 * addresses]), `prev`/`next` link the blocks of one segment in address order (-1 at the ends).
 * @category internals
 */
export class BlockTable extends SlotTable {
  size = new Float64Array(256)
  addr = new Float64Array(256)
  requested = new Float64Array(256)
  /** Free-pool insertion stamp (garbage collection age). */
  stamp = new Float64Array(256)
  prev = new Int32Array(256)
  next = new Int32Array(256)
  seg = new Int32Array(256)

  constructor() {
    super(BlockState.dead, 256)
  }

  /** A new block; returns its slot. */
  make(size: number, addr: number, seg: number, prev: number, next: number, state: number): number {
    const s = this.take(state)
    this.size[s] = size
    this.addr[s] = addr
    this.seg[s] = seg
    this.prev[s] = prev
    this.next[s] = next
    this.requested[s] = 0
    return s
  }

  protected override resize(n: number): void {
    super.resize(n)
    this.size = grownF64(this.size, n)
    this.addr = grownF64(this.addr, n)
    this.requested = grownF64(this.requested, n)
    this.stamp = grownF64(this.stamp, n)
    this.prev = grownI32(this.prev, n)
    this.next = grownI32(this.next, n)
    this.seg = grownI32(this.seg, n)
  }
}

/** Checks a request before anything is decided. @category internals */
export const checkRequest = (size: number, stream: number): void => {
  checkSize(size)
  checkStream(stream)
}

/** Whether a driver failure is the device being out of memory (the recoverable kind). @category internals */
export const isOutOfMemory = (e: unknown): boolean => e instanceof DriverError && e.reason === "OutOfMemory"

/** Index of a pool: per stream, small (0) and large (1). @category internals */
export const poolKey = (stream: number, small: boolean): number => stream * 2 + (small ? 0 : 1)

/** The largest free block over all pools. @category internals */
export const largestFree = (pools: ReadonlyArray<BestFit | undefined>): number => {
  let m = 0
  for (const p of pools) if (p !== undefined && p.largest() > m) m = p.largest()
  return m
}

/**
 * The span of address space the modelled driver takes at a time (Note [Modelled device
 * addresses]). Any value from 8 MiB to 2 GiB reproduces every recorded segment allocation of the
 * four traces at the exact request where PyTorch made it; 64 MiB is in the middle of that range.
 * @category constants
 */
export const kAddressArena: number = MiB(64)

/** Model of the device's `cudaMalloc` placement (Note [Modelled device addresses]). */
class AddressModel {
  /** Lowest address of any arena so far; arenas are placed below it. */
  private floor = 2 ** 52
  /** Arenas in ascending address order: their base, and their holes as [start, end) pairs. */
  private readonly bases: Array<number> = []
  private readonly holes: Array<Array<number>> = []

  place(bytes: number): number {
    for (let a = 0; a < this.holes.length; a++) {
      const h = this.holes[a]!
      for (let i = 0; i < h.length; i += 2) {
        const start = h[i]!
        const end = h[i + 1]!
        if (end - start >= bytes) {
          if (end - start === bytes) h.splice(i, 2)
          else h[i] = start + bytes
          return start
        }
      }
    }
    const size = Math.ceil(bytes / kAddressArena) * kAddressArena
    this.floor -= size
    this.bases.unshift(this.floor)
    this.holes.unshift(size > bytes ? [this.floor + bytes, this.floor + size] : [])
    return this.floor
  }

  release(base: number, bytes: number): void {
    let a = this.bases.length - 1
    while (this.bases[a]! > base) a--
    const h = this.holes[a]!
    let start = base
    let end = base + bytes
    let i = 0
    while (i < h.length && h[i]! < start) i += 2
    // Coalesce with the holes just below and just above, within the arena.
    if (i >= 2 && h[i - 1] === start) {
      start = h[i - 2]!
      i -= 2
      h.splice(i, 2)
    }
    if (i < h.length && h[i] === end) {
      end = h[i + 1]!
      h.splice(i, 2)
    }
    h.splice(i, 0, start, end)
  }
}

// --- the allocator -------------------------------------------------------------------------------

/**
 * PyTorch's native caching allocator over a `DriverPort` (Note [Caching allocator rules]).
 * @category constructors
 */
export class CachingAllocator implements Allocator {
  readonly policy = "caching" as const
  readonly config: CachingConfig

  private readonly port: DriverPort
  private readonly divisions: Int32Array | undefined
  private readonly maxSplit: number
  private readonly maxNonSplitRounding: number
  /** Per stream and pool (`poolKey`): the free blocks, by (size, modelled address). */
  private readonly pools: Array<BestFit | undefined> = []
  private readonly blocks = new BlockTable()
  private readonly addresses = new AddressModel()
  // Segments, by id (reused): modelled base, size, real address, pool key.
  private readonly segBase: Array<number> = []
  private readonly segSize: Array<number> = []
  private readonly segPtr: Array<number> = []
  private readonly segKey: Array<number> = []
  private readonly spareSegs: Array<number> = []
  /** Bytes of live segments (`total_allocated_memory`). */
  private reservedBytes = 0
  /** Bytes of the blocks in the pools. */
  private cachedBytes = 0
  private released = 0
  // Garbage collection (only with a memory fraction and a threshold).
  private readonly allowedMax: number
  private readonly gcThreshold: number
  /** `get_free_blocks_call_count` of the small and the large pool. */
  private readonly gcCalls = [0, 0]

  constructor(port: DriverPort, config?: Partial<CachingConfig>) {
    this.port = port
    const c: CachingConfig = { ...defaultCachingConfig, ...config }
    this.config = c
    const table = divisionsTable(c)
    this.divisions = table.some((d) => d > 1) ? table : undefined
    this.maxSplit = c.maxSplitSize
    this.maxNonSplitRounding = c.maxNonSplitRoundingSize
    const g = c.garbageCollectionThreshold
    if (!(g === 0 || (g > 0 && g < 1))) throw configError(`garbageCollectionThreshold must be 0 or within (0, 1), got ${g}`)
    const f = c.memoryFraction
    if (f !== undefined && !(f >= 0 && f <= 1)) throw configError(`memoryFraction must be within [0, 1], got ${f}`)
    this.allowedMax = f === undefined ? Infinity : Math.floor(f * port.capacity)
    this.gcThreshold = f === undefined ? 0 : g
  }

  malloc(size: number, stream: number): BlockId {
    checkRequest(size, stream)
    const rounded = roundSize(size, this.divisions)
    const small = rounded <= kSmallSize
    const key = poolKey(stream, small)
    let slot = this.takeFreeBlock(key, rounded, small)
    if (slot < 0) slot = this.newSegment(size, rounded, stream, key)
    return this.handOut(slot, rounded, size, small)
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
    return (this.segPtr[seg]! + (this.blocks.addr[s]! - this.segBase[seg]!)) as Address
  }

  size(block: BlockId): number {
    const s = this.blocks.slotOf(block, BlockState.allocated)
    if (s < 0) throw this.invalid(block, "size")
    return this.blocks.requested[s]!
  }

  emptyCache(): void {
    this.releaseCachedBlocks(false)
  }

  reserved(): number {
    return this.reservedBytes
  }

  counters(): PolicyCounters {
    return { ...zeroCounters, releasedForPressure: this.released }
  }

  // --- pools ---------------------------------------------------------------------------------------

  private pool(key: number): BestFit {
    let p = this.pools[key]
    if (p === undefined) {
      p = new BestFit()
      this.pools[key] = p
    }
    return p
  }

  private poolInsert(s: number): void {
    const b = this.blocks
    const key = this.segKey[b.seg[s]!]!
    b.stamp[s] = this.gcCalls[key & 1]!
    this.pool(key).insert(s, b.size[s]!, b.addr[s]!)
    this.cachedBytes += b.size[s]!
  }

  private poolRemove(s: number): void {
    const b = this.blocks
    this.pools[this.segKey[b.seg[s]!]!]!.remove(s, b.size[s]!, b.addr[s]!)
    this.cachedBytes -= b.size[s]!
  }

  /** PyTorch's `get_free_block`: best fit in the stream's pool, within the oversize rules. */
  private takeFreeBlock(key: number, rounded: number, small: boolean): number {
    const p = this.pools[key]
    if (this.gcThreshold > 0) this.gcCalls[small ? 0 : 1]!++
    if (p === undefined) return -1
    const i = p.findIndex(rounded)
    if (i < 0) return -1
    const found = p.sizeAt(i)
    if (rounded < this.maxSplit && found >= this.maxSplit) return -1
    if (rounded >= this.maxSplit && found >= rounded + this.maxNonSplitRounding) return -1
    const s = p.idAt(i)
    this.poolRemove(s)
    return s
  }

  /** PyTorch's `alloc_found_block`: split per `should_split`, mark allocated, mint the id. */
  private handOut(s: number, rounded: number, requested: number, small: boolean): BlockId {
    const b = this.blocks
    const remaining = b.size[s]! - rounded
    const split = small ? remaining >= kMinBlockSize : rounded < this.maxSplit && remaining > kSmallSize
    let a = s
    if (split) {
      // The request takes the low part; the remainder keeps the slot and goes back to the pool.
      const prev = b.prev[s]!
      a = b.make(rounded, b.addr[s]!, b.seg[s]!, prev, s, BlockState.allocated)
      if (prev >= 0) b.next[prev] = a
      b.prev[s] = a
      b.addr[s] = b.addr[s]! + rounded
      b.size[s] = remaining
      b.state[s] = BlockState.free
      this.poolInsert(s)
    }
    b.state[a] = BlockState.allocated
    b.requested[a] = requested
    return b.mint(a)
  }

  /** PyTorch's `free_block`: merge with free neighbours of the segment, back to the pool. */
  private freeBlock(s: number): void {
    const b = this.blocks
    b.state[s] = BlockState.free
    const p = b.prev[s]!
    if (p >= 0 && b.state[p] === BlockState.free) {
      this.poolRemove(p)
      b.addr[s] = b.addr[p]!
      b.size[s] = b.size[s]! + b.size[p]!
      const pp = b.prev[p]!
      b.prev[s] = pp
      if (pp >= 0) b.next[pp] = s
      b.drop(p)
    }
    const n = b.next[s]!
    if (n >= 0 && b.state[n] === BlockState.free) {
      this.poolRemove(n)
      b.size[s] = b.size[s]! + b.size[n]!
      const nn = b.next[n]!
      b.next[s] = nn
      if (nn >= 0) b.prev[nn] = s
      b.drop(n)
    }
    this.poolInsert(s)
  }

  private invalid(block: BlockId, operation: string): InvalidBlockError {
    return new InvalidBlockError({ block, operation, detail: "not a live block (never allocated, or already freed)" })
  }

  // --- segments ------------------------------------------------------------------------------------

  /**
   * Nothing cached fits: the chain of fallbacks of PyTorch's `malloc` (Note [Caching allocator
   * rules]). Returns the new segment's block, or throws `OutOfMemoryError`.
   */
  private newSegment(requested: number, rounded: number, stream: number, key: number): number {
    const bytes = segmentSize(rounded)
    if (this.gcThreshold > 0) this.garbageCollect()
    let s = this.allocSegment(bytes, key)
    if (s < 0 && this.releaseAvailableCachedBlocks(key, rounded)) s = this.allocSegment(bytes, key)
    if (s < 0) {
      this.releaseCachedBlocks(true)
      s = this.allocSegment(bytes, key)
    }
    if (s < 0) {
      throw new OutOfMemoryError({
        requested,
        stream,
        reserved: this.reservedBytes,
        free: this.cachedBytes,
        largestFreeBlock: largestFree(this.pools),
        capacity: this.port.capacity
      })
    }
    return s
  }

  /** PyTorch's `alloc_block`: a new segment from the device, or -1 if it is out of memory. */
  private allocSegment(bytes: number, key: number): number {
    if (this.reservedBytes + bytes > this.allowedMax) return -1
    let ptr: number
    try {
      ptr = this.port.memAlloc(bytes)
    } catch (e) {
      if (isOutOfMemory(e)) return -1
      throw e
    }
    const seg = this.spareSegs.length > 0 ? this.spareSegs.pop()! : this.segSize.length
    const base = this.addresses.place(bytes)
    this.segBase[seg] = base
    this.segSize[seg] = bytes
    this.segPtr[seg] = ptr
    this.segKey[seg] = key
    this.reservedBytes += bytes
    return this.blocks.make(bytes, base, seg, -1, -1, BlockState.free)
  }

  /** Gives a wholly free, cached segment back to the device (PyTorch's `release_block`). */
  private releaseSegment(s: number, pressure: boolean): void {
    const b = this.blocks
    const seg = b.seg[s]!
    this.port.memFree(this.segPtr[seg]! as Address)
    this.poolRemove(s)
    this.addresses.release(this.segBase[seg]!, this.segSize[seg]!)
    this.reservedBytes -= this.segSize[seg]!
    b.drop(s)
    this.spareSegs.push(seg)
    if (pressure) this.released++
  }

  /**
   * PyTorch's `release_available_cached_blocks` (only with `maxSplitSize`): free the smallest
   * cached oversize segment that covers the request, else oversize segments from the largest
   * down until their total covers it.
   */
  private releaseAvailableCachedBlocks(key: number, rounded: number): boolean {
    if (this.maxSplit === Infinity) return false
    const p = this.pools[key]
    if (p === undefined) return false
    const target = Math.max(rounded, this.maxSplit)
    const i = p.findIndex(target)
    if (i >= 0) {
      if (!this.wholeSegment(p.idAt(i))) return false
      this.releaseSegment(p.idAt(i), true)
      return true
    }
    let total = 0
    for (let j = p.length - 1; j >= 0 && total < target && p.sizeAt(j) >= this.maxSplit; j--) {
      const s = p.idAt(j)
      // Oversize blocks are whole segments (they are never split); the check only guards that.
      if (!this.wholeSegment(s)) continue
      total += this.blocks.size[s]!
      this.releaseSegment(s, true)
    }
    return total >= target
  }

  private wholeSegment(s: number): boolean {
    return this.blocks.prev[s]! < 0 && this.blocks.next[s]! < 0
  }

  /**
   * PyTorch's `release_cached_blocks`: every cached segment that is wholly free goes back to the
   * device, large pool first (Note [Deferred frees] for what it cannot do).
   */
  private releaseCachedBlocks(pressure: boolean): void {
    for (const parity of [1, 0]) {
      for (let key = parity; key < this.pools.length; key += 2) {
        const p = this.pools[key]
        if (p === undefined || p.length === 0) continue
        const whole: Array<number> = []
        for (let i = 0; i < p.length; i++) if (this.wholeSegment(p.idAt(i))) whole.push(p.idAt(i))
        for (const s of whole) this.releaseSegment(s, pressure)
      }
    }
  }

  /**
   * PyTorch's `garbage_collect_cached_blocks`: while more than the threshold of the allowed
   * memory is reserved, free the cached whole segments of the large pool that have waited at
   * least the average number of pool lookups since they were cached.
   */
  private garbageCollect(): void {
    const threshold = Math.floor(this.gcThreshold * this.allowedMax)
    if (this.reservedBytes <= threshold) return
    const target = this.reservedBytes - threshold
    const b = this.blocks
    const candidates: Array<number> = []
    for (let key = 1; key < this.pools.length; key += 2) {
      const p = this.pools[key]
      if (p === undefined) continue
      for (let i = 0; i < p.length; i++) if (this.wholeSegment(p.idAt(i))) candidates.push(p.idAt(i))
    }
    if (candidates.length === 0) return
    const now = this.gcCalls[1]!
    let totalAge = 0
    for (const s of candidates) totalAge += now - b.stamp[s]!
    let count = candidates.length
    let reclaimed = 0
    let freed = true
    while (reclaimed < target && freed && count > 0) {
      const ageThreshold = totalAge / count
      freed = false
      for (let i = 0; i < candidates.length; i++) {
        const s = candidates[i]!
        if (s < 0) continue
        const age = now - b.stamp[s]!
        if (age >= ageThreshold) {
          freed = true
          reclaimed += b.size[s]!
          totalAge -= age
          count--
          candidates[i] = -1
          this.releaseSegment(s, true)
        }
      }
    }
  }
}
