/**
 * Decode speed, side by side: this tree's `loadTrace` against the decoder of an earlier
 * revision (default a8bb4cb: whole-file gunzip, JSON.parse, Schema over every event), on the
 * same files, alternating, median of N runs each.
 *
 *   node bench/decode.ts [--rev a8bb4cb] [--runs 7] [trace ...]
 *
 * No forced GC between runs: a full GC (`--expose-gc`, `gc()`) also throws away compiled code,
 * so every run would start cold (measured: the new decoder 2.3x slower after each `gc()`).
 *
 * The old sources are taken with `git show` into scratch/ (ignored by git).
 */
import { execFileSync } from "node:child_process"
import { mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { join, resolve } from "node:path"
import { takeOption } from "./Args.ts"
import { Effect, Result } from "effect"
import { loadTrace, parseTraceBytes } from "../src/trace/File.ts"

const args = process.argv.slice(2)
const opt = (name: string, fallback: string) => takeOption(args, name, fallback)
const rev = opt("rev", "a8bb4cb")
const runs = Number(opt("runs", "7"))
const files = args.length > 0 ? args : ["traces/llama1b_ckpt_varlen.json.gz", "traces/llama1b_lora_varlen.json.gz"]

const dir = resolve("scratch", `decode-${rev}`)
mkdirSync(dir, { recursive: true })
for (const f of ["Trace.ts", "File.ts"]) {
  writeFileSync(join(dir, f), execFileSync("git", ["show", `${rev}:src/trace/${f}`]))
}
const old = await import(join(dir, "File.ts")) as {
  parseTraceBytes: (file: string, data: Uint8Array) => Result.Result<{ length: number }, unknown>
  loadTrace: (file: string) => Effect.Effect<{ length: number }, unknown>
}
// Two views: the file, as the command line loads it (both read asynchronously), and bytes
// already in memory (no I/O: the decoders' own work).
const ways = {
  file: {
    old: (file: string) => Effect.runPromise(old.loadTrace(file)).then((t) => t.length),
    now: (file: string) => Effect.runPromise(loadTrace(file)).then((t) => t.length)
  },
  memory: {
    old: (file: string) => Result.getOrThrow(old.parseTraceBytes(file, bytes.get(file)!)).length,
    now: (file: string) => Result.getOrThrow(parseTraceBytes(file, bytes.get(file)!)).length
  }
}
const bytes = new Map(files.map((f) => [f, readFileSync(f)]))

const median = (xs: Array<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
for (const file of files) {
  for (const [way, { old: oldLoad, now: newLoad }] of Object.entries(ways)) {
    const tOld: Array<number> = []
    const tNew: Array<number> = []
    let lengths: [number, number] = [0, 0]
    for (let r = 0; r < runs + 1; r++) {
      let t = performance.now()
      const a = await oldLoad(file)
      const dOld = performance.now() - t
      t = performance.now()
      const b = await newLoad(file)
      const dNew = performance.now() - t
      lengths = [a, b]
      if (r > 0) { // the first round warms both up
        tOld.push(dOld)
        tNew.push(dNew)
      }
    }
    if (lengths[0] !== lengths[1]) throw new Error(`${file}: ${lengths[0]} events before, ${lengths[1]} now`)
    const mo = median(tOld)
    const mn = median(tNew)
    console.log(
      `${file} (${way}): ${lengths[1]} request events; ${rev} ${mo.toFixed(1)} ms, now ${mn.toFixed(1)} ms: ` +
        `${(mo / mn).toFixed(2)}x faster (median of ${runs})`
    )
  }
}
