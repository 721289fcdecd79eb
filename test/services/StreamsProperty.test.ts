/**
 * Random multi-stream programs on a faulty simulated device, one fiber per stream, some fibers
 * interrupted at random: whatever happens, no two live blocks overlap, and once the session's
 * scope has closed the device holds nothing.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Layer } from "effect"
import * as fc from "fast-check"
import { policyNames } from "../../src/domain/Allocator.ts"
import { makeAllocator } from "../../src/domain/policies/Policies.ts"
import { SimDriver } from "../../src/layers/sim/SimDriver.ts"
import { layerSimWith } from "../../src/layers/sim/SimDriverLayer.ts"
import * as GpuAllocator from "../../src/services/Allocator.ts"
import * as Streams from "../../src/services/Streams.ts"

const MiB = 1024 * 1024

interface Step {
  readonly size: number
  readonly scoped: boolean
  readonly keep: number
}

const step: fc.Arbitrary<Step> = fc.record({
  size: fc.oneof(fc.integer({ min: 1, max: MiB }), fc.integer({ min: MiB, max: 48 * MiB })),
  scoped: fc.boolean(),
  keep: fc.integer({ min: 0, max: 4 })
})

const program = fc.record({
  policy: fc.constantFrom(...policyNames),
  faultRate: fc.oneof(fc.constant(0), fc.double({ min: 0, max: 0.2, noNaN: true })),
  seed: fc.nat(),
  capacity: fc.integer({ min: 64, max: 1024 }).map((m) => m * MiB),
  streams: fc.array(fc.array(step, { minLength: 1, maxLength: 25 }), { minLength: 1, maxLength: 3 }),
  interruptAfter: fc.array(fc.option(fc.integer({ min: 0, max: 30 }), { nil: undefined }), { minLength: 3, maxLength: 3 })
})

describe("streams as fibers", () => {
  it.live("leave nothing alive after the session, whatever fails or is interrupted", () =>
    Effect.promise(() =>
      fc.assert(
        fc.asyncProperty(program, async (p) => {
          const sim = new SimDriver({ capacity: p.capacity, faultRate: p.faultRate, seed: p.seed })
          const live = new Map<number, { address: number; size: number }>()
          const session = Layer.mergeAll(
            GpuAllocator.layer((port) => makeAllocator(p.policy, port, { crossStream: true }, port)),
            Streams.layer
          ).pipe(Layer.provideMerge(layerSimWith(sim)))
          const exit = await Effect.runPromiseExit(Effect.gen(function*() {
            const streams = yield* Streams.Streams
            const alloc = yield* GpuAllocator.GpuAllocator
            const noOverlap = (b: GpuAllocator.Block) => {
              for (const x of live.values()) {
                expect(b.address + b.size <= x.address || x.address + x.size <= b.address).toBe(true)
              }
              live.set(b.id, { address: b.address, size: b.size })
            }
            const work = (steps: ReadonlyArray<Step>) => (s: Streams.Stream) =>
              Effect.gen(function*() {
                const held: Array<GpuAllocator.Block> = []
                for (const st of steps) {
                  const got = yield* Effect.result(
                    st.scoped
                      ? Effect.acquireRelease(alloc.allocateScoped(st.size, s.id), (b) => Effect.sync(() => live.delete(b.id)))
                      : alloc.allocate(st.size, s.id)
                  )
                  if (got._tag === "Success") {
                    noOverlap(got.success)
                    if (!st.scoped) held.push(got.success)
                  }
                  while (held.length > st.keep) {
                    const b = held.shift()!
                    live.delete(b.id)
                    yield* alloc.free(b)
                  }
                  yield* Effect.yieldNow
                }
              }).pipe(Effect.scoped)
            const fibers = []
            for (const steps of p.streams) {
              // Creating a stream may fail (injected faults): then the work runs on the default one.
              const s = yield* Effect.orElseSucceed(streams.make, () => streams.default)
              fibers.push(yield* streams.fork(s, work(steps)))
            }
            for (let i = 0; i < fibers.length; i++) {
              const after = p.interruptAfter[i]
              if (after !== undefined) {
                for (let k = 0; k < after; k++) yield* Effect.yieldNow
                yield* Fiber.interrupt(fibers[i]!)
              }
            }
            yield* Fiber.joinAll(fibers).pipe(Effect.ignore)
          }).pipe(Effect.scoped, Effect.provide(session)))
          // Invariant violations inside the program are defects; anything else may fail.
          if (Exit.isFailure(exit)) expect(exit.cause.reasons.every((r) => r._tag !== "Die")).toBe(true)
          expect(sim.liveHandles()).toBe(0)
          expect(sim.ledger().physicalBytes).toBe(0)
        }),
        { numRuns: 60 }
      )
    ))
})
