/**
 * An adaptor around any `DriverPort` (RMM's statistics adaptor, for driver calls): counts calls
 * by kind, estimates their H100 cost (`Latency.ts`), and measures the physical memory the
 * allocator holds (live chunks plus live `memAlloc` bytes) and its peak. The measure is taken
 * from the calls themselves, independently of the policy's own accounting, so a policy that
 * under-reports its reserved bytes is caught by comparing the two.
 *
 * @since 0.1.0
 */
import type { DriverCallKind, DriverPort } from "../domain/DriverPort.ts"
import { estimateMicros } from "../domain/Latency.ts"
import type { Address, ChunkHandle } from "../domain/Units.ts"

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
  /** Estimated driver time on an H100, microseconds. */
  micros = 0
  /** Physical bytes held now (chunks created and not released, plus classic allocations). */
  reserved = 0
  peakReserved = 0
  private readonly chunkBytes = new Map<number, number>()
  private readonly allocBytes = new Map<number, number>()

  readonly inner: DriverPort

  constructor(inner: DriverPort) {
    this.inner = inner
    this.granularity = inner.granularity
    this.capacity = inner.capacity
  }

  private grow(bytes: number): void {
    this.reserved += bytes
    if (this.reserved > this.peakReserved) this.peakReserved = this.reserved
  }

  memCreate(bytes: number): ChunkHandle {
    this.calls.memCreate++
    const h = this.inner.memCreate(bytes)
    this.micros += estimateMicros("memCreate", bytes)
    this.chunkBytes.set(h, bytes)
    this.grow(bytes)
    return h
  }
  memRelease(handle: ChunkHandle): void {
    this.calls.memRelease++
    this.inner.memRelease(handle)
    const bytes = this.chunkBytes.get(handle) ?? 0
    this.chunkBytes.delete(handle)
    this.micros += estimateMicros("memRelease", bytes)
    // Counted as given back at release: the allocator has let go of it, even if a mapping it
    // forgot still pins it (the ledger, not this meter, catches that).
    this.reserved -= bytes
  }
  addressReserve(bytes: number): Address {
    this.calls.addressReserve++
    const va = this.inner.addressReserve(bytes)
    this.micros += estimateMicros("addressReserve", bytes)
    return va
  }
  addressFree(va: Address, bytes: number): void {
    this.calls.addressFree++
    this.inner.addressFree(va, bytes)
    this.micros += estimateMicros("addressFree", bytes)
  }
  memMap(va: Address, bytes: number, handle: ChunkHandle): void {
    this.calls.memMap++
    this.inner.memMap(va, bytes, handle)
    this.micros += estimateMicros("memMap", bytes)
  }
  memUnmap(va: Address, bytes: number): void {
    this.calls.memUnmap++
    this.inner.memUnmap(va, bytes)
    this.micros += estimateMicros("memUnmap", bytes)
  }
  setAccess(va: Address, bytes: number): void {
    this.calls.setAccess++
    this.inner.setAccess(va, bytes)
    this.micros += estimateMicros("setAccess", bytes)
  }
  memAlloc(bytes: number): Address {
    this.calls.memAlloc++
    const va = this.inner.memAlloc(bytes)
    this.micros += estimateMicros("memAlloc", bytes)
    this.allocBytes.set(va, bytes)
    this.grow(bytes)
    return va
  }
  memFree(va: Address): void {
    this.calls.memFree++
    this.inner.memFree(va)
    const bytes = this.allocBytes.get(va) ?? 0
    this.allocBytes.delete(va)
    this.micros += estimateMicros("memFree", bytes)
    this.reserved -= bytes
  }
  memGetInfo(): { readonly free: number; readonly total: number } {
    return this.inner.memGetInfo()
  }
  /** Total driver calls made. */
  totalCalls(): number {
    let n = 0
    for (const k in this.calls) n += this.calls[k as DriverCallKind]
    return n
  }
}
