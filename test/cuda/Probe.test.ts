/**
 * The device probe (`probe.ts`) on the fake libcuda, on every run, and on the real driver where
 * one with a device is present (skipped elsewhere).
 */
import { describe, expect, it } from "@effect/vitest"
import { type CudaLibrary, loadCuda } from "../../src/cuda/Binding.ts"
import { openDevice } from "../../src/cuda/CudaDevicePort.ts"
import { fake, freshLibrary } from "./fixture.ts"
import { probe, type ProbeReport } from "./probe.ts"

const expectSound = (report: ProbeReport): void => {
  expect(report.missing).toEqual([])
  for (const c of report.checks) expect(c, c.name).toMatchObject({ ok: true })
  for (const r of report.refusals) expect({ rule: r.rule, reason: r.reason }).toEqual({ rule: r.rule, reason: r.expected })
  expect(report.timings.length).toBeGreaterThan(0)
}

/** The real driver with a usable device 0, or undefined. */
const realDriver = async (): Promise<CudaLibrary | undefined> => {
  try {
    const lib = await loadCuda()
    openDevice(lib, 0).close()
    return lib
  } catch {
    return undefined
  }
}
const real = await realDriver()

describe("probe", () => {
  it("passes on the fake libcuda and gives everything back", async () => {
    const lib = await freshLibrary()
    const report = probe(lib, { iterations: 50 })
    expectSound(report)
    expect(report.device.name).toBe("Fake CUDA Device 0")
    const codes = { OutOfMemory: 2, NotSupported: 801 } as Record<string, number>
    expect(report.refusals.map((r) => r.code)).toEqual(report.refusals.map((r) => codes[r.expected] ?? 1))
    const l = fake.ledger()
    expect([l.chunks, l.ranges, l.mappings, l.streams, l.events, l.contextRefs, l.usedBytes]).toEqual([0, 0, 0, 0, 0, 0, 0])
  })

  it.skipIf(real === undefined)("passes on the real driver (GPU machines only)", () => {
    const report = probe(real!)
    console.info(JSON.stringify(report))
    expectSound(report)
  })
})
