/**
 * The gmlake allocator's parts are services: another pool goes under the same policy through its
 * layer, without touching the policy (Note [Replaceable parts]).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { ChunkPool } from "../../src/domain/policies/gmlake/Pool.ts"
import { SimDriver } from "../../src/layers/sim/SimDriver.ts"
import { layerSimWith } from "../../src/layers/sim/SimDriverLayer.ts"
import * as GpuAllocator from "../../src/services/Allocator.ts"
import * as Gmlake from "../../src/services/GmlakeAllocator.ts"
import * as Pool from "../../src/services/Pool.ts"
import * as Stitcher from "../../src/services/Stitcher.ts"

const MiB = 1024 * 1024

/** A pool that counts the chunks that enter and leave it. */
class CountingPool extends ChunkPool {
  created = 0
  released = 0
  override add(handle: number, seg: number, start: number, size: number): number {
    this.created++
    return super.add(handle, seg, start, size)
  }
  override remove(c: number): void {
    this.released++
    super.remove(c)
  }
}

interface Run {
  readonly reservedPeak: number
  readonly counters: unknown
}

/**
 * A fixed program of allocations and frees on two streams, tight enough on a 160 MiB device to
 * need pressure relief; after every step, the counting pool (if any) must hold exactly the chunks
 * and bytes the device holds.
 */
const program = (sim: SimDriver, pools: ReadonlyArray<CountingPool>) =>
  Effect.gen(function*() {
    const alloc = yield* GpuAllocator.GpuAllocator
    const live: Array<GpuAllocator.Block> = []
    let x = 12345
    const next = () => (x = (x * 1103515245 + 12345) % 2 ** 31)
    for (let i = 0; i < 600; i++) {
      if (live.length > 0 && next() % 3 === 0) {
        const [b] = live.splice(next() % live.length, 1)
        yield* alloc.free(b!)
      } else {
        const size = next() % 4 === 0 ? 1 + (next() % (40 * MiB)) : 1 + (next() % (3 * MiB))
        const r = yield* Effect.result(alloc.allocate(size, next() % 2))
        if (r._tag === "Success") live.push(r.success)
      }
      const pool = pools[0]
      if (pool !== undefined) {
        const l = sim.ledger()
        expect(pool.created - pool.released).toBe(l.chunks)
        expect(pool.reservedBytes).toBe(l.physicalBytes)
      }
    }
    const stats = yield* alloc.stats
    return { reservedPeak: stats.reservedPeak, counters: alloc.core.counters() } satisfies Run
  })

const runWith = (sim: SimDriver, parts: Layer.Layer<Pool.Pool | Stitcher.Stitcher>, pools: ReadonlyArray<CountingPool>) =>
  program(sim, pools).pipe(
    Effect.provide(Gmlake.layerFromParts().pipe(Layer.provide(parts), Layer.provideMerge(layerSimWith(sim))))
  )

describe("replaceable parts", () => {
  it.effect("a counting pool provided through its layer runs under the same policy with the same figures", () =>
    Effect.gen(function*() {
      const pools: Array<CountingPool> = []
      const counting = Layer.succeed(Pool.Pool, Pool.Pool.of({
        make: () => {
          const p = new CountingPool()
          pools.push(p)
          return p
        }
      }))
      const simA = new SimDriver({ capacity: 160 * MiB })
      const swapped = yield* runWith(simA, Layer.mergeAll(counting, Stitcher.layer), pools)
      const simB = new SimDriver({ capacity: 160 * MiB })
      const plain = yield* runWith(simB, Layer.mergeAll(Pool.layer, Stitcher.layer), [])
      // the policy used the pool it was given, for every chunk
      expect(pools.length).toBe(1)
      const pool = pools[0]!
      expect(pool.created).toBeGreaterThan(0)
      expect(pool.released).toBeGreaterThan(0)
      // the pool changes nothing the policy decides
      expect(swapped.reservedPeak).toBe(plain.reservedPeak)
      expect(swapped.counters).toEqual(plain.counters)
      // and the session gave everything back
      expect(simA.liveHandles()).toBe(0)
    }))

  it.effect("the default layer is the parts' default layers", () =>
    Effect.gen(function*() {
      const sim = new SimDriver({ capacity: 160 * MiB })
      const viaParts = yield* runWith(sim, Layer.mergeAll(Pool.layer, Stitcher.layer), [])
      const sim2 = new SimDriver({ capacity: 160 * MiB })
      const viaDefault = yield* program(sim2, []).pipe(Effect.provide(Gmlake.layer().pipe(Layer.provideMerge(layerSimWith(sim2)))))
      expect(viaDefault.reservedPeak).toBe(viaParts.reservedPeak)
      expect(viaDefault.counters).toEqual(viaParts.counters)
    }))
})
