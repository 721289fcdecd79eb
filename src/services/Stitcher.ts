/**
 * The stitcher of the gmlake allocator as a service: how its views over the pool's chunks are made
 * and cached (Note [Replaceable parts] in `domain/policies/gmlake/Parts.ts`). The value is a plain
 * object whose `make` is a plain synchronous call, made once per allocator.
 *
 * @since 0.1.0
 */
import { Context, Layer } from "effect"
import { makeStitcher, type StitcherInput } from "../domain/policies/gmlake/Parts.ts"
import type { Stitcher as StitcherPart } from "../domain/policies/gmlake/Stitcher.ts"

/** @category services */
export class Stitcher extends Context.Service<Stitcher, {
  /** A fresh stitcher for one allocator, over its pool and segments. */
  readonly make: (input: StitcherInput) => StitcherPart
}>()("gmlake/Stitcher") {}

/** The default stitcher: views cached up to the configured bytes, least recently released evicted first. @category layers */
export const layer: Layer.Layer<Stitcher> = Layer.succeed(Stitcher, Stitcher.of({ make: makeStitcher }))
