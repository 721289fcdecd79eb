/**
 * The decoders under random malformed input: structure, types, sizes, ids, streams, nesting,
 * truncation and gzip damage for JSON traces; shapes and byte damage for snapshots. Property:
 * a `TraceError` with one line naming the file (and the event, for an event), or a trace that
 * holds the format's invariants, within a time bound. And the streaming decoder agrees with the
 * in-memory one on every input `JSON.parse` accepts, however the bytes are split.
 */
import { describe, expect, it } from "@effect/vitest"
import { Result } from "effect"
import fc from "fast-check"
import { gzipSync } from "node:zlib"
import { JsonTraceDecoder } from "../../src/trace/Codec.ts"
import { parseTraceBytes } from "../../src/trace/File.ts"
import { decodeTrace, Op, type Trace, TraceError } from "../../src/trace/Trace.ts"
import { pickle } from "./pickle.ts"

const REASONS = ["invalid", "truncated", "too-large", "too-deep", "unreadable", "not-a-snapshot", "no-history"]
/**
 * A runaway (work growing faster than the input) takes minutes on these inputs of a few KiB;
 * a correct decode takes milliseconds. 5 s keeps that distinction while a GC pause on a loaded
 * 2-core machine (seen once at 2 s, under a load average of 15) does not fail the suite.
 */
const BOUND_MS = 5000

/** The format's invariants on a decoded trace. */
const checkTrace = (t: Trace) => {
  const seen = new Uint8Array(t.allocs)
  for (let i = 0; i < t.length; i++) {
    const k = t.id[i]!
    expect(k).toBeGreaterThanOrEqual(0)
    expect(k).toBeLessThan(t.allocs)
    expect(t.stream[i]).toBeLessThan(t.streams)
    if (t.op[i] === Op.alloc) {
      expect(seen[k]).toBe(0)
      expect(Number.isSafeInteger(t.size[i]) && t.size[i]! >= 0).toBe(true)
      seen[k] = 1
    } else if (t.op[i] === Op.free) {
      expect(seen[k]).toBe(1)
      seen[k] = 2
    } else {
      expect(t.op[i]).toBe(Op.complete)
      expect(seen[k]).toBe(2)
      expect(t.deferred[k]).toBe(1)
      seen[k] = 3
    }
  }
}

/** The property: a typed one-line error naming the file, or a valid trace, within the bound. */
const decodesOrNames = (file: string, data: Uint8Array) => {
  const t0 = performance.now()
  const r = parseTraceBytes(file, data)
  const ms = performance.now() - t0
  expect(ms).toBeLessThan(BOUND_MS)
  if (Result.isSuccess(r)) return checkTrace(r.success)
  const e = r.failure
  expect(e).toBeInstanceOf(TraceError)
  expect(REASONS).toContain(e.reason)
  expect(e.message.startsWith(`${file}: `)).toBe(true)
  expect(e.message).not.toContain("\n")
  expect(e.message.length).toBeLessThan(600)
  if (e.event !== undefined) expect(e.message.startsWith(`${file}: event ${e.event}: `)).toBe(true)
}

const scalar = fc.oneof(
  fc.nat({ max: 40 }),
  fc.integer({ min: -5, max: 2 ** 20 }),
  fc.constantFrom(1.5, -0, 1e400, 2 ** 53, 2 ** 53 + 2, 65535, 65536, 70000, 0),
  fc.constantFrom("a", "f", "F", "S", "s", "M", "m", "x", "", "aa"),
  fc.constant(null),
  fc.boolean()
)
/** Mostly plausible events over a small id space, so that sequences (reuse, double frees, F before f) happen. */
const event = fc.oneof(
  { weight: 6, arbitrary: fc.tuple(fc.constant("a"), fc.nat({ max: 30 }), fc.nat({ max: 1 << 24 })) },
  { weight: 2, arbitrary: fc.tuple(fc.constant("a"), fc.nat({ max: 30 }), fc.nat({ max: 1 << 24 }), fc.nat({ max: 4 })) },
  { weight: 5, arbitrary: fc.tuple(fc.constantFrom("f", "F"), fc.nat({ max: 30 })) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom("S", "s", "M", "m"), fc.nat({ max: 1 << 24 })) },
  { weight: 1, arbitrary: fc.array(scalar, { maxLength: 6 }) },
  { weight: 1, arbitrary: scalar }
)
const document = fc.record({
  format: fc.oneof({ weight: 9, arbitrary: fc.constant("gmlake-trace/1") }, { weight: 1, arbitrary: fc.string() }),
  workload: fc.oneof({ weight: 9, arbitrary: fc.string({ maxLength: 8 }) }, { weight: 1, arbitrary: scalar }),
  events: fc.array(event, { maxLength: 60 })
})

type Mutation = (text: string) => string
const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.constant<Mutation>((t) => t),
  fc.nat().map((n): Mutation => (t) => t.slice(0, n % (t.length + 1))),
  fc.tuple(fc.nat(), fc.nat({ max: 8 })).map(([at, len]): Mutation => (t) => t.slice(0, at % (t.length + 1)) + t.slice((at % (t.length + 1)) + len)),
  fc.tuple(fc.nat(), fc.constantFrom("[", "]", "{", "}", ",", ":", '"', "\\", "-", "1e9", "null", " ", "\u00e9", "\ud800", "[[[[[[")).map(
    ([at, s]): Mutation => (t) => t.slice(0, at % (t.length + 1)) + s + t.slice(at % (t.length + 1))
  ),
  fc.tuple(fc.nat(), fc.integer({ min: 100, max: 6000 })).map(([at, depth]): Mutation => (t) => {
    const i = t.indexOf("[", t.indexOf('"events"')) + 1 || at % (t.length + 1)
    return t.slice(0, i) + "[".repeat(depth) + "]".repeat(depth) + "," + t.slice(i)
  }),
  fc.integer({ min: 100, max: 6000 }).map((depth): Mutation => (t) => t.replace('"workload"', `"source":${"[".repeat(depth)}${"]".repeat(depth)},"workload"`))
)

const bytesOf = (s: string) => new TextEncoder().encode(s)

describe("decoder fuzz", () => {
  it("JSON traces, malformed at random: a typed one-line error or a valid trace, in bounded time", () => {
    fc.assert(
      fc.property(document, mutation, (doc, mutate) => decodesOrNames("t.json", bytesOf(mutate(JSON.stringify(doc))))),
      { numRuns: 400 }
    )
  })

  it("gzip traces, truncated or damaged at random: the same", () => {
    fc.assert(
      fc.property(document, fc.nat(), fc.nat({ max: 255 }), fc.boolean(), (doc, at, byte, cut) => {
        const gz = gzipSync(bytesOf(JSON.stringify(doc)))
        const i = at % gz.length
        const damaged = cut ? gz.subarray(0, i) : Uint8Array.from(gz, (b, k) => (k === i ? byte : b))
        decodesOrNames("t.json.gz", damaged)
      }),
      { numRuns: 300 }
    )
  })

  it("the streaming decoder agrees with the in-memory one, however the bytes are split", () => {
    fc.assert(
      fc.property(document, mutation, fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 8 }), (doc, mutate, sizes) => {
        const text = mutate(JSON.stringify(doc))
        let parsed: unknown
        try {
          parsed = JSON.parse(text)
        } catch {
          return
        }
        const expected = decodeTrace("t.json", parsed)
        const bytes = bytesOf(text)
        const decoder = new JsonTraceDecoder("t.json")
        let got: Result.Result<Trace, TraceError>
        try {
          for (let o = 0, k = 0; o < bytes.length; o += sizes[k++ % sizes.length]!) {
            decoder.write(bytes.subarray(o, o + sizes[k % sizes.length]!))
          }
          got = Result.succeed(decoder.end())
        } catch (e) {
          if (!(e instanceof TraceError)) throw e
          got = Result.fail(e)
        }
        expect(Result.isSuccess(got)).toBe(Result.isSuccess(expected))
        if (Result.isSuccess(got) && Result.isSuccess(expected)) {
          for (const k of ["op", "id", "size", "stream", "deferred"] as const) expect([...got.success[k]]).toEqual([...expected.success[k]])
          expect(got.success.recorded).toEqual(expected.success.recorded)
        }
      }),
      { numRuns: 400 }
    )
  })

  const action = fc.constantFrom("alloc", "free_requested", "free_completed", "segment_alloc", "segment_free", "segment_map", "segment_unmap", "oom", "snapshot", "other")
  const entry = fc.record({
    action: fc.oneof({ weight: 9, arbitrary: action }, { weight: 1, arbitrary: scalar }),
    addr: fc.oneof({ weight: 9, arbitrary: fc.nat({ max: 12 }).map((a) => a * 4096) }, { weight: 1, arbitrary: scalar }),
    size: fc.oneof({ weight: 9, arbitrary: fc.nat({ max: 1 << 22 }) }, { weight: 1, arbitrary: scalar }),
    stream: fc.oneof({ weight: 9, arbitrary: fc.constantFrom(0, 0, 0, 94_000_000_000) }, { weight: 1, arbitrary: scalar })
  }, { requiredKeys: [] })
  const snapshot = fc.oneof(
    { weight: 8, arbitrary: fc.record({ segments: fc.constant([]), device_traces: fc.array(fc.array(entry, { maxLength: 40 }), { maxLength: 3 }) }) },
    { weight: 1, arbitrary: fc.record({ device_traces: fc.array(fc.oneof(scalar, fc.array(scalar))) }) },
    { weight: 1, arbitrary: fc.array(scalar) }
  )

  it("snapshots, malformed or damaged at random: a typed one-line error or a valid trace", () => {
    fc.assert(
      fc.property(snapshot, fc.option(fc.tuple(fc.nat(), fc.nat({ max: 255 }), fc.boolean())), (snap, damage) => {
        let data = pickle(snap as never, 4)
        if (damage !== null) {
          const [at, byte, cut] = damage
          const i = at % data.length
          data = cut ? data.subarray(0, Math.max(2, i)) : Uint8Array.from(data, (b, k) => (k === i && k > 1 ? byte : b))
        }
        decodesOrNames("s.pickle", data)
      }),
      { numRuns: 400 }
    )
  })
})
