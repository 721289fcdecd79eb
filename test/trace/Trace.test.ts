import { describe, expect, it } from "@effect/vitest"
import { Effect, Result } from "effect"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { gzipSync } from "node:zlib"
import { Op } from "../../src/trace/Trace.ts"
import { loadTrace, parseTraceBytes } from "../../src/trace/File.ts"

const doc = (events: Array<unknown>, extra: Record<string, unknown> = {}) => ({
  format: "gmlake-trace/1",
  workload: "unit",
  events,
  ...extra
})
const bytes = (v: unknown) => new TextEncoder().encode(JSON.stringify(v))
const error = (data: Uint8Array, file = "t.json") => {
  const r = parseTraceBytes(file, data)
  if (Result.isSuccess(r)) throw new Error("expected a TraceError")
  return r.failure
}

describe("trace decoding", () => {
  it("decodes requests into columns, with dense ids, streams and deferred frees", () => {
    const r = parseTraceBytes("t.json", bytes(doc([
      ["S", 2097152],
      ["a", 100, 512],
      ["a", 7, 4096, 2],
      ["f", 100],
      ["f", 7],
      ["F", 7],
      ["a", 8, 0]
    ], { pytorch: { native: { peakRequested: 4608, peakReserved: 2097152 } } })))
    expect(Result.isSuccess(r)).toBe(true)
    const t = Result.getOrThrow(r)
    expect(t.length).toBe(6)
    expect([...t.op]).toEqual([Op.alloc, Op.alloc, Op.free, Op.free, Op.complete, Op.alloc])
    expect([...t.id]).toEqual([0, 1, 0, 1, 1, 2])
    expect([...t.stream]).toEqual([0, 2, 0, 2, 2, 0])
    expect([...t.deferred]).toEqual([0, 1, 0])
    expect(t.streams).toBe(3)
    expect(t.native?.peakReserved).toBe(2097152)
    expect(t.recorded).toEqual([{ kind: "S", bytes: 2097152, before: 0 }])
  })

  it("reads gzip and plain JSON alike", () => {
    const plain = bytes(doc([["a", 1, 10], ["f", 1]]))
    const a = Result.getOrThrow(parseTraceBytes("t.json", plain))
    const b = Result.getOrThrow(parseTraceBytes("t.json.gz", gzipSync(plain)))
    expect(b.length).toBe(a.length)
  })

  it.each([
    [bytes(doc([["a", 1, -5]])), "event 0: size of allocation 1 must be a non-negative integer, got -5"],
    [bytes(doc([["a", 1, 1.5]])), "event 0: size of allocation 1 must be a non-negative integer, got 1.5"],
    [bytes(doc([["a", 1]])), "event 0: \"a\" takes [id, bytes] or [id, bytes, stream]"],
    [bytes(doc([["x", 1]])), "event 0: unknown operation \"x\""],
    [bytes(doc([["a", 1, 5], ["a", 1, 6]])), "event 1: allocation id 1 is used twice"],
    [bytes(doc([["f", 3]])), "event 0: \"f\" of allocation 3, which was never allocated"],
    [bytes(doc([["a", 3, 1], ["f", 3], ["f", 3]])), "event 2: \"f\" of allocation 3, which is already freed"],
    [bytes(doc([["a", 3, 1], ["F", 3]])), "event 1: \"F\" of allocation 3 before its \"f\""],
    [bytes(doc([["a", 3, 1], 5])), "event 1: expected an array"],
    [bytes(doc([["a", "x", 1]])), "event 0: allocation id must be a non-negative integer, got \"x\""]
  ])("names the event and what is wrong (%#)", (data, message) => {
    const e = error(data)
    expect(e._tag).toBe("TraceError")
    expect(e.message).toContain("t.json: ")
    expect(e.message).toContain(message)
  })

  it("rejects a document that is not a trace, naming the field", () => {
    expect(error(bytes({ format: "other", workload: "w", events: [] })).message).toContain("format")
    expect(error(bytes({ format: "gmlake-trace/1", events: [] })).message).toContain("workload")
    expect(error(bytes(doc([], { pytorch: { native: { peakRequested: -1, peakReserved: 0 } } }))).message)
      .toContain("pytorch.native.peakRequested")
  })

  it("rejects data that is not JSON, or not gzip though named .gz", () => {
    expect(error(new TextEncoder().encode("{nope"), "t.json").message).toMatch(/^t\.json: not valid JSON/)
    expect(error(bytes(doc([])), "t.json.gz").message).toBe("t.json.gz: not gzip data, though the name ends in .gz")
    expect(error(Uint8Array.from([0x1f, 0x8b, 1, 2, 3]), "t.json.gz").message).toMatch(/corrupt gzip data/)
  })

  it.effect("loads files, and names a file that cannot be read", () =>
    Effect.gen(function*() {
      const dir = mkdtempSync(join(tmpdir(), "gmlake-trace-"))
      const file = join(dir, "t.json.gz")
      writeFileSync(file, gzipSync(bytes(doc([["a", 1, 10]]))))
      const t = yield* loadTrace(file)
      expect(t.allocs).toBe(1)
      const missing = yield* Effect.flip(loadTrace(join(dir, "missing.json")))
      expect(missing.message).toContain("missing.json: cannot read the file (ENOENT)")
    }))

  it("decodes the bundled traces", async () => {
    const { readFileSync } = await import("node:fs")
    for (const name of ["gpt2_fixed", "llama1b_lora_varlen"]) {
      const t = Result.getOrThrow(parseTraceBytes(name, readFileSync(`traces/${name}.json.gz`)))
      expect(t.workload).toBe(name)
      expect(t.native?.peakReserved).toBeGreaterThan(0)
      expect(t.streams).toBe(1)
    }
  })
})
