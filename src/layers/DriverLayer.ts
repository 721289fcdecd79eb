/**
 * A `Driver` layer over any device backend (the simulator, a CUDA device session): the session's
 * handle registry acquired as a resource, and the service built around it.
 *
 * @since 0.1.0
 */
import { Effect, Layer } from "effect"
import type { DeviceInfo } from "../services/Driver.ts"
import { Driver, driverCall } from "../services/Driver.ts"
import { type DevicePort, HandleRegistry } from "./HandleRegistry.ts"

/** What a backend offers beyond the ports. @category models */
export interface DeviceIo extends DevicePort {
  /** `cuMemcpyHtoD` through the mappings. */
  write(address: number, data: Uint8Array): void
  /** `cuMemcpyDtoH` through the mappings. */
  read(address: number, bytes: number): Uint8Array
  /** Waits for all device work. */
  synchronize(): void
  /** Sets `bytes` bytes at `address` to `value`, in order on the backend stream (`cuMemsetD8Async`). */
  fillAsync(address: number, value: number, bytes: number, stream: number): void
  /** Copies device memory, in order on the backend stream (`cuMemcpyDtoDAsync`). */
  copyAsync(dst: number, src: number, bytes: number, stream: number): void
}

/**
 * A `Driver` over `backend`. Closing the layer gives back every handle still alive in the
 * registry (Note [Handle ownership]); `onRelease` receives what could not be given back.
 * @category layers
 */
export const layerOver = (
  backend: DeviceIo,
  info: DeviceInfo,
  onRelease?: (failures: ReadonlyArray<string>) => void
): Layer.Layer<Driver> =>
  Layer.effect(
    Driver,
    Effect.gen(function*() {
      const port = yield* Effect.acquireRelease(
        Effect.sync(() => new HandleRegistry(backend, () => backend.synchronize())),
        (p) =>
          Effect.sync(() => {
            const failures = p.releaseAll()
            if (onRelease !== undefined) onRelease(failures)
          })
      )
      return Driver.of({
        info,
        port,
        memGetInfo: driverCall(() => backend.memGetInfo()),
        synchronize: driverCall(() => backend.synchronize()),
        write: (address, data) => driverCall(() => backend.write(address, data)),
        read: (address, bytes) => driverCall(() => backend.read(address, bytes)),
        fill: (address, value, bytes, stream = 0) =>
          driverCall(() => backend.fillAsync(address, value, bytes, port.streamHandle(stream))),
        copy: (dst, src, bytes, stream = 0) =>
          driverCall(() => backend.copyAsync(dst, src, bytes, port.streamHandle(stream))),
        live: Effect.sync(() => port.live())
      })
    })
  )
