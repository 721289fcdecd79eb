/**
 * Replaying a trace through an allocator: the benchmark's inner loop, shared by every policy so
 * that their figures are comparable. Pure: timing and the device are the caller's.
 *
 * @since 0.1.0
 */
import type { Allocator } from "./Allocator.ts"
import { DriverError, OutOfMemoryError } from "./Errors.ts"
import { Op, type Trace } from "./Trace.ts"
import type { BlockId } from "./Units.ts"

/** What a replay measured. @category models */
export interface ReplayOutcome {
  /** Allocation and free events performed (completions excluded). */
  readonly events: number
  readonly allocations: number
  readonly frees: number
  /** Peak of the live requested bytes. */
  readonly peakRequested: number
  /** Allocations that failed with out of memory. */
  readonly ooms: number
  /** Allocations that failed for any reason (out of memory, a driver fault). */
  readonly failedAllocs: number
  /** The first out-of-memory error, for the report. */
  readonly firstOom: OutOfMemoryError | undefined
}

const NONE = -1

/**
 * Replays every request event of `trace` through `allocator`. An allocation that fails with
 * out of memory or a driver error is counted and its later free and completion are skipped;
 * any other error (a policy bug) propagates.
 * `onEvent` (optional) runs after each request event, for invariant checks in tests.
 * @category replay
 */
export const replayTrace = (
  trace: Trace,
  allocator: Allocator,
  onEvent?: (index: number) => void
): ReplayOutcome => {
  const blocks = new Float64Array(trace.allocs).fill(NONE)
  const { op, id, size, stream, deferred } = trace
  let live = 0
  let peak = 0
  let events = 0
  let allocations = 0
  let frees = 0
  let ooms = 0
  let failed = 0
  let firstOom: OutOfMemoryError | undefined
  for (let i = 0; i < trace.length; i++) {
    const k = id[i]!
    switch (op[i]) {
      case Op.alloc: {
        events++
        const bytes = size[i]!
        // A zero-byte request gets no memory (PyTorch returns a null pointer): it counts as an
        // event but never reaches the allocator.
        if (bytes === 0) break
        try {
          blocks[k] = allocator.malloc(bytes, stream[i]!)
          allocations++
          live += bytes
          if (live > peak) peak = live
        } catch (e) {
          if (e instanceof OutOfMemoryError) {
            ooms++
            failed++
            if (firstOom === undefined) firstOom = e
          } else if (e instanceof DriverError) failed++
          else throw e
        }
        break
      }
      case Op.free: {
        events++
        const b = blocks[k]!
        if (b === NONE) break
        live -= allocator.size(b as BlockId)
        allocator.free(b as BlockId, deferred[k] === 1)
        frees++
        if (deferred[k] !== 1) blocks[k] = NONE
        break
      }
      case Op.complete: {
        const b = blocks[k]!
        if (b === NONE) break
        allocator.complete(b as BlockId)
        blocks[k] = NONE
        break
      }
    }
    if (onEvent !== undefined) onEvent(i)
  }
  return { events, allocations, frees, peakRequested: peak, ooms, failedAllocs: failed, firstOom }
}
