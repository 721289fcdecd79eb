/**
 * Sessions on the simulated device: scoped allocations, streams as fibers, and the guarantee that
 * closing a session (normally, on failure, on interruption) leaves no live handle.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Layer } from "effect"
import { policyNames } from "../../src/domain/Allocator.ts"
import { makeAllocator } from "../../src/domain/policies/Policies.ts"
import { SimDriver } from "../../src/layers/sim/SimDriver.ts"
import { layerSimWith } from "../../src/layers/sim/SimDriverLayer.ts"
import * as GpuAllocator from "../../src/services/Allocator.ts"
import { Driver } from "../../src/services/Driver.ts"
import * as Streams from "../../src/services/Streams.ts"
import * as Vmm from "../../src/services/Vmm.ts"

const MiB = 1024 * 1024

const session = (sim: SimDriver, policy: (typeof policyNames)[number] = "gmlake") =>
  Layer.mergeAll(GpuAllocator.layer((port) => makeAllocator(policy, port, {}, port)), Streams.layer, Vmm.layer).pipe(
    Layer.provideMerge(layerSimWith(sim))
  )

describe("sessions", () => {
  it.effect.each(policyNames)("frees scoped allocations when their scope closes (%s)", (policy) =>
    Effect.gen(function*() {
      const sim = new SimDriver()
      yield* Effect.gen(function*() {
        const alloc = yield* GpuAllocator.GpuAllocator
        yield* Effect.scoped(Effect.gen(function*() {
          const a = yield* alloc.allocateScoped(3 * MiB)
          const b = yield* alloc.allocateScoped(100)
          expect(a.address).not.toBe(b.address)
          expect((yield* alloc.stats).liveBlocks).toBe(2)
          // Freed by hand first: the scope must not free it again.
          yield* alloc.free(b)
        }))
        const stats = yield* alloc.stats
        expect(stats.liveBlocks).toBe(0)
        expect(stats.frees).toBe(2)
        expect(stats.reservedPeak).toBeGreaterThanOrEqual(3 * MiB)
        // A double free is a typed error.
        const c = yield* alloc.allocate(10)
        yield* alloc.free(c)
        const e = yield* Effect.flip(alloc.free(c))
        expect(e._tag).toBe("InvalidBlockError")
      }).pipe(Effect.provide(session(sim, policy)))
      expect(sim.liveHandles()).toBe(0)
    }))

  it.effect("interrupting stream fibers mid-work leaves nothing alive", () =>
    Effect.gen(function*() {
      const sim = new SimDriver()
      const started = yield* Deferred.make<void>()
      const exit = yield* Effect.gen(function*() {
        const streams = yield* Streams.Streams
        const alloc = yield* GpuAllocator.GpuAllocator
        const driver = yield* Driver
        const work = (s: Streams.Stream) =>
          Effect.gen(function*() {
            for (let i = 0; ; i++) {
              const blk = yield* alloc.allocateScoped((i % 7 + 1) * MiB + 512, s.id)
              yield* driver.write(blk.address, new Uint8Array([s.id, i & 255]))
              if (i === 20) yield* Deferred.succeed(started, undefined)
              yield* Effect.yieldNow
            }
          }).pipe(Effect.scoped)
        const s1 = yield* streams.make
        const s2 = yield* streams.make
        const f1 = yield* streams.fork(s1, work)
        const f2 = yield* streams.fork(s2, work)
        yield* Deferred.await(started)
        expect((yield* driver.live).streams).toBe(2)
        yield* Fiber.interrupt(f1)
        yield* Fiber.interrupt(f2)
        return "interrupted"
      }).pipe(Effect.scoped, Effect.provide(session(sim)), Effect.exit)
      expect(Exit.isSuccess(exit)).toBe(true)
      expect(sim.liveHandles()).toBe(0)
      expect(sim.ledger().physicalBytes).toBe(0)
    }))

  it.effect("a failure inside the session releases every handle, scoped VMM handles included", () =>
    Effect.gen(function*() {
      const sim = new SimDriver()
      const exit = yield* Effect.gen(function*() {
        const vmm = yield* Vmm.Vmm
        const alloc = yield* GpuAllocator.GpuAllocator
        const c = yield* vmm.chunk(2 * MiB)
        const r = yield* vmm.range(4 * MiB)
        yield* vmm.map(r.address, c)
        yield* alloc.allocate(50 * MiB) // never freed by hand
        return yield* Effect.fail("boom" as const)
      }).pipe(Effect.scoped, Effect.provide(session(sim)), Effect.exit)
      expect(Exit.isFailure(exit)).toBe(true)
      expect(sim.liveHandles()).toBe(0)
    }))

  it.effect("reports out of memory as a typed error with the figures a person needs", () =>
    Effect.gen(function*() {
      const sim = new SimDriver({ capacity: 64 * MiB })
      yield* Effect.gen(function*() {
        const alloc = yield* GpuAllocator.GpuAllocator
        yield* alloc.allocate(40 * MiB)
        const e = yield* Effect.flip(alloc.allocate(40 * MiB))
        expect(e._tag).toBe("OutOfMemoryError")
        if (e._tag === "OutOfMemoryError") {
          expect(e.requested).toBe(40 * MiB)
          expect(e.capacity).toBe(64 * MiB)
          expect(e.message).toMatch(/requested 40\.00 MiB .* reserved .* largest free block/)
        }
        expect((yield* alloc.stats).ooms).toBe(1)
      }).pipe(Effect.provide(session(sim)))
      expect(sim.liveHandles()).toBe(0)
    }))
})
