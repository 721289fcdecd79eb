/**
 * Replaying a trace through an allocator: the benchmark's inner loop, shared by every policy so
 * that their figures are comparable. Pure: timing and the device are the caller's.
 *
 * A `Replayer` advances in slices (`run(until)`), so that an Effect program can yield between
 * slices and be interrupted (Ctrl-C during a replay on the GPU) without the hot loop paying for
 * an Effect per event.
 *
 * @since 0.1.0
 */
import type { Allocator } from "../domain/Allocator.ts"
import { DriverError, OutOfMemoryError } from "../domain/Errors.ts"
import { Op, type Trace } from "../trace/Trace.ts"
import type { BlockId } from "../domain/Units.ts"

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
 * Replays the request events of a trace through an allocator. An allocation that fails with out
 * of memory or a driver error is counted and its later free and completion are skipped; any other
 * error (a policy bug) propagates.
 * @category replay
 */
export class Replayer {
  /** Index of the next event to replay. */
  position = 0
  private readonly trace: Trace
  private readonly allocator: Allocator
  private readonly blocks: Float64Array
  private live = 0
  private peak = 0
  private events = 0
  private allocations = 0
  private frees = 0
  private ooms = 0
  private failed = 0
  private firstOom: OutOfMemoryError | undefined

  constructor(trace: Trace, allocator: Allocator) {
    this.trace = trace
    this.allocator = allocator
    this.blocks = new Float64Array(trace.allocs).fill(NONE)
  }

  get done(): boolean {
    return this.position >= this.trace.length
  }

  /**
   * Replays events up to (not including) `until`. `onEvent` (optional) runs after each event,
   * for invariant checks in tests.
   */
  run(until: number = this.trace.length, onEvent?: (index: number) => void): void {
    const { op, id, size, stream, deferred } = this.trace
    const blocks = this.blocks
    const allocator = this.allocator
    const end = Math.min(until, this.trace.length)
    for (let i = this.position; i < end; i++) {
      const k = id[i]!
      switch (op[i]) {
        case Op.alloc: {
          this.events++
          const bytes = size[i]!
          // A zero-byte request gets no memory (PyTorch returns a null pointer): it counts as an
          // event but never reaches the allocator.
          if (bytes === 0) break
          try {
            blocks[k] = allocator.malloc(bytes, stream[i]!)
            this.allocations++
            this.live += bytes
            if (this.live > this.peak) this.peak = this.live
          } catch (e) {
            if (e instanceof OutOfMemoryError) {
              this.ooms++
              this.failed++
              if (this.firstOom === undefined) this.firstOom = e
            } else if (e instanceof DriverError) this.failed++
            else throw e
          }
          break
        }
        case Op.free: {
          this.events++
          const b = blocks[k]!
          if (b === NONE) break
          this.live -= allocator.size(b as BlockId)
          allocator.free(b as BlockId, deferred[k] === 1)
          this.frees++
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
      this.position = i + 1
      if (onEvent !== undefined) onEvent(i)
    }
    this.position = Math.max(this.position, end)
  }

  outcome(): ReplayOutcome {
    return {
      events: this.events,
      allocations: this.allocations,
      frees: this.frees,
      peakRequested: this.peak,
      ooms: this.ooms,
      failedAllocs: this.failed,
      firstOom: this.firstOom
    }
  }
}

/**
 * Replays every request event of `trace` through `allocator` in one go.
 * @category replay
 */
export const replayTrace = (
  trace: Trace,
  allocator: Allocator,
  onEvent?: (index: number) => void
): ReplayOutcome => {
  const r = new Replayer(trace, allocator)
  r.run(trace.length, onEvent)
  return r.outcome()
}
