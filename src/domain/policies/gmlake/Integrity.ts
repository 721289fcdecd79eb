/**
 * The stitching allocator's invariants, checked over its whole state: for tests, never on the hot
 * path.
 *
 * @since 0.1.0
 */
import type { ChunkPool } from "./Pool.ts"
import { DEAD, FREE, type Segments } from "./Segments.ts"
import { V_CACHED, V_DEAD, type Stitcher } from "./Stitcher.ts"
import { G_DEAD, type GrantTable } from "./Grants.ts"

/**
 * What the check reads: the allocator's parts.
 * @category models
 */
export interface StitchingParts {
  readonly chunks: ChunkPool
  readonly segments: Segments
  readonly stitcher: Stitcher
  readonly grants: GrantTable
}

/**
 * Throws an `Error` naming the first invariant broken: every live segment holds a chunk; non-empty
 * blocks tile each segment's mapped chunks in address order with no two free neighbours; the chunk
 * map, chunk states, whole-chunk runs, free indexes and byte counts agree with the blocks; every
 * grant's spans are used blocks; views and chunks list each other. Linear in the size of the state.
 * @category testing
 */
export const checkIntegrity = ({ chunks, grants, segments: sg, stitcher: st }: StitchingParts): void => {
  const fail = (what: string): never => {
    throw new Error(`StitchingAllocator integrity: ${what}`)
  }
  const { cFree, cNext, cSeg, cSize, cStart, cViews } = chunks
  const end_ = (c: number) => chunks.end(c)
  const g = sg.granule
  const deadSegs = new Set(sg.segFreeIds)
  const usedBy = new Map<number, number>()
  let reserved = 0
  for (let seg = 0; seg < sg.segBase.length; seg++) {
    if (deadSegs.has(seg)) continue
    const base = sg.segBase[seg]!
    const end = sg.segEnd[seg]!
    const map = sg.segMap[seg]!
    let count = 0
    let prev = -1
    let chunkBytes = 0
    for (let i = 0; i < map.length; i++) {
      const c = map[i]!
      if (c < 0 || c === prev) continue
      prev = c
      count++
      if (cSeg[c] !== seg || cStart[c] !== base + i * g) fail(`chunk ${c} is not where the map says`)
      if (end_(c) > end) fail(`chunk ${c} lies past its segment's end`)
      for (let k = i; k < i + cSize[c]! / g; k++) if (map[k] !== c) fail(`chunk ${c} is not mapped whole`)
      const after = i + cSize[c]! / g < map.length ? map[i + cSize[c]! / g]! : -1
      if (cNext[c] !== (end_(c) < end ? after : -1)) fail(`chunk ${c} links to ${cNext[c]}, not the chunk after it`)
      chunkBytes += cSize[c]!
    }
    if (count !== sg.segChunks[seg]) fail(`segment ${seg} counts ${sg.segChunks[seg]} chunks, holds ${count}`)
    // a range is freed when its last chunk is taken out: one that never held a chunk is never freed
    if (count === 0) fail(`segment ${seg} holds no chunk, so nothing would free its range`)
    if (sg.chunkAt(seg, end - 1) < 0) fail(`segment ${seg} ends in a hole`)
    reserved += chunkBytes
    let covered = 0
    let last = -1
    for (let b = sg.segLast[seg]!; b >= 0; b = sg.bPrev[b]!) {
      if (sg.bSeg[b] !== seg || sg.bState[b] === DEAD) fail(`block ${b} is linked into segment ${seg}`)
      if (last >= 0) {
        if (sg.bPrev[last] !== b || sg.bNext[b] !== last) fail(`blocks ${b} and ${last} are not linked both ways`)
        if (sg.bStart[b]! + sg.bSize[b]! > sg.bStart[last]!) fail(`blocks ${b} and ${last} overlap`)
        if (sg.bState[b] === FREE && sg.bState[last] === FREE && sg.bStart[b]! + sg.bSize[b]! === sg.bStart[last]) {
          fail(`free blocks ${b} and ${last} are adjacent`)
        }
      }
      const a = sg.bStart[b]!
      const e = a + sg.bSize[b]!
      if (e === a) fail(`block ${b} is empty`)
      if (a % sg.unit !== 0 || e % sg.unit !== 0) fail(`block ${b} is not aligned to ${sg.unit}`)
      for (let at = a; at < e; at = end_(sg.chunkAt(seg, at))) {
        if (sg.chunkAt(seg, at) < 0) fail(`block ${b} covers a hole`)
      }
      if (sg.bState[b] === FREE) {
        const run = sg.runOf(seg, a, e)
        if (run !== sg.bRun[b]) fail(`free block ${b} counts ${sg.bRun[b]} whole-chunk bytes, holds ${run}`)
        for (let at = sg.rs; at < sg.re; at = end_(sg.chunkAt(seg, at))) {
          if (cFree[sg.chunkAt(seg, at)] !== 1) fail(`chunk at 0x${at.toString(16)} is wholly free but not marked so`)
        }
      } else usedBy.set(b, -1)
      covered += sg.bSize[b]!
      last = b
    }
    if (covered !== chunkBytes) fail(`segment ${seg}: blocks cover ${covered} bytes of ${chunkBytes}`)
    for (let i = 0; i < map.length; i++) {
      const c = map[i]!
      if (c < 0 || cFree[c] !== 1) continue
      const x = sg.freeBlockOver(c, seg, cStart[c]!, end_(c))
      if (x < 0) fail(`chunk ${c} is marked wholly free but no free block covers it`)
    }
  }
  if (reserved !== chunks.reservedBytes) fail(`reserved counts ${chunks.reservedBytes} bytes, chunks hold ${reserved}`)
  for (let s = 0; s < sg.pools.length; s++) {
    const pool = sg.pools[s]
    if (pool === undefined) continue
    let freeBytes = 0
    let runBytes = 0
    for (let i = 0; i < pool.free.length; i++) {
      const b = pool.free.idAt(i)
      if (sg.bState[b] !== FREE || sg.segStream[sg.bSeg[b]!] !== s) fail(`block ${b} is in stream ${s}'s free index`)
      if (pool.free.sizeAt(i) !== sg.bSize[b]) fail(`block ${b} is indexed under a stale size`)
      freeBytes += sg.bSize[b]!
      runBytes += sg.bRun[b]!
    }
    if (freeBytes !== pool.freeBytes || runBytes !== pool.runBytes) fail(`stream ${s}'s free byte counts are stale`)
  }
  for (let slot = 0; slot < grants.state.length; slot++) {
    if (grants.state[slot] === G_DEAD) continue
    const v = grants.view[slot]!
    const blks = v < 0 ? [grants.blk[slot]!] : grants.blks[slot]!
    for (const b of blks) {
      if (usedBy.get(b) !== -1) fail(`grant ${slot} holds block ${b}, which is not a used block or is held twice`)
      usedBy.set(b, slot)
    }
    if (v >= 0 && st.vLive[v] !== grants.idOf(slot)) fail(`grant ${slot}'s view ${v} names another user`)
  }
  for (const [b, slot] of usedBy) if (slot === -1) fail(`used block ${b} belongs to no grant`)
  // Note [Cross-stream lending]: a chunk counts the spans of other streams' views it holds
  const lent = new Map<number, number>()
  for (let slot = 0; slot < grants.state.length; slot++) {
    const v = grants.view[slot]!
    if (grants.state[slot] === G_DEAD || v < 0) continue
    for (const b of grants.blks[slot]!) {
      const seg = sg.bSeg[b]!
      if (sg.segStream[seg] === st.vStream[v]) continue
      for (let at = sg.bStart[b]!; at < sg.bStart[b]! + sg.bSize[b]!; at = end_(sg.chunkAt(seg, at))) {
        const c = sg.chunkAt(seg, at)
        lent.set(c, (lent.get(c) ?? 0) + 1)
      }
    }
  }
  for (let c = 0; c < cSeg.length; c++) {
    if (cSeg[c]! >= 0 && (chunks.cLent[c] ?? 0) !== (lent.get(c) ?? 0)) {
      fail(`chunk ${c} counts ${chunks.cLent[c]} spans lent to other streams, holds ${lent.get(c) ?? 0}`)
    }
  }
  let cached = 0
  for (let v = 0; v < st.vBase.length; v++) {
    if (st.vLive[v] === V_DEAD) continue
    if (st.vLive[v] === V_CACHED) cached += st.vSize[v]!
    let size = 0
    for (const c of st.vChunks[v]!) {
      size += cSize[c]!
      if (cSeg[c]! < 0 || !cViews[c]?.includes(v)) fail(`view ${v} maps chunk ${c}, which does not list it`)
    }
    if (size !== st.vSize[v]) fail(`view ${v} is ${st.vSize[v]} bytes, its chunks ${size}`)
  }
  if (cached !== st.cachedBytes) fail(`cached views count ${st.cachedBytes} bytes, hold ${cached}`)
}
