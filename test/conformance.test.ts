/**
 * One conformance suite, run against every allocator stack (each policy over the metered,
 * simulated device): random operation streams checked after every step against a shadow model of
 * what must hold whatever the policy. The gmlake policy runs twice: with its default parts, and
 * with another pool put under it (Note [Replaceable parts]), which must change nothing it owes.
 */
import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import type { Allocator } from "../src/domain/Allocator.ts"
import { policyNames } from "../src/domain/Allocator.ts"
import type { DriverPort } from "../src/domain/DriverPort.ts"
import { InvalidBlockError, OutOfMemoryError } from "../src/domain/Errors.ts"
import { makeStitcher } from "../src/domain/policies/gmlake/Parts.ts"
import { ChunkPool } from "../src/domain/policies/gmlake/Pool.ts"
import { makeAllocator } from "../src/domain/policies/Policies.ts"
import type { BlockId } from "../src/domain/Units.ts"
import { MeteredPort } from "../src/layers/MeteredPort.ts"
import { emptyLedger, SimDriver } from "../src/layers/sim/SimDriver.ts"

type Op =
  | { readonly kind: "malloc"; readonly size: number; readonly stream: number }
  | { readonly kind: "free"; readonly pick: number; readonly deferred: boolean }
  | { readonly kind: "complete"; readonly pick: number }
  | { readonly kind: "emptyCache" }

const MiB = 1024 * 1024
const size = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 1, max: MiB }) },
  { weight: 3, arbitrary: fc.integer({ min: MiB + 1, max: 24 * MiB }) },
  { weight: 2, arbitrary: fc.integer({ min: 24 * MiB, max: 300 * MiB }) }
)
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant("malloc" as const), size, stream: fc.integer({ min: 0, max: 2 }) }) },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant("free" as const), pick: fc.nat(), deferred: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("complete" as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.constant({ kind: "emptyCache" as const }) }
)
const capacity = fc.oneof(fc.constant(80 * 1024 * MiB), fc.integer({ min: 32, max: 2048 }).map((m) => m * MiB))

interface Shadow {
  readonly address: number
  readonly size: number
  readonly stream: number
}

/** Checks every invariant that must hold between two operations. */
const checkInvariants = (
  a: Allocator,
  sim: SimDriver,
  port: MeteredPort,
  live: ReadonlyMap<BlockId, Shadow>,
  pending: ReadonlyMap<BlockId, Shadow>
) => {
  // Live blocks (and blocks freed but still guarded by events) never overlap in virtual memory,
  // and no physical byte is reachable from two of them, through any alias.
  const extents = [...live.values(), ...pending.values()].sort((x, y) => x.address - y.address)
  for (let i = 1; i < extents.length; i++) {
    expect(extents[i - 1]!.address + extents[i - 1]!.size).toBeLessThanOrEqual(extents[i]!.address)
  }
  const physical: Array<[number, number, number]> = []
  for (const e of extents) {
    // translate throws if any byte is unmapped or has no access.
    for (const p of sim.translate(e.address, e.size)) physical.push([p.chunk, p.offset, p.offset + p.bytes])
  }
  physical.sort((x, y) => x[0] - y[0] || x[1] - y[1])
  for (let i = 1; i < physical.length; i++) {
    if (physical[i]![0] === physical[i - 1]![0]) expect(physical[i - 1]![2]).toBeLessThanOrEqual(physical[i]![1])
  }
  // Reserved covers what is live, and the policy's accounting agrees with the driver's.
  let requested = 0
  for (const e of extents) requested += e.size
  expect(a.reserved()).toBeGreaterThanOrEqual(requested)
  expect(a.reserved()).toBe(port.reserved)
  expect(port.peakReserved).toBeGreaterThanOrEqual(port.reserved)
  expect(sim.ledger().physicalBytes).toBe(port.reserved)
}

const pick = <K, V>(m: ReadonlyMap<K, V>, n: number): K | undefined => {
  if (m.size === 0) return undefined
  let i = n % m.size
  for (const k of m.keys()) if (i-- === 0) return k
  return undefined
}

type Make = (port: DriverPort) => Allocator

/** A pool that counts the chunks entering and leaving it: another pool under the same policy. */
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

/** Every allocator stack: each policy with its defaults, and gmlake built over another pool. */
const stacks: ReadonlyArray<readonly [string, Make]> = [
  ...policyNames.map((p): readonly [string, Make] => [p, (port) => makeAllocator(p, port)]),
  ["gmlake over a counting pool", (port) =>
    makeAllocator("gmlake", port, { gmlakeParts: { pool: () => new CountingPool(), stitcher: makeStitcher } })]
]

/** Runs ops; returns the successful requests, in order, for the replay check. */
const runOps = (make: Make, cap: number, ops: ReadonlyArray<Op>) => {
  const sim = new SimDriver({ capacity: cap })
  const port = new MeteredPort(sim)
  const a = make(port)
  const live = new Map<BlockId, Shadow>()
  const pending = new Map<BlockId, Shadow>()
  for (const o of ops) {
    switch (o.kind) {
      case "malloc": {
        try {
          const b = a.malloc(o.size, o.stream)
          expect(live.has(b) || pending.has(b)).toBe(false)
          expect(a.size(b)).toBe(o.size)
          live.set(b, { address: a.address(b), size: o.size, stream: o.stream })
        } catch (e) {
          expect(e).toBeInstanceOf(OutOfMemoryError)
          const oom = e as OutOfMemoryError
          expect(oom.requested).toBe(o.size)
          expect(oom.capacity).toBe(cap)
          expect(oom.reserved).toBe(a.reserved())
          expect(oom.message).toContain("out of memory")
        }
        break
      }
      case "free": {
        const b = pick(live, o.pick)
        if (b === undefined) break
        const s = live.get(b)!
        a.free(b, o.deferred)
        live.delete(b)
        if (o.deferred) pending.set(b, s)
        // A second free is a typed error and changes nothing.
        const before = a.reserved()
        expect(() => a.free(b)).toThrow(InvalidBlockError)
        expect(a.reserved()).toBe(before)
        break
      }
      case "complete": {
        const b = pick(pending, o.pick)
        if (b === undefined) break
        a.complete(b)
        pending.delete(b)
        break
      }
      case "emptyCache":
        a.emptyCache()
        break
    }
    checkInvariants(a, sim, port, live, pending)
  }
  return { a, sim, port, live, pending }
}

describe.each(stacks)("conformance: %s", (_name, make) => {
  it("keeps every invariant on random operation streams", () => {
    fc.assert(
      fc.property(capacity, fc.array(op, { minLength: 1, maxLength: 80 }), (cap, ops) => {
        const { a, sim, live, pending } = runOps(make, cap, ops)
        // Frees return the pool to a state where the same requests succeed again.
        for (const b of pending.keys()) a.complete(b)
        for (const b of live.keys()) a.free(b)
        // (Checked where the device is not the binding constraint: a different order of the same
        // requests may pack differently, and a full device may then legitimately refuse one.)
        const again: Array<BlockId> = []
        const total = [...live.values()].reduce((n, s) => n + s.size, 0)
        if (total <= cap / 4) for (const s of live.values()) again.push(a.malloc(s.size, s.stream))
        for (const b of again) a.free(b)
        // Everything freed and the cache emptied: the device holds nothing.
        a.emptyCache()
        expect(sim.ledger()).toEqual(emptyLedger)
        expect(a.reserved()).toBe(0)
      }),
      { numRuns: 60 }
    )
  })

  it("after an out-of-memory error, stays consistent and serves a request that fits", () => {
    fc.assert(
      fc.property(fc.integer({ min: 16, max: 512 }), fc.integer({ min: 1, max: 64 }), (capMiB, reqMiB) => {
        const cap = capMiB * MiB
        const sim = new SimDriver({ capacity: cap })
        const port = new MeteredPort(sim)
        const a = make(port)
        const blocks: Array<BlockId> = []
        let oom: OutOfMemoryError | undefined
        for (let i = 0; i < 1000 && oom === undefined; i++) {
          try {
            blocks.push(a.malloc(reqMiB * MiB - 100, 0))
          } catch (e) {
            expect(e).toBeInstanceOf(OutOfMemoryError)
            oom = e as OutOfMemoryError
          }
        }
        expect(oom).toBeDefined()
        expect(oom!.reserved).toBeLessThanOrEqual(cap)
        expect(oom!.largestFreeBlock).toBeLessThan(reqMiB * MiB - 100 + 1)
        if (blocks.length > 0) {
          // Free one block: a smaller request must succeed now.
          a.free(blocks.pop()!)
          // Half the freed size, unless that would move the request to another pool (requests of
          // at most 1 MiB go to the PyTorch baselines' small pool, which needs a fresh page).
          const half = Math.floor((reqMiB * MiB - 100) / 2)
          const b = a.malloc(half > MiB ? half : reqMiB * MiB - 100, 0)
          a.free(b)
        }
        for (const b of blocks) a.free(b)
        a.emptyCache()
        expect(sim.liveHandles()).toBe(0)
      }),
      { numRuns: 40 }
    )
  })

  it("rejects bad requests with typed errors and no state change", () => {
    const sim = new SimDriver()
    const a = make(new MeteredPort(sim))
    for (const bad of [0, -1, 1.5, Number.NaN]) expect(() => a.malloc(bad, 0)).toThrow()
    expect(() => a.free(12345 as BlockId)).toThrow(InvalidBlockError)
    expect(() => a.address(12345 as BlockId)).toThrow(InvalidBlockError)
    expect(sim.liveHandles()).toBe(0)
  })
})
