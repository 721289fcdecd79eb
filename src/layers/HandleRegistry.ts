/**
 * A `DriverPort` adaptor that owns every handle made through it, so that a session can give back
 * whatever is still alive when its scope closes.
 *
 * Note [Handle ownership]
 * -----------------------
 * The allocator creates and releases chunks, ranges and mappings as its policy decides, at
 * thousands per trace; a `Scope` per handle would cost a microsecond or two each on the hot path
 * (measured on Effect 4: opening and closing a scope with one finalizer). Instead every handle goes through this registry, and the session layer
 * acquires the registry itself with `Effect.acquireRelease`: the registry's release gives back
 * every handle still alive, in the order the driver needs (synchronize, unmap every mapping, free
 * every range, release every chunk, free every classic allocation). Closing the session's scope,
 * a failure or an interruption therefore releases everything, and nothing can leak past the scope
 * whatever the policy did. Code that wants one handle for itself (the selftest, users of the
 * `Vmm` service) gets a per-handle `acquireRelease` from `services/Vmm.ts`, which goes through
 * this registry too, so a handle released early is never released twice.
 *
 * @since 0.1.0
 */
import type { DevicePort, LiveHandles } from "../domain/DevicePort.ts"
import type { DriverPort } from "../domain/DriverPort.ts"
import type { StreamPort } from "../domain/StreamPort.ts"
import { DriverError } from "../domain/Errors.ts"
import type { Address, ChunkHandle } from "../domain/Units.ts"

export type { DevicePort, LiveHandles }

/** @category constructors */
export class HandleRegistry implements DriverPort, StreamPort {
  readonly granularity: number
  readonly capacity: number
  readonly inner: DevicePort
  /** Session stream id -> the backend's stream handle (Note [Stream ids]). */
  private readonly streams = new Map<number, number>()
  private nextStream = 1
  private readonly events = new Set<number>()
  private readonly chunks = new Set<number>()
  private readonly ranges = new Map<number, number>()
  /**
   * Mapping base address in granules -> mapped bytes. Keyed by granule (a small integer, which a
   * `Map` hashes several times faster than a 47-bit address stored as a heap number); mappings
   * start on granule boundaries (Note [Plans as a dialogue]), and any other key still works.
   */
  private readonly maps = new Map<number, number>()
  private readonly allocations = new Set<number>()

  private readonly synchronizeDevice: (() => void) | undefined
  readonly eventRerecord: ((event: number, stream: number) => void) | undefined

  /**
   * `synchronize`, when given, waits for all device work; it runs before every unmap, because
   * kernels queued on any stream may still use the memory (CUDA does not wait for them: the
   * streams that used a range must be synchronized before it is unmapped). Unmaps are rare: a cache being emptied,
   * memory pressure, a stitched view evicted.
   */
  constructor(inner: DevicePort, synchronize?: () => void) {
    this.inner = inner
    this.synchronizeDevice = synchronize
    // present only where the device port has it (the allocator then creates events instead)
    const rerecord = inner.eventRerecord
    this.eventRerecord = rerecord === undefined
      ? undefined
      : (event, stream) => rerecord.call(inner, event, this.handle("cuEventRecord", stream))
    this.granularity = inner.granularity
    this.capacity = inner.capacity
  }

  memCreate(bytes: number): ChunkHandle {
    const h = this.inner.memCreate(bytes)
    this.chunks.add(h)
    return h
  }
  memRelease(handle: ChunkHandle): void {
    this.inner.memRelease(handle)
    this.chunks.delete(handle)
  }
  addressReserve(bytes: number): Address {
    const va = this.inner.addressReserve(bytes)
    this.ranges.set(va, bytes)
    return va
  }
  addressFree(va: Address, bytes: number): void {
    this.inner.addressFree(va, bytes)
    this.ranges.delete(va)
  }
  memMap(va: Address, bytes: number, handle: ChunkHandle): void {
    this.inner.memMap(va, bytes, handle)
    this.maps.set(va / this.granularity, bytes)
  }
  memUnmap(va: Address, bytes: number): void {
    if (this.synchronizeDevice !== undefined) this.synchronizeDevice()
    this.inner.memUnmap(va, bytes)
    // The driver checked that [va, va + bytes) covers whole adjacent mappings.
    const g = this.granularity
    let at: number = va
    const end = va + bytes
    while (at < end) {
      const len = this.maps.get(at / g)
      if (len === undefined) break
      this.maps.delete(at / g)
      at += len
    }
  }

  /** The bytes of the live mapping made through this port at `va`, if any. */
  mappingBytes(va: number): number | undefined {
    return this.maps.get(va / this.granularity)
  }
  setAccess(va: Address, bytes: number): void {
    this.inner.setAccess(va, bytes)
  }
  memAlloc(bytes: number): Address {
    const va = this.inner.memAlloc(bytes)
    this.allocations.add(va)
    return va
  }
  memFree(va: Address): void {
    this.inner.memFree(va)
    this.allocations.delete(va)
  }
  memGetInfo(): { readonly free: number; readonly total: number } {
    return this.inner.memGetInfo()
  }

  // Note [Stream ids]
  // Allocators key their pools by stream and keep per-stream state in small arrays, as traces
  // number their streams 0, 1, 2...; a CUDA stream handle is a pointer. The registry hands out
  // small ids (0 is the default stream) and translates them to the backend's handles.

  /** The backend's handle of a session stream id (`DriverError` for one that is not live). */
  streamHandle(stream: number): number {
    return this.handle("stream", stream)
  }

  private handle(call: string, stream: number): number {
    if (stream === 0) return 0
    const h = this.streams.get(stream)
    if (h === undefined) {
      throw new DriverError({ call, reason: "InvalidValue", code: 1, detail: `stream ${stream} is not a live stream of this session` })
    }
    return h
  }

  isStream(stream: number): boolean {
    return stream === 0 || this.streams.has(stream)
  }

  streamCreate(): number {
    const h = this.inner.streamCreate()
    const id = this.nextStream++
    this.streams.set(id, h)
    return id
  }
  streamDestroy(stream: number): void {
    this.inner.streamDestroy(this.handle("cuStreamDestroy", stream))
    this.streams.delete(stream)
  }
  streamSynchronize(stream: number): void {
    this.inner.streamSynchronize(this.handle("cuStreamSynchronize", stream))
  }
  eventRecord(stream: number): number {
    const e = this.inner.eventRecord(this.handle("cuEventRecord", stream))
    this.events.add(e)
    return e
  }
  eventQuery(event: number): boolean {
    return this.inner.eventQuery(event)
  }
  eventSynchronize(event: number): void {
    this.inner.eventSynchronize(event)
  }
  eventDestroy(event: number): void {
    this.inner.eventDestroy(event)
    this.events.delete(event)
  }

  /** Handles made through this port and not given back yet. */
  live(): LiveHandles {
    return {
      chunks: this.chunks.size,
      ranges: this.ranges.size,
      mappings: this.maps.size,
      allocations: this.allocations.size,
      streams: this.streams.size,
      events: this.events.size
    }
  }

  /**
   * Gives back every live handle: waits for the streams, then unmaps every mapping, frees every
   * range, releases every chunk, frees classic allocations, destroys events and streams.
   * Never throws (it runs in finalizers); returns the failures it met, as messages.
   */
  releaseAll(): Array<string> {
    const errors: Array<string> = []
    const inner = this.inner
    // Kernels may still use the memory: wait for every stream before unmapping anything.
    giveBack([0], (h) => inner.streamSynchronize(h), errors)
    const sync = this.synchronizeDevice
    if (sync !== undefined) giveBack([0], () => sync(), errors)
    giveBack(Array.from(this.streams.values()), (h) => inner.streamSynchronize(h), errors, false)
    const g = this.granularity
    const maps = this.maps
    giveBack(Array.from(maps.keys()), (key) => inner.memUnmap((key * g) as Address, maps.get(key)!), errors)
    maps.clear()
    const ranges = this.ranges
    giveBack(Array.from(ranges.keys()), (va) => inner.addressFree(va as Address, ranges.get(va)!), errors)
    ranges.clear()
    giveBack(Array.from(this.chunks), (h) => inner.memRelease(h as ChunkHandle), errors)
    this.chunks.clear()
    giveBack(Array.from(this.allocations), (va) => inner.memFree(va as Address), errors)
    this.allocations.clear()
    giveBack(Array.from(this.events), (e) => inner.eventDestroy(e), errors)
    this.events.clear()
    giveBack(Array.from(this.streams.values()), (h) => inner.streamDestroy(h), errors)
    this.streams.clear()
    return errors
  }
}

/**
 * Applies `release` to each of `keys` (newest first unless `newestFirst` is false), collecting
 * failures as messages. One closure per kind of handle, none per handle: a replay leaves
 * thousands of handles, and a closure and a [key, value] pair each was garbage that the next
 * replay's timed loop paid for in scavenges.
 */
const giveBack = (keys: ReadonlyArray<number>, release: (key: number) => void, errors: Array<string>, newestFirst = true): void => {
  const n = keys.length
  for (let k = 0; k < n; k++) {
    const key = keys[newestFirst ? n - 1 - k : k]!
    try {
      release(key)
    } catch (e) {
      errors.push(e instanceof Error ? e.message : String(e))
    }
  }
}
