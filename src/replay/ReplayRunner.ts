/**
 * Replaying a trace under one policy on one device, and what the replay reports.
 *
 * @since 0.1.0
 */
import { Context, Deferred, Effect, Exit, Fiber, Layer } from "effect"
import type { PolicyName } from "../domain/Allocator.ts"
import { makeAllocator, type PolicyOptions } from "../domain/policies/Policies.ts"
import { ByteVerifier, type VerifyDevice, type VerifyReport } from "./Verify.ts"
import { Replayer, type TimelineProbe } from "./Replay.ts"
import type { Timeline } from "./Timeline.ts"
import { type DriverTimes, timedBackend } from "../layers/TimedBackend.ts"
import type { Trace } from "../trace/Trace.ts"
import { type CallCounts, MeteredPort } from "../layers/MeteredPort.ts"
import { SimDriver, type SimDriverOptions } from "../layers/sim/SimDriver.ts"
import { layerSimWith } from "../layers/sim/SimDriverLayer.ts"
import { type CudaSessionOptions, openCudaSession } from "../layers/cuda/CudaDriverLayer.ts"
import { type DeviceIo, layerOver } from "../layers/DriverLayer.ts"
import { HandleRegistry } from "../layers/HandleRegistry.ts"
import type { DriverError } from "../domain/Errors.ts"
import type { DriverLevels } from "../domain/Latency.ts"
import * as GpuAllocator from "../services/Allocator.ts"
import { Driver, driverCall } from "../services/Driver.ts"

/** One replay's figures (the `--json` line). @category models */
export interface ReplayReport {
  readonly workload: string
  readonly policy: PolicyName
  readonly device: string
  readonly deviceName: string
  readonly events: number
  /** Peak of live requested bytes over the trace, failed requests included (Note [Requested and served]). */
  readonly peakRequested: number
  /** Peak of live bytes of the requests served; differs from `peakRequested` only when some failed. */
  readonly peakServed: number
  /** Allocations the trace leaves live at its end, and their requested bytes. */
  readonly liveAtEnd: { readonly allocations: number; readonly bytes: number }
  readonly peakReserved: number
  readonly utilization: number
  /** Wall time of the replay loop over alloc and free events, nanoseconds per event. */
  readonly nsPerOp: number
  readonly replayMs: number
  readonly driverCalls: CallCounts
  readonly driverCallsTotal: number
  /** Modelled driver time of the plan on the GPU (Note [Driver-time model]), microseconds. */
  readonly driverMicros: number
  /** The same by call kind, microseconds. */
  readonly driverMicrosByKind: CallCounts
  /** Allocations that failed because the device could not hold them (no injected fault involved). */
  readonly ooms: number
  /** Allocations that failed because an injected driver fault hit one of their driver calls. */
  readonly faultedAllocs: number
  /** Every failed allocation (out of memory, injected faults, other driver failures). */
  readonly failedAllocs: number
  readonly driverFaults: number
  readonly stitches: number
  readonly stitchedChunks: number
  readonly cachedStitchHits: number
  readonly evictions: number
  readonly releasedForPressure: number
  /** Handles (chunks, ranges, mappings, allocations) alive on the device after the session closed. */
  readonly leakedHandles: number
  /** PyTorch's own peak reserved on the recorded run, for the same policy family, when the trace has it. */
  readonly pytorchPeakReserved: number | null
  readonly firstOom: string | null
  /** Whether safe cross-stream reuse was on (Note [Cross-stream reuse]). */
  readonly crossStream: boolean
  /** Driver calls, modelled driver time, reserved bytes and stitches per 5% of the trace. */
  readonly timeline: Timeline
  /** The byte check's findings (`verify`, Note [Replay byte check]), or null when not asked for. */
  readonly verified: VerifyReport | null
}

const roundAll = (c: CallCounts): CallCounts => {
  const out = { ...c }
  for (const k in out) out[k as keyof CallCounts] = Math.round(out[k as keyof CallCounts])
  return out
}

/** Events replayed between two yields (so that an interrupt can stop a long replay). */
const SLICE = 4096

/**
 * Told how far a replay is (events replayed, events in all) between slices; the command line
 * provides one for its progress line. None by default.
 * @category services
 */
export const ReplayProgress = Context.Reference<((done: number, total: number) => void) | undefined>(
  "gmlake/ReplayProgress",
  { defaultValue: () => undefined }
)

/**
 * Drives a replay on one fiber, in slices, yielding between them. Returns the nanoseconds spent
 * inside the replay loop.
 */
const driveSingle = (replayer: Replayer, tick: ((i: number) => void) | undefined) =>
  Effect.gen(function*() {
    const progress = yield* ReplayProgress
    let ns = 0
    while (!replayer.done) {
      const t0 = process.hrtime.bigint()
      replayer.run(replayer.position + SLICE, tick)
      ns += Number(process.hrtime.bigint() - t0)
      if (progress !== undefined) progress(replayer.position, replayer.length)
      yield* Effect.yieldNow
    }
    return ns
  })

/**
 * Note [One fiber per stream]
 * ---------------------------
 * A multi-stream trace is replayed with one fiber per stream, all forked in the replay's scope.
 * The trace fixes the order in which the framework asked for memory across streams, and the
 * allocator's figures must not depend on scheduling, so the fibers take turns: a fiber replays a
 * maximal run of consecutive events of its own stream, then hands the turn to the stream of the
 * next event and waits for its own turn again. Interrupting the replay (or one failing) interrupts
 * every stream fiber through the scope, and the session's finalizers give everything back.
 */
const driveStreams = (trace: Trace, replayer: Replayer, tick: ((i: number) => void) | undefined) =>
  Effect.scoped(Effect.gen(function*() {
    const progress = yield* ReplayProgress
    const turns: Array<Deferred.Deferred<boolean>> = []
    for (let s = 0; s < trace.streams; s++) turns.push(yield* Deferred.make<boolean>())
    let ns = 0
    let reported = 0
    const handOff = Effect.suspend(() => {
      if (replayer.done) return Effect.forEach(turns, (d) => Deferred.succeed(d, false), { discard: true })
      return Deferred.succeed(turns[trace.stream[replayer.position]!]!, true)
    })
    const worker = (s: number) =>
      Effect.gen(function*() {
        while (true) {
          const go = yield* Deferred.await(turns[s]!)
          if (!go) return
          turns[s] = yield* Deferred.make<boolean>()
          // The run of consecutive events on this stream (bounded, so that interrupts get in).
          let end = replayer.position
          const limit = Math.min(trace.length, end + SLICE)
          while (end < limit && trace.stream[end] === s) end++
          const t0 = process.hrtime.bigint()
          replayer.run(end, tick)
          ns += Number(process.hrtime.bigint() - t0)
          if (progress !== undefined && replayer.position - reported >= SLICE) {
            reported = replayer.position
            progress(reported, trace.length)
          }
          yield* handOff
        }
      })
    const fibers = []
    for (let s = 0; s < trace.streams; s++) fibers.push(yield* Effect.forkScoped(worker(s)))
    yield* handOff
    yield* Fiber.joinAll(fibers)
    return ns
  }))

/**
 * Replays `trace` with `policy` on a fresh simulated device.
 * @category replay
 */
export const replaySim = (
  trace: Trace,
  policy: PolicyName,
  options: {
    readonly sim?: SimDriverOptions
    readonly policy?: PolicyOptions
    /** Slices of the timeline (`defaultSlices` when absent). */
    readonly slices?: number
    /** The byte check (Note [Replay byte check]). */
    readonly verify?: boolean
    /** A host's levels to cost the driver calls at (Note [Host levels] in `Latency.ts`). */
    readonly levels?: DriverLevels
  } = {}
): Effect.Effect<ReplayReport, DriverError> =>
  Effect.suspend(() => {
    const sim = new SimDriver(options.sim ?? {})
    // Note [Simulated streams]: one tick per event, only where events matter (several streams).
    const tick = trace.streams > 1 ? () => sim.tick() : undefined
    return replayWith(trace, policy, layerSimWith(sim), options.policy ?? {}, () => ({
      leaked: sim.liveHandles(),
      faults: sim.faults
    }), tick, undefined, () => sim.faults, options.slices, options.verify === true ? verifyOn(sim, false) : undefined, options.levels)
  })

/**
 * The byte check's view of a backend (Note [Replay byte check]): fills queued on the session
 * stream's backend handle; the device synchronized before each check where `synchronize`.
 */
const verifyOn = (backend: DeviceIo, synchronize: boolean) => (streamHandle: (stream: number) => number): VerifyDevice => ({
  fill: (address, value, bytes, stream) => backend.fillAsync(address, value, bytes, streamHandle(stream)),
  read: (address, bytes) => backend.read(address, bytes),
  synchronize: synchronize ? () => backend.synchronize() : undefined,
  // the simulator keeps contents in 4 KiB pages: one page at each end keeps a whole trace small
  ...(synchronize ? {} : { window: 4096 })
})

/**
 * Replays `trace` with `policy` over a device layer. `after` runs once the session's scope has
 * closed and reports what the device still holds.
 * @category replay
 */
export const replayWith = <E>(
  trace: Trace,
  policy: PolicyName,
  device: Layer.Layer<Driver, E>,
  policyOptions: PolicyOptions,
  after: () => { readonly leaked: number; readonly faults: number },
  tick?: (index: number) => void,
  replayed?: () => void,
  faultCount?: () => number,
  slices?: number,
  verify?: (streamHandle: (stream: number) => number) => VerifyDevice,
  levels?: DriverLevels
): Effect.Effect<ReplayReport, E | DriverError> => {
  let verified: VerifyReport | null = null
  let metered: MeteredPort | undefined
  let crossStream = false
  const allocatorLayer = GpuAllocator.layer((port) => {
    metered = new MeteredPort(port, levels)
    const a = makeAllocator(policy, metered, policyOptions, port)
    crossStream = policyOptions.crossStream === true
    return a
  })
  const session = Effect.gen(function*() {
    const driver = yield* Driver
    const allocator = yield* GpuAllocator.GpuAllocator
    // The trace's streams 1..n-1 become the session's streams 1..n-1 (Note [Stream ids]); the
    // session's registry destroys them when it closes.
    for (let s = 1; s < trace.streams; s++) {
      const id = yield* driverCall(() => driver.port.streamCreate())
      if (id !== s) return yield* Effect.die(new Error(`stream ${s} of the trace became session stream ${id}`))
    }
    const m = metered!
    const counters = allocator.core.inner
    const probe: TimelineProbe = {
      read: () => {
        const windowPeakReserved = m.windowPeak
        m.resetWindow()
        return { calls: m.total, micros: m.micros, stitches: counters.counters().stitches, reserved: m.reserved, windowPeakReserved }
      }
    }
    const replayer = new Replayer(trace, allocator.core.inner, probe, slices, faultCount)
    // Session stream ids become the backend's handles through the session's registry (Note [Stream ids]).
    const streamHandle = driver.port instanceof HandleRegistry ? (s: number) => (driver.port as HandleRegistry).streamHandle(s) : (s: number) => s
    const verifier = verify === undefined ? undefined : new ByteVerifier(verify(streamHandle))
    replayer.verifier = verifier
    const ns = trace.streams > 1 ? yield* driveStreams(trace, replayer, tick) : yield* driveSingle(replayer, tick)
    if (replayed !== undefined) replayed()
    if (verifier !== undefined) verified = verifier.report()
    return { outcome: replayer.outcome(), ns, counters: allocator.core.counters(), info: driver.info }
  }).pipe(Effect.provide(Layer.provideMerge(allocatorLayer, device)))
  return Effect.map(session, ({ outcome, ns, counters, info }) => {
    const m = metered!
    const { leaked, faults } = after()
    const anchor = policy === "caching" ? trace.native : trace.expandable
    return {
      workload: trace.workload,
      policy,
      device: info.kind,
      deviceName: info.name,
      events: outcome.events,
      peakRequested: outcome.peakRequested,
      peakServed: outcome.peakServed,
      liveAtEnd: outcome.liveAtEnd,
      peakReserved: m.peakReserved,
      // What the allocator made of the bytes it served (a failed request holds nothing).
      utilization: m.peakReserved === 0 ? 1 : outcome.peakServed / m.peakReserved,
      nsPerOp: outcome.events === 0 ? 0 : ns / outcome.events,
      replayMs: ns / 1e6,
      driverCalls: { ...m.calls },
      driverCallsTotal: m.totalCalls(),
      driverMicros: Math.round(m.micros),
      driverMicrosByKind: roundAll(m.microsByKind),
      ooms: outcome.ooms,
      faultedAllocs: outcome.faultedAllocs,
      failedAllocs: outcome.failedAllocs,
      driverFaults: faults,
      stitches: counters.stitches,
      stitchedChunks: counters.stitchedChunks,
      cachedStitchHits: counters.cachedStitchHits,
      evictions: counters.evictions,
      releasedForPressure: counters.releasedForPressure,
      leakedHandles: leaked,
      pytorchPeakReserved: anchor?.peakReserved ?? null,
      firstOom: outcome.firstOom?.message ?? null,
      crossStream: crossStream,
      timeline: outcome.timeline,
      verified
    }
  })
}

/** A replay on a real device, with what the device itself reported. @category models */
export interface CudaReplayReport extends ReplayReport {
  /** Free device memory (`cuMemGetInfo`) before the replay's session opened and after it closed. */
  readonly deviceFreeBefore: number
  readonly deviceFreeAfter: number
  /** The most device memory in use during the replay, from `cuMemGetInfo`, above `deviceFreeBefore`. */
  readonly devicePeakUsed: number
  /** Wall time of the whole replay, session set-up and teardown included, milliseconds. */
  readonly wallMs: number
  /**
   * Driver time measured around every driver call of the replay itself (the session's teardown
   * excluded, as it is from `driverMicros`), microseconds, in all and by kind.
   */
  readonly measuredDriverMicros: number
  readonly measuredByKind: DriverTimes["micros"]
}

/**
 * A backend that samples the device's free memory whenever the allocator's holding reaches a new
 * high, so that the device's own peak can be compared with the allocator's `peakReserved` without
 * a `cuMemGetInfo` per driver call.
 */
const peakSampler = (backend: DeviceIo) => {
  let held = 0
  let peakHeld = 0
  let minFree = Number.POSITIVE_INFINITY
  const sizes = new Map<number, number>()
  const grew = (bytes: number) => {
    held += bytes
    if (held > peakHeld) {
      peakHeld = held
      minFree = Math.min(minFree, backend.memGetInfo().free)
    }
  }
  const sampled: DeviceIo = {
    ...backend,
    granularity: backend.granularity,
    capacity: backend.capacity,
    memCreate: (bytes) => {
      const h = backend.memCreate(bytes)
      sizes.set(h, bytes)
      grew(bytes)
      return h
    },
    memRelease: (h) => {
      backend.memRelease(h)
      held -= sizes.get(h) ?? 0
      sizes.delete(h)
    },
    memAlloc: (bytes) => {
      const va = backend.memAlloc(bytes)
      sizes.set(-va, bytes)
      grew(bytes)
      return va
    },
    memFree: (va) => {
      backend.memFree(va)
      held -= sizes.get(-va) ?? 0
      sizes.delete(-va)
    }
  }
  return { backend: sampled, minFree: () => minFree }
}

/**
 * Replays `trace` under each policy on a CUDA device, one device session for all, a fresh
 * allocator and handle registry per policy; measures the device's free memory around each.
 * @category replay
 */
export const replayCuda = (
  trace: Trace,
  policies: ReadonlyArray<PolicyName>,
  options: {
    readonly policy?: PolicyOptions
    readonly cuda?: CudaSessionOptions
    readonly verify?: boolean
    /** A host's levels to cost the driver calls at (Note [Host levels] in `Latency.ts`). */
    readonly levels?: DriverLevels
  } = {}
): Effect.Effect<Array<CudaReplayReport>, DriverError> =>
  Effect.scoped(Effect.gen(function*() {
    const session = yield* openCudaSession(options.cuda)
    const startFree = session.port.memGetInfo().free
    // Runs before the device session closes (finalizers run in reverse), after every replay's
    // registry has given its handles back: on an interrupt (Ctrl-C), say what the device holds.
    yield* Effect.addFinalizer((exit) =>
      Exit.hasInterrupts(exit)
        ? Effect.sync(() => {
          let free = -1
          try {
            free = session.port.memGetInfo().free
          } catch {
            // reported as -1
          }
          process.stderr.write(
            `gmlake: replay interrupted; device free memory ${free} B after release, ${startFree} B at start` +
              (free === startFree ? " (all given back)\n" : "\n")
          )
        })
        : Effect.void
    )
    const reports: Array<CudaReplayReport> = []
    for (const policy of policies) {
      const t0 = process.hrtime.bigint()
      const before = yield* driverCall(() => session.port.memGetInfo().free)
      const timer = timedBackend(session.backend)
      const sampler = peakSampler(timer.backend)
      let failures = 0
      let measured: DriverTimes | undefined
      const report = yield* replayWith(
        trace,
        policy,
        layerOver(sampler.backend, session.info, (f) => (failures = f.length)),
        options.policy ?? {},
        () => ({ leaked: failures, faults: 0 }),
        undefined,
        () => (measured = timer.times()),
        undefined,
        undefined,
        options.verify === true ? verifyOn(session.backend, true) : undefined,
        options.levels
      )
      const after = yield* driverCall(() => session.port.memGetInfo().free)
      const minFree = sampler.minFree()
      reports.push({
        ...report,
        deviceFreeBefore: before,
        deviceFreeAfter: after,
        devicePeakUsed: Number.isFinite(minFree) ? before - minFree : 0,
        wallMs: Number(process.hrtime.bigint() - t0) / 1e6,
        measuredDriverMicros: Math.round(measured?.total ?? 0),
        measuredByKind: roundAll(measured?.micros ?? timer.times().micros)
      })
    }
    return reports
  }))
