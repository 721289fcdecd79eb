/**
 * The typed errors of the allocator, raised by the pure core and by the driver layers.
 *
 * They are `Data.TaggedError`s: cheap to build (they are thrown from the synchronous hot path
 * and caught at the Effect boundary) and yieldable inside `Effect.gen`.
 *
 * @since 0.1.0
 */
import { Data } from "effect"
import { formatBytes } from "./Units.ts"

/**
 * Why a driver call failed, independent of the backend (simulator or CUDA).
 * @category errors
 */
export type DriverFailureReason =
  | "OutOfMemory"
  | "InvalidValue"
  | "NotInitialized"
  | "NoDevice"
  | "InvalidContext"
  | "NotSupported"
  | "NotReady"
  | "Unknown"

/**
 * A driver call failed. `call` names the driver entry point (`cuMemCreate`, ...), `code` is the
 * CUresult (the simulator uses the same codes), `detail` says what was wrong in words.
 * @category errors
 */
export class DriverError extends Data.TaggedError("DriverError")<{
  readonly call: string
  readonly reason: DriverFailureReason
  readonly code: number
  readonly detail: string
}> {
  override get message(): string {
    return `${this.call} failed: ${this.reason} (CUresult ${this.code}): ${this.detail}`
  }
}

/**
 * An allocation could not be served, even after the cache was emptied; or, with `deviceFree`
 * set, it was refused before any driver call because the device cannot hold it even with
 * everything the allocator caches given back (Note [Refusing what cannot fit] in
 * `adaptors/Admission.ts`).
 * @category errors
 */
export class OutOfMemoryError extends Data.TaggedError("OutOfMemoryError")<{
  readonly requested: number
  readonly stream: number
  readonly reserved: number
  readonly free: number
  readonly largestFreeBlock: number
  readonly capacity: number
  /** Set when refused up front: the device's free memory (`cuMemGetInfo`) at the refusal. */
  readonly deviceFree?: number
}> {
  override get message(): string {
    if (this.deviceFree !== undefined) {
      return `out of memory: requested ${formatBytes(this.requested)} (${this.requested} B) on stream ${this.stream}, ` +
        `more than the device can hold: capacity ${formatBytes(this.capacity)} (${this.capacity} B), ` +
        `free ${formatBytes(this.deviceFree)} + ${formatBytes(this.reserved)} held by this allocator; ` +
        "refused before any driver call"
    }
    return `out of memory: requested ${formatBytes(this.requested)} (${this.requested} B) on stream ${this.stream}; ` +
      `reserved ${formatBytes(this.reserved)}, free in the allocator's cache ${formatBytes(this.free)}, ` +
      `largest free block ${formatBytes(this.largestFreeBlock)}, device capacity ${formatBytes(this.capacity)}`
  }
}

/**
 * A free (or another block operation) named a block that is not live: never allocated,
 * or already freed. The allocator's state is left untouched.
 * @category errors
 */
export class InvalidBlockError extends Data.TaggedError("InvalidBlockError")<{
  readonly block: number
  readonly operation: string
  readonly detail: string
}> {
  override get message(): string {
    // A value that is not a block id at all (null, a string...) has no number to show.
    return Number.isNaN(this.block)
      ? `${this.operation}: ${this.detail}`
      : `${this.operation} of block ${this.block}: ${this.detail}`
  }
}

/**
 * A request the allocator refuses before deciding anything (a size that is not a positive
 * integer, a stream that is not a non-negative integer).
 * @category errors
 */
export class InvalidRequestError extends Data.TaggedError("InvalidRequestError")<{
  readonly detail: string
}> {
  override get message(): string {
    return `invalid request: ${this.detail}`
  }
}
