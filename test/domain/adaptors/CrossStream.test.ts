/**
 * Cross-stream reuse (Note [Cross-stream reuse]) over every policy: random multi-stream programs
 * against a shadow model that knows which freed blocks may still be in use by their stream.
 */
import { AdmissionAllocator } from "../../../src/domain/adaptors/Admission.ts"
import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { policyNames } from "../../../src/domain/Allocator.ts"
import { CrossStreamAllocator } from "../../../src/domain/adaptors/CrossStream.ts"
import { InvalidBlockError, OutOfMemoryError } from "../../../src/domain/Errors.ts"
import { makeAllocator } from "../../../src/domain/policies/Policies.ts"
import type { StreamPort } from "../../../src/domain/StreamPort.ts"
import type { BlockId } from "../../../src/domain/Units.ts"
import { MeteredPort } from "../../../src/layers/MeteredPort.ts"
import { SimDriver } from "../../../src/layers/sim/SimDriver.ts"

const MiB = 1024 * 1024

type Op =
  | { readonly kind: "malloc"; readonly size: number; readonly stream: number }
  | { readonly kind: "free"; readonly pick: number; readonly deferred: boolean }
  | { readonly kind: "complete"; readonly pick: number }
  | { readonly kind: "tick"; readonly n: number }
  | { readonly kind: "sync"; readonly stream: number }

const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant("malloc" as const),
      size: fc.oneof(fc.integer({ min: 1, max: MiB }), fc.integer({ min: MiB, max: 40 * MiB })),
      stream: fc.integer({ min: 0, max: 2 })
    })
  },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant("free" as const), pick: fc.nat(), deferred: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("complete" as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("tick" as const), n: fc.integer({ min: 1, max: 6 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("sync" as const), stream: fc.integer({ min: 0, max: 2 }) }) }
)

interface Held {
  readonly address: number
  readonly size: number
  readonly stream: number
}

const pick = <K, V>(m: ReadonlyMap<K, V>, n: number): K | undefined => {
  if (m.size === 0) return undefined
  let i = n % m.size
  for (const k of m.keys()) if (i-- === 0) return k
  return undefined
}

describe.each(policyNames)("cross-stream reuse: %s", (policy) => {
  it("hands no block to a stream before the events guarding it completed", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 10 }),
        fc.oneof(fc.constant(80 * 1024), fc.integer({ min: 64, max: 512 })),
        fc.array(op, { minLength: 1, maxLength: 100 }),
        (latency, capMiB, ops) => {
          const sim = new SimDriver({ eventLatency: latency, capacity: capMiB * MiB })
          const streams = [0, sim.streamCreate(), sim.streamCreate()]
          // Watch the events the adaptor records and what it learns of them.
          const eventStream = new Map<number, number>()
          const done = new Set<number>()
          let lastEvent = -1
          const watched: StreamPort = {
            streamCreate: () => sim.streamCreate(),
            streamDestroy: (s) => sim.streamDestroy(s),
            streamSynchronize: (s) => {
              sim.streamSynchronize(s)
              for (const [e, es] of eventStream) if (es === s) done.add(e)
            },
            eventRecord: (s) => {
              const e = sim.eventRecord(s)
              eventStream.set(e, s)
              lastEvent = e
              return e
            },
            eventQuery: (e) => {
              const ok = sim.eventQuery(e)
              if (ok) done.add(e)
              return ok
            },
            eventSynchronize: (e) => {
              sim.eventSynchronize(e)
              done.add(e)
            },
            eventDestroy: (e) => sim.eventDestroy(e)
          }
          const a = makeAllocator(policy, new MeteredPort(sim), { crossStream: true }, watched)
          expect(a).toBeInstanceOf(AdmissionAllocator)
          const shared = (a as AdmissionAllocator).inner as CrossStreamAllocator
          expect(shared).toBeInstanceOf(CrossStreamAllocator)
          const live = new Map<BlockId, Held>()
          const guarded = new Map<BlockId, Held>()
          // Freed blocks whose memory their stream may still be using, with their event.
          const inFlight = new Map<BlockId, Held & { readonly event: number }>()
          const overlaps = (x: Held, y: Held) => {
            for (const p of sim.translate(x.address, x.size)) {
              for (const q of sim.translate(y.address, y.size)) {
                if (p.chunk === q.chunk && p.offset < q.offset + q.bytes && q.offset < p.offset + p.bytes) return true
              }
            }
            return false
          }
          for (const o of ops) {
            switch (o.kind) {
              case "malloc": {
                let b: BlockId
                try {
                  b = a.malloc(o.size, streams[o.stream]!)
                } catch (e) {
                  expect(e).toBeInstanceOf(OutOfMemoryError)
                  break
                }
                const h = { address: a.address(b), size: o.size, stream: streams[o.stream]! }
                for (const x of [...live.values(), ...guarded.values()]) expect(overlaps(h, x)).toBe(false)
                inFlight.delete(b) // taken back by its own stream
                for (const [, x] of inFlight) {
                  // Its own stream may reuse it at once (stream order); another only after the event.
                  if (x.stream !== h.stream && !done.has(x.event) && overlaps(h, x)) {
                    throw new Error(`memory freed on stream ${x.stream} handed to stream ${h.stream} before its event completed`)
                  }
                }
                live.set(b, h)
                break
              }
              case "free": {
                const b = pick(live, o.pick)
                if (b === undefined) break
                const h = live.get(b)!
                live.delete(b)
                lastEvent = -1
                a.free(b, o.deferred)
                if (o.deferred) guarded.set(b, h)
                else if (lastEvent >= 0) inFlight.set(b, { ...h, event: lastEvent })
                expect(() => a.free(b)).toThrow(InvalidBlockError)
                break
              }
              case "complete": {
                const b = pick(guarded, o.pick)
                if (b === undefined) break
                const h = guarded.get(b)!
                guarded.delete(b)
                lastEvent = -1
                a.complete(b)
                if (lastEvent >= 0) inFlight.set(b, { ...h, event: lastEvent })
                break
              }
              case "tick":
                sim.tick(o.n)
                break
              case "sync":
                watched.streamSynchronize(streams[o.stream]!)
                break
            }
          }
          // Everything released: nothing may stay on the device.
          for (const b of guarded.keys()) a.complete(b)
          for (const b of live.keys()) a.free(b)
          a.emptyCache()
          expect(shared.pending()).toBe(0)
          expect(sim.ledger().physicalBytes).toBe(0)
          expect(sim.ledger().events).toBe(0)
        }
      ),
      { numRuns: 60 }
    )
  })

  it("reuses memory across streams once the guarding event completed", () => {
    const sim = new SimDriver({ eventLatency: 2 })
    const s1 = sim.streamCreate()
    const a = makeAllocator(policy, new MeteredPort(sim), { crossStream: true }, sim)
    const x = a.malloc(30 * MiB, 0)
    a.malloc(1024, s1) // a second stream is in use from here on
    const reserved = a.reserved()
    a.free(x)
    const y = a.malloc(30 * MiB, s1) // event not complete: new memory
    expect(a.reserved()).toBeGreaterThan(reserved)
    a.free(y)
    sim.tick(2)
    const grown = a.reserved()
    a.malloc(30 * MiB, s1) // both events complete: served from the pool
    expect(a.reserved()).toBe(grown)
  })
})
