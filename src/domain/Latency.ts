/**
 * What driver calls cost, so that a replay on the simulator can say how long its plan would keep
 * the real driver busy (`driverMicros`).
 *
 * Note [Driver-time model]
 * ------------------------
 * One figure per call kind undercounts the calls that matter by an order of magnitude: measured
 * on an NVIDIA H200 (driver 580, `bench/calibration/vmm-sizes-h200.jsonl`, median of 5, made by
 * `bench/gpu/calibrate.ts`), one `cuMemSetAccess` over a range costs about 28 us *per mapping in
 * the range* (a range stitched from 64 chunks: 1.8 ms), unmapping costs ~20 us per mapping,
 * releasing a chunk grows with its bytes (14 us at 2 MiB, 245 us at 512 MiB, 4.5 ms at 8 GiB) and
 * so does creating one from about 1 GiB up (209 us at 2 GiB). So the model is:
 *
 * - `memCreate`, `memRelease`, `addressReserve`, `addressFree`, `memMap`: one call on one object
 *   of `bytes`: the sweep's figure at that size.
 * - `setAccess` and `memUnmap` over a range: a fixed part per call plus, for every mapping in the
 *   range, the sweep's single-mapping figure at that mapping's size less the fixed part. The
 *   fixed part of set access (3.7 us) is the least-squares fit of the stitched-range rows
 *   (N = 1, 8, 64, 256 chunks of 2 MiB: model within 13% of each); unmap's rows show no fixed
 *   part (~20 us per chunk at every N), so it is 0.
 * - Between measured sizes the figure is interpolated linearly in bytes (the large-size costs are
 *   proportional to bytes); below the smallest it is the smallest's; beyond the largest the last
 *   segment's slope continues (clamped to be no less than the largest's figure).
 * - `memAlloc` and `memFree` (the native caching baseline's) were not in the H200 sweep: their
 *   H100 figures (54-118 us and 43-367 us at 2-512 MiB, through koffi, driver 580) stand, and
 *   stay flat beyond 512 MiB.
 *
 * The model knows nothing of koffi's own overhead (~0.1-0.4 us per call) or of synchronization;
 * `bench/gpu/driver-bill.sh` compares it with the driver time measured around every call of a
 * replay on the GPU.
 *
 * @since 0.1.0
 */
import type { DriverCallKind } from "./DriverPort.ts"

/** The sizes of the sweep, in MiB. @category models */
export const sweepMiB: ReadonlyArray<number> = [2, 8, 32, 128, 512, 2048, 8192]

/**
 * Median microseconds of one call on one object of each size of `sweepMiB` (one mapping for
 * `setAccess` and `memUnmap`), H200, driver 580.
 * @category models
 */
export const h200Sweep: Readonly<Record<Exclude<DriverCallKind, "memAlloc" | "memFree">, ReadonlyArray<number>>> = {
  memCreate: [21.6, 21.9, 18.5, 16.9, 23.5, 209.2, 783.1],
  addressReserve: [2.8, 2.9, 5.7, 4.1, 4.6, 6.6, 12],
  memMap: [2.9, 3, 2.2, 2.3, 1.9, 2.6, 5.4],
  setAccess: [31.2, 29.8, 47, 51, 63.3, 118.6, 348.8],
  memUnmap: [19.6, 20.8, 26.9, 27.5, 31.2, 45.6, 101.5],
  addressFree: [1.7, 1.8, 3.6, 3.2, 3.3, 4.6, 7.3],
  memRelease: [13.8, 19.5, 38.9, 94.1, 244.7, 1043.4, 4548.9]
}

/** The sizes of the H100 measurement of classic allocations, in MiB. @category models */
export const classicMiB: ReadonlyArray<number> = [2, 16, 64, 512]

/**
 * Median microseconds of `cuMemAlloc` / `cuMemFree` at each size of `classicMiB`, H100, driver 580.
 * @category models
 */
export const h100Classic: Readonly<Record<"memAlloc" | "memFree", ReadonlyArray<number>>> = {
  memAlloc: [54, 55, 74, 118],
  memFree: [43, 58, 89, 367]
}

/**
 * The fixed part of one `setAccess` / `memUnmap` call, microseconds (Note [Driver-time model]).
 * @category models
 */
export const rangeCallBase: Readonly<Record<"setAccess" | "memUnmap", number>> = { setAccess: 3.7, memUnmap: 0 }

const MIB = 1024 * 1024

/**
 * Estimated microseconds for one call of `kind` on one object of `bytes` (for `setAccess` and
 * `memUnmap`: a range holding one mapping of `bytes`).
 * @category models
 */
export const estimateMicros = (kind: DriverCallKind, bytes: number): number =>
  kind === "memAlloc" || kind === "memFree"
    ? interpolate(classicMiB, h100Classic[kind], bytes / MIB)
    : interpolate(sweepMiB, h200Sweep[kind], bytes / MIB)

/** Piecewise linear in size through the measured points (Note [Driver-time model]). */
const interpolate = (sizes: ReadonlyArray<number>, row: ReadonlyArray<number>, mib: number): number => {
  const n = sizes.length
  if (!(mib > sizes[0]!)) return row[0]!
  for (let i = 1; i < n; i++) {
    const hi = sizes[i]!
    if (mib <= hi || i === n - 1) {
      const lo = sizes[i - 1]!
      const v = row[i - 1]! + (mib - lo) / (hi - lo) * (row[i]! - row[i - 1]!)
      return mib > hi ? Math.max(v, row[i]!) : v
    }
  }
  return row[n - 1]!
}

/**
 * Estimated microseconds of one `setAccess` or `memUnmap` over a range whose mappings have the
 * sizes `mappingBytes` (Note [Driver-time model]).
 * @category models
 */
export const estimateRangeMicros = (kind: "setAccess" | "memUnmap", mappingBytes: ReadonlyArray<number>): number => {
  const base = rangeCallBase[kind]
  let us = base
  for (const b of mappingBytes) us += estimateMicros(kind, b) - base
  return us
}

/**
 * A memo of `estimateMicros` by size in granules, for the metering hot path: sizes repeat (a
 * trace uses a handful of chunk sizes), and an array read is cheaper than the interpolation.
 * @category constructors
 */
export class LatencyTable {
  private readonly granularity: number
  private readonly memo: Record<DriverCallKind, Array<number>> = {
    memCreate: [],
    memRelease: [],
    addressReserve: [],
    addressFree: [],
    memMap: [],
    memUnmap: [],
    setAccess: [],
    memAlloc: [],
    memFree: []
  }
  constructor(granularity: number) {
    this.granularity = granularity
  }
  /** `estimateMicros(kind, bytes)`, memoized for sizes of up to 64 Ki granules. */
  micros(kind: DriverCallKind, bytes: number): number {
    const g = bytes / this.granularity
    if (!(g > 0 && g < 65536 && Number.isInteger(g))) return estimateMicros(kind, bytes)
    const row = this.memo[kind]
    const v = row[g]
    if (v !== undefined) return v
    return row[g] = estimateMicros(kind, bytes)
  }
}
