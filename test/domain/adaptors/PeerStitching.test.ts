/**
 * Peer stitching (Note [Peer stitching]) on simulated systems of two to four devices: borrowed
 * blocks map peers' chunks with access for the borrower, are readable and writable through its
 * range, count on the lender physically and on the borrower as allocations; every failure is
 * typed; and once everything is freed and the caches emptied every device's ledger is empty.
 */
import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { type Allocator, type PolicyName, policyNames } from "../../../src/domain/Allocator.ts"
import { DriverError, InvalidBlockError, InvalidRequestError, OutOfMemoryError } from "../../../src/domain/Errors.ts"
import { PeerGroup, type PeerStitchingAllocator, type PeerStitchingConfig } from "../../../src/domain/adaptors/PeerStitching.ts"
import { makeAllocator } from "../../../src/domain/policies/Policies.ts"
import { StatsAllocator } from "../../../src/domain/adaptors/Stats.ts"
import type { BlockId } from "../../../src/domain/Units.ts"
import { emptyLedger } from "../../../src/layers/sim/SimDriver.ts"
import { SimSystem, type SimSystemOptions } from "../../../src/layers/sim/SimSystem.ts"

const MiB = 1024 * 1024
const G = 2 * MiB

interface Rig {
  readonly sys: SimSystem
  readonly group: PeerGroup
  readonly peers: ReadonlyArray<PeerStitchingAllocator>
  readonly allocs: ReadonlyArray<StatsAllocator>
}

/** A system, a group over it, and each device's allocator wrapped for peer stitching and statistics. */
const rig = (
  options: SimSystemOptions,
  config: PeerStitchingConfig = {},
  policy: (ordinal: number) => PolicyName = () => "gmlake"
): Rig => {
  const sys = new SimSystem(options)
  const group = new PeerGroup(
    sys.devices.map((d, ordinal) => ({ ordinal, port: d, streams: d })),
    (from, to) => sys.canAccessPeer(from, to),
    config
  )
  const peers = sys.devices.map((d, i) => group.wrap(i, makeAllocator(policy(i), d, {}, d)))
  return { sys, group, peers, allocs: peers.map((p) => new StatsAllocator(p)) }
}

const pattern = (n: number, salt: number) => {
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i++) out[i] = (i * 13 + salt) & 255
  return out
}

/** Byte arrays equal (fast on megabytes, unlike a deep equality). */
const sameBytes = (a: Uint8Array, b: Uint8Array) => a.length === b.length && Buffer.from(a).equals(Buffer.from(b))

const expectLedgersEmpty = (sys: SimSystem) => {
  for (const d of sys.devices) {
    expect(d.ledger(), `device ${d.ordinal}`).toEqual(emptyLedger)
  }
}

describe("peer stitching", () => {
  it("borrows a peer's chunks when the device is out of memory, readable and writable through its range", () => {
    const { sys, group, peers, allocs } = rig({ devices: [{ capacity: 8 * MiB }, { capacity: 64 * MiB }] })
    const [d0, d1] = sys.devices as [typeof sys.devices[0], typeof sys.devices[0]]
    const a = allocs[0]!
    const local = a.malloc(6 * MiB, 0)
    expect(local).toBeGreaterThanOrEqual(0)
    const b = a.malloc(10 * MiB + 100, 0) // more than device 0 has left
    expect(b).toBeLessThan(0)
    expect(peers[0]!.isBorrowed(b)).toBe(true)
    const va = a.address(b)
    // Every byte of it is device 1's memory, mapped in device 0's range with access for device 0.
    const pieces = d0.translate(va, 10 * MiB + 100)
    expect(pieces.reduce((n, p) => n + p.bytes, 0)).toBe(10 * MiB + 100)
    expect(() => d1.translate(va, 1)).toThrow(DriverError)
    const data = pattern(10 * MiB + 100, 5)
    d0.write(va, data)
    expect(sameBytes(d0.read(va, data.length), data)).toBe(true)
    // Counted on the lender physically, on the borrower as an allocation.
    expect(d1.ledger().physicalBytes).toBe(12 * MiB)
    expect(d1.ledger().chunks).toBe(1)
    expect(d0.ledger().ranges).toBeGreaterThanOrEqual(2)
    expect(a.reserved()).toBe(6 * MiB) // the borrower's own memory only
    expect(a.stats().requestedCurrent).toBe(16 * MiB + 100)
    expect(allocs[1]!.stats().requestedCurrent).toBe(0)
    expect(peers[0]!.peerCounters()).toMatchObject({
      borrowedBlocks: 1,
      borrowedBytes: 12 * MiB,
      borrowedFrom: [0, 12 * MiB],
      lentBytes: 0,
      borrows: 1,
      borrowedChunks: 1
    })
    expect(peers[1]!.peerCounters().lentBytes).toBe(12 * MiB)
    expect(group.lentBytes(1)).toBe(12 * MiB)
    // Freed: cached, mapped, on the lender still; the same stream takes it back with no driver call.
    a.free(b)
    expect(peers[0]!.peerCounters()).toMatchObject({ borrowedBlocks: 0, borrowedBytes: 12 * MiB, cachedBorrowedBytes: 12 * MiB })
    expect(() => a.free(b)).toThrow(InvalidBlockError)
    expect(() => a.address(b)).toThrow(InvalidBlockError)
    const calls = d0.liveHandles() + d1.liveHandles()
    const again = a.malloc(9 * MiB, 0)
    expect(again).toBe(b)
    expect(a.size(again)).toBe(9 * MiB)
    expect(d0.liveHandles() + d1.liveHandles()).toBe(calls)
    expect(peers[0]!.peerCounters().cacheHits).toBe(1)
    expect(sameBytes(d0.read(va, 16), data.subarray(0, 16))).toBe(true) // the same memory
    a.free(again)
    a.free(local)
    a.emptyCache()
    expect(peers[0]!.peerCounters()).toMatchObject({ borrowedBytes: 0, cachedBorrowedBytes: 0, givenBack: 1 })
    allocs[1]!.emptyCache()
    expectLedgersEmpty(sys)
  })

  it("spans several lenders in one range, most free memory first, keeping each lender's headroom", () => {
    const { sys, peers, allocs } = rig(
      { devices: [{ capacity: 4 * MiB }, { capacity: 10 * MiB }, { capacity: 16 * MiB }] },
      { lenderHeadroom: 2 * MiB }
    )
    const a = allocs[0]!
    const b = a.malloc(20 * MiB, 0) // device 2 can give 14 MiB, device 1 8 MiB
    expect(b).toBeLessThan(0)
    expect(peers[0]!.peerCounters()).toMatchObject({ borrowedFrom: [0, 6 * MiB, 14 * MiB], borrowedChunks: 2 })
    expect(sys.device(0).translate(a.address(b), 20 * MiB)).toHaveLength(2)
    // The headroom holds: nothing more can be borrowed.
    expect(() => a.malloc(6 * MiB, 0)).toThrow(OutOfMemoryError)
    a.free(b)
    a.emptyCache()
    expectLedgersEmpty(sys)
  })

  it("never borrows over a pair without peer access; out of memory is the original error, nothing left", () => {
    const { sys, allocs } = rig({ devices: [{ capacity: 4 * MiB }, { capacity: 64 * MiB }], peerAccess: { deny: [[0, 1]] } })
    const e = (() => {
      try {
        allocs[0]!.malloc(8 * MiB, 0)
      } catch (e) {
        return e
      }
    })()
    expect(e).toBeInstanceOf(OutOfMemoryError)
    expect((e as OutOfMemoryError).capacity).toBe(4 * MiB)
    expect(allocs[0]!.stats().ooms).toBe(1)
    // Device 1 may still borrow from device 0.
    const fill = allocs[1]!.malloc(62 * MiB, 0)
    const b = allocs[1]!.malloc(4 * MiB, 0)
    expect(b).toBeLessThan(0)
    allocs[1]!.free(b)
    allocs[1]!.free(fill)
    for (const a of allocs) a.emptyCache()
    expectLedgersEmpty(sys)
  })

  it("a lender short of memory takes back what sits idle in a borrower's cache", () => {
    const { sys, peers, allocs } = rig({ devices: [{ capacity: 4 * MiB }, { capacity: 16 * MiB }] })
    const b = allocs[0]!.malloc(12 * MiB, 0)
    allocs[0]!.free(b) // cached on device 0, holding 12 MiB of device 1
    expect(sys.device(1).memGetInfo().free).toBe(4 * MiB)
    const own = allocs[1]!.malloc(10 * MiB, 0) // device 1's own work comes first
    expect(own).toBeGreaterThanOrEqual(0)
    expect(peers[0]!.peerCounters()).toMatchObject({ borrowedBytes: 0, givenBack: 1 })
    allocs[1]!.free(own)
    for (const a of allocs) a.emptyCache()
    expectLedgersEmpty(sys)
  })

  it("gives back at once without a cache; honours maxBorrowed; waits for complete after a deferred free", () => {
    const { sys, peers, allocs } = rig(
      { devices: [{ capacity: 2 * MiB }, { capacity: 32 * MiB }] },
      { cache: false, maxBorrowed: 8 * MiB }
    )
    const a = allocs[0]!
    const b = a.malloc(6 * MiB, 0)
    expect(() => a.malloc(4 * MiB, 0)).toThrow(OutOfMemoryError) // would pass maxBorrowed
    a.free(b, true) // deferred: still held
    expect(peers[0]!.peerCounters().borrowedBytes).toBe(6 * MiB)
    expect(() => a.complete(-99 as BlockId)).toThrow(InvalidBlockError)
    a.complete(b)
    expect(peers[0]!.peerCounters().borrowedBytes).toBe(0) // no cache: given back
    expect(sys.device(1).ledger().physicalBytes).toBe(0)
    expect(() => a.complete(b)).toThrow(InvalidBlockError)
    a.emptyCache()
    expectLedgersEmpty(sys)
  })

  it("reuses a cached borrowed block only on its own stream, and only when it fits within reuseLimit", () => {
    const { sys, peers, allocs } = rig({ devices: [{ capacity: 2 * MiB }, { capacity: 64 * MiB }] }, { reuseLimit: 2 })
    const s1 = sys.device(0).streamCreate()
    const a = allocs[0]!
    const b = a.malloc(8 * MiB, 0)
    a.free(b)
    const other = a.malloc(8 * MiB, s1) // another stream: a new borrowed block
    expect(other).not.toBe(b)
    const small = a.malloc(2 * MiB, 0) // 8 MiB > 2 x 2 MiB: not reused
    expect(small).not.toBe(b)
    a.free(small)
    a.free(other)
    const fit = a.malloc(5 * MiB, 0) // 8 MiB <= 2 x 6 MiB: reused
    expect(fit).toBe(b)
    expect(peers[0]!.peerCounters().cacheHits).toBe(1)
    a.free(fit)
    a.emptyCache()
    sys.device(0).streamDestroy(s1)
    expectLedgersEmpty(sys)
  })

  it("rolls back a borrow the driver refuses, and reports the typed error", () => {
    const { sys, allocs } = rig({ devices: [{ capacity: 2 * MiB }, { capacity: 64 * MiB }] })
    sys.setPeerAccess(0, 1, true)
    // The group believes access is allowed, the device refuses it at cuMemSetAccess.
    const liar = new PeerGroup(
      sys.devices.map((d, ordinal) => ({ ordinal, port: d })),
      () => true
    )
    sys.setPeerAccess(0, 1, false)
    const a = liar.wrap(0, makeAllocator("expandable", sys.device(0)))
    const e = (() => {
      try {
        a.malloc(8 * MiB, 0)
      } catch (e) {
        return e
      }
    })()
    expect(e).toBeInstanceOf(DriverError)
    expect((e as DriverError).reason).toBe("NotSupported")
    allocs[0]!.emptyCache()
    a.emptyCache()
    expectLedgersEmpty(sys)
  })

  it("validates the group", () => {
    const sys = new SimSystem({ devices: 2 })
    const ds = sys.devices.map((d, ordinal) => ({ ordinal, port: d }))
    expect(() => new PeerGroup([], () => true)).toThrow(InvalidRequestError)
    expect(() => new PeerGroup([ds[1]!], () => true)).toThrow(InvalidRequestError)
    expect(() => new PeerGroup(ds, () => true, { reuseLimit: 0.5 })).toThrow(InvalidRequestError)
    const g = new PeerGroup(ds, () => true)
    g.wrap(0, makeAllocator("gmlake", sys.device(0)))
    expect(() => g.wrap(0, makeAllocator("gmlake", sys.device(0)))).toThrow(InvalidRequestError)
    expect(() => g.wrap(2, makeAllocator("gmlake", sys.device(0)))).toThrow(InvalidRequestError)
  })
})

// --- random programs over 2 to 4 devices ------------------------------------------------------

type Op =
  | { readonly kind: "malloc"; readonly dev: number; readonly size: number; readonly stream: number }
  | { readonly kind: "free"; readonly pick: number; readonly deferred: boolean }
  | { readonly kind: "complete"; readonly pick: number }
  | { readonly kind: "empty"; readonly dev: number }
  | { readonly kind: "tick" }

const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant("malloc" as const),
      dev: fc.nat(3),
      size: fc.oneof(
        fc.integer({ min: 1, max: 512 * 1024 }),
        fc.integer({ min: 1, max: 20 * MiB }),
        fc.constantFrom(6 * MiB, 10 * MiB, 14 * MiB) // repeated sizes: cached borrowed blocks get reused
      ),
      stream: fc.nat(1)
    })
  },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant("free" as const), pick: fc.nat(), deferred: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("complete" as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("empty" as const), dev: fc.nat(3) }) },
  { weight: 1, arbitrary: fc.constant({ kind: "tick" as const }) }
)

const setup = fc.record({
  capacities: fc.array(fc.integer({ min: 1, max: 14 }), { minLength: 2, maxLength: 4 }),
  policies: fc.array(fc.constantFrom(...policyNames), { minLength: 4, maxLength: 4 }),
  denied: fc.array(fc.tuple(fc.nat(3), fc.nat(3)), { maxLength: 3 }),
  config: fc.record({
    cache: fc.boolean(),
    lenderHeadroom: fc.constantFrom(0, G),
    maxBorrowed: fc.constantFrom(Number.POSITIVE_INFINITY, 16 * MiB)
  })
})

type Setup = typeof setup extends fc.Arbitrary<infer T> ? T : never

interface Live {
  readonly dev: number
  readonly id: BlockId
  readonly size: number
  /** Bytes written at its start, checked before it is freed (none on classic allocations). */
  readonly tag: Uint8Array | undefined
}

/** Every live block's physical pieces, across all devices: no byte may be reachable from two. */
const checkNoSharedBytes = (sys: SimSystem, allocs: ReadonlyArray<Allocator>, live: ReadonlyArray<Live>) => {
  const byChunk = new Map<number, Array<readonly [number, number]>>()
  for (const b of live) {
    for (const p of sys.device(b.dev).translate(allocs[b.dev]!.address(b.id), b.size)) {
      let list = byChunk.get(p.chunk)
      if (list === undefined) byChunk.set(p.chunk, (list = []))
      list.push([p.offset, p.offset + p.bytes])
    }
  }
  for (const [chunk, list] of byChunk) {
    list.sort((x, y) => x[0] - y[0])
    for (let i = 1; i < list.length; i++) {
      if (list[i]![0] < list[i - 1]![1]) throw new Error(`chunk ${chunk}: bytes reachable from two live blocks`)
    }
  }
}

/**
 * Runs `ops` on a fresh rig and checks the invariants after every step; returns the rig, after
 * everything was freed and every cache emptied.
 */
/** What the random programs exercised, summed over runs (checked to be non-trivial). */
const seen = { borrows: 0, cacheHits: 0, givenBack: 0, multiLender: 0, ooms: 0 }

const runProgram = (
  s: Setup,
  ops: ReadonlyArray<Op>,
  faultRate = 0
) => {
  const n = s.capacities.length
  const { sys, group, peers, allocs } = rig(
    {
      devices: s.capacities.map((c, i) => ({ capacity: c * G, faultRate, seed: i + 1 })),
      peerAccess: { deny: s.denied.filter(([a, b]) => a < n && b < n) }
    },
    s.config,
    (i) => s.policies[i]!
  )
  const streams = sys.devices.map((d) => [0, d.streamCreate()])
  const live: Array<Live> = []
  const guarded: Array<Live> = []
  const check = () => {
    for (let d = 0; d < n; d++) {
      const mine = live.filter((b) => b.dev === d)
      const st = allocs[d]!.stats()
      expect(st.liveBlocks).toBe(mine.length)
      expect(st.requestedCurrent).toBe(mine.reduce((k, b) => k + b.size, 0))
      const pc = peers[d]!.peerCounters()
      expect(pc.borrowedBlocks).toBe(mine.filter((b) => b.id < 0).length)
      // Physical memory in use on a device = its allocator's own + what peers borrowed from it.
      expect(sys.device(d).ledger().physicalBytes).toBe(allocs[d]!.reserved() + group.lentBytes(d))
    }
    const borrowed = peers.reduce((k, p) => k + p.peerCounters().borrowedBytes, 0)
    const lent = peers.reduce((k, p) => k + p.peerCounters().lentBytes, 0)
    expect(borrowed).toBe(lent)
    checkNoSharedBytes(sys, allocs, live)
  }
  const typed = (e: unknown) => {
    if (e instanceof OutOfMemoryError) return
    if (faultRate > 0 && e instanceof DriverError) return
    throw e
  }
  for (const o of ops) {
    if (o.kind === "malloc") {
      if (o.dev >= n) continue
      try {
        const id = allocs[o.dev]!.malloc(o.size, streams[o.dev]![o.stream]!)
        const address = allocs[o.dev]!.address(id)
        // Classic allocations (the caching baseline) have no simulated contents.
        const tagged = s.policies[o.dev] !== "caching" || id < 0
        const tag = tagged ? pattern(Math.min(o.size, 256), id & 255) : undefined
        if (tag !== undefined) sys.device(o.dev).write(address, tag)
        live.push({ dev: o.dev, id, size: o.size, tag })
      } catch (e) {
        typed(e)
      }
    } else if (o.kind === "free") {
      if (live.length === 0) continue
      const [b] = live.splice(o.pick % live.length, 1)
      if (b!.tag !== undefined) {
        expect(sys.device(b!.dev).read(allocs[b!.dev]!.address(b!.id), b!.tag.length)).toEqual(b!.tag)
      }
      allocs[b!.dev]!.free(b!.id, o.deferred)
      if (o.deferred) guarded.push(b!)
    } else if (o.kind === "complete") {
      if (guarded.length === 0) continue
      const [b] = guarded.splice(o.pick % guarded.length, 1)
      allocs[b!.dev]!.complete(b!.id)
    } else if (o.kind === "empty") {
      if (o.dev >= n) continue
      try {
        allocs[o.dev]!.emptyCache()
      } catch (e) {
        typed(e)
      }
    } else {
      for (const d of sys.devices) d.tick(4)
    }
    check()
  }
  for (const [d, p] of peers.entries()) {
    const c = p.peerCounters()
    seen.borrows += c.borrows
    seen.cacheHits += c.cacheHits
    seen.givenBack += c.givenBack
    if (c.borrowedChunks > c.borrows) seen.multiLender++
    seen.ooms += allocs[d]!.stats().ooms
  }
  for (const b of live) allocs[b.dev]!.free(b.id)
  for (const b of guarded) allocs[b.dev]!.complete(b.id)
  for (const a of allocs) a.emptyCache()
  sys.devices.forEach((d, i) => d.streamDestroy(streams[i]![1]!))
  expectLedgersEmpty(sys)
  for (const p of peers) expect(p.peerCounters()).toMatchObject({ borrowedBlocks: 0, borrowedBytes: 0, lentBytes: 0 })
}

describe("peer stitching: random programs on 2 to 4 devices", () => {
  it("keeps each device's accounting its own, shares no byte, and leaves every ledger empty", () => {
    fc.assert(
      fc.property(setup, fc.array(op, { minLength: 1, maxLength: 60, size: "max" }), (s, ops) => runProgram(s, ops)),
      { numRuns: 200 }
    )
    expect(seen.borrows).toBeGreaterThan(50)
    expect(seen.cacheHits).toBeGreaterThan(0)
    expect(seen.givenBack).toBeGreaterThan(5)
    expect(seen.multiLender).toBeGreaterThan(0)
    expect(seen.ooms).toBeGreaterThan(0)
  })

  it("driver calls failing at random: every failure is typed, nothing is left", () => {
    fc.assert(
      fc.property(setup, fc.array(op, { minLength: 1, maxLength: 60, size: "max" }), (s, ops) => runProgram(s, ops, 0.05)),
      { numRuns: 150 }
    )
  })
})
