/**
 * A session over several devices: one `Driver` and one `GpuAllocator` per device, each built from
 * the same layers under a scope of its own, and optionally peer stitching between them.
 *
 * Note [Multi-device sessions]
 * ----------------------------
 * Each device gets a child scope of the session's scope, and its services are built into it with
 * `Layer.buildWithScope`: the device's driver layer (its handle registry, and on a GPU its
 * context), then `GpuAllocator.layer` over that driver. So every device has its own registry,
 * allocator and statistics, and nothing one device allocates shows in another's accounting: a
 * block allocated on device 1 counts in device 1's statistics and physical memory only. The one
 * exception is deliberate and opt-in: with peer stitching (Note [Peer stitching]) a block that
 * device 0 borrows counts in device 0's statistics as an allocation (requested bytes, and as
 * `borrowedBytes`), and in device 1's physical memory (its ledger, `cuMemGetInfo`, `lentBytes`),
 * and in neither allocator's reserved bytes. For every device, physical memory in use is then
 * its allocator's reserved bytes plus what peers borrowed from it.
 *
 * Closing the session gives everything back in this order: first every borrowed block (unmapped
 * in the borrower's range, its chunks released through the lender's port), because a lender must
 * not close while a peer still maps its memory; then each device's scope in reverse order of
 * opening, each releasing its allocator and then its handle registry (Note [Handle ownership]).
 * A device's own scope closes with the session; there is no closing one device alone, since its
 * memory may be mapped by peers.
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer, Scope } from "effect"
import type { Allocator, PolicyName } from "../domain/Allocator.ts"
import type { DevicePort } from "../domain/DevicePort.ts"
import { DriverError, InvalidRequestError } from "../domain/Errors.ts"
import {
  type PeerCounters,
  PeerGroup,
  type PeerStitchingAllocator,
  type PeerStitchingConfig
} from "../domain/adaptors/PeerStitching.ts"
import { makeAllocator, type PolicyOptions } from "../domain/policies/Policies.ts"
import type { AllocatorStats } from "../domain/adaptors/Stats.ts"
import { loadCudaLibrary, openCudaDevice } from "./cuda/CudaDriverLayer.ts"
import { layerOver } from "./DriverLayer.ts"
import type { SimSystem } from "./sim/SimSystem.ts"
import { cudaError } from "../cuda/CudaError.ts"
import type { CudaContext } from "../cuda/CudaDevicePort.ts"
import * as GpuAllocator from "../services/Allocator.ts"
import { Driver, driverCall } from "../services/Driver.ts"

/** One device of a session: its services, and its peer-stitching adaptor when enabled. @category models */
export interface DeviceSession {
  readonly ordinal: number
  readonly driver: Driver["Service"]
  readonly allocator: GpuAllocator.GpuAllocator["Service"]
  /** Both services, to provide to an effect that runs on this device (see `onDevice`). */
  readonly context: Context.Context<Driver | GpuAllocator.GpuAllocator>
  /** The peer-stitching adaptor inside the allocator (absent without peer stitching). */
  readonly peer: PeerStitchingAllocator | undefined
}

/** One device's figures. @category models */
export interface DeviceStats {
  readonly ordinal: number
  readonly name: string
  readonly allocator: AllocatorStats
  /** Peer stitching's counters (absent without peer stitching). */
  readonly peer: PeerCounters | undefined
  /** The device's free and total memory (`cuMemGetInfo`): lent memory counts here. */
  readonly memory: { readonly free: number; readonly total: number }
}

/** @category services */
export class Devices extends Context.Service<Devices, {
  /** The devices, by ordinal. */
  readonly sessions: ReadonlyArray<DeviceSession>
  /** Device `ordinal` (`InvalidRequestError` for one the session does not hold). */
  readonly device: (ordinal: number) => Effect.Effect<DeviceSession, InvalidRequestError>
  /** Whether device `from` may map memory located on device `to`. */
  readonly canAccessPeer: (from: number, to: number) => boolean
  /** Every device's figures. */
  readonly stats: Effect.Effect<ReadonlyArray<DeviceStats>, DriverError>
}>()("gmlake/Devices") {}

/** What the generic layer needs. @category models */
export interface DevicesOptions<E> {
  /** Number of devices, ordinals 0 to count - 1. */
  readonly count: number
  /** The driver layer of one device. */
  readonly driver: (ordinal: number) => Layer.Layer<Driver, E>
  /** Peer access between the opened devices, asked once every driver is open. */
  readonly peerAccess: Effect.Effect<(from: number, to: number) => boolean, E>
  /** The allocator core of one device, over its port (e.g. `makeAllocator`). */
  readonly allocator: (port: DevicePort, ordinal: number) => Allocator
  /** Peer stitching (Note [Peer stitching]); off unless given. */
  readonly peerStitching?: PeerStitchingConfig | false
  /** Receives what could not be given back of the borrowed memory when the session closes. */
  readonly onRelease?: (failures: ReadonlyArray<string>) => void
}

/**
 * A session over `count` devices (Note [Multi-device sessions]).
 * @category layers
 */
export const layer = <E>(options: DevicesOptions<E>): Layer.Layer<Devices, E | InvalidRequestError> =>
  Layer.effect(
    Devices,
    Effect.gen(function*() {
      if (!(Number.isInteger(options.count) && options.count >= 1)) {
        return yield* new InvalidRequestError({ detail: `a session needs at least one device, got ${options.count}` })
      }
      const outer = yield* Effect.scope
      const scopes: Array<Scope.Closeable> = []
      const drivers: Array<Context.Context<Driver>> = []
      for (let i = 0; i < options.count; i++) {
        const scope = yield* Scope.fork(outer, "sequential")
        scopes.push(scope)
        drivers.push(yield* Layer.buildWithScope(options.driver(i), scope))
      }
      const ports = drivers.map((c) => Context.get(c, Driver).port)
      const peerAccess = yield* options.peerAccess
      const config = options.peerStitching
      const group = config === undefined || config === false
        ? undefined
        : yield* Effect.try({
          try: () => new PeerGroup(ports.map((port, ordinal) => ({ ordinal, port, streams: port })), peerAccess, config),
          catch: (e) => e instanceof InvalidRequestError ? e : new InvalidRequestError({ detail: String(e) })
        })
      if (group !== undefined) {
        // Added after the devices' scopes, so it runs before any of them closes.
        yield* Effect.addFinalizer(() =>
          Effect.sync(() => {
            const failures = group.releaseAll()
            if (options.onRelease !== undefined) options.onRelease(failures)
          })
        )
      }
      const sessions: Array<DeviceSession> = []
      for (let i = 0; i < options.count; i++) {
        let peer: PeerStitchingAllocator | undefined
        const allocatorLayer = GpuAllocator.layer((port) => {
          const core = options.allocator(port, i)
          if (group === undefined) return core
          peer = group.wrap(i, core)
          return peer
        })
        const built = yield* Layer.buildWithScope(allocatorLayer, scopes[i]!).pipe(Effect.provideContext(drivers[i]!))
        const context = Context.merge(drivers[i]!, built)
        sessions.push({
          ordinal: i,
          driver: Context.get(context, Driver),
          allocator: Context.get(context, GpuAllocator.GpuAllocator),
          context,
          peer
        })
      }
      const device = (ordinal: number) => {
        const s = sessions[ordinal]
        return s === undefined
          ? Effect.fail(new InvalidRequestError({ detail: `device ${ordinal} is not in this session (${sessions.length} device(s))` }))
          : Effect.succeed(s)
      }
      return Devices.of({
        sessions,
        device,
        canAccessPeer: (from, to) => from !== to && from >= 0 && to >= 0 && from < sessions.length && to < sessions.length && peerAccess(from, to),
        stats: Effect.forEach(sessions, (s) =>
          Effect.gen(function*() {
            return {
              ordinal: s.ordinal,
              name: s.driver.info.name,
              allocator: yield* s.allocator.stats,
              peer: s.peer?.peerCounters(),
              memory: yield* s.driver.memGetInfo
            } satisfies DeviceStats
          }))
      })
    })
  )

/**
 * Runs `self` on device `ordinal` of the session: its `Driver` and `GpuAllocator` are that device's.
 * @category combinators
 */
export const onDevice = (ordinal: number) =>
<A, E, R>(
  self: Effect.Effect<A, E, R>
): Effect.Effect<A, E | InvalidRequestError, Devices | Exclude<R, Driver | GpuAllocator.GpuAllocator>> =>
  Effect.flatMap(Devices, (d) => d.device(ordinal)).pipe(
    Effect.flatMap((s) => Effect.provideContext(self, s.context))
  )

/** Options of the ready-made sessions. @category models */
export interface SessionOptions {
  /** The allocation policy of every device (default `gmlake`). */
  readonly policy?: PolicyName
  readonly policyOptions?: PolicyOptions
  /** Peer stitching (Note [Peer stitching]); off unless given. */
  readonly peerStitching?: PeerStitchingConfig | false
  readonly onRelease?: (failures: ReadonlyArray<string>) => void
}

const allocatorOf = (options: SessionOptions) => (port: DevicePort): Allocator =>
  makeAllocator(options.policy ?? "gmlake", port, options.policyOptions ?? {}, port)

const sessionFields = (options: SessionOptions) => ({
  ...(options.peerStitching !== undefined ? { peerStitching: options.peerStitching } : {}),
  ...(options.onRelease !== undefined ? { onRelease: options.onRelease } : {})
})

/**
 * A session over the devices of a simulated system. The system stays with the caller, so that
 * its ledgers can be checked after the session has closed.
 * @category layers
 */
export const layerSim = (system: SimSystem, options: SessionOptions = {}): Layer.Layer<Devices, InvalidRequestError> =>
  layer<never>({
    count: system.count,
    driver: (i) => {
      const sim = system.device(i)
      return layerOver(sim, { kind: "sim", ordinal: i, name: sim.name, granularity: sim.granularity, capacity: sim.capacity })
    },
    peerAccess: Effect.succeed((from, to) => system.canAccessPeer(from, to)),
    allocator: allocatorOf(options),
    ...sessionFields(options)
  })

/**
 * A session over CUDA devices `ordinals` (default: every visible device), each on its primary
 * context, with peer access as `cuDeviceCanAccessPeer` reports it when the session opens.
 *
 * All devices share one binding of the driver library, so that switching contexts between them
 * on this thread stays right (Note [One context per thread]); for the same reason, do not open
 * another CUDA session (`layerCuda`) in the process while this one is open.
 * @category layers
 */
export const layerCuda = (
  options: SessionOptions & {
    readonly ordinals?: ReadonlyArray<number>
    /** The driver library (default: `$GMLAKE_LIBCUDA` if set, else `libcuda.so.1`). */
    readonly library?: string
  } = {}
): Layer.Layer<Devices, DriverError | InvalidRequestError> =>
  Layer.unwrap(Effect.gen(function*() {
    const lib = yield* loadCudaLibrary(options.library)
    const ordinals = options.ordinals ?? (yield* driverCall(() => {
      const count = new Int32Array(1)
      const init = lib.api.cuInit(0)
      if (init !== 0) throw cudaError("cuInit", init, lib.describe)
      const rc = lib.api.cuDeviceGetCount(count)
      if (rc !== 0) throw cudaError("cuDeviceGetCount", rc, lib.describe)
      return Array.from({ length: count[0]! }, (_, i) => i)
    }))
    const opened: Array<CudaContext | undefined> = ordinals.map(() => undefined)
    return layer<DriverError>({
      count: ordinals.length,
      driver: (i) =>
        Layer.unwrap(Effect.gen(function*() {
          const session = yield* openCudaDevice(lib, ordinals[i]!)
          opened[i] = session.device
          return layerOver(session.backend, session.info)
        })),
      peerAccess: driverCall(() => {
        const matrix = opened.map((from) => opened.map((to) => from !== to && from!.canAccessPeer(to!.device)))
        return (from: number, to: number) => matrix[from]?.[to] === true
      }),
      allocator: allocatorOf(options),
      ...sessionFields(options)
    })
  }))
