/**
 * Cross-stream adoption (Note [Cross-stream adoption]) against per-stream pools, at several
 * modelled event latencies, on the bundled multi-stream trace and on synthetic ones: utilization
 * and peak reserved per cell, and the shared-pool adaptor (Note [Cross-stream reuse]) beside them.
 *
 * The latency is in simulator ticks: the replay advances the simulated clock by one tick per
 * trace event, and an event recorded on a stream completes that many ticks later (Note
 * [Simulated streams]). 0: the device keeps up with the allocator; 4096: it runs thousands of
 * events behind, so that nearly no event has completed when memory is wanted.
 *
 *   npx node bench/cross-stream-latency.ts [trace.json.gz ...] [--seeds 1,2,3] [--latencies 0,1,4,16,64,256,4096]
 *
 * Exits 1 if adoption is worse than per-stream pools in any cell (the acceptance of the feature).
 */
import { Effect, Result } from "effect"
import type { PolicyOptions } from "../src/domain/policies/Policies.ts"
import { decodeStitchingConfig } from "../src/domain/policies/gmlake/StitchingConfig.ts"
import { replaySim, type ReplayReport } from "../src/replay/ReplayRunner.ts"
import { loadTrace } from "../src/trace/File.ts"
import { multiStreamTrace } from "../src/trace/Synthetic.ts"
import { decodeTrace, type Trace } from "../src/trace/Trace.ts"

const args = process.argv.slice(2)
const option = (name: string, fallback: string): string => {
  const i = args.indexOf(`--${name}`)
  if (i < 0) return fallback
  const v = args[i + 1]!
  args.splice(i, 2)
  return v
}
const seeds = option("seeds", "1,2,3").split(",").filter((s) => s !== "").map(Number)
const latencies = option("latencies", "0,1,4,16,64,256,4096").split(",").map(Number)
const files = args.length > 0 ? args : ["traces/gpt2_streams.json.gz"]

const perStream = Result.getOrThrow(decodeStitchingConfig({ crossStream: false }))

const traces: Array<{ readonly name: string; readonly trace: Trace }> = []
for (const file of files) {
  const trace = await Effect.runPromise(loadTrace(file))
  traces.push({ name: trace.workload, trace })
}
for (const seed of seeds) {
  // exactly what `gmlake generate --seed N` writes (its default steps and layers)
  const doc = multiStreamTrace({ seed })
  traces.push({ name: `generate --seed ${seed}`, trace: Result.getOrThrow(decodeTrace(doc.workload, doc)) })
}

const gb = (b: number) => (b / 2 ** 30).toFixed(3)
const pad = (s: string, n: number) => s.padStart(n)
console.log(
  `${"trace".padEnd(20)}${pad("latency", 8)}  ${pad("per-stream GiB", 14)} ${pad("util", 6)}  ${pad("adoption GiB", 12)} ${
    pad("util", 6)
  }  ${pad("gain", 7)}  ${pad("shared pool GiB", 15)} ${pad("util", 6)}`
)
let worse = 0
for (const { name, trace } of traces) {
  for (const latency of latencies) {
    const run = (policy: PolicyOptions | undefined): Promise<ReplayReport> =>
      Effect.runPromise(replaySim(trace, "gmlake", { sim: { eventLatency: latency }, ...(policy ? { policy } : {}) }))
    const off = await run({ gmlake: perStream })
    const on = await run(undefined)
    const shared = await run({ gmlake: perStream, crossStream: true })
    for (const r of [off, on, shared]) {
      if (r.failedAllocs > 0 || r.leakedHandles > 0) throw new Error(`${name} at ${latency}: ${r.failedAllocs} failed, ${r.leakedHandles} leaked`)
    }
    if (on.peakReserved > off.peakReserved) worse++
    console.log(
      `${name.padEnd(20)}${pad(String(latency), 8)}  ${pad(gb(off.peakReserved), 14)} ${off.utilization.toFixed(4)}  ${
        pad(gb(on.peakReserved), 12)
      } ${on.utilization.toFixed(4)}  ${pad(((off.peakReserved / on.peakReserved - 1) * 100).toFixed(2) + "%", 7)}  ${
        pad(gb(shared.peakReserved), 15)
      } ${shared.utilization.toFixed(4)}`
    )
  }
}
console.log(worse === 0 ? "adoption is never worse than per-stream pools" : `adoption is worse in ${worse} cell(s)`)
if (worse > 0) process.exitCode = 1
