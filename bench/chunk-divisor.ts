/**
 * The chunk divisor against the driver bill (bench/results/2026-12-02-chunk-divisor.md): each
 * bundled trace replayed with gmlake at divisors 4, 2 and 1 (or the settings in $CFGS, JSON,
 * separated by ";") and with expandable segments; utilization, driver calls, calls in the second
 * half (the timeline), modelled driver time. Run: `npx node bench/chunk-divisor.ts`.
 */
import { Effect, Result } from "effect"
import { loadTrace } from "../src/trace/File.ts"
import { replaySim } from "../src/replay/ReplayRunner.ts"
import { secondHalfCalls } from "../src/cli/Render.ts"
import { decodeStitchingConfig } from "../src/domain/policies/gmlake/StitchingConfig.ts"
const half = secondHalfCalls
const configs = (process.env.CFGS ?? '{"chunkDivisor":4};{"chunkDivisor":2};{"chunkDivisor":1}').split(";")
console.log("| trace | setting | util | driver calls | second-half calls | driver ms (model) | expandable: util, calls, second half, ms |")
console.log("| --- | --- | --- | --- | --- | --- | --- |")
for (const t of ["gpt2_fixed", "gpt2_streams", "gpt2_varlen", "llama1b_ckpt_varlen", "llama1b_lora_varlen"]) {
  const trace = await Effect.runPromise(loadTrace(`traces/${t}.json.gz`))
  const x: any = await Effect.runPromise(replaySim(trace, "expandable"))
  for (const c of configs) {
    const cfg = Result.getOrThrow(decodeStitchingConfig(JSON.parse(c)))
    const r: any = await Effect.runPromise(replaySim(trace, "gmlake", { policy: { gmlake: cfg } }))
    console.log(`| ${t} | \`${c}\` | ${r.utilization.toFixed(4)} | ${r.driverCallsTotal} (${(r.driverCallsTotal / x.driverCallsTotal).toFixed(2)}x) | ${half(r)} | ${(r.driverMicros / 1000).toFixed(1)} | ${x.utilization.toFixed(4)}, ${x.driverCallsTotal}, ${half(x)}, ${(x.driverMicros / 1000).toFixed(1)} |`)
  }
}
