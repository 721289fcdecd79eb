/**
 * `gmlake convert`, `gmlake generate --events` and `--device-index`, in-process.
 */
import { describe, expect, it } from "@effect/vitest"
import { Result } from "effect"
import { mkdtempSync, readFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { parseTraceBytes } from "../../src/trace/File.ts"
import { gmlakeIn } from "./harness.ts"

const dir = mkdtempSync(join(tmpdir(), "gmlake-convert-"))
const SNAPSHOT = "test/fixtures/gpt2_small.snapshot.pickle"
const load = (file: string) => Result.getOrThrow(parseTraceBytes(file, readFileSync(file)))

describe("convert, generate --events, --device-index", () => {
  it("writes a snapshot as gmlake-trace/1 that decodes to the same trace, anchors included", async () => {
    const out = join(dir, "snap.json.gz")
    const r = await gmlakeIn(["convert", SNAPSHOT, "--out", out])
    expect(r.err).toBe("")
    expect(r.code).toBe(0)
    expect(r.out).toMatch(/^wrote .*snap\.json\.gz: 3335 events \(1639 allocations on 1 stream\(s\)\)/)
    const a = load(SNAPSHOT)
    const b = load(out)
    for (const k of ["op", "id", "size", "stream", "deferred"] as const) expect([...b[k]]).toEqual([...a[k]])
    expect(b.recorded).toEqual(a.recorded)
    expect(b.native).toEqual(a.native)
    expect(b.workload).toBe(a.workload)
  })

  it("refuses a device index with no history, naming those with some (exit 65)", async () => {
    const r = await gmlakeIn(["replay", SNAPSHOT, "--device-index", "2", "--json"])
    expect(r.code).toBe(65)
    expect(r.err).toBe(`gmlake: ${SNAPSHOT}: device 2 has no trace history in this snapshot (devices with history: 0)\n`)
  })

  it("generates a trace of exactly N events, streamed, that replays", async () => {
    const out = join(dir, "gen.json.gz")
    const r = await gmlakeIn(["generate", "--events", "12345", "--seed", "4", "--out", out])
    expect(r.code).toBe(0)
    expect(r.out).toMatch(/^wrote .*gen\.json\.gz: 12345 events on 3 stream\(s\)/)
    const t = load(out)
    expect(t.length + t.recorded.length).toBe(12345)
    expect(t.streams).toBe(3)
    const replay = await gmlakeIn(["replay", out, "--policy", "caching", "--json"])
    expect(replay.code).toBe(0)
    expect(JSON.parse(replay.out).complete).toBe(true)
    const usage = await gmlakeIn(["generate", "--events", "10"])
    expect(usage.code).toBe(2)
    expect(usage.err).toBe("gmlake: generate: --events: needs --out FILE (a long trace is written to a file)\n")
  })
})
