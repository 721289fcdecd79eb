/**
 * The report page, opened in headless Chromium (Debian's, installed by `setup.ts`) and driven by
 * playwright-core: the page made by `gmlake report` from a bundled trace must draw every chart
 * with no console error and no request leaving the file, show a legend entry per policy, and
 * carry the comparison and capacity tables. A page with a broken script, or with a script the
 * page's policy does not allow, must be caught by the same checks.
 *
 * The screenshot goes to `test/.report/report-screenshot.png`; with GMLAKE_UPDATE_SCREENSHOT=1
 * also to `docs/report-screenshot.png` (the README's picture).
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { spawnSync } from "node:child_process"
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { pathToFileURL } from "node:url"
import { type Browser, chromium, type Page } from "playwright-core"
import { policyNames } from "../../src/domain/Allocator.ts"
import { loadChartAssets } from "../../src/report/Assets.ts"
import { render } from "../../src/report/Html.ts"
import { make } from "../../src/report/Report.ts"
import { loadTrace } from "../../src/trace/File.ts"
import { gmlakeIn } from "../cli/harness.ts"
import { chromiumPath } from "./setup.ts"

const trace = "traces/llama1b_lora_varlen.json.gz"
const dir = mkdtempSync(join(tmpdir(), "gmlake-report-"))
const shots = resolve("test/.report")

let browser: Browser

beforeAll(async () => {
  const executablePath = chromiumPath()
  // The flags keep a headless Chromium from reaching for the network at start (closed here).
  browser = await chromium.launch({
    executablePath,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
  })
}, 120_000)

afterAll(async () => {
  await browser?.close()
})

/** What is wrong with a report page once opened, as sentences; empty when it is right. */
interface Inspection {
  readonly problems: ReadonlyArray<string>
  readonly legends: Record<string, ReadonlyArray<string>>
  readonly page: Page
}

const inspect = async (file: string, charts: ReadonlyArray<string>): Promise<Inspection> => {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } })
  const problems: Array<string> = []
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") problems.push(`console ${m.type()}: ${m.text()}`)
  })
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`))
  page.on("request", (r) => {
    if (!r.url().startsWith("file:") && !r.url().startsWith("data:")) problems.push(`request to ${r.url()}`)
  })
  await page.goto(pathToFileURL(file).href)
  await page.waitForFunction(() => document.body.dataset["charts"] !== undefined, undefined, { timeout: 5000 })
    .catch(() => problems.push("the page's script never finished drawing"))
  const legends: Record<string, Array<string>> = {}
  for (const id of charts) {
    const chart = page.locator(`#${id}`)
    if ((await chart.locator("canvas").count()) !== 1) {
      problems.push(`#${id}: no canvas`)
      continue
    }
    // Drawn, not just present: enough non-blank pixels in the plotting canvas.
    const inked = await chart.locator("canvas").evaluate((c: HTMLCanvasElement) => {
      const d = c.getContext("2d")!.getImageData(0, 0, c.width, c.height).data
      let n = 0
      for (let i = 3; i < d.length; i += 4) if (d[i]! > 0) n++
      return n
    })
    if (inked < 2000) problems.push(`#${id}: the canvas is nearly blank (${inked} pixels drawn)`)
    legends[id] = (await chart.locator(".u-legend .u-series .u-label").allTextContents()).map((s) => s.trim())
  }
  return { problems, legends, page }
}

const gmlake = (...args: Array<string>) => {
  const r = spawnSync(process.execPath, ["src/bin.ts", ...args], { encoding: "utf8", timeout: 300_000 })
  return { code: r.status, out: r.stdout, err: r.stderr }
}

describe("gmlake report", () => {
  it("renders a bundled trace's report with every chart, legend and table, and keeps a screenshot", async () => {
    const out = join(dir, "report.html")
    const r = gmlake("report", trace, "--capacity", "9GiB,8GiB", "--out", out)
    expect(r.err).toBe("")
    expect(r.code).toBe(0)
    expect(r.out).toContain(`wrote ${out}: llama1b_lora_varlen under caching, expandable, gmlake, and again on 9.00 GiB, 8.00 GiB`)

    const html = readFileSync(out, "utf8")
    // Self-contained: no external script, style or image.
    expect(html).not.toMatch(/<(script|link|img)[^>]+(src|href)=/i)
    expect(html).toContain("Content-Security-Policy")

    const charts = ["chart-memory", "chart-calls", "chart-stitches", "chart-capacity-0", "chart-capacity-1"]
    const { problems, legends, page } = await inspect(out, charts)
    mkdirSync(shots, { recursive: true })
    const shot = join(shots, "report-screenshot.png")
    await page.screenshot({ path: shot, fullPage: true })
    if (process.env["GMLAKE_UPDATE_SCREENSHOT"] === "1") copyFileSync(shot, "docs/report-screenshot.png")
    expect(problems).toEqual([])
    for (const id of charts) {
      for (const p of policyNames) expect(legends[id]).toContain(p)
    }
    expect(legends["chart-memory"]).toContain("requested")
    expect(legends["chart-memory"]).toContain("PyTorch native (recorded)")
    expect(legends["chart-capacity-0"]).toContain("capacity")

    const comparison = await page.locator("table.comparison tbody tr td:first-child").allTextContents()
    expect(comparison).toEqual([...policyNames, "PyTorch native (recorded)", "PyTorch expandable_segments (recorded)"])
    // One table per capacity, a row per policy; a policy completes exactly when it had no OOM.
    // 8 GiB (8.59 GB) is under the trace's peak of requested bytes (9.18 GB): no policy can complete.
    const tables = page.locator("table.capacity")
    expect(await tables.count()).toBe(2)
    for (let t = 0; t < 2; t++) {
      const rows = await tables.nth(t).locator("tbody tr").evaluateAll((trs) =>
        trs.map((tr) => Array.from(tr.querySelectorAll("td"), (td) => td.textContent ?? ""))
      )
      expect(rows.map((row) => row[0])).toEqual([...policyNames])
      for (const row of rows) expect(row[1]).toBe(row[2] === "0" ? "completes" : "out of memory")
      if (t === 1) for (const row of rows) expect(row[1]).toBe("out of memory")
    }
    await page.close()
  }, 300_000)

  it("renders a PyTorch memory snapshot's report", async () => {
    const out = join(dir, "snapshot.html")
    const r = await gmlakeIn(["report", "test/fixtures/gpt2_small.snapshot.pickle", "--out", out])
    expect(r.err).toBe("")
    expect(r.code).toBe(0)
    const charts = ["chart-memory", "chart-calls", "chart-stitches"]
    const { problems, legends, page } = await inspect(out, charts)
    expect(problems).toEqual([])
    for (const id of charts) for (const p of policyNames) expect(legends[id]).toContain(p)
    expect(legends["chart-memory"]).toContain("PyTorch native (recorded)")
    await page.close()
  }, 120_000)

  it("catches a broken page: a failing chart script, and a script the page's policy forbids", async () => {
    const data = await Effect.runPromise(Effect.map(loadTrace("traces/gpt2_fixed.json.gz"), (t) => t).pipe(
      Effect.flatMap((t) => make(t, { policies: policyNames, slices: 50 }))
    ))
    const assets = await Effect.runPromise(loadChartAssets)
    const charts = ["chart-memory", "chart-calls", "chart-stitches"]

    const good = join(dir, "good.html")
    writeFileSync(good, render(data, assets, "test"))
    const ok = await inspect(good, charts)
    expect(ok.problems).toEqual([])
    await ok.page.close()

    // The chart library cut short: a syntax error, then no uPlot for the client.
    const broken = join(dir, "broken.html")
    writeFileSync(broken, render(data, { ...assets, script: assets.script.slice(0, assets.script.length / 2) }, "test"))
    const b = await inspect(broken, charts)
    expect(b.problems.length).toBeGreaterThan(0)
    expect(b.problems.join("\n")).toMatch(/no canvas|never finished/)
    await b.page.close()

    // A script smuggled into the page is refused by its Content-Security-Policy, and that shows.
    const injected = join(dir, "injected.html")
    writeFileSync(injected, render(data, assets, "test").replace("</body>", "<script>document.title = 'x'</script></body>"))
    const i = await inspect(injected, charts)
    expect(i.problems.join("\n")).toContain("Content Security Policy")
    await i.page.close()

    // A page whose charts have nothing to draw.
    const empty = join(dir, "empty.html")
    writeFileSync(empty, render({ ...data, runs: [], sliceEnds: [], recorded: null, native: null, expandable: null }, assets, "test"))
    const e = await inspect(empty, charts)
    expect(e.problems.join("\n")).toMatch(/nearly blank|no canvas/)
    await e.page.close()
  }, 120_000)

  it("says what is wrong with its arguments", async () => {
    const missing = await gmlakeIn(["report", trace])
    expect(missing.code).toBe(2)
    expect(missing.err).toContain("missing --out")
    const r = await gmlakeIn(["report", trace, "--out", join(dir, "x.html"), "--capacity", "9GiB,lots"])
    expect(r.code).toBe(2)
    expect(r.err).toContain("--capacity")
    const w = await gmlakeIn(["report", "traces/gpt2_fixed.json.gz", "--policy", "gmlake", "--out", "/nonexistent/dir/r.html"])
    expect(w.code).toBe(73)
    expect(w.err).toContain("/nonexistent/dir/r.html: cannot write")
  }, 120_000)
})
