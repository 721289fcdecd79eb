/**
 * Cross-stream adoption: a stream about to grow takes chunks that lie wholly free in another
 * stream's segments, once the device has finished the work that last used them.
 *
 * Note [Cross-stream adoption]
 * ----------------------------
 * The allocator keeps a pool per stream (as GMLake and PyTorch do): a block freed on a stream is
 * reused by that stream at once, which its own order makes safe. On multi-stream work (prefetch
 * on a load stream, gradient buckets on a communication stream) that strands memory: while the
 * compute stream peaks, the buckets' chunks sit wholly free in the communication stream's
 * segment, their last use long finished, and per-stream pools cannot touch them. So, before a
 * stream grows (creates chunks, Note [Growth]), it *adopts* such chunks first:
 *
 * - **Detach**: the chunks are unmapped from the owner's segment (one unmap per run of adjacent
 *   chunks), leaving a hole there (Note [Chunk map]); cached views of the owner that map them are
 *   evicted first. Their handles stay alive: nothing is released or created.
 * - **Attach**: they are mapped at the requester's growing end, side by side, with one
 *   set-access over the new extent (one map plan, Note [Map plans]), and join the free block
 *   there, exactly as new chunks would. The request then proceeds as if it had grown.
 *
 * Safety. A chunk may change streams only once no work queued on the owner stream can still
 * touch it. Each free bumps a sequence number (`ChunkPool.freeSeq`), and every chunk a free makes
 * wholly free remembers it (`cFreedAt`). While more than one stream is in use, each free records
 * an event on the freeing stream right after it (`cuEventRecord`; a FIFO of at most `FIFO` per
 * stream, polled with `cuEventQuery` from its oldest, never waited for), labelled with that
 * sequence number. A stream's `safe` number is the label of its newest completed event: all the
 * work it queued before the frees up to that number has run. A chunk is adoptable when it is
 * wholly free, no view in use maps it, and its `cFreedAt` is at most its stream's `safe` number.
 * A `record_stream`-style deferred free is no different: its chunks become free only at
 * `complete` (the framework's word that the other streams' events have completed), which is a
 * free like any other, with its own event on the owner stream. So memory moves between streams
 * only through a completed event, and a chunk whose event has not completed is never mapped into
 * another stream's range (the property test `crossStreamSafety.test.ts` checks this against
 * witness events of its own). When the FIFO is full, a free records nothing; the next free or
 * adoption attempt after the oldest event completes records one, labelled with the latest
 * sequence number, which covers every free before it.
 *
 * Note [Fewer events]
 * -------------------
 * Only chunks wholly free can move, so only a free that makes a chunk wholly free needs an event
 * (`Segments.wholeFreed` counts them): a free inside a chunk still partly used records nothing and
 * polls nothing. The labels stay what they were (an event covers every free before it), so safety
 * is unchanged. On a device that keeps up with the allocator every event has completed by the next
 * free, so a guarded free would cost a query, a destroy, a create and a record. A completed event is
 * therefore kept (a few at most) and recorded again (`cuEventRecord` on an existing event) where the
 * port can: a guarded free costs a query and a record. On gpt2_streams the event calls of a replay
 * went from 70,719 to 12,178 (each through koffi on the GPU, about a microsecond), with the same peak
 * at every event latency and, on the synthetic traces, no cell worse and one better
 * (`bench/cross-stream-latency.ts`). Coarser pacing (one event per 4 or 64 guarded frees) cost up to
 * 5 points of utilization on the synthetic traces, so every such free keeps its event. And when an
 * adoption finds frees not yet covered, the event it records is queried at once: a device that
 * keeps up has passed it already, and its chunks can move in this very adoption.
 *
 * Note [Cross-stream lending]
 * ---------------------------
 * Adoption moves chunks, and where two streams peak in turn it moves the same chunks back and
 * forth every step, for ever: on the synthetic multi-stream traces up to 748 driver calls in the
 * second half, each move an unmap that synchronizes a GPU. With `crossStreamLending` a stream
 * short of memory *borrows* instead: when its own free chunks cannot serve a request of a granule
 * or more, the stitch selection (Note [Stitch selection]) also takes runs of other streams' chunks
 * that are wholly free and whose last free there an event shows complete (`lendable`, the same
 * test as adoption's). The view belongs to the borrowing stream; its spans in the owner's segment
 * are marked used as any stitch's are, so the owner cannot hand them out; no chunk is unmapped or
 * changes home. When the block is freed, the spans in the borrower's own segments go back at once;
 * the lent spans stay used (the grant `G_RETURNING`, its view in use) until an event recorded on
 * the borrowing stream after the free has completed, the deferred free of Note [Deferred frees]
 * completed by the allocator (`returnLent`, polled at frees and on the slow path; `emptyCache`
 * waits for those events, as PyTorch's waits for its outstanding ones). Then the view is cached,
 * and the next step's request finds it there with no driver call if the owner has the chunks free
 * and done with again (`Stitcher.lendable`). A chunk partly lent (`cLent`) is never mapped whole
 * into a new view of its owner: its lent part may still be touched by the borrower.
 *
 * Measured (bench/results/2026-12-03-cross-stream-lending.md): on random repeated three-stream
 * steps at event latency 0, none of 27,000 fails to settle (adoption: 146 of 2,000), and at 1-2
 * at most 4 in 5,000 (adoption: 71-124 of 2,000), with a 7-10% lower peak; at latency 4 and 8
 * both leave a few in 2,000 (lending 5 and 1, adoption 15 and 2). On the synthetic traces the driver calls fall by 12-73% and the second-half calls in 15
 * of 20 cells (748 to 32 on one), but utilization is lower in 8 of them (by up to 4.8 points, at
 * latency 0), and on gpt2_streams, the bundled multi-stream trace, lending makes 6 and 18
 * second-half calls (latency 8, 0) where adoption makes none: the compute stream keeps reusing
 * the chunks the others borrowed, so their views break and are stitched anew.
 *
 * `crossStreamMoves` lets a chunk move (adoption) that many times before it is only lent, and
 * moving is then tried before lending (`cMoves` counts). With 1, gpt2_streams keeps no second-half
 * call at 0.9955 utilization, and the synthetic traces average 0.9483 utilization (adoption 0.9456,
 * lending 0.9467) with 65 second-half calls (170, 52); random steps settle less often than with
 * lending (5-9 in 5,000 unsettled at latency 0).
 *
 * Why not the default: a lent span goes back only once the borrower's event has completed, so while
 * the device runs behind, memory in transit is held by neither stream. Adoption was measured never
 * to hold more than per-stream pools at any latency (`bench/cross-stream-latency.ts`); lending
 * holds up to 0.8% more in one cell of it, one move then lending up to 2.5% in two. Lending is for
 * jobs whose steps do not settle with adoption; on an H200 such traces replayed 1.4-3.1x faster
 * with it, and the cross-stream byte check passed (`bench/results/2026-12-03-h200-rounds/`).
 *
 * Chunks never used (fresh growth) carry the sequence number of the growth, so they too wait for
 * an event of their stream; that costs nothing but a little delay. On a single stream nothing of
 * this runs: no event is recorded, no free pays for it. The first time a second stream shows up,
 * one event is recorded on each stream in use, covering everything freed before.
 *
 * Cost. An adoption is one unmap per run detached and one map per chunk plus one set-access,
 * against one create and one map per chunk for growth; on the GPU an unmap synchronizes the
 * device first (Note [Handle ownership]), so adoption is tried only where the stream would
 * otherwise create memory. Measured on the simulator across event latencies, it is never worse
 * than per-stream pools (bench/cross-stream-latency.ts). `crossStream: false` turns it off.
 *
 * @since 0.1.0
 */
import type { DriverPort } from "../../DriverPort.ts"
import { DriverError } from "../../Errors.ts"
import type { StreamPort } from "../../StreamPort.ts"
import type { ChunkHandle } from "../../Units.ts"
import { executeMap } from "../../vmm/Plan.ts"
import type { ChunkPool } from "./Pool.ts"
import { type GrowthShape, type Segments, type StreamPool, USED } from "./Segments.ts"
import { V_CLAIMING, type Stitcher } from "./Stitcher.ts"

/** Events per stream in flight at most (Note [Cross-stream adoption]). */
const FIFO = 4
/** Completed events kept for reuse at most (Note [Fewer events]). */
const SPARE = 8

/**
 * The adoption of free chunks across streams (Note [Cross-stream adoption]).
 * @category models
 */
export class Adoption {
  /** Whether more than one stream has been used; until then nothing is recorded. */
  multi = false
  /** Chunks adopted, and the adoptions that moved them. */
  nChunks = 0
  nAdoptions = 0

  private readonly port: DriverPort
  private readonly events: StreamPort
  private readonly chunks: ChunkPool
  private readonly segments: Segments
  private readonly stitcher: Stitcher
  /** Evicts a view that maps a chunk being taken out (one closure per allocator, not per call). */
  private readonly evict = (view: number): void => this.stitcher.evict(view)
  private readonly shape: GrowthShape
  /** Moves per chunk at most, or -1 for no limit (Note [Cross-stream lending]). */
  private readonly moveLimit: number
  /** Per stream: its events in flight, oldest first, and their labels. */
  private readonly fifo: Array<Array<number> | undefined> = []
  private readonly labels: Array<Array<number> | undefined> = []
  /** Per stream: the label of its newest completed event. */
  private readonly safe: Array<number> = []
  /** Per stream: the sequence number of its latest free. */
  private readonly lastFree: Array<number> = []
  /** Completed events kept to be recorded again (Note [Fewer events]). */
  private readonly spare: Array<number> = []
  // scratch: candidate stretches as `foreignStretches` finds them and as (from-chunk, bytes), and
  // the chunks being moved
  private readonly found: Array<number> = []
  private readonly stretches: Array<number> = []
  /** `adoptable` of a chunk in its own stream's segment (one closure per allocator). */
  private readonly movable = (c: number): boolean =>
    this.adoptable(c, this.segments.segStream[this.chunks.cSeg[c]!]!)
  private readonly moved: Array<number> = []

  constructor(
    port: DriverPort,
    events: StreamPort,
    chunks: ChunkPool,
    segments: Segments,
    stitcher: Stitcher,
    shape: GrowthShape,
    moveLimit = -1
  ) {
    this.moveLimit = moveLimit
    this.port = port
    this.events = events
    this.chunks = chunks
    this.segments = segments
    this.stitcher = stitcher
    this.shape = shape
  }

  /** Called when a stream's pool is new: from the second stream on, frees are guarded. */
  noteStreams(): void {
    const pools = this.segments.pools
    let n = 0
    for (let s = 0; s < pools.length; s++) if (pools[s] !== undefined) n++
    if (n < 2) return
    this.multi = true
    // Everything freed so far was freed with no event: one event per stream covers it.
    for (let s = 0; s < pools.length; s++) {
      if (pools[s] !== undefined) {
        this.lastFree[s] = this.chunks.freeSeq
        this.record(s)
      }
    }
  }

  /**
   * A free on `stream` that made a chunk wholly free just happened (after `freeSeq` was bumped):
   * guard it with an event (Note [Fewer events]).
   */
  freed(stream: number): void {
    this.lastFree[stream] = this.chunks.freeSeq
    this.poll(stream)
    const q = this.fifo[stream]
    if (q === undefined || q.length < FIFO) this.record(stream)
  }

  /** Records an event on `stream`, labelled with the latest sequence number. */
  private record(stream: number): void {
    let e: number
    const spare = this.spare
    try {
      // Note [Fewer events]: a retired event is recorded again rather than a new one made
      const rerecord = this.events.eventRerecord
      if (spare.length > 0 && rerecord !== undefined) {
        e = spare.pop()!
        try {
          rerecord.call(this.events, e, stream)
        } catch (err) {
          this.destroy(e)
          throw err
        }
      } else {
        e = this.events.eventRecord(stream)
      }
    } catch (err) {
      // No event, no adoption of this stream's chunks until a later one: safe, and a free
      // must not fail for it (a stream the caller destroyed, a driver fault).
      if (err instanceof DriverError) return
      throw err
    }
    ;(this.fifo[stream] ??= []).push(e)
    ;(this.labels[stream] ??= []).push(this.chunks.freeSeq)
  }

  /** Retires the completed events of `stream`, oldest first, advancing its `safe` number. */
  private poll(stream: number): void {
    const q = this.fifo[stream]
    if (q === undefined) return
    const labels = this.labels[stream]!
    while (q.length > 0) {
      let done: boolean
      try {
        done = this.events.eventQuery(q[0]!)
      } catch (err) {
        if (err instanceof DriverError) return
        throw err
      }
      if (!done) return
      this.safe[stream] = labels[0]!
      this.retire(q.shift()!)
      labels.shift()
    }
  }

  /** Keeps a completed event for a later record where the port can re-record, else destroys it. */
  private retire(event: number): void {
    if (this.events.eventRerecord !== undefined && this.spare.length < SPARE) this.spare.push(event)
    else this.destroy(event)
  }

  private destroy(event: number): void {
    try {
      this.events.eventDestroy(event)
    } catch (err) {
      // left to the session's registry, which destroys it at close
      if (!(err instanceof DriverError)) throw err
    }
  }

  /** Destroys every event in flight (`emptyCache`): the session keeps none it does not need. */
  dropEvents(): void {
    for (let s = 0; s < this.fifo.length; s++) {
      const q = this.fifo[s]
      if (q === undefined) continue
      for (const e of q) this.destroy(e)
      q.length = 0
      this.labels[s]!.length = 0
    }
    for (const e of this.spare) this.destroy(e)
    this.spare.length = 0
  }

  /**
   * Polls `stream`'s events; frees not yet covered by an event in flight are covered now, and the
   * new event is asked at once (Note [Fewer events]: a device that keeps up has already passed it).
   */
  catchUp(stream: number): void {
    this.poll(stream)
    const q = this.fifo[stream]
    const covered = q !== undefined && q.length > 0 ? this.labels[stream]![q.length - 1]! : (this.safe[stream] ?? -1)
    if ((this.lastFree[stream] ?? 0) > covered && (q === undefined || q.length < FIFO)) {
      this.record(stream)
      this.poll(stream)
    }
  }

  /** `catchUp` on every stream in use. */
  catchUpAll(): void {
    const pools = this.segments.pools
    for (let s = 0; s < pools.length; s++) if (pools[s] !== undefined) this.catchUp(s)
  }

  /**
   * Waits until the work `stream` queued before its free numbered `seq` has run (`emptyCache`, as
   * PyTorch's synchronizes its outstanding events); returns whether it has (false: the driver
   * refused, or no event could be recorded on the stream).
   */
  drain(stream: number, seq: number): boolean {
    for (let tries = 0; tries <= FIFO + 1 && !this.passed(stream, seq); tries++) {
      this.catchUp(stream)
      const q = this.fifo[stream]
      if (q === undefined || q.length === 0) return this.passed(stream, seq)
      try {
        this.events.eventSynchronize(q[q.length - 1]!)
      } catch (err) {
        if (err instanceof DriverError) return false
        throw err
      }
      this.poll(stream)
    }
    return this.passed(stream, seq)
  }

  /** Whether the work `stream` queued before its free numbered `seq` has run (as last polled). */
  passed(stream: number, seq: number): boolean {
    return seq <= (this.safe[stream] ?? -1)
  }

  /**
   * Whether chunk `c` may be lent to a stream other than its segment's now (Note [Cross-stream
   * lending]): wholly free, and its last use done. Mapped by other views or not, it is not moved.
   */
  readonly lendable = (c: number): boolean => {
    const chunks = this.chunks
    if (chunks.cFree[c] !== 1) return false
    return (chunks.cFreedAt[c] ?? 0) <= (this.safe[this.segments.segStream[chunks.cSeg[c]!]!] ?? -1)
  }

  /** Whether chunk `c`, wholly free in a segment of `stream`, may move to another stream now. */
  private adoptable(c: number, stream: number): boolean {
    if ((this.chunks.cFreedAt[c] ?? 0) > (this.safe[stream] ?? -1)) return false
    // Note [Cross-stream lending]: past its moves a chunk is only lent
    if (this.moveLimit >= 0 && this.chunks.cMoves[c]! >= this.moveLimit) return false
    const vs = this.chunks.cViews[c]
    if (vs !== null && vs !== undefined) {
      const vLive = this.stitcher.vLive
      for (let i = 0; i < vs.length; i++) if (vLive[vs[i]!]! >= 0 || vLive[vs[i]!] === V_CLAIMING) return false
    }
    return true
  }

  /**
   * Moves chunks wholly free in other streams' segments, and safe to move, to the growing end of
   * `pool` (stream `stream`): as many as cover `target` bytes if there are, else all there are. Returns the bytes attached (0: nothing moved, nothing changed).
   * Throws `DriverError` if the driver refused a step; chunks detached and not attached are
   * then given back to the driver.
   */
  adopt(pool: StreamPool, stream: number, target: number): number {
    const sg = this.segments
    const chunks = this.chunks
    for (let s = 0; s < sg.pools.length; s++) {
      const other = sg.pools[s]
      if (s !== stream && other !== undefined && other.runBytes > 0) this.catchUp(s)
    }
    const found = this.found
    found.length = 0
    sg.foreignStretches(stream, this.movable, found)
    // as (first chunk, bytes) pairs, which the choice below zeroes as it takes them
    const stretches = this.stretches
    stretches.length = 0
    for (let i = 0; i < found.length; i += 3) {
      stretches.push(sg.chunkAt(sg.bSeg[found[i]!]!, found[i + 1]!), found[i + 2]! - found[i + 1]!)
    }
    if (stretches.length === 0) return 0
    // Note [Cross-stream adoption]: like a stitch (Note [Stitch selection]), the smallest stretch
    // that covers what is still needed, else the largest there is, and of the last one only the
    // chunks needed: few unmaps, and nothing taken from the other streams that is not needed.
    const moved = this.moved
    moved.length = 0
    let got = 0
    try {
      while (got < target) {
        let best = -1
        let largest = -1
        for (let i = 0; i < stretches.length; i += 2) {
          const bytes = stretches[i + 1]!
          if (bytes === 0) continue
          if (bytes >= target - got && (best < 0 || bytes < stretches[best + 1]!)) best = i
          if (largest < 0 || bytes > stretches[largest + 1]!) largest = i
        }
        const k = best >= 0 ? best : largest
        if (k < 0) break
        const first = stretches[k]!
        const seg = chunks.cSeg[first]!
        const from = chunks.cStart[first]!
        const end = from + stretches[k + 1]!
        stretches[k + 1] = 0
        let to = from
        while (to < end) {
          const c = sg.chunkAt(seg, to)
          if (got + chunks.cSize[c]! > target) break
          got += chunks.cSize[c]!
          to = chunks.end(c)
        }
        if (to > from) this.detach(seg, from, to, moved)
      }
    } catch (e) {
      this.giveBack(moved)
      throw e
    }
    // Every stretch may begin with a chunk larger than what is still needed, so that nothing is
    // taken: then nothing is attached either. Attaching nothing would still reserve a fresh range
    // for a stream without room (a segment of no chunks, which nothing ever frees: pressure and
    // `emptyCache` free a range only when they take out its last chunk).
    if (moved.length === 0) return 0
    this.attach(pool, stream, moved)
    this.nChunks += moved.length
    this.nAdoptions++
    return got
  }

  /** Unmaps the wholly free chunks [from, to) of segment `seg` and takes them out of it. */
  private detach(seg: number, from: number, to: number, out: Array<number>): void {
    const sg = this.segments
    const x = sg.freeBlockOver(sg.chunkAt(seg, from), seg, from, to)
    if (x < 0) throw new Error(`Adoption: [0x${from.toString(16)}, 0x${to.toString(16)}) is in no free block`)
    sg.cutChunks(this.port, this.evict, x, from, to, out)
  }

  /**
   * Maps detached chunks (at least one) at the growing end of `pool`'s segment, as growth would
   * (Note [Growth]).
   */
  private attach(pool: StreamPool, stream: number, ids: ReadonlyArray<number>): void {
    const sg = this.segments
    const chunks = this.chunks
    const g = sg.granule
    const sizes: Array<number> = []
    const handles: Array<number> = []
    let bytes = 0
    for (const c of ids) {
      sizes.push(chunks.cSize[c]!)
      handles.push(chunks.cHandle[c]!)
      bytes += chunks.cSize[c]!
    }
    let seg = pool.segment
    const fresh = seg < 0 || sg.segEnd[seg]! + bytes > sg.segBase[seg]! + sg.segVa[seg]!
    const va = fresh ? Math.max(this.shape.segmentVa, bytes) : 0
    let at: number
    try {
      at = executeMap(this.port, { reserve: va, at: fresh ? 0 : sg.segEnd[seg]!, sizes, handles, create: false })
    } catch (e) {
      this.giveBack(ids)
      throw e
    }
    if (fresh) seg = sg.newSegment(at, va, stream)
    pool.segment = seg
    const base = sg.segBase[seg]!
    const map = sg.mapFor(seg, (at + bytes - base) / g)
    let off = at
    let prev = at > base ? map[(at - base) / g - 1]! : -1
    for (const c of ids) {
      chunks.cSeg[c] = seg
      chunks.cMoves[c] = chunks.cMoves[c]! + 1
      chunks.cStart[c] = off
      map.fill(c, (off - base) / g, (off + chunks.cSize[c]! - base) / g)
      if (prev >= 0) chunks.cNext[prev] = c
      prev = c
      off += chunks.cSize[c]!
    }
    sg.segChunks[seg] = sg.segChunks[seg]! + ids.length
    sg.segEnd[seg] = at + bytes
    sg.release(sg.newBlock(seg, at, bytes, USED, sg.segLast[seg]!))
  }

  /** Releases detached chunks to the driver (a step of the adoption failed). */
  private giveBack(ids: ReadonlyArray<number>): void {
    for (const c of ids) {
      try {
        this.port.memRelease(this.chunks.cHandle[c]! as ChunkHandle)
      } catch {
        // the session's registry releases it at close
      }
      this.chunks.remove(c)
    }
  }
}
