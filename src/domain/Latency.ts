/**
 * What driver calls cost, so that a replay on the simulator can say how long its plan would keep
 * the real driver busy (`driverMicros`).
 *
 * Note [Driver-time model]
 * ------------------------
 * One figure per call kind undercounts the calls that matter by an order of magnitude: measured
 * on an NVIDIA H200 (driver 580; `bench/calibration/vmm-sizes-h200.jsonl` and the sweep in
 * `bench/results/2026-12-02-h200-driver-bill-before/calibration.jsonl`, both made by
 * `bench/gpu/calibrate.ts`), one `cuMemSetAccess` over a range costs 23-31 us *per mapping in
 * the range* (a range stitched from 64 chunks: 1.5-1.8 ms, and no cheaper than 64 calls of one
 * chunk each), unmapping costs 15-20 us per mapping, releasing a chunk grows with its bytes
 * (14 us at 2 MiB, 205-245 us at 512 MiB, 3.2-4.5 ms at 8 GiB) and so does creating one from
 * about 2 GiB up. So the model is:
 *
 * - `memCreate`, `memRelease`, `addressReserve`, `addressFree`, `memMap`: one call on one object
 *   of `bytes`: the table's figure at that size.
 * - `setAccess` and `memUnmap` over a range: the sum, over the mappings in the range, of the
 *   table's figure at each mapping's size (the stitched-range rows show no fixed part per call).
 * - Between the table's sizes the figure is interpolated linearly in bytes (the large-size costs
 *   are proportional to bytes); below the smallest it is the smallest's; beyond the largest it
 *   stays flat, but for create and release, whose last segment's slope continues.
 * - The figures' *shape* over sizes is the size sweep's; their *level* is what the calls cost in
 *   bulk, in a replay on the device (`driver-bill.sh`: the driver time measured around each call,
 *   by kind, over every bundled trace with gmlake and expandable): a create costs 14-19 us there
 *   against 22 us alone, a map 1.2-2.7 us against 2.9, a reservation 13-45 us against 3-10 (many
 *   ranges live), a set access about 30 us per 2 MiB mapping. With these levels the model was
 *   within 23% of the measured driver time of each of those 20 replays (it was 19% under to 36%
 *   over with the sweep's single-call figures; runs of the same replay differ by up to 30%).
 * - `memAlloc` and `memFree` (the native caching baseline's) were not measured on the H200: their
 *   H100 figures (54-118 us and 43-367 us at 2-512 MiB, through koffi, driver 580) stand, and
 *   stay flat beyond 512 MiB.
 *
 * The model knows nothing of synchronization; `bench/gpu/driver-bill.sh` compares it with the
 * driver time measured around every call of a replay on the GPU. It is one machine's level: on
 * three runs of the same afternoon, on the H200s lent to us, the same replays' driver time moved by
 * up to 40% (model/measured per run 0.87-1.17, 1.16-1.38 and 0.66-1.19; set access 22.6, 27.6 and
 * 32.4 us in the self-test), for both policies alike (`bench/results/2026-12-02-h200-rounds/`). So
 * compare policies by the model's ratio, which holds across machines, more than by its microseconds,
 * or measure the machine's own levels (Note [Host levels]).
 *
 * @since 0.1.0
 */
import type { DriverCallKind } from "./DriverPort.ts"

/** The sizes the model has a figure for, in MiB. @category models */
export const sweepMiB: ReadonlyArray<number> = [2, 8, 20, 32, 128, 512, 2048, 8192]

/**
 * Microseconds of one call on one object of each size of `sweepMiB` (one mapping for `setAccess`
 * and `memUnmap`), NVIDIA H200, driver 580 (Note [Driver-time model]).
 * @category models
 */
export const h200Model: Readonly<Record<Exclude<DriverCallKind, "memAlloc" | "memFree">, ReadonlyArray<number>>> = {
  memCreate: [15.5, 15.5, 15.5, 15.5, 17, 20, 120, 600],
  addressReserve: [20, 20, 20, 20, 20, 20, 20, 35],
  memMap: [1.8, 1.8, 1.8, 1.8, 1.8, 1.8, 2.2, 5],
  setAccess: [30, 30, 33, 42, 51, 63, 105, 300],
  memUnmap: [18, 19, 20, 27, 30, 33, 44, 98],
  addressFree: [3, 3, 3, 3, 3, 3, 3, 6],
  memRelease: [15, 22, 31, 39, 100, 225, 800, 3900]
}

/** Kinds whose cost keeps growing with bytes past the largest size (the rest stay flat). */
const growing: ReadonlySet<DriverCallKind> = new Set(["memCreate", "memRelease"])

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
export const rangeCallBase: Readonly<Record<"setAccess" | "memUnmap", number>> = { setAccess: 0, memUnmap: 0 }

const MIB = 1024 * 1024

/**
 * A host's level of each call kind against the model's: the factor its figures are multiplied by
 * (1 where a kind is absent). Measured by `gmlake calibrate` (Note [Host levels]).
 *
 * Note [Host levels]
 * ------------------
 * The model's figures are one machine's (Note [Driver-time model]); the H200s lent to us ran the
 * same replays' driver calls up to 40% faster or slower than each other, for every policy alike,
 * and one of them ran the same calls a fifth faster in the first seconds of a run than a minute
 * later. No one level can be within 25% of them all, so a user who wants the time on their
 * machine measures its level: `gmlake calibrate --device cuda [trace...]` replays their traces
 * (by default a synthetic workload) with gmlake and expandable on the GPU, times every driver
 * call, and writes, for each kind, the measured time over the model's over the warm rounds. A
 * replay given that file (`--driver-levels`) multiplies the model's figures by them, on the
 * simulator too: calibrate once on the GPU, compare policies and settings anywhere. The shape over
 * sizes stays the sweep's: a level scales a kind, it does not refit it.
 *
 * Checked on three H200 runs of every bundled trace (`bench/results/2026-12-02-h200-night/`,
 * `bench/results/2026-12-03-h200-levels/`, `bench/results/2026-12-03-h200-levels-2/`), with
 * levels fitted on the other four traces and applied to the fifth: the model was within 25% of
 * the measured driver time for 27 of the 30 trace, policy and run medians (worst 37%), against 25
 * of 30 at the model's own levels (worst 35%). The levels help, and the GPU's own drift bounds
 * them: within one run the host ran the same calls up to a third faster from one minute to the
 * next. Replayed with the traces interleaved in rounds instead (`bench/gpu/bill-rounds.sh`, each
 * trace's medians over the whole run's span), two H200 runs put every trace and policy within
 * 7.5% and 11.1% at leave-one-out levels and within 11.2% and 22.6% at the model's own
 * (`bench/results/2026-12-03-h200-lending/`, `bench/results/2026-12-03-h200-rounds/`): the misses
 * above were the drift between traces, not the model. The synthetic workload is a rough level: its tensors are small, and it measures the host
 * of its own moment (set access 0.76 in one run, 1.11 in the next).
 * @category models
 */
export type DriverLevels = Readonly<Partial<Record<DriverCallKind, number>>>

/**
 * Estimated microseconds for one call of `kind` on one object of `bytes` (for `setAccess` and
 * `memUnmap`: a range holding one mapping of `bytes`), at `levels` (Note [Host levels]).
 * @category models
 */
export const estimateMicros = (kind: DriverCallKind, bytes: number, levels?: DriverLevels): number =>
  (kind === "memAlloc" || kind === "memFree"
    ? interpolate(classicMiB, h100Classic[kind], bytes / MIB, false)
    : interpolate(sweepMiB, h200Model[kind], bytes / MIB, growing.has(kind))) * (levels?.[kind] ?? 1)

/** Piecewise linear in size through the measured points (Note [Driver-time model]). */
const interpolate = (sizes: ReadonlyArray<number>, row: ReadonlyArray<number>, mib: number, grows: boolean): number => {
  const n = sizes.length
  if (!(mib > sizes[0]!)) return row[0]!
  if (mib > sizes[n - 1]! && !grows) return row[n - 1]!
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
export const estimateRangeMicros = (
  kind: "setAccess" | "memUnmap",
  mappingBytes: ReadonlyArray<number>,
  levels?: DriverLevels
): number => {
  const base = rangeCallBase[kind]
  let us = base
  for (const b of mappingBytes) us += estimateMicros(kind, b, levels) - base
  return us
}

/** Memo rows by granularity and levels, shared by every `LatencyTable` (Note [Shared latency memo]). */
const memos = new Map<string, Record<DriverCallKind, LatencyRow>>()

/** Sizes below this many granules are memoized in a typed array; larger ones in a map. */
const SMALL = 2048

/**
 * The memo of one call kind (Note [Shared latency memo]): `estimateMicros(kind, bytes)` for sizes
 * of whole granules, up to 64 Ki granules.
 * @category constructors
 */
export class LatencyRow {
  private readonly kind: DriverCallKind
  private readonly granularity: number
  private readonly levels: DriverLevels | undefined
  /** By size in granules, below `SMALL`; NaN where not costed yet. */
  private readonly small: Float64Array
  /** Larger sizes, by granules. */
  private readonly large = new Map<number, number>()
  constructor(kind: DriverCallKind, granularity: number, levels?: DriverLevels) {
    this.kind = kind
    this.granularity = granularity
    this.levels = levels
    this.small = new Float64Array(SMALL).fill(Number.NaN)
  }
  micros(bytes: number): number {
    const g = bytes / this.granularity
    if (g > 0 && g < SMALL && Number.isInteger(g)) {
      const v = this.small[g]!
      if (v === v) return v
      const us = estimateMicros(this.kind, bytes, this.levels)
      this.small[g] = us
      return us
    }
    if (!(g > 0 && g < 65536 && Number.isInteger(g))) return estimateMicros(this.kind, bytes, this.levels)
    const v = this.large.get(g)
    if (v !== undefined) return v
    const us = estimateMicros(this.kind, bytes, this.levels)
    this.large.set(g, us)
    return us
  }
}

/**
 * A memo of `estimateMicros` by size in granules, for the metering hot path: sizes repeat (a
 * trace uses a handful of chunk sizes), and a lookup is cheaper than the interpolation.
 *
 * Note [Shared latency memo]
 * --------------------------
 * Every replay builds a fresh metering port, and so a fresh table; a table of its own started
 * cold each time and, as JS arrays indexed by granules (a segment's reservation is tens of
 * thousands of granules), fell into V8's dictionary mode on its first large size. The figures
 * depend only on the call kind and the size, so the tables of one granularity share one memo,
 * and a replay finds every size it has seen before already costed. Each kind has a row of its
 * own (`row`), which the metering port holds in a field per kind, so that its calls are
 * monomorphic and need no lookup by kind; a row keeps sizes under 2,048 granules (4 GiB at
 * 2 MiB: every chunk and mapping size a policy makes) in a typed array, which cannot fall into
 * dictionary mode and is read without hashing, and larger ones (reservations) in a map keyed by
 * granules (small integers, hashed fast).
 * @category constructors
 */
export class LatencyTable {
  private readonly rows: Record<DriverCallKind, LatencyRow>
  /** `levels`: a host's (Note [Host levels]); the model's own figures when absent. */
  constructor(granularity: number, levels?: DriverLevels) {
    const key = levels === undefined ? String(granularity) : `${granularity} ${JSON.stringify(levels)}`
    let rows = memos.get(key)
    if (rows === undefined) {
      const row = (kind: DriverCallKind) => new LatencyRow(kind, granularity, levels)
      rows = {
        memCreate: row("memCreate"),
        memRelease: row("memRelease"),
        addressReserve: row("addressReserve"),
        addressFree: row("addressFree"),
        memMap: row("memMap"),
        memUnmap: row("memUnmap"),
        setAccess: row("setAccess"),
        memAlloc: row("memAlloc"),
        memFree: row("memFree")
      }
      memos.set(key, rows)
    }
    this.rows = rows
  }
  /** The memo of one kind. */
  row(kind: DriverCallKind): LatencyRow {
    return this.rows[kind]
  }
  /** `estimateMicros(kind, bytes)`, memoized for sizes of up to 64 Ki granules. */
  micros(kind: DriverCallKind, bytes: number): number {
    return this.rows[kind].micros(bytes)
  }
}

/**
 * A host's levels from replays timed on it (Note [Host levels]): for each call kind, the driver
 * time measured over all `runs` over the model's for the same calls (at the model's own levels).
 * A kind the runs never called, or called for less than `minMicros` of the model's time in all
 * (too little to tell a level from timer noise), has no level: the model's figure stands.
 * @category models
 */
export const fitLevels = (
  runs: ReadonlyArray<{
    readonly measured: Readonly<Partial<Record<DriverCallKind, number>>>
    readonly model: Readonly<Partial<Record<DriverCallKind, number>>>
  }>,
  minMicros = 1000
): Partial<Record<DriverCallKind, number>> => {
  const measured: Partial<Record<DriverCallKind, number>> = {}
  const model: Partial<Record<DriverCallKind, number>> = {}
  for (const r of runs) {
    for (const [k, v] of Object.entries(r.model) as Array<[DriverCallKind, number]>) model[k] = (model[k] ?? 0) + v
    for (const [k, v] of Object.entries(r.measured) as Array<[DriverCallKind, number]>) measured[k] = (measured[k] ?? 0) + v
  }
  const levels: Partial<Record<DriverCallKind, number>> = {}
  for (const [k, us] of Object.entries(model) as Array<[DriverCallKind, number]>) {
    const m = measured[k] ?? 0
    if (us >= minMicros && m > 0) levels[k] = Math.round((m / us) * 1000) / 1000
  }
  return levels
}
