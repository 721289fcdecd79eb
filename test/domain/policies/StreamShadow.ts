/**
 * A shadow model of which physical bytes each stream may still touch, for the cross-stream
 * safety properties (Note [Cross-stream adoption]). It trusts nothing the allocator says about
 * events: at every free it records a *witness* event of its own on the freeing stream, directly on
 * the simulator, so the witness completes exactly when the simulated device has run the work the
 * stream queued before the free (Note [Simulated streams]). Physical identity comes from the
 * simulator's address translation (chunk handle, offset), so a chunk that moves from one virtual
 * range to another is still recognised.
 *
 * Bytes a stream may still touch:
 * - the bytes of its live blocks;
 * - the bytes of its freed blocks until the witness recorded at the free completes;
 * - the bytes of its deferred frees (`record_stream`) until `complete`, and then until the witness.
 *
 * The invariants checked:
 * - at `malloc` on stream t, the new block's bytes overlap no live block, no deferred free, and no
 *   free of another stream whose witness has not completed (its own stream may reuse at once);
 * - at every `cuMemMap` made while serving a `malloc` on stream t, the chunk holds no byte that
 *   another stream may still touch: a chunk whose event has not completed is never mapped into
 *   another stream's range.
 */
import type { DriverPort } from "../../../src/domain/DriverPort.ts"
import type { StreamPort } from "../../../src/domain/StreamPort.ts"
import type { Address, ChunkHandle } from "../../../src/domain/Units.ts"
import type { PhysicalPiece, SimDriver } from "../../../src/layers/sim/SimDriver.ts"

const LIVE = 0
const FREED = 1
const DEFERRED = 2

interface ShadowBlock {
  readonly key: number
  readonly stream: number
  readonly pieces: ReadonlyArray<PhysicalPiece>
  state: number
  /** The witness event recorded on `stream` at the free, or -1 while live. */
  witness: number
}

/** A broken invariant, thrown from wherever it is seen (inside the allocator's port calls too). */
export class ShadowViolation extends Error {}

/** The shadow of one simulated device's streams. */
export class StreamShadow {
  private readonly sim: SimDriver
  private readonly blocks = new Map<number, ShadowBlock>()
  /** Freed bytes every stream may take now, by the stream that last used them. */
  private readonly history: Array<{ readonly stream: number; readonly pieces: ReadonlyArray<PhysicalPiece> }> = []
  /** The stream a `malloc` is being served for, or -1 outside one. */
  current = -1
  /** Cross-stream handovers seen: blocks whose bytes another stream had freed before. */
  handovers = 0
  /**
   * Whether every virtual range belongs to one stream (per-stream pools), so that mappings are
   * checked too; an allocator with one pool for all streams has no such ranges.
   */
  private readonly perStreamRanges: boolean

  constructor(sim: SimDriver, perStreamRanges = true) {
    this.sim = sim
    this.perStreamRanges = perStreamRanges
  }

  private safe(b: ShadowBlock): boolean {
    return b.state === FREED && this.sim.eventQuery(b.witness)
  }

  /** Drops freed blocks whose witness has completed: every stream may have their bytes now. */
  prune(): void {
    for (const [k, b] of this.blocks) {
      if (this.safe(b)) {
        this.sim.eventDestroy(b.witness)
        this.blocks.delete(k)
        this.history.push({ stream: b.stream, pieces: b.pieces })
      }
    }
  }

  /** A block of `size` bytes at `address` was handed to `stream`. */
  allocated(key: number, address: number, size: number, stream: number): void {
    const pieces = this.sim.translate(address, size)
    this.prune()
    for (const b of this.blocks.values()) {
      if (!overlap(pieces, b.pieces)) continue
      if (b.state === LIVE) throw new ShadowViolation(`block ${key} (stream ${stream}) overlaps live block ${b.key} (stream ${b.stream})`)
      if (b.state === DEFERRED) {
        throw new ShadowViolation(`block ${key} (stream ${stream}) takes bytes of block ${b.key}, freed deferred and not completed`)
      }
      if (b.stream !== stream) {
        throw new ShadowViolation(
          `block ${key} (stream ${stream}) takes bytes that stream ${b.stream} freed (block ${b.key}) before its work on them completed`
        )
      }
    }
    let handed = false
    for (let i = this.history.length - 1; i >= 0; i--) {
      const h = this.history[i]!
      if (!overlap(pieces, h.pieces)) continue
      if (h.stream !== stream) handed = true
      this.history.splice(i, 1)
    }
    if (handed) this.handovers++
    this.blocks.set(key, { key, stream, pieces, state: LIVE, witness: -1 })
  }

  /** Block `key` is freed (deferred: `record_stream`, until `completed`). */
  freed(key: number, deferred: boolean): void {
    const b = this.blocks.get(key)
    if (b === undefined || b.state !== LIVE) throw new Error(`shadow: block ${key} is not live`)
    b.state = deferred ? DEFERRED : FREED
    b.witness = this.sim.eventRecord(b.stream)
  }

  completed(key: number): void {
    const b = this.blocks.get(key)
    if (b === undefined || b.state !== DEFERRED) throw new Error(`shadow: block ${key} is not awaiting completion`)
    b.state = FREED
  }

  /** Checks a `cuMemMap` of chunk `handle` made while serving a `malloc`. */
  mapping(handle: number): void {
    if (this.current < 0) throw new ShadowViolation(`chunk ${handle} mapped outside any malloc`)
    if (!this.perStreamRanges) return
    for (const b of this.blocks.values()) {
      if (b.stream === this.current || this.safe(b)) continue
      for (const p of b.pieces) {
        if (p.chunk === handle) {
          throw new ShadowViolation(
            `chunk ${handle} mapped for stream ${this.current} while stream ${b.stream} may still touch it (block ${b.key}, ${
              ["live", "freed, event pending", "freed deferred"][b.state]
            })`
          )
        }
      }
    }
  }

  /** Destroys the witnesses still alive (before the device's ledger is checked). */
  close(): void {
    for (const b of this.blocks.values()) if (b.witness >= 0) this.sim.eventDestroy(b.witness)
    this.blocks.clear()
    this.history.length = 0
  }
}

const overlap = (xs: ReadonlyArray<PhysicalPiece>, ys: ReadonlyArray<PhysicalPiece>): boolean => {
  for (const p of xs) {
    for (const q of ys) {
      if (p.chunk === q.chunk && p.offset < q.offset + q.bytes && q.offset < p.offset + p.bytes) return true
    }
  }
  return false
}

/**
 * The simulator as the allocator's `DriverPort` and `StreamPort`, with every `cuMemMap` checked
 * against the shadow. `lieAboutEvents` makes every event query answer "complete": a broken device
 * (or allocator) that the properties must catch.
 */
export class ShadowPort implements DriverPort, StreamPort {
  readonly granularity: number
  readonly capacity: number
  private readonly sim: SimDriver
  private readonly shadow: StreamShadow
  private readonly lie: boolean

  constructor(sim: SimDriver, shadow: StreamShadow, lieAboutEvents = false) {
    this.sim = sim
    this.shadow = shadow
    this.lie = lieAboutEvents
    this.granularity = sim.granularity
    this.capacity = sim.capacity
  }
  memCreate(bytes: number): ChunkHandle {
    return this.sim.memCreate(bytes)
  }
  memRelease(handle: ChunkHandle): void {
    this.sim.memRelease(handle)
  }
  addressReserve(bytes: number): Address {
    return this.sim.addressReserve(bytes)
  }
  addressFree(va: Address, bytes: number): void {
    this.sim.addressFree(va, bytes)
  }
  memMap(va: Address, bytes: number, handle: ChunkHandle): void {
    this.shadow.mapping(handle)
    this.sim.memMap(va, bytes, handle)
  }
  memUnmap(va: Address, bytes: number): void {
    this.sim.memUnmap(va, bytes)
  }
  setAccess(va: Address, bytes: number): void {
    this.sim.setAccess(va, bytes)
  }
  memAlloc(bytes: number): Address {
    return this.sim.memAlloc(bytes)
  }
  memFree(va: Address): void {
    this.sim.memFree(va)
  }
  memGetInfo() {
    return this.sim.memGetInfo()
  }
  streamCreate(): number {
    return this.sim.streamCreate()
  }
  streamDestroy(stream: number): void {
    this.sim.streamDestroy(stream)
  }
  streamSynchronize(stream: number): void {
    this.sim.streamSynchronize(stream)
  }
  eventRecord(stream: number): number {
    return this.sim.eventRecord(stream)
  }
  eventRerecord(event: number, stream: number): void {
    this.sim.eventRerecord(event, stream)
  }
  eventQuery(event: number): boolean {
    return this.lie ? (this.sim.eventQuery(event), true) : this.sim.eventQuery(event)
  }
  eventSynchronize(event: number): void {
    if (!this.lie) this.sim.eventSynchronize(event)
  }
  eventDestroy(event: number): void {
    this.sim.eventDestroy(event)
  }
}
