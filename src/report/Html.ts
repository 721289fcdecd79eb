/**
 * The report as one self-contained HTML page: tables rendered here, charts drawn in the page by
 * uPlot (inlined) and `Client.client`. Pure: data and the chart library's text in, the page out.
 *
 * Note [Report page security]
 * ---------------------------
 * The page runs no code but its own: a Content-Security-Policy allows exactly the two inline
 * scripts (uPlot and the client) and the one inline style sheet, each by its SHA-256, and nothing
 * else: no network, no other script, no plugin, no form. The data travels as JSON in a
 * `<script type="application/json">` block (not executed); `<` is escaped there so that no value
 * (a workload name, a description) can close the block. Every text shown in the tables is
 * HTML-escaped.
 *
 * @since 0.2.0
 */
import { createHash } from "node:crypto"
import { formatBytes, formatGB } from "../domain/Units.ts"
import { client, type ClientData, type ClientPolicy } from "./Client.ts"
import type { PolicyRun, ReportData } from "./Report.ts"

/** The chart library's files, inlined into the page. @category models */
export interface ChartAssets {
  readonly script: string
  readonly css: string
}

const palette = ["#4269d0", "#ff725c", "#3ca951", "#efb118", "#a463f2", "#6cc5b0", "#ff8ab7", "#9c6b4e"]

const escape = (s: string): string =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#39;")

const sha256 = (text: string): string => `'sha256-${createHash("sha256").update(text, "utf8").digest("base64")}'`

const pct = (x: number): string => `${(x * 100).toFixed(1)}%`
const signedPct = (x: number): string => `${x >= 0 ? "+" : ""}${(x * 100).toFixed(1)}%`
const ms = (micros: number): string => `${(micros / 1000).toFixed(1)} ms`
const int = (n: number): string => n.toLocaleString("en-US")

const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>, cls = ""): string =>
  `<table${cls === "" ? "" : ` class="${cls}"`}><thead><tr>${header.map((h) => `<th>${escape(h)}</th>`).join("")}</tr></thead>` +
  `<tbody>${rows.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join("")}</tr>`).join("")}</tbody></table>`

const versus = (mine: number, theirs: number | undefined): string =>
  theirs === undefined || theirs === 0 ? "-" : escape(signedPct(mine / theirs - 1))

const comparisonTable = (data: ReportData): string => {
  // A column against each of PyTorch's modes the trace has figures for.
  const anchors = [
    { label: "PyTorch native", header: "vs PyTorch native", anchor: data.native },
    { label: "PyTorch expandable_segments", header: "vs expandable segments", anchor: data.expandable }
  ].flatMap((a) => (a.anchor === null ? [] : [{ ...a, anchor: a.anchor }]))
  const rows = data.runs.map((r) => [
    `<span class="swatch" data-policy="${escape(r.policy)}"></span>${escape(r.policy)}`,
    escape(formatGB(r.peakReserved)),
    escape(r.utilization.toFixed(4)),
    ...anchors.map((a) => versus(r.peakReserved, a.anchor.peakReserved)),
    escape(int(r.driverCalls)),
    escape(ms(r.driverMicros)),
    escape(int(r.stitches)),
    escape(int(r.ooms))
  ])
  for (const { label, anchor } of anchors) {
    rows.push([
      `${escape(label)} <em>(recorded)</em>`,
      escape(formatGB(anchor.peakReserved)),
      escape((anchor.peakRequested / anchor.peakReserved).toFixed(4)),
      ...anchors.map((b) => versus(anchor.peakReserved, b.anchor.peakReserved)),
      anchor.deviceAllocs === undefined ? "-" : `${escape(int(anchor.deviceAllocs))} <em>cudaMalloc</em>`,
      "-",
      "-",
      "-"
    ])
  }
  return table(
    ["policy", "peak reserved", "utilization", ...anchors.map((a) => a.header), "driver calls", "driver time (modelled)", "stitches", "OOMs"],
    rows,
    "comparison"
  )
}

const capacityRows = (data: ReportData, runs: ReadonlyArray<PolicyRun>): Array<Array<string>> =>
  runs.map((r) => [
    escape(r.policy),
    r.ooms === 0 ? `<strong class="ok">completes</strong>` : `<strong class="fail">out of memory</strong>`,
    escape(int(r.ooms)),
    r.firstOomBy === null ? "-" : escape(`by event ${int(r.firstOomBy)} (${pct(r.firstOomBy / Math.max(1, data.events))} of the trace)`),
    escape(formatGB(r.peakReserved))
  ])

const capacitySection = (data: ReportData): string => {
  const floor = Math.max(0, ...data.runs.map((r) => r.peakRequested))
  const intro = `<p>No allocator fits in less than the peak of requested bytes, ${escape(formatGB(floor))} ` +
    `(${escape(formatBytes(floor))}). Without memory pressure each policy reserves its peak above; on a smaller ` +
    `device a policy gives cached memory back and may still complete.</p>`
  if (data.capacities.length === 0) {
    return intro + `<p class="hint">Run with <code>--capacity 16GiB</code> (or several: <code>--capacity 12GiB,16GiB</code>) ` +
      `to replay every policy on a smaller simulated device and see which complete.</p>`
  }
  return intro + data.capacities.map((c, i) =>
    `<h3>On a ${escape(formatBytes(c.capacity))} device</h3>` +
    table(["policy", "result", "OOMs", "first out of memory", "peak reserved"], capacityRows(data, c.runs), "capacity") +
    `<div class="chart" id="chart-capacity-${i}"></div>`
  ).join("\n")
}

const clientPolicy = (r: PolicyRun, color: string): ClientPolicy => ({
  name: r.policy,
  color,
  reserved: r.timeline.map((s) => s.peakReserved),
  calls: r.timeline.map((s) => s.driverCalls),
  stitches: r.timeline.map((s) => s.stitches)
})

/** What the page's script gets. @category constructors */
export const clientData = (data: ReportData): ClientData => {
  const color = new Map(data.runs.map((r, i) => [r.policy, palette[i % palette.length]!]))
  const colorOf = (r: PolicyRun) => color.get(r.policy) ?? "#666"
  const first = data.runs[0]
  const lines = []
  // The recorded timeline already reaches its mode's peak; a flat line is drawn only for the other.
  if (data.native !== null && data.recorded?.mode !== "native") {
    lines.push({ label: "PyTorch native peak (recorded)", bytes: data.native.peakReserved, color: "#777" })
  }
  if (data.expandable !== null && data.recorded?.mode !== "expandable_segments") {
    lines.push({ label: "expandable_segments peak (recorded)", bytes: data.expandable.peakReserved, color: "#b38600" })
  }
  return {
    x: data.sliceEnds,
    requested: first === undefined ? [] : first.timeline.map((s) => s.peakRequested),
    recorded: data.recorded === null
      ? null
      : { label: `PyTorch ${data.recorded.mode} (recorded)`, values: data.recorded.peakReserved },
    lines,
    policies: data.runs.map((r) => clientPolicy(r, colorOf(r))),
    capacities: data.capacities.map((c) => ({ capacity: c.capacity, policies: c.runs.map((r) => clientPolicy(r, colorOf(r))) }))
  }
}

const style = `
:root { color-scheme: light; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "Liberation Sans", sans-serif; color: #1d1d1f; }
body { max-width: 1100px; margin: 24px auto; padding: 0 20px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 6px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
.meta { color: #555; margin: 0 0 12px; } .hint { color: #555; } code { background: #f3f3f3; padding: 1px 4px; border-radius: 3px; }
table { border-collapse: collapse; margin: 8px 0; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e5e5e5; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; } th { font-weight: 600; background: #fafafa; white-space: normal; vertical-align: bottom; }
.ok { color: #1a7f37; } .fail { color: #c62828; }
.chart { margin: 8px 0 4px; min-height: 300px; } .explain { color: #555; max-width: 900px; }
footer { color: #777; margin: 32px 0 0; font-size: 12px; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
`

/**
 * Renders the report page.
 * @category constructors
 */
export const render = (data: ReportData, assets: ChartAssets, generator: string): string => {
  const json = JSON.stringify(clientData(data)).replace(/</g, "\\u003c")
  const boot = `(${String(client)})(uPlot, JSON.parse(document.getElementById("report-data").textContent));`
  const swatches = data.runs.map((r, i) => `.swatch[data-policy="${r.policy}"] { background: ${palette[i % palette.length]}; }`)
  const css = `${assets.css}\n${style}\n${swatches.join("\n")}\n`
  const csp = [
    "default-src 'none'",
    `script-src ${sha256(assets.script)} ${sha256(boot)}`,
    `style-src ${sha256(css)}`,
    "img-src data:",
    "base-uri 'none'",
    "form-action 'none'"
  ].join("; ")
  const meta = [
    `${int(data.events)} events`,
    `${int(data.allocations)} allocations`,
    `${data.streams} stream${data.streams === 1 ? "" : "s"}`,
    data.recordedOn === null ? undefined : `recorded on ${data.recordedOn}`,
    `replayed on a ${data.simDevice}`
  ].filter((s) => s !== undefined).map(escape).join(" · ")
  const page = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="${escape(csp)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gmlake report: ${escape(data.workload)}</title>
<style>${css}</style>
</head>
<body>
<h1>gmlake report: ${escape(data.workload)}</h1>
<p class="meta">${escape(data.file)} · ${meta}</p>
${data.description === "" ? "" : `<p class="explain">${escape(data.description)}</p>`}
<h2>Memory over the trace</h2>
<p class="explain">The highest reserved bytes in each slice of the trace, per policy, against the requested bytes (the floor no allocator can go under)${
    data.recorded === null ? "" : " and what PyTorch itself reserved on the recorded run"
  }. Drag across a chart to zoom, double-click to reset; click a legend entry to hide it.</p>
<div class="chart" id="chart-memory"></div>
<h2>Against PyTorch</h2>
<p class="explain">Peak reserved bytes of each policy replayed here, and what PyTorch reserved on the recorded run (its default caching allocator, and with <code>expandable_segments</code>). Utilization is peak requested over peak reserved; driver time is modelled from measured per-call costs.</p>
${comparisonTable(data)}
<h2>Driver calls over the trace</h2>
<p class="explain">Calls to the CUDA driver made so far (creating, mapping, releasing memory): where a line is flat, the allocator served every request from what it held.</p>
<div class="chart" id="chart-calls"></div>
<h2>Stitches over the trace</h2>
<p class="explain">Stitched views built so far: free chunks mapped together into one block where no single free block was large enough (only gmlake stitches).</p>
<div class="chart" id="chart-stitches"></div>
<h2>On a smaller GPU</h2>
${capacitySection(data)}
<footer>Made by ${escape(generator)}. One file, no network needed: the chart library (uPlot) is inside.</footer>
<script type="application/json" id="report-data">${json}</script>
<script>${assets.script}</script>
<script>${boot}</script>
</body>
</html>
`
  return page
}
