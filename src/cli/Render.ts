/**
 * What the command line prints about replays: one unit for every size (binary: KiB, MiB, GiB,
 * as the device's capacity and granularity are), a comparison column that names what it compares
 * with, and failed runs marked as such (Note [Failed runs]).
 *
 * Note [Failed runs]
 * ------------------
 * A replay in which allocations failed did not serve the trace: its peak reserved is the peak of
 * a different, smaller workload, and its utilization can read 1.0 when nothing was served at all.
 * So such a run is an error (exit 3) whose table shows no utilization, unless the user asked for
 * the failures to be counted (`--count-ooms`); then the figures are printed with the failures and
 * the utilization is marked as not a result (`*` in tables, `complete: false` in JSON). Failures
 * are told apart by cause: out of memory (the device could not hold the request) and injected
 * driver faults (`--inject-faults`, the device was not full).
 *
 * @since 0.1.0
 */
import { formatBytes } from "../domain/Units.ts"
import type { ReplayReport } from "../replay/ReplayRunner.ts"
import type { Trace } from "../trace/Trace.ts"
import { renderTable } from "./Table.ts"

/** A size for people, in binary units (the one unit of every table and message). @category formatting */
export const formatSize = (n: number): string => formatBytes(n)

/** Whether every allocation of a replay was served. @category models */
export const isComplete = (r: ReplayReport): boolean => r.failedAllocs === 0

/** The recorded PyTorch figure the comparison column uses, and its label. */
const baseline = (trace: Trace): { readonly label: string; readonly bytes: number } | undefined =>
  trace.expandable !== undefined
    ? { label: "vs expandable", bytes: trace.expandable.peakReserved }
    : trace.native !== undefined
    ? { label: "vs native", bytes: trace.native.peakReserved }
    : undefined

const pct = (x: number) => `${x >= 0 ? "+" : ""}${(x * 100).toFixed(1)}%`

/** The heading of a trace's table: what it is and what PyTorch recorded for it. @category formatting */
export const traceHeading = (
  t: Trace,
  peakRequested: number,
  liveAtEnd?: { readonly allocations: number; readonly bytes: number }
): string => {
  const n = t.native
  const x = t.expandable
  const anchors = [
    n ? `native ${formatSize(n.peakReserved)} (util ${(n.peakRequested / n.peakReserved).toFixed(4)})` : undefined,
    x ? `expandable_segments ${formatSize(x.peakReserved)} (util ${(x.peakRequested / x.peakReserved).toFixed(4)})` : undefined
  ].filter((s) => s !== undefined)
  const live = liveAtEnd !== undefined && liveAtEnd.allocations > 0
    ? `; ${liveAtEnd.allocations} allocation(s), ${formatSize(liveAtEnd.bytes)}, still live at the end`
    : ""
  return `${t.workload}: ${t.length} events, peak requested ${formatSize(peakRequested)}${live}` +
    (anchors.length > 0 ? `\n  recorded by PyTorch: ${anchors.join(", ")}` : "")
}

/**
 * The table of replays of one trace. The comparison column is peak reserved against PyTorch's
 * recorded expandable_segments peak (or the native one when the trace has only that).
 * @category formatting
 */
export const replayTable = (trace: Trace, reports: ReadonlyArray<ReplayReport>): string => {
  const base = baseline(trace)
  const header = [
    "policy",
    "peak reserved",
    "util",
    ...(base ? [base.label] : []),
    "ns/event",
    "driver calls",
    "driver ms (model)",
    "stitches",
    "hits",
    "failed allocs"
  ]
  const rows = reports.map((r) => {
    const done = isComplete(r)
    return [
      r.policy,
      formatSize(r.peakReserved),
      done ? r.utilization.toFixed(4) : `${r.utilization.toFixed(4)}*`,
      ...(base ? [done ? pct(r.peakReserved / base.bytes - 1) : "-"] : []),
      r.nsPerOp.toFixed(0),
      String(r.driverCallsTotal),
      (r.driverMicros / 1000).toFixed(1),
      String(r.stitches),
      String(r.cachedStitchHits),
      String(r.failedAllocs)
    ]
  })
  return renderTable(header, rows)
}

/** Driver calls made in the second half of the trace's events, by the timeline. @category formatting */
export const secondHalfCalls = (r: ReplayReport): number => {
  const n = r.timeline.length
  let calls = 0
  for (let k = Math.floor(n / 2); k < n; k++) calls += r.timeline[k]!.driverCalls
  return n === 1 ? 0 : calls
}

/** The timeline in one line: driver calls per slice, and the second half's total. @category formatting */
export const timelineLine = (r: ReplayReport): string =>
  `${r.policy}: driver calls per ${Math.round(100 / Math.max(1, r.timeline.length))}% of events: ` +
  r.timeline.map((s) => s.driverCalls).join(" ") + `; second half ${secondHalfCalls(r)}`

/** One line per failed replay: how many allocations failed, and why. @category formatting */
export const failureLines = (reports: ReadonlyArray<ReplayReport>): Array<string> =>
  reports.filter((r) => !isComplete(r)).map((r) => `${r.policy}: ${failureSummary(r)}`)

/** What failed in one replay, in words. @category formatting */
export const failureSummary = (r: ReplayReport): string => {
  const parts: Array<string> = []
  if (r.ooms > 0) parts.push(`${r.ooms} out of memory (first: ${r.firstOom ?? "?"})`)
  if (r.faultedAllocs > 0) parts.push(`${r.faultedAllocs} by injected driver faults (${r.driverFaults} injected)`)
  const other = r.failedAllocs - r.ooms - r.faultedAllocs
  if (other > 0) parts.push(`${other} by other driver failures`)
  return `${r.failedAllocs} allocation(s) failed: ${parts.join("; ")}`
}

/** The JSON line of a replay (Note [Failed runs]: `complete`). @category formatting */
export const replayJson = (r: ReplayReport, countOoms: boolean): string =>
  JSON.stringify({
    ...r,
    complete: isComplete(r),
    utilization: isComplete(r) || countOoms ? r.utilization : null
  })
