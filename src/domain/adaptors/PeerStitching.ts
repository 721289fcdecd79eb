/**
 * Borrowing a peer device's memory when a device runs out of its own: an opt-in adaptor around
 * any allocator, and the group of devices that lend to each other.
 *
 * Note [Peer stitching]
 * ---------------------
 * With CUDA's virtual memory management, where a chunk lives and who may use it are separate:
 * `cuMemCreate` places a chunk on a device (its location), `cuMemMap` puts it at any reserved
 * virtual address, and `cuMemSetAccess` names the devices that may read and write it there. So a
 * device that is out of memory can take chunks created on a peer, map them side by side into a
 * range it reserved, grant itself access over the range in one call, and hand the range out as
 * one contiguous block: stitching, across devices. Nothing is copied.
 *
 * The adaptor does that only when the device's own allocator has given up (it has already
 * emptied its caches and reported `OutOfMemoryError`), in this order:
 * 1. Memory of this device that peers borrowed and no longer use (freed borrowed blocks in their
 *    caches) goes back to it, and the own allocator tries again: a device's own work comes before
 *    lending (`PeerGroup.reclaim`).
 * 2. A cached borrowed block of this device on the same stream that fits (at most `reuseLimit`
 *    times the request): no driver call.
 * 3. A new borrowed block: for each peer this device may access (`canAccess`), most free memory
 *    first, one chunk of what the peer can give (its free memory less `lenderHeadroom`), until
 *    the request (rounded up to the granularity) is covered; then reserve a range here, map the
 *    chunks in order, and set access for this device over the whole range at once. A block may
 *    span several lenders.
 * 4. If that fails for want of memory: every cached borrowed block in the group is given back
 *    to its lenders, and step 3 is tried once more. Then the original `OutOfMemoryError`.
 *
 * A freed borrowed block stays mapped in a per-stream cache (with `cache`, the default), so that
 * a workload that overflows the device at every step pays the driver calls once; a block is
 * reused only by its own stream, so stream order keeps reuse safe without events. A deferred free
 * (`record_stream`) waits for `complete` first. The cache is given back by `emptyCache`, when a
 * lender needs its memory (step 1), and when a borrow fails (step 4). Giving a block back
 * synchronizes its stream (when a `StreamPort` is given), unmaps it, frees its range and releases
 * its chunks through their lenders' ports, so that each lender's handle registry sees its own
 * chunks come and go (Note [Handle ownership]).
 *
 * Accounting: a borrowed block is this device's allocation (its requested bytes count in this
 * device's statistics), but its memory is the lender's: it counts in the lender's physical
 * memory (its ledger, `cuMemGetInfo`), in neither allocator's `reserved()`, and is reported as
 * borrowed by the borrower (`borrowedBytes`, per lender in `borrowedFrom`) and as lent by the
 * lender (`lentBytes`). So for every device: physical memory in use = its allocator's reserved
 * bytes + what peers borrowed from it.
 *
 * Borrowed blocks have negative ids (-1, -2, ..., never reused), so they never collide with the
 * inner allocator's and a stale one is refused. Stitching local free chunks together with a
 * peer's in one range is not done: the inner allocator's free chunks are its own business.
 *
 * Note [Borrowed bandwidth]
 * -------------------------
 * Borrowed memory is for capacity, not speed. A kernel on device 0 reading a block whose chunks
 * live on device 1 reads them over the link between the two: on H100 SXM, NVLink 4 gives about
 * 450 GB/s per direction, against about 3.35 TB/s from local HBM3, so such reads are some 7 times
 * slower at best; between GPUs that talk over PCIe Gen5 x16 it is about 64 GB/s, some 50 times
 * slower; and the link is shared with the peer's own collective traffic (NCCL all-reduce uses
 * the same NVLink). Latency per access grows as well. So peer stitching is off unless asked for:
 * use it to survive a peak (a long sequence, a large batch) that would otherwise fail with out
 * of memory, not for hot tensors, and watch `borrowedBytes`. It never copies data and never
 * uses NVLink multicast (`cuMulticastCreate`).
 *
 * Why one file of ~560 lines: the adaptor and the lending group share the per-device lending
 * ledgers, which must stay consistent with each other under every failure (Note [Peer stitching]).
 *
 * @since 0.1.0
 */
import type { Allocator, PolicyCounters, PolicyName } from "../Allocator.ts"
import type { DriverPort } from "../DriverPort.ts"
import { DriverError, InvalidBlockError, InvalidRequestError, OutOfMemoryError } from "../Errors.ts"
import type { StreamPort } from "../StreamPort.ts"
import type { Address, BlockId, ChunkHandle } from "../Units.ts"
import { executeMap, executeUnmap } from "../vmm/Plan.ts"

/** A device of a peer group: its ordinal and its own ports. @category models */
export interface PeerDevice {
  readonly ordinal: number
  /** The device's port: chunks lent by this device are created and released through it. */
  readonly port: DriverPort
  /** The device's streams: a borrowed block's stream is synchronized before it is unmapped. */
  readonly streams?: StreamPort
}

/** Configuration of peer stitching; absent fields take the defaults. @category models */
export interface PeerStitchingConfig {
  /** Bytes each lender keeps free for its own work (default 0: lend all its free memory). */
  readonly lenderHeadroom?: number
  /** The most bytes one device may hold borrowed, live and cached (default: no limit). */
  readonly maxBorrowed?: number
  /** Keep freed borrowed blocks mapped for reuse by their stream (default true). */
  readonly cache?: boolean
  /** A cached borrowed block serves a request of at least 1/reuseLimit its size (default 2). */
  readonly reuseLimit?: number
}

/** What a device's peer stitching did and holds. @category models */
export interface PeerCounters {
  /** Borrowed blocks handed out and not freed, now and at the most. */
  readonly borrowedBlocks: number
  readonly borrowedBlocksPeak: number
  /** Physical bytes held from peers (live, deferred and cached borrowed blocks), now and at the most. */
  readonly borrowedBytes: number
  readonly borrowedBytesPeak: number
  /** Of `borrowedBytes`, what sits in the cache. */
  readonly cachedBorrowedBytes: number
  /** Bytes held from each device, by ordinal (0 for itself). */
  readonly borrowedFrom: ReadonlyArray<number>
  /** Bytes of this device's memory that peers hold now. */
  readonly lentBytes: number
  /** Borrowed blocks built (new ranges mapping peer chunks), and the chunks created on peers for them. */
  readonly borrows: number
  readonly borrowedChunks: number
  /** Requests served by a cached borrowed block, with no driver call. */
  readonly cacheHits: number
  /** Cached borrowed blocks given back to their lenders (empty cache, pressure). */
  readonly givenBack: number
}

const LIVE = 0
const GUARDED = 1
const CACHED = 2

interface Lent {
  readonly lender: number
  readonly handle: ChunkHandle
  readonly bytes: number
}

interface Borrowed {
  readonly id: number
  readonly va: Address
  /** The range's size: the sum of its chunks. */
  readonly bytes: number
  readonly chunks: ReadonlyArray<Lent>
  size: number
  stream: number
  state: number
}

const isDriverOom = (e: unknown): e is DriverError => e instanceof DriverError && e.reason === "OutOfMemory"

/**
 * The devices that may lend to each other, and each one's adaptor.
 * @category constructors
 */
export class PeerGroup {
  readonly granularity: number
  private readonly devices: ReadonlyArray<PeerDevice>
  private readonly canAccess: (from: number, to: number) => boolean
  readonly config: Required<Omit<PeerStitchingConfig, "maxBorrowed">> & { readonly maxBorrowed: number }
  private readonly members: Array<PeerStitchingAllocator | undefined> = []

  /**
   * A group over `devices` (indexed by ordinal). `canAccess(from, to)` says whether device `from`
   * may map memory located on device `to` (`cuDeviceCanAccessPeer`). Throws
   * `InvalidRequestError` when the devices' granularities differ or the ordinals are not
   * 0..n-1 in order, or the configuration is out of range.
   */
  constructor(
    devices: ReadonlyArray<PeerDevice>,
    canAccess: (from: number, to: number) => boolean,
    config: PeerStitchingConfig = {}
  ) {
    const first = devices[0]
    if (first === undefined) throw new InvalidRequestError({ detail: "a peer group needs at least one device" })
    devices.forEach((d, i) => {
      if (d.ordinal !== i) throw new InvalidRequestError({ detail: `device ${i} of the group has ordinal ${d.ordinal}` })
      if (d.port.granularity !== first.port.granularity) {
        throw new InvalidRequestError({
          detail: `devices 0 and ${i} have different granularities (${first.port.granularity}, ${d.port.granularity})`
        })
      }
    })
    const headroom = config.lenderHeadroom ?? 0
    const maxBorrowed = config.maxBorrowed ?? Number.POSITIVE_INFINITY
    const reuseLimit = config.reuseLimit ?? 2
    if (!(headroom >= 0) || !(maxBorrowed >= 0) || !(reuseLimit >= 1)) {
      throw new InvalidRequestError({
        detail: "peer stitching: lenderHeadroom and maxBorrowed must be >= 0, reuseLimit >= 1"
      })
    }
    this.devices = devices
    this.granularity = first.port.granularity
    this.canAccess = canAccess
    this.config = { lenderHeadroom: headroom, maxBorrowed, cache: config.cache ?? true, reuseLimit }
  }

  /** Number of devices. */
  get size(): number {
    return this.devices.length
  }

  /** Device `ordinal`'s allocator `inner`, wrapped so that it may borrow from the group. */
  wrap(ordinal: number, inner: Allocator): PeerStitchingAllocator {
    const device = this.devices[ordinal]
    if (device === undefined) throw new InvalidRequestError({ detail: `no device ${ordinal} in the peer group` })
    if (this.members[ordinal] !== undefined) {
      throw new InvalidRequestError({ detail: `device ${ordinal} already has an allocator in the peer group` })
    }
    const a = new PeerStitchingAllocator(inner, this, device)
    this.members[ordinal] = a
    return a
  }

  /** The adaptor of device `ordinal`, if it has one. */
  member(ordinal: number): PeerStitchingAllocator | undefined {
    return this.members[ordinal]
  }

  /** @internal the lenders device `ordinal` may borrow from, most free memory first, with what each can give. */
  lenders(ordinal: number): Array<{ readonly device: PeerDevice; readonly available: number }> {
    const g = this.granularity
    const out: Array<{ readonly device: PeerDevice; readonly available: number }> = []
    for (const d of this.devices) {
      if (d.ordinal === ordinal || !this.canAccess(ordinal, d.ordinal)) continue
      const free = d.port.memGetInfo().free - this.config.lenderHeadroom
      const available = Math.floor(Math.max(0, free) / g) * g
      if (available > 0) out.push({ device: d, available })
    }
    return out.sort((a, b) => b.available - a.available || a.device.ordinal - b.device.ordinal)
  }

  /** @internal */
  port(ordinal: number): DriverPort {
    return this.devices[ordinal]!.port
  }

  /**
   * Gives back to device `lender` every cached borrowed block (of any member) holding its memory.
   * Returns the bytes of its memory freed. Throws `DriverError` if the driver refuses.
   */
  reclaim(lender: number): number {
    let freed = 0
    for (const m of this.members) if (m !== undefined) freed += m.giveBackCached(lender)
    return freed
  }

  /** Gives back every cached borrowed block of every member. Returns the bytes freed. */
  reclaimAll(): number {
    let freed = 0
    for (const m of this.members) if (m !== undefined) freed += m.giveBackCached(undefined)
    return freed
  }

  /** Bytes of device `ordinal`'s memory that other members hold now. */
  lentBytes(ordinal: number): number {
    let n = 0
    for (const m of this.members) if (m !== undefined) n += m.heldFrom(ordinal)
    return n
  }

  /**
   * Gives back everything borrowed by every member, live blocks included (a session closing).
   * Never throws; returns the failures met, as messages.
   */
  releaseAll(): Array<string> {
    const errors: Array<string> = []
    for (const m of this.members) if (m !== undefined) errors.push(...m.releaseAll())
    return errors
  }
}

/**
 * Peer stitching around a device's allocator (Note [Peer stitching]). Built by `PeerGroup.wrap`.
 * @category constructors
 */
export class PeerStitchingAllocator implements Allocator {
  readonly policy: PolicyName
  readonly inner: Allocator
  readonly ordinal: number
  private readonly group: PeerGroup
  private readonly port: DriverPort
  private readonly streams: StreamPort | undefined
  private readonly blocks = new Map<number, Borrowed>()
  /** Per stream: cached borrowed blocks. */
  private readonly cached = new Map<number, Array<Borrowed>>()
  private nextId = -1
  private live = 0
  private livePeak = 0
  private held = 0
  private heldPeak = 0
  private cachedBytes = 0
  private readonly from: Array<number>
  private borrows = 0
  private borrowedChunks = 0
  private hits = 0
  private givenBack = 0

  /** Use `PeerGroup.wrap`. */
  constructor(inner: Allocator, group: PeerGroup, device: PeerDevice) {
    this.inner = inner
    this.policy = inner.policy
    this.group = group
    this.ordinal = device.ordinal
    this.port = device.port
    this.streams = device.streams
    this.from = new Array<number>(group.size).fill(0)
  }

  malloc(size: number, stream: number): BlockId {
    let oom: OutOfMemoryError
    try {
      return this.inner.malloc(size, stream)
    } catch (e) {
      if (!(e instanceof OutOfMemoryError)) throw e
      oom = e
    }
    // 1. This device's own memory, idle in peers' caches, comes back first.
    if (this.group.reclaim(this.ordinal) > 0) {
      try {
        return this.inner.malloc(size, stream)
      } catch (e) {
        if (!(e instanceof OutOfMemoryError)) throw e
        oom = e
      }
    }
    const need = Math.ceil(size / this.group.granularity) * this.group.granularity
    // 2. A cached borrowed block of this stream.
    const hit = this.takeCached(need, stream)
    if (hit !== undefined) {
      hit.size = size
      hit.state = LIVE
      this.hits++
      this.countLive(1)
      return hit.id as BlockId
    }
    // 3. A new borrowed block; 4. once more after every cache gave its borrowed memory back.
    const b = this.borrow(need, size, stream) ??
      (this.group.reclaimAll() > 0 ? this.borrow(need, size, stream) : undefined)
    if (b === undefined) throw oom
    return b.id as BlockId
  }

  private takeCached(need: number, stream: number): Borrowed | undefined {
    const list = this.cached.get(stream)
    if (list === undefined) return undefined
    let best = -1
    for (let i = 0; i < list.length; i++) {
      const b = list[i]!
      if (b.bytes >= need && b.bytes <= need * this.group.config.reuseLimit &&
        (best < 0 || b.bytes < list[best]!.bytes)) best = i
    }
    if (best < 0) return undefined
    const b = list[best]!
    list.splice(best, 1)
    this.cachedBytes -= b.bytes
    return b
  }

  /** Builds a borrowed block of `need` bytes, or `undefined` when the peers lack the memory. */
  private borrow(need: number, size: number, stream: number): Borrowed | undefined {
    if (this.held + need > this.group.config.maxBorrowed) return undefined
    const plan: Array<{ readonly lender: number; readonly bytes: number }> = []
    let left = need
    for (const l of this.group.lenders(this.ordinal)) {
      if (left === 0) break
      const take = Math.min(left, l.available)
      plan.push({ lender: l.device.ordinal, bytes: take })
      left -= take
    }
    if (left > 0) return undefined
    // One map plan (Note [Map plans] in `vmm/Plan.ts`): the chunks are created on their lenders,
    // mapped and given access here; on a failure everything done is undone.
    const sizes = plan.map((p) => p.bytes)
    const owners = plan.map((p) => this.group.port(p.lender))
    const handles: Array<number> = []
    let va: Address
    try {
      va = executeMap(this.port, { reserve: need, at: 0, sizes, handles, create: true, owners })
    } catch (e) {
      if (isDriverOom(e)) return undefined
      throw e
    }
    const chunks: Array<Lent> = plan.map((p, i) => ({ lender: p.lender, handle: handles[i]! as ChunkHandle, bytes: p.bytes }))
    const b: Borrowed = { id: this.nextId--, va, bytes: need, chunks, size, stream, state: LIVE }
    this.blocks.set(b.id, b)
    this.borrows++
    this.borrowedChunks += chunks.length
    for (const c of chunks) this.from[c.lender]! += c.bytes
    this.held += need
    if (this.held > this.heldPeak) this.heldPeak = this.held
    this.countLive(1)
    return b
  }

  private countLive(n: number): void {
    this.live += n
    if (this.live > this.livePeak) this.livePeak = this.live
  }

  private borrowed(block: BlockId, operation: string): Borrowed {
    const b = this.blocks.get(block)
    if (b === undefined || b.state !== LIVE) {
      throw new InvalidBlockError({
        block,
        operation,
        detail: b === undefined ? "no such borrowed block (freed and given back, or never allocated)" : "the block was already freed"
      })
    }
    return b
  }

  free(block: BlockId, deferred?: boolean): void {
    if (block >= 0) return this.inner.free(block, deferred)
    const b = this.borrowed(block, "free")
    this.countLive(-1)
    if (deferred === true) b.state = GUARDED
    else this.park(b)
  }

  complete(block: BlockId): void {
    if (block >= 0) return this.inner.complete(block)
    const b = this.blocks.get(block)
    if (b === undefined || b.state !== GUARDED) {
      throw new InvalidBlockError({ block, operation: "complete", detail: "the block is not awaiting completion" })
    }
    this.park(b)
  }

  /** A freed borrowed block goes to its stream's cache, or back to its lenders without a cache. */
  private park(b: Borrowed): void {
    b.state = CACHED
    if (!this.group.config.cache) {
      try {
        this.giveBack(b)
        return
      } catch {
        // `free` cannot fail with a driver error. Given back in part: the session's registries
        // hold the rest. Refused at the unmap: it waits in the cache for the next give-back.
        if (!this.blocks.has(b.id)) return
      }
    }
    let list = this.cached.get(b.stream)
    if (list === undefined) this.cached.set(b.stream, (list = []))
    list.push(b)
    this.cachedBytes += b.bytes
  }

  address(block: BlockId): Address {
    return block >= 0 ? this.inner.address(block) : this.borrowed(block, "address").va
  }

  size(block: BlockId): number {
    return block >= 0 ? this.inner.size(block) : this.borrowed(block, "size").size
  }

  /** Empties the inner allocator's cache, and gives every cached borrowed block back to its lenders. */
  emptyCache(): void {
    try {
      this.inner.emptyCache()
    } finally {
      this.giveBackCached(undefined)
    }
  }

  /** The inner allocator's own physical memory; borrowed memory is the lenders' (Note [Peer stitching]). */
  reserved(): number {
    return this.inner.reserved()
  }

  counters(): PolicyCounters {
    return this.inner.counters()
  }

  /** What peer stitching did and holds on this device. */
  peerCounters(): PeerCounters {
    return {
      borrowedBlocks: this.live,
      borrowedBlocksPeak: this.livePeak,
      borrowedBytes: this.held,
      borrowedBytesPeak: this.heldPeak,
      cachedBorrowedBytes: this.cachedBytes,
      borrowedFrom: [...this.from],
      lentBytes: this.group.lentBytes(this.ordinal),
      borrows: this.borrows,
      borrowedChunks: this.borrowedChunks,
      cacheHits: this.hits,
      givenBack: this.givenBack
    }
  }

  /** Whether `block` is a borrowed block (live or not). */
  isBorrowed(block: BlockId): boolean {
    return block < 0
  }

  /** @internal bytes of device `lender`'s memory this device holds. */
  heldFrom(lender: number): number {
    return this.from[lender] ?? 0
  }

  /**
   * @internal Gives back the cached borrowed blocks holding memory of `lender` (all of them when
   * `undefined`). Returns the bytes of the lender's memory freed (all bytes when `undefined`).
   */
  giveBackCached(lender: number | undefined): number {
    if (this.cachedBytes === 0) return 0
    let freed = 0
    const candidates: Array<Borrowed> = []
    for (const list of this.cached.values()) for (const b of list) candidates.push(b)
    for (const b of candidates) {
      const share = lender === undefined
        ? b.bytes
        : b.chunks.reduce((n, c) => (c.lender === lender ? n + c.bytes : n), 0)
      if (share === 0) continue
      this.giveBack(b)
      this.givenBack++
      freed += share
    }
    return freed
  }

  /** Drops a block from the books (and from its stream's cache). */
  private forget(b: Borrowed): void {
    this.blocks.delete(b.id)
    if (b.state === CACHED) {
      const list = this.cached.get(b.stream)
      const i = list === undefined ? -1 : list.indexOf(b)
      if (i >= 0) {
        list!.splice(i, 1)
        this.cachedBytes -= b.bytes
        if (list!.length === 0) this.cached.delete(b.stream)
      }
    } else if (b.state === LIVE) this.live--
    this.held -= b.bytes
    for (const c of b.chunks) this.from[c.lender]! -= c.bytes
  }

  /**
   * Synchronizes the block's stream, unmaps it, frees its range and releases its chunks through
   * their lenders. If the unmap is refused nothing changes; after it, the block is forgotten even
   * if a later step fails (the session's registries give back what is left), and the first
   * failure is thrown.
   */
  private giveBack(b: Borrowed): void {
    if (this.streams !== undefined) {
      try {
        this.streams.streamSynchronize(b.stream)
      } catch {
        // A stream that can no longer be synchronized was destroyed, and destroying it
        // synchronized it (services/Streams.ts): its work on the block is done.
      }
    }
    this.port.memUnmap(b.va, b.bytes)
    this.forget(b)
    // the rest of the map plan's inverse: every step tried, the first failure thrown
    executeUnmap(this.port, {
      at: b.va,
      bytes: 0,
      handles: b.chunks.map((c) => c.handle),
      owners: b.chunks.map((c) => this.group.port(c.lender)),
      freeBase: b.va,
      freeBytes: b.bytes
    })
  }

  /** @internal Gives back everything borrowed, live blocks included (a session closing). Never throws. */
  releaseAll(): Array<string> {
    const errors: Array<string> = []
    for (const b of [...this.blocks.values()]) {
      try {
        this.giveBack(b)
      } catch (e) {
        errors.push(e instanceof Error ? e.message : String(e))
        if (this.blocks.has(b.id)) this.forget(b)
      }
    }
    return errors
  }
}
