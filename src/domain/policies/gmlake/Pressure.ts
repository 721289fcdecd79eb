/**
 * Giving memory back: what the stitching allocator does when the driver refuses it, and on
 * `emptyCache`.
 *
 * Note [Pressure]
 * ---------------
 * When the driver refuses memory (or a step of a stitch), the allocator evicts every cached
 * view, gives back every chunk that is wholly free and mapped by no view in use (unmapped from
 * its segment in one call per run of adjacent chunks, then released), frees the ranges of
 * segments left empty, and tries once more. Only then does it report `OutOfMemoryError`, with
 * the request, the stream, what it still holds, the free bytes in its cache, the largest free
 * block of the stream and the device's capacity. Chunks given back this way are counted in
 * `releasedForPressure`. Other driver failures (an injected fault, an invalid value) take the
 * same path and surface as the `DriverError` itself if the retry fails too.
 *
 * Note [Driver failures]
 * ----------------------
 * Every step that acquires something (create, reserve, map, set access) may fail. Each
 * acquisition is one map plan (Note [Map plans] in `vmm/Plan.ts`) that undoes what it did on the
 * device (unmap, release, free range) before the policy touches its own state, so a failed
 * `malloc` leaves both as they were, apart from memory that a successful growth added to the free
 * cache before a later step failed.
 *
 * @since 0.1.0
 */
import type { DriverPort } from "../../DriverPort.ts"
import type { ChunkPool } from "./Pool.ts"
import { FREE, type Segments } from "./Segments.ts"
import { V_CLAIMING, type Stitcher } from "./Stitcher.ts"

/**
 * Gives wholly free chunks back to the driver (Note [Pressure]).
 * @category models
 */
export class Pressure {
  private readonly port: DriverPort
  private readonly chunks: ChunkPool
  private readonly segments: Segments
  private readonly stitcher: Stitcher
  /** Evicts a view that maps a chunk being taken out (one closure per allocator, not per call). */
  private readonly evict = (view: number): void => this.stitcher.evict(view)

  constructor(port: DriverPort, chunks: ChunkPool, segments: Segments, stitcher: Stitcher) {
    this.port = port
    this.chunks = chunks
    this.segments = segments
    this.stitcher = stitcher
  }

  /** Gives back every wholly free chunk that no view in use maps; returns how many. */
  releaseFreeChunks(): number {
    const sg = this.segments
    const chunks = this.chunks
    let n = 0
    for (let s = 0; s < sg.pools.length; s++) {
      const pool = sg.pools[s]
      if (pool === undefined) continue
      const ids: Array<number> = []
      for (let i = 0; i < pool.free.length; i++) {
        const x = pool.free.idAt(i)
        if (sg.bRun[x]! > 0) ids.push(x)
      }
      for (let i = 0; i < ids.length; i++) {
        let cur = ids[i]!
        while (cur >= 0 && sg.bState[cur] === FREE && sg.bRun[cur]! > 0) {
          const seg = sg.bSeg[cur]!
          const a = sg.bStart[cur]!
          sg.runOf(seg, a, a + sg.bSize[cur]!)
          const re = sg.re
          let from = sg.rs
          while (from < re && !this.releasable(sg.chunkAt(seg, from))) from = chunks.end(sg.chunkAt(seg, from))
          if (from >= re) break
          let to = from
          let count = 0
          while (to < re && this.releasable(sg.chunkAt(seg, to))) {
            to = chunks.end(sg.chunkAt(seg, to))
            count++
          }
          n += count
          cur = this.releaseChunks(cur, from, to)
        }
      }
    }
    return n
  }

  /** Wholly free chunks can go back to the driver unless a view in use maps them. */
  private releasable(c: number): boolean {
    const vs = this.chunks.cViews[c]
    if (vs !== null && vs !== undefined) {
      const vLive = this.stitcher.vLive
      for (let i = 0; i < vs.length; i++) if (vLive[vs[i]!]! >= 0 || vLive[vs[i]!] === V_CLAIMING) return false
    }
    return true
  }

  /** Gives back the chunks in [from, to) of free block `x`; returns the free block after them, or -1. */
  private releaseChunks(x: number, from: number, to: number): number {
    return this.segments.cutChunks(this.port, this.evict, x, from, to, null)
  }
}
