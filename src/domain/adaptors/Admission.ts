/**
 * The allocator's front door, as an adaptor around any policy: every argument is checked against
 * the rules of `Request.ts` before the policy sees it, and a request the device cannot hold is
 * refused before any driver call.
 *
 * Note [Refusing what cannot fit]
 * -------------------------------
 * A policy that cannot serve a request from its cache goes to the driver, and on a refusal it
 * empties its cache and retries before it reports out of memory. For a request larger than the
 * device, that dance does damage before it fails: GMLake-style allocation with "allocate and
 * stitch" creates chunks for the shortfall until the driver says no, and expandable segments map
 * pages up to the same point, so one 1 TB request made both map the whole simulated 80 GiB device
 * (and on a real GPU would take every byte other processes need) only to give it all back.
 *
 * Every byte of a block lies in chunks of the driver's granularity that the allocator holds, so
 * a request of `size` bytes needs at least `size` rounded up to the granularity of physical
 * memory, and all of it must come from what the allocator holds now plus what the device has
 * free. When that bound exceeds the device's capacity the request is refused at once; when it
 * exceeds what the allocator holds, the device's free memory (`cuMemGetInfo`, which sees other
 * processes too) is asked once and the request refused if the two together fall short. Both
 * refusals are an `OutOfMemoryError` carrying `deviceFree`, with no driver call made that
 * allocates anything. The bound is necessary, not sufficient: a request it lets through may
 * still fail in the policy, which then reports out of memory as before. The cost is nil for
 * requests the allocator's holdings already cover (the steady state of a training loop), and one
 * `cuMemGetInfo` (about a microsecond) before a request that would go to the driver anyway.
 *
 * @since 0.1.0
 */
import type { Allocator, PolicyCounters, PolicyName } from "../Allocator.ts"
import type { DriverPort } from "../DriverPort.ts"
import { InvalidRequestError, OutOfMemoryError } from "../Errors.ts"
import { checkBlockId, checkSize, checkStream } from "../Request.ts"
import type { StreamPort } from "../StreamPort.ts"
import type { Address, BlockId } from "../Units.ts"

/** What admission needs of the device. @category models */
export type AdmissionPort = Pick<DriverPort, "granularity" | "capacity" | "memGetInfo">

/** @category constructors */
export class AdmissionAllocator implements Allocator {
  readonly policy: PolicyName
  readonly inner: Allocator
  private readonly port: AdmissionPort
  private readonly granularity: number
  private readonly streams: StreamPort | undefined

  /**
   * `streams`, when given, is the session's: the allocator records events on the streams of its
   * requests (cross-stream reuse, adoption), so a request on a stream the session does not have
   * is refused here rather than failing later inside a free.
   */
  constructor(inner: Allocator, port: AdmissionPort, streams?: StreamPort) {
    this.inner = inner
    this.policy = inner.policy
    this.port = port
    this.granularity = port.granularity > 0 ? port.granularity : 1
    this.streams = streams
  }

  malloc(size: number, stream: number): BlockId {
    checkSize(size)
    checkStream(stream)
    if (stream !== 0 && this.streams?.isStream?.(stream) === false) {
      throw new InvalidRequestError({ detail: `stream ${stream} is not a stream of this session (create it first)` })
    }
    const g = this.granularity
    const need = size <= g ? g : Math.ceil(size / g) * g
    if (need > this.inner.reserved()) this.admit(size, stream, need)
    return this.inner.malloc(size, stream)
  }

  /** Note [Refusing what cannot fit] */
  private admit(size: number, stream: number, need: number): void {
    const capacity = this.port.capacity
    const held = this.inner.reserved()
    let deviceFree: number | undefined
    if (need > capacity) {
      // Refused whatever is free; ask only for the message, and do without if the driver fails.
      try {
        deviceFree = this.port.memGetInfo().free
      } catch {
        deviceFree = Math.max(0, capacity - held)
      }
    } else {
      const free = this.port.memGetInfo().free
      if (need > free + held) deviceFree = free
    }
    if (deviceFree === undefined) return
    throw new OutOfMemoryError({
      requested: size,
      stream,
      reserved: held,
      // Not measured on a refusal: nothing was asked of the policy.
      free: 0,
      largestFreeBlock: 0,
      capacity,
      deviceFree
    })
  }

  free(block: BlockId, deferred?: boolean): void {
    checkBlockId(block, "free")
    this.inner.free(block, deferred)
  }
  complete(block: BlockId): void {
    checkBlockId(block, "complete")
    this.inner.complete(block)
  }
  address(block: BlockId): Address {
    checkBlockId(block, "address")
    return this.inner.address(block)
  }
  size(block: BlockId): number {
    checkBlockId(block, "size")
    return this.inner.size(block)
  }
  emptyCache(): void {
    this.inner.emptyCache()
  }
  reserved(): number {
    return this.inner.reserved()
  }
  counters(): PolicyCounters {
    return this.inner.counters()
  }
}
