/**
 * Summarizes `driver-bill.sh`'s replays on the GPU (JSON lines of `gmlake replay --device cuda
 * --json`): per trace and policy, wall time, measured and modelled driver time, and the
 * acceptance of issue "the driver bill": gmlake's wall time at most 1.5x expandable's, the model
 * within 25% of the measured driver time. Self-contained (node: modules only), so that the Node
 * runtime carried to the GPU machine runs it as TypeScript, as does `npx node` here:
 *
 *   node bench/gpu/bill-summary.ts <replay-cuda.jsonl> [levels.json]
 *
 * With the host's levels the replays were costed at (`gmlake calibrate`, Note [Host levels]), the
 * model at its own levels is shown beside them (each kind's time divided by its level).
 *
 * @since 0.2.0
 */
import { readFileSync } from "node:fs"

interface Line {
  readonly workload: string
  readonly policy: string
  readonly wallMs: number
  readonly replayMs: number
  readonly driverMicros: number
  readonly measuredDriverMicros: number
  readonly driverMicrosByKind: Record<string, number>
  readonly measuredByKind: Record<string, number>
  readonly driverCallsTotal: number
  readonly utilization: number
  readonly timeline: ReadonlyArray<{ readonly driverCalls: number }>
}

const file = process.argv[2]
if (file === undefined) {
  console.error("usage: node bench/gpu/bill-summary.ts <replay-cuda.jsonl> [levels.json]")
  process.exit(2)
}
const lines: Array<Line> = readFileSync(file, "utf8").split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l))
if (lines.length === 0) {
  // an empty file must not read as "all ok"
  console.log(`no replay in ${file}: nothing to check`)
  process.exit(1)
}
let levels: Record<string, number> = {}
try {
  if (process.argv[3] !== undefined) levels = JSON.parse(readFileSync(process.argv[3], "utf8")).levels ?? {}
} catch {
  console.log(`(no levels in ${process.argv[3]}: the model at its own levels)`)
}
/** The model's figure at its own levels, from one at the host's. */
const reference = (l: Line): number =>
  Object.entries(l.driverMicrosByKind ?? {}).reduce((s, [k, v]) => s + v / (levels[k] ?? 1), 0)
if (Object.keys(levels).length > 0) console.log(`host levels: ${JSON.stringify(levels)}\n`)

const secondHalf = (l: Line): number => l.timeline.slice(Math.floor(l.timeline.length / 2)).reduce((s, x) => s + x.driverCalls, 0)
const ms = (us: number): string => (us / 1000).toFixed(1)
const row = (cells: ReadonlyArray<string | number>): string => `| ${cells.join(" | ")} |`

console.log(row(["trace", "policy", "run", "wall ms", "replay ms", "driver ms measured", "driver ms model", "model/measured", "model at its own levels/measured", "calls", "second-half calls", "util"]))
console.log(row(Array.from({ length: 12 }, () => "---")))
const runs = new Map<string, number>()
for (const l of lines) {
  const key = `${l.workload}/${l.policy}`
  const run = (runs.get(key) ?? 0) + 1
  runs.set(key, run)
  console.log(row([
    l.workload,
    l.policy,
    run,
    l.wallMs.toFixed(0),
    l.replayMs.toFixed(0),
    ms(l.measuredDriverMicros),
    ms(l.driverMicros),
    (l.driverMicros / l.measuredDriverMicros).toFixed(2),
    (reference(l) / l.measuredDriverMicros).toFixed(2),
    l.driverCallsTotal,
    secondHalf(l),
    l.utilization.toFixed(4)
  ]))
}

// By kind, summed over every run: where the model is off.
const kinds = new Map<string, { measured: number; model: number }>()
for (const l of lines) {
  for (const [k, v] of Object.entries(l.measuredByKind ?? {})) {
    const e = kinds.get(k) ?? { measured: 0, model: 0 }
    e.measured += v
    e.model += l.driverMicrosByKind?.[k] ?? 0
    kinds.set(k, e)
  }
}
console.log("\n" + row(["call", "measured ms (all runs)", "model ms", "model/measured"]))
console.log(row(["---", "---", "---", "---"]))
for (const [k, e] of kinds) if (e.measured > 0 || e.model > 0) console.log(row([k, ms(e.measured), ms(e.model), (e.model / e.measured).toFixed(2)]))

// Acceptance, on the medians of each policy's warm runs (every run but its first; the only run
// when there is one): the wall times of single runs of ~100 ms moved by 20% between runs.
const median = (xs: ReadonlyArray<number>): number => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}
const warm = new Map<string, Array<Line>>()
for (const l of lines) {
  const key = `${l.workload}/${l.policy}`
  const all = warm.get(key) ?? []
  all.push(l)
  warm.set(key, all)
}
const warmRuns = (key: string): ReadonlyArray<Line> | undefined => {
  const all = warm.get(key)
  return all === undefined ? undefined : all.length > 1 ? all.slice(1) : all
}
// Host levels fitted on the *other* traces' warm runs (leave one out, Note [Host levels]): what a
// user who calibrated this machine on other workloads would be told for this one. Same fit as
// `fitLevels` in src/domain/Latency.ts (measured over modelled time per kind, where the model has
// at least a millisecond of it).
const heldOutLevels = (trace: string): Record<string, number> => {
  const measured: Record<string, number> = {}
  const model: Record<string, number> = {}
  for (const [key, ls] of warm) {
    if (key.startsWith(`${trace}/`)) continue
    for (const l of ls.length > 1 ? ls.slice(1) : ls) {
      for (const [k, v] of Object.entries(l.measuredByKind ?? {})) measured[k] = (measured[k] ?? 0) + v
      for (const [k, v] of Object.entries(l.driverMicrosByKind ?? {})) model[k] = (model[k] ?? 0) + v / (levels[k] ?? 1)
    }
  }
  const out: Record<string, number> = {}
  for (const [k, us] of Object.entries(model)) if (us >= 1000 && (measured[k] ?? 0) > 0) out[k] = measured[k]! / us
  return out
}
const atLevels = (l: Line, lv: Record<string, number>): number =>
  Object.entries(l.driverMicrosByKind ?? {}).reduce((s, [k, v]) => s + v / (levels[k] ?? 1) * (lv[k] ?? 1), 0)

console.log("\nacceptance (medians of the warm runs: every run of a policy but its first):")
let ok = true
for (const w of [...new Set(lines.map((l) => l.workload))]) {
  const g = warmRuns(`${w}/gmlake`)
  const x = warmRuns(`${w}/expandable`)
  if (g === undefined || x === undefined) continue
  const wall = median(g.map((l) => l.wallMs)) / median(x.map((l) => l.wallMs))
  const replay = median(g.map((l) => l.replayMs)) / median(x.map((l) => l.replayMs))
  const worstModel = Math.max(...[g, x].map((ls) => Math.abs(median(ls.map((l) => l.driverMicros / l.measuredDriverMicros)) - 1)))
  const worstReference = Math.max(...[g, x].map((ls) => Math.abs(median(ls.map((l) => reference(l) / l.measuredDriverMicros)) - 1)))
  const lv = heldOutLevels(w)
  const worstHeldOut = Math.max(...[g, x].map((ls) => Math.abs(median(ls.map((l) => atLevels(l, lv) / l.measuredDriverMicros)) - 1)))
  const pass = wall <= 1.5 && worstHeldOut <= 0.25
  ok &&= pass
  console.log(
    `${w}: gmlake wall ${wall.toFixed(2)}x expandable's (<= 1.5; replay loop ${replay.toFixed(2)}x); ` +
      `model off by at most ${(worstModel * 100).toFixed(1)}% as run, ${(worstReference * 100).toFixed(1)}% at its own levels, ` +
      `${(worstHeldOut * 100).toFixed(1)}% at this machine's levels from the other traces (<= 25%) ` +
      (pass ? "ok" : "FAILED")
  )
}
console.log(ok ? "all ok" : "some FAILED")
