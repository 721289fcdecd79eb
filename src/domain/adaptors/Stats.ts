/**
 * Statistics as an adaptor around any allocator (RMM's `statistics_resource_adaptor`): the
 * policy keeps no statistics of its own beyond its decision counters, and this wrapper keeps
 * current and peak requested and reserved bytes and the operation counts.
 *
 * Note [PyTorch's stat names]
 * ---------------------------
 * `memoryStats` gives the figures under the keys of PyTorch's `torch.cuda.memory_stats()` where
 * the meaning is the same, so that a PyTorch user's scripts and habits carry over:
 * `requested_bytes.all.{current,peak,allocated,freed}` (the sizes asked for),
 * `reserved_bytes.all.{current,peak}` (physical memory held from the driver; a stitched view adds
 * nothing), `allocation.all.{current,peak,allocated,freed}` (block counts), `num_ooms`. Keys whose
 * meaning differs are not given under PyTorch's name: `allocated_bytes` (PyTorch counts the
 * rounded block sizes, which a stitching allocator does not have as such) and `num_alloc_retries`
 * (a cache flush after a failed cudaMalloc; here the policies release memory under pressure in
 * their own ways, counted as `num_released_for_pressure`). The stitching policy's own counters
 * follow in the same style: `num_stitches`, `num_stitched_chunks`, `num_cached_stitch_hits`,
 * `num_stitch_evictions`. PyTorch's per-pool breakdown (`.small_pool`, `.large_pool`) has no
 * counterpart in policies without a small pool, so only `.all` is given. `summary` is the same
 * figures as a text table in the spirit of `torch.cuda.memory_summary()`.
 *
 * @since 0.1.0
 */
import type { Allocator, PolicyCounters, PolicyName } from "../Allocator.ts"
import { OutOfMemoryError } from "../Errors.ts"
import { relabel } from "../Request.ts"
import { type Address, type BlockId, formatBytes } from "../Units.ts"

/** A snapshot of an allocator's statistics. @category models */
export interface AllocatorStats {
  readonly policy: PolicyName
  readonly allocations: number
  readonly frees: number
  readonly ooms: number
  readonly liveBlocks: number
  readonly requestedCurrent: number
  readonly requestedPeak: number
  readonly reservedCurrent: number
  readonly reservedPeak: number
  /** Bytes of every successful allocation so far, and of every free (requested sizes). */
  readonly requestedTotal: number
  readonly freedTotal: number
  /** The most blocks live at once. */
  readonly liveBlocksPeak: number
  readonly counters: PolicyCounters
}

/** @category constructors */
export class StatsAllocator implements Allocator {
  readonly policy: PolicyName
  readonly inner: Allocator
  private allocations = 0
  private frees = 0
  private ooms = 0
  private live = 0
  private requested = 0
  private requestedPeak = 0
  private reservedPeak = 0
  private requestedTotal = 0
  private freedTotal = 0
  private livePeak = 0

  constructor(inner: Allocator) {
    this.inner = inner
    this.policy = inner.policy
  }

  private sample(): void {
    const r = this.inner.reserved()
    if (r > this.reservedPeak) this.reservedPeak = r
  }

  malloc(size: number, stream: number): BlockId {
    let b: BlockId
    try {
      b = this.inner.malloc(size, stream)
    } catch (e) {
      if (e instanceof OutOfMemoryError) this.ooms++
      throw e
    } finally {
      this.sample()
    }
    this.allocations++
    this.live++
    if (this.live > this.livePeak) this.livePeak = this.live
    this.requested += size
    this.requestedTotal += size
    if (this.requested > this.requestedPeak) this.requestedPeak = this.requested
    return b
  }
  free(block: BlockId, deferred?: boolean): void {
    let size: number
    try {
      size = this.inner.size(block)
    } catch (e) {
      // The lookup is ours; the caller asked for a free.
      throw relabel(e, "free")
    }
    this.inner.free(block, deferred)
    this.frees++
    this.live--
    this.requested -= size
    this.freedTotal += size
    this.sample()
  }
  complete(block: BlockId): void {
    this.inner.complete(block)
  }
  address(block: BlockId): Address {
    return this.inner.address(block)
  }
  size(block: BlockId): number {
    return this.inner.size(block)
  }
  emptyCache(): void {
    this.inner.emptyCache()
  }
  reserved(): number {
    return this.inner.reserved()
  }
  counters(): PolicyCounters {
    return this.inner.counters()
  }
  stats(): AllocatorStats {
    return {
      policy: this.policy,
      allocations: this.allocations,
      frees: this.frees,
      ooms: this.ooms,
      liveBlocks: this.live,
      requestedCurrent: this.requested,
      requestedPeak: this.requestedPeak,
      reservedCurrent: this.inner.reserved(),
      reservedPeak: this.reservedPeak,
      requestedTotal: this.requestedTotal,
      freedTotal: this.freedTotal,
      liveBlocksPeak: this.livePeak,
      counters: this.inner.counters()
    }
  }
}

/**
 * The statistics under PyTorch's `memory_stats()` keys (Note [PyTorch's stat names]).
 * @category models
 */
export interface MemoryStats {
  readonly "requested_bytes.all.current": number
  readonly "requested_bytes.all.peak": number
  readonly "requested_bytes.all.allocated": number
  readonly "requested_bytes.all.freed": number
  readonly "reserved_bytes.all.current": number
  readonly "reserved_bytes.all.peak": number
  readonly "allocation.all.current": number
  readonly "allocation.all.peak": number
  readonly "allocation.all.allocated": number
  readonly "allocation.all.freed": number
  readonly num_ooms: number
  readonly num_released_for_pressure: number
  readonly num_stitches: number
  readonly num_stitched_chunks: number
  readonly num_cached_stitch_hits: number
  readonly num_stitch_evictions: number
}

/**
 * A snapshot under PyTorch's `memory_stats()` keys (Note [PyTorch's stat names]).
 * @category formatting
 */
export const memoryStats = (s: AllocatorStats): MemoryStats => ({
  "requested_bytes.all.current": s.requestedCurrent,
  "requested_bytes.all.peak": s.requestedPeak,
  "requested_bytes.all.allocated": s.requestedTotal,
  "requested_bytes.all.freed": s.freedTotal,
  "reserved_bytes.all.current": s.reservedCurrent,
  "reserved_bytes.all.peak": s.reservedPeak,
  "allocation.all.current": s.liveBlocks,
  "allocation.all.peak": s.liveBlocksPeak,
  "allocation.all.allocated": s.allocations,
  "allocation.all.freed": s.frees,
  num_ooms: s.ooms,
  num_released_for_pressure: s.counters.releasedForPressure,
  num_stitches: s.counters.stitches,
  num_stitched_chunks: s.counters.stitchedChunks,
  num_cached_stitch_hits: s.counters.cachedStitchHits,
  num_stitch_evictions: s.counters.evictions
})

const size = (n: number): string => formatBytes(n)

/**
 * The statistics as a text table, in the spirit of `torch.cuda.memory_summary()`: current, peak,
 * total allocated and total freed for requested memory and for blocks, reserved memory, then the
 * event counters. Sizes in binary units.
 * @category formatting
 */
export const summary = (s: AllocatorStats): string => {
  const w = 75
  const rule = (c: string) => `|${c.repeat(w - 2)}|`
  const line = (text: string) => `| ${text.padEnd(w - 4)} |`
  const cell = (t: string) => t.padStart(11)
  const row = (name: string, cur: string, peak: string, alloc: string, freed: string) =>
    line(`${name.padEnd(20)}|${cell(cur)} |${cell(peak)} |${cell(alloc)} |${cell(freed)}`)
  const c = s.counters
  return [
    rule("="),
    line(`gmlake memory summary, policy ${s.policy}`.padStart(Math.floor((w - 4) / 2) + 19)),
    rule("-"),
    row("Metric", "Cur Usage", "Peak Usage", "Tot Alloc", "Tot Freed"),
    rule("-"),
    row("Requested memory", size(s.requestedCurrent), size(s.requestedPeak), size(s.requestedTotal), size(s.freedTotal)),
    row("Reserved memory", size(s.reservedCurrent), size(s.reservedPeak), "", ""),
    row("Allocations", String(s.liveBlocks), String(s.liveBlocksPeak), String(s.allocations), String(s.frees)),
    rule("-"),
    line(`Out of memory errors: ${s.ooms}    Released under pressure: ${c.releasedForPressure}`),
    line(`Stitches: ${c.stitches} (${c.stitchedChunks} chunk maps)    Cached stitch hits: ${c.cachedStitchHits}    Evictions: ${c.evictions}`),
    rule("=")
  ].join("\n")
}
