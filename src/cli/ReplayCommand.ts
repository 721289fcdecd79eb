/**
 * `gmlake replay <trace>`: one trace under the chosen policies, on the simulated device or a GPU.
 *
 * @since 0.1.0
 */
import { Console, Effect, Option, Result } from "effect"
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"
import { Argument, Command } from "effect/cli"
import type { PolicyName } from "../domain/Allocator.ts"
import type { PolicyOptions } from "../domain/policies/Policies.ts"
import type { DriverLevels } from "../domain/Latency.ts"
import { defaultStitchingConfig, StitchingConfig } from "../domain/policies/gmlake/StitchingConfig.ts"
import { emptySettings, inapplicableKeys, parseSettings, type Settings, settingsText } from "../domain/Settings.ts"
import { replayCuda, replaySim, type ReplayReport } from "../replay/ReplayRunner.ts"
import type { SimDriverOptions } from "../layers/sim/SimDriver.ts"
import type { Trace } from "../trace/Trace.ts"
import { AllocationsFailed, CheckFailed, UsageError } from "./Errors.ts"
import { levelsOf } from "./Levels.ts"
import * as Options from "./Options.ts"
import { loadTraceWithProgress, withReplayProgress } from "./Progress.ts"
import { failureLines, failureSummary, formatSize, isComplete, replayJson, replayTable, timelineLine, traceHeading } from "./Render.ts"

/** The environment variable that holds settings (Note [Allocator settings]). @category constants */
export const settingsEnv = "GMLAKE_ALLOC_CONF"

/**
 * The policy options from `GMLAKE_ALLOC_CONF` and `--config` (which wins key by key). A key of
 * `--config` that applies to none of `policies` is refused; so is one from the environment,
 * which would otherwise be silently ignored.
 * @category settings
 */
export const resolvePolicyOptions = (
  config: Option.Option<string>,
  crossStream: Option.Option<"on" | "off">,
  policies: ReadonlyArray<PolicyName>
): Effect.Effect<PolicyOptions, UsageError> =>
  Effect.suspend(() => {
    const decode = (text: string | undefined, source: string): Result.Result<Settings, UsageError> =>
      text === undefined || text.trim() === ""
        ? Result.succeed(emptySettings)
        : Result.mapError(parseSettings(text, source), (e) => new UsageError({ where: `${e.source}: ${e.key}`, detail: e.detail }))
    const env = decode(process.env[settingsEnv], settingsEnv)
    if (Result.isFailure(env)) return Effect.fail(env.failure)
    const flag = decode(Option.getOrUndefined(config), "--config")
    if (Result.isFailure(flag)) return Effect.fail(flag.failure)
    for (const [settings, source] of [[flag.success, "--config"], [env.success, settingsEnv]] as const) {
      const unused = inapplicableKeys(settings, policies)
      if (unused.length > 0) {
        return Effect.fail(
          new UsageError({
            where: `${source}: ${unused[0]}`,
            detail: `does not apply to --policy ${policies.join(",")} (see gmlake replay --help for which policy reads which key)`
          })
        )
      }
    }
    const merged = decode(settingsText(env.success, flag.success), "--config")
    if (Result.isFailure(merged)) return Effect.fail(merged.failure)
    const s = merged.success
    // `--cross-stream off`: no memory crosses streams at all, gmlake's adoption included.
    const off = Option.isSome(crossStream) && crossStream.value === "off"
    const gmlake = off ? new StitchingConfig({ ...(s.gmlake ?? defaultStitchingConfig), crossStream: false }) : s.gmlake
    return Effect.succeed({
      caching: s.caching,
      expandable: s.expandable,
      ...(gmlake !== undefined ? { gmlake } : {}),
      ...(Option.isSome(crossStream) ? { crossStream: crossStream.value === "on" } : {})
    })
  })

const median = (xs: ReadonlyArray<number>) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]!
}

/** Events every policy replays untimed before `bench` times it (Note [Warm by events]). @category replay */
export const WARM_EVENTS = 1_000_000

/**
 * The untimed replays of a trace of `events` events that make `WARM_EVENTS` events, and at least 5.
 *
 * Note [Warm by events]
 * ---------------------
 * A policy's code is compiled over its first replays, by compiler threads that share this
 * machine's two cores with the replay, and a larger policy takes longer: on gpt2_fixed (23,821
 * events) gmlake's replays ran at 2,268, 1,499, 629, 679 and 369 ns/event before settling near
 * 250-320, while caching settled after three. Five untimed replays were warm on the long traces
 * and not on the short ones: `bench` gave gmlake/caching on gpt2_fixed as 1.39-2.33x with five,
 * 1.09-1.22x with twenty and 1.06-1.17x with forty (three runs each, 2026-12-02). On
 * llama1b_ckpt_varlen gmlake's code was still being optimized (`--trace-opt`: its growth and
 * stitch paths, which run only in a replay's first steps) up to the 14th replay, about 900,000
 * events, with replays at twice the settled time in between. So the warm-up is counted in events,
 * the same amount of work on every trace: a million events, 42 replays of gpt2_fixed and 16 of
 * llama1b_ckpt_varlen (at least 5, at most 60).
 * @category replay
 */
export const warmReplays = (events: number): number =>
  Math.min(WARM_REPLAYS_MAX, Math.max(5, Math.ceil(WARM_EVENTS / Math.max(1, events))))

/**
 * At most this many untimed replays: a trace of a few events costs more per replay in setting up
 * the device and allocator than in its events, and is warm long before a million.
 */
const WARM_REPLAYS_MAX = 60

/**
 * Note [Young generation between replays]
 * ---------------------------------------
 * A replay's garbage is collected in the next one's time: gmlake allocates 1.6-4.3 MB per replay
 * (caching 0.4-0.5), and replayed back to back its replays ran at 1.5-2x their settled time in
 * bursts of three or four, about one replay in four on llama1b_ckpt_varlen (9 and 7 of 40 over 1.3x
 * the median in two runs), with the same code and no deoptimization, as the young generation
 * filled. With a young-generation collection before each replay, untimed, none did (0 of 40, twice).
 * So `replayAll` runs one before every replay, of every policy alike: each replay is timed from an
 * empty young generation, and a replay that makes more garbage than the young generation holds
 * still pays for its collections. It is a minor collection only: a full one would also discard
 * compiled code. Where the engine will not expose its collector, nothing is done.
 */
let youngGc: (() => void) | null | undefined

const collectYoung = (): void => {
  if (youngGc === undefined) {
    try {
      setFlagsFromString("--expose-gc")
      const gc = runInNewContext("gc") as unknown
      youngGc = typeof gc === "function" ? () => (gc as (o: { type: string }) => void)({ type: "minor" }) : null
    } catch {
      youngGc = null
    }
  }
  youngGc?.()
}

/** What `replayAll` and `replayRounds` pass to every replay. @category replay */
export interface SimReplayOptions {
  readonly sim?: SimDriverOptions
  readonly policy?: PolicyOptions
  readonly verify?: boolean
  /** A host's levels to cost the driver calls at (Note [Host levels] in `Latency.ts`). */
  readonly levels?: DriverLevels
}

/**
 * Replays one trace under several policies on the simulated device, `repeat` times each (median
 * ns/event), after `warmup` untimed replays (the JIT compiles a policy's code over its first
 * replays; PyTorch's anchors likewise give a warm figure); `undefined`: `warmReplays` of the trace.
 *
 * Note [Interleaved rounds]
 * -------------------------
 * The replays go round by round, one of each policy per round, not all of one policy and then all
 * of the next: on a shared machine the load changes over seconds, and a policy timed in a quiet
 * stretch against one timed in a busy stretch gave ratios between 0.6 and 3.4 for the same tree.
 * Round by round, every policy sees the same conditions, so a ratio from the rounds of one run is
 * what one run can honestly say (Note [Paired rounds]).
 * @category replay
 */
export const replayAll = (
  trace: Trace,
  policies: ReadonlyArray<PolicyName>,
  options: SimReplayOptions,
  repeat: number,
  warmup: number | undefined
) => Effect.map(replayRounds(trace, policies, options, repeat, warmup), (r) => r.reports)

/**
 * `replayAll`, with every timed replay's ns/event as well, by policy then round.
 *
 * Note [Paired rounds]
 * --------------------
 * One policy's speed against another's is the median of their per-round ratios, not the ratio of
 * their medians: the two replays of a round ran back to back, under the same load, so a round the
 * machine was busy in slows both and its ratio stays put. On this project's shared two-core
 * machine, four `npm run bench` runs of one tree with the ratio of medians over 5 rounds gave
 * gmlake/caching 0.61-1.10 on one trace and 1.04-1.43 on another.
 * @category replay
 */
export const replayRounds = (
  trace: Trace,
  policies: ReadonlyArray<PolicyName>,
  options: SimReplayOptions,
  repeat: number,
  warmup: number | undefined
) =>
  Effect.gen(function*() {
    const untimed = warmup ?? warmReplays(trace.length)
    // Note [Young generation between replays]
    const replay = (policy: PolicyName) => Effect.suspend(() => (collectYoung(), replaySim(trace, policy, options)))
    for (let i = 0; i < untimed; i++) for (const policy of policies) yield* replay(policy)
    const runs: Array<Array<ReplayReport>> = policies.map(() => [])
    for (let i = 0; i < repeat; i++) {
      for (let k = 0; k < policies.length; k++) runs[k]!.push(yield* replay(policies[k]!))
    }
    return {
      reports: runs.map((rs) => ({ ...rs[0]!, nsPerOp: median(rs.map((r) => r.nsPerOp)) })),
      rounds: runs.map((rs) => rs.map((r) => r.nsPerOp))
    }
  })

/**
 * The median, over the rounds of `replayRounds`, of policy `k`'s ns/event over policy `base`'s in
 * the same round (Note [Paired rounds]).
 * @category replay
 */
export const pairedRatio = (rounds: ReadonlyArray<ReadonlyArray<number>>, k: number, base: number): number =>
  median(rounds[k]!.map((ns, i) => ns / rounds[base]![i]!))

/**
 * Prints the replays of one trace (a table, or JSON lines) and fails with `AllocationsFailed`
 * when allocations failed and were not to be counted (Note [Failed runs]).
 * @category output
 */
export const printReports = (
  command: string,
  trace: Trace,
  reports: ReadonlyArray<ReplayReport>,
  json: boolean,
  countOoms: boolean
): Effect.Effect<void, AllocationsFailed> =>
  Effect.gen(function*() {
    if (json) {
      for (const r of reports) yield* Console.log(replayJson(r, countOoms))
    } else {
      yield* Console.log(traceHeading(trace, reports[0]?.peakRequested ?? 0, reports[0]?.liveAtEnd))
      yield* Console.log(replayTable(trace, reports))
      for (const r of reports) yield* Console.log(timelineLine(r))
      const failed = failureLines(reports)
      for (const line of failed) yield* Console.log(line)
      if (failed.length > 0) {
        yield* Console.log(
          countOoms
            ? "* not a result: allocations failed and were counted (--count-ooms); peak reserved and utilization are those of the requests that were served"
            : "* not a result: allocations failed"
        )
      }
      for (const r of reports) {
        if (r.leakedHandles > 0) yield* Console.log(`${r.policy}: ${r.leakedHandles} handle(s) leaked`)
      }
    }
    const first = reports.find((r) => !isComplete(r))
    if (first !== undefined && !countOoms) {
      return yield* new AllocationsFailed({
        detail: `${command}: ${trace.workload} under ${first.policy}: ${failureSummary(first)}; ` +
          "the figures are not a result (--count-ooms counts failures instead of failing)"
      })
    }
  })

/**
 * Prints what the byte check found (`--verify`, Note [Replay byte check]) and fails with
 * `CheckFailed` if any byte was wrong.
 * @category output
 */
export const checkBytes = (reports: ReadonlyArray<ReplayReport>, json: boolean): Effect.Effect<void, CheckFailed> =>
  Effect.gen(function*() {
    for (const r of reports) {
      const v = r.verified
      if (v === null) continue
      if (!json) {
        yield* Console.log(
          `${r.policy}: byte check ${v.mismatches === 0 ? "ok" : "FAILED"}: ${v.blocks} blocks, ${v.bytes} bytes compared, ` +
            `${v.mismatches} wrong${v.first === null ? "" : `; first: ${v.first}`}`
        )
      }
      if (v.mismatches > 0) return yield* new CheckFailed({ detail: `replay --verify: ${r.policy}: ${v.first}` })
    }
  })

/** `gmlake replay`. @category commands */
export const replay = Command.make(
  "replay",
  {
    trace: Argument.String("trace").pipe(
      Argument.withDescription("a gmlake-trace/1 file or a PyTorch memory snapshot (_dump_snapshot pickle), plain or gzip")
    ),
    deviceIndex: Options.deviceIndex,
    policies: Options.policies,
    device: Options.device,
    json: Options.json,
    capacity: Options.capacity,
    granularity: Options.granularity,
    config: Options.config,
    injectFaults: Options.injectFaults,
    seed: Options.seed,
    eventLatency: Options.eventLatency,
    crossStream: Options.crossStream,
    verify: Options.verify,
    repeat: Options.repeat(1, "replays per policy; ns/event is their median (default 1; on cuda every run is reported)"),
    countOoms: Options.countOoms,
    driverLevels: Options.driverLevels
  },
  (o) =>
    Effect.gen(function*() {
      const policy = yield* resolvePolicyOptions(o.config, o.crossStream, o.policies)
      const levels = yield* levelsOf(o.driverLevels)
      if (o.device === "cuda") {
        for (const [name, v] of [["capacity", o.capacity], ["granularity", o.granularity], ["inject-faults", o.injectFaults], ["seed", o.seed], ["event-latency", o.eventLatency]] as const) {
          if (Option.isSome(v)) return yield* new UsageError({ where: `replay: --${name}`, detail: "only for the simulated device (--device sim)" })
        }
        const trace = yield* loadTraceWithProgress(o.trace, Option.getOrUndefined(o.deviceIndex), o.json)
        // On the GPU every run is reported (each has its own device figures), round by round
        // (Note [Interleaved rounds]).
        const runs = Array.from({ length: o.repeat }, () => o.policies).flat()
        const reports = yield* replayCuda(trace, runs, { policy, verify: o.verify, ...(levels !== undefined ? { levels } : {}) })
        if (!o.json) {
          for (const r of reports) {
            yield* Console.log(
              `${r.policy}: device peak used ${formatSize(r.devicePeakUsed)} vs peak reserved ${formatSize(r.peakReserved)}; ` +
                `free ${formatSize(r.deviceFreeBefore)} before, ${formatSize(r.deviceFreeAfter)} after; wall ${r.wallMs.toFixed(0)} ms`
            )
          }
        }
        yield* printReports("replay", trace, reports, o.json, o.countOoms)
        return yield* checkBytes(reports, o.json)
      }
      if (Option.isSome(o.seed) && Option.isNone(o.injectFaults)) {
        return yield* new UsageError({ where: "replay: --seed", detail: "only meaningful with --inject-faults" })
      }
      const capacity = Option.getOrUndefined(o.capacity)
      const granularity = Option.getOrUndefined(o.granularity)
      const sim: SimDriverOptions = {
        ...(capacity !== undefined ? { capacity } : {}),
        ...(granularity !== undefined ? { granularity } : {}),
        ...(Option.isSome(o.injectFaults) ? { faultRate: o.injectFaults.value } : {}),
        ...(Option.isSome(o.seed) ? { seed: o.seed.value } : {}),
        ...(Option.isSome(o.eventLatency) ? { eventLatency: o.eventLatency.value } : {})
      }
      const trace = yield* loadTraceWithProgress(o.trace, Option.getOrUndefined(o.deviceIndex), o.json)
      const reports = yield* withReplayProgress(
        `replaying ${trace.workload}`,
        o.json,
        replayAll(trace, o.policies, { sim, policy, verify: o.verify, ...(levels !== undefined ? { levels } : {}) }, o.repeat, 0)
      )
      yield* printReports("replay", trace, reports, o.json, o.countOoms)
      yield* checkBytes(reports, o.json)
    })
).pipe(
  Command.withDescription(
    "Replay a trace under each policy and report peak reserved memory, utilization (peak requested / peak reserved), " +
      "driver calls and time per event. Sizes are in binary units (1 GiB = 2^30 bytes)."
  ),
  Command.withExamples([
    { command: "gmlake replay traces/gpt2_fixed.json.gz --policy gmlake", description: "the stitching allocator on one trace" },
    { command: "gmlake replay t.json.gz --capacity 16GiB --inject-faults 0.01 --seed 7 --count-ooms", description: "a small, faulty device" },
    { command: "gmlake replay t.json.gz --policy caching --config max_split_size_mb:128", description: "a tuned PyTorch" }
  ])
)
