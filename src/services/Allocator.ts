/**
 * The allocator front end as an Effect service: allocate and free on a device, explicitly or tied
 * to a scope, with typed errors and statistics.
 *
 * The synchronous core (`domain/Allocator.ts`) does the work; each operation here is one
 * `Effect.suspend` around a core call (about 0.1 microsecond inside a running fiber, measured on
 * Effect 4 under Node 24), and `core` is exposed for loops that must not pay even that (trace replay).
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer, type Scope } from "effect"
import type { Allocator, PolicyName } from "../domain/Allocator.ts"
import type { DevicePort } from "../domain/DevicePort.ts"
import { DriverError, InvalidBlockError, InvalidRequestError, OutOfMemoryError } from "../domain/Errors.ts"
import { type AllocatorStats, StatsAllocator } from "../domain/adaptors/Stats.ts"
import type { Address, BlockId } from "../domain/Units.ts"
import { Driver } from "./Driver.ts"

/**
 * The key of a block's owner: the allocator service that handed it out. A symbol, so that it
 * stays out of JSON and of the fields a user reads, yet survives `{ ...block }`.
 * @category models
 */
export const blockOwner: unique symbol = Symbol.for("gmlake/Block/owner")

/** A live allocation. @category models */
export interface Block {
  readonly id: BlockId
  readonly address: Address
  readonly size: number
  readonly stream: number
  /** The allocator that handed it out (Note [Checking blocks]). */
  readonly [blockOwner]: object
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

/**
 * Note [Checking blocks]
 * ----------------------
 * `free` and `complete` take the block value the caller holds. Its `id` alone is what the core
 * needs, but trusting it would let a wrong value do damage: a block of another allocator (ids
 * are small integers, so another allocator's id is often live here too), or a block whose
 * address was changed by hand, would free whatever live block has that id. So each service
 * tags its blocks with an owner token and remembers every block it handed out until it is
 * freed (or, after a deferred free, completed); a value is accepted only when it carries this
 * service's token and its id, address, size and stream are those handed out. Anything else,
 * `null` and `undefined` included, is an `InvalidBlockError` and changes nothing.
 */
const describeBlock = (block: unknown): string =>
  block === null ? "null" : block === undefined ? "undefined" : `a value of type ${typeof block}`

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
export const layer = (make: (port: DevicePort) => Allocator): Layer.Layer<GpuAllocator, never, Driver> =>
  Layer.effect(
    GpuAllocator,
    Effect.gen(function*() {
      const driver = yield* Driver
      const core = new StatsAllocator(make(driver.port))
      // Note [Checking blocks]
      const owner = {}
      const handedOut = new Map<BlockId, Block>()
      const allocate = (size: number, stream = 0) =>
        run(() => {
          const id = core.malloc(size, stream)
          const block: Block = { id, address: core.address(id), size, stream, [blockOwner]: owner }
          handedOut.set(id, block)
          return block
        }, isAllocateError)
      /** The id of `block` if it is one this service handed out, unchanged; else `InvalidBlockError`. */
      const check = (block: Block, operation: string): BlockId => {
        if (typeof block !== "object" || block === null) {
          throw new InvalidBlockError({ block: Number.NaN, operation, detail: `expected a block, got ${describeBlock(block)}` })
        }
        const id = block.id
        if (block[blockOwner] !== owner) {
          throw new InvalidBlockError({
            block: typeof id === "number" ? id : Number.NaN,
            operation,
            detail: "not a block of this allocator (handed out by another one, or made by hand)"
          })
        }
        const mine = handedOut.get(id)
        if (mine === undefined) return id // freed already: the core says so, in its words
        for (const field of ["address", "size", "stream"] as const) {
          if (block[field] !== mine[field]) {
            throw new InvalidBlockError({
              block: id,
              operation,
              detail: `its ${field} is ${String(block[field])}, but the block was handed out with ${field} ${mine[field]}`
            })
          }
        }
        return id
      }
      // Scoped blocks still owed a release, by id. A block freed by hand (or through a copy of
      // it) leaves the map, so that its finalizer does not free a later block with the same id.
      const scoped = new Map<BlockId, Block>()
      const free = (block: Block, deferred?: boolean) =>
        run(() => {
          const id = check(block, "free")
          core.free(id, deferred)
          if (deferred !== true) handedOut.delete(id)
          scoped.delete(id)
        }, isInvalidBlock)
      return GpuAllocator.of({
        policy: core.policy,
        core,
        allocate,
        free,
        complete: (block) =>
          run(() => {
            const id = check(block, "complete")
            core.complete(id)
            handedOut.delete(id)
          }, isInvalidBlock),
        allocateScoped: (size, stream) =>
          Effect.acquireRelease(
            Effect.tap(allocate(size, stream), (b) => Effect.sync(() => scoped.set(b.id, b))),
            // Releases cannot fail; a block already freed by hand is skipped.
            (b) => scoped.get(b.id) === b ? Effect.ignore(free(b)) : Effect.void
          ),
        emptyCache: run(() => core.emptyCache(), isDriverError),
        stats: Effect.sync(() => core.stats())
      })
    })
  )
