/**
 * Summarizes `driver-bill.sh`'s replays on the GPU (JSON lines of `gmlake replay --device cuda
 * --json`): per trace and policy, wall time, measured and modelled driver time, and the
 * acceptance of issue "the driver bill": gmlake's wall time at most 1.5x expandable's, the model
 * within 25% of the measured driver time. Self-contained (node: modules only), so that the Node
 * runtime carried to the GPU machine runs it as TypeScript, as does `npx node` here:
 *
 *   node bench/gpu/bill-summary.ts <replay-cuda.jsonl>
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
  console.error("usage: node bench/gpu/bill-summary.ts <replay-cuda.jsonl>")
  process.exit(2)
}
const lines: Array<Line> = readFileSync(file, "utf8").split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l))

const secondHalf = (l: Line): number => l.timeline.slice(Math.floor(l.timeline.length / 2)).reduce((s, x) => s + x.driverCalls, 0)
const ms = (us: number): string => (us / 1000).toFixed(1)
const row = (cells: ReadonlyArray<string | number>): string => `| ${cells.join(" | ")} |`

console.log(row(["trace", "policy", "run", "wall ms", "replay ms", "driver ms measured", "driver ms model", "model/measured", "calls", "second-half calls", "util"]))
console.log(row(Array.from({ length: 11 }, () => "---")))
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

// Acceptance, on each policy's last run of each trace (the warm one).
const last = new Map<string, Line>()
for (const l of lines) last.set(`${l.workload}/${l.policy}`, l)
console.log("\nacceptance (last run of each):")
let ok = true
for (const w of [...new Set(lines.map((l) => l.workload))]) {
  const g = last.get(`${w}/gmlake`)
  const x = last.get(`${w}/expandable`)
  if (g === undefined || x === undefined) continue
  const wall = g.wallMs / x.wallMs
  const worstModel = Math.max(...[g, x].map((l) => Math.abs(l.driverMicros / l.measuredDriverMicros - 1)))
  const pass = wall <= 1.5 && worstModel <= 0.25
  ok &&= pass
  console.log(`${w}: gmlake wall ${wall.toFixed(2)}x expandable's (<= 1.5); model off by at most ${(worstModel * 100).toFixed(0)}% (<= 25%) ${pass ? "ok" : "FAILED"}`)
}
console.log(ok ? "all ok" : "some FAILED")
