/** The metering adaptor: calls, reserved bytes, and driver time per mapping in a range. */
import { describe, expect, it } from "@effect/vitest"
import { estimateMicros, estimateRangeMicros } from "../../src/domain/Latency.ts"
import type { Address } from "../../src/domain/Units.ts"
import { MiB } from "../../src/domain/Units.ts"
import { MeteredPort } from "../../src/layers/MeteredPort.ts"
import { SimDriver } from "../../src/layers/sim/SimDriver.ts"

describe("MeteredPort", () => {
  it("costs one set access and one unmap over a stitched range per mapping in it", () => {
    const port = new MeteredPort(new SimDriver())
    const sizes = [MiB(2), MiB(20), MiB(2), MiB(64)]
    const handles = sizes.map((b) => port.memCreate(b))
    const total = sizes.reduce((a, b) => a + b, 0)
    const va = port.addressReserve(total)
    let at = 0
    sizes.forEach((b, i) => {
      port.memMap((va + at) as Address, b, handles[i]!)
      at += b
    })
    const before = port.micros
    port.setAccess(va, total)
    expect(port.micros - before).toBeCloseTo(estimateRangeMicros("setAccess", sizes), 9)
    // A range much larger than one mapping of its size would cost.
    expect(port.micros - before).toBeGreaterThan(estimateMicros("setAccess", total))
    const beforeUnmap = port.micros
    port.memUnmap(va, total)
    expect(port.micros - beforeUnmap).toBeCloseTo(estimateRangeMicros("memUnmap", sizes), 9)
    expect(port.totalCalls()).toBe(4 + 1 + 4 + 1 + 1)
    expect(port.reserved).toBe(total)
    for (const h of handles) port.memRelease(h)
    expect(port.reserved).toBe(0)
    expect(port.peakReserved).toBe(total)
  })

  it("keeps the peak of reserved bytes since the last window reset", () => {
    const port = new MeteredPort(new SimDriver())
    const a = port.memCreate(MiB(4))
    const b = port.memCreate(MiB(4))
    port.memRelease(a)
    expect(port.windowPeak).toBe(MiB(8))
    port.resetWindow()
    expect(port.windowPeak).toBe(MiB(4))
    port.memRelease(b)
    expect(port.windowPeak).toBe(MiB(4))
    expect(port.peakReserved).toBe(MiB(8))
  })
})
