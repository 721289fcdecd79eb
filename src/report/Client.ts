/// <reference lib="dom" />
/**
 * The report page's script: draws the charts with uPlot from the data the page carries.
 *
 * Note [Client script as a function]
 * ----------------------------------
 * The page must open with no network and no build step, so its script is inlined. It is written
 * here as one self-contained TypeScript function, type-checked against the DOM and uPlot's own
 * types, and `Html.render` writes its source text (`String(client)`) into the page, called with
 * uPlot and the page's data. So `client` must refer to nothing outside itself: no imports but
 * types, no module-level helpers (any of those would be undefined in the page). Whatever runs it
 * (Node's type stripping, vitest, esbuild) hands back plain JavaScript for its source text; the
 * report test opens the page in Chromium and fails on any console error.
 *
 * @since 0.2.0
 */
import type uPlot from "uplot"

/** One policy's series in a chart, slice by slice. @category models */
export interface ClientPolicy {
  readonly name: string
  readonly color: string
  /** Highest reserved bytes within each slice. */
  readonly reserved: ReadonlyArray<number>
  /** Driver calls within each slice. */
  readonly calls: ReadonlyArray<number>
  /** Stitched views built within each slice. */
  readonly stitches: ReadonlyArray<number>
}

/** A flat reference line (a recorded peak, a device's capacity). @category models */
export interface ClientLine {
  readonly label: string
  readonly bytes: number
  readonly color: string
}

/** What the page's script draws. @category models */
export interface ClientData {
  /** Slice ends (event indices): the x of every chart. */
  readonly x: ReadonlyArray<number>
  /** Highest live requested bytes within each slice. */
  readonly requested: ReadonlyArray<number>
  /** PyTorch's own reserved bytes over the recorded run, when the trace has its segment actions. */
  readonly recorded: { readonly label: string; readonly values: ReadonlyArray<number> } | null
  readonly lines: ReadonlyArray<ClientLine>
  readonly policies: ReadonlyArray<ClientPolicy>
  /** Replays on smaller devices: one memory chart each, in the element with id `chart-capacity-<index>`. */
  readonly capacities: ReadonlyArray<{ readonly capacity: number; readonly policies: ReadonlyArray<ClientPolicy> }>
}

/**
 * Draws every chart of the page into the elements `chart-memory`, `chart-calls`, `chart-stitches`
 * and `chart-capacity-<i>` (Note [Client script as a function]).
 * @category constructors
 */
export const client = (U: typeof uPlot, data: ClientData): void => {
  const gb = (v: number | null) => (v === null ? "-" : `${(v / 1e9).toFixed(2)} GB`)
  const count = (v: number | null) => (v === null ? "-" : String(Math.round(v)))
  // 1200 -> "1.2k", 2000000 -> "2M": as many decimals as the tick needs, up to three.
  const events = (v: number) =>
    v >= 1e6 ? `${Number((v / 1e6).toFixed(3))}M` : v >= 1e3 ? `${Number((v / 1e3).toFixed(3))}k` : String(v)
  const x = Array.from(data.x)
  const stepped = U.paths.stepped!({ align: 1 })
  // Counts are drawn as running totals: a flat stretch is a stretch without any.
  const runningTotal = (xs: ReadonlyArray<number>) => {
    let t = 0
    return xs.map((v) => (t += v))
  }
  const countSteps = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 1e7, 1e8]
  const charts: Array<{ plot: uPlot; el: HTMLElement }> = []
  const width = (el: HTMLElement) => Math.max(320, el.clientWidth)

  const draw = (
    id: string,
    yLabel: string,
    fmt: (v: number | null) => string,
    series: Array<{ label: string; color: string; values: ReadonlyArray<number>; dash?: Array<number>; step?: boolean }>,
    integral: boolean
  ) => {
    const el = document.getElementById(id)
    if (el === null) throw new Error(`the page has no element #${id}`)
    const opts: uPlot.Options = {
      width: width(el),
      height: 300,
      cursor: { drag: { x: true, y: false } },
      scales: { x: { time: false } },
      axes: [
        { label: "event", values: (_u, splits) => splits.map(events) },
        { label: yLabel, size: 70, values: (_u, splits) => splits.map((v) => fmt(v)), ...(integral ? { incrs: countSteps } : {}) }
      ],
      series: [
        { label: "event", value: (_u, v) => (v === null ? "-" : String(v)) },
        ...series.map((s): uPlot.Series => ({
          label: s.label,
          stroke: s.color,
          width: 1.5,
          value: (_u, v) => fmt(v),
          ...(s.dash !== undefined ? { dash: s.dash } : {}),
          ...(s.step === true ? { paths: stepped } : {})
        }))
      ]
    }
    const plot = new U(opts, [x, ...series.map((s) => Array.from(s.values))], el)
    charts.push({ plot, el })
  }

  const memorySeries = (policies: ReadonlyArray<ClientPolicy>, lines: ReadonlyArray<ClientLine>, recorded: boolean) => [
    { label: "requested", color: "#222", values: data.requested },
    ...(data.recorded === null || !recorded ? [] : [{ label: data.recorded.label, color: "#999", values: data.recorded.values, dash: [2, 3] }]),
    ...policies.map((p) => ({ label: p.name, color: p.color, values: p.reserved })),
    ...lines.map((l) => ({ label: l.label, color: l.color, values: x.map(() => l.bytes), dash: [8, 4] }))
  ]

  const totals = (pick: (p: ClientPolicy) => ReadonlyArray<number>) =>
    data.policies.map((p) => ({ label: p.name, color: p.color, values: runningTotal(pick(p)), step: true }))
  draw("chart-memory", "bytes", gb, memorySeries(data.policies, data.lines, true), false)
  draw("chart-calls", "driver calls so far", count, totals((p) => p.calls), true)
  draw("chart-stitches", "stitches so far", count, totals((p) => p.stitches), true)
  data.capacities.forEach((c, i) =>
    draw(
      `chart-capacity-${i}`,
      "bytes",
      gb,
      memorySeries(c.policies, [{ label: "capacity", bytes: c.capacity, color: "#d00" }], false),
      false
    )
  )

  let pending = 0
  window.addEventListener("resize", () => {
    cancelAnimationFrame(pending)
    pending = requestAnimationFrame(() => {
      for (const c of charts) c.plot.setSize({ width: width(c.el), height: 300 })
    })
  })
  document.body.dataset["charts"] = String(charts.length)
}
