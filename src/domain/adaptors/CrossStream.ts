/**
 * Safe cross-stream reuse, as an adaptor around any allocator.
 *
 * Note [Cross-stream reuse]
 * -------------------------
 * GMLake, like PyTorch's allocator, keeps a pool per stream and never hands a block freed on one
 * stream to another: on multi-stream work (prefetch, communication) each stream's pool holds
 * memory the others cannot use. Reusing it across streams is safe only once the freeing stream's
 * work on the block is done; PyTorch already guards `record_stream` blocks that way.
 *
 * This adaptor gives all streams one pool of the inner allocator. While several streams are in
 * use, a freed block does not go back to that pool at once: an event is recorded on its stream at
 * the free, and the block waits, *pending*, until the event has completed (polled with
 * `eventQuery` when memory is asked for, never waited for on the hot path). Meanwhile its own
 * stream may take it back at once for a request it fits (stream order makes that safe, as in
 * PyTorch): pending blocks are indexed per stream by size, and a request that fits one of its own
 * stream's pending blocks within `ownStreamSlack` reuses it with no driver call. A deferred free
 * (`record_stream`) first waits for `complete`, then the same. So no block is handed to another
 * stream before the work that used it has finished.
 *
 * While only one stream has been used, a free goes to the pool at once with no event: stream
 * order already makes that safe, and single-stream work pays nothing for the adaptor. When a
 * second stream shows up, the first one is synchronized once, since blocks it freed without an
 * event are in the pool the second will take from. Under
 * memory pressure (the inner allocator reports out of memory) the events of pending blocks are
 * waited for and the request is retried once, as PyTorch does before its own out-of-memory.
 *
 * @since 0.1.0
 */
import type { Allocator, PolicyCounters, PolicyName } from "../Allocator.ts"
import { BestFit } from "../policies/pytorch/BestFit.ts"
import { InvalidBlockError, OutOfMemoryError } from "../Errors.ts"
import { checkStream, relabel } from "../Request.ts"
import type { StreamPort } from "../StreamPort.ts"
import type { Address, BlockId } from "../Units.ts"

/** Freed with `deferred`: waits for `complete`. */
const GUARDED = 2
/** Freed, its event recorded: waits for the event (or its own stream). */
const PENDING = 3

/**
 * A pending block serves its own stream's request when its size exceeds the request by at most
 * this fraction (the rest of the block is idle while it is used).
 */
const OWN_STREAM_SLACK = 1 / 8

/** Counters of the adaptor, beside the inner policy's. @category models */
export interface CrossStreamCounters {
  /** Frees that waited for an event before their block went back to the shared pool. */
  readonly eventGuardedFrees: number
  /** Pending blocks taken back by their own stream before their event completed. */
  readonly ownStreamReuses: number
  /** Times pending blocks had to be waited for under memory pressure. */
  readonly pressureSyncs: number
}

/** @category constructors */
export class CrossStreamAllocator implements Allocator {
  readonly policy: PolicyName
  readonly inner: Allocator
  private readonly events: StreamPort
  /** Block -> its stream (set once several streams are in use). */
  private readonly stream = new Map<number, number>()
  /** Block -> GUARDED or PENDING; a block with no entry is live. */
  private readonly state = new Map<number, number>()
  /** Block -> the size its current holder asked for, where it differs from the inner block's. */
  private readonly sizeOf = new Map<number, number>()
  /** Pending block -> its event. */
  private readonly eventOf = new Map<number, number>()
  /** Pending blocks in free order (entries no longer pending are skipped). */
  private readonly fifo: Array<number> = []
  private head = 0
  /** Per stream: its pending blocks by size (tie: free order). */
  private readonly ownPending: Array<BestFit | undefined> = []
  private seq = 0
  /** The first stream used; -1 before any. Several streams are in use once another is seen. */
  private firstStream = -1
  private multi = false
  private guardedFrees = 0
  private ownReuses = 0
  private syncs = 0

  constructor(inner: Allocator, events: StreamPort) {
    this.inner = inner
    this.policy = inner.policy
    this.events = events
  }

  private streamOf(block: number): number {
    return this.stream.get(block) ?? this.firstStream
  }

  private sizeFor(block: number): number {
    return this.sizeOf.get(block) ?? this.inner.size(block as BlockId)
  }

  /** Takes `block` out of the pending set (its event destroyed); it becomes live again or goes back. */
  private unpend(block: number): void {
    this.events.eventDestroy(this.eventOf.get(block)!)
    this.eventOf.delete(block)
    this.state.delete(block)
    this.ownPending[this.streamOf(block)]?.remove(block, this.sizeFor(block), this.tieOf.get(block)!)
    this.tieOf.delete(block)
  }
  private readonly tieOf = new Map<number, number>()

  /** Gives a pending block back to the shared pool. */
  private release(block: number): void {
    this.unpend(block)
    this.stream.delete(block)
    this.sizeOf.delete(block)
    this.inner.free(block as BlockId)
  }

  /** Gives back every pending block whose event has completed, in free order. */
  private drain(): void {
    const fifo = this.fifo
    while (this.head < fifo.length) {
      const b = fifo[this.head]!
      const e = this.eventOf.get(b)
      if (e !== undefined) {
        if (!this.events.eventQuery(e)) break
        this.release(b)
      }
      this.head++
    }
    if (this.head === fifo.length) {
      fifo.length = 0
      this.head = 0
    }
  }

  /** Waits for the event of every pending block, then gives them all back. */
  private syncAll(): void {
    for (const e of this.eventOf.values()) this.events.eventSynchronize(e)
    for (let i = this.head; i < this.fifo.length; i++) {
      const b = this.fifo[i]!
      if (this.eventOf.has(b)) this.release(b)
    }
    this.fifo.length = 0
    this.head = 0
  }

  malloc(size: number, stream: number): BlockId {
    checkStream(stream)
    if (stream !== this.firstStream) {
      if (this.firstStream < 0) this.firstStream = stream
      else if (!this.multi) {
        // Blocks freed so far went back to the pool with no event (one stream: its own order
        // made that safe); the first stream may still be using them, and the pool is about to
        // serve another stream. Wait for it once.
        this.events.streamSynchronize(this.firstStream)
        this.multi = true
      }
    }
    if (this.eventOf.size > 0) {
      // Its own stream's pending blocks first: no event to wait for, no driver call.
      const own = this.ownPending[stream]
      if (own !== undefined && own.length > 0 && Number.isInteger(size) && size > 0) {
        const i = own.findIndex(size)
        if (i >= 0 && own.sizeAt(i) <= size + size * OWN_STREAM_SLACK) {
          const b = own.idAt(i)
          this.unpend(b)
          this.sizeOf.set(b, size)
          this.ownReuses++
          return b as BlockId
        }
      }
      this.drain()
    }
    let b: BlockId
    try {
      b = this.inner.malloc(size, 0)
    } catch (e) {
      if (!(e instanceof OutOfMemoryError) || this.eventOf.size === 0) throw e
      this.syncs++
      this.syncAll()
      b = this.inner.malloc(size, 0)
    }
    // Until a second stream shows up, every block is the first stream's: no entry needed.
    if (this.multi) this.stream.set(b, stream)
    return b
  }

  private check(block: BlockId, operation: string): void {
    const st = this.state.get(block)
    if (st === GUARDED || st === PENDING) {
      throw new InvalidBlockError({ block, operation, detail: "the block was already freed" })
    }
  }

  free(block: BlockId, deferred?: boolean): void {
    this.check(block, "free")
    try {
      this.inner.size(block) // InvalidBlockError for a block that is not live
    } catch (e) {
      throw relabel(e, "free")
    }
    if (deferred === true) {
      this.state.set(block, GUARDED)
      return
    }
    if (this.multi) this.pend(block)
    else this.giveBack(block)
  }

  private giveBack(block: BlockId): void {
    this.stream.delete(block)
    this.sizeOf.delete(block)
    this.state.delete(block)
    this.inner.free(block)
  }

  /** Records the freeing stream's event and holds the block until it completes. */
  private pend(block: BlockId): void {
    const s = this.streamOf(block)
    const e = this.events.eventRecord(s)
    this.state.set(block, PENDING)
    this.eventOf.set(block, e)
    this.fifo.push(block)
    const tie = this.seq++
    this.tieOf.set(block, tie)
    const index = (this.ownPending[s] ??= new BestFit())
    index.insert(block, this.sizeFor(block), tie)
    this.guardedFrees++
  }

  complete(block: BlockId): void {
    if (this.state.get(block) !== GUARDED) {
      throw new InvalidBlockError({ block, operation: "complete", detail: "the block is not awaiting completion" })
    }
    // One stream only: its own order makes the memory safe to reuse once the guard completed.
    if (this.multi) this.pend(block)
    else this.giveBack(block)
  }

  address(block: BlockId): Address {
    this.check(block, "address")
    return this.inner.address(block)
  }
  size(block: BlockId): number {
    this.check(block, "size")
    return this.sizeFor(block)
  }
  /** Waits for the events of pending blocks (as PyTorch's `empty_cache` does), then empties the pool. */
  emptyCache(): void {
    if (this.eventOf.size > 0) this.syncAll()
    this.inner.emptyCache()
  }
  reserved(): number {
    return this.inner.reserved()
  }
  counters(): PolicyCounters {
    return this.inner.counters()
  }
  crossStreamCounters(): CrossStreamCounters {
    return { eventGuardedFrees: this.guardedFrees, ownStreamReuses: this.ownReuses, pressureSyncs: this.syncs }
  }
  /** Blocks freed but not yet back in the pool (awaiting `complete` or an event). */
  pending(): number {
    return this.state.size
  }
}
