/**
 * Multi-device sessions (Note [Multi-device sessions]): one driver and allocator per device under
 * its own scope; per-device accounting; peer stitching as an option; everything given back when
 * the session closes, whatever is still allocated or borrowed; on simulated systems and on the
 * fake libcuda with several devices.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Scope } from "effect"
import * as fc from "fast-check"
import { policyNames } from "../../src/domain/Allocator.ts"
import { InvalidRequestError } from "../../src/domain/Errors.ts"
import { makeAllocator } from "../../src/domain/policies/Policies.ts"
import { emptyLedger, SimDriver } from "../../src/layers/sim/SimDriver.ts"
import { SimSystem } from "../../src/layers/sim/SimSystem.ts"
import { layerSimWith } from "../../src/layers/sim/SimDriverLayer.ts"
import { GpuAllocator, type Block } from "../../src/services/Allocator.ts"
import * as Devices from "../../src/layers/Devices.ts"
import { Driver } from "../../src/services/Driver.ts"
import { fake, freshLibrary, libraries } from "../cuda/fixture.ts"

const MiB = 1024 * 1024
const G = 2 * MiB

const pattern = (n: number, salt: number) => {
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i++) out[i] = (i * 31 + salt) & 255
  return out
}
const sameBytes = (a: Uint8Array, b: Uint8Array) => a.length === b.length && Buffer.from(a).equals(Buffer.from(b))

describe("multi-device sessions (simulated)", () => {
  it.effect("one allocator per device; a device's allocations never show in another's accounting", () =>
    Effect.gen(function*() {
      const sys = new SimSystem({ devices: 3, device: { capacity: 64 * MiB } })
      yield* Effect.gen(function*() {
        const devices = yield* Devices.Devices
        expect(devices.sessions).toHaveLength(3)
        expect(devices.sessions.map((s) => s.driver.info.ordinal)).toEqual([0, 1, 2])
        // Device 1 allocates through the services of its own context.
        const b = yield* Effect.gen(function*() {
          const alloc = yield* GpuAllocator
          const driver = yield* Driver
          expect(driver.info.ordinal).toBe(1)
          const blk = yield* alloc.allocate(5 * MiB)
          yield* driver.write(blk.address, pattern(4096, 1))
          return blk
        }).pipe(Devices.onDevice(1))
        const stats = yield* devices.stats
        expect(stats.map((s) => s.allocator.allocations)).toEqual([0, 1, 0])
        expect(stats.map((s) => s.allocator.requestedCurrent)).toEqual([0, 5 * MiB, 0])
        expect(stats[0]!.allocator.reservedCurrent).toBe(0)
        expect(stats[2]!.allocator.reservedCurrent).toBe(0)
        expect(stats.every((s) => s.peer === undefined)).toBe(true) // peer stitching is opt-in
        expect(sys.device(0).ledger()).toEqual(emptyLedger)
        expect(sys.device(1).ledger().physicalBytes).toBeGreaterThanOrEqual(5 * MiB)
        // Device 0 cannot see device 1's block: another address space of accounting.
        const d0 = yield* devices.device(0)
        const e = yield* Effect.flip(d0.allocator.free(b))
        expect(e._tag).toBe("InvalidBlockError")
        const d1 = yield* devices.device(1)
        yield* d1.allocator.free(b)
        expect((yield* Effect.flip(devices.device(3)))._tag).toBe("InvalidRequestError")
        expect(yield* Effect.flip(Effect.void.pipe(Devices.onDevice(7)))).toBeInstanceOf(InvalidRequestError)
        // Left allocated on purpose: closing the session gives it back.
        yield* d0.allocator.allocate(3 * MiB)
      }).pipe(Effect.provide(Devices.layerSim(sys)))
      expect(sys.liveHandles()).toBe(0)
      expect(sys.ledger().total).toEqual(emptyLedger)
    }))

  it.effect("peer stitching: a short device borrows a peer's memory; counted physically on the lender", () =>
    Effect.gen(function*() {
      const sys = new SimSystem({ devices: [{ capacity: 8 * MiB }, { capacity: 32 * MiB }] })
      const failures: Array<ReadonlyArray<string>> = []
      yield* Effect.gen(function*() {
        const devices = yield* Devices.Devices
        const [d0] = devices.sessions
        const local = yield* d0!.allocator.allocate(6 * MiB)
        const big = yield* d0!.allocator.allocate(12 * MiB) // device 0 has 2 MiB left
        expect(big.id).toBeLessThan(0)
        const data = pattern(12 * MiB, 9)
        yield* d0!.driver.write(big.address, data)
        expect(sameBytes(yield* d0!.driver.read(big.address, 12 * MiB), data)).toBe(true)
        const stats = yield* devices.stats
        expect(stats[0]!.allocator.requestedCurrent).toBe(18 * MiB)
        expect(stats[0]!.allocator.reservedCurrent).toBe(6 * MiB)
        expect(stats[0]!.peer).toMatchObject({ borrowedBlocks: 1, borrowedBytes: 12 * MiB, borrowedFrom: [0, 12 * MiB] })
        expect(stats[1]!.allocator.requestedCurrent).toBe(0)
        expect(stats[1]!.allocator.reservedCurrent).toBe(0)
        expect(stats[1]!.peer!.lentBytes).toBe(12 * MiB)
        expect(stats[1]!.memory.free).toBe(20 * MiB)
        // Each device's registry owns its part: the chunk the lender's, range and mapping the borrower's.
        expect((yield* devices.sessions[1]!.driver.live).chunks).toBe(1)
        expect((yield* d0!.driver.live).ranges).toBeGreaterThanOrEqual(2)
        yield* d0!.allocator.free(local)
        // The borrowed block stays allocated: closing the session gives it back first.
      }).pipe(Effect.provide(Devices.layerSim(sys, { peerStitching: {}, onRelease: (f) => failures.push(f) })))
      expect(failures).toEqual([[]])
      expect(sys.ledger().total).toEqual(emptyLedger)
    }))

  it.effect("a failure inside the session closes every device's scope", () =>
    Effect.gen(function*() {
      const sims = [new SimDriver({ capacity: 8 * MiB }), new SimDriver({ capacity: 8 * MiB })]
      const exit = yield* Effect.gen(function*() {
        const devices = yield* Devices.Devices
        yield* devices.sessions[0]!.allocator.allocate(MiB)
        yield* devices.sessions[1]!.allocator.allocate(3 * MiB)
        return yield* Effect.fail("boom")
      }).pipe(
        Effect.provide(Devices.layer({
          count: 2,
          driver: (i) => layerSimWith(sims[i]!),
          peerAccess: Effect.succeed(() => true),
          allocator: (port) => makeAllocator("expandable", port),
          peerStitching: {}
        })),
        Effect.exit
      )
      expect(Exit.isFailure(exit)).toBe(true)
      expect(sims.map((s) => s.liveHandles())).toEqual([0, 0])
    }))

  it.effect("refuses an empty session and devices of different granularities, leaving nothing open", () =>
    Effect.gen(function*() {
      const e = yield* Effect.flip(Effect.scoped(Layer.build(Devices.layer({
        count: 0,
        driver: () => layerSimWith(new SimDriver()),
        peerAccess: Effect.succeed(() => true),
        allocator: () => {
          throw new Error("unused")
        }
      }))))
      expect(e).toBeInstanceOf(InvalidRequestError)
      const sims = [new SimDriver({ granularity: G }), new SimDriver({ granularity: 2 * G })]
      const e2 = yield* Effect.flip(Effect.scoped(Layer.build(Devices.layer({
        count: 2,
        driver: (i) => layerSimWith(sims[i]!),
        peerAccess: Effect.succeed(() => true),
        allocator: () => {
          throw new Error("unused")
        },
        peerStitching: {}
      }))))
      expect(e2).toBeInstanceOf(InvalidRequestError)
      expect(sims.map((s) => s.liveHandles())).toEqual([0, 0])
    }))
})

// --- random sessions --------------------------------------------------------------------------

type Op =
  | { readonly kind: "allocate"; readonly dev: number; readonly size: number }
  | { readonly kind: "free"; readonly pick: number }
  | { readonly kind: "empty"; readonly dev: number }

const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant("allocate" as const),
      dev: fc.nat(3),
      size: fc.oneof(fc.integer({ min: 1, max: 256 * 1024 }), fc.integer({ min: 1, max: 16 * MiB }))
    })
  },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("free" as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("empty" as const), dev: fc.nat(3) }) }
)

describe("multi-device sessions: random operations on 2 to 4 simulated devices", () => {
  it("per-device accounting, readable borrowed blocks, no shared byte, every ledger empty at close", async () => {
    let borrowed = 0
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 1, max: 12 }), { minLength: 2, maxLength: 4 }),
        fc.constantFrom(...policyNames),
        fc.boolean(),
        fc.array(op, { maxLength: 40, size: "max" }),
        fc.boolean(),
        (capacities, policy, peer, ops, closeEarly) =>
          Effect.runPromise(Effect.gen(function*() {
            const n = capacities.length
            const sys = new SimSystem({ devices: capacities.map((c) => ({ capacity: c * G })) })
            const failures: Array<string> = []
            const scope = yield* Scope.make()
            const ctx = yield* Layer.buildWithScope(
              Devices.layerSim(sys, {
                policy,
                ...(peer ? { peerStitching: {} } : {}),
                onRelease: (f) => failures.push(...f)
              }),
              scope
            )
            const devices = Context.get(ctx, Devices.Devices)
            const live: Array<{ readonly dev: number; readonly block: Block; readonly tag: Uint8Array | undefined }> = []
            for (const o of ops) {
              if (o.kind === "allocate") {
                if (o.dev >= n) continue
                const s = devices.sessions[o.dev]!
                const r = yield* Effect.result(s.allocator.allocate(o.size))
                if (r._tag === "Failure") {
                  expect(r.failure._tag).toBe("OutOfMemoryError")
                  continue
                }
                const block = r.success
                if (block.id < 0) borrowed++
                // Classic allocations (the caching baseline) have no simulated contents.
                const tag = policy !== "caching" || block.id < 0 ? pattern(Math.min(o.size, 512), live.length) : undefined
                if (tag !== undefined) yield* s.driver.write(block.address, tag)
                live.push({ dev: o.dev, block, tag })
              } else if (o.kind === "free") {
                if (live.length === 0) continue
                const [b] = live.splice(o.pick % live.length, 1)
                const s = devices.sessions[b!.dev]!
                if (b!.tag !== undefined) {
                  expect(sameBytes(yield* s.driver.read(b!.block.address, b!.tag.length), b!.tag)).toBe(true)
                }
                yield* s.allocator.free(b!.block)
              } else if (o.dev < n) {
                yield* devices.sessions[o.dev]!.allocator.emptyCache
              }
              // Each device's statistics reflect its own blocks only.
              const stats = yield* devices.stats
              for (let d = 0; d < n; d++) {
                const mine = live.filter((b) => b.dev === d)
                expect(stats[d]!.allocator.liveBlocks).toBe(mine.length)
                expect(stats[d]!.allocator.requestedCurrent).toBe(mine.reduce((k, b) => k + b.block.size, 0))
                expect(sys.device(d).ledger().physicalBytes).toBe(
                  stats[d]!.allocator.reservedCurrent + (stats[d]!.peer?.lentBytes ?? 0)
                )
              }
              // No physical byte reachable from two live blocks, across all devices.
              const seen = new Map<number, Array<readonly [number, number]>>()
              for (const b of live) {
                for (const p of sys.device(b.dev).translate(b.block.address, b.block.size)) {
                  const list = seen.get(p.chunk) ?? []
                  for (const [x, y] of list) expect(p.offset >= y || p.offset + p.bytes <= x).toBe(true)
                  list.push([p.offset, p.offset + p.bytes])
                  seen.set(p.chunk, list)
                }
              }
            }
            if (!closeEarly) {
              for (const b of live) yield* devices.sessions[b.dev]!.allocator.free(b.block)
              for (const s of devices.sessions) yield* s.allocator.emptyCache
              for (let d = 0; d < n; d++) expect(sys.device(d).ledger()).toEqual(emptyLedger)
            }
            yield* Scope.close(scope, Exit.void)
            expect(failures).toEqual([])
            expect(sys.ledger().total).toEqual(emptyLedger)
          }))
      ),
      { numRuns: 120 }
    )
    expect(borrowed).toBeGreaterThan(0)
  })
})

// --- CUDA, on the fake libcuda with several devices --------------------------------------------

describe("multi-device sessions (fake libcuda)", () => {
  it("borrows from a peer GPU through koffi, and leaves the driver as it found it", async () => {
    await freshLibrary({ devices: 2, capacity: 64 * MiB })
    await Effect.runPromise(Effect.gen(function*() {
      const devices = yield* Devices.Devices
      expect(devices.sessions.map((s) => s.driver.info.name)).toEqual(["Fake CUDA Device 0", "Fake CUDA Device 1"])
      expect(devices.canAccessPeer(0, 1)).toBe(true)
      const [d0, d1] = devices.sessions
      const own = yield* d1!.allocator.allocate(10 * MiB) // device 1's own work
      const fill = yield* d0!.allocator.allocate(60 * MiB)
      const big = yield* d0!.allocator.allocate(20 * MiB) // device 0 is full: borrowed from device 1
      expect(big.id).toBeLessThan(0)
      expect(fake.deviceUsed(1)).toBeGreaterThanOrEqual(30 * MiB)
      const data = pattern(20 * MiB, 3)
      yield* d0!.driver.write(big.address, data)
      expect(sameBytes(yield* d0!.driver.read(big.address, 20 * MiB), data)).toBe(true)
      // Device 1's context has no access to device 0's range.
      expect((yield* Effect.flip(d1!.driver.read(big.address, 16)))._tag).toBe("DriverError")
      const stats = yield* devices.stats
      expect(stats[0]!.peer!.borrowedFrom).toEqual([0, 20 * MiB])
      expect(stats[1]!.peer!.lentBytes).toBe(20 * MiB)
      expect(stats[1]!.allocator.requestedCurrent).toBe(10 * MiB)
      yield* d0!.allocator.free(fill)
      yield* d1!.allocator.free(own)
    }).pipe(Effect.provide(Devices.layerCuda({ library: libraries.full, peerStitching: {} }))))
    const l = fake.ledger()
    expect([l.chunks, l.ranges, l.mappings, l.allocations, l.streams, l.events, l.contextRefs, l.usedBytes]).toEqual([
      0, 0, 0, 0, 0, 0, 0, 0
    ])
  })

  it("never borrows over a pair the driver denies", async () => {
    await freshLibrary({ devices: 2, capacity: 16 * MiB })
    fake.setPeerAccess(0, 1, false)
    const e = await Effect.runPromise(Effect.gen(function*() {
      const devices = yield* Devices.Devices
      expect(devices.canAccessPeer(0, 1)).toBe(false)
      expect(devices.canAccessPeer(1, 0)).toBe(true)
      return yield* Effect.flip(devices.sessions[0]!.allocator.allocate(20 * MiB))
    }).pipe(Effect.provide(Devices.layerCuda({ library: libraries.full, ordinals: [0, 1], peerStitching: {} }))))
    expect(e._tag).toBe("OutOfMemoryError")
    expect(fake.ledger().contextRefs).toBe(0)
    expect(fake.ledger().usedBytes).toBe(0)
  })
})
