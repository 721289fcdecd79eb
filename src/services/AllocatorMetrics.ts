/**
 * The allocator's counters as Effect metrics, for whatever exports the application's metrics
 * (Prometheus, OpenTelemetry): gauges for the current and peak bytes, counters for the events.
 *
 * Publishing is explicit (`publishMetrics`), not per allocation: the hot path stays a plain
 * synchronous call (the statistics adaptor counts), and an application publishes when it
 * samples, at the cost of one snapshot. Counters advance by what changed since the last
 * publication of the same allocator.
 *
 * @since 0.1.0
 */
import { Effect, Metric } from "effect"
import type { AllocatorStats, StatsAllocator } from "../domain/adaptors/Stats.ts"
import { GpuAllocator } from "./Allocator.ts"

const gauge = (name: string, description: string) => Metric.gauge(name, { description })
const counter = (name: string, description: string) => Metric.counter(name, { description, incremental: true })

/**
 * The metrics, named after PyTorch's `memory_stats()` keys (Note [PyTorch's stat names]), with a
 * `policy` attribute.
 * @category metrics
 */
export const allocatorMetrics = {
  requestedCurrent: gauge("gmlake_requested_bytes_current", "bytes requested by live allocations"),
  requestedPeak: gauge("gmlake_requested_bytes_peak", "peak of the bytes requested by live allocations"),
  reservedCurrent: gauge("gmlake_reserved_bytes_current", "physical bytes held from the driver"),
  reservedPeak: gauge("gmlake_reserved_bytes_peak", "peak of the physical bytes held from the driver"),
  allocations: counter("gmlake_allocations_total", "successful allocations"),
  frees: counter("gmlake_frees_total", "frees"),
  ooms: counter("gmlake_ooms_total", "out-of-memory errors"),
  stitches: counter("gmlake_stitches_total", "stitched views built"),
  cachedStitchHits: counter("gmlake_cached_stitch_hits_total", "requests served by a cached stitched view"),
  evictions: counter("gmlake_stitch_evictions_total", "cached stitched views dropped"),
  releasedForPressure: counter("gmlake_released_for_pressure_total", "memory given back to the driver before an out of memory")
} as const

const published = new WeakMap<StatsAllocator, AllocatorStats>()

/**
 * Publishes the current allocator's statistics to the metrics above.
 * @category metrics
 */
export const publishMetrics: Effect.Effect<void, never, GpuAllocator> = Effect.gen(function*() {
  const allocator = yield* GpuAllocator
  const s = yield* allocator.stats
  const before = published.get(allocator.core)
  published.set(allocator.core, s)
  const m = allocatorMetrics
  const tag = <A>(metric: Metric.Metric<A, unknown>) => Metric.withAttributes(metric, { policy: s.policy })
  const delta = (now: number, then: number | undefined) => now - (then ?? 0)
  yield* Metric.update(tag(m.requestedCurrent), s.requestedCurrent)
  yield* Metric.update(tag(m.requestedPeak), s.requestedPeak)
  yield* Metric.update(tag(m.reservedCurrent), s.reservedCurrent)
  yield* Metric.update(tag(m.reservedPeak), s.reservedPeak)
  yield* Metric.update(tag(m.allocations), delta(s.allocations, before?.allocations))
  yield* Metric.update(tag(m.frees), delta(s.frees, before?.frees))
  yield* Metric.update(tag(m.ooms), delta(s.ooms, before?.ooms))
  yield* Metric.update(tag(m.stitches), delta(s.counters.stitches, before?.counters.stitches))
  yield* Metric.update(tag(m.cachedStitchHits), delta(s.counters.cachedStitchHits, before?.counters.cachedStitchHits))
  yield* Metric.update(tag(m.evictions), delta(s.counters.evictions, before?.counters.evictions))
  yield* Metric.update(tag(m.releasedForPressure), delta(s.counters.releasedForPressure, before?.counters.releasedForPressure))
})
