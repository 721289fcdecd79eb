/**
 * Cross-stream safety (Note [Cross-stream adoption], Note [Fewer events]) where the events
 * themselves misbehave: `cuEventRecord` (new or re-recorded) and `cuEventQuery` failing at random,
 * ports with and without `eventRerecord`, streams the user destroys mid-program, stitched views
 * (small chunks), deferred frees and `emptyCache`, at event latencies 0-64. The shadow's witness
 * events (`StreamShadow.ts`) fail the run if a chunk is ever mapped into another stream's range
 * before an event recorded after its last use there has completed; the integrity check runs after
 * every step. Written in review; a re-recorded spare event that was not really recorded is caught
 * within a few dozen programs.
 */
import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { DriverError, OutOfMemoryError } from "../../../src/domain/Errors.ts"
import { makeAllocator } from "../../../src/domain/policies/Policies.ts"
import type { BlockId } from "../../../src/domain/Units.ts"
import { SimDriver } from "../../../src/layers/sim/SimDriver.ts"
import { ShadowPort, StreamShadow } from "./StreamShadow.ts"
import { decodeStitchingConfig } from "../../../src/domain/policies/gmlake/StitchingConfig.ts"
import { Result } from "effect"

const MiB = 1024 * 1024

/** The shadow's port, with event calls failing at rate `rate`; `rerecord` false hides eventRerecord. */
class FaultyEvents extends ShadowPort {
  private readonly rnd: () => number
  private readonly rate: number
  constructor(sim: SimDriver, shadow: StreamShadow, rnd: () => number, rate: number, rerecord: boolean) {
    super(sim, shadow)
    this.rnd = rnd
    this.rate = rate
    if (!rerecord) (this as any).eventRerecord = undefined
  }
  private f(call: string) {
    if (this.rnd() < this.rate) throw new DriverError({ call, reason: "Unknown", code: 999, detail: "injected" } as any)
  }
  override eventRecord(stream: number): number {
    this.f("cuEventRecord")
    return super.eventRecord(stream)
  }
  override eventRerecord(event: number, stream: number): void {
    this.f("cuEventRecord")
    super.eventRerecord(event, stream)
  }
  override eventQuery(event: number): boolean {
    this.f("cuEventQuery")
    return super.eventQuery(event)
  }
}

type Op =
  | { kind: "malloc"; size: number; stream: number }
  | { kind: "free"; pick: number; deferred: boolean }
  | { kind: "complete"; pick: number }
  | { kind: "tick"; n: number }
  | { kind: "sync"; stream: number }
  | { kind: "destroy"; stream: number }
  | { kind: "emptyCache" }

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant("malloc" as const), size: fc.oneof(fc.integer({ min: 1, max: 3 * MiB }), fc.integer({ min: MiB, max: 24 * MiB }), fc.integer({ min: 24 * MiB, max: 96 * MiB })), stream: fc.nat({ max: 3 }) }) },
  { weight: 5, arbitrary: fc.record({ kind: fc.constant("free" as const), pick: fc.nat(), deferred: fc.integer({ min: 0, max: 4 }).map((n) => n === 0) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("complete" as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("tick" as const), n: fc.integer({ min: 1, max: 12 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("sync" as const), stream: fc.nat({ max: 3 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("destroy" as const), stream: fc.integer({ min: 1, max: 3 }) }) },
  { weight: 1, arbitrary: fc.constant({ kind: "emptyCache" as const }) }
)

const prog = fc.record({
  streams: fc.integer({ min: 2, max: 4 }),
  latency: fc.constantFrom(0, 1, 2, 4, 16, 64),
  eventFault: fc.constantFrom(0, 0.1, 0.3),
  rerec: fc.boolean(),
  chunk: fc.constantFrom(2, 4, 64),
  capacity: fc.oneof(fc.constant(80 * 1024), fc.integer({ min: 96, max: 640 })).map((m) => m * MiB),
  seed: fc.nat(),
  ops: fc.array(op, { minLength: 40, maxLength: 200, size: "max" })
})

const pick = <K, V>(m: ReadonlyMap<K, V>, n: number): K | undefined => {
  if (m.size === 0) return undefined
  let i = n % m.size
  for (const k of m.keys()) if (i-- === 0) return k
  return undefined
}

describe("cross-stream adoption when events fail", () => {
  for (const [name, lend, moves] of [["adoption", false, 0], ["lending", true, 0], ["one move then lending", true, 1]] as const) it(`${name}: never maps a chunk into another stream before its last use there is known complete, whatever the events do`, () => {
    let handovers = 0
    fc.assert(fc.property(prog, (p) => {
      const sim = new SimDriver({ eventLatency: p.latency, capacity: p.capacity })
      const shadow = new StreamShadow(sim)
      let x = p.seed + 1
      const rnd = () => { x = (x * 1103515245 + 12345) % 2147483648; return x / 2147483648 }
      const port = new FaultyEvents(sim, shadow, rnd, p.eventFault, p.rerec)
      const streams = [0]
      for (let s = 1; s < p.streams; s++) streams.push(sim.streamCreate())
      const dead = new Set<number>()
      const cfg = Result.getOrThrow(decodeStitchingConfig({ maxChunkBytes: p.chunk * MiB, chunkDivisor: 4, crossStreamLending: lend, crossStreamMoves: moves }))
      const a = makeAllocator("gmlake", port, { gmlake: cfg }, port) as any
      let core: any = a
      while (core.inner !== undefined) core = core.inner
      const live = new Map<BlockId, [number, number]>()
      const guarded = new Map<BlockId, [number, number]>()
      let key = 0
      for (const o of p.ops) {
        sim.tick()
        switch (o.kind) {
          case "malloc": {
            let stream = streams[o.stream % streams.length]!
            if (dead.has(stream)) stream = 0
            let b: BlockId
            shadow.current = stream
            try { b = a.malloc(o.size, stream) } catch (e) {
              if (!(e instanceof OutOfMemoryError || e instanceof DriverError)) throw e
              break
            } finally { shadow.current = -1 }
            shadow.allocated(key, a.address(b), o.size, stream)
            live.set(b, [key++, stream])
            break
          }
          case "free": {
            const b = pick(live, o.pick)
            if (b === undefined) break
            const [k, s] = live.get(b)!
            live.delete(b)
            shadow.freed(k, o.deferred)
            a.free(b, o.deferred)
            if (o.deferred) guarded.set(b, [k, s])
            break
          }
          case "complete": {
            const b = pick(guarded, o.pick)
            if (b === undefined) break
            shadow.completed(guarded.get(b)![0])
            guarded.delete(b)
            a.complete(b)
            break
          }
          case "tick": sim.tick(o.n); break
          case "sync": { const s = streams[o.stream % streams.length]!; if (!dead.has(s)) sim.streamSynchronize(s); break }
          case "destroy": {
            const s = streams[o.stream % streams.length]!
            if (s === 0 || dead.has(s)) break
            let busy = false
            for (const [, [, t]] of live) if (t === s) busy = true
            for (const [, [, t]] of guarded) if (t === s) busy = true
            if (busy) break
            sim.streamDestroy(s)
            dead.add(s)
            break
          }
          case "emptyCache": try { a.emptyCache() } catch (e) { if (!(e instanceof DriverError)) throw e } break
        }
        core.checkIntegrity()
      }
      handovers += (lend ? core.nLentFrees : 0) + (moves !== 0 || !lend ? core.adoption?.nAdoptions ?? 0 : 0)
      shadow.close()
    }), { numRuns: 200 })
    // the programs do move memory across streams (else the property says nothing)
    expect(handovers).toBeGreaterThan(0)
  })
})
