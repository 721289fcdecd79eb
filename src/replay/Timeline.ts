/**
 * The replay's timeline: what the allocator held and what it asked of the driver, slice by slice
 * of a trace, so that warm-up and steady state can be seen (the report's charts) and tested (a
 * steady state makes no driver calls).
 *
 * A trace of `n` events is cut into `slices` consecutive slices of about `n / slices` events each;
 * one sample per slice. Counts (`driverCalls`, `driverMicros`, `stitches`, `ooms`) are what
 * happened within the slice; byte figures are the state at the slice's end and the peak within it.
 *
 * @since 0.2.0
 */

/** One slice of a replay. @category models */
export interface TimelineSample {
  /** Index one past the last event of the slice (the first slice starts at event 0). */
  readonly endEvent: number
  /** Live requested bytes at the end of the slice. */
  readonly requested: number
  /** Highest live requested bytes within the slice. */
  readonly peakRequested: number
  /** Reserved (physical) bytes at the end of the slice. */
  readonly reserved: number
  /** Highest reserved bytes within the slice. */
  readonly peakReserved: number
  /** Driver calls made within the slice (every kind). */
  readonly driverCalls: number
  /** Modelled driver time of those calls, in microseconds. */
  readonly driverMicros: number
  /** Stitched views built within the slice (0 for policies that never stitch). */
  readonly stitches: number
  /** Allocations refused with out-of-memory within the slice. */
  readonly ooms: number
}

/** A replay's timeline: its samples in trace order. @category models */
export type Timeline = ReadonlyArray<TimelineSample>

/** Slices a replay records by default: one per 5% of the trace. @category constructors */
export const defaultSlices = 20
