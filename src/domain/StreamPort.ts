/**
 * The synchronous contract for streams and events, beside `DriverPort`: what cross-stream reuse
 * needs from a device (Note [Cross-stream reuse] in the stitching policy).
 *
 * Stream 0 is the default stream and always exists. Events are recorded on a stream and complete
 * once the work queued on that stream before them has run; `eventQuery` never blocks.
 *
 * @since 0.1.0
 */

/** @category models */
export interface StreamPort {
  /** A new stream (`cuStreamCreate`); its id is positive. */
  streamCreate(): number
  /** `cuStreamDestroy`. */
  streamDestroy(stream: number): void
  /** Waits for all work queued on `stream` (`cuStreamSynchronize`). */
  streamSynchronize(stream: number): void
  /** Records an event on `stream` now (`cuEventCreate` + `cuEventRecord`). */
  eventRecord(stream: number): number
  /**
   * Records existing event `event` again, now, on `stream` (`cuEventRecord`): it then completes
   * with that stream's work up to now, its earlier record forgotten. Optional: saves a create and a
   * destroy per event where a port has it.
   */
  eventRerecord?: ((event: number, stream: number) => void) | undefined
  /** Whether the event has completed (`cuEventQuery`), without blocking. */
  eventQuery(event: number): boolean
  /** Waits until the event has completed (`cuEventSynchronize`); valid after its stream is gone. */
  eventSynchronize(event: number): void
  /** `cuEventDestroy`. */
  eventDestroy(event: number): void
  /**
   * Whether `stream` names a live stream (0 always does), where the port can tell cheaply; the
   * allocator refuses a request on any other stream before it would record an event on it.
   */
  isStream?(stream: number): boolean
}
