/**
 * The `DriverPort` over the CUDA driver, for one device, plus what the selftest and the stream
 * layer need beyond the port (copies, memset, streams, events, synchronization), as plain
 * synchronous methods that throw `DriverError`. Effect-free: the layers wrap a session as a
 * scoped resource (`openDevice` / `CudaContext.close` in an `acquireRelease`) and the port's
 * calls in `Effect.sync`.
 *
 * Note [Device sessions]
 * ----------------------
 * A session is the device's primary context, as the CUDA runtime uses it: `cuInit`,
 * `cuDeviceGet`, `cuDevicePrimaryCtxRetain`, `cuCtxSetCurrent`, and at the end
 * `cuDevicePrimaryCtxRelease_v2`. Retaining the primary context (rather than creating one) shares
 * it with any other CUDA user in the process, and the driver destroys it, with everything still
 * allocated in it, when the last retain is released. So a session must be closed after every
 * chunk, range, allocation, stream and event made through it is gone: the scope that opens the
 * device must enclose the scopes of everything allocated on it.
 *
 * Note [One context per thread]
 * -----------------------------
 * The driver keeps one current context per OS thread, and every koffi call of this binding runs
 * synchronously on the JS thread. Each port call compares its session's context with the one the
 * library last made current (one comparison) and calls `cuCtxSetCurrent` only on a change, so
 * ports on two devices can be used in turn from one thread. Never call the binding through koffi's
 * `.async` variants: they run on worker threads where no context is current.
 *
 * Note [Hot calls]
 * ----------------
 * `memCreate`, `memRelease`, `addressReserve`, `addressFree`, `memMap`, `memUnmap` and
 * `setAccess` make exactly one driver call each, with scalars, the pre-encoded struct bytes of
 * this device and a reused out slot (Note [Pre-encoded structs and out slots] in Binding.ts). A
 * size is checked to be a positive safe integer first, because koffi silently wraps a negative
 * or fractional `size_t`. Nothing else is allocated unless the call fails. On the fake libcuda
 * (whose own work is 6 to 11 ns a call) each costs 50 to 65 ns (Node 24, 2-core VM); on an H100
 * the driver's own 2 to 80 us dominate (`bench/calibration`).
 *
 * Why one file of ~570 lines: one method per driver entry point, each a few lines over the
 * pre-encoded structs and out-slots that they share (Note [Pre-encoded structs and out slots]);
 * the struct buffers are the port's private state.
 *
 * @since 0.1.0
 */
import type { Brand } from "effect"
import type { DriverPort } from "../domain/DriverPort.ts"
import type { StreamPort } from "../domain/StreamPort.ts"
import { DriverError } from "../domain/Errors.ts"
import { type Address, type ChunkHandle, formatBytes } from "../domain/Units.ts"
import { CU, type CudaApi, type CudaLibrary, OutSlot, sessionSymbols, vmmSymbols } from "./Binding.ts"
import { CUresult, cudaError, invalidArgument, unrepresentable } from "./CudaError.ts"

/** A CUDA context (`CUcontext`), as a number. @category models */
export type CuContext = number & Brand.Brand<"CuContext">
/** A CUDA stream (`CUstream`), as a number; 0 is the legacy default stream. @category models */
export type CuStream = number & Brand.Brand<"CuStream">
/** A CUDA event (`CUevent`), as a number. @category models */
export type CuEvent = number & Brand.Brand<"CuEvent">

/** The legacy default stream (`NULL`), which synchronizes with every blocking stream. @category constants */
export const defaultStream: CuStream = 0 as CuStream

const hex = (n: number | bigint): string => `0x${n.toString(16)}`

const isCount = (n: number): boolean => Number.isSafeInteger(n) && n > 0

/**
 * One opened CUDA device: its retained primary context, the library it runs on and what it is
 * (Note [Device sessions]). Made by `openDevice`; `close` releases it.
 * @category models
 */
export class CudaContext {
  /** The driver library the session runs on. */
  readonly library: CudaLibrary
  /** The device ordinal asked for. */
  readonly ordinal: number
  /** The `CUdevice` handle. */
  readonly device: number
  /** The retained primary context. */
  readonly context: CuContext
  /** The device's name (`cuDeviceGetName`). */
  readonly name: string
  /** Total device memory in bytes (`cuDeviceTotalMem_v2`). */
  readonly totalMemory: number
  /** The driver's CUDA version, e.g. 13000 for 13.0 (`cuDriverGetVersion`; 0 if unknown). */
  readonly driverVersion: number
  private open = true

  /** Use `openDevice`. */
  constructor(fields: {
    readonly library: CudaLibrary
    readonly ordinal: number
    readonly device: number
    readonly context: CuContext
    readonly name: string
    readonly totalMemory: number
    readonly driverVersion: number
  }) {
    this.library = fields.library
    this.ordinal = fields.ordinal
    this.device = fields.device
    this.context = fields.context
    this.name = fields.name
    this.totalMemory = fields.totalMemory
    this.driverVersion = fields.driverVersion
  }

  /** Whether `close` has not been called yet. */
  get isOpen(): boolean {
    return this.open
  }

  /** Makes this session's context current on this thread, if it is not (Note [One context per thread]). */
  makeCurrent(): void {
    const lib = this.library
    if (lib.currentContext === this.context) return
    if (!this.open) {
      throw new DriverError({
        call: "cuCtxSetCurrent",
        reason: "InvalidContext",
        code: CUresult.INVALID_CONTEXT,
        detail: `the session on device ${this.ordinal} (${this.name}) is closed`
      })
    }
    const rc = lib.api.cuCtxSetCurrent(this.context)
    if (rc !== 0) throw cudaError("cuCtxSetCurrent", rc, lib.describe, `device ${this.ordinal}`)
    lib.currentContext = this.context
  }

  /** Whether this device can map memory of device `peer` (`cuDeviceCanAccessPeer`). */
  canAccessPeer(peer: number): boolean {
    const out = new Int32Array(1)
    const rc = this.library.api.cuDeviceCanAccessPeer(out, this.device, peer)
    if (rc !== 0) {
      throw cudaError("cuDeviceCanAccessPeer", rc, this.library.describe, `device ${this.ordinal}, peer ${peer}`)
    }
    return out[0] === 1
  }

  /**
   * Releases the primary context (`cuDevicePrimaryCtxRelease_v2`), after unbinding it from this
   * thread if it is current. Idempotent. Throws `DriverError` if the driver refuses; the session
   * counts as closed either way.
   */
  close(): void {
    if (!this.open) return
    this.open = false
    const lib = this.library
    if (lib.currentContext === this.context) {
      lib.api.cuCtxSetCurrent(0)
      lib.currentContext = 0
    }
    const rc = lib.api.cuDevicePrimaryCtxRelease_v2(this.device)
    if (rc !== 0) throw cudaError("cuDevicePrimaryCtxRelease_v2", rc, lib.describe, `device ${this.ordinal}`)
  }
}

/**
 * Opens a session on device `ordinal` (Note [Device sessions]): `cuInit`, `cuDeviceGet`,
 * `cuDevicePrimaryCtxRetain`, `cuCtxSetCurrent`. Throws `DriverError`: NoDevice when the driver
 * sees no device or none with that ordinal, NotSupported when the driver lacks an entry point,
 * and whatever the driver reports otherwise. Nothing stays retained when it throws.
 * @category constructors
 */
export const openDevice = (library: CudaLibrary, ordinal = 0): CudaContext => {
  library.requireSymbols(sessionSymbols, "a device session")
  const api = library.api
  const check = (call: string, rc: number, context?: string): void => {
    if (rc !== 0) throw cudaError(call, rc, library.describe, context)
  }
  check("cuInit", api.cuInit(0), `initializing the driver at ${library.path}`)
  const count = new Int32Array(1)
  check("cuDeviceGetCount", api.cuDeviceGetCount(count))
  if (!Number.isSafeInteger(ordinal) || ordinal < 0 || ordinal >= count[0]!) {
    throw new DriverError({
      call: "cuDeviceGet",
      reason: "NoDevice",
      code: CUresult.INVALID_DEVICE,
      detail: `there is no device ${ordinal}: the driver sees ${count[0]} device(s) (check CUDA_VISIBLE_DEVICES)`
    })
  }
  const dev = new Int32Array(1)
  check("cuDeviceGet", api.cuDeviceGet(dev, ordinal), `device ${ordinal}`)
  const device = dev[0]!
  const nameBytes = new Uint8Array(256)
  check("cuDeviceGetName", api.cuDeviceGetName(nameBytes, nameBytes.length, device), `device ${ordinal}`)
  const end = nameBytes.indexOf(0)
  const name = new TextDecoder().decode(nameBytes.subarray(0, end < 0 ? nameBytes.length : end))
  const total = new OutSlot()
  check("cuDeviceTotalMem_v2", api.cuDeviceTotalMem_v2(total.slot, device), `device ${ordinal}`)
  if (total.value < 0) throw unrepresentable("cuDeviceTotalMem_v2", "a memory size", total.big)
  const version = new Int32Array(1)
  const driverVersion = library.missing.includes("cuDriverGetVersion") || api.cuDriverGetVersion(version) !== 0
    ? 0
    : version[0]!
  const ctx = new OutSlot()
  check("cuDevicePrimaryCtxRetain", api.cuDevicePrimaryCtxRetain(ctx.slot, device), `device ${ordinal}`)
  const context = ctx.value
  if (context < 0) {
    api.cuDevicePrimaryCtxRelease_v2(device)
    throw unrepresentable("cuDevicePrimaryCtxRetain", "a context", ctx.big)
  }
  const rc = api.cuCtxSetCurrent(context)
  if (rc !== 0) {
    api.cuDevicePrimaryCtxRelease_v2(device)
    throw cudaError("cuCtxSetCurrent", rc, library.describe, `device ${ordinal}`)
  }
  library.currentContext = context
  return new CudaContext({
    library,
    ordinal,
    device,
    context: context as CuContext,
    name,
    totalMemory: total.value,
    driverVersion
  })
}

/** Options of `CudaDevicePort`. @category models */
export interface CudaPortOptions {
  /**
   * Which granularity to allocate in (`cuMemGetAllocationGranularity`): the minimum (default)
   * or the recommended one. They are equal (2 MiB) on current data-centre GPUs.
   */
  readonly granularity?: "minimum" | "recommended"
}

/** Options of `CudaDevicePort.eventCreate`. @category models */
export interface EventOptions {
  /** Record timestamps (default false: timing-free events are cheaper to record and query). */
  readonly timing?: boolean
  /** Let `eventSynchronize` block the thread instead of spinning (default false). */
  readonly blockingSync?: boolean
}

/**
 * The `DriverPort` and `StreamPort` of one CUDA device session (Note [Hot calls]), with copies,
 * memset and finer stream and event control. Every method throws `DriverError` on failure and
 * leaves the device unchanged. It keeps no ledger of its own: `layers/HandleRegistry.ts` does.
 * @category constructors
 */
export class CudaDevicePort implements DriverPort, StreamPort {
  readonly granularity: number
  readonly capacity: number
  /** The session this port runs on. */
  readonly device: CudaContext

  private readonly lib: CudaLibrary
  private readonly api: CudaApi
  private readonly context: number
  private readonly prop: Uint8Array
  private readonly access: Uint8Array
  private readonly out = new OutSlot()
  private readonly out2 = new OutSlot()

  /**
   * A port on an open session. Throws `DriverError` (NotSupported) when the driver lacks the
   * virtual memory management entry points.
   */
  constructor(device: CudaContext, options: CudaPortOptions = {}) {
    this.device = device
    this.lib = device.library
    this.api = device.library.api
    this.context = device.context
    this.lib.requireSymbols(vmmSymbols, "virtual memory management (cuMemCreate, cuMemMap, ...)")
    this.prop = this.lib.encodeAllocationProp(device.ordinal)
    this.access = this.lib.encodeAccessDesc(device.ordinal)
    this.capacity = device.totalMemory
    this.enter()
    const option = options.granularity === "recommended"
      ? CU.MEM_ALLOC_GRANULARITY_RECOMMENDED
      : CU.MEM_ALLOC_GRANULARITY_MINIMUM
    const rc = this.api.cuMemGetAllocationGranularity(this.out.slot, this.prop, option)
    if (rc !== 0) throw this.fail("cuMemGetAllocationGranularity", rc, `device ${device.ordinal}`)
    const granularity = this.out.value
    if (!(granularity > 0)) {
      throw new DriverError({
        call: "cuMemGetAllocationGranularity",
        reason: "NotSupported",
        code: CUresult.NOT_SUPPORTED,
        detail: `device ${device.ordinal} reports a granularity of ${this.out.big}: no usable virtual memory management`
      })
    }
    this.granularity = granularity
  }

  private enter(): void {
    if (this.lib.currentContext !== this.context) this.device.makeCurrent()
  }

  private fail(call: string, rc: number, context: string): DriverError {
    return cudaError(call, rc, this.lib.describe, context)
  }

  private size(call: string, bytes: number): void {
    if (!isCount(bytes)) throw invalidArgument(call, `size ${bytes} is not a positive integer`)
  }

  // --- DriverPort: physical chunks -----------------------------------------------------------

  memCreate(bytes: number): ChunkHandle {
    this.size("cuMemCreate", bytes)
    this.enter()
    const rc = this.api.cuMemCreate(this.out.slot, bytes, this.prop, 0)
    if (rc !== 0) {
      throw this.fail("cuMemCreate", rc, `a ${formatBytes(bytes)} (${bytes} B) chunk on device ` +
        `${this.device.ordinal}, granularity ${formatBytes(this.granularity)}`)
    }
    const handle = this.out.value
    if (handle < 0) {
      const big = this.out.big
      this.api.cuMemRelease(big)
      throw unrepresentable("cuMemCreate", "a handle", big)
    }
    return handle as ChunkHandle
  }

  memRelease(handle: ChunkHandle): void {
    this.enter()
    const rc = this.api.cuMemRelease(handle)
    if (rc !== 0) throw this.fail("cuMemRelease", rc, `handle ${hex(handle)}`)
  }

  // --- DriverPort: virtual ranges --------------------------------------------------------------

  addressReserve(bytes: number): Address {
    this.size("cuMemAddressReserve", bytes)
    this.enter()
    const rc = this.api.cuMemAddressReserve(this.out.slot, bytes, 0, 0, 0)
    if (rc !== 0) throw this.fail("cuMemAddressReserve", rc, `a ${formatBytes(bytes)} (${bytes} B) range`)
    const va = this.out.value
    if (va < 0) {
      const big = this.out.big
      this.api.cuMemAddressFree(big, bytes)
      throw unrepresentable("cuMemAddressReserve", "an address", big)
    }
    return va as Address
  }

  addressFree(va: Address, bytes: number): void {
    this.size("cuMemAddressFree", bytes)
    this.enter()
    const rc = this.api.cuMemAddressFree(va, bytes)
    if (rc !== 0) throw this.fail("cuMemAddressFree", rc, `[${hex(va)}, +${bytes})`)
  }

  // --- DriverPort: mappings --------------------------------------------------------------------

  memMap(va: Address, bytes: number, handle: ChunkHandle): void {
    this.size("cuMemMap", bytes)
    this.enter()
    const rc = this.api.cuMemMap(va, bytes, 0, handle, 0)
    if (rc !== 0) throw this.fail("cuMemMap", rc, `handle ${hex(handle)} at [${hex(va)}, +${bytes})`)
  }

  memUnmap(va: Address, bytes: number): void {
    this.size("cuMemUnmap", bytes)
    this.enter()
    const rc = this.api.cuMemUnmap(va, bytes)
    if (rc !== 0) throw this.fail("cuMemUnmap", rc, `[${hex(va)}, +${bytes})`)
  }

  setAccess(va: Address, bytes: number): void {
    this.size("cuMemSetAccess", bytes)
    this.enter()
    const rc = this.api.cuMemSetAccess(va, bytes, this.access, 1)
    if (rc !== 0) {
      throw this.fail("cuMemSetAccess", rc, `read-write for device ${this.device.ordinal} over [${hex(va)}, +${bytes})`)
    }
  }

  // --- DriverPort: classic allocations ---------------------------------------------------------

  memAlloc(bytes: number): Address {
    this.size("cuMemAlloc_v2", bytes)
    this.enter()
    const rc = this.api.cuMemAlloc_v2(this.out.slot, bytes)
    if (rc !== 0) throw this.fail("cuMemAlloc_v2", rc, `${formatBytes(bytes)} (${bytes} B)`)
    const va = this.out.value
    if (va < 0) {
      const big = this.out.big
      this.api.cuMemFree_v2(big)
      throw unrepresentable("cuMemAlloc_v2", "an address", big)
    }
    return va as Address
  }

  memFree(va: Address): void {
    this.enter()
    const rc = this.api.cuMemFree_v2(va)
    if (rc !== 0) throw this.fail("cuMemFree_v2", rc, `address ${hex(va)}`)
  }

  memGetInfo(): { readonly free: number; readonly total: number } {
    this.enter()
    const rc = this.api.cuMemGetInfo_v2(this.out.slot, this.out2.slot)
    if (rc !== 0) throw this.fail("cuMemGetInfo_v2", rc, `device ${this.device.ordinal}`)
    return { free: this.out.value, total: this.out2.value }
  }

  // --- copies and memset -----------------------------------------------------------------------

  /** Copies `src` to device memory at `dst` (`cuMemcpyHtoD_v2`, synchronous). */
  memcpyHtoD(dst: Address, src: Uint8Array): void {
    this.enter()
    const rc = this.api.cuMemcpyHtoD_v2(dst, src, src.byteLength)
    if (rc !== 0) throw this.fail("cuMemcpyHtoD_v2", rc, `${src.byteLength} B to ${hex(dst)}`)
  }

  /** Copies `dst.byteLength` bytes of device memory at `src` into `dst` (`cuMemcpyDtoH_v2`, synchronous). */
  memcpyDtoH(dst: Uint8Array, src: Address): void {
    this.enter()
    const rc = this.api.cuMemcpyDtoH_v2(dst, src, dst.byteLength)
    if (rc !== 0) throw this.fail("cuMemcpyDtoH_v2", rc, `${dst.byteLength} B from ${hex(src)}`)
  }

  /** Copies `data` to device memory at `va` (as `SimDriver.write`; `cuMemcpyHtoD_v2`). */
  write(va: number, data: Uint8Array): void {
    this.memcpyHtoD(va as Address, data)
  }

  /** `bytes` bytes of device memory at `va`, copied to the host (as `SimDriver.read`; `cuMemcpyDtoH_v2`). */
  read(va: number, bytes: number): Uint8Array {
    if (!(Number.isSafeInteger(bytes) && bytes >= 0)) {
      throw invalidArgument("cuMemcpyDtoH_v2", `size ${bytes} is not a byte count`)
    }
    const out = new Uint8Array(bytes)
    this.memcpyDtoH(out, va as Address)
    return out
  }

  /** Sets `bytes` bytes at `dst` to `value` (`cuMemsetD8_v2`). */
  memset(dst: Address, value: number, bytes: number): void {
    this.checkByte("cuMemsetD8_v2", value)
    this.size("cuMemsetD8_v2", bytes)
    this.enter()
    const rc = this.api.cuMemsetD8_v2(dst, value, bytes)
    if (rc !== 0) throw this.fail("cuMemsetD8_v2", rc, `${bytes} B at ${hex(dst)}`)
  }

  /** Sets `bytes` bytes at `dst` to `value`, in order on `stream` (`cuMemsetD8Async`). */
  memsetAsync(dst: Address, value: number, bytes: number, stream: CuStream): void {
    this.checkByte("cuMemsetD8Async", value)
    this.size("cuMemsetD8Async", bytes)
    this.enter()
    const rc = this.api.cuMemsetD8Async(dst, value, bytes, stream)
    if (rc !== 0) throw this.fail("cuMemsetD8Async", rc, `${bytes} B at ${hex(dst)} on stream ${hex(stream)}`)
  }

  /** Copies `bytes` bytes from `src` to `dst` on the device, in order on `stream` (`cuMemcpyDtoDAsync_v2`). */
  memcpyDtoDAsync(dst: Address, src: Address, bytes: number, stream: CuStream): void {
    this.size("cuMemcpyDtoDAsync_v2", bytes)
    this.enter()
    const rc = this.api.cuMemcpyDtoDAsync_v2(dst, src, bytes, stream)
    if (rc !== 0) {
      throw this.fail("cuMemcpyDtoDAsync_v2", rc, `${bytes} B from ${hex(src)} to ${hex(dst)} on stream ${hex(stream)}`)
    }
  }

  private checkByte(call: string, value: number): void {
    if (!(Number.isInteger(value) && value >= 0 && value <= 255)) {
      throw invalidArgument(call, `value ${value} is not a byte (0..255)`)
    }
  }

  // --- streams, events, synchronization --------------------------------------------------------

  /** Waits for all work on the device (`cuCtxSynchronize`). */
  ctxSynchronize(): void {
    this.enter()
    const rc = this.api.cuCtxSynchronize()
    if (rc !== 0) throw this.fail("cuCtxSynchronize", rc, `device ${this.device.ordinal}`)
  }

  /**
   * A new stream (`cuStreamCreate`). Non-blocking by default: it does not synchronize with the
   * legacy default stream, which is what a stream per allocator stream wants.
   */
  streamCreate(options: { readonly nonBlocking?: boolean } = {}): CuStream {
    this.enter()
    const flags = options.nonBlocking === false ? CU.STREAM_DEFAULT : CU.STREAM_NON_BLOCKING
    const rc = this.api.cuStreamCreate(this.out.slot, flags)
    if (rc !== 0) throw this.fail("cuStreamCreate", rc, `flags ${flags}`)
    const stream = this.out.value
    if (stream < 0) {
      const big = this.out.big
      this.api.cuStreamDestroy_v2(big)
      throw unrepresentable("cuStreamCreate", "a stream", big)
    }
    return stream as CuStream
  }

  /** Destroys `stream` (`cuStreamDestroy_v2`); work already queued on it still completes. */
  streamDestroy(stream: CuStream): void {
    this.enter()
    const rc = this.api.cuStreamDestroy_v2(stream)
    if (rc !== 0) throw this.fail("cuStreamDestroy_v2", rc, `stream ${hex(stream)}`)
  }

  /** Waits for all work queued on `stream` (`cuStreamSynchronize`). */
  streamSynchronize(stream: CuStream): void {
    this.enter()
    const rc = this.api.cuStreamSynchronize(stream)
    if (rc !== 0) throw this.fail("cuStreamSynchronize", rc, `stream ${hex(stream)}`)
  }

  /** Makes later work on `stream` wait for `event`'s last record (`cuStreamWaitEvent`). */
  streamWaitEvent(stream: CuStream, event: CuEvent): void {
    this.enter()
    const rc = this.api.cuStreamWaitEvent(stream, event, 0)
    if (rc !== 0) throw this.fail("cuStreamWaitEvent", rc, `stream ${hex(stream)}, event ${hex(event)}`)
  }

  /** A new event (`cuEventCreate`), timing-free unless asked. */
  eventCreate(options: EventOptions = {}): CuEvent {
    this.enter()
    const flags = (options.timing === true ? 0 : CU.EVENT_DISABLE_TIMING) |
      (options.blockingSync === true ? CU.EVENT_BLOCKING_SYNC : 0)
    const rc = this.api.cuEventCreate(this.out.slot, flags)
    if (rc !== 0) throw this.fail("cuEventCreate", rc, `flags ${flags}`)
    const event = this.out.value
    if (event < 0) {
      const big = this.out.big
      this.api.cuEventDestroy_v2(big)
      throw unrepresentable("cuEventCreate", "an event", big)
    }
    return event as CuEvent
  }

  /**
   * A new timing-free event recorded at the current end of `stream` (`cuEventCreate` +
   * `cuEventRecord`), as `StreamPort` wants; nothing is left behind if the record fails.
   */
  eventRecord(stream: CuStream): CuEvent {
    const event = this.eventCreate()
    try {
      this.eventRecordExisting(event, stream)
    } catch (e) {
      this.api.cuEventDestroy_v2(event)
      throw e
    }
    return event
  }

  /** Records the existing `event` again, at the current end of `stream` (`cuEventRecord`). */
  eventRecordExisting(event: CuEvent, stream: CuStream): void {
    this.enter()
    const rc = this.api.cuEventRecord(event, stream)
    if (rc !== 0) throw this.fail("cuEventRecord", rc, `event ${hex(event)} on stream ${hex(stream)}`)
  }

  /**
   * Whether the work before `event`'s last record has completed (`cuEventQuery`): true, false
   * while it runs (CUDA_ERROR_NOT_READY), or a `DriverError`. An event never recorded is complete.
   */
  eventQuery(event: CuEvent): boolean {
    this.enter()
    const rc = this.api.cuEventQuery(event)
    if (rc === 0) return true
    if (rc === CUresult.NOT_READY) return false
    throw this.fail("cuEventQuery", rc, `event ${hex(event)}`)
  }

  /** Waits until the work before `event`'s last record has completed (`cuEventSynchronize`). */
  eventSynchronize(event: CuEvent): void {
    this.enter()
    const rc = this.api.cuEventSynchronize(event)
    if (rc !== 0) throw this.fail("cuEventSynchronize", rc, `event ${hex(event)}`)
  }

  /** Destroys `event` (`cuEventDestroy_v2`). */
  eventDestroy(event: CuEvent): void {
    this.enter()
    const rc = this.api.cuEventDestroy_v2(event)
    if (rc !== 0) throw this.fail("cuEventDestroy_v2", rc, `event ${hex(event)}`)
  }

}
