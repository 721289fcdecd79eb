/**
 * The driver-time model against the measurement it was made from (Note [Driver-time model]):
 * every single-object row of `bench/calibration/vmm-sizes-h200.jsonl` is reproduced, and every
 * stitched-range row within 15%.
 */
import { describe, expect, it } from "@effect/vitest"
import { readFileSync } from "node:fs"
import type { DriverCallKind } from "../../src/domain/DriverPort.ts"
import { estimateMicros, estimateRangeMicros, LatencyTable } from "../../src/domain/Latency.ts"
import { MiB } from "../../src/domain/Units.ts"

const rows = readFileSync(new URL("../../bench/calibration/vmm-sizes-h200.jsonl", import.meta.url), "utf8")
  .trim().split("\n").map((l) => JSON.parse(l) as Record<string, number>)

const columns: Record<string, DriverCallKind> = {
  create: "memCreate",
  reserve: "addressReserve",
  map: "memMap",
  access: "setAccess",
  unmap: "memUnmap",
  free: "addressFree",
  release: "memRelease"
}

describe("driver-time model", () => {
  it("reproduces every size of the H200 sweep", () => {
    const sizes = rows.filter((r) => r["mib"] !== undefined)
    expect(sizes.length).toBeGreaterThanOrEqual(7)
    for (const r of sizes) {
      for (const [column, kind] of Object.entries(columns)) {
        expect(estimateMicros(kind, MiB(r["mib"]!))).toBeCloseTo(r[column]!, 6)
      }
    }
  })

  it("costs a set access per mapping in the range, within 15% of each stitched row", () => {
    const stitched = rows.filter((r) => r["stitchChunks"] !== undefined)
    expect(stitched.length).toBeGreaterThanOrEqual(4)
    for (const r of stitched) {
      const n = r["stitchChunks"]!
      const model = estimateRangeMicros("setAccess", Array.from({ length: n }, () => MiB(2)))
      expect(Math.abs(model / r["accessWholeRangeUs"]! - 1)).toBeLessThan(0.15)
      const unmap = estimateRangeMicros("memUnmap", Array.from({ length: n }, () => MiB(2))) / n
      expect(Math.abs(unmap / r["unmapPerChunkUs"]! - 1)).toBeLessThan(0.15)
    }
  })

  it("grows with bytes between and beyond the measured sizes", () => {
    expect(estimateMicros("memRelease", MiB(1024))).toBeGreaterThan(244.7)
    expect(estimateMicros("memRelease", MiB(1024))).toBeLessThan(1043.4)
    expect(estimateMicros("memRelease", MiB(16384))).toBeGreaterThan(4548.9)
    expect(estimateMicros("memCreate", MiB(1))).toBe(21.6)
  })

  it("the memo table answers as the model does", () => {
    const t = new LatencyTable(MiB(2))
    for (const kind of Object.values(columns)) {
      for (const mib of [2, 4, 6, 20, 100, 2048, 200000, 3]) {
        expect(t.micros(kind, MiB(mib))).toBe(estimateMicros(kind, MiB(mib)))
        expect(t.micros(kind, MiB(mib))).toBe(estimateMicros(kind, MiB(mib)))
      }
    }
  })
})
