/**
 * A GPU session as an Effect program: two streams' work as fibers, allocations tied to scopes,
 * an interruption, and nothing left on the device afterwards. Runs on the simulated device by
 * default; `GMLAKE_DEVICE=cuda` runs it on GPU 0.
 *
 *   npx node examples/two-streams.ts
 */
import { Effect, Fiber, Layer } from "effect"
import { makeAllocator } from "../src/domain/policies/Policies.ts"
import { layerCuda } from "../src/layers/cuda/CudaDriverLayer.ts"
import { SimDriver } from "../src/layers/sim/SimDriver.ts"
import { layerSimWith } from "../src/layers/sim/SimDriverLayer.ts"
import * as GpuAllocator from "../src/services/Allocator.ts"
import { Driver } from "../src/services/Driver.ts"
import * as Streams from "../src/services/Streams.ts"

const MiB = 1024 * 1024

// One stream's work: allocate in a scope per step, fill on the stream, forever (until interrupted).
const work = (stream: Streams.Stream) =>
  Effect.gen(function*() {
    const alloc = yield* GpuAllocator.GpuAllocator
    const driver = yield* Driver
    for (let step = 0; ; step++) {
      yield* Effect.scoped(Effect.gen(function*() {
        const activations = yield* alloc.allocateScoped((step % 5 + 1) * MiB, stream.id)
        const scratch = yield* alloc.allocateScoped(3 * MiB + 512, stream.id)
        yield* driver.fill(activations.address, step & 255, activations.size, stream.id)
        yield* driver.copy(scratch.address, activations.address, scratch.size, stream.id)
      })) // both blocks are freed here, whatever happened inside
      yield* Effect.yieldNow
    }
  })

export const program = Effect.gen(function*() {
  const streams = yield* Streams.Streams
  const compute = yield* streams.make // a real CUstream on the GPU, destroyed with the scope
  const copies = yield* streams.make
  const a = yield* streams.fork(compute, work)
  const b = yield* streams.fork(copies, work)
  yield* Effect.sleep("50 millis")
  yield* Fiber.interrupt(a) // finalizers of the interrupted fiber free its blocks
  const stats = yield* (yield* GpuAllocator.GpuAllocator).stats
  return { allocations: stats.allocations, reservedPeak: stats.reservedPeak, stillRunning: b }
}).pipe(Effect.scoped) // closing the scope interrupts the other fiber and destroys both streams

/** The session: the stitching allocator with safe cross-stream reuse (opt-in), over a device. */
export const session = (device: Layer.Layer<Driver, unknown>) =>
  Layer.mergeAll(
    GpuAllocator.layer((port) => makeAllocator("gmlake", port, { crossStream: true }, port)),
    Streams.layer
  ).pipe(Layer.provideMerge(device))

if (import.meta.main) {
  const sim = new SimDriver()
  const device = process.env["GMLAKE_DEVICE"] === "cuda" ? layerCuda() : layerSimWith(sim)
  const result = await Effect.runPromise(program.pipe(Effect.provide(session(device))))
  console.log(`${result.allocations} allocations, peak reserved ${result.reservedPeak} B`)
  if (process.env["GMLAKE_DEVICE"] !== "cuda") console.log(`handles alive after the session: ${sim.liveHandles()}`)
}
