/**
 * A GPU session: the CUDA driver behind the `Driver` service.
 *
 * Note [GPU session]
 * ------------------
 * Opening a session loads libcuda (koffi is imported lazily, so nothing here is needed until a
 * GPU is asked for), calls `cuInit`, retains the device's primary context and makes it current,
 * as the CUDA runtime does. Each piece is acquired with `acquireRelease`, in the order the driver
 * needs them released: the context is retained first and released last, after the session's
 * handle registry has synchronized the device and given back every mapping, range and chunk
 * (Note [Handle ownership]). Closing the scope, a failure or an interruption (Ctrl-C reaches the
 * program as an interruption) all run the same finalizers.
 *
 * @since 0.1.0
 */
import { Effect, Layer, type Scope } from "effect"
import { type CudaLibrary, loadCuda } from "../../cuda/Binding.ts"
import { type CudaContext, CudaDevicePort, openDevice } from "../../cuda/CudaDevicePort.ts"
import { DriverError } from "../../domain/Errors.ts"
import { type DeviceInfo, type Driver, driverCall } from "../../services/Driver.ts"
import { type DeviceIo, layerOver } from "../DriverLayer.ts"

/** @category models */
export interface CudaSessionOptions {
  /** Device ordinal (default 0). */
  readonly ordinal?: number
  /**
   * The driver library (default: `$GMLAKE_LIBCUDA` if set, else `libcuda.so.1`; the tests point
   * it at the fake libcuda).
   */
  readonly library?: string
}

/** An open device: its backend for `layerOver`, and what it is. @category models */
export interface CudaSession {
  readonly backend: DeviceIo
  readonly port: CudaDevicePort
  readonly info: DeviceInfo
}

/**
 * Loads the driver library (`path`, else `$GMLAKE_LIBCUDA`, else `libcuda.so.1`) through koffi,
 * imported lazily. Several device sessions of one process must share one library, which tracks
 * the context current on this thread (Note [One context per thread]).
 * @category constructors
 */
export const loadCudaLibrary = (path?: string): Effect.Effect<CudaLibrary, DriverError> =>
  Effect.tryPromise({
    try: () => loadCuda(path ?? process.env["GMLAKE_LIBCUDA"] ?? undefined),
    catch: (e) =>
      e instanceof DriverError ? e : new DriverError({ call: "dlopen", reason: "NoDevice", code: 100, detail: String(e) })
  })

/**
 * Opens device `ordinal` of `lib` in the current scope: its primary context is retained now and
 * released when the scope closes. Everything allocated on the device must be given back inside
 * this scope.
 * @category resource management
 */
export const openCudaDevice = (
  lib: CudaLibrary,
  ordinal: number
): Effect.Effect<CudaSession & { readonly device: CudaContext }, DriverError, Scope.Scope> =>
  Effect.gen(function*() {
    const device = yield* Effect.acquireRelease(
      driverCall(() => openDevice(lib, ordinal)),
      (d) =>
        Effect.sync(() => {
          try {
            d.close()
          } catch {
            // The context is gone with the process anyway; nothing else can be done here.
          }
        })
    )
    const port = yield* driverCall(() => new CudaDevicePort(device))
    const version = device.driverVersion
    const info: DeviceInfo = {
      kind: "cuda",
      ordinal,
      name: device.name,
      granularity: port.granularity,
      capacity: port.capacity,
      ...(version > 0 ? { driverVersion: `${Math.floor(version / 1000)}.${(version % 1000) / 10}` } : {})
    }
    return { backend: cudaBackend(port), port, info, device }
  })

/**
 * Opens a device session (library and device) in the current scope; it is closed (context
 * released) when the scope closes.
 * @category resource management
 */
export const openCudaSession = (options: CudaSessionOptions = {}): Effect.Effect<CudaSession, DriverError, Scope.Scope> =>
  Effect.flatMap(loadCudaLibrary(options.library), (lib) => openCudaDevice(lib, options.ordinal ?? 0))

/**
 * The `DeviceIo` of a CUDA port: the session's view of one device.
 * @category constructors
 */
export const cudaBackend = (port: CudaDevicePort): DeviceIo => ({
  get granularity() {
    return port.granularity
  },
  get capacity() {
    return port.capacity
  },
  memCreate: (b) => port.memCreate(b),
  memRelease: (h) => port.memRelease(h),
  addressReserve: (b) => port.addressReserve(b),
  addressFree: (va, b) => port.addressFree(va, b),
  memMap: (va, b, h) => port.memMap(va, b, h),
  memUnmap: (va, b) => port.memUnmap(va, b),
  setAccess: (va, b) => port.setAccess(va, b),
  memAlloc: (b) => port.memAlloc(b),
  memFree: (va) => port.memFree(va),
  memGetInfo: () => port.memGetInfo(),
  // Stream and event ids here are the port's own handles (HandleRegistry translates session ids).
  streamCreate: () => port.streamCreate(),
  streamDestroy: (s) => port.streamDestroy(s as never),
  streamSynchronize: (s) => port.streamSynchronize(s as never),
  eventRecord: (s) => port.eventRecord(s as never),
  eventRerecord: (e, s) => port.eventRecordExisting(e as never, s as never),
  eventQuery: (e) => port.eventQuery(e as never),
  eventSynchronize: (e) => port.eventSynchronize(e as never),
  eventDestroy: (e) => port.eventDestroy(e as never),
  write: (va, data) => port.write(va, data),
  read: (va, bytes) => port.read(va, bytes),
  synchronize: () => port.ctxSynchronize(),
  fillAsync: (va, value, bytes, s) => port.memsetAsync(va as never, value, bytes, s as never),
  copyAsync: (dst, src, bytes, s) => port.memcpyDtoDAsync(dst as never, src as never, bytes, s as never)
})

/**
 * A `Driver` on a CUDA device: a GPU session and its handle registry, both scoped to the layer.
 * @category layers
 */
export const layerCuda = (options: CudaSessionOptions = {}): Layer.Layer<Driver, DriverError> =>
  Layer.unwrap(Effect.map(openCudaSession(options), (s) => layerOver(s.backend, s.info)))
