/**
 * The driver bill's trade-off over the gmlake settings (bench/results/2026-12-03-settings-frontier.md):
 * every bundled trace replayed on the simulated device with expandable segments and with gmlake
 * at each setting of a grid (the product of the values below, or the settings given as arguments,
 * each in GMLAKE_ALLOC_CONF form); for each setting, the per-trace utilization, driver calls and
 * second-half calls (the timeline), and which of issue "the driver bill"'s simulated lines it
 * meets: utilization >= 0.98 on every trace, total calls <= 2x expandable's, second-half calls <=
 * expandable's. Deterministic (counts only). Run: `npx node bench/settings-frontier.ts [setting ...]`.
 */
import { Effect, Result } from "effect"
import { loadTrace } from "../src/trace/File.ts"
import { type ReplayReport, replaySim } from "../src/replay/ReplayRunner.ts"
import { secondHalfCalls } from "../src/cli/Render.ts"
import { parseSettings } from "../src/domain/Settings.ts"

const grid: ReadonlyArray<ReadonlyArray<string>> = [
  ["min_stitch_saving_bytes:0", "min_stitch_saving_bytes:4MiB", "min_stitch_saving_bytes:8MiB", "min_stitch_saving_bytes:16MiB", "min_stitch_saving_bytes:32MiB"],
  ["tail_chunk:True", "tail_chunk:False"],
  ["max_chunk_bytes:64MiB", "max_chunk_bytes:256MiB", "max_chunk_bytes:1GiB"],
  ["chunk_divisor:1", "chunk_divisor:2"]
]
const product = (axes: ReadonlyArray<ReadonlyArray<string>>): Array<string> =>
  axes.reduce<Array<string>>((acc, axis) => acc.flatMap((a) => axis.map((v) => (a === "" ? v : `${a},${v}`))), [""])
const settings = process.argv.length > 2 ? process.argv.slice(2) : product(grid)
const traces = ["gpt2_fixed", "gpt2_streams", "gpt2_varlen", "llama1b_ckpt_varlen", "llama1b_lora_varlen"]

interface Row { readonly util: number; readonly calls: number; readonly half: number }
const rowOf = (r: ReplayReport): Row => ({ util: r.utilization, calls: r.driverCallsTotal, half: secondHalfCalls(r) })

const loaded = await Promise.all(traces.map((t) => Effect.runPromise(loadTrace(`traces/${t}.json.gz`))))
const expandable: Array<Row> = []
for (const trace of loaded) expandable.push(rowOf(await Effect.runPromise(replaySim(trace, "expandable"))))

const cell = (r: Row, x: Row) => `${r.util.toFixed(4)}, ${r.calls} (${(r.calls / x.calls).toFixed(2)}x), ${r.half}`
console.log(`| setting | ${traces.join(" | ")} | util >= 0.98 | calls <= 2x | second half <= expandable's |`)
console.log(`| --- | ${traces.map(() => "---").join(" | ")} | --- | --- | --- |`)
console.log(`| expandable | ${expandable.map((x) => `${x.util.toFixed(4)}, ${x.calls}, ${x.half}`).join(" | ")} | | | |`)
for (const s of settings) {
  const parsed = parseSettings(s, "setting")
  if (Result.isFailure(parsed)) throw new Error(parsed.failure.message)
  const gmlake = parsed.success.gmlake
  const rows: Array<Row> = []
  for (const trace of loaded) {
    rows.push(rowOf(await Effect.runPromise(replaySim(trace, "gmlake", { policy: gmlake === undefined ? {} : { gmlake } }))))
  }
  const ok = (f: (r: Row, x: Row) => boolean) => (rows.every((r, i) => f(r, expandable[i]!)) ? "yes" : "no")
  console.log(`| \`${s}\` | ${rows.map((r, i) => cell(r, expandable[i]!)).join(" | ")} | ${ok((r) => r.util >= 0.98)} | ${ok((r, x) => r.calls <= 2 * x.calls)} | ${ok((r, x) => r.half <= x.half)} |`)
}
