/**
 * The physical pool of the stitching allocator: its chunks (one `cuMemCreate` handle each), where
 * each lives (its segment, its start there, the chunk after it), which are wholly free, and which
 * stitched views map them. Plain parallel arrays indexed by chunk id (Note [Block table] in
 * `Segments.ts`); the arrays are never replaced, so the other parts keep references to them.
 *
 * @since 0.1.0
 */

/**
 * The chunks. Fields are shared with the other parts of the allocator (`Segments`, `Stitcher`,
 * `Selection`, `Pressure`), which read and write them directly on the hot path.
 * @category models
 */
export class ChunkPool {
  readonly cHandle: Array<number> = []
  /** The chunk's segment, or -1 once given back to the driver. */
  readonly cSeg: Array<number> = []
  readonly cStart: Array<number> = []
  readonly cSize: Array<number> = []
  /** The chunk right after, or -1 at a hole or the end (Note [Chunk map] in `Segments.ts`). */
  readonly cNext: Array<number> = []
  /** 1 when wholly free (Note [Whole chunks] in `Segments.ts`). */
  readonly cFree: Array<number> = []
  /** A hint: the free block that last held the chunk. */
  readonly cBlk: Array<number> = []
  /** Views mapping the chunk (Note [Stitched view cache] in `Stitcher.ts`). */
  readonly cViews: Array<Array<number> | null> = []
  /** The sequence number of the free that made the chunk wholly free (Note [Cross-stream adoption]). */
  readonly cFreedAt: Array<number> = []
  /**
   * Spans of the chunk held by another stream's view (Note [Cross-stream lending]): while any are,
   * the chunk is mapped into no new view of its own stream, even where partly free.
   */
  readonly cLent: Array<number> = []
  /** Times the chunk moved to another stream's segment (Note [Cross-stream lending]). */
  readonly cMoves: Array<number> = []
  /** The sequence number of the latest free, bumped by the allocator at each. */
  freeSeq = 0
  private readonly chunkFreeIds: Array<number> = []
  /** Bytes of all live chunks: what the allocator holds of the device. */
  reservedBytes = 0

  /** A chunk for `handle`, `size` bytes at `start` of segment `seg`, busy and mapped by no view. */
  add(handle: number, seg: number, start: number, size: number): number {
    let c: number
    if (this.chunkFreeIds.length > 0) {
      c = this.chunkFreeIds.pop()!
      this.cHandle[c] = handle
      this.cSeg[c] = seg
      this.cStart[c] = start
      this.cSize[c] = size
      this.cNext[c] = -1
      this.cFree[c] = 0
      this.cBlk[c] = -1
      this.cViews[c] = null
      this.cFreedAt[c] = this.freeSeq
      this.cLent[c] = 0
      this.cMoves[c] = 0
    } else {
      c = this.cHandle.length
      this.cHandle.push(handle)
      this.cSeg.push(seg)
      this.cStart.push(start)
      this.cSize.push(size)
      this.cNext.push(-1)
      this.cFree.push(0)
      this.cBlk.push(-1)
      this.cViews.push(null)
      this.cFreedAt.push(this.freeSeq)
      this.cLent.push(0)
      this.cMoves.push(0)
    }
    this.reservedBytes += size
    return c
  }

  /** Forgets chunk `c`, whose handle has gone back to the driver; its id is reused. */
  remove(c: number): void {
    this.reservedBytes -= this.cSize[c]!
    this.cSeg[c] = -1
    this.chunkFreeIds.push(c)
  }

  /** End address of chunk `c` in its segment. */
  end(c: number): number {
    return this.cStart[c]! + this.cSize[c]!
  }
}
