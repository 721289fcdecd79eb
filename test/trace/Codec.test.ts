import { describe, expect, it } from "@effect/vitest"
import { Result } from "effect"
import { gzipSync } from "node:zlib"
import { JsonTraceDecoder, MAX_DEPTH } from "../../src/trace/Codec.ts"
import { parseTraceBytes } from "../../src/trace/File.ts"
import { decodeTrace, type Trace } from "../../src/trace/Trace.ts"

const enc = (s: string) => new TextEncoder().encode(s)
const columns = (t: Trace) => ({
  op: [...t.op],
  id: [...t.id],
  size: [...t.size],
  stream: [...t.stream],
  deferred: [...t.deferred],
  recorded: t.recorded,
  allocs: t.allocs,
  streams: t.streams,
  workload: t.workload
})
const decodeChunks = (text: Uint8Array, size: number) => {
  const d = new JsonTraceDecoder("t.json")
  for (let o = 0; o < text.length; o += size) d.write(text.subarray(o, o + size))
  return d.end()
}
const failure = (text: string | Uint8Array, file = "t.json") => {
  const r = parseTraceBytes(file, typeof text === "string" ? enc(text) : text)
  if (Result.isSuccess(r)) throw new Error("expected a TraceError")
  return r.failure
}

const events = [["S", 2097152], ["a", 100, 512], ["a", 7, 4096, 2], ["f", 100], ["a", 0, 0], ["f", 7], ["F", 7], ["a", 8, 123456789012345, 1]]
const doc = { format: "gmlake-trace/1", workload: "w", source: { device: "d", nested: [{ a: [1, { b: null }] }] }, events }

describe("streaming JSON decode", () => {
  it("gives the same trace as decoding the parsed document, however the bytes are split and spaced", () => {
    const expected = columns(Result.getOrThrow(decodeTrace("t.json", doc)))
    const spellings = [
      JSON.stringify(doc),
      JSON.stringify(doc, null, 2),
      // Irregular but valid spellings the fast path leaves to the tokenizer.
      JSON.stringify(doc).replace('["a",100,512]', '[ "\\u0061" , 100.0 , 5.12e2 ]').replace('["f",7]', '["f", 7 ]'),
      JSON.stringify({ events, workload: "w", format: "gmlake-trace/1", source: doc.source })
    ]
    for (const text of spellings) {
      const bytes = enc(text)
      for (const size of [1, 2, 3, 5, 7, 13, 64, 1 << 20]) {
        expect(columns(decodeChunks(bytes, size))).toEqual(expected)
      }
    }
  })

  it("names the event and the problem, through either path", () => {
    const bad = (e: string) => failure(`{"format":"gmlake-trace/1","workload":"w","events":[["a",1,5],${e}]}`).message
    expect(bad(`["a",1,6]`)).toBe("t.json: event 1: allocation id 1 is used twice")
    expect(bad(`["a", 1.0, 6]`)).toBe("t.json: event 1: allocation id 1 is used twice")
    expect(bad(`["a",2,-6]`)).toBe("t.json: event 1: size of allocation 2 must be a non-negative integer, got -6")
    expect(bad(`["a",2,1e400]`)).toMatch(/^t\.json: event 1: size of allocation 2 must be a non-negative integer/)
    expect(bad(`["a",2,12345678901234567890]`)).toMatch(/^t\.json: event 1: size of allocation 2 must be a non-negative integer/)
    expect(bad(`["a",2,6,70000]`)).toBe("t.json: event 1: stream of allocation 2 must be an integer from 0 to 65535, got 70000")
    expect(bad(`["a",2,6,1,1]`)).toBe(`t.json: event 1: "a" takes [id, bytes] or [id, bytes, stream], got ["a",2,6,1,1]`)
    expect(bad(`["x",2]`)).toBe(`t.json: event 1: unknown operation "x" (expected "a", "f", "F", "S", "s", "M" or "m")`)
    expect(bad(`{"a":1}`)).toBe(`t.json: event 1: expected an array such as ["a", id, bytes], got an object`)
    expect(bad(`7`)).toBe(`t.json: event 1: expected an array such as ["a", id, bytes], got 7`)
    expect(bad(`["a",[2],6]`)).toMatch(/^t\.json: event 1: an event holds strings and numbers only/)
    expect(bad(`["a" 2]`)).toMatch(/^t\.json: event 1: not valid JSON at byte \d+: expected ',' or ']', got a number 2/)
  })

  it("names nesting, truncation and size as such, in one line", () => {
    const deep = `{"format":"gmlake-trace/1","workload":"w","events":[["a",1,5],${"[".repeat(5000)}${"]".repeat(5000)}]}`
    const e1 = failure(deep)
    expect(e1.message).toMatch(/^t\.json: event 1: an event holds strings and numbers only/)
    const deepHeader = `{"format":"gmlake-trace/1","workload":"w","source":${"[".repeat(5000)}${"]".repeat(5000)},"events":[]}`
    const e2 = failure(deepHeader)
    expect(e2.reason).toBe("too-deep")
    expect(e2.message).toContain(`nested too deep: header value "source" nests more than ${MAX_DEPTH} levels`)
    const whole = enc(JSON.stringify(doc))
    for (let cut = 1; cut < whole.length - 1; cut++) {
      const e = failure(whole.subarray(0, cut))
      expect(e.message.split("\n")).toHaveLength(1)
      expect(["truncated", "invalid"]).toContain(e.reason)
    }
    expect(failure(whole.subarray(0, 80)).message).toMatch(/^t\.json: (event \d+: )?truncated: the input ends/)
    const gz = gzipSync(whole)
    const e3 = failure(gz.subarray(0, gz.length - 10), "t.json.gz")
    expect(e3.reason).toBe("truncated")
    expect(e3.message).toBe("t.json.gz: truncated: the gzip data ends early (the file is cut short)")
    expect(failure("").message).toBe("t.json: empty: no JSON document")
  })

  it("refuses a single token longer than the limit as too large", () => {
    const big = `{"format":"gmlake-trace/1","workload":"w","description":"${"x".repeat(17 * 1024 * 1024)}","events":[]}`
    const e = failure(big)
    expect(e.reason).toBe("too-large")
    expect(e.message).toMatch(/^t\.json: too large: more than 16777216 bytes without a complete JSON token/)
  })

  it("takes long runs of spaces between events in linear time, and refuses a gzip bomb of them as too large", () => {
    const spaced = enc(`{"format":"gmlake-trace/1","workload":"w","events":[["a",1,5],${" ".repeat(4 << 20)}["f",1]]}`)
    const t0 = performance.now()
    const t = decodeChunks(spaced, 1 << 20)
    expect(performance.now() - t0).toBeLessThan(3000)
    expect(t.length).toBe(2)
    const bomb = gzipSync(enc(`{"format":"gmlake-trace/1","workload":"w","events":[${" ".repeat(40 << 20)}]}`), { level: 1 })
    const e = failure(bomb, "bomb.json.gz")
    expect(e.reason).toBe("too-large")
    expect(e.message).toMatch(/^bomb\.json\.gz: event 0: too large: more than 16777216 bytes without a complete JSON token/)
  })

  it("reads a format other than ours as such, before its events", () => {
    expect(failure(`{"format":"other/2","events":[["a"`).message)
      .toBe(`t.json: not a gmlake-trace/1 document: format: Expected "gmlake-trace/1", got "other/2"`)
    expect(failure(`[1,2]`).message).toBe(`t.json: not a gmlake-trace/1 document: expected an object ({"format": "gmlake-trace/1", ...}), got an array`)
  })
})
