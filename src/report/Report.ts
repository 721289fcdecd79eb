/**
 * What a report shows, gathered from replays: every policy replayed on the simulated device with
 * a fine timeline, PyTorch's own figures from the trace, and the same replays again on smaller
 * devices (`capacities`) to see which policies still complete. Plain data, ready for `Html.render`.
 *
 * @since 0.2.0
 */
import { Effect } from "effect"
import type { PolicyName } from "../domain/Allocator.ts"
import type { DriverError } from "../domain/Errors.ts"
import type { DriverLevels } from "../domain/Latency.ts"
import type { PolicyOptions } from "../domain/policies/Policies.ts"
import { replaySim, type ReplayReport } from "../replay/ReplayRunner.ts"
import type { Timeline } from "../replay/Timeline.ts"
import type { Anchor, RecordedDriverEvent, Trace } from "../trace/Trace.ts"

/** One policy's replay, as the report shows it. @category models */
export interface PolicyRun {
  readonly policy: PolicyName
  readonly peakRequested: number
  readonly peakReserved: number
  readonly utilization: number
  readonly driverCalls: number
  /** Modelled driver time, microseconds. */
  readonly driverMicros: number
  readonly stitches: number
  readonly ooms: number
  /** The first out-of-memory message, if any. */
  readonly firstOom: string | null
  /** Index one past the last event of the slice in which the first out-of-memory happened. */
  readonly firstOomBy: number | null
  readonly timeline: Timeline
}

/** The replays on a device of one (smaller) capacity. @category models */
export interface CapacityRuns {
  readonly capacity: number
  readonly runs: ReadonlyArray<PolicyRun>
}

/** PyTorch's own reserved bytes over the recorded run, from the trace's segment actions. @category models */
export interface RecordedReserved {
  /** The mode the trace was recorded in: segments (`S`, `s`) or expandable maps (`M`, `m`). */
  readonly mode: "native" | "expandable_segments"
  /** Highest reserved bytes within each slice (the slices of the runs' timelines). */
  readonly peakReserved: ReadonlyArray<number>
}

/** Everything a report shows. @category models */
export interface ReportData {
  readonly workload: string
  readonly description: string
  readonly file: string
  /** The device the trace was recorded on, when the trace says. */
  readonly recordedOn: string | null
  readonly events: number
  readonly allocations: number
  readonly streams: number
  /** The simulated device of the main replays. */
  readonly simDevice: string
  readonly native: Anchor | null
  readonly expandable: Anchor | null
  readonly recorded: RecordedReserved | null
  /** Slice ends (event indices), shared by every timeline in the report. */
  readonly sliceEnds: ReadonlyArray<number>
  readonly runs: ReadonlyArray<PolicyRun>
  readonly capacities: ReadonlyArray<CapacityRuns>
}

/** Options of `make`. @category models */
export interface ReportOptions {
  readonly policies: ReadonlyArray<PolicyName>
  /** Smaller devices to replay on again, bytes each. */
  readonly capacities?: ReadonlyArray<number>
  /** Slices of each timeline (the charts' resolution). */
  readonly slices?: number
  readonly policy?: PolicyOptions
  /** A host's levels to cost the driver calls at (Note [Host levels] in `Latency.ts`). */
  readonly levels?: DriverLevels
}

/** Slices a report's timelines have by default: fine enough for a chart a screen wide. @category constructors */
export const reportSlices = 400

const policyRun = (r: ReplayReport): PolicyRun => ({
  policy: r.policy,
  peakRequested: r.peakRequested,
  peakReserved: r.peakReserved,
  utilization: r.utilization,
  driverCalls: r.driverCallsTotal,
  driverMicros: r.driverMicros,
  stitches: r.stitches,
  ooms: r.ooms,
  firstOom: r.firstOom,
  firstOomBy: r.timeline.find((s) => s.ooms > 0)?.endEvent ?? null,
  timeline: r.timeline
})

/**
 * PyTorch's reserved bytes, peak per slice, replaying its recorded segment actions against the
 * slice ends. An action recorded `before` request `b` happened for request `b`: it belongs to the
 * slice holding `b`.
 * @category constructors
 */
export const recordedReserved = (
  recorded: ReadonlyArray<RecordedDriverEvent>,
  sliceEnds: ReadonlyArray<number>
): RecordedReserved | null => {
  if (recorded.length === 0) return null
  const mode = recorded.some((r) => r.kind === "M" || r.kind === "m") ? "expandable_segments" : "native"
  const peaks: Array<number> = []
  let held = 0
  let i = 0
  for (const end of sliceEnds) {
    let peak = held
    while (i < recorded.length && recorded[i]!.before < end) {
      const r = recorded[i++]!
      held += r.kind === "S" || r.kind === "M" ? r.bytes : -r.bytes
      if (held > peak) peak = held
    }
    peaks.push(peak)
  }
  return { mode, peakReserved: peaks }
}

/**
 * Replays `trace` under each policy (and again on each smaller capacity) and gathers the report.
 * @category constructors
 */
export const make = (trace: Trace, options: ReportOptions): Effect.Effect<ReportData, DriverError> =>
  Effect.gen(function*() {
    const slices = options.slices ?? reportSlices
    const replay = (policy: PolicyName, capacity?: number) =>
      replaySim(trace, policy, {
        slices,
        ...(options.policy !== undefined ? { policy: options.policy } : {}),
        ...(options.levels !== undefined ? { levels: options.levels } : {}),
        ...(capacity !== undefined ? { sim: { capacity } } : {})
      })
    const reports = yield* Effect.forEach(options.policies, (p) => replay(p))
    const capacities = yield* Effect.forEach(options.capacities ?? [], (capacity) =>
      Effect.map(Effect.forEach(options.policies, (p) => replay(p, capacity)), (rs) => ({ capacity, runs: rs.map(policyRun) })))
    const sliceEnds = reports[0]?.timeline.map((s) => s.endEvent) ?? []
    return {
      workload: trace.workload,
      description: trace.description,
      file: trace.file,
      recordedOn: trace.device ?? null,
      events: trace.length,
      allocations: trace.allocs,
      streams: trace.streams,
      simDevice: reports[0]?.deviceName ?? "",
      native: trace.native ?? null,
      expandable: trace.expandable ?? null,
      recorded: recordedReserved(trace.recorded, sliceEnds),
      sliceEnds,
      runs: reports.map(policyRun),
      capacities
    }
  })
