/**
 * `gmlake calibrate`: this machine's driver levels (Note [Host levels] in `Latency.ts`).
 *
 * @since 0.1.0
 */
import { Console, Effect, Result } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import { driverCallKinds } from "../domain/DriverPort.ts"
import { fitLevels } from "../domain/Latency.ts"
import { type CudaReplayReport, replayCuda } from "../replay/ReplayRunner.ts"
import { multiStreamTrace } from "../trace/Synthetic.ts"
import { decodeTrace, type Trace } from "../trace/Trace.ts"
import { UsageError } from "./Errors.ts"
import { LEVELS_FORMAT, writeLevels } from "./Levels.ts"
import * as Options from "./Options.ts"
import { loadTraceWithProgress } from "./Progress.ts"
import { renderTable } from "./Table.ts"

/**
 * What `calibrate` replays when given no trace: a synthetic training run on three streams
 * (`Synthetic.ts`), seconds of work. A rough level: its tensors are smaller than real models' (a
 * peak of 1.2 GiB), and a second of work measures the host of that second (on two H200 runs its
 * set-access level was 0.76 and 1.11, the bundled traces' 0.85-0.95; `bench/results/2026-12-03-h200-levels*`);
 * a user's own traces, over more rounds, give theirs.
 * @category constants
 */
export const calibrationWorkload = { seed: 11, steps: 4, layers: 48 } as const

/** `gmlake calibrate`. @category commands */
export const calibrate = Command.make(
  "calibrate",
  {
    traces: Argument.String("trace").pipe(
      Argument.withDescription("traces to replay (your own workloads, or traces/*.json.gz); default: a synthetic workload, a rough level"),
      Argument.variadic()
    ),
    device: Options.device,
    out: Flag.String("out").pipe(
      Flag.withMetavar("FILE"),
      Flag.withDescription("where to write the levels (default driver-levels.json)"),
      Flag.withDefault("driver-levels.json")
    ),
    rounds: Options.countWithDefault("rounds", 2, 50, 5, "rounds of gmlake and expandable per trace; the first is not counted (default 5)"),
    json: Options.json
  },
  (o) =>
    Effect.gen(function*() {
      if (o.device !== "cuda") {
        return yield* new UsageError({
          where: "calibrate",
          detail: "measures a GPU's driver: give --device cuda (the simulated device takes no time to measure)"
        })
      }
      const traces: Array<Trace> = []
      for (const file of o.traces) traces.push(yield* loadTraceWithProgress(file, undefined, o.json))
      if (traces.length === 0) {
        const decoded = decodeTrace("calibration workload", multiStreamTrace(calibrationWorkload))
        if (Result.isFailure(decoded)) return yield* Effect.die(decoded.failure)
        traces.push(decoded.success)
      }
      const policies = ["gmlake", "expandable"] as const
      const runs = Array.from({ length: o.rounds }, () => policies).flat()
      // The first round of each trace warms the driver and the code up (Note [Host levels]).
      const warm: Array<CudaReplayReport> = []
      for (const trace of traces) warm.push(...(yield* replayCuda(trace, runs)).slice(policies.length))
      const levels = fitLevels(warm.map((r) => ({ measured: r.measuredByKind, model: r.driverMicrosByKind })))
      const content = {
        format: LEVELS_FORMAT,
        device: warm[0]?.deviceName ?? "unknown",
        measuredAt: new Date().toISOString(),
        workload: `${traces.map((t) => t.workload).join(", ")} (gmlake and expandable, ${o.rounds - 1} warm rounds each)`,
        levels
      } as const
      yield* writeLevels(o.out, content)
      if (o.json) return yield* Console.log(JSON.stringify(content))
      const rows = driverCallKinds.flatMap((k) => {
        const calls = warm.reduce((s, r) => s + r.driverCalls[k], 0)
        if (calls === 0) return []
        const measured = warm.reduce((s, r) => s + r.measuredByKind[k], 0) / 1000
        const model = warm.reduce((s, r) => s + r.driverMicrosByKind[k], 0) / 1000
        return [[k, String(calls), measured.toFixed(1), model.toFixed(1), levels[k]?.toFixed(3) ?? "- (too little to tell)"]]
      })
      yield* Console.log(renderTable(["call", "calls", "measured ms", "model ms", "level"], rows))
      yield* Console.log(`wrote ${o.out}: replay, compare and bench take it as --driver-levels ${o.out}`)
    })
).pipe(
  Command.withDescription(
    "Measure this machine's driver: replay the given traces (default: a synthetic workload) with gmlake and expandable " +
      "on the GPU, time every driver call, and write each call kind's time over the model's (the levels that --driver-levels applies)"
  )
)
