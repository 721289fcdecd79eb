/**
 * The physical pool of the gmlake allocator as a service: how its chunk pool is made (Note
 * [Replaceable parts] in `domain/policies/gmlake/Parts.ts`). The value is a plain object whose
 * `make` is a plain synchronous call, made once per allocator; the pool it returns is used on the
 * hot path with no Effect in between.
 *
 * @since 0.1.0
 */
import { Context, Layer } from "effect"
import { makePool } from "../domain/policies/gmlake/Parts.ts"
import type { ChunkPool } from "../domain/policies/gmlake/Pool.ts"

/** @category services */
export class Pool extends Context.Service<Pool, {
  /** A fresh pool for one allocator. */
  readonly make: () => ChunkPool
}>()("gmlake/Pool") {}

/** The default pool: chunks created on the allocator's own device. @category layers */
export const layer: Layer.Layer<Pool> = Layer.succeed(Pool, Pool.of({ make: makePool }))
