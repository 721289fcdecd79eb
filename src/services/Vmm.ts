/**
 * The VMM primitives as scoped resources: a physical chunk, a virtual range and a mapping, each
 * acquired with `acquireRelease` and given back when its scope closes (unmap before the range is
 * freed, the range before the chunk is released: scopes close in reverse order of acquisition).
 *
 * This is the API for code that holds handles itself (the selftest, a user stitching by hand).
 * The allocator core does not use it per allocation (Note [Handle ownership]); both go through
 * the session's handle registry, so a session never ends with a live handle.
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer, type Scope } from "effect"
import type { DriverError } from "../domain/Errors.ts"
import type { Address, ChunkHandle } from "../domain/Units.ts"
import { executeMap, executeUnmap } from "../domain/vmm/Plan.ts"
import { Driver, driverCall } from "./Driver.ts"

/** A reserved virtual range. @category models */
export interface Range {
  readonly address: Address
  readonly bytes: number
}

/** A physical chunk. @category models */
export interface Chunk {
  readonly handle: ChunkHandle
  readonly bytes: number
}

/** @category services */
export class Vmm extends Context.Service<Vmm, {
  readonly granularity: number
  readonly chunk: (bytes: number) => Effect.Effect<Chunk, DriverError, Scope.Scope>
  readonly range: (bytes: number) => Effect.Effect<Range, DriverError, Scope.Scope>
  /** Maps `chunk` at `address` and grants read-write access; unmapped when the scope closes. */
  readonly map: (address: Address, chunk: Chunk) => Effect.Effect<void, DriverError, Scope.Scope>
  /**
   * Maps `chunks` side by side into a fresh range with one set-access over it (one map plan,
   * Note [Map plans] in `domain/vmm/Plan.ts`); the range is unmapped and freed when the scope
   * closes, the chunks stay the caller's.
   */
  readonly stitch: (chunks: ReadonlyArray<Chunk>) => Effect.Effect<Range, DriverError, Scope.Scope>
}>()("gmlake/Vmm") {}


/** Releases cannot fail; a failure is left to the session registry, which reports it. */
const release = (f: () => void) =>
  Effect.sync(() => {
    try {
      f()
    } catch {
      // the registry still holds the handle and gives it back at session close
    }
  })

/** @category layers */
export const layer: Layer.Layer<Vmm, never, Driver> = Layer.effect(
  Vmm,
  Effect.gen(function*() {
    const { port } = yield* Driver
    return Vmm.of({
      granularity: port.granularity,
      chunk: (bytes) =>
        Effect.acquireRelease(
          driverCall(() => ({ handle: port.memCreate(bytes), bytes })),
          (c) => release(() => port.memRelease(c.handle))
        ),
      range: (bytes) =>
        Effect.acquireRelease(
          driverCall(() => ({ address: port.addressReserve(bytes), bytes })),
          (r) => release(() => port.addressFree(r.address, r.bytes))
        ),
      map: (address, chunk) =>
        Effect.acquireRelease(
          driverCall(() => {
            executeMap(port, { reserve: 0, at: address, sizes: [chunk.bytes], handles: [chunk.handle], create: false })
          }),
          () => release(() => port.memUnmap(address, chunk.bytes))
        ),
      stitch: (chunks) =>
        Effect.acquireRelease(
          driverCall(() => {
            const sizes = chunks.map((c) => c.bytes)
            const bytes = sizes.reduce((a, b) => a + b, 0)
            const address = executeMap(port, { reserve: bytes, at: 0, sizes, handles: chunks.map((c) => c.handle), create: false })
            return { address, bytes }
          }),
          (r) => release(() => executeUnmap(port, { at: r.address, bytes: r.bytes, handles: [], freeBase: r.address, freeBytes: r.bytes }))
        )
    })
  })
)
