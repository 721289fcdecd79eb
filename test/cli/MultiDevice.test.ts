/**
 * The multi-device selftest (Note [Multi-device selftest]) on the fake libcuda with one to four
 * devices: every device, every ordered pair, denied pairs reported, failures as checks, and the
 * driver left as it was found.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { multiDeviceChecks } from "../../src/cli/MultiDevice.ts"
import { fake, freshLibrary, libraries } from "../cuda/fixture.ts"

const MiB = 1024 * 1024

const expectDriverAsFound = () => {
  const l = fake.ledger()
  expect([l.chunks, l.ranges, l.mappings, l.allocations, l.streams, l.events, l.contextRefs, l.usedBytes]).toEqual([
    0, 0, 0, 0, 0, 0, 0, 0
  ])
}

describe("multi-device selftest (fake libcuda)", () => {
  it("checks every device and peer access between every ordered pair, with bytes", async () => {
    await freshLibrary({ devices: 3, capacity: 64 * MiB })
    fake.setPeerAccess(2, 0, false)
    const checks = await Effect.runPromise(multiDeviceChecks({ library: libraries.full, bytes: 3 * MiB }))
    expect(checks.map((c) => c.name)).toEqual([
      "devices",
      "device 0",
      "device 1",
      "device 2",
      "peer 0->1",
      "peer 0->2",
      "peer 1->0",
      "peer 1->2",
      "peer 2->0",
      "peer 2->1",
      "memory given back (all devices)"
    ])
    expect(checks.filter((c) => !c.ok)).toEqual([])
    expect(checks[0]!.detail).toContain("3 visible")
    expect(checks.find((c) => c.name === "peer 0->1")!.detail).toContain(
      "4.00 MiB located on device 1, written through device 0's mapping, read back through device 1's own"
    )
    expect(checks.find((c) => c.name === "peer 2->0")!.detail).toContain("no peer access")
    expectDriverAsFound()
  })

  it("on one device, says there is no peer to check", async () => {
    await freshLibrary({ devices: 1 })
    const checks = await Effect.runPromise(multiDeviceChecks({ library: libraries.full }))
    expect(checks.map((c) => [c.name, c.ok])).toEqual([
      ["devices", true],
      ["device 0", true],
      ["peer access", true],
      ["memory given back (all devices)", true]
    ])
    expectDriverAsFound()
  })

  it("reports a failing driver call as a failed check, and still gives everything back", async () => {
    await freshLibrary({ devices: 2 })
    fake.inject("cuMemcpyDtoH_v2", 999) // device 0's own read-back
    const checks = await Effect.runPromise(multiDeviceChecks({ library: libraries.full }))
    const failed = checks.filter((c) => !c.ok)
    expect(failed.map((c) => c.name)).toEqual(["device 0"])
    expect(failed[0]!.detail).toContain("cuMemcpyDtoH_v2")
    expect(checks.find((c) => c.name === "memory given back (all devices)")!.ok).toBe(true)
    expectDriverAsFound()
  })

  it("reports a session that cannot be opened as one failed check, and leaves no device open", async () => {
    await freshLibrary({ devices: 2 })
    fake.inject("cuDeviceCanAccessPeer", 999) // asked once every device is open
    const checks = await Effect.runPromise(multiDeviceChecks({ library: libraries.full }))
    expect(checks).toHaveLength(1)
    expect(checks[0]).toMatchObject({ name: "devices", ok: false })
    expect(checks[0]!.detail).toContain("cuDeviceCanAccessPeer")
    expectDriverAsFound()
  })

  it("reports a driver that cannot be loaded as one failed check", async () => {
    const checks = await Effect.runPromise(multiDeviceChecks({ library: "/nonexistent/libcuda.so.1" }))
    expect(checks).toHaveLength(1)
    expect(checks[0]).toMatchObject({ name: "devices", ok: false })
  })
})
