/**
 * The stitching allocator, policy "gmlake": GMLake's virtual memory stitching (ASPLOS'24) with
 * four changes that make it beat both GMLake and PyTorch's `expandable_segments`: blocks that
 * share chunks (tails), growth of one segment per stream, stitching only the shortfall, and
 * stitched ranges that may begin and end in partly free chunks. Pure and synchronous: it talks to
 * the device only through a `DriverPort` (Note [Plans as a dialogue] in `DriverPort.ts`).
 *
 * The policy decides; its parts keep the state it decides over:
 * - `Pool.ts`: the physical chunks;
 * - `Segments.ts`: the primary segments, the blocks tiling them, the per-stream free indexes and
 *   growth;
 * - `Stitcher.ts`: stitched views and their cache;
 * - `Selection.ts`: which free chunks a new view maps;
 * - `Pressure.ts`: giving chunks back when the driver refuses memory;
 * - `Adoption.ts`: taking chunks other streams have finished with (Note [Cross-stream adoption]);
 * - `Integrity.ts`: the invariants, checked by tests;
 * - `vmm/Plan.ts`: the driver transactions (map plans) every part executes.
 *
 * Note [Stitching]
 * ----------------
 * Physical memory comes in chunks (one `cuMemCreate` handle each, a multiple of the granule).
 * Every chunk has one home: a place in a primary segment, a virtual range of its stream whose
 * mapped part is a row of chunks (Note [Growth]). The segment's mapped bytes are cut into blocks
 * at 512 B boundaries, free or used, exactly like a caching allocator's segment: a request takes
 * the best-fitting free block of its stream, free neighbours merge, and a block may start in one
 * chunk and end in another, so the tail of one tensor and the head of the next share a chunk
 * (GMLake gives every tensor chunks of its own, and strands the rest of its last one). Small
 * requests take the same blocks (no separate small pool).
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
 * set-access); adopting chunks other streams have finished with (Note [Cross-stream adoption]);
 * growing the stream's segment by the shortfall and stitching it with the free chunks
 * (Note [Shortfall]); and under pressure, giving free chunks back and trying again
 * (Note [Pressure]).
 *
 * Note [Placement]
 * ----------------
 * A request smaller than its free block takes its head or its tail: whichever overlaps fewer
 * bytes of whole chunks, so that free chunks stay stitchable (head on a tie, as PyTorch; always
 * the head at the growing end of the segment, so that the free end stays where growth extends
 * it). Measured on the four traces: 0.6 points of mean utilization (0.8 and 0.9 on two of them),
 * for two chunk lookups.
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
import type { StreamPort } from "../../StreamPort.ts"
import { DriverError, InvalidBlockError, InvalidRequestError, OutOfMemoryError } from "../../Errors.ts"
import { SLOT_LIMIT } from "../../SlotTable.ts"
import type { Address, BlockId } from "../../Units.ts"
import { Adoption } from "./Adoption.ts"
import { G_DEFERRED, G_LIVE, G_RETURNING, GrantTable } from "./Grants.ts"
import { checkIntegrity } from "./Integrity.ts"
import { defaultParts, type PartFactories } from "./Parts.ts"
import type { ChunkPool } from "./Pool.ts"
import { Pressure } from "./Pressure.ts"
import { FREE, type GrowthShape, Segments, type StreamPool } from "./Segments.ts"
import { Selection } from "./Selection.ts"
import type { Stitcher } from "./Stitcher.ts"
import { defaultStitchingConfig, type StitchingConfig } from "./StitchingConfig.ts"

/**
 * The stitching allocator (see the notes above). `config` defaults to `defaultStitchingConfig`.
 * @category constructors
 */
export class StitchingAllocator implements Allocator {
  readonly policy = "gmlake" as const
  readonly config: StitchingConfig
  private readonly port: DriverPort
  private readonly shape: GrowthShape
  private readonly placement: boolean
  private readonly allocateAndStitch: boolean
  private readonly minSaving: number

  /** The parts (see the module's comment); for `Integrity.ts` and tests. */
  readonly chunks: ChunkPool
  readonly segments: Segments
  readonly stitcher: Stitcher
  readonly grants = new GrantTable()
  private readonly selection: Selection
  private readonly pressure: Pressure
  /** Present when `crossStream` is on and the device's streams are given. */
  readonly adoption: Adoption | undefined

  private nReleased = 0
  /** Whether other streams' chunks are lent through views (Note [Cross-stream lending]). */
  private readonly lending: boolean
  /** With lending: moves per chunk before it is only lent (0: never moved); -1: no limit. */
  private readonly moves: number
  /** Grants returning lent chunks: slot, the freeing stream, the free's number. */
  private readonly retSlot: Array<number> = []
  private readonly retStream: Array<number> = []
  private readonly retSeq: Array<number> = []
  /** Frees of blocks that held other streams' bytes (Note [Cross-stream lending]). */
  nLentFrees = 0
  /** Scratch: the spans of a lending view's grant that are the freeing stream's own. */
  private readonly ownBlks: Array<number> = []

  /**
   * `streams`, the device's streams and events, enables cross-stream adoption (with the
   * `crossStream` setting, on by default); without it every stream keeps to its own chunks.
   * `parts` builds the pool and the stitcher (Note [Replaceable parts] in `Parts.ts`).
   */
  constructor(
    port: DriverPort,
    config: StitchingConfig = defaultStitchingConfig,
    streams?: StreamPort,
    parts: PartFactories = defaultParts
  ) {
    this.port = port
    this.config = config
    const g = port.granularity
    // Blocks split at `splitBytes`, and chunk boundaries must be split points.
    let unit = Math.min(config.splitBytes, g)
    while (g % unit !== 0) unit--
    const va = config.segmentBytes > 0 ? config.segmentBytes : port.capacity
    this.shape = {
      segmentVa: Math.max(g, Math.ceil(va / g) * g),
      maxChunk: Math.max(g, Math.floor(config.maxChunkBytes / g) * g),
      divisor: config.chunkDivisor,
      tailChunk: config.tailChunk
    }
    this.placement = config.placement
    this.allocateAndStitch = config.allocateAndStitch
    this.minSaving = config.minStitchSavingBytes
    this.chunks = parts.pool()
    this.segments = new Segments(this.chunks, g, unit)
    this.stitcher = parts.stitcher({
      port,
      chunks: this.chunks,
      segments: this.segments,
      reuseLimit: config.reuseLimit,
      maxCached: config.maxCachedStitchedBytes
    })
    this.selection = new Selection(this.chunks, this.segments, Math.max(unit, config.minPartialBytes))
    this.pressure = new Pressure(port, this.chunks, this.segments, this.stitcher)
    this.lending = config.crossStream && streams !== undefined && config.crossStreamLending
    this.moves = this.lending ? config.crossStreamMoves : -1
    this.adoption = config.crossStream && streams !== undefined
      ? new Adoption(port, streams, this.chunks, this.segments, this.stitcher, this.shape, this.moves)
      : undefined
    if (this.lending) this.stitcher.lendable = this.adoption!.lendable
  }

  // --- the Allocator contract --------------------------------------------------------------------

  malloc(size: number, stream: number): BlockId {
    if (!(Number.isSafeInteger(size) && size > 0)) {
      throw new InvalidRequestError({ detail: `size must be a positive integer, got ${size}` })
    }
    if (!(Number.isInteger(stream) && stream >= 0 && stream <= 0xffff)) {
      throw new InvalidRequestError({ detail: `stream must be an integer from 0 to 65535, got ${stream}` })
    }
    if (!this.grants.hasRoom()) {
      throw new InvalidRequestError({ detail: `more than ${SLOT_LIMIT} blocks live at once` })
    }
    const unit = this.segments.unit
    const rr = Math.ceil(size / unit) * unit
    const pool = this.segments.pool(stream)
    const x = pool.free.bestFit(rr)
    if (x >= 0) return this.grantPrimary(pool, x, rr, size)
    return this.mallocSlow(pool, rr, size, stream)
  }

  free(block: BlockId, deferred?: boolean): void {
    const slot = this.slotOf(block, "free", G_LIVE)
    if (deferred === true) this.grants.state[slot] = G_DEFERRED
    else this.releaseGrant(slot)
  }

  complete(block: BlockId): void {
    this.releaseGrant(this.slotOf(block, "complete", G_DEFERRED))
  }

  address(block: BlockId): Address {
    return this.grants.addr[this.slotOf(block, "address", G_LIVE)]! as Address
  }

  size(block: BlockId): number {
    return this.grants.req[this.slotOf(block, "size", G_LIVE)]!
  }

  emptyCache(): void {
    if (this.retSlot.length > 0) {
      // Note [Cross-stream lending]: wait for the borrowers' work, then give the spans back
      for (let i = 0; i < this.retSlot.length; i++) this.adoption!.drain(this.retStream[i]!, this.retSeq[i]!)
      this.returnLent()
    }
    this.adoption?.dropEvents()
    this.stitcher.evictAll()
    this.pressure.releaseFreeChunks()
  }

  reserved(): number {
    return this.chunks.reservedBytes
  }

  counters(): PolicyCounters {
    const st = this.stitcher
    return {
      stitches: st.nStitches,
      stitchedChunks: st.nStitchedChunks,
      cachedStitchHits: st.nHits,
      evictions: st.nEvictions,
      releasedForPressure: this.nReleased
    }
  }

  /**
   * Checks the allocator's internal invariants and throws an `Error` naming the first one broken
   * (see `Integrity.ts`). Linear in the size of the state: for tests, not for the hot path.
   * @category testing
   */
  checkIntegrity(): void {
    checkIntegrity(this)
  }

  // --- grants ------------------------------------------------------------------------------------

  /** The slot of grant `id` if it is in state `want`, else `InvalidBlockError` (nothing changes). */
  private slotOf(id: number, operation: string, want: number): number {
    const grants = this.grants
    const slot = grants.find(id)
    if (slot >= 0) {
      const state = grants.state[slot]!
      if (state === want) return slot
      const detail = state === G_DEFERRED
        ? "the block was freed and awaits complete()"
        : state === G_LIVE
        ? "the block is live: complete() follows a deferred free"
        : "the block was already freed"
      throw new InvalidBlockError({ block: id, operation, detail })
    }
    throw new InvalidBlockError({ block: id, operation, detail: "no such block (never allocated, or freed long ago)" })
  }

  private releaseGrant(slot: number): void {
    const grants = this.grants
    const v = grants.view[slot]!
    // Note [Cross-stream adoption]: the chunks this free makes wholly free carry its number.
    this.chunks.freeSeq++
    const sg = this.segments
    const whole = sg.wholeFreed
    if (v < 0) {
      const b = grants.blk[slot]!
      sg.release(b)
      // Note [Fewer events]: only a free that made a chunk wholly free needs an event
      if (this.adoption?.multi === true && sg.wholeFreed !== whole) this.adoption.freed(sg.segStream[sg.bSeg[b]!]!)
    } else {
      const blks = grants.blks[slot]!
      if (this.lending && this.stitcher.vForeign[v] === 1 && this.lendFree(slot, v, blks)) return
      for (let i = 0; i < blks.length; i++) sg.release(blks[i]!)
      // Note [Stitched view cache]
      this.stitcher.cache(v)
      if (this.adoption?.multi === true && sg.wholeFreed !== whole) this.adoption.freed(this.stitcher.vStream[v]!)
    }
    grants.blks[slot] = null
    grants.drop(slot)
    if (v >= 0) this.stitcher.autoEvict()
    // Note [Cross-stream lending]: lent spans go back as soon as they may
    if (this.retSlot.length > 0) this.returnLent()
  }

  // --- lending (Note [Cross-stream lending]) ---------------------------------------------------

  /**
   * Frees grant `slot` of view `v`, which maps other streams' chunks: its spans in the freeing
   * stream's own segments go back now, the others once the stream's work up to this free is done.
   * Returns false, changing nothing, where the grant holds none of other streams' bytes.
   */
  private lendFree(slot: number, v: number, blks: Array<number>): boolean {
    const sg = this.segments
    const stream = this.stitcher.vStream[v]!
    let lent = false
    for (let i = 0; i < blks.length && !lent; i++) lent = sg.segStream[sg.bSeg[blks[i]!]!] !== stream
    if (!lent) return false
    this.nLentFrees++
    const own = this.ownBlks
    own.length = 0
    let k = 0
    for (let i = 0; i < blks.length; i++) {
      const b = blks[i]!
      if (sg.segStream[sg.bSeg[b]!] === stream) own.push(b)
      else blks[k++] = b
    }
    blks.length = k
    for (let i = 0; i < own.length; i++) sg.release(own[i]!)
    this.grants.state[slot] = G_RETURNING
    this.retSlot.push(slot)
    this.retStream.push(stream)
    this.retSeq.push(this.chunks.freeSeq)
    // an event on the freeing stream labelled with this free (or a later one, if its FIFO is full)
    this.adoption!.freed(stream)
    this.returnLent()
    return true
  }

  /**
   * Counts the chunks under spans `blks` that lie in segments of streams other than `stream` as
   * lent, `delta` each (`cLent`).
   */
  private markLent(blks: ReadonlyArray<number>, stream: number, delta: number): void {
    const sg = this.segments
    const cLent = this.chunks.cLent
    for (let i = 0; i < blks.length; i++) {
      const b = blks[i]!
      const seg = sg.bSeg[b]!
      if (sg.segStream[seg] === stream) continue
      const end = sg.bStart[b]! + sg.bSize[b]!
      for (let at = sg.bStart[b]!; at < end;) {
        const c = sg.chunkAt(seg, at)
        cLent[c] = cLent[c]! + delta
        at = this.chunks.end(c)
      }
    }
  }

  /**
   * Gives lent spans back to their streams where the borrowing stream's work up to their free has
   * run, and caches their views; returns whether any went back.
   */
  private returnLent(): boolean {
    const adoption = this.adoption!
    const slots = this.retSlot
    const streams = this.retStream
    const seqs = this.retSeq
    for (let i = 0; i < streams.length; i++) adoption.catchUp(streams[i]!)
    const grants = this.grants
    const sg = this.segments
    let k = 0
    let any = false
    for (let i = 0; i < slots.length; i++) {
      const slot = slots[i]!
      if (!adoption.passed(streams[i]!, seqs[i]!)) {
        slots[k] = slot
        streams[k] = streams[i]!
        seqs[k++] = seqs[i]!
        continue
      }
      any = true
      const blks = grants.blks[slot]!
      this.markLent(blks, streams[i]!, -1)
      this.chunks.freeSeq++
      for (let j = 0; j < blks.length; j++) {
        const whole = sg.wholeFreed
        const b = blks[j]!
        const owner = sg.segStream[sg.bSeg[b]!]!
        sg.release(b)
        // the owner's next use of them waits for nothing; another stream's, for this event
        if (sg.wholeFreed !== whole) adoption.freed(owner)
      }
      const v = grants.view[slot]!
      this.stitcher.cache(v)
      grants.blks[slot] = null
      grants.drop(slot)
    }
    slots.length = k
    streams.length = k
    seqs.length = k
    if (any) this.stitcher.autoEvict()
    return any
  }

  // --- malloc ------------------------------------------------------------------------------------

  /** Serves `rr` bytes from free block `x` (Note [Placement]). */
  private grantPrimary(pool: StreamPool, x: number, rr: number, size: number): BlockId {
    const sg = this.segments
    const a = sg.bStart[x]!
    let p = a
    if (this.placement && sg.bRun[x]! > 0 && sg.bSize[x]! > rr) {
      const seg = sg.bSeg[x]!
      if (!(sg.bNext[x]! < 0 && pool.segment === seg)) {
        const cStart = this.chunks.cStart
        const b = a + sg.bSize[x]!
        sg.runOfBlock(x)
        const rs = sg.rs
        const re = sg.re
        // whole-chunk bytes that the head [a, a + rr) or the tail [b - rr, b) would make busy
        let head = 0
        if (a + rr > rs) {
          const c = sg.chunkAt(seg, a + rr - 1)
          head = Math.min(re, cStart[c]! + this.chunks.cSize[c]!) - rs
        }
        let tail = 0
        if (b - rr < re) tail = re - Math.max(rs, cStart[sg.chunkAt(seg, b - rr)]!)
        if (tail < head) p = b - rr
      }
    }
    return this.grants.make(p, size, sg.carve(x, p - a, rr), null, -1)
  }

  private mallocSlow(pool: StreamPool, rr: number, size: number, stream: number): BlockId {
    if (this.adoption !== undefined && !this.adoption.multi) this.adoption.noteStreams()
    if (this.retSlot.length > 0 && this.returnLent()) {
      const x = pool.free.bestFit(rr)
      if (x >= 0) return this.grantPrimary(pool, x, rr, size)
    }
    // Note [Cross-stream lending]: other streams' safe numbers, for the views that borrow
    if (this.lending && this.adoption!.multi) this.adoption!.catchUpAll()
    const stitcher = this.stitcher
    if (pool.views.length > 0) {
      const v = stitcher.usableView(pool, rr)
      if (v >= 0) {
        const off = stitcher.hitOff
        const blks = stitcher.take(pool, v, rr)
        if (stitcher.vForeign[v] === 1) this.markLent(blks, stream, 1)
        const id = this.grants.make(stitcher.vBase[v]! + off, size, -1, blks, v)
        stitcher.vLive[v] = id
        return id
      }
    }
    let failure: DriverError
    try {
      return this.acquire(pool, rr, size, stream)
    } catch (e) {
      if (!(e instanceof DriverError)) throw e
      failure = e
    }
    // Note [Pressure]
    let relieved = stitcher.evictAll()
    const released = this.pressure.releaseFreeChunks()
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
    const pools = this.segments.pools
    for (let s = 0; s < pools.length; s++) free += pools[s]?.freeBytes ?? 0
    throw new OutOfMemoryError({
      requested: size,
      stream,
      reserved: this.chunks.reservedBytes,
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
   * the GPT-2 and BERT traces of the GMLake paper. Here two ways are weighed. Growing the
   * segment's free end (Note [Growth]) needs the request less the free block already at that end,
   * and serves it as one ordinary block, with no stitch. Allocate-and-stitch needs only the
   * shortfall: the request less everything a stitch could gather (whole free chunks and the two
   * partly free ends, `gather`), created at the growing end too and stitched with the rest. The
   * allocator grows when that takes no more memory than the shortfall (the view and its driver
   * calls are then for nothing), else creates the shortfall and stitches (unless the memory that
   * saves is too little for the chunks the view would map, Note [Stitch saving]). Either way the new
   * memory is rounded up to the granule only, and what the request leaves of the last granule
   * stays free for the next.
   *
   * Note [Stitch saving]
   * --------------------
   * A stitch for the shortfall saves `grow - shortfall` bytes of new memory and costs a map per
   * chunk it gathers (and a set access that costs per chunk on the GPU), every time the step
   * repeats it. With `minStitchSavingBytes` above 0 the allocator grows instead when the saving
   * is below that many bytes per chunk the view would map (the free chunks a stitch would take,
   * counted by a dry selection, plus one new chunk): memory for driver calls, chosen by the user.
   * Off by default: on the bundled traces no threshold keeps every trace at 0.98 utilization while
   * it cuts the bill where the bill is high (llama1b_ckpt_varlen, 8 MiB: 5,576 calls to 2,991, 119 to
   * 38 in the second half, 0.9830 to 0.9747 utilization;
   * `bench/results/2026-12-02-driver-bill-tradeoffs.md`). Over a grid of 60 settings of this and
   * the chunk-size keys, no setting keeps every bundled trace at 0.98 with the llama traces' calls
   * near expandable segments'. One setting on the other side, 8 MiB with 256 MiB chunks and no tail
   * chunk (fewer calls than expandable on every trace, higher utilization on four of the five),
   * replays every trace on an H200 in 0.55-1.08x expandable's wall time (`bench/results/2026-12-03-settings-frontier.md`,
   * `bench/results/2026-12-03-h200-frontier/`).
   */
  private acquire(pool: StreamPool, rr: number, size: number, stream: number, adopt = true): BlockId {
    const x = pool.free.bestFit(rr)
    if (x >= 0) return this.grantPrimary(pool, x, rr, size)
    const sg = this.segments
    // Note [Cross-stream lending]: where chunks may still move, moving comes before lending
    const moveFirst = adopt && this.moves > 0 && this.adoption!.multi
    const gathered = moveFirst ? this.selection.gather(pool) : this.gather(pool, stream, rr)
    if (gathered >= rr) return this.stitch(rr, size, stream)
    const g = sg.granule
    const seg = pool.segment
    let frontier = 0
    if (seg >= 0) {
      const last = sg.segLast[seg]!
      if (last >= 0 && sg.bState[last] === FREE) frontier = sg.bSize[last]!
    }
    let grow = Math.ceil((rr - frontier) / g) * g
    if (seg < 0 || sg.segEnd[seg]! + grow > sg.segBase[seg]! + sg.segVa[seg]!) {
      frontier = 0
      grow = Math.ceil(rr / g) * g
    }
    const shortfall = Math.ceil((rr - gathered) / g) * g
    let growing = !this.allocateAndStitch || grow <= shortfall
    // Note [Stitch saving]
    if (!growing && this.minSaving > 0 && grow - shortfall < this.minSaving * (this.selection.chunksOf(gathered) + 1)) {
      growing = true
    }
    // Note [Cross-stream adoption]: before creating memory, take what other streams are done with.
    if (adopt && this.moves !== 0 && this.adoption?.multi === true && this.adoption.adopt(pool, stream, growing ? grow : shortfall) > 0) {
      return this.acquire(pool, rr, size, stream, false)
    }
    // nothing moved: what other streams can lend, then growth
    if (moveFirst) return this.acquire(pool, rr, size, stream, false)
    if (growing) {
      // Note [Growth]: the free block at the growing end and the new chunks make one block.
      sg.grow(this.port, this.shape, pool, stream, grow, rr - frontier)
      return this.grantPrimary(pool, sg.segLast[pool.segment]!, rr, size)
    }
    // Note [Shortfall]
    sg.grow(this.port, this.shape, pool, stream, shortfall, rr - gathered)
    const y = pool.free.bestFit(rr)
    if (y >= 0) return this.grantPrimary(pool, y, rr, size)
    this.gather(pool, stream, rr)
    return this.stitch(rr, size, stream)
  }

  /**
   * What a stitch of `rr` bytes for `stream` could gather: its own free chunks, and where they
   * fall short and it lends, other streams' (Note [Cross-stream lending]).
   */
  private gather(pool: StreamPool, stream: number, rr: number): number {
    const own = this.selection.gather(pool)
    // requests under a granule never borrow: a whole chunk lent for each small tensor
    if (own >= rr || !this.lending || !this.adoption!.multi || rr < this.segments.granule) return own
    return own + this.selection.gatherForeign(stream, this.adoption!.lendable)
  }

  /** Stitches a new view for `rr` bytes (after `gather`) and claims its block. */
  private stitch(rr: number, size: number, stream: number): BlockId {
    const list: Array<number> = []
    const off = this.selection.select(rr, list)
    const v = this.stitcher.map(list, off, stream, rr)
    const spans = this.selection.spans
    const blks: Array<number> = []
    let need = rr
    for (let i = 0; i < spans.length && need > 0; i += 3) {
      const p = spans[i + 1]!
      const take = Math.min(spans[i + 2]! - p, need)
      const x = spans[i]!
      blks.push(this.segments.carve(x, p - this.segments.bStart[x]!, take))
      need -= take
    }
    if (this.stitcher.vForeign[v] === 1) this.markLent(blks, stream, 1)
    const id = this.grants.make(this.stitcher.vBase[v]! + off, size, -1, blks, v)
    this.stitcher.vLive[v] = id
    return id
  }
}
