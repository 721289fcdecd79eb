/**
 * The allocator front end as an Effect service: allocate and free on a device, explicitly or tied
 * to a scope, with typed errors and statistics.
 *
 * The synchronous core (`domain/Allocator.ts`) does the work; each operation here is one
 * `Effect.suspend` around a core call (about 0.1 microsecond inside a running fiber, EFFECT4.md
 * section i), and `core` is exposed for loops that must not pay even that (trace replay).
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer, type Scope } from "effect"
import type { Allocator, PolicyName } from "../domain/Allocator.ts"
import { DriverError, InvalidBlockError, InvalidRequestError, OutOfMemoryError } from "../domain/Errors.ts"
import type { TrackedPort } from "../layers/TrackedPort.ts"
import { type AllocatorStats, StatsAllocator } from "../domain/adaptors/Stats.ts"
import type { Address, BlockId } from "../domain/Units.ts"
import { Driver } from "./Driver.ts"

/** A live allocation. @category models */
export interface Block {
  readonly id: BlockId
  readonly address: Address
  readonly size: number
  readonly stream: number
}

/** Errors an allocation can fail with. @category errors */
export type AllocateError = OutOfMemoryError | InvalidRequestError | DriverError

/** @category services */
export class GpuAllocator extends Context.Service<GpuAllocator, {
  readonly policy: PolicyName
  /** The synchronous core, wrapped in statistics. */
  readonly core: StatsAllocator
  readonly allocate: (size: number, stream?: number) => Effect.Effect<Block, AllocateError>
  /** Frees a block; `deferred` keeps it unavailable until `complete` (cross-stream use). */
  readonly free: (block: Block, deferred?: boolean) => Effect.Effect<void, InvalidBlockError>
  readonly complete: (block: Block) => Effect.Effect<void, InvalidBlockError>
  /** Allocates a block that is freed when the current scope closes, whatever happens. */
  readonly allocateScoped: (size: number, stream?: number) => Effect.Effect<Block, AllocateError, Scope.Scope>
  readonly emptyCache: Effect.Effect<void, DriverError>
  readonly stats: Effect.Effect<AllocatorStats>
}>()("gmlake/GpuAllocator") {}

/** Runs a core call, turning the typed errors it throws into failures; anything else is a defect. */
const run = <A, E>(f: () => A, isExpected: (e: unknown) => e is E): Effect.Effect<A, E> =>
  Effect.suspend(() => {
    try {
      return Effect.succeed(f())
    } catch (e) {
      if (isExpected(e)) return Effect.fail(e)
      throw e
    }
  })

const isAllocateError = (e: unknown): e is AllocateError =>
  e instanceof OutOfMemoryError || e instanceof InvalidRequestError || e instanceof DriverError
const isInvalidBlock = (e: unknown): e is InvalidBlockError => e instanceof InvalidBlockError
const isDriverError = (e: unknown): e is DriverError => e instanceof DriverError

/**
 * Builds the allocator service over the session's `Driver`, with the core that `make` builds on
 * the driver's port. The core lives as long as the layer; the driver's own registry gives back
 * whatever it still holds when the session closes (Note [Handle ownership]).
 * @category layers
 */
export const layer = (make: (port: TrackedPort) => Allocator): Layer.Layer<GpuAllocator, never, Driver> =>
  Layer.effect(
    GpuAllocator,
    Effect.gen(function*() {
      const driver = yield* Driver
      const core = new StatsAllocator(make(driver.port))
      const allocate = (size: number, stream = 0) =>
        run(() => {
          const id = core.malloc(size, stream)
          return { id, address: core.address(id), size, stream } satisfies Block
        }, isAllocateError)
      // Scoped blocks still owed a release. A block freed by hand leaves the set, so that its
      // finalizer does not free a later block that reuses the same id.
      const scoped = new Set<Block>()
      const free = (block: Block, deferred?: boolean) =>
        run(() => {
          core.free(block.id, deferred)
          scoped.delete(block)
        }, isInvalidBlock)
      return GpuAllocator.of({
        policy: core.policy,
        core,
        allocate,
        free,
        complete: (block) => run(() => core.complete(block.id), isInvalidBlock),
        allocateScoped: (size, stream) =>
          Effect.acquireRelease(
            Effect.tap(allocate(size, stream), (b) => Effect.sync(() => scoped.add(b))),
            // Releases cannot fail; a block already freed by hand is skipped.
            (b) => scoped.has(b) ? Effect.ignore(free(b)) : Effect.void
          ),
        emptyCache: run(() => core.emptyCache(), isDriverError),
        stats: Effect.sync(() => core.stats())
      })
    })
  )
