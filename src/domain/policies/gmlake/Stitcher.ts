/**
 * The stitcher: views (GMLake's sBlocks), fresh virtual ranges that map chunks of the pool side by
 * side, and the cache of views whose blocks were freed.
 *
 * Note [Stitched view cache]
 * --------------------------
 * A view lives on after its block is freed, cached, indexed by size in its stream's pool. A
 * request that no free block fits looks there first, from the smallest view of at least its size
 * up, among the views stitched for a block of at most `reuseLimit` times its size (the first 256
 * such), for one whose bytes it would take are all free again: its chunks wholly free, except
 * that a view that began inside a partly used chunk (Note [Stitch selection]) needs that chunk
 * free only from where its block began, and the last
 * chunk the request reaches into needs to be free only as far as it reaches. Whole chunks are
 * checked first (a flag each; Note [Failed view memo] skips most walks), the partly free ends last
 * (a block lookup each). Checking at that moment, on the slow path, costs nothing on the hot
 * path, where keeping a per-view count of busy chunks up to date cost a tenth of the replay time.
 * The request takes the view's first bytes; chunks past them stay free in their segments (they
 * are no part of the block). The limit counts the block a view was stitched for (`vMade`), not the
 * bytes it maps: a view maps whole chunks, so one stitched for 0.86 MiB from the end of a 2 MiB
 * chunk and the start of a 64 MiB one maps 66 MiB, and measured by that it could never serve its
 * own request again; the same view was then stitched anew every step, for ever (runs of 5,000
 * random steps found such a step in one of two; three are tests in `steady-state.test.ts`). Views are visited in the order of the bytes they map,
 * as before, up to the limit plus the most any view maps past its block, so where a view was found
 * before the same one is found now (the bundled traces' decisions are unchanged). A hit makes no
 * driver call at all. Views are evicted, least recently released first, when the cached ones pass
 * `maxCachedStitchedBytes`; all of them under pressure and by `emptyCache`; and any that maps a
 * chunk given back to the driver. Eviction unmaps and frees the view's range only (one unmap over
 * the whole range, which is all mapped); its chunks stay with their segments.
 *
 * Note [Failed view memo]
 * -----------------------
 * Most cached views a request examines fail in the walk over their middle chunks: a chunk not
 * wholly free that the request would cover to its end (`usableView`). The view remembers that
 * chunk, `vFailChunk`, and `vFailEnd`, the view's bytes from its start through it. While that chunk
 * is still not wholly free, a request with `rr + off >= vFailEnd` (`off` being where it would start
 * in the first chunk) covers it wholly again, so the view is unusable again and is skipped on one
 * load: the walk would stop there or earlier, and any busy chunk before it is covered wholly too
 * (the request reaches past its end), so the walk would fail, not find a partly free last chunk.
 * Chunk sizes never change while a view maps them, a chunk given back to the driver evicts its
 * views, and a new view starts with no memo, so the memo never names a stale chunk. A skipped view
 * counts against the 256 tries as a walked one does: the decisions are those without the memo
 * (`compare --json` byte-identical but for the timings). In a llama1b_ckpt_varlen replay 51,886 of
 * the 52,381 views that failed partway through a walk are skipped instead. The walks were short
 * (mostly one chunk), so the memo alone saved ~4% of `usableView`'s time: the cost is the 74,217
 * views visited per replay, a few loads each, and reaching a view's chunk list was one more
 * pointer to follow. With the first chunk kept flat (`vFirst`) and the list read only for a walk,
 * `usableView` takes 0.81-0.86 of its earlier time.
 *
 * @since 0.1.0
 */
import type { DriverPort } from "../../DriverPort.ts"
import { DriverError } from "../../Errors.ts"
import type { Address } from "../../Units.ts"
import { executeMap, executeUnmap } from "../../vmm/Plan.ts"
import type { ChunkPool } from "./Pool.ts"
import type { Segments, StreamPool } from "./Segments.ts"

/** View use: `vLive` holds the grant id while a view is in use, else one of these. @category models */
export const V_CACHED = -1
/** @category models */
export const V_DEAD = -2
/** @category models */
export const V_CLAIMING = -3

/** Cached views a request examines at most (Note [Stitched view cache]). */
const MAX_VIEW_TRIES = 256

const noHandles: ReadonlyArray<number> = []

/**
 * Views and their cache. Fields are shared with the other parts of the allocator.
 * @category models
 */
export class Stitcher {
  readonly vBase: Array<number> = []
  readonly vSize: Array<number> = []
  readonly vStream: Array<number> = []
  readonly vChunks: Array<Array<number>> = []
  /** `vChunks[v][0]`, kept flat: `usableView` rejects most views without reaching their list. */
  private readonly vFirst: Array<number> = []
  /** Where the view's first block started in its first chunk. */
  readonly vOff: Array<number> = []
  readonly vLive: Array<number> = []
  /**
   * The chunk on which `usableView` last found the view unusable partway through its walk, or -1,
   * and the view's bytes up to that chunk's end (Note [Failed view memo]).
   */
  private readonly vFailChunk: Array<number> = []
  private readonly vFailEnd: Array<number> = []
  /** The cache's release order (least recent at `lruHead`). */
  private readonly vPrev: Array<number> = []
  private readonly vNext: Array<number> = []
  private readonly viewFreeIds: Array<number> = []
  lruHead = -1
  private lruTail = -1
  cachedBytes = 0
  /** Where a hit's block starts in its view (`usableView`). */
  hitOff = 0
  /** The bytes of the block each view was stitched for. */
  private readonly vMade: Array<number> = []
  /** The most any view maps past the block it was stitched for. */
  private maxOverhang = 0
  /** 1 where a view maps chunks of another stream's segments (Note [Cross-stream lending]). */
  readonly vForeign: Array<number> = []
  /**
   * Whether another stream may take chunk `c` now (wholly free, its last use done); set by the
   * allocator when it lends (Note [Cross-stream lending]). A cached view that would reach another
   * stream's chunk is usable only if this says so.
   */
  lendable: ((c: number) => boolean) | undefined = undefined

  /** `map`'s chunk sizes and handles, reused (Note [Scratch arrays] in `Segments.ts`). */
  private readonly mapSizes: Array<number> = []
  private readonly mapHandles: Array<number> = []

  nStitches = 0
  nStitchedChunks = 0
  nHits = 0
  nEvictions = 0

  private readonly port: DriverPort
  private readonly segments: Segments
  private readonly cFree: Array<number>
  private readonly cSize: Array<number>
  private readonly cStart: Array<number>
  private readonly cSeg: Array<number>
  private readonly cHandle: Array<number>
  private readonly cViews: Array<Array<number> | null>
  private readonly reuseLimit: number
  private readonly maxCached: number

  constructor(port: DriverPort, chunks: ChunkPool, segments: Segments, reuseLimit: number, maxCached: number) {
    this.port = port
    this.segments = segments
    this.cFree = chunks.cFree
    this.cSize = chunks.cSize
    this.cStart = chunks.cStart
    this.cSeg = chunks.cSeg
    this.cHandle = chunks.cHandle
    this.cViews = chunks.cViews
    this.reuseLimit = reuseLimit
    this.maxCached = maxCached
  }

  // --- new views ---------------------------------------------------------------------------------

  /**
   * Maps the chunks of `list` side by side into a fresh range (one map plan: reserve, a map per
   * chunk, one set-access over the whole range) and records the view, claiming, made for a block
   * of `need` bytes from `off`; throws `DriverError` with nothing changed. A list that cannot hold
   * the block is a bug of the selection, thrown before any driver call (a block served past its
   * view's end would alias other memory, and show only as utilization above 1).
   */
  map(list: Array<number>, off: number, stream: number, need: number): number {
    // Note [Scratch arrays] in `Segments.ts` (`list` is kept by the view: not scratch)
    const sizes = this.mapSizes
    const handles = this.mapHandles
    sizes.length = 0
    handles.length = 0
    let total = 0
    for (let i = 0; i < list.length; i++) {
      const c = list[i]!
      sizes.push(this.cSize[c]!)
      handles.push(this.cHandle[c]!)
      total += this.cSize[c]!
    }
    if (total - off < need) {
      throw new Error(`Stitcher: a view of ${total} B from offset ${off} cannot hold ${need} B (the selection fell short)`)
    }
    const base = executeMap(this.port, { reserve: total, at: 0, sizes, handles, create: false })
    const v = this.newView(base, total, stream, list, off)
    this.vMade[v] = need
    let foreign = 0
    const segStream = this.segments.segStream
    for (let i = 0; i < list.length; i++) if (segStream[this.cSeg[list[i]!]!] !== stream) foreign = 1
    this.vForeign[v] = foreign
    if (total - need > this.maxOverhang) this.maxOverhang = total - need
    this.nStitches++
    this.nStitchedChunks += list.length
    this.vLive[v] = V_CLAIMING
    return v
  }

  private newView(base: number, size: number, stream: number, chunks: Array<number>, off: number): number {
    let v: number
    if (this.viewFreeIds.length > 0) {
      v = this.viewFreeIds.pop()!
      this.vBase[v] = base
      this.vSize[v] = size
      this.vStream[v] = stream
      this.vChunks[v] = chunks
      this.vFirst[v] = chunks[0]!
      this.vOff[v] = off
      this.vLive[v] = V_CACHED
      this.vPrev[v] = -1
      this.vNext[v] = -1
      this.vFailChunk[v] = -1
      this.vFailEnd[v] = 0
    } else {
      v = this.vBase.length
      this.vBase.push(base)
      this.vSize.push(size)
      this.vStream.push(stream)
      this.vChunks.push(chunks)
      this.vFirst.push(chunks[0]!)
      this.vOff.push(off)
      this.vLive.push(V_CACHED)
      this.vPrev.push(-1)
      this.vNext.push(-1)
      this.vFailChunk.push(-1)
      this.vFailEnd.push(0)
    }
    for (let i = 0; i < chunks.length; i++) {
      const c = chunks[i]!
      const vs = this.cViews[c]
      if (vs === null || vs === undefined) this.cViews[c] = [v]
      else vs.push(v)
    }
    return v
  }

  // --- the cache ---------------------------------------------------------------------------------

  /** Puts view `v`, whose block was freed, in the cache; then evicts down to the bound. */
  cache(v: number): void {
    this.vLive[v] = V_CACHED
    this.lruPush(v)
    this.cachedBytes += this.vSize[v]!
    this.segments.pools[this.vStream[v]!]!.views.insert(v, this.vSize[v]!, this.vBase[v]!)
  }

  /** Evicts least recently released views until the cache is within its bound. */
  autoEvict(): void {
    if (this.cachedBytes <= this.maxCached) return
    try {
      while (this.cachedBytes > this.maxCached && this.lruHead >= 0) this.evict(this.lruHead)
    } catch (e) {
      // The free itself is done; a view the driver would not unmap stays cached.
      if (!(e instanceof DriverError)) throw e
    }
  }

  /** Evicts every cached view; returns whether there was any. */
  evictAll(): boolean {
    const any = this.lruHead >= 0
    while (this.lruHead >= 0) this.evict(this.lruHead)
    return any
  }

  private lruPush(v: number): void {
    this.vPrev[v] = this.lruTail
    this.vNext[v] = -1
    if (this.lruTail >= 0) this.vNext[this.lruTail] = v
    else this.lruHead = v
    this.lruTail = v
  }

  private lruRemove(v: number): void {
    const p = this.vPrev[v]!
    const n = this.vNext[v]!
    if (p >= 0) this.vNext[p] = n
    else this.lruHead = n
    if (n >= 0) this.vPrev[n] = p
    else this.lruTail = p
    this.vPrev[v] = -1
    this.vNext[v] = -1
  }

  /** Drops cached view `v`: one unmap over its range, then the range (Note [Stitched view cache]). */
  evict(v: number): void {
    const base = this.vBase[v]! as Address
    const size = this.vSize[v]!
    executeUnmap(this.port, { at: base, bytes: size, handles: noHandles, freeBase: base, freeBytes: size })
    this.lruRemove(v)
    this.segments.pools[this.vStream[v]!]!.views.remove(v, size, this.vBase[v]!)
    this.cachedBytes -= size
    const chunks = this.vChunks[v]!
    for (let i = 0; i < chunks.length; i++) {
      const c = chunks[i]!
      const vs = this.cViews[c]!
      if (vs.length === 1) this.cViews[c] = null
      else vs.splice(vs.indexOf(v), 1)
    }
    this.vChunks[v] = []
    this.vLive[v] = V_DEAD
    this.viewFreeIds.push(v)
    this.nEvictions++
  }

  // --- hits --------------------------------------------------------------------------------------

  /**
   * The smallest cached view that can serve `rr` bytes as it is, or -1; sets `hitOff`, where the
   * block starts in it (Note [Stitched view cache]).
   */
  usableView(pool: StreamPool, rr: number): number {
    const views = pool.views
    const segments = this.segments
    const limit = this.reuseLimit * rr
    let tries = MAX_VIEW_TRIES
    const bound = limit + this.maxOverhang
    for (let i = views.findIndex(rr); i >= 0 && i < views.length && views.sizeAt(i) <= bound && tries-- > 0; i++) {
      const v = views.idAt(i)
      if (this.vMade[v]! > limit) continue
      // the first chunk from its start, or from where the view's first block started
      const first = this.vFirst[v]!
      const off = this.cFree[first] === 1 ? 0 : this.vOff[v]!
      if ((off === 0 && this.cFree[first] !== 1) || this.vSize[v]! - off < rr) continue
      // Note [Failed view memo]: the walk below would stop on the same busy chunk
      const fc = this.vFailChunk[v]!
      if (fc >= 0 && this.cFree[fc] !== 1 && rr + off >= this.vFailEnd[v]!) continue
      // whole chunks first (cheap), then the one or two partly free ends (a block lookup each)
      const chunks = this.vChunks[v]!
      let need = rr - (this.cSize[first]! - off)
      let k = 1
      let last = -1
      while (need > 0 && k < chunks.length) {
        const c = chunks[k++]!
        if (this.cFree[c] !== 1) {
          // the last chunk needed may be free only as far as the block would reach into it
          if (need < this.cSize[c]!) last = c
          else {
            this.vFailChunk[v] = c
            this.vFailEnd[v] = rr + off - need + this.cSize[c]!
          }
          break
        }
        need -= this.cSize[c]!
      }
      if (need > 0 && last < 0) continue
      // Note [Cross-stream lending]: another stream's chunks only wholly free and done with
      if (this.vForeign[v] === 1 && !this.foreignOk(v, k)) continue
      if (off > 0) {
        const p = this.cStart[first]! + off
        if (segments.freeBlockOver(first, this.cSeg[first]!, p, this.cStart[first]! + this.cSize[first]!) < 0) continue
      }
      if (last >= 0 && segments.freeBlockOver(last, this.cSeg[last]!, this.cStart[last]!, this.cStart[last]! + need) < 0) {
        continue
      }
      this.hitOff = off
      return v
    }
    return -1
  }

  /** Whether the first `k` chunks of view `v` that belong to other streams may be lent now. */
  private foreignOk(v: number, k: number): boolean {
    const lendable = this.lendable
    if (lendable === undefined) return false
    const chunks = this.vChunks[v]!
    const stream = this.vStream[v]!
    const segStream = this.segments.segStream
    for (let i = 0; i < k; i++) {
      const c = chunks[i]!
      if (segStream[this.cSeg[c]!] !== stream && !lendable(c)) return false
    }
    return true
  }

  /**
   * Takes cached view `v` (from `usableView`) out of the cache, claiming, and claims `rr` bytes of
   * it from `hitOff`; returns the primary blocks claimed. No driver call.
   */
  take(pool: StreamPool, v: number, rr: number): Array<number> {
    pool.views.remove(v, this.vSize[v]!, this.vBase[v]!)
    this.lruRemove(v)
    this.cachedBytes -= this.vSize[v]!
    this.nHits++
    this.vLive[v] = V_CLAIMING
    return this.claimView(v, rr, this.hitOff)
  }

  /** Claims `rr` bytes of view `v` from offset `off` in its first chunk, all free (`usableView`). */
  private claimView(v: number, rr: number, off: number): Array<number> {
    const segments = this.segments
    const chunks = this.vChunks[v]!
    const blks: Array<number> = []
    let need = rr
    let k = 0
    while (need > 0) {
      // the longest run of the view's chunks that are adjacent in one segment
      const c0 = chunks[k++]!
      const seg = this.cSeg[c0]!
      const p = this.cStart[c0]! + off
      let q = this.cStart[c0]! + this.cSize[c0]!
      off = 0
      while (q - p < need && k < chunks.length) {
        const c = chunks[k]!
        if (this.cSeg[c] !== seg || this.cStart[c] !== q) break
        q += this.cSize[c]!
        k++
      }
      if (q - p > need) q = p + need
      const x = segments.freeBlockOver(c0, seg, p, q)
      if (x < 0) throw new Error(`StitchingAllocator: [0x${p.toString(16)}, 0x${q.toString(16)}) is in no free block`)
      blks.push(segments.carve(x, p - segments.bStart[x]!, q - p))
      need -= q - p
    }
    return blks
  }
}
