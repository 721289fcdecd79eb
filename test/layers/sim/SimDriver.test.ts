import { describe, expect, it } from "@effect/vitest"
import { DriverError } from "../../../src/domain/Errors.ts"
import type { Address, ChunkHandle } from "../../../src/domain/Units.ts"
import { policyNames } from "../../../src/domain/Allocator.ts"
import { makeAllocator } from "../../../src/domain/policies/Policies.ts"
import { maxSimCapacity, SimDriver } from "../../../src/layers/sim/SimDriver.ts"

const MiB = 1024 * 1024
const G = 2 * MiB

const failsWith = (f: () => unknown, call: string, reason: string) => {
  try {
    f()
  } catch (e) {
    expect(e).toBeInstanceOf(DriverError)
    expect((e as DriverError).call).toBe(call)
    expect((e as DriverError).reason).toBe(reason)
    return e as DriverError
  }
  throw new Error(`expected ${call} to fail with ${reason}`)
}

describe("SimDriver", () => {
  it("creates, maps, sets access, unmaps and releases, keeping a ledger", () => {
    const d = new SimDriver({ capacity: 64 * MiB })
    const h = d.memCreate(4 * MiB)
    const va = d.addressReserve(8 * MiB)
    expect(va % G).toBe(0)
    expect(va).toBeGreaterThan(2 ** 40)
    d.memMap(va, 4 * MiB, h)
    d.setAccess(va, 4 * MiB)
    expect(d.ledger()).toEqual({ chunks: 1, ranges: 1, mappings: 1, allocations: 0, streams: 0, events: 0, physicalBytes: 4 * MiB })
    expect(d.memGetInfo()).toEqual({ free: 60 * MiB, total: 64 * MiB })
    expect(d.translate(va + 100, 1000)).toEqual([{ chunk: h, offset: 100, bytes: 1000 }])
    d.memUnmap(va, 4 * MiB)
    d.addressFree(va, 8 * MiB)
    d.memRelease(h)
    expect(d.liveHandles()).toBe(0)
    expect(d.memGetInfo().free).toBe(64 * MiB)
  })

  it("rejects sizes that are not multiples of the granularity", () => {
    const d = new SimDriver()
    failsWith(() => d.memCreate(G + 512), "cuMemCreate", "InvalidValue")
    failsWith(() => d.addressReserve(1000), "cuMemAddressReserve", "InvalidValue")
    failsWith(() => d.memCreate(0), "cuMemCreate", "InvalidValue")
    const h = d.memCreate(G)
    const va = d.addressReserve(4 * G)
    failsWith(() => d.memMap((va + 4096) as Address, G, h), "cuMemMap", "InvalidValue")
    expect(d.liveHandles()).toBe(2)
  })

  it("rejects mapping over a mapping, and a size other than the chunk's", () => {
    const d = new SimDriver()
    const a = d.memCreate(2 * G)
    const b = d.memCreate(G)
    const va = d.addressReserve(4 * G)
    d.memMap(va, 2 * G, a)
    failsWith(() => d.memMap((va + G) as Address, G, b), "cuMemMap", "InvalidValue")
    failsWith(() => d.memMap((va + 2 * G) as Address, 2 * G, b), "cuMemMap", "InvalidValue")
    failsWith(() => d.memMap((va + 3 * G) as Address, 2 * G, a), "cuMemMap", "InvalidValue") // past the range
    d.memMap((va + 2 * G) as Address, G, b)
    expect(d.ledger().mappings).toBe(2)
  })

  it("unmaps whole adjacent mappings only", () => {
    const d = new SimDriver()
    const a = d.memCreate(2 * G)
    const b = d.memCreate(G)
    const va = d.addressReserve(4 * G)
    d.memMap(va, 2 * G, a)
    d.memMap((va + 2 * G) as Address, G, b)
    failsWith(() => d.memUnmap(va, G), "cuMemUnmap", "InvalidValue") // part of a mapping
    failsWith(() => d.memUnmap((va + G) as Address, 2 * G), "cuMemUnmap", "InvalidValue")
    failsWith(() => d.addressFree(va, 4 * G), "cuMemAddressFree", "InvalidValue") // still mapped
    d.memUnmap(va, 3 * G) // both at once
    failsWith(() => d.addressFree(va, 2 * G), "cuMemAddressFree", "InvalidValue") // wrong size
    d.addressFree(va, 4 * G)
    expect(d.ledger().mappings).toBe(0)
  })

  it("refuses over-capacity with OutOfMemory, and frees a released chunk at its last unmap", () => {
    const d = new SimDriver({ capacity: 4 * G })
    const a = d.memCreate(3 * G)
    const e = failsWith(() => d.memCreate(2 * G), "cuMemCreate", "OutOfMemory")
    expect(e.code).toBe(2)
    expect(e.message).toContain("cuMemCreate failed: OutOfMemory")
    failsWith(() => d.memAlloc(2 * G), "cuMemAlloc", "OutOfMemory")
    const va = d.addressReserve(3 * G)
    d.memMap(va, 3 * G, a)
    d.memRelease(a) // still mapped: memory stays
    expect(d.memGetInfo().free).toBe(G)
    failsWith(() => d.memMap(va, 3 * G, a), "cuMemMap", "InvalidValue") // released handle
    d.memUnmap(va, 3 * G)
    expect(d.memGetInfo().free).toBe(4 * G)
    expect(d.ledger().chunks).toBe(0)
  })

  it("requires access before translation, and stitched aliases show the same bytes", () => {
    const d = new SimDriver()
    const h1 = d.memCreate(G)
    const h2 = d.memCreate(G)
    const p = d.addressReserve(2 * G)
    d.memMap(p, G, h1)
    d.memMap((p + G) as Address, G, h2)
    expect(() => d.translate(p, 10)).toThrow(DriverError)
    d.setAccess(p, 2 * G)
    // A stitched view maps the same chunks in the other order.
    const s = d.addressReserve(2 * G)
    d.memMap(s, G, h2)
    d.memMap((s + G) as Address, G, h1)
    d.setAccess(s, 2 * G)
    const bytes = Uint8Array.from({ length: 4096 }, (_, i) => (i * 7) & 255)
    d.write(s + G - 2048, bytes) // spans both chunks
    expect(d.read(p, 2048)).toEqual(bytes.subarray(2048))
    expect(d.read(p + 2 * G - 2048, 2048)).toEqual(bytes.subarray(0, 2048))
  })

  it("reuses freed virtual space and keeps classic allocations apart", () => {
    const d = new SimDriver()
    const a = d.addressReserve(4 * G)
    d.addressFree(a, 4 * G)
    expect(d.addressReserve(2 * G)).toBe(a)
    const m = d.memAlloc(1000)
    expect(d.translate(m + 10, 100)).toEqual([{ chunk: -m, offset: 10, bytes: 100 }])
    d.memFree(m)
    failsWith(() => d.memFree(m), "cuMemFree", "InvalidValue")
    failsWith(() => d.memRelease(99 as ChunkHandle), "cuMemRelease", "InvalidValue")
  })

  it("injects faults at the configured rate, deterministically per seed", () => {
    const run = (seed: number) => {
      const d = new SimDriver({ faultRate: 0.3, seed })
      let failed = 0
      for (let i = 0; i < 200; i++) {
        try {
          d.memRelease(d.memCreate(G))
        } catch (e) {
          expect((e as DriverError).detail).toBe("injected fault")
          failed++
        }
      }
      expect(d.faults).toBe(failed)
      expect(d.liveHandles()).toBe(0)
      return failed
    }
    expect(run(7)).toBe(run(7))
    expect(run(7)).toBeGreaterThan(30)
    expect(run(7)).toBeLessThan(90)
  })

  it("completes events after their latency, or at a stream synchronize", () => {
    const d = new SimDriver({ eventLatency: 3 })
    const s = d.streamCreate()
    const e = d.eventRecord(s)
    const e0 = d.eventRecord(0)
    expect(d.eventQuery(e)).toBe(false)
    d.tick(2)
    expect(d.eventQuery(e)).toBe(false)
    d.tick()
    expect(d.eventQuery(e)).toBe(true)
    const f = d.eventRecord(s)
    d.streamSynchronize(s)
    expect(d.eventQuery(f)).toBe(true)
    expect(d.ledger().streams).toBe(1)
    expect(d.ledger().events).toBe(3)
    for (const x of [e, e0, f]) d.eventDestroy(x)
    d.streamDestroy(s)
    failsWith(() => d.streamDestroy(s), "cuStreamDestroy", "InvalidValue")
    failsWith(() => d.eventRecord(s), "cuEventRecord", "InvalidValue")
    expect(d.liveHandles()).toBe(0)
  })

  it("records an existing event again: it completes with its new stream's work, its earlier record forgotten", () => {
    const d = new SimDriver({ eventLatency: 3 })
    const s = d.streamCreate()
    const e = d.eventRecord(0)
    d.tick(3)
    expect(d.eventQuery(e)).toBe(true)
    d.eventRerecord(e, s)
    expect(d.eventQuery(e)).toBe(false)
    d.tick(3)
    expect(d.eventQuery(e)).toBe(true)
    d.eventRerecord(e, s)
    d.streamSynchronize(s)
    expect(d.eventQuery(e)).toBe(true)
    expect(d.ledger().events).toBe(1)
    failsWith(() => d.eventRerecord(e, 99), "cuEventRecord", "InvalidValue")
    d.eventDestroy(e)
    failsWith(() => d.eventRerecord(e, s), "cuEventRecord", "InvalidValue")
    d.streamDestroy(s)
    expect(d.liveHandles()).toBe(0)
  })

  it.each([1, 3, 16, 4096, MiB, 3 * MiB, 2.5 * MiB, 0, -G, Number.NaN])("refuses granularity %s where the device is built", (granularity) => {
    const e = failsWith(() => new SimDriver({ granularity }), "SimDriver", "InvalidValue")
    expect(e.detail).toMatch(/granularity must be the driver's, 2.00 MiB \(2097152 B\), or a multiple of it/)
  })

  it("takes the driver's granularity and its multiples", () => {
    for (const granularity of [G, 2 * G, 16 * G]) expect(new SimDriver({ granularity }).granularity).toBe(granularity)
  })

  it.each([-1, 1.5, Number.NaN, maxSimCapacity + G, 2 ** 53])("refuses capacity %s where the device is built", (capacity) => {
    const e = failsWith(() => new SimDriver({ capacity }), "SimDriver", "InvalidValue")
    expect(e.detail).toMatch(/capacity/)
  })

  it.each([-0.1, 1.5, Number.NaN])("refuses fault rate %s", (faultRate) => {
    failsWith(() => new SimDriver({ faultRate }), "SimDriver", "InvalidValue")
  })

  // Every allocation failed above the old 32 TiB address window: the window now holds the
  // reservations of the largest device for every policy, on several streams.
  it.each(policyNames)("serves allocations on the largest simulated device (%s)", (policy) => {
    const d = new SimDriver({ capacity: maxSimCapacity })
    const a = makeAllocator(policy, d)
    const blocks = []
    for (let stream = 0; stream < 4; stream++) {
      blocks.push(a.malloc(MiB, stream), a.malloc(1024 * G, stream))
    }
    for (const b of blocks) a.free(b)
    a.emptyCache()
    expect(d.liveHandles()).toBe(0)
  })

  it("serves a system of the largest devices", () => {
    const devices = SimDriver.system(Array.from({ length: 16 }, () => ({ capacity: maxSimCapacity })))
    for (const d of devices) {
      const a = makeAllocator("expandable", d)
      for (let stream = 0; stream < 2; stream++) a.free(a.malloc(1024 * G, stream))
    }
  })
})
