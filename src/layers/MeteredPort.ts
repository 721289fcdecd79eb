/**
 * An adaptor around any `DriverPort` (RMM's statistics adaptor, for driver calls): counts calls
 * by kind, estimates their cost on the GPU (Note [Driver-time model]), and measures the physical memory the
 * allocator holds (live chunks plus live `memAlloc` bytes) and its peak. The measure is taken
 * from the calls themselves, independently of the policy's own accounting, so a policy that
 * under-reports its reserved bytes is caught by comparing the two.
 *
 * @since 0.1.0
 */
import type { DriverCallKind, DriverPort } from "../domain/DriverPort.ts"
import { type DriverLevels, type LatencyRow, LatencyTable, rangeCallBase } from "../domain/Latency.ts"
import type { Address, ChunkHandle } from "../domain/Units.ts"

/** A port that knows the mappings made through it (`HandleRegistry`). @category models */
export interface MappingIndex {
  /** The bytes of the live mapping at `va`, if any. */
  mappingBytes(va: number): number | undefined
}

/** @category models */
export type CallCounts = Record<DriverCallKind, number>

/** @category constructors */
export const zeroCallCounts = (): CallCounts => ({
  memCreate: 0,
  memRelease: 0,
  addressReserve: 0,
  addressFree: 0,
  memMap: 0,
  memUnmap: 0,
  setAccess: 0,
  memAlloc: 0,
  memFree: 0
})

/**
 * A metering `DriverPort`. Failed calls are counted too (the driver was called), but cost and
 * memory are only accounted for calls that succeeded.
 * @category constructors
 */
export class MeteredPort implements DriverPort {
  readonly granularity: number
  readonly capacity: number
  readonly calls: CallCounts = zeroCallCounts()
  /** Calls made, all kinds together. */
  total = 0
  /** Estimated driver time on the GPU (Note [Driver-time model]), microseconds. */
  micros = 0
  /** The same, by kind. */
  readonly microsByKind: CallCounts = zeroCallCounts()
  /** Physical bytes held now (chunks created and not released, plus classic allocations). */
  reserved = 0
  peakReserved = 0
  /** The highest `reserved` since the last `resetWindow` (the timeline's per-slice peak). */
  windowPeak = 0
  private readonly chunkBytes = new Map<number, number>()
  private readonly allocBytes = new Map<number, number>()
  /**
   * Live mappings, by base address in granules (a small integer, so a fast key) -> bytes: a set
   * access or an unmap over a range costs per mapping in it (Note [Driver-time model]).
   */
  private readonly mapBytes = new Map<number, number>()
  /**
   * The mappings an inner tracking port keeps anyway, when it is one (no second index then).
   * Called as a method, not through a bound function: every replay builds a new port, and a new
   * bound function each time made the call site in `rangeMicros` megamorphic (never inlined).
   */
  private readonly innerIndex: MappingIndex | undefined
  /** The latency memo, a row per kind (Note [Shared latency memo]). */
  private readonly memCreateUs: LatencyRow
  private readonly memReleaseUs: LatencyRow
  private readonly addressReserveUs: LatencyRow
  private readonly addressFreeUs: LatencyRow
  private readonly memMapUs: LatencyRow
  private readonly memUnmapUs: LatencyRow
  private readonly setAccessUs: LatencyRow
  private readonly memAllocUs: LatencyRow
  private readonly memFreeUs: LatencyRow

  readonly inner: DriverPort

  /** `levels`: the host's, to cost the calls at (Note [Host levels] in `Latency.ts`). */
  constructor(inner: DriverPort, levels?: DriverLevels) {
    this.inner = inner
    this.granularity = inner.granularity
    this.capacity = inner.capacity
    const latency = new LatencyTable(inner.granularity, levels)
    this.memCreateUs = latency.row("memCreate")
    this.memReleaseUs = latency.row("memRelease")
    this.addressReserveUs = latency.row("addressReserve")
    this.addressFreeUs = latency.row("addressFree")
    this.memMapUs = latency.row("memMap")
    this.memUnmapUs = latency.row("memUnmap")
    this.setAccessUs = latency.row("setAccess")
    this.memAllocUs = latency.row("memAlloc")
    this.memFreeUs = latency.row("memFree")
    this.innerIndex = typeof (inner as Partial<MappingIndex>).mappingBytes === "function" ? inner as DriverPort & MappingIndex : undefined
  }

  private grow(bytes: number): void {
    this.reserved += bytes
    if (this.reserved > this.peakReserved) this.peakReserved = this.reserved
    if (this.reserved > this.windowPeak) this.windowPeak = this.reserved
  }

  /** Starts a new window for `windowPeak`. */
  resetWindow(): void {
    this.windowPeak = this.reserved
  }

  /**
   * The modelled cost of one `setAccess` / `memUnmap` over `[va, va + bytes)`: the mappings in it
   * are walked by their recorded sizes; `drop` forgets them (an unmap). Space not found among the
   * recorded mappings (a range that starts inside one) is costed as granule-sized mappings.
   */
  private rangeMicros(kind: "setAccess" | "memUnmap", va: number, bytes: number, drop: boolean): number {
    const g = this.granularity
    const base = rangeCallBase[kind]
    const latency = kind === "setAccess" ? this.setAccessUs : this.memUnmapUs
    const index = this.innerIndex
    let us = base
    let at = va / g
    const end = (va + bytes) / g
    while (at < end) {
      const len = index !== undefined ? index.mappingBytes(at * g) : this.mapBytes.get(at)
      if (len === undefined) {
        us += (end - at) * (latency.micros(g) - base)
        break
      }
      if (drop && index === undefined) this.mapBytes.delete(at)
      us += latency.micros(len) - base
      at += len / g
    }
    return us
  }

  memCreate(bytes: number): ChunkHandle {
    this.calls.memCreate++
    this.total++
    const h = this.inner.memCreate(bytes)
    const us = this.memCreateUs.micros(bytes)
    this.micros += us
    this.microsByKind.memCreate += us
    this.chunkBytes.set(h, bytes)
    this.grow(bytes)
    return h
  }
  memRelease(handle: ChunkHandle): void {
    this.calls.memRelease++
    this.total++
    this.inner.memRelease(handle)
    const bytes = this.chunkBytes.get(handle) ?? 0
    this.chunkBytes.delete(handle)
    const us = this.memReleaseUs.micros(bytes)
    this.micros += us
    this.microsByKind.memRelease += us
    // Counted as given back at release: the allocator has let go of it, even if a mapping it
    // forgot still pins it (the ledger, not this meter, catches that).
    this.reserved -= bytes
  }
  addressReserve(bytes: number): Address {
    this.calls.addressReserve++
    this.total++
    const va = this.inner.addressReserve(bytes)
    const us = this.addressReserveUs.micros(bytes)
    this.micros += us
    this.microsByKind.addressReserve += us
    return va
  }
  addressFree(va: Address, bytes: number): void {
    this.calls.addressFree++
    this.total++
    this.inner.addressFree(va, bytes)
    const us = this.addressFreeUs.micros(bytes)
    this.micros += us
    this.microsByKind.addressFree += us
  }
  memMap(va: Address, bytes: number, handle: ChunkHandle): void {
    this.calls.memMap++
    this.total++
    this.inner.memMap(va, bytes, handle)
    const us = this.memMapUs.micros(bytes)
    this.micros += us
    this.microsByKind.memMap += us
    if (this.innerIndex === undefined) this.mapBytes.set(va / this.granularity, bytes)
  }
  memUnmap(va: Address, bytes: number): void {
    this.calls.memUnmap++
    this.total++
    // Costed before the call: an inner tracking port forgets the mappings as it unmaps them.
    const us = this.rangeMicros("memUnmap", va, bytes, false)
    this.inner.memUnmap(va, bytes)
    if (this.innerIndex === undefined) this.rangeMicros("memUnmap", va, bytes, true)
    this.micros += us
    this.microsByKind.memUnmap += us
  }
  setAccess(va: Address, bytes: number): void {
    this.calls.setAccess++
    this.total++
    this.inner.setAccess(va, bytes)
    const us = this.rangeMicros("setAccess", va, bytes, false)
    this.micros += us
    this.microsByKind.setAccess += us
  }
  memAlloc(bytes: number): Address {
    this.calls.memAlloc++
    this.total++
    const va = this.inner.memAlloc(bytes)
    const us = this.memAllocUs.micros(bytes)
    this.micros += us
    this.microsByKind.memAlloc += us
    this.allocBytes.set(va, bytes)
    this.grow(bytes)
    return va
  }
  memFree(va: Address): void {
    this.calls.memFree++
    this.total++
    this.inner.memFree(va)
    const bytes = this.allocBytes.get(va) ?? 0
    this.allocBytes.delete(va)
    const us = this.memFreeUs.micros(bytes)
    this.micros += us
    this.microsByKind.memFree += us
    this.reserved -= bytes
  }
  memGetInfo(): { readonly free: number; readonly total: number } {
    return this.inner.memGetInfo()
  }
  /** Total driver calls made. */
  totalCalls(): number {
    return this.total
  }
}
