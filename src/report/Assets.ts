/**
 * The chart library's files (uPlot's browser build and its style sheet), read from the installed
 * package to be inlined into a report.
 *
 * @since 0.2.0
 */
import { Data, Effect } from "effect"
import { readFileSync } from "node:fs"
import { createRequire } from "node:module"
import type { ChartAssets } from "./Html.ts"

/** The chart library cannot be read. @category errors */
export class ReportError extends Data.TaggedError("ReportError")<{ readonly detail: string }> {
  override get message(): string {
    return this.detail
  }
}

/**
 * Reads uPlot's IIFE build and CSS from `node_modules/uplot`.
 * @category constructors
 */
export const loadChartAssets: Effect.Effect<ChartAssets, ReportError> = Effect.try({
  try: () => {
    const require = createRequire(import.meta.url)
    const read = (path: string) => readFileSync(require.resolve(path), "utf8")
    const script = read("uplot/dist/uPlot.iife.min.js")
    // Note [Report page security]: the library is inlined in a <script> element.
    if (script.includes("</script")) throw new Error("uPlot's build contains </script>")
    return { script, css: read("uplot/dist/uPlot.min.css") }
  },
  catch: (e) =>
    new ReportError({ detail: `cannot read the chart library uPlot (${(e as Error).message}); run npm install in gmlake's folder` })
})
