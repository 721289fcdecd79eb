/**
 * The contract every allocator policy implements: the PyTorch baselines (`caching`,
 * `expandable`) and the stitching allocator (`gmlake`).
 *
 * An allocator is a synchronous object over a `DriverPort` (see Note [Plans as a dialogue] in
 * `DriverPort.ts`). It owns its state and mutates it in place: the replay of a trace performs
 * about a hundred thousand operations and must stay well under a microsecond each, which
 * persistent data structures would not allow (an immutable map update costs more than a
 * whole operation here). It does no I/O but through
 * the port, reads no clock and no global configuration: its configuration is a value passed to
 * its constructor.
 *
 * Methods throw the typed errors of `Errors.ts`; the Effect services turn them into typed
 * failures. A method that throws leaves the allocator consistent: a failed `malloc` allocates
 * nothing, a bad `free` changes nothing.
 *
 * @since 0.1.0
 */
import type { Address, BlockId } from "./Units.ts"

/** The policies the project ships. @category models */
export type PolicyName = "caching" | "expandable" | "gmlake"

/** All policies, in the order tables show them. @category models */
export const policyNames: ReadonlyArray<PolicyName> = ["caching", "expandable", "gmlake"]

/**
 * Counters a policy keeps about its own decisions. Baselines report zeros for what they never do.
 * @category models
 */
export interface PolicyCounters {
  /** New stitched views built (a fresh virtual range mapping chunks of other blocks). */
  readonly stitches: number
  /** Chunk mappings made for stitched views. */
  readonly stitchedChunks: number
  /** Requests served by a cached stitched view, with no driver call. */
  readonly cachedStitchHits: number
  /** Cached stitched views dropped (unmapped and their range freed). */
  readonly evictions: number
  /** Segments (or chunks) given back to the driver to make room before an out-of-memory. */
  readonly releasedForPressure: number
}

/** @category constructors */
export const zeroCounters: PolicyCounters = {
  stitches: 0,
  stitchedChunks: 0,
  cachedStitchHits: 0,
  evictions: 0,
  releasedForPressure: 0
}

/**
 * A device memory allocator.
 * @category models
 */
export interface Allocator {
  readonly policy: PolicyName
  /**
   * Allocates at least `size` bytes (a positive integer) for use on `stream`.
   * Throws `OutOfMemoryError` (after trying everything the policy can), `InvalidRequestError`,
   * or `DriverError` when the driver failed in a way the policy cannot recover from.
   */
  malloc(size: number, stream: number): BlockId
  /**
   * Frees a live block. With `deferred`, the block's memory is not handed out again until
   * `complete(block)` is called (PyTorch's `record_stream`: events guarding the block on other
   * streams are still pending). Throws `InvalidBlockError` for a block that is not live.
   */
  free(block: BlockId, deferred?: boolean): void
  /** The events guarding a deferred free have completed: its memory may be reused. */
  complete(block: BlockId): void
  /** The device address of a live block (`InvalidBlockError` for a block that is not live). */
  address(block: BlockId): Address
  /** The requested size of a live block (`InvalidBlockError` for a block that is not live). */
  size(block: BlockId): number
  /** Gives every cached, unused chunk, segment and stitched view back to the driver. */
  emptyCache(): void
  /** Bytes of physical memory the allocator holds now (its own accounting). */
  reserved(): number
  /** The policy's decision counters. */
  counters(): PolicyCounters
}
