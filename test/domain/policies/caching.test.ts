/**
 * The native caching baseline: replaying the recorded traces reproduces PyTorch's peak reserved
 * memory and its every cudaMalloc; focused tests of each rule of Note [Caching allocator rules].
 */
import { describe, expect, it } from "@effect/vitest"
import { Result } from "effect"
import * as fc from "fast-check"
import { readFileSync } from "node:fs"
import { DriverError, InvalidBlockError, InvalidRequestError, OutOfMemoryError } from "../../../src/domain/Errors.ts"
import {
  CachingAllocator,
  type CachingConfig,
  kAddressArena,
  roundSize,
  segmentSize
} from "../../../src/domain/policies/pytorch/Caching.ts"
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
const setup = (options: { capacity?: number; config?: Partial<CachingConfig> } = {}) => {
  const sim = new SimDriver({ record: true, capacity: options.capacity ?? MiB(80 * 1024) })
  const port = new MeteredPort(sim)
  const a = new CachingAllocator(port, options.config)
  const allocs = () => sim.log!.filter((s) => s.call === "memAlloc").map((s) => s.a)
  const frees = () => sim.log!.filter((s) => s.call === "memFree").length
  return { sim, port, a, allocs, frees }
}

describe("caching: replay of the recorded traces", () => {
  it.each(traceNames)("%s: PyTorch's peak reserved, and every cudaMalloc at the recorded request", (name) => {
    const trace = loadTrace(name)
    const anchor = trace.native!
    const { sim, port, a } = setup()
    // Each memAlloc, with the index of the request event during which it happened.
    const made: Array<readonly [number, number]> = []
    let seen = 0
    const out = replayTrace(trace, a, (i) => {
      const log = sim.log!
      for (; seen < log.length; seen++) if (log[seen]!.call === "memAlloc") made.push([i, log[seen]!.a])
    })
    expect(out.failedAllocs).toBe(0)
    expect(out.peakRequested).toBe(anchor.peakRequested)
    expect(Math.abs(port.peakReserved - anchor.peakReserved) / anchor.peakReserved).toBeLessThanOrEqual(0.001)
    expect(port.peakReserved).toBe(anchor.peakReserved)
    // The recorded run's segment allocations (`S`), in order, by size...
    const recorded = trace.recorded.filter((e) => e.kind === "S")
    expect(made.map(([, bytes]) => bytes)).toEqual(recorded.map((e) => e.bytes))
    // ...and each during the same request as in the recorded run (Note [Modelled device addresses]).
    expect(made.map(([at]) => at)).toEqual(recorded.map((e) => e.before))
    if (anchor.deviceAllocs !== undefined) expect(port.calls.memAlloc).toBe(anchor.deviceAllocs)
    expect(a.reserved()).toBe(port.reserved)
  })
})

describe("caching: size rules", () => {
  it("rounds to 512 B", () => {
    expect(roundSize(1)).toBe(512)
    expect(roundSize(512)).toBe(512)
    expect(roundSize(513)).toBe(1024)
    expect(roundSize(MiB(1) + 1)).toBe(MiB(1) + 512)
  })

  it("rounds to power-of-two divisions when configured", () => {
    const table = new Int32Array(16).fill(4)
    // [1 MiB, 2 MiB) in 4 divisions: 1, 1.25, 1.5, 1.75 MiB.
    expect(roundSize(1_300_000, table)).toBe(MiB(1.25))
    expect(roundSize(MiB(1.25), table)).toBe(MiB(1.25))
    expect(roundSize(MiB(2), table)).toBe(MiB(2))
    // Below 512 B times the divisions, plain rounding.
    expect(roundSize(1200, table)).toBe(1536)
    const a = new CachingAllocator(new MeteredPort(new SimDriver()), { roundupPower2Divisions: 4 })
    const b = a.malloc(1_300_000, 0)
    expect(a.size(b)).toBe(1_300_000)
  })

  it("sizes segments: 2 MiB small, 20 MiB for 1-10 MiB, else rounded to 2 MiB", () => {
    expect(segmentSize(512)).toBe(MiB(2))
    expect(segmentSize(MiB(1))).toBe(MiB(2))
    expect(segmentSize(MiB(1) + 512)).toBe(MiB(20))
    expect(segmentSize(MiB(10) - 512)).toBe(MiB(20))
    expect(segmentSize(MiB(10))).toBe(MiB(10))
    expect(segmentSize(MiB(11) + 512)).toBe(MiB(12))
    const { a, allocs } = setup()
    a.malloc(1, 0)
    a.malloc(MiB(1) + 1, 0)
    a.malloc(MiB(15), 1) // another stream: the 20 MiB segment's free rest is not its to use
    expect(allocs()).toEqual([MiB(2), MiB(20), MiB(16)])
  })
})

describe("caching: splitting", () => {
  it("small pool: splits when at least 512 B remain", () => {
    const { a, allocs } = setup()
    const x = a.malloc(MiB(1), 0)
    const y = a.malloc(MiB(1) - 512, 0)
    const z = a.malloc(512, 0)
    expect(allocs()).toEqual([MiB(2)])
    expect(a.address(y)).toBe(a.address(x) + MiB(1))
    expect(a.address(z)).toBe(a.address(y) + MiB(1) - 512)
  })

  it("large pool: splits only when more than 1 MiB remains", () => {
    const exact = setup()
    // 19 MiB gets a 20 MiB segment; 1 MiB would remain: not split, the next request needs a segment.
    exact.a.malloc(MiB(19), 0)
    exact.a.malloc(MiB(1) + 512, 0)
    expect(exact.allocs()).toEqual([MiB(20), MiB(20)])
    const more = setup()
    // 18.5 MiB: 1.5 MiB remains, split off; it serves the next request.
    const x = more.a.malloc(MiB(18.5), 0)
    const y = more.a.malloc(1_258_291, 0)
    expect(more.allocs()).toEqual([MiB(20)])
    expect(more.a.address(y)).toBe(more.a.address(x) + MiB(18.5))
  })

  it("1-10 MiB requests share a 20 MiB segment", () => {
    const { a, allocs } = setup()
    const x = a.malloc(MiB(5), 0)
    const y = a.malloc(MiB(5), 0)
    expect(allocs()).toEqual([MiB(20)])
    expect(a.address(y)).toBe(a.address(x) + MiB(5))
  })
})

describe("caching: best fit", () => {
  it("takes the smallest free block that fits", () => {
    const { a, allocs } = setup()
    const big = a.malloc(MiB(40), 0)
    const small = a.malloc(MiB(24), 0)
    const addrSmall = a.address(small)
    a.free(big)
    a.free(small)
    const x = a.malloc(MiB(22), 0)
    expect(a.address(x)).toBe(addrSmall)
    expect(allocs()).toEqual([MiB(40), MiB(24)])
  })

  it("breaks ties between segments by the modelled address, not the port's", () => {
    // Two 12 MiB segments in one arena: the first one is lower, so it is taken.
    const { a } = setup()
    const p = a.malloc(MiB(12), 0)
    const q = a.malloc(MiB(12), 0)
    const addrP = a.address(p)
    a.free(q)
    a.free(p)
    expect(a.address(a.malloc(MiB(12), 0))).toBe(addrP)
    // A segment that needs a new arena goes below every earlier one, so it wins the tie.
    const two = setup()
    const filler = two.a.malloc(kAddressArena - MiB(12), 0)
    const r = two.a.malloc(MiB(12), 0)
    const s = two.a.malloc(MiB(12), 0)
    const addrS = two.a.address(s)
    two.a.free(r)
    two.a.free(s)
    expect(two.a.address(two.a.malloc(MiB(12), 0))).toBe(addrS)
    two.a.free(filler)
  })

  it("keeps pools per stream", () => {
    const { a, allocs } = setup()
    const x = a.malloc(MiB(12), 0)
    a.free(x)
    a.malloc(MiB(12), 1)
    expect(allocs()).toEqual([MiB(12), MiB(12)])
    a.malloc(MiB(12), 0)
    expect(allocs()).toHaveLength(2)
  })
})

describe("caching: merging", () => {
  it("merges free neighbours within a segment", () => {
    const { a, allocs } = setup()
    const x = a.malloc(MiB(4), 0)
    const y = a.malloc(MiB(4), 0)
    const z = a.malloc(MiB(4), 0)
    const addrX = a.address(x)
    a.free(y)
    a.free(x)
    const w = a.malloc(MiB(8), 0)
    expect(a.address(w)).toBe(addrX)
    expect(allocs()).toEqual([MiB(20)])
    a.free(z)
  })

  it("never merges across segments", () => {
    const { a, allocs } = setup()
    const x = a.malloc(MiB(12), 0)
    const y = a.malloc(MiB(12), 0)
    a.free(x)
    a.free(y)
    a.malloc(MiB(24), 0)
    expect(allocs()).toEqual([MiB(12), MiB(12), MiB(24)])
  })
})

describe("caching: out of memory", () => {
  it("frees cached whole segments and retries", () => {
    const { a, port, frees } = setup({ capacity: MiB(60) })
    const x = a.malloc(MiB(30), 0)
    a.free(x)
    const y = a.malloc(MiB(40), 0)
    expect(frees()).toBe(1)
    expect(a.reserved()).toBe(MiB(40))
    expect(port.reserved).toBe(MiB(40))
    expect(a.counters().releasedForPressure).toBe(1)
    expect(a.size(y)).toBe(MiB(40))
  })

  it("reports what it could not do, and changes nothing", () => {
    const { a, sim } = setup({ capacity: MiB(40) })
    a.malloc(MiB(5), 0) // a 20 MiB segment; 15 MiB of it stays cached, split off
    a.malloc(MiB(16), 0)
    const before = sim.ledger()
    let error: unknown
    try {
      a.malloc(MiB(30), 2)
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(OutOfMemoryError)
    const oom = error as OutOfMemoryError
    expect(oom).toMatchObject({
      requested: MiB(30),
      stream: 2,
      reserved: MiB(36),
      free: MiB(15),
      largestFreeBlock: MiB(15),
      capacity: MiB(40)
    })
    expect(oom.message).toContain("out of memory: requested 30.00 MiB")
    expect(oom.message).toContain("largest free block 15.00 MiB")
    expect(sim.ledger()).toEqual(before)
    expect(a.reserved()).toBe(MiB(36))
  })

  it("passes on driver failures other than out of memory", () => {
    const port = new MeteredPort(new SimDriver())
    port.memAlloc = () => {
      throw new DriverError({ call: "cuMemAlloc", reason: "NotInitialized", code: 3, detail: "test" })
    }
    const a = new CachingAllocator(port)
    expect(() => a.malloc(1, 0)).toThrow(DriverError)
    expect(a.reserved()).toBe(0)
  })
})

describe("caching: frees", () => {
  it("refuses a double free, an unknown block and a stale id, changing nothing", () => {
    const { a } = setup()
    const x = a.malloc(MiB(12), 0)
    a.free(x)
    expect(() => a.free(x)).toThrow(InvalidBlockError)
    expect(() => a.free(987654 as BlockId)).toThrow(InvalidBlockError)
    expect(() => a.free(-1 as BlockId)).toThrow(InvalidBlockError)
    expect(() => a.address(x)).toThrow(InvalidBlockError)
    expect(() => a.size(x)).toThrow(InvalidBlockError)
    // The slot is reused by the next allocation: the old id still names nothing.
    const y = a.malloc(MiB(12), 0)
    expect(y).not.toBe(x)
    expect(() => a.free(x)).toThrow(InvalidBlockError)
    expect(a.size(y)).toBe(MiB(12))
    a.free(y)
  })

  it("refuses bad requests", () => {
    const { a } = setup()
    for (const bad of [0, -1, 1.5, Number.NaN, Infinity]) expect(() => a.malloc(bad, 0)).toThrow(InvalidRequestError)
    expect(() => a.malloc(1, -1)).toThrow(InvalidRequestError)
    expect(() => a.malloc(1, 0.5)).toThrow(InvalidRequestError)
    expect(a.reserved()).toBe(0)
  })

  it("keeps a deferred free unavailable until it completes", () => {
    const { a, allocs } = setup()
    const x = a.malloc(MiB(12), 0)
    a.free(x, true)
    expect(() => a.free(x)).toThrow(InvalidBlockError)
    a.malloc(MiB(12), 0)
    expect(allocs()).toHaveLength(2)
    a.complete(x)
    expect(() => a.complete(x)).toThrow(InvalidBlockError)
    a.malloc(MiB(12), 0)
    expect(allocs()).toHaveLength(2)
  })

  it("does not merge with a pending block, nor release its segment", () => {
    const { a, allocs, frees } = setup()
    const x = a.malloc(MiB(5), 0)
    const y = a.malloc(MiB(5), 0)
    a.free(x, true)
    a.free(y)
    a.emptyCache()
    expect(frees()).toBe(0)
    a.malloc(MiB(20), 0) // the whole 20 MiB is not free while x is pending
    expect(allocs()).toEqual([MiB(20), MiB(20)])
    a.complete(x)
    a.emptyCache()
    expect(frees()).toBe(1)
  })

  it("complete refuses a block that was not freed with deferral", () => {
    const { a } = setup()
    const x = a.malloc(100, 0)
    expect(() => a.complete(x)).toThrow(InvalidBlockError)
    a.free(x)
    expect(() => a.complete(x)).toThrow(InvalidBlockError)
  })
})

describe("caching: emptyCache", () => {
  it("gives back every wholly free segment and keeps the rest", () => {
    const { a, sim, port } = setup()
    const x = a.malloc(MiB(12), 0)
    const y = a.malloc(MiB(5), 0)
    const z = a.malloc(100, 1)
    a.free(x)
    a.free(z)
    a.emptyCache()
    expect(sim.ledger().allocations).toBe(1)
    expect(a.reserved()).toBe(MiB(20))
    expect(port.reserved).toBe(MiB(20))
    expect(a.counters().releasedForPressure).toBe(0)
    a.free(y)
    a.emptyCache()
    expect(sim.liveHandles()).toBe(0)
    expect(a.reserved()).toBe(0)
  })

  it("models a freed segment's address range as a hole, reused lowest first", () => {
    const { a } = setup()
    const x = a.malloc(MiB(12), 0)
    const y = a.malloc(MiB(12), 0)
    a.free(x)
    a.emptyCache()
    // x's range, below y in the same arena, is the lowest hole: the next 12 MiB segment is
    // modelled there, so it wins the tie against y's equal block. (Were it placed in the rest of
    // the arena, above y, y would win.)
    const z = a.malloc(MiB(12), 0)
    const addrZ = a.address(z)
    a.free(y)
    a.free(z)
    expect(a.address(a.malloc(MiB(12), 0))).toBe(addrZ)
    expect(a.reserved()).toBe(MiB(24))
  })
})

describe("caching: options", () => {
  it("max_split_size: oversize blocks serve only large requests, within 20 MiB", () => {
    const { a, allocs } = setup({ config: { maxSplitSize: MiB(40) } })
    const big = a.malloc(MiB(100), 0)
    a.free(big)
    a.malloc(MiB(30), 0) // under max_split_size: may not take the 100 MiB block
    expect(allocs()).toEqual([MiB(100), MiB(30)])
    const c = a.malloc(MiB(90), 0) // 100 < 90 + 20: takes it, unsplit
    expect(allocs()).toHaveLength(2)
    a.free(c)
    a.malloc(MiB(70), 0) // 100 >= 70 + 20: a new segment
    expect(allocs()).toEqual([MiB(100), MiB(30), MiB(70)])
  })

  it("max_split_size: under pressure, frees oversize cached segments first", () => {
    const { a, frees } = setup({ capacity: MiB(120), config: { maxSplitSize: MiB(40) } })
    const big = a.malloc(MiB(100), 0)
    a.free(big)
    a.malloc(MiB(30), 0)
    expect(frees()).toBe(1)
    expect(a.reserved()).toBe(MiB(30))
    expect(a.counters().releasedForPressure).toBe(1)
  })

  it("garbage_collection_threshold: frees aged cached segments above the threshold", () => {
    const { a, frees } = setup({ capacity: MiB(200), config: { memoryFraction: 0.5, garbageCollectionThreshold: 0.5 } })
    const x = a.malloc(MiB(30), 0)
    const y = a.malloc(MiB(30), 0)
    a.free(x)
    a.free(y)
    a.malloc(MiB(40), 0) // 60 MiB reserved > 50 MiB threshold: both cached segments go
    expect(frees()).toBe(2)
    expect(a.reserved()).toBe(MiB(40))
  })

  it("memory fraction: out of memory at the allowed share of the device", () => {
    const { a } = setup({ capacity: MiB(200), config: { memoryFraction: 0.25 } })
    a.malloc(MiB(40), 0)
    expect(() => a.malloc(MiB(12), 0)).toThrow(OutOfMemoryError)
  })

  it("rejects invalid options", () => {
    const port = new MeteredPort(new SimDriver())
    expect(() => new CachingAllocator(port, { maxSplitSize: MiB(20) })).toThrow(InvalidRequestError)
    expect(() => new CachingAllocator(port, { roundupPower2Divisions: 3 })).toThrow(InvalidRequestError)
    expect(() => new CachingAllocator(port, { roundupPower2Divisions: [1, 2] })).toThrow(InvalidRequestError)
    expect(() => new CachingAllocator(port, { garbageCollectionThreshold: 1 })).toThrow(InvalidRequestError)
    expect(() => new CachingAllocator(port, { memoryFraction: 2 })).toThrow(InvalidRequestError)
  })
})

describe("caching: consistency under driver faults", () => {
  it("keeps its accounting equal to the device's whatever fails", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 1000 }),
        fc.array(fc.tuple(fc.integer({ min: 1, max: MiB(40) }), fc.integer({ min: 0, max: 1 }), fc.nat()), { maxLength: 60 }),
        (seed, ops) => {
          const sim = new SimDriver({ capacity: MiB(128), faultRate: 0.2, seed })
          const port = new MeteredPort(sim)
          const a = new CachingAllocator(port)
          const live: Array<BlockId> = []
          for (const [size, stream, pick] of ops) {
            if (pick % 3 === 0 && live.length > 0) a.free(live.splice(pick % live.length, 1)[0]!)
            else {
              try {
                live.push(a.malloc(size, stream))
              } catch (e) {
                // An injected fault surfaces as the driver's error, never as out of memory.
                if (!(e instanceof OutOfMemoryError || (e instanceof DriverError && e.detail === "injected fault"))) throw e
              }
            }
            expect(a.reserved()).toBe(port.reserved)
            expect(sim.ledger().physicalBytes).toBe(port.reserved)
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
