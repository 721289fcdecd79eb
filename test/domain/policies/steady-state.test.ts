/**
 * The steady state (issue "the driver bill"): a training loop repeats the same step, and once the
 * allocator has seen it, a step must make no driver call at all, as PyTorch's allocator makes
 * none. Property: for any step (random sizes, lifetimes and order), repeated, every policy makes
 * zero driver calls once warmed up: the last three of ten steps make none. How long gmlake takes
 * to settle, measured over 3,000 random steps (12 repetitions each): after 1 step in 2,742, 2 in
 * 255, 3 in 2, 4 in 1; a stitched view's chunks can be handed out once more before the layout
 * settles. The test allows up to seven warm-up steps so that it states what holds rather than
 * failing on the rare four-step case (with three, 200 runs failed about one CI run in fifteen).
 */
import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { type PolicyName, policyNames } from "../../../src/domain/Allocator.ts"
import { defaultStitchingConfig, StitchingConfig } from "../../../src/domain/policies/gmlake/StitchingConfig.ts"
import { makeAllocator } from "../../../src/domain/policies/Policies.ts"
import { MeteredPort } from "../../../src/layers/MeteredPort.ts"
import { SimDriver } from "../../../src/layers/sim/SimDriver.ts"
import type { BlockId } from "../../../src/domain/Units.ts"

const anySize = fc.oneof(fc.integer({ min: 1, max: 1 << 20 }), fc.integer({ min: 1 << 20, max: 300 << 20 }))

/**
 * A step of 1 to 40 allocations drawn by `item`, and the order of events: an index allocates, its
 * complement frees, each allocation before its free.
 */
const stepOf = <T>(item: fc.Arbitrary<T>) =>
  fc.array(item, { minLength: 1, maxLength: 40 }).chain((items) =>
    fc.shuffledSubarray([...items.keys(), ...items.keys()].map((k, i) => (i < items.length ? k : ~k)), {
      minLength: items.length * 2,
      maxLength: items.length * 2
    }).map((order) => {
      // the first occurrence of k allocates
      const seen = new Set<number>()
      const events = order.map((e) => {
        const k = e < 0 ? ~e : e
        if (seen.has(k)) return ~k
        seen.add(k)
        return k
      })
      return { items, events }
    })
  )

/** One step on one stream: allocations by size. */
const step = stepOf(anySize).map(({ items, events }) => ({ sizes: items, events }))

const callsPerStep = (policy: PolicyName, s: { sizes: Array<number>; events: Array<number> }, steps: number): Array<number> => {
  const port = new MeteredPort(new SimDriver())
  const a = makeAllocator(policy, port)
  const out: Array<number> = []
  for (let n = 0; n < steps; n++) {
    const before = port.totalCalls()
    const live = new Map<number, BlockId>()
    for (const e of s.events) {
      if (e >= 0) live.set(e, a.malloc(s.sizes[e]!, 0))
      else a.free(live.get(~e)!)
    }
    out.push(port.totalCalls() - before)
  }
  return out
}

describe("steady state: the steps random runs found never settling (Note [Stitched view cache])", () => {
  // Each stitched a view for a small request out of whole chunks much larger than it (a 64 MiB
  // chunk for 0.86 MiB), so the view mapped over ten times the request; the reuse limit then
  // measured the view, not the block it was made for, and the same view was stitched anew every
  // step (4 or 5 driver calls per step, forever). Runs of 5,000 random steps found it in one of
  // two; the 200 runs of the property below failed once in the dozen or so full test runs made here.
  const cases = [
    { sizes: [69905274, 184258, 721887, 3317905, 34415475, 513893, 971789, 314122916], events: [2, 6, 1, -7, 4, 7, -5, 0, -3, 3, -8, -2, -1, 5, -4, -6] },
    {
      sizes: [788665, 720965, 601669, 123612353, 212464593, 203268, 519587, 541602, 177860031, 899015],
      events: [8, -9, 0, 1, 3, -4, -2, 4, -1, 9, 7, -10, 5, -6, -5, -8, 2, 6, -3, -7]
    },
    {
      sizes: [1048600, 2698349, 809683, 747438, 145312345, 343317, 190360830, 62104816, 12],
      events: [2, 7, 4, -8, -3, 6, 5, 8, -6, 1, -2, 0, 3, -7, -1, -4, -9, -5]
    }
  ]
  for (const [i, s] of cases.entries()) {
    it(`case ${i + 1}: no call after the first step`, () => {
      const calls = callsPerStep("gmlake", s, 6)
      expect(calls[0]).toBeGreaterThan(0)
      expect(calls.slice(1)).toEqual([0, 0, 0, 0, 0])
    })
  }
})

describe("steady state: a repeated step makes no driver call once warmed up", () => {
  for (const policy of policyNames) {
    it(policy, () => {
      fc.assert(
        fc.property(step, (s) => {
          const calls = callsPerStep(policy, s, 10)
          expect(calls.slice(7)).toEqual([0, 0, 0])
        }),
        { numRuns: 200 }
      )
    })
  }
})

/** A step on three streams: allocations by size and stream, each freed on its own stream. */
const multiStep = stepOf(fc.record({ size: anySize, stream: fc.integer({ min: 0, max: 2 }) }))
  .map(({ items, events }) => ({ allocs: items, events }))

/**
 * Repeats step `s` ten times on three streams of a fresh simulated device; returns the driver
 * calls of each repetition and the allocator.
 */
const repeatOnThreeStreams = (
  policy: PolicyName,
  gmlake: StitchingConfig,
  s: { allocs: Array<{ size: number; stream: number }>; events: Array<number> },
  latency: number
) => {
  const sim = new SimDriver({ eventLatency: latency })
  const port = new MeteredPort(sim)
  const streams = [0, sim.streamCreate(), sim.streamCreate()]
  const a = makeAllocator(policy, port, { gmlake }, sim)
  const calls: Array<number> = []
  for (let n = 0; n < 10; n++) {
    const before = port.totalCalls()
    const live = new Map<number, BlockId>()
    for (const e of s.events) {
      sim.tick()
      if (e >= 0) live.set(e, a.malloc(s.allocs[e]!.size, streams[s.allocs[e]!.stream]!))
      else a.free(live.get(~e)!)
    }
    calls.push(port.totalCalls() - before)
  }
  return { calls, allocator: a }
}

describe("steady state on three streams, each keeping to its own memory", () => {
  // With cross-stream adoption on, gmlake does not always settle: chunks can move between two
  // streams and back every step, for ever (bench/results/2026-12-03-cross-stream-churn.md, a known
  // limit the README names). Per-stream pools, as PyTorch keeps them, settle for every policy.
  const perStream = new StitchingConfig({ ...defaultStitchingConfig, crossStream: false })
  for (const policy of policyNames) {
    it(policy, () => {
      fc.assert(
        fc.property(multiStep, fc.constantFrom(0, 8), (s, latency) => {
          const { calls } = repeatOnThreeStreams(policy, perStream, s, latency)
          expect(calls.slice(7)).toEqual([0, 0, 0])
        }),
        { numRuns: 200 }
      )
    })
  }
})

describe("steady state on three streams, lending (cross_stream_lending)", () => {
  // Note [Cross-stream lending]: a stream short of memory borrows other streams' free chunks
  // through views of its own, so a repeated step finds them in its view cache and the chunks
  // never move. On a device that keeps up (event latency 0) every step measured settles: 27,000
  // random steps (seeds 1-8), where adoption left 146 of 2,000 unsettled
  // (bench/results/2026-12-03-cross-stream-lending.md). At latency 1-8 the owner's own recent
  // frees can make a borrowed view unusable in the next step: 0-5 in 2,000-5,000 do not settle
  // (adoption: 2-124 in 2,000), so those latencies are not claimed here.
  const lending = new StitchingConfig({ ...defaultStitchingConfig, crossStreamLending: true })
  it("gmlake", () => {
    let lent = 0
    fc.assert(
      fc.property(multiStep, (s) => {
        const { calls, allocator: a } = repeatOnThreeStreams("gmlake", lending, s, 0)
        expect(calls.slice(7)).toEqual([0, 0, 0])
        let core: unknown = a
        while ((core as { inner?: unknown }).inner !== undefined) core = (core as { inner: unknown }).inner
        lent += (core as { nLentFrees: number }).nLentFrees
      }),
      { numRuns: 300 }
    )
    // not vacuous: streams did borrow
    expect(lent).toBeGreaterThan(0)
  })
})
