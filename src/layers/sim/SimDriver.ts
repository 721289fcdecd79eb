/**
 * The simulated device: a `DriverPort` over plain memory bookkeeping, with the real driver's
 * rules, a ledger of every live chunk, range, mapping and classic allocation, and optional fault
 * injection. It is the default device wherever no GPU is present, and the recording port of the
 * tests (Note [Plans as a dialogue]).
 *
 * Note [Simulated address space]
 * ------------------------------
 * Virtual reservations and `memAlloc` allocations get addresses from two disjoint regions,
 * placed first-fit in address order over the holes freed before, as the CUDA driver's VA
 * allocator roughly does. Policies must not depend on them (the CUDA layer returns other
 * addresses); they exist so that tests can check overlap and translation exactly. Both regions
 * start where a 47-bit address space would put them, so a device of ordinary size sees
 * realistic addresses, and reach to 2^51 and 2^52: the reservations of every policy must fit
 * (expandable segments reserve 1 1/8 of the device per stream and pool, stitched views add
 * ranges of their own) for every device of a system, and addresses must stay exact doubles
 * (below 2^53). A simulated device holds at most `maxSimCapacity`, 4 TiB: fourteen times the
 * largest GPU made today, small enough that the policies' per-page bookkeeping of a whole device
 * stays affordable, and the reservations of a system of 16 such devices, with several streams
 * each, fit the address space many times over. A larger capacity is refused where the device
 * is built, instead of failing every allocation later (as it did above 32 TiB, the old window).
 *
 * Note [Simulated physical memory]
 * --------------------------------
 * A chunk's bytes count against the capacity from `memCreate` until it is both released and
 * unmapped everywhere (`cuMemRelease` on a mapped handle defers the free to the last unmap, as
 * the driver does). `memAlloc` bytes count until `memFree`. `translate` maps a virtual extent to
 * the physical (chunk, offset) pieces behind it, which is what the invariant tests need to prove
 * that no physical byte is reachable from two live blocks. Contents are stored only for chunks
 * that are written (`write`/`read`, the simulator's `cuMemcpy`), a 4 KiB page at a time on its
 * first write, so that a stitched view can be checked byte for byte against the blocks it
 * aliases, and a whole trace's blocks can be checked at both ends (`replay --verify`), without
 * the simulator holding gigabytes.
 *
 * Note [Simulated system]
 * -----------------------
 * Several simulated devices form a system (`SimDriver.system`, wrapped by `layers/SimSystem.ts`)
 * the way CUDA's unified addressing makes one process see its GPUs: one virtual address space
 * and one table of chunk handles shared by all devices, so that a device can map a chunk that
 * lives on a peer into a range it reserved. What stays per device is what is physical: each
 * device has its own capacity, and a chunk counts against the device it was created on (its
 * *location*) until it is released and unmapped everywhere, whichever device's port performs the
 * last unmap. Access is per device too: `setAccess` through device i's port grants device i (and
 * only i) access to the mappings it covers, and refuses (NotSupported, CUresult 217,
 * `CUDA_ERROR_PEER_ACCESS_UNSUPPORTED`) when one of them holds a chunk located on a peer that i
 * may not access; `translate`, `read` and `write` through device i need i's access. A device's
 * ledger counts what is its own: chunks located on it, ranges reserved through it and the
 * mappings inside them, its classic allocations, streams and events. A standalone `SimDriver`
 * is a system of one device, and behaves exactly as before.
 *
 * Why one file of ~800 lines: every part of the simulated device (address space, chunks, mappings,
 * classic allocations, streams, events, contents, faults) updates the one ledger that the tests read
 * and that must be empty at every scope's close; split, each part would need the others' private
 * state, and the ledger's consistency would no longer be checkable in one place.
 *
 * @since 0.1.0
 */
import type { DriverCallKind, DriverPort } from "../../domain/DriverPort.ts"
import type { StreamPort } from "../../domain/StreamPort.ts"
import { DriverError, type DriverFailureReason } from "../../domain/Errors.ts"
import { mulberry32 } from "../../domain/Random.ts"
import { type Address, type ChunkHandle, formatBytes, GiB, MiB } from "../../domain/Units.ts"

/** @category models */
export interface SimDriverOptions {
  /** Device memory in bytes (default 80 GiB). */
  readonly capacity?: number
  /** VMM granularity in bytes (default 2 MiB). */
  readonly granularity?: number
  /** Device name reported by the session. */
  readonly name?: string
  /** Fraction (0..1) of acquiring driver calls that fail, as the real driver can. */
  readonly faultRate?: number
  /** Seed of the fault injector's generator. */
  readonly seed?: number
  /** Keep a log of every step performed (tests). */
  readonly record?: boolean
  /** Ticks (see `SimDriver.tick`) after which a recorded event completes (default 8). */
  readonly eventLatency?: number
}

/** A step performed, as recorded. @category models */
export interface SimStep {
  readonly call: DriverCallKind
  readonly a: number
  readonly b: number
  readonly c: number
}

interface Chunk {
  readonly handle: number
  readonly bytes: number
  /** The ordinal of the device whose memory it is (Note [Simulated system]). */
  readonly location: number
  mappings: number
  released: boolean
  /** Contents by page, each allocated on first write (Note [Simulated physical memory]). */
  data: Map<number, Uint8Array> | undefined
}

/**
 * A reservation and its mappings, sorted by offset and non-overlapping, as parallel arrays (one
 * entry per mapping, no object each: the replay maps thousands of chunks).
 */
interface Range {
  readonly base: number
  readonly bytes: number
  /** The ordinal of the device whose port reserved it. */
  readonly owner: number
  readonly mOffset: Array<number>
  readonly mBytes: Array<number>
  readonly mHandle: Array<number>
  /** The devices that have access to each mapping, as a bit set of ordinals (Note [Simulated system]). */
  readonly mAccess: Array<number>
}

/** Inserts mapping `i` (appending is the common case: growth and stitches map in address order). */
const insertMapping = (r: Range, i: number, offset: number, bytes: number, handle: number): void => {
  if (i === r.mOffset.length) {
    r.mOffset.push(offset)
    r.mBytes.push(bytes)
    r.mHandle.push(handle)
    r.mAccess.push(0)
  } else {
    r.mOffset.splice(i, 0, offset)
    r.mBytes.splice(i, 0, bytes)
    r.mHandle.splice(i, 0, handle)
    r.mAccess.splice(i, 0, 0)
  }
}

/**
 * Removes mappings [i, j). At the end (the common case: teardown unmaps newest first) by `pop`,
 * which V8 inlines; shrinking `length` is a runtime call that trims the backing store (it was 9%
 * of the driver stack's time over a recorded gmlake replay and its teardown).
 */
const removeMappings = (r: Range, i: number, j: number): void => {
  if (j === r.mOffset.length) {
    for (let k = i; k < j; k++) {
      r.mOffset.pop()
      r.mBytes.pop()
      r.mHandle.pop()
      r.mAccess.pop()
    }
  } else {
    r.mOffset.splice(i, j - i)
    r.mBytes.splice(i, j - i)
    r.mHandle.splice(i, j - i)
    r.mAccess.splice(i, j - i)
  }
}

/** A piece of physical memory behind a virtual extent. @category models */
export interface PhysicalPiece {
  /** The chunk handle, or for a `memAlloc` allocation its base address (negated, to keep the two apart). */
  readonly chunk: number
  readonly offset: number
  readonly bytes: number
}

/** What is alive in the simulator right now. @category models */
export interface Ledger {
  readonly chunks: number
  readonly ranges: number
  readonly mappings: number
  readonly allocations: number
  /** Streams created and not destroyed (the default stream is not counted). */
  readonly streams: number
  readonly events: number
  readonly physicalBytes: number
}

/** A ledger with nothing alive. @category constructors */
export const emptyLedger: Ledger = {
  chunks: 0,
  ranges: 0,
  mappings: 0,
  allocations: 0,
  streams: 0,
  events: 0,
  physicalBytes: 0
}

// Note [Simulated address space]
/** Contents are kept in pages of this many bytes, each allocated on its first write. */
const PAGE = 4096

const VA_BASE = 0x5e00_0000_0000
const VA_LIMIT = 2 ** 51
const ALLOC_BASE = 2 ** 51
const ALLOC_LIMIT = 2 ** 52

/**
 * The driver's granularity on the GPUs this project runs on (`cuMemGetAllocationGranularity`,
 * 2 MiB on H100 and H200): a simulated device's granularity is this or a multiple of it.
 * @category constants
 */
export const driverGranularity = MiB(2)

/** The largest simulated device (Note [Simulated address space]). @category constants */
export const maxSimCapacity = 4 * 1024 * GiB(1)

/** First-fit placement over an address window, with freed holes reused. */
class AddressSpace {
  /** Free holes, sorted by start: [start, end) pairs flattened. */
  private holes: Array<number>
  constructor(start: number, end: number) {
    this.holes = [start, end]
  }
  take(bytes: number, align: number): number | undefined {
    const h = this.holes
    for (let i = 0; i < h.length; i += 2) {
      const start = Math.ceil(h[i]! / align) * align
      const end = h[i + 1]!
      // the common case, an aligned hole left longer than asked for: it shrinks in place
      if (start === h[i] && start + bytes < end) {
        h[i] = start + bytes
        return start
      }
      if (start + bytes <= end) {
        const pieces: Array<number> = []
        if (start > h[i]!) pieces.push(h[i]!, start)
        if (start + bytes < end) pieces.push(start + bytes, end)
        h.splice(i, 2, ...pieces)
        return start
      }
    }
    return undefined
  }
  give(start: number, bytes: number): void {
    const h = this.holes
    let i = 0
    while (i < h.length && h[i]! < start) i += 2
    h.splice(i, 0, start, start + bytes)
    // Coalesce with the neighbours on both sides.
    if (i + 2 < h.length && h[i + 1] === h[i + 2]) h.splice(i + 1, 2)
    if (i >= 2 && h[i - 1] === h[i]) h.splice(i - 1, 2)
  }
}

/** What the devices of one system share (Note [Simulated system]). */
interface SharedSpace {
  nextHandle: number
  readonly chunks: Map<number, Chunk>
  /**
   * Range bases sorted ascending, to find the range holding an address, and a reservation by its
   * base (`addressFree`): a binary search over plain numbers, where a `Map` keyed by 47-bit
   * addresses hashed heap numbers (`addressReserve` was 1.3% of gmlake's replay loop on
   * llama1b_ckpt_varlen, mostly that map's insert; 0.2-0.3% without it).
   */
  readonly rangeBases: Array<number>
  /** The ranges in the same order. */
  readonly rangeList: Array<Range>
  readonly va: AddressSpace
  readonly allocSpace: AddressSpace
  /** The devices, by ordinal. */
  readonly devices: Array<SimDriver>
  /** Whether device `from` may access memory located on device `to` (from != to). */
  peerAccess: (from: number, to: number) => boolean
}

const newSpace = (): SharedSpace => ({
  nextHandle: 1,
  chunks: new Map(),
  rangeBases: [],
  rangeList: [],
  va: new AddressSpace(VA_BASE, VA_LIMIT),
  allocSpace: new AddressSpace(ALLOC_BASE, ALLOC_LIMIT),
  devices: [],
  peerAccess: () => true
})

/** The most devices one simulated system holds (access is a 31-bit set of ordinals). @category constants */
export const maxSimDevices = 16

/** `CUDA_ERROR_PEER_ACCESS_UNSUPPORTED`. */
const PEER_ACCESS_UNSUPPORTED = 217

const CODE: Record<DriverFailureReason, number> = {
  OutOfMemory: 2,
  InvalidValue: 1,
  NotInitialized: 3,
  NoDevice: 100,
  InvalidContext: 201,
  NotReady: 600,
  NotSupported: 801,
  Unknown: 999
}

const fail = (call: string, reason: DriverFailureReason, detail: string): never => {
  throw new DriverError({ call, reason, code: CODE[reason], detail })
}

/**
 * The simulated device.
 * @category constructors
 */
export class SimDriver implements DriverPort, StreamPort {
  readonly granularity: number
  readonly capacity: number
  readonly name: string
  /** Steps performed, when `record` is set. */
  readonly log: Array<SimStep> | undefined
  /** Injected faults so far. */
  faults = 0

  /** Shared with the other devices of its system (Note [Simulated system]). */
  private space: SharedSpace = newSpace()
  /** Its ordinal in its system, and the access bit of that ordinal. */
  private index = 0
  private bit = 1
  private readonly allocations = new Map<number, number>()
  private physical = 0
  /** Live chunks located on this device, and ranges reserved through it. */
  private chunkCount = 0
  private rangeCount = 0
  private readonly faultRate: number
  private readonly random: () => number
  private readonly eventLatency: number

  constructor(options: SimDriverOptions = {}) {
    this.capacity = options.capacity ?? GiB(80)
    this.granularity = options.granularity ?? MiB(2)
    this.name = options.name ?? `simulated device (${formatBytes(this.capacity)}, granule ${formatBytes(this.granularity)})`
    this.log = options.record ? [] : undefined
    this.faultRate = options.faultRate ?? 0
    this.random = mulberry32(options.seed ?? 1)
    this.eventLatency = options.eventLatency ?? 8
    // The real driver maps and creates only in multiples of its own granularity; a simulated
    // one of 3 B or 1 KiB would make every policy track millions of chunks per gigabyte.
    if (!(Number.isSafeInteger(this.granularity) && this.granularity > 0 && this.granularity % driverGranularity === 0)) {
      fail("SimDriver", "InvalidValue",
        `granularity must be the driver's, ${formatBytes(driverGranularity)} (${driverGranularity} B), or a multiple of it; got ${this.granularity}`)
    }
    // A device too small for one granule is allowed: every allocation then fails, which is what
    // a run under --capacity 1 is asked to show.
    if (!(Number.isSafeInteger(this.capacity) && this.capacity >= 0)) {
      fail("SimDriver", "InvalidValue", `capacity must be a non-negative integer number of bytes, got ${this.capacity}`)
    }
    if (this.capacity > maxSimCapacity) {
      fail("SimDriver", "InvalidValue",
        `capacity ${formatBytes(this.capacity)} (${this.capacity} B) is more than the simulator's largest device, ` +
          `4 TiB (${maxSimCapacity} B) ` +
          "(its virtual address space must hold every policy's reservations)")
    }
    if (!(this.faultRate >= 0 && this.faultRate <= 1)) {
      fail("SimDriver", "InvalidValue", `faultRate must be a fraction from 0 to 1, got ${this.faultRate}`)
    }
    this.space.devices.push(this)
  }

  /**
   * The devices of one system (Note [Simulated system]), by ordinal: one shared virtual address
   * space and handle table, a capacity and ledger each. `peerAccess(from, to)` says whether
   * device `from` may access memory located on device `to`; it is asked at every `setAccess`
   * over a peer's chunk, so it may change over time. `layers/SimSystem.ts` wraps this.
   */
  static system(
    devices: ReadonlyArray<SimDriverOptions>,
    peerAccess: (from: number, to: number) => boolean = () => true
  ): Array<SimDriver> {
    if (devices.length < 1 || devices.length > maxSimDevices) {
      fail("SimDriver", "InvalidValue", `a system holds 1 to ${maxSimDevices} devices, got ${devices.length}`)
    }
    const space = newSpace()
    space.peerAccess = peerAccess
    const out = devices.map((options, i) => {
      const capacity = options.capacity ?? GiB(80)
      const d = new SimDriver({ ...options, name: options.name ?? `simulated device ${i} (${formatBytes(capacity)})` })
      d.space = space
      d.index = i
      d.bit = 1 << i
      space.devices.push(d)
      return d
    })
    if (out.some((d) => d.granularity !== out[0]!.granularity)) {
      fail("SimDriver", "InvalidValue", "the devices of one system must share one granularity")
    }
    return out
  }

  /** Its ordinal in its system (0 for a standalone device). */
  get ordinal(): number {
    return this.index
  }

  /** The devices of its system, by ordinal (itself alone for a standalone device). */
  get peers(): ReadonlyArray<SimDriver> {
    return this.space.devices
  }

  /**
   * Whether this device may access memory located on device `peer` (`cuDeviceCanAccessPeer`):
   * false for itself, as CUDA answers.
   */
  canAccessPeer(peer: number): boolean {
    if (!(Number.isInteger(peer) && peer >= 0 && peer < this.space.devices.length)) {
      return fail("cuDeviceCanAccessPeer", "NoDevice", `there is no device ${peer} in this system`)
    }
    return peer !== this.index && this.space.peerAccess(this.index, peer)
  }

  // --- fault injection -------------------------------------------------------------------------

  /**
   * Fails an acquiring call at the configured rate, as the real driver can. An injected fault is
   * `Unknown` (CUDA_ERROR_UNKNOWN), never `OutOfMemory`: the device had the memory, and the
   * allocator must report the driver's failure as such, not as the device being full (policies
   * only turn `OutOfMemory` refusals into `OutOfMemoryError`).
   */
  private maybeFault(call: string): void {
    if (this.faultRate > 0 && this.random() < this.faultRate) {
      this.faults++
      fail(call, "Unknown", "injected fault")
    }
  }

  private record(call: DriverCallKind, a: number, b: number, c: number): void {
    if (this.log !== undefined) this.log.push({ call, a, b, c })
  }

  private checkSize(call: string, bytes: number): void {
    if (!(Number.isInteger(bytes) && bytes > 0)) fail(call, "InvalidValue", `size ${bytes} is not a positive integer`)
    if (bytes % this.granularity !== 0) {
      fail(call, "InvalidValue", `size ${bytes} is not a multiple of the granularity ${this.granularity}`)
    }
  }

  // --- physical chunks -------------------------------------------------------------------------

  memCreate(bytes: number): ChunkHandle {
    this.checkSize("cuMemCreate", bytes)
    if (this.physical + bytes > this.capacity) {
      fail("cuMemCreate", "OutOfMemory",
        `${formatBytes(bytes)} requested, ${formatBytes(this.capacity - this.physical)} of ${formatBytes(this.capacity)} free`)
    }
    this.maybeFault("cuMemCreate")
    const handle = this.space.nextHandle++
    this.space.chunks.set(handle, { handle, bytes, location: this.index, mappings: 0, released: false, data: undefined })
    this.physical += bytes
    this.chunkCount++
    this.record("memCreate", bytes, handle, 0)
    return handle as ChunkHandle
  }

  memRelease(handle: ChunkHandle): void {
    const chunk = this.space.chunks.get(handle)
    if (chunk === undefined || chunk.released) fail("cuMemRelease", "InvalidValue", `unknown or released handle ${handle}`)
    chunk!.released = true
    if (chunk!.mappings === 0) this.dropChunk(chunk!)
    this.record("memRelease", handle, 0, 0)
  }

  /** Its memory goes back to the device it is located on, whichever port dropped it. */
  private dropChunk(chunk: Chunk): void {
    this.space.chunks.delete(chunk.handle)
    const home = this.space.devices[chunk.location]!
    home.physical -= chunk.bytes
    home.chunkCount--
  }

  // --- virtual ranges --------------------------------------------------------------------------

  addressReserve(bytes: number): Address {
    this.checkSize("cuMemAddressReserve", bytes)
    this.maybeFault("cuMemAddressReserve")
    const base = this.space.va.take(bytes, this.granularity)
    if (base === undefined) return fail("cuMemAddressReserve", "OutOfMemory", `no ${formatBytes(bytes)} of virtual space left`)
    const range: Range = { base, bytes, owner: this.index, mOffset: [], mBytes: [], mHandle: [], mAccess: [] }
    this.space.rangeList.splice(insertSorted(this.space.rangeBases, base), 0, range)
    this.rangeCount++
    this.record("addressReserve", bytes, base, 0)
    return base as Address
  }

  addressFree(va: Address, bytes: number): void {
    const at = indexOfSorted(this.space.rangeBases, va)
    const range = at < 0 ? undefined : this.space.rangeList[at]
    if (range === undefined) return fail("cuMemAddressFree", "InvalidValue", `0x${va.toString(16)} is not a reservation's base`)
    if (range.bytes !== bytes) {
      fail("cuMemAddressFree", "InvalidValue", `size ${bytes} differs from the reserved size ${range.bytes}`)
    }
    if (range.mOffset.length > 0) {
      fail("cuMemAddressFree", "InvalidValue", `${range.mOffset.length} mapping(s) still live in the range`)
    }
    this.space.rangeBases.splice(at, 1)
    this.space.rangeList.splice(at, 1)
    this.space.va.give(va, bytes)
    this.space.devices[range.owner]!.rangeCount--
    this.record("addressFree", va, bytes, 0)
  }

  /** The range holding [va, va + bytes), or a failure of `call`. */
  private rangeOf(call: string, va: number, bytes: number): Range {
    const bases = this.space.rangeBases
    let lo = 0
    let hi = bases.length - 1
    let found = -1
    while (lo <= hi) {
      const mid = (lo + hi) >> 1
      if (bases[mid]! <= va) {
        found = mid
        lo = mid + 1
      } else hi = mid - 1
    }
    const range = found >= 0 ? this.space.rangeList[found] : undefined
    if (range === undefined || va + bytes > range.base + range.bytes) {
      return fail(call, "InvalidValue", `[0x${va.toString(16)}, +${bytes}) is not inside one reserved range`)
    }
    return range
  }

  // --- mappings --------------------------------------------------------------------------------

  memMap(va: Address, bytes: number, handle: ChunkHandle): void {
    this.checkSize("cuMemMap", bytes)
    const chunk = this.space.chunks.get(handle)
    if (chunk === undefined || chunk.released) fail("cuMemMap", "InvalidValue", `unknown or released handle ${handle}`)
    // Measured on the H100 (bench/results): mapping part of a chunk is NOT_SUPPORTED.
    if (bytes < chunk!.bytes) fail("cuMemMap", "NotSupported", `size ${bytes} maps only part of the chunk's ${chunk!.bytes}`)
    if (chunk!.bytes !== bytes) fail("cuMemMap", "InvalidValue", `size ${bytes} differs from the chunk's ${chunk!.bytes}`)
    const range = this.rangeOf("cuMemMap", va, bytes)
    const offset = va - range.base
    if (offset % this.granularity !== 0) fail("cuMemMap", "InvalidValue", `address 0x${va.toString(16)} is not aligned`)
    const mo = range.mOffset
    const i = lowerBound(mo, offset)
    if ((i > 0 && mo[i - 1]! + range.mBytes[i - 1]! > offset) || (i < mo.length && mo[i]! < offset + bytes)) {
      fail("cuMemMap", "InvalidValue", `[0x${va.toString(16)}, +${bytes}) overlaps an existing mapping`)
    }
    this.maybeFault("cuMemMap")
    insertMapping(range, i, offset, bytes, handle)
    chunk!.mappings++
    this.record("memMap", va, bytes, handle)
  }

  memUnmap(va: Address, bytes: number): void {
    const range = this.rangeOf("cuMemUnmap", va, bytes)
    const offset = va - range.base
    const mo = range.mOffset
    const i = lowerBound(mo, offset)
    let j = i
    let end = offset
    while (j < mo.length && mo[j] === end && end < offset + bytes) {
      end += range.mBytes[j]!
      j++
    }
    if (mo[i] !== offset || end !== offset + bytes) {
      fail("cuMemUnmap", "InvalidValue", `[0x${va.toString(16)}, +${bytes}) does not cover whole, adjacent mappings`)
    }
    for (let k = i; k < j; k++) {
      const chunk = this.space.chunks.get(range.mHandle[k]!)!
      chunk.mappings--
      if (chunk.released && chunk.mappings === 0) this.dropChunk(chunk)
    }
    removeMappings(range, i, j)
    this.record("memUnmap", va, bytes, 0)
  }

  setAccess(va: Address, bytes: number): void {
    const range = this.rangeOf("cuMemSetAccess", va, bytes)
    const offset = va - range.base
    const mo = range.mOffset
    let i = lowerBound(mo, offset)
    if (mo[i] !== offset) i = -1
    let end = offset
    const from = i
    while (i >= 0 && i < mo.length && mo[i] === end && end < offset + bytes) {
      end += range.mBytes[i]!
      i++
    }
    if (from < 0 || end < offset + bytes) {
      fail("cuMemSetAccess", "InvalidValue", `[0x${va.toString(16)}, +${bytes}) is not wholly mapped`)
    }
    // A standalone device has no peer: nothing to check.
    for (let k = from; k < i && this.space.devices.length > 1; k++) {
      const location = this.space.chunks.get(range.mHandle[k]!)!.location
      if (location !== this.index && !this.space.peerAccess(this.index, location)) {
        throw new DriverError({
          call: "cuMemSetAccess",
          reason: "NotSupported",
          code: PEER_ACCESS_UNSUPPORTED,
          detail: `device ${this.index} may not access memory located on device ${location} (no peer access)`
        })
      }
    }
    this.maybeFault("cuMemSetAccess")
    for (let k = from; k < i; k++) range.mAccess[k]! |= this.bit
    this.record("setAccess", va, bytes, 0)
  }

  // --- classic allocations ---------------------------------------------------------------------

  memAlloc(bytes: number): Address {
    if (!(Number.isInteger(bytes) && bytes > 0)) fail("cuMemAlloc", "InvalidValue", `size ${bytes} is not a positive integer`)
    if (this.physical + bytes > this.capacity) {
      fail("cuMemAlloc", "OutOfMemory",
        `${formatBytes(bytes)} requested, ${formatBytes(this.capacity - this.physical)} of ${formatBytes(this.capacity)} free`)
    }
    this.maybeFault("cuMemAlloc")
    const va = this.space.allocSpace.take(bytes, 512)
    if (va === undefined) return fail("cuMemAlloc", "OutOfMemory", "no virtual space left")
    this.allocations.set(va, bytes)
    this.physical += bytes
    this.record("memAlloc", bytes, va, 0)
    return va as Address
  }

  memFree(va: Address): void {
    const bytes = this.allocations.get(va)
    if (bytes === undefined) return fail("cuMemFree", "InvalidValue", `0x${va.toString(16)} is not a live allocation`)
    this.allocations.delete(va)
    this.space.allocSpace.give(va, bytes)
    this.physical -= bytes
    this.record("memFree", va, 0, 0)
  }

  memGetInfo(): { readonly free: number; readonly total: number } {
    return { free: this.capacity - this.physical, total: this.capacity }
  }

  // --- contents (cuMemcpy, cuMemset) ------------------------------------------------------------

  /** Copies `data` to device memory at `va` (through the mappings, as `cuMemcpyHtoD`). */
  write(va: number, data: Uint8Array): void {
    let at = 0
    for (const p of this.translate(va, data.length)) {
      const chunk = this.space.chunks.get(p.chunk)
      if (chunk === undefined) return fail("cuMemcpyHtoD", "InvalidValue", "classic allocations hold no simulated contents")
      const pages = (chunk.data ??= new Map())
      for (let off = p.offset, end = p.offset + p.bytes; off < end;) {
        const k = Math.floor(off / PAGE)
        const to = Math.min(end, (k + 1) * PAGE)
        let page = pages.get(k)
        if (page === undefined) pages.set(k, page = new Uint8Array(PAGE))
        page.set(data.subarray(at + off - p.offset, at + to - p.offset), off - k * PAGE)
        off = to
      }
      at += p.bytes
    }
  }

  /** Sets `bytes` bytes at `va` to `value` (the simulator runs stream work at once). */
  fillAsync(va: number, value: number, bytes: number, stream: number): void {
    if (!this.streams.has(stream)) fail("cuMemsetD8Async", "InvalidValue", `unknown stream ${stream}`)
    this.write(va, new Uint8Array(bytes).fill(value))
  }

  /** Copies `bytes` from `src` to `dst` (the simulator runs stream work at once). */
  copyAsync(dst: number, src: number, bytes: number, stream: number): void {
    if (!this.streams.has(stream)) fail("cuMemcpyDtoDAsync", "InvalidValue", `unknown stream ${stream}`)
    this.write(dst, this.read(src, bytes))
  }

  /** Reads `bytes` of device memory at `va` (as `cuMemcpyDtoH`); never-written memory reads as 0. */
  read(va: number, bytes: number): Uint8Array {
    const out = new Uint8Array(bytes)
    let at = 0
    for (const p of this.translate(va, bytes)) {
      const pages = this.space.chunks.get(p.chunk)?.data
      if (pages !== undefined) {
        for (let off = p.offset, end = p.offset + p.bytes; off < end;) {
          const k = Math.floor(off / PAGE)
          const to = Math.min(end, (k + 1) * PAGE)
          const page = pages.get(k)
          if (page !== undefined) out.set(page.subarray(off - k * PAGE, to - k * PAGE), at + off - p.offset)
          off = to
        }
      }
      at += p.bytes
    }
    return out
  }

  // --- streams and events -----------------------------------------------------------------------
  //
  // Note [Simulated streams]
  // The simulator runs no kernels, so it models time instead: `tick()` advances a clock (the
  // replay ticks once per event), and an event completes `eventLatency` ticks after it was
  // recorded, or at once when its stream is synchronized. That is enough to exercise every
  // ordering rule of cross-stream reuse deterministically.

  private clock = 0
  private nextStream = 1
  private nextEvent = 1
  private readonly streams = new Set<number>([0])
  /** Event -> [stream, the tick at which it completes]. */
  private readonly events = new Map<number, { stream: number; done: number }>()

  /** Waits for all device work: every recorded event completes. */
  synchronize(): void {
    for (const e of this.events.values()) if (e.done > this.clock) e.done = this.clock
  }

  /** Advances the simulated clock by `n` ticks. */
  tick(n = 1): void {
    this.clock += n
  }

  isStream(stream: number): boolean {
    return this.streams.has(stream)
  }

  streamCreate(): number {
    // Not subject to fault injection: faults model memory calls (Note [Simulated streams]).
    const s = this.nextStream++
    this.streams.add(s)
    return s
  }
  streamDestroy(stream: number): void {
    if (stream === 0 || !this.streams.delete(stream)) {
      fail("cuStreamDestroy", "InvalidValue", `unknown stream ${stream}`)
    }
  }
  streamSynchronize(stream: number): void {
    if (!this.streams.has(stream)) fail("cuStreamSynchronize", "InvalidValue", `unknown stream ${stream}`)
    for (const e of this.events.values()) if (e.stream === stream && e.done > this.clock) e.done = this.clock
  }
  eventRecord(stream: number): number {
    if (!this.streams.has(stream)) fail("cuEventRecord", "InvalidValue", `unknown stream ${stream}`)
    const id = this.nextEvent++
    this.events.set(id, { stream, done: this.clock + this.eventLatency })
    return id
  }
  eventRerecord(event: number, stream: number): void {
    if (!this.streams.has(stream)) fail("cuEventRecord", "InvalidValue", `unknown stream ${stream}`)
    const e = this.events.get(event)
    if (e === undefined) return fail("cuEventRecord", "InvalidValue", `unknown event ${event}`)
    e.stream = stream
    e.done = this.clock + this.eventLatency
  }
  eventQuery(event: number): boolean {
    const e = this.events.get(event)
    if (e === undefined) return fail("cuEventQuery", "InvalidValue", `unknown event ${event}`)
    return e.done <= this.clock
  }
  eventSynchronize(event: number): void {
    const e = this.events.get(event)
    if (e === undefined) return fail("cuEventSynchronize", "InvalidValue", `unknown event ${event}`)
    // Waiting for the event is waiting for its stream's work up to it: so every event recorded
    // on that stream before it has completed too.
    const until = e.done
    if (until <= this.clock) return
    for (const x of this.events.values()) if (x.stream === e.stream && x.done <= until) x.done = this.clock
  }
  eventDestroy(event: number): void {
    if (!this.events.delete(event)) fail("cuEventDestroy", "InvalidValue", `unknown event ${event}`)
  }

  // --- inspection (tests, leak checks) ----------------------------------------------------------

  /** What is alive now. */
  ledger(): Ledger {
    let mappings = 0
    for (const r of this.space.rangeList) if (r.owner === this.index) mappings += r.mOffset.length
    return {
      chunks: this.chunkCount,
      ranges: this.rangeCount,
      mappings,
      allocations: this.allocations.size,
      streams: this.streams.size - 1,
      events: this.events.size,
      physicalBytes: this.physical
    }
  }

  /** Live handles of every kind (chunks, ranges, mappings, allocations, streams, events), for leak checks. */
  liveHandles(): number {
    const l = this.ledger()
    return l.chunks + l.ranges + l.mappings + l.allocations + l.streams + l.events
  }

  /**
   * The physical pieces behind `[va, va + bytes)`, as this device sees them. Throws if any byte
   * of it is not mapped with access set for this device, or not inside a live `memAlloc`
   * allocation of this device. Chunk handles are unique across a system.
   */
  translate(va: number, bytes: number): Array<PhysicalPiece> {
    if (va >= ALLOC_BASE && va < ALLOC_LIMIT) {
      for (const [base, size] of this.allocations) {
        if (va >= base && va + bytes <= base + size) return [{ chunk: -base, offset: va - base, bytes }]
      }
      return fail("translate", "InvalidValue", `[0x${va.toString(16)}, +${bytes}) is not inside one live allocation`)
    }
    const range = this.rangeOf("translate", va, bytes)
    const pieces: Array<PhysicalPiece> = []
    let at = va - range.base
    const end = at + bytes
    const mo = range.mOffset
    let i = lowerBound(mo, at)
    if (mo[i] !== at) i--
    while (at < end) {
      const mOffset = mo[i]
      const mBytes = range.mBytes[i]
      if (mOffset === undefined || mBytes === undefined || mOffset > at || mOffset + mBytes <= at) {
        return fail("translate", "InvalidValue", `byte at 0x${(range.base + at).toString(16)} is not mapped`)
      }
      if ((range.mAccess[i]! & this.bit) === 0) return fail("translate", "InvalidValue", `byte at 0x${(range.base + at).toString(16)} has no access`)
      const len = Math.min(end, mOffset + mBytes) - at
      pieces.push({ chunk: range.mHandle[i]!, offset: at - mOffset, bytes: len })
      at += len
      i++
    }
    return pieces
  }
}

/** Index of the first mapping whose offset is >= `offset`. */
const lowerBound = (offsets: ReadonlyArray<number>, offset: number): number => {
  let lo = 0
  let hi = offsets.length
  // Maps and unmaps are mostly at the end (growth): check there before searching.
  if (hi === 0 || offsets[hi - 1]! < offset) return hi
  while (lo < hi) {
    const mid = (lo + hi) >> 1
    if (offsets[mid]! < offset) lo = mid + 1
    else hi = mid
  }
  return lo
}

/** Inserts `x`; returns where. */
const insertSorted = (xs: Array<number>, x: number): number => {
  let lo = 0
  let hi = xs.length
  while (lo < hi) {
    const mid = (lo + hi) >> 1
    if (xs[mid]! < x) lo = mid + 1
    else hi = mid
  }
  xs.splice(lo, 0, x)
  return lo
}

/** Where `x` is, or -1. */
const indexOfSorted = (xs: ReadonlyArray<number>, x: number): number => {
  let lo = 0
  let hi = xs.length
  while (lo < hi) {
    const mid = (lo + hi) >> 1
    if (xs[mid]! < x) lo = mid + 1
    else hi = mid
  }
  return xs[lo] === x ? lo : -1
}
