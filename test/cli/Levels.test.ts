/**
 * `--driver-levels` and `gmlake calibrate` (Note [Host levels]): what the simulator's figures become
 * at a host's levels, and every way a levels file can be wrong.
 */
import { describe, expect, it } from "@effect/vitest"
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { gmlakeIn, scratch } from "./harness.ts"

const { dir, write } = scratch("gmlake-levels-")
const trace = write("t.json", JSON.stringify({
  format: "gmlake-trace/1",
  workload: "t",
  events: [["a", 1, 3145728], ["a", 2, 50_000_000], ["f", 1], ["a", 3, 200_000_000], ["f", 2], ["f", 3]]
}))
const levelsFile = (levels: unknown, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ format: "gmlake-driver-levels/1", device: "NVIDIA H200", measuredAt: "2026-12-03T07:00:00Z", workload: "w", levels, ...extra })

const replay = async (...extra: Array<string>) => {
  const r = await gmlakeIn(["replay", trace, "--policy", "gmlake,expandable", "--json", ...extra])
  expect(r.code).toBe(0)
  return r.out.trim().split("\n").map((l) => JSON.parse(l) as { driverMicros: number; driverMicrosByKind: Record<string, number> })
}

describe("--driver-levels", () => {
  it("costs each call kind at its level and the others at the model's", async () => {
    const plain = await replay()
    const file = write("levels.json", levelsFile({ setAccess: 2, memMap: 0.5 }))
    const leveled = await replay("--driver-levels", file)
    for (let i = 0; i < plain.length; i++) {
      const p = plain[i]!.driverMicrosByKind
      const l = leveled[i]!.driverMicrosByKind
      expect(p["setAccess"]).toBeGreaterThan(0)
      expect(l["setAccess"]).toBeCloseTo(2 * p["setAccess"]!, -1)
      expect(l["memMap"]).toBeCloseTo(0.5 * p["memMap"]!, -1)
      expect(l["memCreate"]).toBe(p["memCreate"])
      expect(leveled[i]!.driverMicros).toBeGreaterThan(plain[i]!.driverMicros)
    }
  })

  it("costs the report's driver time at the levels too", async () => {
    const file = write("levels2.json", levelsFile({ setAccess: 3 }))
    const page = async (...extra: Array<string>) => {
      const out = join(dir, `r${extra.length}.html`)
      const r = await gmlakeIn(["report", trace, "--policy", "gmlake", "--out", out, ...extra])
      expect(r.code).toBe(0)
      return readFileSync(out, "utf8")
    }
    const ms = (html: string) => Number(/([0-9.]+) ms/.exec(html)![1])
    const plain = ms(await page())
    const leveled = ms(await page("--driver-levels", file))
    expect(plain).toBeGreaterThan(0)
    expect(leveled).toBeGreaterThan(plain * 1.5)
  })

  it("refuses a file that is missing, not JSON, not a levels file, or has a wrong level, saying which", async () => {
    const cases: Array<[string, string]> = [
      [join(dir, "none.json"), "cannot read it (ENOENT)"],
      [write("bad.json", "{levels"), "not JSON: write it with gmlake calibrate --device cuda"],
      [write("format.json", levelsFile({}, { format: "gmlake-trace/1" })), "not a gmlake-driver-levels/1 file: format:"],
      [write("kind.json", levelsFile({ setAcess: 2 })), "not a gmlake-driver-levels/1 file: levels.setAcess: not a driver call (known: memCreate,"],
      [write("neg.json", levelsFile({ setAccess: -1 })), "not a gmlake-driver-levels/1 file: levels.setAccess: must be a number from 0.01 to 100"],
      [write("str.json", levelsFile({ memMap: "fast" })), "not a gmlake-driver-levels/1 file: levels.memMap:"],
      [write("nodevice.json", JSON.stringify({ format: "gmlake-driver-levels/1", levels: {} })), "not a gmlake-driver-levels/1 file:"]
    ]
    for (const [file, message] of cases) {
      for (const command of ["replay", "bench"]) {
        const r = await gmlakeIn([command, trace, "--driver-levels", file, "--repeat", "1", "--warmup", "0"].slice(0, command === "replay" ? 4 : 8))
        expect(r.code, `${command} ${file}`).toBe(2)
        expect(r.err).toContain(`--driver-levels ${file}: ${message}`)
        expect(r.out).toBe("")
      }
    }
  })
})

describe("gmlake calibrate", () => {
  it("measures a GPU only, and says so on the simulated device", async () => {
    const r = await gmlakeIn(["calibrate"])
    expect(r.code).toBe(2)
    expect(r.err).toContain("calibrate: measures a GPU's driver: give --device cuda")
  })
})
