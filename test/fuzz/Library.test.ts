/**
 * Library fuzz: random operation streams with bad arguments mixed in (null and foreign blocks,
 * blocks with a changed address, size or stream, double frees, sizes that are negative, NaN,
 * fractional, not numbers, 2^53 and above, larger than the device; streams out of range),
 * under random driver faults, against every policy through the allocator service.
 *
 * Property: every call gives a typed error (InvalidRequestError, InvalidBlockError,
 * OutOfMemoryError, DriverError) or a valid result, never a defect; after every call live
 * blocks overlap neither in virtual nor in physical memory, a refused call changed nothing,
 * the statistics agree with a shadow of what is live, the allocator's reserved bytes are the
 * device's; when the session's scope closes the device's ledger is empty.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Result, Scope } from "effect"
import * as fc from "fast-check"
import { policyNames, type PolicyName } from "../../src/domain/Allocator.ts"
import { makeAllocator } from "../../src/domain/policies/Policies.ts"
import { maxStream } from "../../src/domain/Request.ts"
import { GiB, MiB } from "../../src/domain/Units.ts"
import { emptyLedger, SimDriver } from "../../src/layers/sim/SimDriver.ts"
import { layerSimWith } from "../../src/layers/sim/SimDriverLayer.ts"
import * as GpuAllocator from "../../src/services/Allocator.ts"
import { Driver } from "../../src/services/Driver.ts"

type Block = GpuAllocator.Block

/** Sizes: mostly ordinary, some odd, some huge. */
const sizeArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 12, arbitrary: fc.integer({ min: 1, max: MiB(48) }) },
  { weight: 2, arbitrary: fc.integer({ min: 1, max: 4096 }) },
  {
    weight: 3,
    arbitrary: fc.constantFrom<unknown>(
      0, -1, -MiB(1), 0.5, MiB(1) + 0.25, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY,
      2 ** 53, 2 ** 53 + 2, 2 ** 60, Number.MAX_SAFE_INTEGER, 1e12, GiB(80), null, undefined, "4096", 10n, {}
    )
  }
)

/** Streams: the session's few, and ids that are not streams at all. */
const streamArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 10, arbitrary: fc.integer({ min: 0, max: 2 }) },
  { weight: 1, arbitrary: fc.constantFrom<unknown>(-1, 0.5, Number.NaN, maxStream + 1, 70000, 2 ** 31, null, "1") },
  // In range, but no stream of the session.
  { weight: 1, arbitrary: fc.constantFrom<unknown>(7, maxStream) }
)

/** How a free or complete names its block. */
type Aim = "live" | "copy" | "address" | "size" | "stream" | "freed" | "foreign" | "null" | "undefined" | "number" | "handmade"

const aimArb: fc.Arbitrary<Aim> = fc.oneof(
  { weight: 10, arbitrary: fc.constant<Aim>("live") },
  { weight: 2, arbitrary: fc.constant<Aim>("copy") },
  {
    weight: 4,
    arbitrary: fc.constantFrom<Aim>("address", "size", "stream", "freed", "foreign", "null", "undefined", "number", "handmade")
  }
)

type Op =
  | { readonly kind: "alloc"; readonly size: unknown; readonly stream: unknown }
  | { readonly kind: "free"; readonly aim: Aim; readonly pick: number; readonly deferred: boolean }
  | { readonly kind: "complete"; readonly aim: Aim; readonly pick: number }
  | { readonly kind: "emptyCache" }

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 10, arbitrary: fc.record({ kind: fc.constant("alloc" as const), size: sizeArb, stream: streamArb }) },
  {
    weight: 7,
    arbitrary: fc.record({ kind: fc.constant("free" as const), aim: aimArb, pick: fc.nat(), deferred: fc.boolean() })
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("complete" as const), aim: aimArb, pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.constant({ kind: "emptyCache" as const }) }
)

const typedTags = new Set(["InvalidRequestError", "InvalidBlockError", "OutOfMemoryError", "DriverError"])

/** Counts over all runs, printed once (the suite's run counts). */
const tally = { runs: 0, calls: 0, ok: 0, byTag: new Map<string, number>() }

const layerFor = (sim: SimDriver, policy: PolicyName, crossStream: boolean) =>
  GpuAllocator.layer((port) => makeAllocator(policy, port, { crossStream }, port)).pipe(
    Layer.provideMerge(layerSimWith(sim))
  )

const runOnce = (
  policy: PolicyName,
  crossStream: boolean,
  capacity: number,
  faultRate: number,
  seed: number,
  ops: ReadonlyArray<Op>
): void => {
  const sim = new SimDriver({ capacity, faultRate, seed })
  const foreignSim = new SimDriver()
  const scope = Scope.makeUnsafe()
  const ctx = Effect.runSync(Layer.buildWithScope(layerFor(sim, policy, crossStream), scope))
  const foreignCtx = Effect.runSync(Layer.buildWithScope(layerFor(foreignSim, policy, false), scope))
  const alloc = Context.get(ctx, GpuAllocator.GpuAllocator)
  const driver = Context.get(ctx, Driver)
  // The session's streams 1 and 2 (stream 0 is the default one).
  for (let s = 1; s <= 2; s++) expect(driver.port.streamCreate()).toBe(s)
  const foreign = Effect.runSync(Context.get(foreignCtx, GpuAllocator.GpuAllocator).allocate(MiB(1)))

  const live: Array<Block> = []
  const deferred: Array<Block> = []
  const freed: Array<Block> = []

  /** Runs one call: a value, or a typed failure; a defect fails the property. */
  const call = <A, E extends { readonly _tag: string }>(eff: Effect.Effect<A, E>): Result.Result<A, E> => {
    const r = Effect.runSync(Effect.result(eff))
    tally.calls++
    if (Result.isSuccess(r)) tally.ok++
    else {
      const tag = r.failure._tag
      expect(typedTags.has(tag), `untyped failure ${tag}`).toBe(true)
      // One line a person can act on, naming values as they are.
      const message = String((r.failure as unknown as Error).message)
      expect(message).not.toMatch(/\[object|\n/)
      expect(message.length).toBeLessThan(500)
      tally.byTag.set(tag, (tally.byTag.get(tag) ?? 0) + 1)
    }
    return r
  }

  const target = (aim: Aim, pick: number, from: ReadonlyArray<Block>): unknown => {
    const b = from.length > 0 ? from[pick % from.length]! : undefined
    switch (aim) {
      case "live":
        return b
      case "copy":
        return b === undefined ? undefined : { ...b }
      case "address":
        return b === undefined ? undefined : { ...b, address: 12345 }
      case "size":
        return b === undefined ? undefined : { ...b, size: b.size + 1 }
      case "stream":
        return b === undefined ? undefined : { ...b, stream: b.stream + 1 }
      case "freed":
        return freed.length > 0 ? freed[pick % freed.length] : null
      case "foreign":
        return foreign
      case "null":
        return null
      case "undefined":
        return undefined
      case "number":
        return b?.id ?? 0
      case "handmade":
        return b === undefined ? { id: 0, address: 0, size: 1, stream: 0 } : { id: b.id, address: b.address, size: b.size, stream: b.stream }
    }
  }

  const check = () => {
    const stats = Effect.runSync(alloc.stats)
    // A deferred free counts as a free in the statistics (its memory only waits for complete).
    expect(stats.liveBlocks).toBe(live.length)
    let requested = 0
    for (const b of live) requested += b.size
    expect(stats.requestedCurrent).toBe(requested)
    expect(alloc.core.reserved()).toBe(sim.ledger().physicalBytes)
    // No two live blocks share a virtual byte...
    const byAddress = [...live].sort((x, y) => x.address - y.address)
    for (let i = 1; i < byAddress.length; i++) {
      expect(byAddress[i - 1]!.address + byAddress[i - 1]!.size).toBeLessThanOrEqual(byAddress[i]!.address)
    }
    // ...nor a physical one, through any alias.
    const pieces: Array<readonly [number, number, number]> = []
    for (const b of live) for (const p of sim.translate(b.address, b.size)) pieces.push([p.chunk, p.offset, p.offset + p.bytes])
    pieces.sort((x, y) => x[0] - y[0] || x[1] - y[1])
    for (let i = 1; i < pieces.length; i++) {
      if (pieces[i - 1]![0] === pieces[i]![0]) expect(pieces[i - 1]![2]).toBeLessThanOrEqual(pieces[i]![1])
    }
  }

  for (const op of ops) {
    switch (op.kind) {
      case "alloc": {
        const r = call(alloc.allocate(op.size as number, op.stream as number))
        if (Result.isSuccess(r)) {
          expect(r.success.size).toBe(op.size)
          live.push(r.success)
        }
        break
      }
      case "free": {
        const value = target(op.aim, op.pick, live)
        const r = call(alloc.free(value as Block, op.deferred))
        const valid = (op.aim === "live" || op.aim === "copy") && live.length > 0
        if (Result.isSuccess(r)) {
          expect(valid).toBe(true)
          const i = live.findIndex((b) => b.id === (value as Block).id)
          const [b] = live.splice(i, 1)
          ;(op.deferred ? deferred : freed).push(b!)
        } else {
          expect(valid, `free of a live block failed: ${r.failure.message}`).toBe(false)
        }
        break
      }
      case "complete": {
        const value = target(op.aim, op.pick, deferred)
        const r = call(alloc.complete(value as Block))
        if (Result.isSuccess(r)) {
          const i = deferred.findIndex((b) => b.id === (value as Block).id)
          freed.push(...deferred.splice(i, 1))
        } else {
          expect((op.aim === "live" || op.aim === "copy") && deferred.length > 0, `complete failed: ${r.failure.message}`).toBe(false)
        }
        break
      }
      case "emptyCache":
        call(alloc.emptyCache)
        break
    }
    check()
  }
  Effect.runSync(Scope.close(scope, Exit.void))
  expect(sim.ledger()).toEqual(emptyLedger)
  expect(foreignSim.ledger()).toEqual(emptyLedger)
  tally.runs++
}

const numRuns = 120

describe.each(policyNames)("library fuzz: %s", (policy) => {
  it.each([false, true])("typed errors or a valid state, whatever the arguments (cross-stream %s)", (crossStream) => {
    fc.assert(
      fc.property(
        fc.constantFrom(MiB(256), GiB(1), GiB(80)),
        fc.oneof(fc.constant(0), fc.constant(0), fc.double({ min: 0, max: 0.15, noNaN: true })),
        fc.integer({ min: 1, max: 1 << 30 }),
        fc.array(opArb, { minLength: 1, maxLength: 60 }),
        (capacity, faultRate, seed, ops) => runOnce(policy, crossStream, capacity, faultRate, seed, ops)
      ),
      { numRuns }
    )
  })
})

describe("library fuzz: run counts", () => {
  it("ran every case", () => {
    // Files run in one worker in order; this test follows the others of this file.
    const tags = Object.fromEntries(tally.byTag)
    console.info(`library fuzz: ${tally.runs} runs, ${tally.calls} calls, ${tally.ok} ok, failures by tag ${JSON.stringify(tags)}`)
    expect(tally.runs).toBe(policyNames.length * 2 * numRuns)
  })
})
