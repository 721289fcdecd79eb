/**
 * The `gmlake` command line: replay traces, compare policies, benchmark, self-test a device.
 *
 * Every failure the user can cause (bad arguments, a bad trace, a device that is not there) ends
 * as one line on stderr and a non-zero exit: 2 for usage, 1 for anything else. Only a bug in the
 * allocator itself prints a stack trace.
 *
 * @since 0.1.0
 */
import { Console, Effect, Layer } from "effect"
import { readdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { gzipSync } from "node:zlib"
import { type PolicyName, policyNames } from "../domain/Allocator.ts"
import type { DriverError, InvalidBlockError, InvalidRequestError, OutOfMemoryError } from "../domain/Errors.ts"
import { makeAllocator, policyFromString, type PolicyOptions } from "../domain/policies/Policies.ts"
import { decodeStitchingConfig } from "../domain/policies/gmlake/StitchingConfig.ts"
import { multiStreamTrace } from "../trace/Synthetic.ts"
import type { Trace, TraceError } from "../trace/Trace.ts"
import { formatBytes, formatGB } from "../domain/Units.ts"
import { layerCuda } from "../layers/cuda/CudaDriverLayer.ts"
import { layerSim } from "../layers/sim/SimDriverLayer.ts"
import { loadTrace } from "../trace/File.ts"
import * as GpuAllocatorService from "../services/Allocator.ts"
import * as StreamsService from "../services/Streams.ts"
import * as Vmm from "../services/Vmm.ts"
import { flag, parseArgs, parseBytes, parseFraction, parseInteger, type Parsed, UsageError } from "./Args.ts"
import { multiDeviceChecks } from "./MultiDevice.ts"
import { replayCuda, replaySim, type ReplayReport } from "../replay/ReplayRunner.ts"
import { selftest } from "./Selftest.ts"
import { streamsDemo } from "./StreamsDemo.ts"
import { renderTable } from "./Table.ts"

export const VERSION = "0.1.0"

const HELP = `gmlake ${VERSION}: a virtual-memory-stitching GPU allocator (GMLake, reimplemented and improved)

usage:
  gmlake replay <trace> [--policy caching,expandable,gmlake] [--device sim|cuda] [--json]
                        [--capacity 80GiB] [--granularity 2MiB] [--config <json>]
                        [--inject-faults RATE --seed N] [--cross-stream on|off] [--repeat N]
  gmlake generate [--seed 1] [--steps 6] [--layers 12] [--out file.json.gz]
                                                         a synthetic multi-stream training trace
  gmlake compare [<trace>...] [--policy ...] [--json]     replay bundled (or given) traces, every policy,
                                                         side by side with PyTorch's recorded figures
  gmlake bench [<trace>...] [--repeat 5] [--warmup 5] [--json]
                                                         compare, with the median ns/event of N replays
                                                         after untimed warm-up replays
  gmlake selftest --device cuda|sim [--json]             check the allocator works on this machine
  gmlake streams --device cuda|sim [--rounds 32] [--json] two streams' work through memory reused
                                                         across them, verified byte for byte
  gmlake help | --help | --version

Traces are gmlake-trace/1 files (gzip or plain JSON); see traces/README.md.`

/** The traces bundled with the project. */
export const bundledTraces = (dir = "traces"): Array<string> => {
  try {
    return readdirSync(dir).filter((f) => f.endsWith(".json.gz") || (f.endsWith(".json") && f !== "anchors.json"))
      .sort().map((f) => join(dir, f))
  } catch {
    return []
  }
}

const parsePolicies = (p: Parsed): Array<PolicyName> => {
  const text = flag(p, "policy")
  if (text === undefined) return [...policyNames]
  const out: Array<PolicyName> = []
  for (const part of text.split(",")) {
    const name = policyFromString(part.trim())
    if (name === undefined) {
      throw new UsageError({ detail: `--policy: unknown policy "${part}" (known: ${policyNames.join(", ")})` })
    }
    if (!out.includes(name)) out.push(name)
  }
  return out
}

const parsePolicyOptions = (p: Parsed): PolicyOptions => {
  const cross = flag(p, "cross-stream")
  if (cross !== undefined && cross !== "on" && cross !== "off") {
    throw new UsageError({ detail: `--cross-stream: expected on or off, got "${cross}"` })
  }
  const crossStream = cross === undefined ? {} : { crossStream: cross === "on" }
  const text = flag(p, "config")
  if (text === undefined) return crossStream
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (e) {
    throw new UsageError({ detail: `--config: not valid JSON (${(e as Error).message})` })
  }
  const r = decodeStitchingConfig(json)
  if (r._tag === "Failure") throw new UsageError({ detail: `--config: ${r.failure.message}` })
  return { ...crossStream, gmlake: r.success }
}

const pct = (x: number) => `${(x * 100).toFixed(1)}%`

const reportRows = (reports: ReadonlyArray<ReplayReport>): Array<Array<string>> =>
  reports.map((r) => [
    r.policy,
    formatGB(r.peakReserved),
    r.utilization.toFixed(4),
    r.pytorchPeakReserved === null ? "-" : pct(r.peakReserved / r.pytorchPeakReserved - 1),
    r.nsPerOp.toFixed(0),
    String(r.driverCallsTotal),
    (r.driverMicros / 1000).toFixed(1),
    String(r.stitches),
    String(r.cachedStitchHits),
    String(r.ooms)
  ])

const REPORT_HEADER = [
  "policy",
  "peak reserved",
  "util",
  "vs PyTorch",
  "ns/event",
  "driver calls",
  "driver ms",
  "stitches",
  "hits",
  "ooms"
]

/** Driver calls made in the second half of the trace's events, by the timeline. */
export const secondHalfCalls = (r: ReplayReport): number => {
  const n = r.timeline.length
  let calls = 0
  for (let k = Math.floor(n / 2); k < n; k++) calls += r.timeline[k]!.driverCalls
  return n === 1 ? 0 : calls
}

/** The timeline in one line: driver calls per slice, and the second half's total. */
const timelineLine = (r: ReplayReport): string =>
  `${r.policy}: driver calls per ${Math.round(100 / Math.max(1, r.timeline.length))}% of events: ` +
  r.timeline.map((s) => s.driverCalls).join(" ") + `; second half ${secondHalfCalls(r)}`

const traceHeading = (t: Trace, peakRequested: number): string => {
  const n = t.native
  const x = t.expandable
  const anchors = [
    n ? `PyTorch native ${formatGB(n.peakReserved)} (util ${(n.peakRequested / n.peakReserved).toFixed(4)})` : undefined,
    x ? `expandable_segments ${formatGB(x.peakReserved)} (util ${(x.peakRequested / x.peakReserved).toFixed(4)})` : undefined
  ].filter((s) => s !== undefined)
  return `${t.workload}: ${t.length} events, peak requested ${formatGB(peakRequested)}` +
    (anchors.length > 0 ? `\n  recorded: ${anchors.join(", ")}` : "")
}

const median = (xs: ReadonlyArray<number>) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]!
}

/**
 * Replays one trace under several policies, `repeat` times each (median ns/event), after
 * `warmup` untimed replays (the JIT compiles a policy's code over its first replays; PyTorch's
 * anchors likewise give a warm figure).
 */
const replayAll = (
  trace: Trace,
  policies: ReadonlyArray<PolicyName>,
  sim: Parameters<typeof replaySim>[2],
  repeat: number,
  warmup = 0
) =>
  Effect.forEach(policies, (policy) =>
    Effect.gen(function*() {
      for (let i = 0; i < warmup; i++) yield* replaySim(trace, policy, sim)
      const runs: Array<ReplayReport> = []
      for (let i = 0; i < repeat; i++) runs.push(yield* replaySim(trace, policy, sim))
      const ns = median(runs.map((r) => r.nsPerOp))
      return { ...runs[0]!, nsPerOp: ns }
    }))

const replayCommand = (argv: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const p = parseArgs("replay", argv, ["policy", "device", "capacity", "granularity", "config", "inject-faults", "seed", "cross-stream", "repeat"], [
      "json"
    ])
    if (p.positionals.length !== 1) {
      throw new UsageError({ detail: `replay: expected one trace file, got ${p.positionals.length}` })
    }
    const policies = parsePolicies(p)
    const device = flag(p, "device") ?? "sim"
    if (device !== "sim" && device !== "cuda") {
      throw new UsageError({ detail: `--device: unknown device "${device}" (known: sim, cuda)` })
    }
    const capacity = flag(p, "capacity")
    const granularity = flag(p, "granularity")
    const repeatText = flag(p, "repeat")
    const repeat = repeatText === undefined ? 1 : parseInteger("--repeat", repeatText)
    if (repeat < 1) throw new UsageError({ detail: "--repeat: must be at least 1" })
    if (device === "cuda") {
      for (const f of ["capacity", "granularity", "inject-faults", "seed"]) {
        if (p.flags.has(f)) throw new UsageError({ detail: `--${f}: only for the simulated device (--device sim)` })
      }
      const trace = yield* loadTrace(p.positionals[0]!)
      // On the GPU every run is reported (each has its own device figures).
      const runs = policies.flatMap((policy) => Array.from({ length: repeat }, () => policy))
      const reports = yield* replayCuda(trace, runs, { policy: parsePolicyOptions(p) })
      yield* printReports(trace, reports, p.flags.has("json"))
      for (const r of reports) {
        if (!p.flags.has("json")) {
          yield* Console.log(`${r.policy}: device peak used ${formatGB(r.devicePeakUsed)} vs peak reserved ${formatGB(r.peakReserved)}; ` +
            `free ${formatBytes(r.deviceFreeBefore)} before, ${formatBytes(r.deviceFreeAfter)} after; wall ${r.wallMs.toFixed(0)} ms`)
        }
      }
      return
    }
    const faults = flag(p, "inject-faults")
    const seed = flag(p, "seed")
    if (seed !== undefined && faults === undefined) throw new UsageError({ detail: "--seed: only meaningful with --inject-faults" })
    const options = {
      sim: {
        ...(capacity !== undefined ? { capacity: parseBytes("--capacity", capacity) } : {}),
        ...(granularity !== undefined ? { granularity: parseBytes("--granularity", granularity) } : {}),
        ...(faults !== undefined ? { faultRate: parseFraction("--inject-faults", faults) } : {}),
        ...(seed !== undefined ? { seed: parseInteger("--seed", seed) } : {})
      },
      policy: parsePolicyOptions(p)
    }
    const trace = yield* loadTrace(p.positionals[0]!)
    const reports = yield* replayAll(trace, policies, options, repeat)
    yield* printReports(trace, reports, p.flags.has("json"))
  })

const printReports = (trace: Trace, reports: ReadonlyArray<ReplayReport>, json: boolean) =>
  Effect.gen(function*() {
    if (json) {
      for (const r of reports) yield* Console.log(JSON.stringify(r))
    } else {
      yield* Console.log(traceHeading(trace, reports[0]?.peakRequested ?? 0))
      yield* Console.log(renderTable(REPORT_HEADER, reportRows(reports)))
      for (const r of reports) yield* Console.log(timelineLine(r))
      for (const r of reports) {
        if (r.firstOom !== null) yield* Console.log(`${r.policy}: ${r.ooms} out-of-memory failure(s); first: ${r.firstOom}`)
        if (r.failedAllocs > r.ooms || r.driverFaults > 0) {
          yield* Console.log(`${r.policy}: ${r.driverFaults} injected driver fault(s), ${r.failedAllocs} failed allocation(s)`)
        }
        if (r.leakedHandles > 0) yield* Console.log(`${r.policy}: ${r.leakedHandles} handle(s) leaked`)
      }
    }
  })

const compareCommand = (argv: ReadonlyArray<string>, bench: boolean) =>
  Effect.gen(function*() {
    const p = parseArgs(bench ? "bench" : "compare", argv, bench ? ["policy", "repeat", "warmup"] : ["policy"], ["json"])
    const files = p.positionals.length > 0 ? p.positionals : bundledTraces()
    if (files.length === 0) throw new UsageError({ detail: "no traces given and none found in ./traces" })
    const policies = parsePolicies(p)
    const repeatText = flag(p, "repeat")
    const repeat = repeatText === undefined ? (bench ? 5 : 1) : parseInteger("--repeat", repeatText)
    if (repeat < 1) throw new UsageError({ detail: "--repeat: must be at least 1" })
    const warmupText = flag(p, "warmup")
    const warmup = warmupText === undefined ? (bench ? 5 : 0) : parseInteger("--warmup", warmupText)
    const json = p.flags.has("json")
    const all: Array<ReplayReport> = []
    for (const file of files) {
      const trace = yield* loadTrace(file)
      const reports = yield* replayAll(trace, policies, {}, repeat, warmup)
      all.push(...reports)
      if (json) {
        for (const r of reports) yield* Console.log(JSON.stringify(r))
      } else {
        yield* Console.log(traceHeading(trace, reports[0]?.peakRequested ?? 0))
        yield* Console.log(renderTable(REPORT_HEADER, reportRows(reports)))
        for (const r of reports) yield* Console.log(timelineLine(r))
        yield* Console.log("")
      }
    }
    if (!json && files.length > 1) {
      const rows = policies.map((policy) => {
        const rs = all.filter((r) => r.policy === policy)
        const mean = rs.reduce((s, r) => s + r.utilization, 0) / rs.length
        const worst = Math.min(...rs.map((r) => r.utilization))
        const ns = rs.reduce((s, r) => s + r.nsPerOp * r.events, 0) / rs.reduce((s, r) => s + r.events, 0)
        return [policy, mean.toFixed(4), worst.toFixed(4), ns.toFixed(0), formatBytes(rs.reduce((s, r) => s + r.peakReserved, 0))]
      })
      yield* Console.log(
        `summary over ${files.length} traces${bench ? ` (ns/event: median of ${repeat} replays after ${warmup} untimed)` : ""}`
      )
      yield* Console.log(renderTable(["policy", "mean util", "worst util", "ns/event", "sum of peaks"], rows))
    }
  })

/** What the command line can fail with (each printed as one line). @category errors */
export type MainError = UsageError | TraceError | DriverError | SelftestFailed | OutOfMemoryError | InvalidRequestError | InvalidBlockError

/** Thrown (as a failure) when a check of the selftest failed: the report was printed already. */
export class SelftestFailed extends Error {
  readonly _tag = "SelftestFailed"
}

const selftestCommand = (argv: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const p = parseArgs("selftest", argv, ["device", "capacity"], ["json"])
    if (p.positionals.length > 0) throw new UsageError({ detail: `selftest: unexpected argument "${p.positionals[0]}"` })
    const device = flag(p, "device") ?? "sim"
    if (device !== "sim" && device !== "cuda") {
      throw new UsageError({ detail: `--device: unknown device "${device}" (known: sim, cuda)` })
    }
    const capacity = flag(p, "capacity")
    if (device === "cuda" && capacity !== undefined) {
      throw new UsageError({ detail: "--capacity: only for the simulated device (--device sim)" })
    }
    const session = device === "cuda"
      ? layerCuda()
      : layerSim(capacity === undefined ? {} : { capacity: parseBytes("--capacity", capacity) })
    const single = yield* selftest().pipe(Effect.provide(Layer.provideMerge(Vmm.layer, session)))
    // Every visible device and peer access between them, once the single-device session has
    // closed (Note [Multi-device selftest]).
    const multi = device === "cuda" ? yield* multiDeviceChecks() : []
    const report = { ...single, checks: [...single.checks, ...multi], ok: single.ok && multi.every((c) => c.ok) }
    if (p.flags.has("json")) yield* Console.log(JSON.stringify(report))
    else {
      yield* Console.log(renderTable(["check", "result", "detail"], report.checks.map((c) => [c.name, c.ok ? "ok" : "FAILED", c.detail])))
      yield* Console.log("")
      yield* Console.log(renderTable(["VMM call", "median us"], Object.entries(report.latencyMicros).map(([k, v]) => [k, v.toFixed(2)])))
    }
    if (!report.ok) return yield* Effect.fail(new SelftestFailed(`selftest failed: ${report.checks.filter((c) => !c.ok).map((c) => c.name).join(", ")}`))
  })

const generateCommand = (argv: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const p = parseArgs("generate", argv, ["seed", "steps", "layers", "out"], [])
    if (p.positionals.length > 0) throw new UsageError({ detail: `generate: unexpected argument "${p.positionals[0]}"` })
    const int = (name: string, fallback: number, min: number) => {
      const t = flag(p, name)
      const n = t === undefined ? fallback : parseInteger(`--${name}`, t)
      if (n < min) throw new UsageError({ detail: `--${name}: must be at least ${min}` })
      return n
    }
    const doc = multiStreamTrace({ seed: int("seed", 1, 0), steps: int("steps", 6, 1), layers: int("layers", 12, 1) })
    const out = flag(p, "out")
    const text = JSON.stringify(doc)
    if (out === undefined) return yield* Console.log(text)
    yield* Effect.try({
      try: () => writeFileSync(out, out.endsWith(".gz") ? gzipSync(text) : text),
      catch: (e) => new UsageError({ detail: `--out: cannot write ${out} (${(e as NodeJS.ErrnoException).code ?? String(e)})` })
    })
  })

const streamsCommand = (argv: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const p = parseArgs("streams", argv, ["device", "rounds"], ["json"])
    if (p.positionals.length > 0) throw new UsageError({ detail: `streams: unexpected argument "${p.positionals[0]}"` })
    const device = flag(p, "device") ?? "sim"
    if (device !== "sim" && device !== "cuda") {
      throw new UsageError({ detail: `--device: unknown device "${device}" (known: sim, cuda)` })
    }
    const roundsText = flag(p, "rounds")
    const rounds = roundsText === undefined ? 32 : parseInteger("--rounds", roundsText)
    if (rounds < 1) throw new UsageError({ detail: "--rounds: must be at least 1" })
    const session = Layer.mergeAll(
      GpuAllocatorService.layer((port) => makeAllocator("gmlake", port, { crossStream: true }, port)),
      StreamsService.layer
    ).pipe(Layer.provideMerge(device === "cuda" ? layerCuda() : layerSim()))
    const report = yield* streamsDemo(rounds).pipe(Effect.provide(session))
    if (p.flags.has("json")) yield* Console.log(JSON.stringify(report))
    else {
      yield* Console.log(renderTable(["figure", "value"], Object.entries(report).map(([k, v]) => [k, String(v)])))
    }
    if (!report.ok) {
      return yield* Effect.fail(new SelftestFailed(
        `streams: ${report.mismatches} byte(s) differ; free memory ${report.freeBefore} B before, ${report.freeAfter} B after`
      ))
    }
  })

/**
 * Runs the command line. Fails with `UsageError`, `TraceError` or a device error; the entry point
 * turns those into one line and an exit code.
 * @category cli
 */
export const main = (argv: ReadonlyArray<string>): Effect.Effect<void, MainError> =>
  Effect.suspend((): Effect.Effect<void, MainError> => {
    const [command, ...rest] = argv
    switch (command) {
      case undefined:
      case "help":
      case "--help":
      case "-h":
        return Console.log(HELP)
      case "--version":
        return Console.log(VERSION)
      case "replay":
        return replayCommand(rest)
      case "compare":
        return compareCommand(rest, false)
      case "bench":
        return compareCommand(rest, true)
      case "selftest":
        return selftestCommand(rest)
      case "streams":
        return streamsCommand(rest)
      case "generate":
        return generateCommand(rest)
      default:
        return Effect.fail(new UsageError({ detail: `unknown command "${command}" (try: gmlake help)` }))
    }
  })
