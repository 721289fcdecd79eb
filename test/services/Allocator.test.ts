/**
 * The allocator service's entry points take only what they handed out (Note [Checking blocks]):
 * a wrong value is a typed error that changes nothing.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { policyNames } from "../../src/domain/Allocator.ts"
import { makeAllocator } from "../../src/domain/policies/Policies.ts"
import { emptyLedger, SimDriver } from "../../src/layers/sim/SimDriver.ts"
import { layerSimWith } from "../../src/layers/sim/SimDriverLayer.ts"
import * as GpuAllocator from "../../src/services/Allocator.ts"

const MiB = 1024 * 1024

const layerFor = (sim: SimDriver, policy: (typeof policyNames)[number]) =>
  GpuAllocator.layer((port) => makeAllocator(policy, port, {}, port)).pipe(Layer.provide(layerSimWith(sim)))

/** The allocator of another session, built and kept open for the test. */
const otherBlock = (policy: (typeof policyNames)[number]) =>
  Effect.gen(function*() {
    const other = yield* Layer.build(layerFor(new SimDriver(), policy))
    const alloc = Context.get(other, GpuAllocator.GpuAllocator)
    return yield* alloc.allocate(MiB)
  })

describe.each(policyNames)("allocator service entry points: %s", (policy) => {
  it.effect("refuses bad blocks with a typed error and frees nothing", () =>
    Effect.gen(function*() {
      const sim = new SimDriver()
      yield* Effect.gen(function*() {
        const alloc = yield* GpuAllocator.GpuAllocator
        const block = yield* alloc.allocate(MiB)
        const foreign = yield* otherBlock(policy)
        expect(foreign.id).toBe(block.id) // same id, same address: only the owner tells them apart
        const bad: ReadonlyArray<readonly [unknown, RegExp]> = [
          [null, /^free: expected a block, got null$/],
          [undefined, /^free: expected a block, got undefined$/],
          [42, /^free: expected a block, got a value of type number$/],
          [foreign, /^free of block \d+: not a block of this allocator/],
          [{ ...block, address: 12345 }, /^free of block \d+: its address is 12345, but the block was handed out with address/],
          [{ ...block, size: 1 }, /its size is 1/],
          [{ ...block, stream: 3 }, /its stream is 3/],
          [{ id: block.id, address: block.address, size: block.size, stream: block.stream }, /not a block of this allocator/]
        ]
        for (const [value, message] of bad) {
          for (const deferred of [false, true]) {
            const e = yield* Effect.flip(alloc.free(value as GpuAllocator.Block, deferred))
            expect(e._tag).toBe("InvalidBlockError")
            expect(e.message).toMatch(message)
          }
          const c = yield* Effect.flip(alloc.complete(value as GpuAllocator.Block))
          expect(c._tag).toBe("InvalidBlockError")
          expect(c.message).toMatch(/^complete/)
          expect((yield* alloc.stats).liveBlocks).toBe(1)
        }
        // A copy of the block is the block.
        yield* alloc.free({ ...block })
        expect((yield* alloc.stats).liveBlocks).toBe(0)
        const again = yield* Effect.flip(alloc.free(block))
        expect(again.message).toMatch(/^free of block \d+: /)
        expect(again.message).not.toMatch(/size of block/)
      }).pipe(Effect.scoped, Effect.provide(layerFor(sim, policy)))
      expect(sim.ledger()).toEqual(emptyLedger)
    }))

  it.effect("a deferred free is completed by the block, once", () =>
    Effect.gen(function*() {
      const sim = new SimDriver()
      yield* Effect.gen(function*() {
        const alloc = yield* GpuAllocator.GpuAllocator
        const block = yield* alloc.allocate(3 * MiB, 0)
        yield* alloc.free(block, true)
        const e = yield* Effect.flip(alloc.complete({ ...block, address: 1 as GpuAllocator.Block["address"] }))
        expect(e.message).toMatch(/its address is 1/)
        yield* alloc.complete(block)
        expect((yield* Effect.flip(alloc.complete(block)))._tag).toBe("InvalidBlockError")
      }).pipe(Effect.provide(layerFor(sim, policy)))
      expect(sim.ledger()).toEqual(emptyLedger)
    }))

  it.effect("a scoped block freed through a copy is not freed again at scope close", () =>
    Effect.gen(function*() {
      const sim = new SimDriver()
      yield* Effect.gen(function*() {
        const alloc = yield* GpuAllocator.GpuAllocator
        yield* Effect.scoped(Effect.gen(function*() {
          const a = yield* alloc.allocateScoped(MiB)
          yield* alloc.free({ ...a })
          yield* alloc.allocateScoped(MiB) // may reuse the id
        }))
        const stats = yield* alloc.stats
        expect(stats.frees).toBe(2)
        expect(stats.liveBlocks).toBe(0)
      }).pipe(Effect.provide(layerFor(sim, policy)))
      expect(sim.ledger()).toEqual(emptyLedger)
    }))

  it.effect("refuses bad sizes and streams with typed errors", () =>
    Effect.gen(function*() {
      const alloc = yield* GpuAllocator.GpuAllocator
      for (const size of [-1, 0, 0.5, Number.NaN, 2 ** 53, null]) {
        expect((yield* Effect.flip(alloc.allocate(size as number)))._tag).toBe("InvalidRequestError")
      }
      for (const stream of [-1, 70000, 0.5]) {
        expect((yield* Effect.flip(alloc.allocate(MiB, stream)))._tag).toBe("InvalidRequestError")
      }
      // In range, but not a stream of the session: refused before an event would be recorded on it.
      const notStream = yield* Effect.flip(alloc.allocate(MiB, 7))
      expect(notStream.message).toMatch(/stream 7 is not a stream of this session/)
      const oom = yield* Effect.flip(alloc.allocate(1e12))
      expect(oom._tag).toBe("OutOfMemoryError")
      expect((yield* alloc.stats).reservedPeak).toBe(0)
    }).pipe(Effect.provide(layerFor(new SimDriver(), policy))))
})
