/**
 * The report page's text, without a browser (Note [Report page security]): the policy's hashes
 * are those of the page's own scripts and style, and no value from the trace can open an element.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { createHash } from "node:crypto"
import { loadChartAssets } from "../../src/report/Assets.ts"
import { clientData, render } from "../../src/report/Html.ts"
import { make } from "../../src/report/Report.ts"
import { loadTrace } from "../../src/trace/File.ts"

const sha = (s: string) => `'sha256-${createHash("sha256").update(s, "utf8").digest("base64")}'`

describe("report page", () => {
  it.effect("allows exactly its own scripts and style, and escapes what the trace says", () =>
    Effect.gen(function*() {
      const trace = yield* loadTrace("traces/gpt2_fixed.json.gz")
      const data = yield* make(trace, { policies: ["gmlake"], slices: 10 })
      const assets = yield* loadChartAssets
      const evil = `</script><script>alert(1)</script><img src=x onerror=alert(2)>`
      const page = render({ ...data, workload: evil, description: evil, file: evil }, assets, "test")

      const scripts = [...page.matchAll(/<script([^>]*)>([\s\S]*?)<\/script>/g)]
      expect(scripts.map((m) => m[1])).toEqual([` type="application/json" id="report-data"`, "", ""])
      const styles = [...page.matchAll(/<style>([\s\S]*?)<\/style>/g)]
      expect(styles.length).toBe(1)
      expect(page).not.toContain("<img")

      const csp = /http-equiv="Content-Security-Policy" content="([^"]*)"/.exec(page)![1]!.replace(/&#39;/g, "'")
      expect(csp).toContain("default-src 'none'")
      const scriptSrc = /script-src ([^;]*)/.exec(csp)![1]!.split(" ")
      expect(scriptSrc).toEqual([sha(scripts[1]![2]!), sha(scripts[2]![2]!)])
      expect(/style-src ([^;]*)/.exec(csp)![1]).toBe(sha(styles[0]![1]!))

      // The data survives the escaping.
      const json = JSON.parse(scripts[0]![2]!)
      expect(json).toEqual(JSON.parse(JSON.stringify(clientData({ ...data, workload: evil }))))
      expect(page).toContain(`gmlake report: ${evil.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")}`)
    }))

  it.effect("draws PyTorch's recorded reserve from the trace's segment actions, peaking where PyTorch reported", () =>
    Effect.gen(function*() {
      const trace = yield* loadTrace("traces/llama1b_lora_varlen.json.gz")
      const data = yield* make(trace, { policies: ["caching"], slices: 50 })
      expect(data.recorded?.mode).toBe("native")
      expect(Math.max(...data.recorded!.peakReserved)).toBe(trace.native!.peakReserved)
      // The caching policy replays PyTorch's native allocator: its reserve follows the recorded one.
      expect(data.runs[0]!.timeline.map((s) => s.peakReserved)).toEqual(data.recorded!.peakReserved)
    }))
})
