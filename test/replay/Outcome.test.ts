import { describe, expect, it } from "@effect/vitest"
import { Effect, Result } from "effect"
import { readFileSync } from "node:fs"
import { policyNames } from "../../src/domain/Allocator.ts"
import { replaySim } from "../../src/replay/ReplayRunner.ts"
import { parseTraceBytes } from "../../src/trace/File.ts"
import { decodeTrace } from "../../src/trace/Trace.ts"

const GiB = 2 ** 30
const trace = Result.getOrThrow(parseTraceBytes("gpt2_fixed", readFileSync("traces/gpt2_fixed.json.gz")))

describe("what a replay reports, failed requests included", () => {
  it.effect("peak requested is the trace's under every capacity and policy; failures are counted, each once", () =>
    Effect.gen(function*() {
      for (const policy of policyNames) {
        const whole = yield* replaySim(trace, policy)
        expect(whole.failedAllocs).toBe(0)
        expect(whole.peakServed).toBe(whole.peakRequested)
        expect(whole.peakRequested).toBe(trace.native!.peakRequested)
        for (const capacity of [4 * GiB, 2 * 1024 * 1024]) {
          const r = yield* replaySim(trace, policy, { sim: { capacity } })
          expect(r.peakRequested).toBe(whole.peakRequested)
          expect(r.peakServed).toBeLessThan(r.peakRequested)
          expect(r.failedAllocs).toBeGreaterThan(0)
          expect(r.ooms + r.faultedAllocs).toBe(r.failedAllocs)
          expect(r.ooms).toBe(r.failedAllocs)
          expect(r.peakReserved).toBeLessThanOrEqual(capacity)
          expect(r.liveAtEnd).toEqual(whole.liveAtEnd)
        }
      }
    }), 120_000)

  it.effect("live allocations at the end: count and requested bytes", () =>
    Effect.gen(function*() {
      const t = Result.getOrThrow(decodeTrace("t", {
        format: "gmlake-trace/1",
        workload: "w",
        events: [["a", 1, 1000], ["a", 2, 3000], ["a", 3, 0], ["f", 1], ["a", 4, 500]]
      }))
      const r = yield* replaySim(t, "caching")
      expect(r.liveAtEnd).toEqual({ allocations: 2, bytes: 3500 })
      expect(r.peakRequested).toBe(4000)
      expect(r.liveAtEnd).toEqual({ allocations: 2, bytes: 3500 })
    }))
})
