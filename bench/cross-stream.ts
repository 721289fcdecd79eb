/**
 * What safe cross-stream reuse (Note [Cross-stream reuse]) saves or costs on synthetic
 * multi-stream training traces, against per-stream pools (GMLake's and PyTorch's behaviour),
 * for several simulated event latencies (ticks: replayed events between a free and the
 * completion of the event recorded at it).
 *
 *   npx node bench/cross-stream.ts
 */
import { Effect, Result } from "effect"
import { replaySim } from "../src/replay/ReplayRunner.ts"
import { policyNames } from "../src/domain/Allocator.ts"
import { multiStreamTrace } from "../src/trace/Synthetic.ts"
import { decodeTrace } from "../src/trace/Trace.ts"

console.log("seed  latency  policy      per-stream GB  util    cross-stream GB  util    saved")
for (const seed of [1, 2, 3]) {
  const trace = Result.getOrThrow(decodeTrace(`synthetic s${seed}`, multiStreamTrace({ seed, steps: 10, layers: 16 })))
  for (const latency of [1, 4, 16, 64]) {
    for (const policy of policyNames) {
      const run = (crossStream: boolean) =>
        Effect.runSync(replaySim(trace, policy, { sim: { eventLatency: latency }, policy: { crossStream } }))
      const off = run(false)
      const on = run(true)
      console.log(
        `${String(seed).padEnd(6)}${String(latency).padEnd(9)}${policy.padEnd(12)}` +
          `${(off.peakReserved / 1e9).toFixed(3).padStart(13)}  ${off.utilization.toFixed(4)}  ` +
          `${(on.peakReserved / 1e9).toFixed(3).padStart(15)}  ${on.utilization.toFixed(4)}  ` +
          `${(((off.peakReserved - on.peakReserved) / off.peakReserved) * 100).toFixed(1).padStart(5)}%`
      )
    }
  }
}
