/**
 * Statistics as an adaptor around any allocator (RMM's `statistics_resource_adaptor`): the
 * policy keeps no statistics of its own beyond its decision counters, and this wrapper keeps
 * current and peak requested and reserved bytes and the operation counts.
 *
 * @since 0.1.0
 */
import type { Allocator, PolicyCounters, PolicyName } from "../Allocator.ts"
import { OutOfMemoryError } from "../Errors.ts"
import { relabel } from "../Request.ts"
import type { Address, BlockId } from "../Units.ts"

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
    this.requested += size
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
      counters: this.inner.counters()
    }
  }
}
