/**
 * The expandable-segments baseline: replaying the recorded traces reproduces PyTorch's peak
 * reserved memory in `expandable_segments:True` mode; focused tests of each rule of Note
 * [Expandable segment rules].
 */
import { describe, expect, it } from "@effect/vitest"
import { Result } from "effect"
import * as fc from "fast-check"
import { readFileSync } from "node:fs"
import type { DriverPort } from "../../../src/domain/DriverPort.ts"
import { DriverError, InvalidBlockError, InvalidRequestError, OutOfMemoryError } from "../../../src/domain/Errors.ts"
import { ExpandableAllocator, type ExpandableConfig } from "../../../src/domain/policies/pytorch/Expandable.ts"
import { replayTrace } from "../../../src/replay/Replay.ts"
import type { Trace } from "../../../src/trace/Trace.ts"
import { type BlockId, MiB } from "../../../src/domain/Units.ts"
import { MeteredPort } from "../../../src/layers/MeteredPort.ts"
import { SimDriver } from "../../../src/layers/sim/SimDriver.ts"
import { parseTraceBytes } from "../../../src/trace/File.ts"

const traceNames = ["gpt2_fixed", "gpt2_varlen", "llama1b_ckpt_varlen", "llama1b_lora_varlen"] as const

const loadTrace = (name: string): Trace => {
  const file = new URL(`../../../traces/${name}.json.gz`, import.meta.url)
  const r = parseTraceBytes(name, readFileSync(file))
  if (Result.isFailure(r)) throw r.failure
  return r.success
}

/** An allocator over a recording simulated device. */
const setup = (options: { capacity?: number; granularity?: number; config?: Partial<ExpandableConfig> } = {}) => {
  const sim = new SimDriver({ record: true, capacity: options.capacity ?? MiB(80 * 1024), granularity: options.granularity ?? MiB(2) })
  const port = new MeteredPort(sim)
  const a = new ExpandableAllocator(port, options.config)
  const steps = (call: string) => sim.log!.filter((s) => s.call === call)
  return { sim, port, a, steps }
}

describe("expandable: replay of the recorded traces", () => {
  it.each(traceNames)("%s: PyTorch's peak reserved", (name) => {
    const trace = loadTrace(name)
    const anchor = trace.expandable!
    const sim = new SimDriver()
    const port = new MeteredPort(sim)
    const a = new ExpandableAllocator(port)
    const out = replayTrace(trace, a)
    expect(out.failedAllocs).toBe(0)
    expect(out.peakRequested).toBe(anchor.peakRequested)
    expect(Math.abs(port.peakReserved - anchor.peakReserved) / anchor.peakReserved).toBeLessThanOrEqual(0.001)
    expect(port.peakReserved).toBe(anchor.peakReserved)
    // PyTorch counts one device allocation per growth (one map-and-set-access over new pages).
    if (anchor.deviceAllocs !== undefined) expect(port.calls.setAccess).toBe(anchor.deviceAllocs)
    // One segment per pool of the single stream; pages only ever added.
    expect(port.calls.addressReserve).toBe(2)
    expect(port.calls.memUnmap).toBe(0)
    expect(a.reserved()).toBe(port.reserved)
    expect(sim.ledger().physicalBytes).toBe(port.reserved)
  })
})

describe("expandable: pages", () => {
  it("grows by 2 MiB pages in the small pool and 20 MiB pages in the large pool", () => {
    const { a, steps } = setup()
    a.malloc(1, 0)
    a.malloc(MiB(1) + 1, 0)
    expect(steps("addressReserve")).toHaveLength(2)
    expect(steps("memCreate").map((s) => s.a)).toEqual([MiB(2), MiB(20)])
    expect(steps("setAccess").map((s) => s.b)).toEqual([MiB(2), MiB(20)])
    expect(a.reserved()).toBe(MiB(22))
  })

  it("maps only the missing pages, with one set-access over them", () => {
    const { a, steps } = setup()
    const x = a.malloc(MiB(30), 0)
    expect(steps("memCreate")).toHaveLength(2)
    expect(steps("setAccess").map((s) => s.b)).toEqual([MiB(40)])
    // 10 MiB are free at the end of the mapped space; 15 MiB need one more page.
    const y = a.malloc(MiB(15), 0)
    expect(steps("memCreate")).toHaveLength(3)
    expect(steps("setAccess").map((s) => s.b)).toEqual([MiB(40), MiB(20)])
    expect(steps("setAccess")[1]!.a).toBe(a.address(x) + MiB(40))
    expect(a.address(y)).toBe(a.address(x) + MiB(30))
    expect(a.reserved()).toBe(MiB(60))
  })

  it("rounds pages up to the granularity", () => {
    const { a, steps, sim } = setup({ granularity: MiB(6) })
    expect(a.smallPage).toBe(MiB(6))
    expect(a.largePage).toBe(MiB(24))
    const x = a.malloc(1, 0)
    const y = a.malloc(MiB(5), 0)
    expect(steps("memCreate").map((s) => s.a)).toEqual([MiB(6), MiB(24)])
    expect(sim.translate(a.address(x), 1)).toHaveLength(1)
    expect(sim.translate(a.address(y), MiB(5))).toHaveLength(1)
  })

  it("refuses a granularity it cannot round to", () => {
    const sim = new SimDriver()
    for (const granularity of [0, 1.5, -2]) {
      const port = { granularity, capacity: sim.capacity } as unknown as DriverPort
      expect(() => new ExpandableAllocator(port)).toThrow(InvalidRequestError)
    }
  })
})

describe("expandable: splitting and best fit", () => {
  it("splits at 512 B in both pools", () => {
    const { a, steps } = setup()
    const x = a.malloc(MiB(5), 0)
    const y = a.malloc(MiB(15) - 512, 0)
    const z = a.malloc(512, 0)
    const w = a.malloc(MiB(2), 0)
    expect(a.address(y)).toBe(a.address(x) + MiB(5))
    expect(steps("memCreate")).toHaveLength(3) // one large page for x and y; a small page for z; w grows
    expect(a.address(w)).toBe(a.address(y) + MiB(15) - 512)
    expect(a.size(z)).toBe(512)
  })

  it("prefers a block that needs no growth to the free tail before unmapped space", () => {
    const { a } = setup()
    const x = a.malloc(MiB(10), 0) // [0, 10)
    const hole = a.malloc(MiB(8), 0) // [10, 18)
    a.malloc(MiB(20), 0) // [18, 38), growing to 40 MiB: [38, 40) is free, then unmapped
    a.free(hole)
    // Plain best fit would take the 2 MiB tail; it counts as 2 MiB plus the unmapped space.
    const y = a.malloc(MiB(1.5), 0)
    expect(a.address(y)).toBe(a.address(x) + MiB(10))
  })

  it("keeps pools and segments per stream", () => {
    const { a, steps } = setup()
    const x = a.malloc(MiB(4), 0)
    a.free(x)
    a.malloc(MiB(4), 1)
    expect(steps("addressReserve")).toHaveLength(2)
    expect(a.reserved()).toBe(MiB(40))
  })

  it("merges free neighbours", () => {
    const { a } = setup()
    const x = a.malloc(MiB(4), 0)
    const y = a.malloc(MiB(4), 0)
    const z = a.malloc(MiB(4), 0)
    a.free(y)
    a.free(x)
    const w = a.malloc(MiB(8), 0)
    expect(a.address(w)).toBe(a.address(z) - MiB(8))
  })
})

describe("expandable: giving pages back", () => {
  it("emptyCache unmaps only whole free pages, and frees an empty segment's reservation", () => {
    const { a, sim, steps } = setup()
    const x = a.malloc(MiB(25), 0) // pages 0 and 1
    const y = a.malloc(MiB(10), 0) // [25, 35)
    a.free(x)
    a.emptyCache()
    // Page 0 is wholly free; page 1 holds y.
    expect(a.reserved()).toBe(MiB(20))
    expect(steps("memUnmap").map((s) => s.b)).toEqual([MiB(20)])
    expect(sim.translate(a.address(y), MiB(10))).toHaveLength(1)
    expect(a.counters().releasedForPressure).toBe(0)
    a.free(y)
    a.emptyCache()
    expect(sim.liveHandles()).toBe(0)
    expect(sim.ledger().physicalBytes).toBe(0)
    expect(a.reserved()).toBe(0)
  })

  it("refills the lowest unmapped gap first", () => {
    const { a } = setup()
    const x = a.malloc(MiB(20), 0)
    const y = a.malloc(MiB(20), 0)
    expect(a.address(y)).toBe(a.address(x) + MiB(20))
    a.free(x)
    a.emptyCache()
    expect(a.reserved()).toBe(MiB(20))
    const z = a.malloc(MiB(20), 0)
    expect(a.address(z)).toBe(a.address(y) - MiB(20))
  })

  it("under memory pressure, releases cached pages and retries once", () => {
    const { a, sim, port } = setup({ capacity: MiB(60) })
    const x = a.malloc(MiB(40), 0)
    a.free(x)
    const y = a.malloc(MiB(30), 1) // needs 2 pages; only 1 is left until stream 0's go back
    expect(a.size(y)).toBe(MiB(30))
    expect(a.counters().releasedForPressure).toBe(2)
    expect(a.reserved()).toBe(MiB(40))
    expect(port.reserved).toBe(MiB(40))
    expect(sim.ledger().physicalBytes).toBe(MiB(40))
  })

  it("reports out of memory with what it holds, and changes nothing", () => {
    const { a, sim } = setup({ capacity: MiB(60) })
    a.malloc(MiB(50), 0) // 3 pages; [50, 60) stays free but shares a page
    const before = sim.ledger()
    let error: unknown
    try {
      a.malloc(MiB(12), 0)
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(OutOfMemoryError)
    const oom = error as OutOfMemoryError
    expect(oom).toMatchObject({
      requested: MiB(12),
      stream: 0,
      reserved: MiB(60),
      free: MiB(10),
      largestFreeBlock: MiB(10),
      capacity: MiB(60)
    })
    expect(oom.message).toContain("largest free block 10.00 MiB")
    expect(sim.ledger()).toEqual(before)
  })

  it("rolls back a growth the driver refuses for another reason, and passes the error on", () => {
    const sim = new SimDriver()
    const port = new MeteredPort(sim)
    const a = new ExpandableAllocator(port)
    a.malloc(MiB(4), 0)
    const setAccess = port.setAccess.bind(port)
    port.setAccess = () => {
      throw new DriverError({ call: "cuMemSetAccess", reason: "InvalidValue", code: 1, detail: "test" })
    }
    expect(() => a.malloc(MiB(40), 0)).toThrow(DriverError)
    expect(a.reserved()).toBe(MiB(20))
    expect(sim.ledger().physicalBytes).toBe(MiB(20))
    port.setAccess = setAccess
    a.malloc(MiB(40), 0)
    expect(a.reserved()).toBe(MiB(60))
  })

  it("reports a refused reservation as the driver's error, after one retry", () => {
    const sim = new SimDriver()
    const port = new MeteredPort(sim)
    const a = new ExpandableAllocator(port)
    let refusals = 0
    port.addressReserve = () => {
      refusals++
      throw new DriverError({ call: "cuMemAddressReserve", reason: "OutOfMemory", code: 2, detail: "no virtual space left" })
    }
    expect(() => a.malloc(1, 0)).toThrow("cuMemAddressReserve failed")
    expect(refusals).toBe(2)
    expect(sim.liveHandles()).toBe(0)
  })
})

describe("expandable: frees", () => {
  it("refuses a double free, an unknown block and a stale id, changing nothing", () => {
    const { a } = setup()
    const x = a.malloc(MiB(12), 0)
    a.free(x)
    expect(() => a.free(x)).toThrow(InvalidBlockError)
    expect(() => a.free(987654 as BlockId)).toThrow(InvalidBlockError)
    expect(() => a.address(x)).toThrow(InvalidBlockError)
    const y = a.malloc(MiB(12), 0)
    expect(() => a.free(x)).toThrow(InvalidBlockError)
    expect(a.size(y)).toBe(MiB(12))
  })

  it("refuses bad requests", () => {
    const { a, sim } = setup()
    for (const bad of [0, -1, 1.5, Number.NaN]) expect(() => a.malloc(bad, 0)).toThrow(InvalidRequestError)
    expect(() => a.malloc(1, -1)).toThrow(InvalidRequestError)
    expect(sim.liveHandles()).toBe(0)
  })

  it("keeps a deferred free unavailable until it completes", () => {
    const { a } = setup()
    const x = a.malloc(MiB(20), 0)
    a.free(x, true)
    a.malloc(MiB(20), 0)
    expect(a.reserved()).toBe(MiB(40))
    a.complete(x)
    expect(() => a.complete(x)).toThrow(InvalidBlockError)
    a.malloc(MiB(20), 0)
    expect(a.reserved()).toBe(MiB(40))
  })

  it("does not unmap a pending block's pages", () => {
    const { a } = setup()
    const x = a.malloc(MiB(20), 0)
    a.free(x, true)
    a.emptyCache()
    expect(a.reserved()).toBe(MiB(20))
    a.complete(x)
    a.emptyCache()
    expect(a.reserved()).toBe(0)
  })
})

describe("expandable: consistency under driver faults", () => {
  it("keeps its accounting equal to the device's whatever fails", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 1000 }),
        fc.array(fc.tuple(fc.integer({ min: 1, max: MiB(40) }), fc.integer({ min: 0, max: 1 }), fc.nat()), { maxLength: 60 }),
        (seed, ops) => {
          const sim = new SimDriver({ capacity: MiB(160), faultRate: 0.1, seed })
          const port = new MeteredPort(sim)
          const a = new ExpandableAllocator(port)
          const live: Array<BlockId> = []
          for (const [size, stream, pick] of ops) {
            if (pick % 3 === 0 && live.length > 0) a.free(live.splice(pick % live.length, 1)[0]!)
            else if (pick % 7 === 1) a.emptyCache()
            else {
              try {
                live.push(a.malloc(size, stream))
              } catch (e) {
                if (!(e instanceof OutOfMemoryError || e instanceof DriverError)) throw e
              }
            }
            expect(a.reserved()).toBe(port.reserved)
            expect(sim.ledger().physicalBytes).toBe(port.reserved)
            for (const b of live) sim.translate(a.address(b), a.size(b))
          }
          for (const b of live) a.free(b)
          a.emptyCache()
          expect(sim.liveHandles()).toBe(0)
        }
      ),
      { numRuns: 100 }
    )
  })
})
