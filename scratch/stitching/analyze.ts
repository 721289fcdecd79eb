import { readFileSync } from "node:fs"
import { Result } from "effect"
import { parseTraceBytes } from "../../src/layers/TraceFile.ts"
const names = ["gpt2_fixed", "gpt2_varlen", "llama1b_ckpt_varlen", "llama1b_lora_varlen"]
for (const n of names) {
  const r = parseTraceBytes(n, readFileSync(`traces/${n}.json.gz`))
  if (Result.isFailure(r)) throw r.failure
  const t = r.success
  let allocs = 0, small = 0, mid = 0, large = 0, huge = 0, live = 0, peak = 0, peakAt = 0
  const sizes = new Map<number, number>()
  const bucket = new Map<number, number>()
  for (let i = 0; i < t.length; i++) {
    if (t.op[i] === 0) {
      const s = t.size[i]!; allocs++
      live += s; if (live > peak) { peak = live; peakAt = i }
      if (s <= 1 << 20) small++; else if (s <= 10 << 20) mid++; else if (s <= 512 << 20) large++; else huge++
      sizes.set(s, (sizes.get(s) ?? 0) + 1)
      const b = Math.floor(Math.log2(Math.max(1, s)))
      bucket.set(b, (bucket.get(b) ?? 0) + s)
    } else if (t.op[i] === 1) {
      // need size by id
    }
  }
  // recompute live with sizes per id
  const sz = new Float64Array(t.allocs); live = 0; peak = 0
  for (let i = 0; i < t.length; i++) {
    if (t.op[i] === 0) { sz[t.id[i]!] = t.size[i]!; live += t.size[i]!; if (live > peak) { peak = live; peakAt = i } }
    else if (t.op[i] === 1) live -= sz[t.id[i]!]!
  }
  console.log(n, { events: t.length, allocs, streams: t.streams, small, mid, large, huge, distinct: sizes.size, peak, peakAt, endLive: live, exp: t.expandable?.peakReserved, rec: t.recorded.length })
  console.log("  bytes by log2 bucket (GB):", [...bucket.entries()].sort((a, b) => a[0] - b[0]).map(([b, v]) => `${b}:${(v / 1e9).toFixed(1)}`).join(" "))
}
