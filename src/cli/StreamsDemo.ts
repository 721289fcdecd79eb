/**
 * `gmlake streams`: two streams doing real device work (fills and copies queued on their own
 * streams) through allocations that are freed on one stream and reused on the other, verified
 * byte for byte, with the device's free memory back at its start value at the end.
 *
 * Each round, the producing stream allocates X, fills it, copies it into Y, and frees X while
 * the copy may still be queued; the consuming stream then allocates Z of the same size (the
 * allocator may hand it X's memory, once the event recorded at X's free has completed: Note
 * [Cross-stream reuse]), fills Z, and both are read back. Had Z's memory been handed out before
 * the producer's copy had run, Y or Z would hold the wrong bytes. Roles swap every round.
 *
 * @since 0.1.0
 */
import { Deferred, Effect, Fiber } from "effect"
import * as GpuAllocator from "../services/Allocator.ts"
import { Driver } from "../services/Driver.ts"
import * as Streams from "../services/Streams.ts"

/** @category models */
export interface StreamsReport {
  readonly device: string
  readonly deviceName: string
  readonly rounds: number
  readonly allocations: number
  /** Blocks handed to one stream at addresses another stream had freed. */
  readonly crossStreamReuses: number
  readonly bytesVerified: number
  readonly mismatches: number
  readonly peakReserved: number
  readonly freeBefore: number
  readonly freeAfter: number
  readonly ok: boolean
}

const MiB = 1024 * 1024

const countMismatches = (data: Uint8Array, value: number) => {
  let bad = 0
  for (let i = 0; i < data.length; i++) if (data[i] !== value) bad++
  return bad
}

/**
 * Runs the two-stream exercise in the current session (needs `Driver`, `GpuAllocator` with a
 * cross-stream allocator, `Streams`).
 * @category selftest
 */
export const streamsDemo = (rounds = 32) =>
  Effect.gen(function*() {
    const driver = yield* Driver
    const alloc = yield* GpuAllocator.GpuAllocator
    const streams = yield* Streams.Streams
    let allocations = 0
    let reuses = 0
    let verified = 0
    let mismatches = 0
    // Address ranges freed on each stream and not reused yet: [stream, start, end].
    const freed: Array<[number, number, number]> = []
    const handed = (b: GpuAllocator.Block) => {
      allocations++
      for (let i = freed.length - 1; i >= 0; i--) {
        const [s, start, end] = freed[i]!
        if (b.address < end && start < b.address + b.size) {
          if (s !== b.stream) reuses++
          freed.splice(i, 1)
        }
      }
    }
    const release = (b: GpuAllocator.Block) =>
      Effect.tap(alloc.free(b), () => Effect.sync(() => freed.push([b.stream, b.address, b.address + b.size])))

    const exercise = (rounds: number) => Effect.scoped(Effect.gen(function*() {
      const pair = [yield* streams.make, yield* streams.make] as const
      const turns = [yield* Deferred.make<number>(), yield* Deferred.make<number>()]
      // Round r: stream r % 2 produces, the other consumes. A fiber per stream takes turns.
      const worker = (me: 0 | 1) =>
        Effect.gen(function*() {
          while (true) {
            const round = yield* Deferred.await(turns[me]!)
            if (round >= rounds) return
            turns[me] = yield* Deferred.make<number>()
            const producer = pair[round % 2]!
            const consumer = pair[1 - (round % 2)]!
            const size = ((round * 7) % 9 + 1) * MiB + (round % 5) * 4096 + 100
            const v1 = (round * 37 + 11) & 255
            const v2 = (round * 53 + 97) & 255
            if (pair[me] === producer) {
              const x = yield* alloc.allocate(size, producer.id)
              handed(x)
              yield* driver.fill(x.address, v1, size, producer.id)
              const y = yield* alloc.allocate(size, producer.id)
              handed(y)
              yield* driver.copy(y.address, x.address, size, producer.id)
              // Freed while the copy may still be queued on the producer's stream.
              yield* release(x)
              // Hand over to the consumer, with the copy to check.
              pending = y
              yield* Deferred.succeed(turns[1 - me]!, round)
            } else {
              const y = pending!
              const z = yield* alloc.allocate(size, consumer.id)
              handed(z)
              yield* driver.fill(z.address, v2, size, consumer.id)
              yield* streams.synchronize(consumer)
              yield* streams.synchronize(producer)
              const zb = yield* driver.read(z.address, size)
              const yb = yield* driver.read(y.address, size)
              mismatches += countMismatches(zb, v2) + countMismatches(yb, v1)
              verified += 2 * size
              yield* release(z)
              yield* release(y)
              // The next round: this stream produces; after the last, both fibers end.
              yield* Deferred.succeed(turns[me]!, round + 1)
              if (round + 1 >= rounds) yield* Deferred.succeed(turns[1 - me]!, round + 1)
            }
          }
        })
      let pending: GpuAllocator.Block | undefined
      const f0 = yield* streams.fork(pair[0], () => worker(0))
      const f1 = yield* streams.fork(pair[1], () => worker(1))
      yield* Deferred.succeed(turns[0]!, 0)
      yield* Fiber.joinAll([f0, f1])
    }))
    // One warm-up round first: the driver keeps some memory of its own once streams, events,
    // memset and copies have been used (2 MiB on the H100), which is not the allocator's.
    yield* exercise(1)
    yield* alloc.emptyCache
    allocations = 0
    reuses = 0
    verified = 0
    freed.length = 0
    const freeBefore = (yield* driver.memGetInfo).free
    yield* exercise(rounds)
    const stats = yield* alloc.stats
    yield* alloc.emptyCache
    const freeAfter = (yield* driver.memGetInfo).free
    const report: StreamsReport = {
      device: driver.info.kind,
      deviceName: driver.info.name,
      rounds,
      allocations,
      crossStreamReuses: reuses,
      bytesVerified: verified,
      mismatches,
      peakReserved: stats.reservedPeak,
      freeBefore,
      freeAfter,
      ok: mismatches === 0 && freeAfter === freeBefore && stats.liveBlocks === 0
    }
    return report
  })
