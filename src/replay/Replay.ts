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
import type { ByteVerifier } from "./Verify.ts"
import type { Allocator } from "../domain/Allocator.ts"
import { DriverError, OutOfMemoryError } from "../domain/Errors.ts"
import { Op, type Trace } from "../trace/Trace.ts"
import type { BlockId } from "../domain/Units.ts"
import { defaultSlices, type TimelineSample } from "./Timeline.ts"

/**
 * What the timeline reads at each slice's end: running totals (calls, modelled micros, stitches
 * so far) and the reserved bytes now and at most since the previous read. `read` starts a new
 * window for the peak.
 * @category models
 */
export interface TimelineProbe {
  read(): {
    readonly calls: number
    readonly micros: number
    readonly stitches: number
    readonly reserved: number
    readonly windowPeakReserved: number
  }
}

/** What a replay measured. @category models */
export interface ReplayOutcome {
  /** Allocation and free events performed (completions excluded). */
  readonly events: number
  readonly allocations: number
  readonly frees: number
  /**
   * Peak of the live requested bytes, counting every request the trace made, served or not
   * (Note [Requested and served]).
   */
  readonly peakRequested: number
  /** Peak of the live bytes of the requests that were served; `peakRequested` when none failed. */
  readonly peakServed: number
  /** Allocations the trace never freed, and their requested bytes (served or not). */
  readonly liveAtEnd: { readonly allocations: number; readonly bytes: number }
  /** Allocations that failed with out of memory, the device's own answer (no injected fault during them). */
  readonly ooms: number
  /** Allocations that failed while a driver fault was injected during them (`faultCount`). */
  readonly faultedAllocs: number
  /** Allocations that failed for any reason (out of memory, a driver fault). */
  readonly failedAllocs: number
  /** The first out-of-memory error, for the report. */
  readonly firstOom: OutOfMemoryError | undefined
  /** One sample per slice of the trace, when a probe was given (Note [Timeline sampling]). */
  readonly timeline: ReadonlyArray<TimelineSample>
}

const NONE = -1

/**
 * Note [Requested and served]
 * ---------------------------
 * The trace's peak of requested bytes is a property of the work, the same for every policy;
 * the bytes an allocator actually served fall short of it when requests fail. Both are kept:
 * `peakRequested` counts every request from its allocation to its free (a failed one too), and
 * `peakServed` only those served, which is what peak reserved holds. A failed allocation leaves
 * its requested size in its block slot, encoded below `NONE` (`FAILED - bytes`), so that its
 * free can take it off again without another column.
 */
const FAILED = -2

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
  /** Live requested bytes and allocations, served or not (Note [Requested and served]). */
  private requested = 0
  private requestedPeak = 0
  private requestedCount = 0
  private events = 0
  private allocations = 0
  private frees = 0
  private ooms = 0
  private failed = 0
  private faulted = 0
  private firstOom: OutOfMemoryError | undefined
  private readonly faultCount: (() => number) | undefined
  /** The byte check, when asked for (Note [Replay byte check] in `Verify.ts`). */
  verifier: ByteVerifier | undefined

  // Note [Timeline sampling]
  // The loop stops at each slice boundary (`nextSample`) and reads the probe there, so the
  // per-event cost of the timeline is one comparison for the slice's peak of live bytes; the
  // probe's totals are differenced between samples.
  private readonly probe: TimelineProbe | undefined
  private readonly slices: number
  private readonly samples: Array<TimelineSample> = []
  private nextSample: number
  private windowPeak = 0
  private last = { calls: 0, micros: 0, stitches: 0, ooms: 0 }

  /**
   * `faultCount` (optional) reads the device's count of injected faults, so that an allocation
   * that failed because a fault was injected is told apart from one the device could not hold.
   */
  constructor(
    trace: Trace,
    allocator: Allocator,
    probe?: TimelineProbe,
    slices: number = defaultSlices,
    faultCount?: () => number
  ) {
    this.trace = trace
    this.allocator = allocator
    this.faultCount = faultCount
    this.blocks = new Float64Array(trace.allocs).fill(NONE)
    this.probe = probe
    this.slices = Math.max(1, Math.min(slices, trace.length))
    this.nextSample = probe === undefined ? Number.POSITIVE_INFINITY : this.sliceEnd(0)
    if (probe !== undefined) probe.read()
  }

  /** One past the last event of slice `k`. */
  private sliceEnd(k: number): number {
    return Math.round(this.trace.length * (k + 1) / this.slices)
  }

  private sample(): void {
    const p = this.probe!.read()
    const k = this.samples.length
    this.samples.push({
      endEvent: this.position,
      requested: this.live,
      peakRequested: this.windowPeak,
      reserved: p.reserved,
      peakReserved: p.windowPeakReserved,
      driverCalls: p.calls - this.last.calls,
      driverMicros: Math.round((p.micros - this.last.micros) * 10) / 10,
      stitches: p.stitches - this.last.stitches,
      ooms: this.ooms - this.last.ooms
    })
    this.last = { calls: p.calls, micros: p.micros, stitches: p.stitches, ooms: this.ooms }
    this.windowPeak = this.live
    this.nextSample = k + 1 < this.slices ? this.sliceEnd(k + 1) : Number.POSITIVE_INFINITY
  }

  /** Events in the trace. */
  get length(): number {
    return this.trace.length
  }

  get done(): boolean {
    return this.position >= this.trace.length
  }

  /**
   * Replays events up to (not including) `until`. `onEvent` (optional) runs after each event,
   * for invariant checks in tests.
   */
  run(until: number = this.trace.length, onEvent?: (index: number) => void): void {
    const end = Math.min(until, this.trace.length)
    while (this.position < end) {
      this.runTo(Math.min(end, this.nextSample), onEvent)
      if (this.position === this.nextSample) this.sample()
    }
    // An empty trace still gets its one sample.
    if (this.done && this.samples.length === 0 && this.probe !== undefined) this.sample()
  }

  // Note [Loop tail]
  // ----------------
  // V8 compiles this loop on-stack (OSR) during the first replay, before any code after the loop
  // has run; a property access there has no type feedback yet, so the compiled loop deoptimized
  // at its exit once per replay, and the replay's first slice ran in a lower tier (measured with
  // --trace-deopt: 24 deopts in 30 replays, all at the line that followed the loop). The loop
  // body already leaves `position` at `end`, so nothing follows it.
  private runTo(end: number, onEvent?: (index: number) => void): void {
    const { op, id, size, stream, deferred } = this.trace
    const blocks = this.blocks
    const allocator = this.allocator
    for (let i = this.position; i < end; i++) {
      const k = id[i]!
      switch (op[i]) {
        case Op.alloc: {
          this.events++
          const bytes = size[i]!
          // A zero-byte request gets no memory (PyTorch returns a null pointer): it counts as an
          // event but never reaches the allocator.
          if (bytes === 0) break
          this.requested += bytes
          this.requestedCount++
          if (this.requested > this.requestedPeak) this.requestedPeak = this.requested
          const faultsBefore = this.faultCount === undefined ? 0 : this.faultCount()
          try {
            blocks[k] = allocator.malloc(bytes, stream[i]!)
            this.allocations++
            this.live += bytes
            if (this.live > this.windowPeak) {
              this.windowPeak = this.live
              if (this.live > this.peak) this.peak = this.live
            }
          } catch (e) {
            if (!(e instanceof OutOfMemoryError || e instanceof DriverError)) throw e
            blocks[k] = FAILED - bytes
            this.failed++
            if (this.faultCount !== undefined && this.faultCount() > faultsBefore) this.faulted++
            else if (e instanceof OutOfMemoryError) {
              this.ooms++
              if (this.firstOom === undefined) this.firstOom = e
            }
          }
          // outside the try: a failed check is the check's failure, not a failed allocation
          if (this.verifier !== undefined && blocks[k]! >= 0) {
            this.verifier.allocated(k, allocator.address(blocks[k] as BlockId), bytes, stream[i]!)
          }
          break
        }
        case Op.free: {
          this.events++
          const b = blocks[k]!
          if (b === NONE) break
          this.requestedCount--
          if (b <= FAILED) {
            this.requested -= FAILED - b
            blocks[k] = NONE
            break
          }
          const bytes = allocator.size(b as BlockId)
          this.live -= bytes
          this.requested -= bytes
          if (this.verifier !== undefined) this.verifier.freeing(k, allocator.address(b as BlockId), bytes, stream[i]!)
          allocator.free(b as BlockId, deferred[k] === 1)
          this.frees++
          if (deferred[k] !== 1) blocks[k] = NONE
          break
        }
        case Op.complete: {
          const b = blocks[k]!
          if (b <= NONE) break
          allocator.complete(b as BlockId)
          blocks[k] = NONE
          break
        }
      }
      this.position = i + 1
      if (onEvent !== undefined) onEvent(i)
    }
    // Nothing after the loop: the loop leaves `position` at `end`. Note [Loop tail]
  }

  outcome(): ReplayOutcome {
    return {
      events: this.events,
      allocations: this.allocations,
      frees: this.frees,
      peakRequested: this.requestedPeak,
      peakServed: this.peak,
      liveAtEnd: { allocations: this.requestedCount, bytes: this.requested },
      ooms: this.ooms,
      faultedAllocs: this.faulted,
      failedAllocs: this.failed,
      firstOom: this.firstOom,
      timeline: this.samples
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
  onEvent?: (index: number) => void,
  probe?: TimelineProbe
): ReplayOutcome => {
  const r = new Replayer(trace, allocator, probe)
  r.run(trace.length, onEvent)
  return r.outcome()
}
