/**
 * Which free chunks a new stitched view maps: `gather` measures what a stitch could collect,
 * `select` chooses the pieces.
 *
 * Note [Stitch selection]
 * -----------------------
 * Over the stream's free blocks, `gather` collects those with whole chunks (`runIds`, largest
 * first) and two partly free chunks: the block whose first chunk is partly used by a block before
 * it but free from the block's start to the chunk's end (the most such bytes: `pBlk`, `pExtra`),
 * and the block whose last chunk is free from its start to the block's end (`qBlk`, `qExtra`).
 * A view may begin with the first (the stitched block starts inside it, past the used part) and
 * end with the second (the block ends before the used part), so the fragments next to live
 * tensors, which whole-chunk stitching never reaches, serve large requests too. With 2 MiB chunks
 * this takes 2 to 9 times more chunk maps than whole-chunk stitching; with larger chunks it is
 * what keeps their stranded bytes usable (0.5 points of mean utilization on the four bundled
 * traces), for one extra map at each end, and only fragments of at least `minPartialBytes` are
 * used.
 *
 * `select` then takes the partly free ends, and whole chunks between them: while no run covers
 * what is left, the densest run (the most bytes per chunk, so the fewest maps for its bytes; the
 * largest on a tie), and the smallest run that covers what is left last, only as many of its
 * chunks as needed: few maps, and no whole chunk taken that is not needed (GMLake takes the
 * largest free blocks first). Taking the largest runs first instead cost llama1b_ckpt_varlen 73
 * more driver calls (35 in the second half) and 0.12 points of utilization; the other traces
 * were the same either way. A run of `pBlk` extends its piece (the chunks after its partial
 * one), a run of `qBlk` extends its piece backwards. The cost is a pass over the stream's free
 * blocks, tens to a few hundred, on the slow path only.
 *
 * @since 0.1.0
 */
import type { ChunkPool } from "./Pool.ts"
import type { Segments, StreamPool } from "./Segments.ts"

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

/**
 * Stitch selection, with its scratch arrays (reused: no allocation per stitch but the result).
 * @category models
 */
export class Selection {
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
  private readonly scratch: Array<number> = []
  /** (block, from, to) triples to claim, in range order; filled by `select`. */
  readonly spans: Array<number> = []
  /**
   * Other streams' free blocks among `runIds` (Note [Cross-stream lending]), with the stretch of
   * each that may be lent (start, end): only part of a block's run may be.
   */
  private readonly foreign = new Map<number, number>()
  private readonly foreignEnd = new Map<number, number>()
  /** `gatherForeign`'s scratch: (block, from, to) triples. */
  private readonly found: Array<number> = []
  /** The span `run` found. */
  private rs = 0
  private re = 0

  private readonly segments: Segments
  private readonly cStart: Array<number>
  private readonly cSize: Array<number>
  private readonly cLent: Array<number>
  private readonly minPartial: number

  constructor(chunks: ChunkPool, segments: Segments, minPartial: number) {
    this.segments = segments
    this.cStart = chunks.cStart
    this.cSize = chunks.cSize
    this.cLent = chunks.cLent
    this.minPartial = minPartial
  }

  /** Returns the bytes a stitch could gather from `pool` (Note [Stitch selection]). */
  gather(pool: StreamPool): number {
    const sg = this.segments
    const min = this.minPartial
    const heads = this.heads
    const tails = this.tails
    heads.length = 0
    tails.length = 0
    const runIds = this.runIds
    runIds.length = 0
    this.foreign.clear()
    this.foreignEnd.clear()
    const free = pool.free
    for (let i = free.length - 1; i >= 0; i--) {
      const x = free.idAt(i)
      if (sg.bRun[x]! > 0) runIds.push(x)
      if (free.sizeAt(i) < min) continue
      const seg = sg.bSeg[x]!
      const a = sg.bStart[x]!
      const b = a + sg.bSize[x]!
      const ci = sg.chunkAt(seg, a)
      const ce = this.cStart[ci]! + this.cSize[ci]!
      // Note [Cross-stream lending]: a chunk partly lent to another stream is mapped into no view
      if (this.cStart[ci]! < a && ce <= b && ce - a >= min && this.cLent[ci] === 0) top3(heads, x, ce - a)
      const cj = sg.chunkAt(seg, b - 1)
      const js = this.cStart[cj]!
      if (js + this.cSize[cj]! > b && js >= a && b - js >= min && this.cLent[cj] === 0) top3(tails, x, b - js)
    }
    if (runIds.length > 1) {
      const bRun = sg.bRun
      const bStart = sg.bStart
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
    const sg = this.segments
    const ps = sg.bSeg[p]!
    return ps === sg.bSeg[q] && sg.chunkAt(ps, sg.bStart[p]!) === sg.chunkAt(ps, sg.bStart[q]! + sg.bSize[q]! - 1)
  }

  /**
   * Chooses a view for `rr` bytes from what `gather` found (Note [Stitch selection]): fills
   * `list` with its chunks in range order and `spans` with (block, from, to) triples to claim in
   * that order; returns the stitched block's offset in the view.
   */
  select(rr: number, list: Array<number>): number {
    const sg = this.segments
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
    let i = 0
    while (need > 0 && i < runIds.length) {
      // the smallest untaken run that covers the rest, else the densest untaken one
      let j = runIds.length - 1
      while (j >= i && this.runBytes(runIds[j]!) < need) j--
      const last = j >= i
      if (!last) {
        j = this.densest(i)
        // moved to `i`, the others keeping their order (largest first, for the search above)
        const t = runIds[j]!
        for (let k = j; k > i; k--) runIds[k] = runIds[k - 1]!
        runIds[i] = t
        j = i
      } else if (j !== i) {
        const t = runIds[j]!
        runIds[j] = runIds[i]!
        runIds[i] = t
        j = i
      }
      i++
      const blk = runIds[j]!
      const seg = sg.bSeg[blk]!
      this.run(blk)
      const rs = this.rs
      const re = this.re
      if (blk === Q && useQ) {
        // chunks before Q's partial one, taken backwards
        let s = re
        while (s > rs && (!last || re - s < need)) s = this.cStart[sg.chunkAt(seg, s - 1)]!
        need -= re - s
        qStart = s
      } else {
        let e = rs
        while (e < re && (!last || e - rs < need)) e += this.cSize[sg.chunkAt(seg, e)]!
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
      const seg = sg.bSeg[P]!
      const a = sg.bStart[P]!
      const c = sg.chunkAt(seg, a)
      off = a - this.cStart[c]!
      const end = pEnd >= 0 ? pEnd : this.cStart[c]! + this.cSize[c]!
      this.pushChunks(list, seg, this.cStart[c]!, end)
      spans.push(P, a, end)
    }
    for (let m = 0; m < middle.length; m += 3) {
      const blk = middle[m]!
      this.pushChunks(list, sg.bSeg[blk]!, middle[m + 1]!, middle[m + 2]!)
      spans.push(blk, middle[m + 1]!, middle[m + 2]!)
    }
    if (useQ) {
      const seg = sg.bSeg[Q]!
      const b = sg.bStart[Q]! + sg.bSize[Q]!
      const c = sg.chunkAt(seg, b - 1)
      const start = qStart >= 0 ? qStart : this.cStart[c]!
      this.pushChunks(list, seg, start, this.cStart[c]! + this.cSize[c]!)
      spans.push(Q, start, b)
    }
    return off
  }

  /**
   * The untaken run (`runIds` from `from` on) with the most bytes per chunk, the largest on a tie
   * (Note [Stitch selection]: the fewest maps for the bytes it brings).
   */
  private densest(from: number): number {
    const sg = this.segments
    const runIds = this.runIds
    let best = from
    let bestDensity = 0
    for (let k = from; k < runIds.length; k++) {
      const x = runIds[k]!
      const seg = sg.bSeg[x]!
      const bytes = this.run(x)
      let n = 0
      for (let at = this.rs; at < this.re; at += this.cSize[sg.chunkAt(seg, at)]!) n++
      if (bytes / n > bestDensity) {
        bestDensity = bytes / n
        best = k
      }
    }
    return best
  }

  /** The bytes of free block `x`'s run that a stitch may take (its own stream's: all of it). */
  private runBytes(x: number): number {
    const from = this.foreign.get(x)
    return from === undefined ? this.segments.bRun[x]! : this.foreignEnd.get(x)! - from
  }

  /** Sets `rs`, `re` to the stretch of free block `x`'s run a stitch may take; returns its bytes. */
  private run(x: number): number {
    const from = this.foreign.get(x)
    if (from !== undefined) {
      this.rs = from
      this.re = this.foreignEnd.get(x)!
      return this.re - from
    }
    const sg = this.segments
    const a = sg.bStart[x]!
    const bytes = sg.runOf(sg.bSeg[x]!, a, a + sg.bSize[x]!)
    this.rs = sg.rs
    this.re = sg.re
    return bytes
  }

  /**
   * Adds to what `gather` found the chunks of other streams' segments that `lendable` says may be
   * lent to `stream` (Note [Cross-stream lending]): of each free block, the longest stretch of its
   * run whose chunks all may. Returns the bytes added.
   */
  gatherForeign(stream: number, lendable: (c: number) => boolean): number {
    const sg = this.segments
    const runIds = this.runIds
    const found = this.found
    found.length = 0
    sg.foreignStretches(stream, lendable, found)
    let added = 0
    // a block's stretches come together, in address order: keep its first longest
    for (let i = 0; i < found.length; i += 3) {
      const x = found[i]!
      const bytes = found[i + 2]! - found[i + 1]!
      const from = this.foreign.get(x)
      if (from === undefined) {
        runIds.push(x)
        added += bytes
      } else {
        const kept = this.foreignEnd.get(x)! - from
        if (bytes <= kept) continue
        added += bytes - kept
      }
      this.foreign.set(x, found[i + 1]!)
      this.foreignEnd.set(x, found[i + 2]!)
    }
    if (added > 0) {
      // largest first, as `gather` sorts them (the search in `select` relies on it)
      const bStart = sg.bStart
      runIds.sort((x, y) => this.runBytes(y) - this.runBytes(x) || bStart[x]! - bStart[y]!)
    }
    return added
  }

  /**
   * How many chunks a view of `bytes` would map, from what `gather` found (Note [Stitch saving]).
   * A dry `select`: it reorders the runs, so `gather` must run again before a real one.
   */
  chunksOf(bytes: number): number {
    const list = this.scratch
    list.length = 0
    this.select(bytes, list)
    return list.length
  }

  /** Appends the chunks of segment `seg` from address `from` (a chunk start) to `to` to `list`. */
  private pushChunks(list: Array<number>, seg: number, from: number, to: number): void {
    while (from < to) {
      const c = this.segments.chunkAt(seg, from)
      list.push(c)
      from += this.cSize[c]!
    }
  }
}
