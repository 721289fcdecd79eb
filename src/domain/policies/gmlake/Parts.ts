/**
 * How the stitching allocator gets its replaceable parts: the physical pool and the stitcher.
 *
 * Note [Replaceable parts]
 * ------------------------
 * The policy decides; the pool keeps the chunks and the stitcher the views. Both are built by
 * factories the allocator is given, so a user can put another pool or stitcher under the same
 * policy: one that counts, one that checks, one that lends chunks to a peer. A replacement
 * extends the default class (its fields are the parts' shared state, read directly on the hot
 * path, so a replacement overrides methods and keeps the fields consistent). The Effect services
 * `services/Pool.ts` and `services/Stitcher.ts` carry these factories, and the gmlake allocator
 * layer builds the allocator from whatever layers provide them. Factories are called once per
 * allocator: nothing here is on the hot path.
 *
 * @since 0.1.0
 */
import type { DriverPort } from "../../DriverPort.ts"
import { ChunkPool } from "./Pool.ts"
import type { Segments } from "./Segments.ts"
import { Stitcher } from "./Stitcher.ts"

/** What a stitcher is built over. @category models */
export interface StitcherInput {
  readonly port: DriverPort
  readonly chunks: ChunkPool
  readonly segments: Segments
  /** A cached view serves requests of at least `1 / reuseLimit` of its size. */
  readonly reuseLimit: number
  /** Bytes of cached views kept before the least recently released is evicted. */
  readonly maxCached: number
}

/** Factories of the replaceable parts (Note [Replaceable parts]). @category models */
export interface PartFactories {
  readonly pool: () => ChunkPool
  readonly stitcher: (input: StitcherInput) => Stitcher
}

/** The default pool. @category constructors */
export const makePool = (): ChunkPool => new ChunkPool()

/** The default stitcher. @category constructors */
export const makeStitcher = (i: StitcherInput): Stitcher =>
  new Stitcher(i.port, i.chunks, i.segments, i.reuseLimit, i.maxCached)

/** The default parts. @category constructors */
export const defaultParts: PartFactories = { pool: makePool, stitcher: makeStitcher }
