/**
 * Random argument vectors against the command line, in-process: whatever the arguments, the
 * answer is an exit code with one line on standard error (`gmlake: ...`), or a valid result
 * (exit 0, nothing on standard error), within a time bound; never an internal error (70).
 * The vocabulary mixes every command and flag with good, bad and hostile values, over a small
 * trace so that valid runs stay fast.
 */
import { describe, expect, it } from "@effect/vitest"
import { onTestFinished } from "vitest"
import * as fc from "fast-check"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { ExitCode } from "../../src/cli/Errors.ts"
import { gmlakeIn } from "./harness.ts"

const dir = mkdtempSync(join(tmpdir(), "gmlake-fuzz-"))
const trace = join(dir, "t.json")
writeFileSync(trace, JSON.stringify({
  format: "gmlake-trace/1",
  workload: "fuzz",
  events: [["a", 1, 3145728], ["a", 2, 1000], ["f", 1], ["a", 3, 50000000], ["f", 2], ["f", 3]]
}))
const bad = join(dir, "bad.json")
writeFileSync(bad, "{\"format\": \"gmlake-trace/1\", \"events\": [[\"a\", 1")

const commands = ["replay", "compare", "bench", "report", "selftest", "streams", "generate", "convert", "frob", "", "help"]
const positionals = [trace, bad, join(dir, "missing.json"), "-", "--", "x y", "\u00e9\u4e2d", "t.json.gz"]
const values = [
  "0", "1", "2", "3", "7", "-1", "1.5", "0x1", "1e3", "", " ", "abc", "99999999999999999999", "NaN", "Infinity",
  "2MiB", "4MiB", "3", "16", "1GiB", "2TiB", "1TiB", "64KiB", "1.5GB", "0.5", "0.01", "1.0", ".5", "1/2",
  "caching", "gmlake,caching", "expandable,expandable", "nope", "sim", "cuda", "on", "off", "true",
  "max_split_size_mb:128", "reuse_limit:4", "frob:1", "{bad", "roundup_power2_divisions:[1:2,>:4]",
  "garbage_collection_threshold:1.5", "split_bytes:3", "max_split_size_mb:21,max_split_size_mb:22",
  join(dir, "out.json"), join(dir, "no", "such", "dir", "out.json"), dir
]
const flags = [
  "--policy", "--device", "--device-index", "--json", "--capacity", "--granularity", "--config", "--inject-faults",
  "--seed", "--cross-stream", "--repeat", "--warmup", "--count-ooms", "--rounds", "--steps", "--layers", "--events",
  "--out", "--help", "--version", "--frob", "-x", "-h", "--json=true", "--capacity=1GiB", "--repeat=2"
]
/** Values of these flags are kept small: they scale a run's work, and the property is about answers. */
const scaling = new Set(["--repeat", "--warmup", "--rounds", "--steps", "--layers", "--events"])
const smallCounts = ["0", "1", "2", "3", "-1", "1.5", "0x1", "abc", "", "99999999999999999999"]

const argv = fc.tuple(
  fc.constantFrom(...commands),
  fc.array(fc.constantFrom(...positionals), { maxLength: 2 }),
  fc.array(
    fc.oneof(
      fc.constantFrom(...flags).chain((f) =>
        scaling.has(f)
          ? fc.constantFrom(...smallCounts).map((v) => [f, v])
          : fc.oneof(fc.constant([f]), fc.constantFrom(...values).map((v) => [f, v]))
      ),
      fc.string({ maxLength: 12 }).filter((s) => s !== "/dev/stdin").map((s) => [s])
    ),
    { maxLength: 5 }
  )
).map(([command, pos, fl]) => {
  const args = [...(command === "" ? [] : [command]), ...pos, ...fl.flat()]
  // Without a trace, compare and bench replay every bundled trace: valid, but minutes of work.
  if ((command === "compare" || command === "bench") && pos.length === 0) args.splice(1, 0, trace)
  return args
})

const known = new Set<number>(Object.values(ExitCode))
const bound = 20_000

describe("gmlake command line fuzz", () => {
  it("answers every argument vector with an exit code and one line, or a valid result, in time", async () => {
    // files the vectors name (`--out {bad`) are written in the scratch folder, not the checkout
    const home = process.cwd()
    process.chdir(dir)
    onTestFinished(() => process.chdir(home))
    let runs = 0
    const codes = new Map<number, number>()
    await fc.assert(
      fc.asyncProperty(argv, async (args) => {
        const t0 = Date.now()
        const r = await gmlakeIn(args)
        const ms = Date.now() - t0
        runs++
        codes.set(r.code, (codes.get(r.code) ?? 0) + 1)
        expect(known.has(r.code), `unknown exit ${r.code} for ${JSON.stringify(args)}`).toBe(true)
        expect(r.code, `internal error for ${JSON.stringify(args)}: ${r.err}`).not.toBe(ExitCode.Internal)
        if (r.code === 0) {
          expect(r.err).toBe("")
        } else {
          const lines = r.err.split("\n").filter((l) => l.length > 0)
          expect(lines, `${JSON.stringify(args)} -> ${r.err}`).toHaveLength(1)
          expect(lines[0]).toMatch(/^gmlake: \S/)
        }
        expect(ms, `${JSON.stringify(args)} took ${ms} ms`).toBeLessThan(bound)
      }),
      { numRuns: 200, interruptAfterTimeLimit: 240_000 }
    )
    // The suite must reach both sides: refusals and valid runs.
    expect(runs).toBeGreaterThan(50)
    expect(codes.get(ExitCode.Usage) ?? 0).toBeGreaterThan(0)
    expect(codes.get(ExitCode.Ok) ?? 0).toBeGreaterThan(0)
    console.log(`cli fuzz: ${runs} runs, exit codes ${JSON.stringify(Object.fromEntries(codes))}`)
  }, 300_000)
})
