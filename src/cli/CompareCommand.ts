/**
 * `gmlake compare` and `gmlake bench`: every bundled (or given) trace under every policy, side by
 * side with PyTorch's recorded figures; `bench` adds warm-up and the median of several replays.
 *
 * @since 0.1.0
 */
import { Console, Effect, Option } from "effect"
import { Argument, Command } from "effect/cli"
import { readdirSync } from "node:fs"
import { join } from "node:path"
import type { PolicyName } from "../domain/Allocator.ts"
import { formatBytes } from "../domain/Units.ts"
import type { ReplayReport } from "../replay/ReplayRunner.ts"
import { type AllocationsFailed, UsageError } from "./Errors.ts"
import { levelsOf } from "./Levels.ts"
import * as Options from "./Options.ts"
import { loadTraceWithProgress, withReplayProgress } from "./Progress.ts"
import { isComplete } from "./Render.ts"
import { pairedRatio, printReports, replayRounds, resolvePolicyOptions, WARM_EVENTS } from "./ReplayCommand.ts"
import { renderTable } from "./Table.ts"

/**
 * The traces bundled with the project, in `dir`.
 * @category traces
 */
export const bundledTraces = (dir = "traces"): Array<string> => {
  try {
    return readdirSync(dir).filter((f) => f.endsWith(".json.gz") || (f.endsWith(".json") && f !== "anchors.json"))
      .sort().map((f) => join(dir, f))
  } catch {
    return []
  }
}

const traces = Argument.String("trace").pipe(
  Argument.withDescription("gmlake-trace/1 files or PyTorch memory snapshots (default: every trace in ./traces)"),
  Argument.variadic()
)

const run = (
  bench: boolean,
  o: {
    readonly traces: ReadonlyArray<string>
    readonly policies: ReadonlyArray<PolicyName>
    readonly json: boolean
    readonly config: Option.Option<string>
    readonly repeat: number
    /** Untimed replays per policy; none: `warmReplays` of each trace (Note [Warm by events]). */
    readonly warmup: number | Option.Option<number>
    readonly countOoms: boolean
    readonly deviceIndex: Option.Option<number>
    readonly driverLevels: Option.Option<string>
  }
) =>
  Effect.gen(function*() {
    const command = bench ? "bench" : "compare"
    const files = o.traces.length > 0 ? o.traces : bundledTraces()
    if (files.length === 0) return yield* new UsageError({ where: command, detail: "no traces given and none found in ./traces" })
    const policy = yield* resolvePolicyOptions(o.config, Option.none(), o.policies)
    const warmup = typeof o.warmup === "number" ? o.warmup : Option.getOrUndefined(o.warmup)
    const levels = yield* levelsOf(o.driverLevels)
    const all: Array<ReplayReport> = []
    // per trace, each other policy's ns/event against caching's (Note [Paired rounds])
    const ratios: Array<Array<string>> = []
    const others = o.policies.filter((p) => p !== "caching")
    const base = o.policies.indexOf("caching")
    let failure: AllocationsFailed | undefined
    for (const file of files) {
      const trace = yield* loadTraceWithProgress(file, Option.getOrUndefined(o.deviceIndex), o.json)
      const { reports, rounds } = yield* withReplayProgress(
        `replaying ${trace.workload}`,
        o.json,
        replayRounds(trace, o.policies, { policy, ...(levels !== undefined ? { levels } : {}) }, o.repeat, warmup)
      )
      all.push(...reports)
      if (base >= 0) {
        ratios.push([trace.workload, ...others.map((p) => pairedRatio(rounds, o.policies.indexOf(p), base).toFixed(2) + "x")])
      }
      // Every trace is shown; the first failed one decides the exit (Note [Failed runs]).
      const printed = yield* Effect.flip(printReports(command, trace, reports, o.json, o.countOoms)).pipe(
        Effect.map((e) => e as AllocationsFailed | undefined),
        Effect.catch(() => Effect.succeed(undefined))
      )
      failure ??= printed
      if (!o.json) yield* Console.log("")
    }
    if (!o.json && files.length > 1) {
      const rows = o.policies.map((p) => {
        const rs = all.filter((r) => r.policy === p)
        const done = rs.every(isComplete)
        const mean = rs.reduce((s, r) => s + r.utilization, 0) / rs.length
        const worst = Math.min(...rs.map((r) => r.utilization))
        const ns = rs.reduce((s, r) => s + r.nsPerOp * r.events, 0) / Math.max(1, rs.reduce((s, r) => s + r.events, 0))
        return [
          p,
          done ? mean.toFixed(4) : "-",
          done ? worst.toFixed(4) : "-",
          ns.toFixed(0),
          formatBytes(rs.reduce((s, r) => s + r.peakReserved, 0))
        ]
      })
      yield* Console.log(
        `summary over ${files.length} traces${
          bench
            ? ` (ns/event: median of ${o.repeat} replays after ${
              warmup === undefined ? `untimed ones of ${WARM_EVENTS.toLocaleString("en-US")} events (5 to 60 replays)` : `${warmup} untimed`
            } per policy)`
            : ""
        }`
      )
      yield* Console.log(renderTable(["policy", "mean util", "worst util", "ns/event", "sum of peaks"], rows))
      // The speed acceptance is a ratio from one run (Note [Interleaved rounds]): say it.
      if (bench && base >= 0 && others.length > 0) {
        yield* Console.log("")
        yield* Console.log("ns/event against caching's, per trace (the median of each round's ratio)")
        yield* Console.log(renderTable(["trace", ...others], ratios))
      }
    }
    if (!o.json && files.length > 0) yield* Console.log(`To see a replay over time, as a page: gmlake report ${files[0]} --out report.html`)
    if (failure !== undefined) return yield* failure
  })

const flags = (bench: boolean) => ({
  traces,
  policies: Options.policies,
  json: Options.json,
  config: Options.config,
  repeat: Options.repeat(bench ? 11 : 1, `replays per policy; ns/event is their median (default ${bench ? 11 : 1})`),
  warmup: bench ? Options.warmupByEvents : Options.warmup(0),
  countOoms: Options.countOoms,
  deviceIndex: Options.deviceIndex,
  driverLevels: Options.driverLevels
})

/** `gmlake compare`. @category commands */
export const compare = Command.make("compare", flags(false), (o) => run(false, o)).pipe(
  Command.withDescription(
    "Replay the bundled (or given) traces under every policy, beside PyTorch's recorded figures, with a summary. " +
      "Sizes are in binary units (1 GiB = 2^30 bytes)."
  )
)

/** `gmlake bench`. @category commands */
export const bench = Command.make("bench", flags(true), (o) => run(true, o)).pipe(
  Command.withDescription(
    "compare, with ns/event as the median of --repeat replays (11 by default; a policy against caching: the median of each round's ratio) after --warmup untimed ones (by default as many as make 1,000,000 events, 5 to 60)"
  )
)
