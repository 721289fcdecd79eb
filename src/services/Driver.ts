/**
 * The driver service: one device's VMM primitives, for the allocator stack.
 *
 * The service hands out the synchronous device port (Note [Plans as a dialogue] in
 * `domain/DriverPort.ts`); the layers wrap it in a registry that owns every handle made through it
 * (`layers/HandleRegistry.ts`, Note [Handle ownership]) and acquire that registry with
 * `acquireRelease`, so closing the session gives everything back. Backends:
 * `layers/sim/SimDriverLayer.ts` (the simulated device) and `layers/cuda/CudaDriverLayer.ts`
 * (libcuda through koffi).
 *
 * @since 0.1.0
 */
import { Context, Effect } from "effect"
import { DriverError } from "../domain/Errors.ts"
import type { DevicePort, LiveHandles } from "../domain/DevicePort.ts"

/** What a session knows of its device. @category models */
export interface DeviceInfo {
  readonly kind: "sim" | "cuda"
  readonly ordinal: number
  readonly name: string
  readonly granularity: number
  readonly capacity: number
  /** The CUDA driver version (cuda only), e.g. "13.0". */
  readonly driverVersion?: string
}

/** @category services */
export class Driver extends Context.Service<Driver, {
  readonly info: DeviceInfo
  /**
   * The synchronous port the allocator core runs on. The layers hand out one that owns every
   * handle made through it (`layers/HandleRegistry.ts`, Note [Handle ownership]).
   */
  readonly port: DevicePort
  /** `cuMemGetInfo`: free and total device memory. */
  readonly memGetInfo: Effect.Effect<{ readonly free: number; readonly total: number }, DriverError>
  /** Waits for all device work (before unmapping memory that kernels may still use). */
  readonly synchronize: Effect.Effect<void, DriverError>
  /** Copies host bytes to device memory at `address` (`cuMemcpyHtoD`). */
  readonly write: (address: number, data: Uint8Array) => Effect.Effect<void, DriverError>
  /** Copies `bytes` of device memory at `address` to the host (`cuMemcpyDtoH`). */
  readonly read: (address: number, bytes: number) => Effect.Effect<Uint8Array, DriverError>
  /** Sets `bytes` bytes at `address` to `value`, in order on a session stream (default 0). */
  readonly fill: (address: number, value: number, bytes: number, stream?: number) => Effect.Effect<void, DriverError>
  /** Copies `bytes` of device memory from `src` to `dst`, in order on a session stream (default 0). */
  readonly copy: (dst: number, src: number, bytes: number, stream?: number) => Effect.Effect<void, DriverError>
  /** Handles alive in the session's registry now. */
  readonly live: Effect.Effect<LiveHandles>
}>()("gmlake/Driver") {}

/**
 * Runs a synchronous port call, turning the `DriverError` it throws into a typed failure;
 * anything else it throws is a defect (a bug).
 * @category constructors
 */
export const driverCall = <A>(f: () => A): Effect.Effect<A, DriverError> =>
  Effect.suspend(() => {
    try {
      return Effect.succeed(f())
    } catch (e) {
      if (e instanceof DriverError) return Effect.fail(e)
      throw e
    }
  })
