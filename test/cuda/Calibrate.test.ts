/**
 * The GPU calibration script (`bench/gpu/calibrate.ts`) on the fake libcuda: it measures every
 * figure the driver-time model needs and gives everything back.
 */
import { describe, expect, it } from "@effect/vitest"
import { calibrate } from "../../bench/gpu/calibrate.ts"
import { fake, freshLibrary } from "./fixture.ts"

describe("calibrate", () => {
  it("sweeps sizes and stitched ranges on the fake libcuda, leaving nothing behind", async () => {
    const lib = await freshLibrary()
    const lines = calibrate(lib, { repeats: 3, stitchChunks: [1, 8, 64], stitchChunkMiB: [2, 20] })
    const sizes = lines.filter((l) => l["mib"] !== undefined)
    // 1 GiB fake device: sizes up to a quarter of it.
    expect(sizes.map((l) => l["mib"])).toEqual([2, 8, 20, 32, 128])
    for (const l of sizes) {
      for (const k of ["create", "reserve", "map", "access", "unmap", "free", "release", "alloc", "allocFree"]) {
        expect(l[k], `${k} at ${l["mib"]} MiB`).toBeGreaterThanOrEqual(0)
      }
    }
    const stitched = lines.filter((l) => l["stitchChunks"] !== undefined)
    expect(stitched.map((l) => [l["chunkMiB"], l["stitchChunks"]])).toEqual([[2, 1], [2, 8], [2, 64], [20, 1], [20, 8]])
    for (const l of stitched) expect(l["accessWholeRangeUs"]).toBeGreaterThanOrEqual(0)
    const last = lines[lines.length - 1]!
    expect(last["device"]).toBe("Fake CUDA Device 0")
    expect(last["freeAfter"]).toBe(last["freeBefore"])
    expect(last["failures"]).toBeUndefined()
    const l = fake.ledger()
    expect([l.chunks, l.ranges, l.mappings, l.contextRefs, l.usedBytes]).toEqual([0, 0, 0, 0, 0])
  })
})
