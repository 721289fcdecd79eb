/**
 * Streams as scoped resources, and work on a stream as a fiber under the session's scope.
 *
 * Note [Streams as fibers]
 * ------------------------
 * A stream (a `CUstream` on the GPU, a simulated one on the simulator) is acquired with
 * `acquireRelease`: its release synchronizes it, then destroys it. Work for a stream is an Effect
 * run with `fork`, which forks it into the caller's scope: closing the scope (normally, on a
 * failure, or on an interruption) interrupts the stream's fiber first, runs the finalizers of
 * whatever it allocated in its own scopes (scoped blocks are freed), then releases the stream;
 * the session's handle registry gives back anything left (Note [Handle ownership]). So a mapping
 * cannot outlive the session, whatever a stream's work did.
 *
 * @since 0.1.0
 */
import { Context, Effect, type Fiber, Layer, type Scope } from "effect"
import type { DriverError } from "../domain/Errors.ts"
import { Driver, driverCall } from "./Driver.ts"

/** A stream of the session's device. @category models */
export interface Stream {
  readonly id: number
}

/** @category services */
export class Streams extends Context.Service<Streams, {
  /** The default stream (id 0); it is never destroyed. */
  readonly default: Stream
  /** A new stream, synchronized and destroyed when the scope closes. */
  readonly make: Effect.Effect<Stream, DriverError, Scope.Scope>
  /** Waits for the work queued on the stream. */
  readonly synchronize: (stream: Stream) => Effect.Effect<void, DriverError>
  /** Runs `work` on its own fiber in the current scope; closing the scope interrupts it. */
  readonly fork: <A, E, R>(
    stream: Stream,
    work: (stream: Stream) => Effect.Effect<A, E, R>
  ) => Effect.Effect<Fiber.Fiber<A, E>, never, R | Scope.Scope>
}>()("gmlake/Streams") {}


/**
 * Streams over the session's `Driver`.
 * @category layers
 */
export const layer: Layer.Layer<Streams, never, Driver> = Layer.effect(
  Streams,
  Effect.gen(function*() {
    const { port } = yield* Driver
    return Streams.of({
      default: { id: 0 },
      make: Effect.acquireRelease(
        driverCall(() => ({ id: port.streamCreate() })),
        // Releases cannot fail: a stream that will not synchronize is still destroyed, and one
        // that cannot be destroyed is left to the session's registry.
        (s) =>
          Effect.sync(() => {
            try {
              port.streamSynchronize(s.id)
            } catch {
              // destroyed anyway: the driver defers the destruction until its work is done
            }
            try {
              port.streamDestroy(s.id)
            } catch {
              // still in the registry, which gives it back at session close
            }
          })
      ),
      synchronize: (s) => driverCall(() => port.streamSynchronize(s.id)),
      fork: (stream, work) => Effect.forkScoped(work(stream))
    })
  })
)
