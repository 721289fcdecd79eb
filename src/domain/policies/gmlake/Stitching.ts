/**
 * The stitching allocator, policy "gmlake": GMLake's virtual memory stitching (ASPLOS'24) with
 * the four changes of DESIGN.md section 4 that make it beat both GMLake and PyTorch's
 * `expandable_segments`. Pure and synchronous: it talks to the device only through a
 * `DriverPort` (Note [Plans as a dialogue] in `DriverPort.ts`).
 *
 * Note [Stitching]
 * ----------------
 * Physical memory comes in chunks (one `cuMemCreate` handle each, a multiple of the granule).
 * Every chunk has one home: a place in a primary segment, a virtual range of its stream whose
 * mapped part is a row of chunks (Note [Growth]). The segment's mapped bytes are cut into blocks
 * at 512 B boundaries, free or used, exactly like a caching allocator's segment: a request takes
 * the best-fitting free block of its stream, free neighbours merge, and a block may start in one
 * chunk and end in another, so the tail of one tensor and the head of the next share a chunk
 * (DESIGN.md section 4, "Tails"). Small requests take the same blocks (no separate small pool).
 *
 * When no free block fits, free chunks scattered over the segments are *stitched*: a fresh
 * virtual range (a view, GMLake's sBlock) maps them side by side and the request is served from
 * it. Nothing is copied. A view maps whole chunks, so only chunks wholly free may go into one
 * (Note [Whole chunks]), except that the first and last may be partly used by others if the
 * block in the view leaves their used parts out (Note [Stitch selection]). The bytes the view's
 * block covers are marked used in the primary segments, as the spans of one grant (what the user
 * holds), so the primary pool cannot hand them out twice: no physical byte is reachable from two
 * live blocks, whatever alias it is reached through. A freed view stays mapped in a cache, ready
 * to serve a later request with no driver call (Note [Stitched view cache]).
 *
 * In order, `malloc` tries: the best-fitting free block of the stream (no driver call); a cached
 * view whose chunks are all free (no driver call); stitching free chunks (reserve, map, one
 * set-access); growing the stream's segment by the shortfall and stitching it with the free
 * chunks (Note [Shortfall]); and under pressure, giving free chunks back and trying again
 * (Note [Pressure]).
 *
 * Note [Block table]
 * ------------------
 * Blocks, chunks, segments, views and grants are numeric ids into parallel arrays (STYLE.md point
 * 7), never object graphs. Blocks of a segment form a doubly linked list in address order
 * (`bPrev`, `bNext`); ids of dead blocks are reused. A grant is what a `BlockId` names: a primary
 * block, or a view and the list of primary spans it holds. The `BlockId` is the grant's slot plus
 * a generation bumped on each reuse (`generation * 2^24 + slot`, generations wrapping at 2^28 so
 * that ids stay exact doubles however long the process runs), so a stale id (double free, free of
 * a slot now holding another block) is refused with `InvalidBlockError` instead of freeing
 * someone else's memory.
 *
 * Note [Chunk map]
 * ----------------
 * Every chunk boundary is a multiple of the granule from its segment's base, so each segment
 * keeps one entry per granule of its mapped part: the chunk there, or -1 in a hole left by a
 * released chunk. Finding the chunk under an address is one division and one load, which the hot
 * path does a few times per operation (a binary search over thousands of chunks took a third of
 * the replay time). Walks over the chunks of a run follow `cNext` instead.
 *
 * Note [Whole chunks]
 * -------------------
 * A chunk is wholly free when one free block covers it (`cFree`). The whole chunks of a free
 * block are a contiguous run; each free block keeps their bytes (`bRun`) and the stream their sum
 * (`runBytes`): what a stitch could gather. Only two operations change which chunks are wholly
 * free: taking a part of a free block (the chunks of its run that the part overlaps become busy)
 * and freeing a block (the chunks of the merged block's run that it overlaps become free); both
 * walk just those chunks, and a block smaller than a granule, or cut from a block without whole
 * chunks, needs no lookup at all.
 *
 * Note [Placement]
 * ----------------
 * A request smaller than its free block takes its head or its tail: whichever overlaps fewer
 * bytes of whole chunks, so that free chunks stay stitchable (head on a tie, as PyTorch; always
 * the head at the growing end of the segment, so that the free end stays where growth extends
 * it). Measured on the four traces: 0.6 points of mean utilization (0.8 and 0.9 on two of them),
 * for two chunk lookups.
 *
 * Note [Stitched view cache]
 * --------------------------
 * A view lives on after its block is freed, cached, indexed by size in its stream's pool. A
 * request that no free block fits looks there first, from the smallest view of at least its size
 * up to `reuseLimit` times its size (the first 256 such), for one whose bytes it would take are all
 * free again: its chunks wholly free, except that a view that began inside a partly used chunk
 * (Note [Stitch selection]) needs that chunk free only from where its block began, and the last
 * chunk the request reaches into needs to be free only as far as it reaches. Whole chunks are
 * checked first (a flag each), the partly free ends last (a block lookup each). Checking at that
 * moment, on the slow path, costs nothing on the hot path, where keeping a per-view count of busy
 * chunks up to date cost a tenth of the replay time. The request takes the view's first bytes;
 * chunks past them stay free in their segments (they are no part of the block). A hit makes no
 * driver call at all. Views are evicted, least recently released first, when the cached ones pass
 * `maxCachedStitchedBytes`; all of them under pressure and by `emptyCache`; and any that maps a
 * chunk given back to the driver. Eviction unmaps and frees the view's range only (one unmap over
 * the whole range, which is all mapped); its chunks stay with their segments.
 *
 * Note [Deferred frees]
 * ---------------------
 * `free(block, true)`: the block is no longer live (address, size and free refuse it), but its
 * spans stay used, so nothing is handed out of them, and its view stays in use, until
 * `complete(block)` frees them for good.
 *
 * @since 0.1.0
 */
import type { Allocator, PolicyCounters } from "../../Allocator.ts"
import type { DriverPort } from "../../DriverPort.ts"
import { DriverError, InvalidBlockError, InvalidRequestError, OutOfMemoryError } from "../../Errors.ts"
import { BestFit } from "../pytorch/BestFit.ts"
import type { Address, BlockId, ChunkHandle } from "../../Units.ts"
import { defaultStitchingConfig, type StitchingConfig } from "./StitchingConfig.ts"

// Block states.
const FREE = 0
const USED = 1
const DEAD = 2

// Grant states.
const G_DEAD = 0
const G_LIVE = 1
const G_DEFERRED = 2

// View use: `vLive` holds the grant id while a view is in use, else one of these.
const V_CACHED = -1
const V_DEAD = -2
const V_CLAIMING = -3

/** Grant ids are `generation * SLOTS + slot` (Note [Block table]). */
const SLOTS = 2 ** 24
const GENERATIONS = 2 ** 28

/** Cached views a request examines at most (Note [Stitched view cache]). */
const MAX_VIEW_TRIES = 256

/** Keeps the three best (id, value) pairs in `best` (flat, best first). */
const top3 = (best: Array<number>, id: number, value: number): void => {
  let i = best.length
  if (i === 6 && value <= best[5]!) return
  if (i < 6) best.push(0, 0)
  else i = 4
  while (i > 0 && best[i - 1]! < value) {
    best[i] = best[i - 2]!
    best[i + 1] = best[i - 1]!
    i -= 2
  }
  best[i] = id
  best[i + 1] = value
}

/** One stream's pools. */
class StreamPool {
  /** Free blocks by (size, address). */
  readonly free = new BestFit()
  /** Cached views, by (size, base). */
  readonly views = new BestFit(16)
  /** Bytes of the whole chunks of the free blocks (Note [Whole chunks]). */
  runBytes = 0
  /** Bytes of the free blocks. */
  freeBytes = 0
  /** The segment that grows (Note [Growth]), or -1. */
  segment = -1
}

/**
 * The stitching allocator (see the notes above). `config` defaults to `defaultStitchingConfig`.
 * @category constructors
 */
export class StitchingAllocator implements Allocator {
  readonly policy = "gmlake" as const
  readonly config: StitchingConfig
  private readonly port: DriverPort
  private readonly granule: number
  private readonly unit: number
  private readonly segmentVa: number
  private readonly maxChunk: number
  private readonly divisor: number
  private readonly minPartial: number
  private readonly reuseLimit: number
  private readonly maxCached: number
  private readonly tailChunk: boolean
  private readonly placement: boolean
  private readonly allocateAndStitch: boolean

  private readonly pools: Array<StreamPool | undefined> = []

  // segments
  private readonly segBase: Array<number> = []
  private readonly segVa: Array<number> = []
  /** End of the mapped part (the growing end). */
  private readonly segEnd: Array<number> = []
  private readonly segStream: Array<number> = []
  /** Last block in address order, or -1. */
  private readonly segLast: Array<number> = []
  /** Granule index -> chunk id, -1 in holes (Note [Chunk map]). */
  private readonly segMap: Array<Int32Array> = []
  private readonly segChunks: Array<number> = []
  private readonly segFreeIds: Array<number> = []

  // chunks
  private readonly cHandle: Array<number> = []
  private readonly cSeg: Array<number> = []
  private readonly cStart: Array<number> = []
  private readonly cSize: Array<number> = []
  /** The chunk right after, or -1 at a hole or the end (Note [Chunk map]). */
  private readonly cNext: Array<number> = []
  /** 1 when wholly free (Note [Whole chunks]). */
  private readonly cFree: Array<number> = []
  /** A hint: the free block that last held the chunk. */
  private readonly cBlk: Array<number> = []
  /** Views mapping the chunk (Note [Stitched view cache]). */
  private readonly cViews: Array<Array<number> | null> = []
  private readonly chunkFreeIds: Array<number> = []

  // blocks: spans of primary segments (Note [Block table])
  private readonly bSeg: Array<number> = []
  private readonly bStart: Array<number> = []
  private readonly bSize: Array<number> = []
  private readonly bState: Array<number> = []
  private readonly bPrev: Array<number> = []
  private readonly bNext: Array<number> = []
  /** Whole-chunk bytes of a free block, as counted in its pool's `runBytes`. */
  private readonly bRun: Array<number> = []
  private readonly blockFreeIds: Array<number> = []

  // grants: what a BlockId names
  private readonly gGen: Array<number> = []
  private readonly gState: Array<number> = []
  private readonly gAddr: Array<number> = []
  private readonly gReq: Array<number> = []
  private readonly gBlk: Array<number> = []
  private readonly gBlks: Array<Array<number> | null> = []
  private readonly gView: Array<number> = []
  private readonly grantFreeIds: Array<number> = []

  // views: stitched ranges
  private readonly vBase: Array<number> = []
  private readonly vSize: Array<number> = []
  private readonly vStream: Array<number> = []
  private readonly vChunks: Array<Array<number>> = []
  /** Where the view's first block started in its first chunk. */
  private readonly vOff: Array<number> = []
  private readonly vLive: Array<number> = []
  /** The cache's release order (least recent at `lruHead`). */
  private readonly vPrev: Array<number> = []
  private readonly vNext: Array<number> = []
  private readonly viewFreeIds: Array<number> = []
  private lruHead = -1
  private lruTail = -1
  private cachedBytes = 0

  private reservedBytes = 0

  // results of `runOf`
  private rs = 0
  private re = 0
  /** The free block right of the last carve, or -1: where the next span of a claim usually is. */
  private lastRight = -1
  /** Where a hit's block starts in its view (`usableView`). */
  private hitOff = 0

  // stitch selection scratch (Note [Stitch selection])
  private pBlk = -1
  private pExtra = 0
  private qBlk = -1
  private qExtra = 0
  private readonly runIds: Array<number> = []
  /** The three best partly free first chunks, as (block, bytes) pairs, best first. */
  private readonly heads: Array<number> = []
  /** The three best partly free last chunks, likewise. */
  private readonly tails: Array<number> = []
  private readonly middle: Array<number> = []
  private readonly spans: Array<number> = []

  private nStitches = 0
  private nStitchedChunks = 0
  private nHits = 0
  private nEvictions = 0
  private nReleased = 0

  constructor(port: DriverPort, config: StitchingConfig = defaultStitchingConfig) {
    this.port = port
    this.config = config
    const g = port.granularity
    this.granule = g
    // Blocks split at `splitBytes`, and chunk boundaries must be split points.
    let unit = Math.min(config.splitBytes, g)
    while (g % unit !== 0) unit--
    this.unit = unit
    const va = config.segmentBytes > 0 ? config.segmentBytes : port.capacity
    this.segmentVa = Math.max(g, Math.ceil(va / g) * g)
    this.maxChunk = Math.max(g, Math.floor(config.maxChunkBytes / g) * g)
    this.divisor = config.chunkDivisor
    this.minPartial = Math.max(unit, config.minPartialBytes)
    this.reuseLimit = config.reuseLimit
    this.maxCached = config.maxCachedStitchedBytes
    this.tailChunk = config.tailChunk
    this.placement = config.placement
    this.allocateAndStitch = config.allocateAndStitch
  }

  // --- the Allocator contract --------------------------------------------------------------------

  malloc(size: number, stream: number): BlockId {
    if (!(Number.isSafeInteger(size) && size > 0)) {
      throw new InvalidRequestError({ detail: `size must be a positive integer, got ${size}` })
    }
    if (!(Number.isInteger(stream) && stream >= 0 && stream <= 0xffff)) {
      throw new InvalidRequestError({ detail: `stream must be an integer from 0 to 65535, got ${stream}` })
    }
    if (this.grantFreeIds.length === 0 && this.gGen.length >= SLOTS) {
      throw new InvalidRequestError({ detail: `more than ${SLOTS} blocks live at once` })
    }
    const unit = this.unit
    const rr = Math.ceil(size / unit) * unit
    let pool = this.pools[stream]
    if (pool === undefined) {
      pool = new StreamPool()
      this.pools[stream] = pool
    }
    const x = pool.free.bestFit(rr)
    if (x >= 0) return this.grantPrimary(pool, x, rr, size)
    return this.mallocSlow(pool, rr, size, stream)
  }

  free(block: BlockId, deferred?: boolean): void {
    const slot = this.slotOf(block, "free", G_LIVE)
    if (deferred === true) this.gState[slot] = G_DEFERRED
    else this.releaseGrant(slot)
  }

  complete(block: BlockId): void {
    this.releaseGrant(this.slotOf(block, "complete", G_DEFERRED))
  }

  address(block: BlockId): Address {
    return this.gAddr[this.slotOf(block, "address", G_LIVE)]! as Address
  }

  size(block: BlockId): number {
    return this.gReq[this.slotOf(block, "size", G_LIVE)]!
  }

  emptyCache(): void {
    while (this.lruHead >= 0) this.evict(this.lruHead)
    this.releaseFreeChunks()
  }

  reserved(): number {
    return this.reservedBytes
  }

  counters(): PolicyCounters {
    return {
      stitches: this.nStitches,
      stitchedChunks: this.nStitchedChunks,
      cachedStitchHits: this.nHits,
      evictions: this.nEvictions,
      releasedForPressure: this.nReleased
    }
  }

  /**
   * Checks the allocator's internal invariants and throws an `Error` naming the first one broken:
   * blocks tile each segment's mapped chunks in address order with no two free neighbours; the
   * chunk map, chunk states, whole-chunk runs, free indexes and byte counts agree with the blocks;
   * every grant's spans are used blocks; views and chunks list each other. Linear in the size of
   * the state: for tests, not for the hot path.
   * @category testing
   */
  checkIntegrity(): void {
    const fail = (what: string): never => {
      throw new Error(`StitchingAllocator integrity: ${what}`)
    }
    const g = this.granule
    const deadSegs = new Set(this.segFreeIds)
    const usedBy = new Map<number, number>()
    let reserved = 0
    for (let seg = 0; seg < this.segBase.length; seg++) {
      if (deadSegs.has(seg)) continue
      const base = this.segBase[seg]!
      const end = this.segEnd[seg]!
      const map = this.segMap[seg]!
      let count = 0
      let prev = -1
      let chunkBytes = 0
      for (let i = 0; i < map.length; i++) {
        const c = map[i]!
        if (c < 0 || c === prev) continue
        prev = c
        count++
        if (this.cSeg[c] !== seg || this.cStart[c] !== base + i * g) fail(`chunk ${c} is not where the map says`)
        if (this.chunkEnd(c) > end) fail(`chunk ${c} lies past its segment's end`)
        for (let k = i; k < i + this.cSize[c]! / g; k++) if (map[k] !== c) fail(`chunk ${c} is not mapped whole`)
        const after = i + this.cSize[c]! / g < map.length ? map[i + this.cSize[c]! / g]! : -1
        if (this.cNext[c] !== (this.chunkEnd(c) < end ? after : -1)) fail(`chunk ${c} links to ${this.cNext[c]}, not the chunk after it`)
        chunkBytes += this.cSize[c]!
      }
      if (count !== this.segChunks[seg]) fail(`segment ${seg} counts ${this.segChunks[seg]} chunks, holds ${count}`)
      if (count > 0 && this.chunkAt(seg, end - 1) < 0) fail(`segment ${seg} ends in a hole`)
      reserved += chunkBytes
      let covered = 0
      let last = -1
      for (let b = this.segLast[seg]!; b >= 0; b = this.bPrev[b]!) {
        if (this.bSeg[b] !== seg || this.bState[b] === DEAD) fail(`block ${b} is linked into segment ${seg}`)
        if (last >= 0) {
          if (this.bPrev[last] !== b || this.bNext[b] !== last) fail(`blocks ${b} and ${last} are not linked both ways`)
          if (this.bStart[b]! + this.bSize[b]! > this.bStart[last]!) fail(`blocks ${b} and ${last} overlap`)
          if (this.bState[b] === FREE && this.bState[last] === FREE && this.bStart[b]! + this.bSize[b]! === this.bStart[last]) {
            fail(`free blocks ${b} and ${last} are adjacent`)
          }
        }
        const a = this.bStart[b]!
        const e = a + this.bSize[b]!
        if (a % this.unit !== 0 || e % this.unit !== 0) fail(`block ${b} is not aligned to ${this.unit}`)
        for (let at = a; at < e; at = this.chunkEnd(this.chunkAt(seg, at))) {
          if (this.chunkAt(seg, at) < 0) fail(`block ${b} covers a hole`)
        }
        if (this.bState[b] === FREE) {
          const run = this.runOf(seg, a, e)
          if (run !== this.bRun[b]) fail(`free block ${b} counts ${this.bRun[b]} whole-chunk bytes, holds ${run}`)
          for (let at = this.rs; at < this.re; at = this.chunkEnd(this.chunkAt(seg, at))) {
            if (this.cFree[this.chunkAt(seg, at)] !== 1) fail(`chunk at 0x${at.toString(16)} is wholly free but not marked so`)
          }
        } else usedBy.set(b, -1)
        covered += this.bSize[b]!
        last = b
      }
      if (covered !== chunkBytes) fail(`segment ${seg}: blocks cover ${covered} bytes of ${chunkBytes}`)
      for (let i = 0; i < map.length; i++) {
        const c = map[i]!
        if (c < 0 || this.cFree[c] !== 1) continue
        const x = this.freeBlockOver(c, seg, this.cStart[c]!, this.chunkEnd(c))
        if (x < 0) fail(`chunk ${c} is marked wholly free but no free block covers it`)
      }
    }
    if (reserved !== this.reservedBytes) fail(`reserved counts ${this.reservedBytes} bytes, chunks hold ${reserved}`)
    for (let s = 0; s < this.pools.length; s++) {
      const pool = this.pools[s]
      if (pool === undefined) continue
      let freeBytes = 0
      let runBytes = 0
      for (let i = 0; i < pool.free.length; i++) {
        const b = pool.free.idAt(i)
        if (this.bState[b] !== FREE || this.segStream[this.bSeg[b]!] !== s) fail(`block ${b} is in stream ${s}'s free index`)
        if (pool.free.sizeAt(i) !== this.bSize[b]) fail(`block ${b} is indexed under a stale size`)
        freeBytes += this.bSize[b]!
        runBytes += this.bRun[b]!
      }
      if (freeBytes !== pool.freeBytes || runBytes !== pool.runBytes) fail(`stream ${s}'s free byte counts are stale`)
    }
    for (let slot = 0; slot < this.gState.length; slot++) {
      if (this.gState[slot] === G_DEAD) continue
      const v = this.gView[slot]!
      const blks = v < 0 ? [this.gBlk[slot]!] : this.gBlks[slot]!
      for (const b of blks) {
        if (usedBy.get(b) !== -1) fail(`grant ${slot} holds block ${b}, which is not a used block or is held twice`)
        usedBy.set(b, slot)
      }
      if (v >= 0 && this.vLive[v] !== this.gGen[slot]! * SLOTS + slot) fail(`grant ${slot}'s view ${v} names another user`)
    }
    for (const [b, slot] of usedBy) if (slot === -1) fail(`used block ${b} belongs to no grant`)
    let cached = 0
    for (let v = 0; v < this.vBase.length; v++) {
      if (this.vLive[v] === V_DEAD) continue
      if (this.vLive[v] === V_CACHED) cached += this.vSize[v]!
      let size = 0
      for (const c of this.vChunks[v]!) {
        size += this.cSize[c]!
        if (this.cSeg[c]! < 0 || !this.cViews[c]?.includes(v)) fail(`view ${v} maps chunk ${c}, which does not list it`)
      }
      if (size !== this.vSize[v]) fail(`view ${v} is ${this.vSize[v]} bytes, its chunks ${size}`)
    }
    if (cached !== this.cachedBytes) fail(`cached views count ${this.cachedBytes} bytes, hold ${cached}`)
  }

  // --- grants ------------------------------------------------------------------------------------

  /** The slot of grant `id` if it is in state `want`, else `InvalidBlockError` (nothing changes). */
  private slotOf(id: number, operation: string, want: number): number {
    if (Number.isSafeInteger(id) && id >= 0) {
      const slot = id % SLOTS
      const gen = (id - slot) / SLOTS
      if (slot < this.gState.length && this.gGen[slot] === gen) {
        const state = this.gState[slot]!
        if (state === want) return slot
        const detail = state === G_DEFERRED
          ? "the block was freed and awaits complete()"
          : state === G_LIVE
          ? "the block is live: complete() follows a deferred free"
          : "the block was already freed"
        throw new InvalidBlockError({ block: id, operation, detail })
      }
    }
    throw new InvalidBlockError({ block: id, operation, detail: "no such block (never allocated, or freed long ago)" })
  }

  private newGrant(addr: number, req: number, blk: number, blks: Array<number> | null, view: number): BlockId {
    let slot: number
    if (this.grantFreeIds.length > 0) {
      slot = this.grantFreeIds.pop()!
      // generations wrap (Note [Block table]): ids stay exact doubles however long the run
      this.gGen[slot] = (this.gGen[slot]! + 1) % GENERATIONS
      this.gState[slot] = G_LIVE
      this.gAddr[slot] = addr
      this.gReq[slot] = req
      this.gBlk[slot] = blk
      this.gBlks[slot] = blks
      this.gView[slot] = view
    } else {
      slot = this.gGen.length
      this.gGen.push(0)
      this.gState.push(G_LIVE)
      this.gAddr.push(addr)
      this.gReq.push(req)
      this.gBlk.push(blk)
      this.gBlks.push(blks)
      this.gView.push(view)
    }
    return (this.gGen[slot]! * SLOTS + slot) as BlockId
  }

  private releaseGrant(slot: number): void {
    const v = this.gView[slot]!
    if (v < 0) {
      this.release(this.gBlk[slot]!)
    } else {
      const blks = this.gBlks[slot]!
      for (let i = 0; i < blks.length; i++) this.release(blks[i]!)
      // Note [Stitched view cache]
      this.vLive[v] = V_CACHED
      this.lruPush(v)
      this.cachedBytes += this.vSize[v]!
      this.pools[this.vStream[v]!]!.views.insert(v, this.vSize[v]!, this.vBase[v]!)
    }
    this.gState[slot] = G_DEAD
    this.gBlks[slot] = null
    this.grantFreeIds.push(slot)
    if (v >= 0 && this.cachedBytes > this.maxCached) this.autoEvict()
  }

  /** Evicts least recently released views until the cache is within its bound. */
  private autoEvict(): void {
    try {
      while (this.cachedBytes > this.maxCached && this.lruHead >= 0) this.evict(this.lruHead)
    } catch (e) {
      // The free itself is done; a view the driver would not unmap stays cached.
      if (!(e instanceof DriverError)) throw e
    }
  }

  // --- malloc ------------------------------------------------------------------------------------

  /** Serves `rr` bytes from free block `x` (Note [Placement]). */
  private grantPrimary(pool: StreamPool, x: number, rr: number, size: number): BlockId {
    const a = this.bStart[x]!
    let p = a
    if (this.placement && this.bRun[x]! > 0 && this.bSize[x]! > rr) {
      const seg = this.bSeg[x]!
      if (!(this.bNext[x]! < 0 && pool.segment === seg)) {
        const b = a + this.bSize[x]!
        this.runOf(seg, a, b)
        const rs = this.rs
        const re = this.re
        // whole-chunk bytes that the head [a, a + rr) or the tail [b - rr, b) would make busy
        let head = 0
        if (a + rr > rs) {
          const c = this.chunkAt(seg, a + rr - 1)
          head = Math.min(re, this.cStart[c]! + this.cSize[c]!) - rs
        }
        let tail = 0
        if (b - rr < re) tail = re - Math.max(rs, this.cStart[this.chunkAt(seg, b - rr)]!)
        if (tail < head) p = b - rr
      }
    }
    return this.newGrant(p, size, this.carve(x, p, p + rr), null, -1)
  }

  private mallocSlow(pool: StreamPool, rr: number, size: number, stream: number): BlockId {
    if (pool.views.length > 0) {
      const v = this.usableView(pool, rr)
      if (v >= 0) return this.hit(pool, v, rr, size)
    }
    let failure: DriverError
    try {
      return this.acquire(pool, rr, size, stream)
    } catch (e) {
      if (!(e instanceof DriverError)) throw e
      failure = e
    }
    // Note [Pressure]
    let relieved = this.lruHead >= 0
    while (this.lruHead >= 0) this.evict(this.lruHead)
    const released = this.releaseFreeChunks()
    this.nReleased += released
    if (released > 0) relieved = true
    if (relieved) {
      try {
        return this.acquire(pool, rr, size, stream)
      } catch (e) {
        if (!(e instanceof DriverError)) throw e
        failure = e
      }
    }
    if (failure.reason !== "OutOfMemory") throw failure
    let free = 0
    for (let s = 0; s < this.pools.length; s++) free += this.pools[s]?.freeBytes ?? 0
    throw new OutOfMemoryError({
      requested: size,
      stream,
      reserved: this.reservedBytes,
      free,
      largestFreeBlock: pool.free.largest(),
      capacity: this.port.capacity
    })
  }

  /**
   * Everything that may call the driver: best fit again (pressure may have changed the pools),
   * stitch, or grow (Note [Shortfall]). Throws `DriverError` with the allocator unchanged except
   * for memory it created and kept as free cache.
   *
   * Note [Shortfall]
   * ----------------
   * When nothing the stream holds can serve a request, it needs new memory. GMLake then creates
   * a block for the whole request and leaves the free chunks idle: 1.0 to 1.5 GB at the peak of
   * the GPT-2 and BERT traces (DESIGN.md section 4). Here two ways are weighed. Growing the
   * segment's free end (Note [Growth]) needs the request less the free block already at that end,
   * and serves it as one ordinary block, with no stitch. Allocate-and-stitch needs only the
   * shortfall: the request less everything a stitch could gather (whole free chunks and the two
   * partly free ends, `gather`), created at the growing end too and stitched with the rest. The
   * allocator grows when that takes no more memory than the shortfall (the view and its driver
   * calls are then for nothing), else creates the shortfall and stitches. Either way the new
   * memory is rounded up to the granule only, and what the request leaves of the last granule
   * stays free for the next.
   */
  private acquire(pool: StreamPool, rr: number, size: number, stream: number): BlockId {
    const x = pool.free.bestFit(rr)
    if (x >= 0) return this.grantPrimary(pool, x, rr, size)
    const gathered = this.gather(pool)
    if (gathered >= rr) return this.stitch(rr, size, stream)
    const g = this.granule
    const seg = pool.segment
    let frontier = 0
    if (seg >= 0) {
      const last = this.segLast[seg]!
      if (last >= 0 && this.bState[last] === FREE) frontier = this.bSize[last]!
    }
    let grow = Math.ceil((rr - frontier) / g) * g
    if (seg < 0 || this.segEnd[seg]! + grow > this.segBase[seg]! + this.segVa[seg]!) {
      frontier = 0
      grow = Math.ceil(rr / g) * g
    }
    const shortfall = Math.ceil((rr - gathered) / g) * g
    if (!this.allocateAndStitch || grow <= shortfall) {
      // Note [Growth]: the free block at the growing end and the new chunks make one block.
      this.grow(pool, stream, grow, rr - frontier)
      return this.grantPrimary(pool, this.segLast[pool.segment]!, rr, size)
    }
    // Note [Shortfall]
    this.grow(pool, stream, shortfall, rr - gathered)
    const y = pool.free.bestFit(rr)
    if (y >= 0) return this.grantPrimary(pool, y, rr, size)
    this.gather(pool)
    return this.stitch(rr, size, stream)
  }

  // --- stitching ---------------------------------------------------------------------------------

  /**
   * The smallest cached view that can serve `rr` bytes as it is, or -1; sets `hitOff`, where the
   * block starts in it (Note [Stitched view cache]).
   */
  private usableView(pool: StreamPool, rr: number): number {
    const views = pool.views
    const limit = this.reuseLimit * rr
    let tries = MAX_VIEW_TRIES
    for (let i = views.findIndex(rr); i >= 0 && i < views.length && views.sizeAt(i) <= limit && tries-- > 0; i++) {
      const v = views.idAt(i)
      const chunks = this.vChunks[v]!
      // the first chunk from its start, or from where the view's first block started
      const first = chunks[0]!
      const off = this.cFree[first] === 1 ? 0 : this.vOff[v]!
      if ((off === 0 && this.cFree[first] !== 1) || this.vSize[v]! - off < rr) continue
      // whole chunks first (cheap), then the one or two partly free ends (a block lookup each)
      let need = rr - (this.cSize[first]! - off)
      let k = 1
      let last = -1
      while (need > 0 && k < chunks.length) {
        const c = chunks[k++]!
        if (this.cFree[c] !== 1) {
          // the last chunk needed may be free only as far as the block would reach into it
          if (need < this.cSize[c]!) last = c
          break
        }
        need -= this.cSize[c]!
      }
      if (need > 0 && last < 0) continue
      if (off > 0) {
        const p = this.cStart[first]! + off
        if (this.freeBlockOver(first, this.cSeg[first]!, p, this.cStart[first]! + this.cSize[first]!) < 0) continue
      }
      if (last >= 0 && this.freeBlockOver(last, this.cSeg[last]!, this.cStart[last]!, this.cStart[last]! + need) < 0) continue
      this.hitOff = off
      return v
    }
    return -1
  }

  /** Serves `rr` bytes from cached view `v` at `hitOff`, with no driver call (Note [Stitched view cache]). */
  private hit(pool: StreamPool, v: number, rr: number, size: number): BlockId {
    pool.views.remove(v, this.vSize[v]!, this.vBase[v]!)
    this.lruRemove(v)
    this.cachedBytes -= this.vSize[v]!
    this.nHits++
    this.vLive[v] = V_CLAIMING
    const off = this.hitOff
    const blks = this.claimView(v, rr, off)
    const id = this.newGrant(this.vBase[v]! + off, size, -1, blks, v)
    this.vLive[v] = id
    return id
  }

  /** Claims `rr` bytes of view `v` from offset `off` in its first chunk, all free (`usableView`). */
  private claimView(v: number, rr: number, off: number): Array<number> {
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
      const x = this.freeBlockOver(c0, seg, p, q)
      if (x < 0) throw new Error(`StitchingAllocator: [0x${p.toString(16)}, 0x${q.toString(16)}) is in no free block`)
      blks.push(this.carve(x, p, q))
      need -= q - p
    }
    return blks
  }

  private isFreeOver(x: number, seg: number, p: number, q: number): boolean {
    return x >= 0 && this.bState[x] === FREE && this.bSeg[x] === seg && this.bStart[x]! <= p &&
      this.bStart[x]! + this.bSize[x]! >= q
  }

  /** The free block holding [p, q) of segment `seg` (which lies in chunk `c`), or -1. */
  private freeBlockOver(c: number, seg: number, p: number, q: number): number {
    let x = this.cBlk[c]!
    if (this.isFreeOver(x, seg, p, q)) return x
    x = this.lastRight
    if (this.isFreeOver(x, seg, p, q)) return x
    const free = this.pools[this.segStream[seg]!]!.free
    for (let i = free.findIndex(q - p); i >= 0 && i < free.length; i++) {
      x = free.idAt(i)
      if (this.isFreeOver(x, seg, p, q)) {
        this.cBlk[c] = x
        return x
      }
    }
    return -1
  }

  /**
   * Note [Stitch selection]
   * -----------------------
   * Over the stream's free blocks, `gather` collects those with whole chunks (`runIds`, largest
   * first) and two partly free chunks: the block whose first chunk is partly used by a block before
   * it but free from the block's start to the chunk's end (the most such bytes: `pBlk`, `pExtra`),
   * and the block whose last chunk is free from its start to the block's end (`qBlk`, `qExtra`).
   * A view may begin with the first (the stitched block starts inside it, past the used part) and
   * end with the second (the block ends before the used part), so the fragments next to live
   * tensors, which whole-chunk stitching never reaches, serve large requests too. DESIGN.md
   * measured this at 2 to 9 times more chunk maps with 2 MiB chunks; with larger chunks it is what
   * keeps their stranded bytes usable (0.5 points of mean utilization on the four traces), for one
   * extra map at each end, and only fragments of at least `minPartialBytes` are used.
   *
   * `select` then takes the partly free ends, and whole chunks between them: the largest runs
   * first, and the smallest run that covers what is left last, only as many of its chunks as
   * needed: few pieces, so few maps, and no whole chunk taken that is not needed (GMLake takes the
   * largest free blocks first). A run of `pBlk` extends its piece (the chunks after its partial
   * one), a run of `qBlk` extends its piece backwards. The cost is a pass over the stream's free
   * blocks, tens to a few hundred, on the slow path only.
   *
   * Returns the bytes a stitch could gather.
   */
  private gather(pool: StreamPool): number {
    const min = this.minPartial
    const heads = this.heads
    const tails = this.tails
    heads.length = 0
    tails.length = 0
    const runIds = this.runIds
    runIds.length = 0
    const free = pool.free
    for (let i = free.length - 1; i >= 0; i--) {
      const x = free.idAt(i)
      if (this.bRun[x]! > 0) runIds.push(x)
      if (free.sizeAt(i) < min) continue
      const seg = this.bSeg[x]!
      const a = this.bStart[x]!
      const b = a + this.bSize[x]!
      const ci = this.chunkAt(seg, a)
      const ce = this.cStart[ci]! + this.cSize[ci]!
      if (this.cStart[ci]! < a && ce <= b && ce - a >= min) top3(heads, x, ce - a)
      const cj = this.chunkAt(seg, b - 1)
      const js = this.cStart[cj]!
      if (js + this.cSize[cj]! > b && js >= a && b - js >= min) top3(tails, x, b - js)
    }
    if (runIds.length > 1) {
      const bRun = this.bRun
      const bStart = this.bStart
      runIds.sort((x, y) => bRun[y]! - bRun[x]! || bStart[x]! - bStart[y]!)
    }
    // The best pair of ends that do not clash. A block may be only one end, and a chunk's free
    // tail and free head cannot both be used (they would meet the wrong way round). One head
    // clashes with at most two tails and one tail with at most two heads, so the best pair is
    // among the best three of each side.
    let pBlk = -1
    let pExtra = 0
    let qBlk = -1
    let qExtra = 0
    for (let i = -2; i < heads.length; i += 2) {
      const p = i < 0 ? -1 : heads[i]!
      const px = i < 0 ? 0 : heads[i + 1]!
      for (let j = -2; j < tails.length; j += 2) {
        const q = j < 0 ? -1 : tails[j]!
        const qx = j < 0 ? 0 : tails[j + 1]!
        if (px + qx > pExtra + qExtra && !(p >= 0 && q >= 0 && this.clash(p, q))) {
          pBlk = p
          pExtra = px
          qBlk = q
          qExtra = qx
        }
      }
    }
    this.pBlk = pBlk
    this.pExtra = pExtra
    this.qBlk = qBlk
    this.qExtra = qExtra
    return pool.runBytes + pExtra + qExtra
  }

  /** Whether free blocks `p` (as a range's first piece) and `q` (as its last) may not go together. */
  private clash(p: number, q: number): boolean {
    if (p === q) return true
    const ps = this.bSeg[p]!
    return ps === this.bSeg[q] && this.chunkAt(ps, this.bStart[p]!) === this.chunkAt(ps, this.bStart[q]! + this.bSize[q]! - 1)
  }

  /**
   * Chooses a view for `rr` bytes from what `gather` found (Note [Stitch selection]): fills
   * `list` with its chunks in range order and `spans` with (block, from, to) triples to claim in
   * that order; returns the stitched block's offset in the view.
   */
  private select(rr: number, list: Array<number>): number {
    let need = rr
    const P = this.pBlk
    const Q = this.qBlk
    let useQ = false
    if (P >= 0) need -= this.pExtra
    if (need > 0 && Q >= 0) {
      need -= this.qExtra
      useQ = true
    }
    let pEnd = -1 // end of P's piece when its run extends it
    let qStart = -1 // start of Q's piece when its run extends it
    const middle = this.middle
    middle.length = 0
    const runIds = this.runIds
    const bRun = this.bRun
    let i = 0
    while (need > 0 && i < runIds.length) {
      // the smallest untaken run that covers the rest, else the largest untaken one
      let j = runIds.length - 1
      while (j >= i && bRun[runIds[j]!]! < need) j--
      const last = j >= i
      if (!last) j = i
      else if (j !== i) {
        const t = runIds[j]!
        runIds[j] = runIds[i]!
        runIds[i] = t
        j = i
      }
      i++
      const blk = runIds[j]!
      const seg = this.bSeg[blk]!
      const a = this.bStart[blk]!
      this.runOf(seg, a, a + this.bSize[blk]!)
      const rs = this.rs
      const re = this.re
      if (blk === Q && useQ) {
        // chunks before Q's partial one, taken backwards
        let s = re
        while (s > rs && (!last || re - s < need)) s = this.cStart[this.chunkAt(seg, s - 1)]!
        need -= re - s
        qStart = s
      } else {
        let e = rs
        while (e < re && (!last || e - rs < need)) e += this.cSize[this.chunkAt(seg, e)]!
        need -= e - rs
        if (blk === P) pEnd = e
        else middle.push(blk, rs, e)
      }
      if (last) break
    }
    const spans = this.spans
    spans.length = 0
    let off = 0
    if (P >= 0) {
      const seg = this.bSeg[P]!
      const a = this.bStart[P]!
      const c = this.chunkAt(seg, a)
      off = a - this.cStart[c]!
      const end = pEnd >= 0 ? pEnd : this.cStart[c]! + this.cSize[c]!
      this.pushChunks(list, seg, this.cStart[c]!, end)
      spans.push(P, a, end)
    }
    for (let m = 0; m < middle.length; m += 3) {
      const blk = middle[m]!
      this.pushChunks(list, this.bSeg[blk]!, middle[m + 1]!, middle[m + 2]!)
      spans.push(blk, middle[m + 1]!, middle[m + 2]!)
    }
    if (useQ) {
      const seg = this.bSeg[Q]!
      const b = this.bStart[Q]! + this.bSize[Q]!
      const c = this.chunkAt(seg, b - 1)
      const start = qStart >= 0 ? qStart : this.cStart[c]!
      this.pushChunks(list, seg, start, this.cStart[c]! + this.cSize[c]!)
      spans.push(Q, start, b)
    }
    return off
  }

  /** Appends the chunks of segment `seg` from address `from` (a chunk start) to `to` to `list`. */
  private pushChunks(list: Array<number>, seg: number, from: number, to: number): void {
    while (from < to) {
      const c = this.chunkAt(seg, from)
      list.push(c)
      from += this.cSize[c]!
    }
  }

  /** Stitches a new view for `rr` bytes (after `gather`) and claims its block. */
  private stitch(rr: number, size: number, stream: number): BlockId {
    const list: Array<number> = []
    const off = this.select(rr, list)
    let total = 0
    for (let i = 0; i < list.length; i++) total += this.cSize[list[i]!]!
    const port = this.port
    const base = port.addressReserve(total)
    let mapped = 0
    try {
      for (let i = 0; i < list.length; i++) {
        const c = list[i]!
        port.memMap((base + mapped) as Address, this.cSize[c]!, this.cHandle[c]! as ChunkHandle)
        mapped += this.cSize[c]!
      }
      // One set-access over the whole range (DESIGN.md section 6: per call, not per chunk).
      port.setAccess(base, total)
    } catch (e) {
      // Note [Driver failures]: undo, then let the caller fall back.
      if (mapped > 0) port.memUnmap(base, mapped)
      port.addressFree(base, total)
      throw e
    }
    const v = this.newView(base, total, stream, list, off)
    this.nStitches++
    this.nStitchedChunks += list.length
    this.vLive[v] = V_CLAIMING
    const spans = this.spans
    const blks: Array<number> = []
    let need = rr
    for (let i = 0; i < spans.length && need > 0; i += 3) {
      const p = spans[i + 1]!
      const take = Math.min(spans[i + 2]! - p, need)
      blks.push(this.carve(spans[i]!, p, p + take))
      need -= take
    }
    const id = this.newGrant(base + off, size, -1, blks, v)
    this.vLive[v] = id
    return id
  }

  // --- views -------------------------------------------------------------------------------------

  private newView(base: number, size: number, stream: number, chunks: Array<number>, off: number): number {
    let v: number
    if (this.viewFreeIds.length > 0) {
      v = this.viewFreeIds.pop()!
      this.vBase[v] = base
      this.vSize[v] = size
      this.vStream[v] = stream
      this.vChunks[v] = chunks
      this.vOff[v] = off
      this.vLive[v] = V_CACHED
      this.vPrev[v] = -1
      this.vNext[v] = -1
    } else {
      v = this.vBase.length
      this.vBase.push(base)
      this.vSize.push(size)
      this.vStream.push(stream)
      this.vChunks.push(chunks)
      this.vOff.push(off)
      this.vLive.push(V_CACHED)
      this.vPrev.push(-1)
      this.vNext.push(-1)
    }
    for (let i = 0; i < chunks.length; i++) {
      const c = chunks[i]!
      const vs = this.cViews[c]
      if (vs === null || vs === undefined) this.cViews[c] = [v]
      else vs.push(v)
    }
    return v
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
  private evict(v: number): void {
    const base = this.vBase[v]! as Address
    const size = this.vSize[v]!
    this.port.memUnmap(base, size)
    this.port.addressFree(base, size)
    this.lruRemove(v)
    this.pools[this.vStream[v]!]!.views.remove(v, size, this.vBase[v]!)
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

  // --- chunks ------------------------------------------------------------------------------------

  /** The chunk under `addr`, a mapped address of segment `seg` (Note [Chunk map]). */
  private chunkAt(seg: number, addr: number): number {
    return this.segMap[seg]![Math.floor((addr - this.segBase[seg]!) / this.granule)]!
  }

  /** Whole chunks of segment `seg` inside [a, b), a span of blocks: [rs, re); returns their bytes. */
  private runOf(seg: number, a: number, b: number): number {
    let c = this.chunkAt(seg, a)
    const rs = this.cStart[c] === a ? a : this.cStart[c]! + this.cSize[c]!
    c = this.chunkAt(seg, b - 1)
    const ce = this.cStart[c]! + this.cSize[c]!
    const re = ce === b ? b : this.cStart[c]!
    this.rs = rs
    this.re = re
    return re > rs ? re - rs : 0
  }

  // --- blocks ------------------------------------------------------------------------------------

  private insertFree(b: number, run: number): void {
    const pool = this.pools[this.segStream[this.bSeg[b]!]!]!
    const size = this.bSize[b]!
    this.bRun[b] = run
    pool.free.insert(b, size, this.bStart[b]!)
    pool.freeBytes += size
    pool.runBytes += run
  }

  private insertFreeRun(b: number): void {
    const a = this.bStart[b]!
    this.insertFree(b, this.runOf(this.bSeg[b]!, a, a + this.bSize[b]!))
  }

  private removeFree(b: number): void {
    const pool = this.pools[this.segStream[this.bSeg[b]!]!]!
    const size = this.bSize[b]!
    pool.free.remove(b, size, this.bStart[b]!)
    pool.freeBytes -= size
    pool.runBytes -= this.bRun[b]!
  }

  /** A new block linked after `after` (or as the only block of an empty segment). */
  private newBlock(seg: number, start: number, size: number, state: number, after: number): number {
    const next = after >= 0 ? this.bNext[after]! : -1
    let id: number
    if (this.blockFreeIds.length > 0) {
      id = this.blockFreeIds.pop()!
      this.bSeg[id] = seg
      this.bStart[id] = start
      this.bSize[id] = size
      this.bState[id] = state
      this.bPrev[id] = after
      this.bNext[id] = next
      this.bRun[id] = 0
    } else {
      id = this.bSeg.length
      this.bSeg.push(seg)
      this.bStart.push(start)
      this.bSize.push(size)
      this.bState.push(state)
      this.bPrev.push(after)
      this.bNext.push(next)
      this.bRun.push(0)
    }
    if (after >= 0) this.bNext[after] = id
    if (next >= 0) this.bPrev[next] = id
    else this.segLast[seg] = id
    return id
  }

  private unlinkBlock(id: number): void {
    const p = this.bPrev[id]!
    const n = this.bNext[id]!
    if (p >= 0) this.bNext[p] = n
    if (n >= 0) this.bPrev[n] = p
    else this.segLast[this.bSeg[id]!] = p
    this.bState[id] = DEAD
    this.blockFreeIds.push(id)
  }

  /** Takes [p, q) out of free block `x` (Note [Whole chunks]); returns the used block. */
  private carve(x: number, p: number, q: number): number {
    const seg = this.bSeg[x]!
    const a = this.bStart[x]!
    const b = a + this.bSize[x]!
    this.removeFree(x)
    // The pieces left free hold whole chunks only if `x` did, and only of its run.
    let leftRun = 0
    let rightRun = 0
    if (this.bRun[x]! > 0) {
      this.runOf(seg, a, b)
      const rs = this.rs
      const re = this.re
      if (p >= re) leftRun = re - rs
      else if (p > rs) leftRun = this.cStart[this.chunkAt(seg, p)]! - rs
      if (q <= rs) rightRun = re - rs
      else if (q < re) {
        const c = this.chunkAt(seg, q)
        const from = this.cStart[c] === q ? q : this.cStart[c]! + this.cSize[c]!
        if (re > from) rightRun = re - from
      }
      const end = q < re ? q : re
      let at = p > rs ? p : rs
      if (at < end) {
        let c = this.chunkAt(seg, at)
        for (;;) {
          this.cFree[c] = 0
          at = this.cStart[c]! + this.cSize[c]!
          if (at >= end) break
          c = this.cNext[c]!
        }
      }
    }
    let used: number
    if (p > a) {
      this.bSize[x] = p - a
      this.insertFree(x, leftRun)
      used = this.newBlock(seg, p, q - p, USED, x)
    } else {
      this.bSize[x] = q - p
      this.bState[x] = USED
      this.bRun[x] = 0
      used = x
    }
    this.lastRight = -1
    if (q < b) {
      const r = this.newBlock(seg, q, b - q, FREE, used)
      this.insertFree(r, rightRun)
      this.lastRight = r
    }
    return used
  }

  /** Frees used block `y`, merged with its free neighbours (Note [Whole chunks]); `y` keeps its id. */
  private release(y: number): void {
    const seg = this.bSeg[y]!
    const s = this.bStart[y]!
    const e = s + this.bSize[y]!
    let a = s
    let b = e
    const L = this.bPrev[y]!
    if (L >= 0 && this.bState[L] === FREE && this.bStart[L]! + this.bSize[L]! === s) {
      this.removeFree(L)
      a = this.bStart[L]!
      this.unlinkBlock(L)
    }
    const R = this.bNext[y]!
    if (R >= 0 && this.bState[R] === FREE && this.bStart[R] === e) {
      this.removeFree(R)
      b = e + this.bSize[R]!
      this.unlinkBlock(R)
    }
    this.bStart[y] = a
    this.bSize[y] = b - a
    this.bState[y] = FREE
    // a block smaller than a granule holds no whole chunk
    const run = b - a < this.granule ? 0 : this.runOf(seg, a, b)
    if (run > 0) {
      const end = e < this.re ? e : this.re
      let at = s > this.rs ? s : this.rs
      if (at < end) {
        let c = this.chunkAt(seg, at)
        for (;;) {
          this.cFree[c] = 1
          this.cBlk[c] = y
          at = this.cStart[c]! + this.cSize[c]!
          if (at >= end) break
          c = this.cNext[c]!
        }
      }
    }
    this.insertFree(y, run)
  }

  // --- segments ----------------------------------------------------------------------------------

  private newSegment(base: number, va: number, stream: number): number {
    let seg: number
    if (this.segFreeIds.length > 0) {
      seg = this.segFreeIds.pop()!
      this.segBase[seg] = base
      this.segVa[seg] = va
      this.segEnd[seg] = base
      this.segStream[seg] = stream
      this.segLast[seg] = -1
      this.segMap[seg] = new Int32Array(0)
      this.segChunks[seg] = 0
    } else {
      seg = this.segBase.length
      this.segBase.push(base)
      this.segVa.push(va)
      this.segEnd.push(base)
      this.segStream.push(stream)
      this.segLast.push(-1)
      this.segMap.push(new Int32Array(0))
      this.segChunks.push(0)
    }
    return seg
  }

  private killSegment(seg: number): void {
    const pool = this.pools[this.segStream[seg]!]!
    if (pool.segment === seg) pool.segment = -1
    this.segVa[seg] = 0
    this.segLast[seg] = -1
    this.segMap[seg] = new Int32Array(0)
    this.segFreeIds.push(seg)
  }

  private newChunk(handle: number, seg: number, start: number, size: number): number {
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
    }
    return c
  }

  /**
   * Note [Growth]
   * -------------
   * Each stream has one growable segment: a virtual range of `segmentBytes` (the device's
   * capacity by default), mapped from its base up, as PyTorch's expandable segments. New memory
   * is mapped at its end, so it extends the free block that ends there (the tail of the last
   * tensor's chunk included): a request that only needs more memory takes that block and the new
   * chunks as one ordinary block, with no stitch. Only when the range is full does the stream
   * start another. The new chunks are one set-access (one call over the new extent).
   *
   * Note [Chunk sizes]
   * ------------------
   * `cover` is how much of the new memory the request that made it will cover. The new memory is
   * cut into chunks of `maxChunkBytes` at most, about `cover / chunkDivisor` each (a power of two
   * of granules), then one granule for the part the request covers only in part (`tailChunk`):
   * when the request is freed its chunks are wholly free, however the granule it shares with the
   * next tensor is used. Few chunks keep the driver bill low (one `cuMemCreate` and one map each,
   * and `cuMemCreate` costs about the same from 2 MiB to 512 MiB); small ones strand fewer bytes
   * next to live neighbours. The divisor makes the compromise scale with the workload's tensors.
   */
  private grow(pool: StreamPool, stream: number, bytes: number, cover: number): void {
    const port = this.port
    const g = this.granule
    let seg = pool.segment
    let fresh = false
    if (seg < 0 || this.segEnd[seg]! + bytes > this.segBase[seg]! + this.segVa[seg]!) {
      const va = Math.max(this.segmentVa, bytes)
      seg = this.newSegment(port.addressReserve(va), va, stream)
      fresh = true
    }
    const at = this.segEnd[seg]!
    const sizes: Array<number> = []
    let body = this.tailChunk ? Math.min(bytes, Math.max(0, Math.floor(cover / g) * g)) : bytes
    const tail = bytes - body
    let piece = g
    while (piece * 2 <= this.maxChunk && piece * 2 * this.divisor <= body) piece *= 2
    while (body > 0) {
      const s = Math.min(body, piece)
      sizes.push(s)
      body -= s
    }
    if (tail > 0) sizes.push(tail)
    const handles: Array<number> = []
    let mapped = 0
    try {
      for (let i = 0; i < sizes.length; i++) handles.push(port.memCreate(sizes[i]!))
      for (let i = 0; i < sizes.length; i++) {
        port.memMap((at + mapped) as Address, sizes[i]!, handles[i]! as ChunkHandle)
        mapped += sizes[i]!
      }
      port.setAccess(at as Address, bytes)
    } catch (e) {
      // Note [Driver failures]
      if (mapped > 0) port.memUnmap(at as Address, mapped)
      for (let i = 0; i < handles.length; i++) port.memRelease(handles[i]! as ChunkHandle)
      if (fresh) {
        port.addressFree(this.segBase[seg]! as Address, this.segVa[seg]!)
        this.killSegment(seg)
      }
      throw e
    }
    pool.segment = seg
    const base = this.segBase[seg]!
    let map = this.segMap[seg]!
    const need = (at + bytes - base) / g
    if (need > map.length) {
      let cap = Math.max(64, map.length)
      while (cap < need) cap *= 2
      const grown = new Int32Array(cap).fill(-1)
      grown.set(map)
      this.segMap[seg] = map = grown
    }
    let off = at
    let prev = at > base ? map[(at - base) / g - 1]! : -1
    for (let i = 0; i < sizes.length; i++) {
      const c = this.newChunk(handles[i]!, seg, off, sizes[i]!)
      map.fill(c, (off - base) / g, (off + sizes[i]! - base) / g)
      if (prev >= 0) this.cNext[prev] = c
      prev = c
      off += sizes[i]!
    }
    this.segChunks[seg] = this.segChunks[seg]! + sizes.length
    this.reservedBytes += bytes
    this.segEnd[seg] = at + bytes
    // the new memory joins the free block at the end
    this.release(this.newBlock(seg, at, bytes, USED, this.segLast[seg]!))
  }

  /**
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
   * Every step that acquires something (create, reserve, map, set access) may fail. The policy
   * undoes what the failed operation did on the device (unmap, release, free range) before it
   * touches its own state, so a failed `malloc` leaves both as they were, apart from memory that a
   * successful growth added to the free cache before a later step failed.
   */
  private releaseFreeChunks(): number {
    let n = 0
    for (let s = 0; s < this.pools.length; s++) {
      const pool = this.pools[s]
      if (pool === undefined) continue
      const ids: Array<number> = []
      for (let i = 0; i < pool.free.length; i++) {
        const x = pool.free.idAt(i)
        if (this.bRun[x]! > 0) ids.push(x)
      }
      for (let i = 0; i < ids.length; i++) {
        let cur = ids[i]!
        while (cur >= 0 && this.bState[cur] === FREE && this.bRun[cur]! > 0) {
          const seg = this.bSeg[cur]!
          const a = this.bStart[cur]!
          this.runOf(seg, a, a + this.bSize[cur]!)
          const re = this.re
          let from = this.rs
          while (from < re && !this.releasable(this.chunkAt(seg, from))) from = this.chunkEnd(this.chunkAt(seg, from))
          if (from >= re) break
          let to = from
          let count = 0
          while (to < re && this.releasable(this.chunkAt(seg, to))) {
            to = this.chunkEnd(this.chunkAt(seg, to))
            count++
          }
          n += count
          cur = this.releaseChunks(cur, from, to)
        }
      }
    }
    return n
  }

  private chunkEnd(c: number): number {
    return this.cStart[c]! + this.cSize[c]!
  }

  /** Wholly free chunks can go back to the driver unless a view in use maps them. */
  private releasable(c: number): boolean {
    const vs = this.cViews[c]
    if (vs !== null && vs !== undefined) {
      for (let i = 0; i < vs.length; i++) if (this.vLive[vs[i]!]! >= 0 || this.vLive[vs[i]!] === V_CLAIMING) return false
    }
    return true
  }

  /** Gives back the chunks in [from, to) of free block `x`; returns the free block after them, or -1. */
  private releaseChunks(x: number, from: number, to: number): number {
    const port = this.port
    const seg = this.bSeg[x]!
    for (let at = from; at < to;) {
      const c = this.chunkAt(seg, at)
      for (let vs = this.cViews[c]; vs !== null && vs !== undefined; vs = this.cViews[c]) this.evict(vs[0]!)
      at = this.chunkEnd(c)
    }
    port.memUnmap(from as Address, to - from)
    const base = this.segBase[seg]!
    const map = this.segMap[seg]!
    const g = this.granule
    if (from > base && map[(from - base) / g - 1]! >= 0) this.cNext[map[(from - base) / g - 1]!] = -1
    for (let at = from; at < to;) {
      const c = this.chunkAt(seg, at)
      port.memRelease(this.cHandle[c]! as ChunkHandle)
      const size = this.cSize[c]!
      this.reservedBytes -= size
      map.fill(-1, (at - base) / g, (at + size - base) / g)
      this.segChunks[seg] = this.segChunks[seg]! - 1
      this.cSeg[c] = -1
      this.chunkFreeIds.push(c)
      at += size
    }
    this.removeFree(x)
    const a = this.bStart[x]!
    const b = a + this.bSize[x]!
    let right = -1
    if (from > a) {
      this.bSize[x] = from - a
      this.insertFreeRun(x)
      if (to < b) {
        right = this.newBlock(seg, to, b - to, FREE, x)
        this.insertFreeRun(right)
      }
    } else if (to < b) {
      this.bStart[x] = to
      this.bSize[x] = b - to
      this.insertFreeRun(x)
      right = x
    } else {
      this.unlinkBlock(x)
    }
    if (to === this.segEnd[seg]) {
      // the growing end moves back to the last chunk still mapped
      let i = (from - base) / g - 1
      while (i >= 0 && map[i] === -1) i--
      this.segEnd[seg] = i < 0 ? base : this.chunkEnd(map[i]!)
    }
    if (this.segChunks[seg] === 0) {
      port.addressFree(base as Address, this.segVa[seg]!)
      this.killSegment(seg)
    }
    return right
  }
}
