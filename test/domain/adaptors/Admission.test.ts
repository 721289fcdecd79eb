/**
 * The allocator's front door (Note [Refusing what cannot fit]): the same argument rules for every
 * policy, and a request the device cannot hold refused before any driver call.
 */
import { describe, expect, it } from "@effect/vitest"
import { readFileSync } from "node:fs"
import { policyNames } from "../../../src/domain/Allocator.ts"
import { DriverError, InvalidBlockError, InvalidRequestError, OutOfMemoryError } from "../../../src/domain/Errors.ts"
import { StatsAllocator } from "../../../src/domain/adaptors/Stats.ts"
import { makeAllocator } from "../../../src/domain/policies/Policies.ts"
import { maxStream } from "../../../src/domain/Request.ts"
import { type BlockId, GiB, MiB } from "../../../src/domain/Units.ts"
import { SimDriver } from "../../../src/layers/sim/SimDriver.ts"

const thrown = (f: () => unknown): unknown => {
  try {
    f()
  } catch (e) {
    return e
  }
  throw new Error("expected a throw")
}

const fresh = (policy: (typeof policyNames)[number], capacity = GiB(80)) => {
  const sim = new SimDriver({ capacity, record: true })
  return { sim, a: makeAllocator(policy, sim) }
}

describe.each(policyNames)("admission: %s", (policy) => {
  it("refuses a request larger than the device before any driver call", () => {
    const { sim, a } = fresh(policy)
    const e = thrown(() => a.malloc(1e12, 0))
    expect(e).toBeInstanceOf(OutOfMemoryError)
    const oom = e as OutOfMemoryError
    expect(oom.requested).toBe(1e12)
    expect(oom.capacity).toBe(GiB(80))
    expect(oom.deviceFree).toBe(GiB(80))
    expect(oom.message).toContain("(1000000000000 B)")
    expect(oom.message).toContain("capacity 80.00 GiB")
    expect(oom.message).toContain("refused before any driver call")
    expect(sim.log).toEqual([])
    expect(sim.ledger().physicalBytes).toBe(0)
  })

  it("replays bench/gpu/oversize.json: the 1 TB request touches nothing the others hold", () => {
    const trace = JSON.parse(readFileSync(new URL("../../../bench/gpu/oversize.json", import.meta.url), "utf8")) as {
      readonly events: ReadonlyArray<readonly [string, number, number?]>
    }
    const { sim, a } = fresh(policy)
    const ids = new Map<number, BlockId>()
    let refused = 0
    let peak = 0
    for (const [kind, id, bytes] of trace.events) {
      if (kind === "a") {
        const steps = sim.log!.length
        const held = sim.ledger().physicalBytes
        try {
          ids.set(id, a.malloc(bytes!, 0))
        } catch (e) {
          expect(e).toBeInstanceOf(OutOfMemoryError)
          expect((e as OutOfMemoryError).deviceFree).toBeDefined()
          expect(sim.log!.length).toBe(steps)
          expect(sim.ledger().physicalBytes).toBe(held)
          refused++
        }
      } else a.free(ids.get(id)!)
      peak = Math.max(peak, sim.ledger().physicalBytes)
    }
    expect(refused).toBe(1)
    // Never more than what the three ordinary requests need, rounded by the policy.
    expect(peak).toBeLessThan(GiB(3) + MiB(64))
  })

  it("refuses a request larger than what is free plus what it holds", () => {
    const sim = new SimDriver({ capacity: GiB(8), record: true })
    const other = makeAllocator(policy, sim)
    other.malloc(GiB(6), 0) // another user of the device
    const a = makeAllocator(policy, sim)
    const steps = sim.log!.length
    const e = thrown(() => a.malloc(GiB(3), 0))
    expect(e).toBeInstanceOf(OutOfMemoryError)
    expect((e as OutOfMemoryError).deviceFree).toBeLessThanOrEqual(GiB(2))
    expect(sim.log!.length).toBe(steps)
    // What does fit is served.
    a.free(a.malloc(GiB(1), 0))
  })

  it("serves a request up to the device's free memory", () => {
    const { a } = fresh(policy, GiB(4))
    const b = a.malloc(GiB(3), 0)
    expect(a.size(b)).toBe(GiB(3))
    a.free(b)
  })

  it.each([
    [-1, /positive integer/],
    [0, /positive integer/],
    [1.5, /positive integer/],
    [Number.NaN, /positive integer/],
    [2 ** 53, /larger than the largest safe integer/],
    [2 ** 60, /larger than the largest safe integer/],
    [Number.POSITIVE_INFINITY, /larger than the largest safe integer/],
    [null, /got null/],
    [undefined, /got undefined/],
    ["1", /the string "1"/]
  ])("refuses size %s with a typed error", (size, message) => {
    const { sim, a } = fresh(policy)
    const e = thrown(() => a.malloc(size as number, 0))
    expect(e).toBeInstanceOf(InvalidRequestError)
    expect((e as InvalidRequestError).message).toMatch(message)
    expect(sim.log).toEqual([])
  })

  it("2^53 - 1 is a size, and more than the device holds", () => {
    const { a } = fresh(policy)
    expect(thrown(() => a.malloc(Number.MAX_SAFE_INTEGER, 0))).toBeInstanceOf(OutOfMemoryError)
  })

  it.each([-1, 1.5, Number.NaN, maxStream + 1, 70000, 2 ** 31, null, "0"])("refuses stream %s", (stream) => {
    const { a } = fresh(policy)
    const e = thrown(() => a.malloc(MiB(1), stream as number))
    expect(e).toBeInstanceOf(InvalidRequestError)
    expect((e as InvalidRequestError).message).toContain(`from 0 to ${maxStream}`)
  })

  it("accepts the largest stream id", () => {
    const { a } = fresh(policy)
    a.free(a.malloc(MiB(1), maxStream))
  })

  it.each([null, undefined, -1, 1.5, Number.NaN, "0"])("refuses block %s on every block operation", (block) => {
    const { a } = fresh(policy)
    const live = a.malloc(MiB(1), 0)
    for (const op of ["free", "complete", "address", "size"] as const) {
      const e = thrown(() => a[op](block as unknown as BlockId))
      expect(e).toBeInstanceOf(InvalidBlockError)
      expect((e as InvalidBlockError).operation).toBe(op)
      expect((e as InvalidBlockError).message).toMatch(new RegExp(`^${op}`))
    }
    expect(a.size(live)).toBe(MiB(1))
  })

  it("labels a bad free as a free, through the statistics adaptor", () => {
    const { a } = fresh(policy)
    const s = new StatsAllocator(a)
    const b = s.malloc(MiB(1), 0)
    s.free(b)
    const e = thrown(() => s.free(b))
    expect(e).toBeInstanceOf(InvalidBlockError)
    expect((e as InvalidBlockError).message).toMatch(/^free of block/)
    expect(s.stats().frees).toBe(1)
  })

  it("reports an injected driver fault as the driver's error, naming the call", () => {
    const sim = new SimDriver({ capacity: GiB(8), faultRate: 1 })
    const a = makeAllocator(policy, sim)
    const e = thrown(() => a.malloc(MiB(100), 0))
    expect(e).toBeInstanceOf(DriverError)
    const d = e as DriverError
    expect(d.detail).toBe("injected fault")
    expect(d.reason).toBe("Unknown")
    expect(d.message).toMatch(/^cuMem(Create|Alloc|AddressReserve)/)
    expect(sim.ledger().physicalBytes).toBe(0)
  })
})
