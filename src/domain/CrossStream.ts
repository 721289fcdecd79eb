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
 * This adaptor gives all streams one pool of the inner allocator, and keeps every block freed
 * while several streams are in use out of that pool until an event recorded on its stream at the
 * free has completed (`StreamPort.eventRecord`, polled with `eventQuery`, never waited for on the
 * hot path). A deferred free (`record_stream`) first waits for `complete`, then the same. So no
 * block is handed to any stream before the work that used it has finished, whichever stream asks.
 *
 * While only one stream has been used, a free goes to the pool at once with no event: stream
 * order already makes that safe, and single-stream work pays nothing for the adaptor. Under
 * memory pressure (the inner allocator reports out of memory) the events of pending blocks are
 * waited for and the request is retried once, as PyTorch does before its own out-of-memory.
 *
 * The price: a block freed on a stream is not reused by that same stream before its event
 * completes (the inner pool has no notion of "free for this stream only"). Events complete within
 * microseconds of the work they follow, so the window is short.
 *
 * @since 0.1.0
 */
import type { Allocator, PolicyCounters, PolicyName } from "./Allocator.ts"
import { InvalidBlockError, InvalidRequestError, OutOfMemoryError } from "./Errors.ts"
import type { StreamPort } from "./StreamPort.ts"
import type { Address, BlockId } from "./Units.ts"

/** A block with no state entry is live. */
const LIVE = 1
/** Freed with `deferred`: waits for `complete`. */
const GUARDED = 2
/** Freed, its event recorded: waits for the event. */
const PENDING = 3

/** Counters of the adaptor, beside the inner policy's. @category models */
export interface CrossStreamCounters {
  /** Blocks that waited for an event before going back to the shared pool. */
  readonly eventGuardedFrees: number
  /** Times pending blocks had to be waited for (streams synchronized) under memory pressure. */
  readonly pressureSyncs: number
}

/** @category constructors */
export class CrossStreamAllocator implements Allocator {
  readonly policy: PolicyName
  readonly inner: Allocator
  private readonly events: StreamPort
  /** Block -> its stream and state (only blocks the adaptor must know about). */
  private readonly stream = new Map<number, number>()
  private readonly state = new Map<number, number>()
  /** FIFO of pending blocks and their events. */
  private readonly pendingBlocks: Array<number> = []
  private readonly pendingEvents: Array<number> = []
  private head = 0
  /** The first stream used; -1 before any. Several streams in use once another is seen. */
  private firstStream = -1
  private multi = false
  private guarded = 0
  private syncs = 0

  constructor(inner: Allocator, events: StreamPort) {
    this.inner = inner
    this.policy = inner.policy
    this.events = events
  }

  /** Gives back to the pool every pending block whose event has completed, in free order. */
  private drain(): void {
    while (this.head < this.pendingBlocks.length) {
      const e = this.pendingEvents[this.head]!
      if (!this.events.eventQuery(e)) return
      this.release(this.head)
      this.head++
    }
    if (this.head > 0 && this.head === this.pendingBlocks.length) {
      this.pendingBlocks.length = 0
      this.pendingEvents.length = 0
      this.head = 0
    }
  }

  private release(i: number): void {
    const b = this.pendingBlocks[i]!
    this.events.eventDestroy(this.pendingEvents[i]!)
    this.state.delete(b)
    this.stream.delete(b)
    this.inner.free(b as BlockId)
  }

  /** Waits for the event of every pending block, then gives them all back. */
  private syncAll(): void {
    for (let i = this.head; i < this.pendingBlocks.length; i++) this.events.eventSynchronize(this.pendingEvents[i]!)
    for (let i = this.head; i < this.pendingBlocks.length; i++) this.release(i)
    this.pendingBlocks.length = 0
    this.pendingEvents.length = 0
    this.head = 0
  }

  malloc(size: number, stream: number): BlockId {
    if (!(Number.isInteger(stream) && stream >= 0)) {
      throw new InvalidRequestError({ detail: `stream ${stream} is not a non-negative integer` })
    }
    if (stream !== this.firstStream) {
      if (this.firstStream < 0) this.firstStream = stream
      else this.multi = true
    }
    if (this.head < this.pendingBlocks.length) this.drain()
    let b: BlockId
    try {
      b = this.inner.malloc(size, 0)
    } catch (e) {
      if (!(e instanceof OutOfMemoryError) || this.head >= this.pendingBlocks.length) throw e
      this.syncs++
      this.syncAll()
      b = this.inner.malloc(size, 0)
    }
    // Until a second stream shows up, every block is the first stream's: no entry needed.
    if (this.multi) this.stream.set(b, stream)
    return b
  }

  private check(block: BlockId, operation: string): number {
    const st = this.state.get(block)
    if (st === GUARDED || st === PENDING) {
      throw new InvalidBlockError({ block, operation, detail: "the block was already freed" })
    }
    return st ?? LIVE
  }

  free(block: BlockId, deferred?: boolean): void {
    this.check(block, "free")
    if (deferred === true) {
      this.inner.size(block) // InvalidBlockError for a block that is not live
      this.state.set(block, GUARDED)
      this.guarded++
      return
    }
    if (!this.multi) {
      this.stream.delete(block)
      this.state.delete(block)
      this.inner.free(block)
      return
    }
    this.pend(block)
  }

  /** Records the freeing stream's event and holds the block until it completes. */
  private pend(block: BlockId): void {
    this.inner.size(block) // InvalidBlockError for a block that is not live
    const s = this.stream.get(block) ?? this.firstStream
    const e = this.events.eventRecord(s)
    this.state.set(block, PENDING)
    this.pendingBlocks.push(block)
    this.pendingEvents.push(e)
    this.guarded++
  }

  complete(block: BlockId): void {
    if (this.state.get(block) !== GUARDED) {
      throw new InvalidBlockError({ block, operation: "complete", detail: "the block is not awaiting completion" })
    }
    if (this.multi) {
      this.pend(block)
      return
    }
    // One stream only: its own order makes the memory safe to reuse once the guard completed.
    this.state.delete(block)
    this.stream.delete(block)
    this.inner.free(block)
  }

  address(block: BlockId): Address {
    this.check(block, "address")
    return this.inner.address(block)
  }
  size(block: BlockId): number {
    this.check(block, "size")
    return this.inner.size(block)
  }
  /** Waits for the streams of pending blocks (as PyTorch's `empty_cache` does), then empties the pool. */
  emptyCache(): void {
    if (this.head < this.pendingBlocks.length) this.syncAll()
    this.inner.emptyCache()
  }
  reserved(): number {
    return this.inner.reserved()
  }
  counters(): PolicyCounters {
    return this.inner.counters()
  }
  crossStreamCounters(): CrossStreamCounters {
    return { eventGuardedFrees: this.guarded, pressureSyncs: this.syncs }
  }
  /** Blocks freed but not yet back in the pool (awaiting `complete` or an event). */
  pending(): number {
    return this.state.size
  }
}
