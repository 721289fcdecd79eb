/**
 * The replay's timeline (Note [Timeline sampling]): one sample per slice, whose counts add up to
 * the replay's totals and whose byte figures agree with the replay's peaks.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Result } from "effect"
import { policyNames } from "../../src/domain/Allocator.ts"
import { replaySim } from "../../src/replay/ReplayRunner.ts"
import { multiStreamTrace } from "../../src/trace/Synthetic.ts"
import { decodeTrace, type Trace } from "../../src/trace/Trace.ts"

const decode = (doc: unknown): Trace => {
  const r = decodeTrace("t", doc)
  if (Result.isFailure(r)) throw r.failure
  return r.success
}

describe("replay timeline", () => {
  const traces = {
    "multi-stream synthetic": decode(multiStreamTrace({ seed: 3, steps: 4, layers: 6 })),
    "three events": decode({ format: "gmlake-trace/1", workload: "tiny", events: [["a", 1, 5000000], ["a", 2, 100], ["f", 1]] })
  }
  for (const [name, trace] of Object.entries(traces)) {
    for (const policy of policyNames) {
      it.effect(`${name}, ${policy}: slices add up to the totals`, () =>
        Effect.gen(function*() {
          const r = yield* replaySim(trace, policy)
          const t = r.timeline
          expect(t.length).toBe(Math.min(20, trace.length))
          expect(t[t.length - 1]!.endEvent).toBe(trace.length)
          for (let k = 1; k < t.length; k++) expect(t[k]!.endEvent).toBeGreaterThan(t[k - 1]!.endEvent)
          expect(t.reduce((s, x) => s + x.driverCalls, 0)).toBe(r.driverCallsTotal)
          expect(t.reduce((s, x) => s + x.driverMicros, 0)).toBeCloseTo(r.driverMicros, -1)
          expect(t.reduce((s, x) => s + x.stitches, 0)).toBe(r.stitches)
          expect(t.reduce((s, x) => s + x.ooms, 0)).toBe(r.ooms)
          expect(Math.max(...t.map((x) => x.peakReserved))).toBe(r.peakReserved)
          expect(Math.max(...t.map((x) => x.peakRequested))).toBe(r.peakRequested)
          for (const x of t) {
            expect(x.peakReserved).toBeGreaterThanOrEqual(x.reserved)
            expect(x.peakRequested).toBeGreaterThanOrEqual(x.requested)
            expect(x.reserved).toBeGreaterThanOrEqual(x.requested)
          }
        }))
    }
  }
})
