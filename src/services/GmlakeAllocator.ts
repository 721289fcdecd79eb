/**
 * The gmlake allocator service, composed from its parts: the session's `Driver` (the device), the
 * `Pool` (physical chunks) and the `Stitcher` (views). Another pool or stitcher is a different
 * layer for that service; the policy is the same (Note [Replaceable parts] in
 * `domain/policies/gmlake/Parts.ts`).
 *
 * @since 0.1.0
 */
import { Effect, Layer } from "effect"
import { makeAllocator, type PolicyOptions } from "../domain/policies/Policies.ts"
import * as GpuAllocator from "./Allocator.ts"
import type { Driver } from "./Driver.ts"
import * as Pool from "./Pool.ts"
import * as Stitcher from "./Stitcher.ts"

/**
 * The gmlake allocator over whatever `Pool` and `Stitcher` are provided.
 * @category layers
 */
export const layerFromParts = (
  options: PolicyOptions = {}
): Layer.Layer<GpuAllocator.GpuAllocator, never, Driver | Pool.Pool | Stitcher.Stitcher> =>
  Layer.unwrap(Effect.gen(function*() {
    const pool = yield* Pool.Pool
    const stitcher = yield* Stitcher.Stitcher
    const parts = { pool: pool.make, stitcher: stitcher.make }
    return GpuAllocator.layer((port) => makeAllocator("gmlake", port, { ...options, gmlakeParts: parts }, port))
  }))

/**
 * The gmlake allocator with the default pool and stitcher.
 * @category layers
 */
export const layer = (options: PolicyOptions = {}): Layer.Layer<GpuAllocator.GpuAllocator, never, Driver> =>
  layerFromParts(options).pipe(Layer.provide(Layer.mergeAll(Pool.layer, Stitcher.layer)))
