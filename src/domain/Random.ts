/**
 * A small seedable generator (Mulberry32) for everything that must be reproducible from a seed:
 * fault injection, synthetic traces.
 *
 * @since 0.1.0
 */

/** Returns a generator of floats in [0, 1), determined by `seed`. @category constructors */
export const mulberry32 = (seed: number): () => number => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
