/**
 * Cross-stream adoption's events (Note [Cross-stream adoption]) are session handles like every
 * other (Note [Handle ownership]): `emptyCache` destroys those in flight, and closing the session
 * leaves none on the device, whatever was still pending.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { makeAllocator } from "../../src/domain/policies/Policies.ts"
import { SimDriver } from "../../src/layers/sim/SimDriver.ts"
import { layerSimWith } from "../../src/layers/sim/SimDriverLayer.ts"
import * as GpuAllocator from "../../src/services/Allocator.ts"
import { Driver } from "../../src/services/Driver.ts"
import * as Streams from "../../src/services/Streams.ts"

const MiB = 1024 * 1024

describe("adoption's events", () => {
  for (const emptyFirst of [true, false]) {
    it.live(`are destroyed by ${emptyFirst ? "emptyCache" : "closing the session"}`, () =>
      Effect.gen(function*() {
        const sim = new SimDriver({ eventLatency: 1000 }) // nothing completes on its own
        const session = Layer.mergeAll(
          GpuAllocator.layer((port) => makeAllocator("gmlake", port, {}, port)),
          Streams.layer
        ).pipe(Layer.provideMerge(layerSimWith(sim)))
        yield* Effect.gen(function*() {
          const alloc = yield* GpuAllocator.GpuAllocator
          const driver = yield* Driver
          const streams = yield* Streams.Streams
          const s1 = yield* streams.make
          const a = yield* alloc.allocate(40 * MiB, 0)
          const b = yield* alloc.allocate(40 * MiB, s1.id)
          yield* alloc.free(a)
          yield* alloc.free(b)
          expect((yield* driver.live).events).toBeGreaterThan(0)
          if (emptyFirst) {
            yield* alloc.emptyCache
            expect((yield* driver.live).events).toBe(0)
            expect(sim.ledger().events).toBe(0)
          }
        }).pipe(Effect.scoped, Effect.provide(session))
        expect(sim.ledger().events).toBe(0)
        expect(sim.liveHandles()).toBe(0)
      }))
  }
})
