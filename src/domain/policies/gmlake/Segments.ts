/**
 * The primary segments of the stitching allocator and the blocks that tile them: a caching
 * allocator's block table over the chunks of `Pool.ts`, with the per-stream free indexes, the
 * chunk map, and growth.
 *
 * Note [Block table]
 * ------------------
 * Blocks, chunks, segments, views and grants are numeric ids into parallel arrays, never object
 * graphs: an id is cheap to store, to compare and to check, and the integrity check can walk every
 * table. Blocks of a segment form a doubly linked list in address order (`bPrev`, `bNext`); ids
 * of dead blocks are reused. A grant is what a `BlockId` names: a primary block, or a view and
 * the list of primary spans it holds; its id carries a generation (Note [Block handles] in
 * `SlotTable.ts`).
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
 *
 * Why one file of ~530 lines: the block table, the free indexes and the chunk map are one state;
 * growth and taking chunks out (`cutChunks`, for pressure and adoption) must update all three at once.
 *
 * @since 0.1.0
 */
import type { DriverPort } from "../../DriverPort.ts"
import { executeMap, executeUnmap } from "../../vmm/Plan.ts"
import { BestFit } from "../pytorch/BestFit.ts"
import type { ChunkPool } from "./Pool.ts"

/** Block states. @category models */
export const FREE = 0
/** @category models */
export const USED = 1
/** @category models */
export const DEAD = 2

/**
 * One stream's pools.
 * @category models
 */
export class StreamPool {
  /** Free blocks by (size, address), keyed by the block table (Note [Keyed entries] in `BestFit.ts`). */
  readonly free: BestFit
  /** Cached views, by (size, base). */
  readonly views = new BestFit(16)
  /** Bytes of the whole chunks of the free blocks (Note [Whole chunks]). */
  runBytes = 0
  /** Bytes of the free blocks. */
  freeBytes = 0
  /** The segment that grows (Note [Growth]), or -1. */
  segment = -1

  constructor(keys: { readonly size: ReadonlyArray<number>; readonly tie: ReadonlyArray<number> }) {
    this.free = new BestFit(64, keys)
  }
}

/**
 * Segments and their blocks. Fields are shared with the other parts of the allocator.
 * @category models
 */
export class Segments {
  readonly pools: Array<StreamPool | undefined> = []

  // segments
  readonly segBase: Array<number> = []
  readonly segVa: Array<number> = []
  /** End of the mapped part (the growing end). */
  readonly segEnd: Array<number> = []
  readonly segStream: Array<number> = []
  /** Last block in address order, or -1. */
  readonly segLast: Array<number> = []
  /** Granule index -> chunk id, -1 in holes (Note [Chunk map]). */
  readonly segMap: Array<Int32Array> = []
  readonly segChunks: Array<number> = []
  readonly segFreeIds: Array<number> = []

  // blocks: spans of primary segments (Note [Block table])
  readonly bSeg: Array<number> = []
  readonly bStart: Array<number> = []
  readonly bSize: Array<number> = []
  readonly bState: Array<number> = []
  readonly bPrev: Array<number> = []
  readonly bNext: Array<number> = []
  /** Whole-chunk bytes of a free block, as counted in its pool's `runBytes`. */
  readonly bRun: Array<number> = []
  private readonly blockFreeIds: Array<number> = []

  // the chunks' arrays (never replaced; see `Pool.ts`)
  private readonly cStart: Array<number>
  private readonly cSize: Array<number>
  private readonly cNext: Array<number>
  private readonly cFree: Array<number>
  private readonly cBlk: Array<number>
  private readonly cFreedAt: Array<number>

  // results of `runOf`
  rs = 0
  re = 0
  /** Chunks made wholly free by `release`, ever (Note [Fewer events] in `Adoption.ts`). */
  wholeFreed = 0
  /** The free block right of the last carve, or -1: where the next span of a claim usually is. */
  lastRight = -1
  /** `grow`'s chunk sizes and handles, reused by every call (Note [Scratch arrays]). */
  private readonly growSizes: Array<number> = []
  private readonly growHandles: Array<number> = []

  readonly chunks: ChunkPool
  /** The VMM granularity. */
  readonly granule: number
  /** Blocks' alignment: chunk boundaries are multiples of it. */
  readonly unit: number

  constructor(chunks: ChunkPool, granule: number, unit: number) {
    this.chunks = chunks
    this.granule = granule
    this.unit = unit
    this.cStart = chunks.cStart
    this.cSize = chunks.cSize
    this.cNext = chunks.cNext
    this.cFree = chunks.cFree
    this.cBlk = chunks.cBlk
    this.cFreedAt = chunks.cFreedAt
  }

  /** The pools of `stream`, created on first use. */
  pool(stream: number): StreamPool {
    let pool = this.pools[stream]
    if (pool === undefined) {
      pool = new StreamPool({ size: this.bSize, tie: this.bStart })
      this.pools[stream] = pool
    }
    return pool
  }

  // --- the chunk map -----------------------------------------------------------------------------

  /**
   * The segment's chunk map, grown (doubling, from 64 entries) to hold `need` granules: growth and
   * adoption extend a segment's mapped part (Note [Chunk map]).
   */
  mapFor(seg: number, need: number): Int32Array {
    let map = this.segMap[seg]!
    if (need > map.length) {
      let cap = Math.max(64, map.length)
      while (cap < need) cap *= 2
      const grown = new Int32Array(cap).fill(-1)
      grown.set(map)
      this.segMap[seg] = map = grown
    }
    return map
  }

  /**
   * Takes the whole chunks [from, to) out of free block `x`: evicts the views that map them (through
   * `evict`), unmaps them in one plan, frees the segment's range when nothing is left in it, and cuts
   * [from, to) out of the free block (what is left stays free on either side). With `out` null the
   * chunks are released (Note [Pressure]); otherwise they are kept, homeless, and pushed to `out`
   * for another segment to map (Note [Cross-stream adoption]). Returns the free block after the cut,
   * or -1.
   */
  cutChunks(port: DriverPort, evict: (view: number) => void, x: number, from: number, to: number, out: Array<number> | null): number {
    const chunks = this.chunks
    const seg = this.bSeg[x]!
    const handles: Array<number> = []
    let n = 0
    for (let at = from; at < to;) {
      const c = this.chunkAt(seg, at)
      for (let vs = chunks.cViews[c]; vs !== null && vs !== undefined; vs = chunks.cViews[c]) evict(vs[0]!)
      if (out === null) handles.push(chunks.cHandle[c]!)
      n++
      at = chunks.end(c)
    }
    const base = this.segBase[seg]!
    const emptied = this.segChunks[seg] === n
    executeUnmap(port, { at: from, bytes: to - from, handles, freeBase: base, freeBytes: emptied ? this.segVa[seg]! : 0 })
    const map = this.segMap[seg]!
    const g = this.granule
    if (from > base && map[(from - base) / g - 1]! >= 0) chunks.cNext[map[(from - base) / g - 1]!] = -1
    for (let at = from; at < to;) {
      const c = this.chunkAt(seg, at)
      const size = chunks.cSize[c]!
      map.fill(-1, (at - base) / g, (at + size - base) / g)
      if (out === null) {
        chunks.remove(c)
      } else {
        chunks.cSeg[c] = -1
        chunks.cFree[c] = 0
        chunks.cNext[c] = -1
        chunks.cBlk[c] = -1
        out.push(c)
      }
      at += size
    }
    this.segChunks[seg] = this.segChunks[seg]! - n
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
      this.segEnd[seg] = i < 0 ? base : chunks.end(map[i]!)
    }
    if (emptied) this.killSegment(seg)
    return right
  }

  /** The chunk under `addr`, a mapped address of segment `seg` (Note [Chunk map]). */
  chunkAt(seg: number, addr: number): number {
    return this.segMap[seg]![Math.floor((addr - this.segBase[seg]!) / this.granule)]!
  }

  /**
   * `runOf` over block `x` as it is now: the hot path's form (Note [Small arguments]).
   *
   * Note [Small arguments]
   * ----------------------
   * Addresses are far past the small-integer range, so a JavaScript engine holds them as doubles,
   * and one passed to (or returned from) a call the optimizer did not inline becomes a heap
   * number: 16 bytes of garbage per argument. The hot path calls `carve` and `runOf` once or twice
   * per operation, and they are too large to be inlined everywhere; passing them addresses made
   * gmlake allocate several times what the caching policy allocates per replay, and the young
   * generation's collections then land inside the replay. So the hot calls take a block id and
   * offsets or sizes (small integers) and read the addresses from the block table themselves.
   * `runOf` itself is small enough to be inlined here (inspector allocation sampling: the same
   * bytes per replay whether `runOfBlock` calls it or repeats its body).
   */
  runOfBlock(x: number): number {
    const a = this.bStart[x]!
    return this.runOf(this.bSeg[x]!, a, a + this.bSize[x]!)
  }

  /**
   * Whole chunks of segment `seg` inside [a, b), a span of blocks: [rs, re); returns their bytes.
   */
  runOf(seg: number, a: number, b: number): number {
    let c = this.chunkAt(seg, a)
    const rs = this.cStart[c] === a ? a : this.cStart[c]! + this.cSize[c]!
    c = this.chunkAt(seg, b - 1)
    const ce = this.cStart[c]! + this.cSize[c]!
    const re = ce === b ? b : this.cStart[c]!
    this.rs = rs
    this.re = re
    return re > rs ? re - rs : 0
  }

  /**
   * Appends to `out`, as (free block, from, to) triples, each longest stretch of whole free chunks
   * that pass `ok` in the free blocks of the streams other than `stream` (what cross-stream
   * adoption may move and lending may lend, Note [Cross-stream lending]). Slow path only.
   */
  foreignStretches(stream: number, ok: (c: number) => boolean, out: Array<number>): void {
    const end = (c: number): number => this.cStart[c]! + this.cSize[c]!
    for (let s = 0; s < this.pools.length; s++) {
      const other = this.pools[s]
      if (s === stream || other === undefined || other.runBytes === 0) continue
      for (let i = 0; i < other.free.length; i++) {
        const x = other.free.idAt(i)
        if (this.bRun[x]! === 0) continue
        const seg = this.bSeg[x]!
        this.runOfBlock(x)
        const re = this.re
        let at = this.rs
        while (at < re) {
          const from = at
          while (at < re && ok(this.chunkAt(seg, at))) at = end(this.chunkAt(seg, at))
          if (at > from) out.push(x, from, at)
          if (at < re) at = end(this.chunkAt(seg, at))
        }
      }
    }
  }

  // --- blocks ------------------------------------------------------------------------------------

  insertFree(b: number, run: number): void {
    const pool = this.pools[this.segStream[this.bSeg[b]!]!]!
    const size = this.bSize[b]!
    this.bRun[b] = run
    pool.free.insertKeyed(b)
    pool.freeBytes += size
    pool.runBytes += run
  }

  insertFreeRun(b: number): void {
    this.insertFree(b, this.runOfBlock(b))
  }

  removeFree(b: number): void {
    const pool = this.pools[this.segStream[this.bSeg[b]!]!]!
    const size = this.bSize[b]!
    pool.free.removeKeyed(b)
    pool.freeBytes -= size
    pool.runBytes -= this.bRun[b]!
  }

  /** A new block linked after `after` (or as the only block of an empty segment). */
  newBlock(seg: number, start: number, size: number, state: number, after: number): number {
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

  /** A new block of `size` bytes right after block `after` (Note [Small arguments]: no address passed). */
  newBlockAfter(after: number, size: number, state: number): number {
    return this.newBlock(this.bSeg[after]!, this.bStart[after]! + this.bSize[after]!, size, state, after)
  }

  unlinkBlock(id: number): void {
    const p = this.bPrev[id]!
    const n = this.bNext[id]!
    if (p >= 0) this.bNext[p] = n
    if (n >= 0) this.bPrev[n] = p
    else this.segLast[this.bSeg[id]!] = p
    this.bState[id] = DEAD
    this.blockFreeIds.push(id)
  }

  /**
   * Takes [p, q) out of free block `x`, where p is `head` bytes past its start and q is `bytes`
   * past p (offsets, not addresses: Note [Small arguments]), as in Note [Whole chunks]; returns
   * the used block.
   */
  carve(x: number, head: number, bytes: number): number {
    const seg = this.bSeg[x]!
    const a = this.bStart[x]!
    const size = this.bSize[x]!
    const b = a + size
    const p = a + head
    const q = p + bytes
    const run = this.bRun[x]!
    // The pieces left free hold whole chunks only if `x` did, and only of its run.
    let leftRun = 0
    let rightRun = 0
    if (run > 0) {
      this.runOfBlock(x)
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
    // Note [Replace in place] in `BestFit.ts`: `x` leaves the free index and the first piece left
    // free takes its place there, in one step; the bytes and runs are counted as a removal and
    // insertions would count them.
    const pool = this.pools[this.segStream[seg]!]!
    const free = pool.free
    const place = free.indexOfKeyed(x)
    pool.freeBytes -= bytes
    pool.runBytes += leftRun + rightRun - run
    let used: number
    let r = -1
    if (p > a) {
      this.bSize[x] = p - a
      this.bRun[x] = leftRun
      free.moveKeyed(place, x)
      used = this.newBlockAfter(x, bytes, USED)
      if (q < b) {
        r = this.newBlockAfter(used, b - q, FREE)
        this.bRun[r] = rightRun
        free.insertKeyed(r)
      }
    } else {
      this.bSize[x] = bytes
      this.bState[x] = USED
      this.bRun[x] = 0
      used = x
      if (q < b) {
        r = this.newBlockAfter(used, b - q, FREE)
        this.bRun[r] = rightRun
        free.moveKeyed(place, r)
      } else {
        free.removeKeyedAt(place)
      }
    }
    this.lastRight = r
    return used
  }

  /** Frees used block `y`, merged with its free neighbours (Note [Whole chunks]); `y` keeps its id. */
  release(y: number): void {
    const seg = this.bSeg[y]!
    const s = this.bStart[y]!
    const e = s + this.bSize[y]!
    let a = s
    let b = e
    // Note [Replace in place] in `BestFit.ts`: the merged block takes the place of a free
    // neighbour in the free index (the left one if both), in one step.
    const pool = this.pools[this.segStream[seg]!]!
    let merged = -1
    const L = this.bPrev[y]!
    if (L >= 0 && this.bState[L] === FREE && this.bStart[L]! + this.bSize[L]! === s) {
      merged = L
      a = this.bStart[L]!
      pool.freeBytes -= this.bSize[L]!
      pool.runBytes -= this.bRun[L]!
    }
    const R = this.bNext[y]!
    const right = R >= 0 && this.bState[R] === FREE && this.bStart[R] === e
    if (right) {
      b = e + this.bSize[R]!
      if (merged < 0) {
        merged = R
        pool.freeBytes -= this.bSize[R]!
        pool.runBytes -= this.bRun[R]!
      } else this.removeFree(R)
    }
    // found under its keys before anything changes them (Note [Keyed entries] in `BestFit.ts`)
    const place = merged >= 0 ? pool.free.indexOfKeyed(merged) : -1
    if (merged >= 0 && merged === L) this.unlinkBlock(L)
    if (right) this.unlinkBlock(R)
    this.bStart[y] = a
    this.bSize[y] = b - a
    this.bState[y] = FREE
    // a block smaller than a granule holds no whole chunk
    const run = b - a < this.granule ? 0 : this.runOfBlock(y)
    if (run > 0) {
      const end = e < this.re ? e : this.re
      let at = s > this.rs ? s : this.rs
      if (at < end) {
        let c = this.chunkAt(seg, at)
        for (;;) {
          this.cFree[c] = 1
          this.cBlk[c] = y
          this.cFreedAt[c] = this.chunks.freeSeq
          this.wholeFreed++
          at = this.cStart[c]! + this.cSize[c]!
          if (at >= end) break
          c = this.cNext[c]!
        }
      }
    }
    this.bRun[y] = run
    pool.freeBytes += b - a
    pool.runBytes += run
    if (place >= 0) pool.free.moveKeyed(place, y)
    else pool.free.insertKeyed(y)
  }

  private isFreeOver(x: number, seg: number, p: number, q: number): boolean {
    return x >= 0 && this.bState[x] === FREE && this.bSeg[x] === seg && this.bStart[x]! <= p &&
      this.bStart[x]! + this.bSize[x]! >= q
  }

  /** The free block holding [p, q) of segment `seg` (which lies in chunk `c`), or -1. */
  freeBlockOver(c: number, seg: number, p: number, q: number): number {
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

  // --- segments ----------------------------------------------------------------------------------

  /** A segment over the reservation [base, base + va) of `stream`, with nothing mapped yet. */
  newSegment(base: number, va: number, stream: number): number {
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

  /** Forgets segment `seg`, whose range has gone back to the driver; its id is reused. */
  killSegment(seg: number): void {
    const pool = this.pools[this.segStream[seg]!]!
    if (pool.segment === seg) pool.segment = -1
    this.segVa[seg] = 0
    this.segLast[seg] = -1
    this.segMap[seg] = new Int32Array(0)
    this.segFreeIds.push(seg)
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
   *
   * The driver steps are one map plan (Note [Map plans] in `vmm/Plan.ts`), so a failure leaves
   * the device as it was and this state untouched (Note [Driver failures] in `Pressure.ts`).
   *
   * Note [Scratch arrays]
   * ---------------------
   * The slow path runs hundreds of times in a replay's first steps (grow, stitch); the arrays
   * a map plan reads (chunk sizes, handles) live only for the call, so each part keeps one pair
   * and empties it per call instead of allocating two arrays grown by `push`: fewer young
   * objects, fewer scavenges inside the replay. Only arrays that nothing keeps after the call may
   * be scratch (a view keeps its chunk list, a grant its blocks).
   */
  grow(port: DriverPort, shape: GrowthShape, pool: StreamPool, stream: number, bytes: number, cover: number): void {
    const g = this.granule
    let seg = pool.segment
    const fresh = seg < 0 || this.segEnd[seg]! + bytes > this.segBase[seg]! + this.segVa[seg]!
    const va = fresh ? Math.max(shape.segmentVa, bytes) : 0
    const sizes = this.growSizes
    sizes.length = 0
    let body = shape.tailChunk ? Math.min(bytes, Math.max(0, Math.floor(cover / g) * g)) : bytes
    const tail = bytes - body
    let piece = g
    while (piece * 2 <= shape.maxChunk && piece * 2 * shape.divisor <= body) piece *= 2
    while (body > 0) {
      const s = Math.min(body, piece)
      sizes.push(s)
      body -= s
    }
    if (tail > 0) sizes.push(tail)
    // executeMap empties `handles` and fills it with the chunks it creates
    const handles = this.growHandles
    const at: number = executeMap(port, { reserve: va, at: fresh ? 0 : this.segEnd[seg]!, sizes, handles, create: true })
    if (fresh) seg = this.newSegment(at, va, stream)
    pool.segment = seg
    const base = this.segBase[seg]!
    const map = this.mapFor(seg, (at + bytes - base) / g)
    let off = at
    let prev = at > base ? map[(at - base) / g - 1]! : -1
    for (let i = 0; i < sizes.length; i++) {
      const c = this.chunks.add(handles[i]!, seg, off, sizes[i]!)
      map.fill(c, (off - base) / g, (off + sizes[i]! - base) / g)
      if (prev >= 0) this.cNext[prev] = c
      prev = c
      off += sizes[i]!
    }
    this.segChunks[seg] = this.segChunks[seg]! + sizes.length
    this.segEnd[seg] = at + bytes
    // the new memory joins the free block at the end
    this.release(this.newBlock(seg, at, bytes, USED, this.segLast[seg]!))
  }
}

/**
 * How new memory is cut (Note [Growth], Note [Chunk sizes]), from the settings.
 * @category models
 */
export interface GrowthShape {
  /** Virtual size of a new segment. */
  readonly segmentVa: number
  readonly maxChunk: number
  readonly divisor: number
  readonly tailChunk: boolean
}
