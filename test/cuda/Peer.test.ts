/**
 * Peer access through the binding, on the fake libcuda's several devices (Note [Fake devices and
 * peer access]): a chunk located on one device mapped in a range with access for another, access
 * per device, per-device capacity, denied pairs refused.
 */
import { afterEach, describe, expect, it } from "@effect/vitest"
import type { CudaLibrary } from "../../src/cuda/Binding.ts"
import { CudaDevicePort, openDevice } from "../../src/cuda/CudaDevicePort.ts"
import { expectBytes, expectDriverError, fake, freshLibrary, MiB, pattern } from "./fixture.ts"

const G = 2 * MiB

let lib: CudaLibrary

afterEach(() => {
  const l = fake.ledger()
  expect([l.chunks, l.ranges, l.mappings, l.contextRefs, l.usedBytes]).toEqual([0, 0, 0, 0, 0])
})

describe("peer access (fake libcuda)", () => {
  it("maps a peer's chunk with access for the borrower only; each device counts its own memory", async () => {
    lib = await freshLibrary({ devices: 2, capacity: 16 * MiB })
    const d0 = openDevice(lib, 0)
    const d1 = openDevice(lib, 1)
    const p0 = new CudaDevicePort(d0)
    const p1 = new CudaDevicePort(d1)
    const h = p1.memCreate(2 * G) // located on device 1
    expect(fake.deviceUsed(1)).toBe(4 * MiB)
    expect(fake.deviceUsed(0)).toBe(0)
    expect(p1.memGetInfo().free).toBe(12 * MiB)
    expect(p0.memGetInfo().free).toBe(16 * MiB)
    const va = p0.addressReserve(2 * G)
    p0.memMap(va, 2 * G, h)
    p0.setAccess(va, 2 * G) // access for device 0
    const data = pattern(2 * G, 3)
    p0.write(va, data)
    expectBytes(p0.read(va, 2 * G), data)
    // Device 1's context has no access at device 0's range...
    expectDriverError(() => p1.read(va, 16), { call: "cuMemcpyDtoH_v2", reason: "InvalidValue" })
    // ...but reads the same bytes through a mapping of its own.
    const own = p1.addressReserve(2 * G)
    p1.memMap(own, 2 * G, h)
    p1.setAccess(own, 2 * G)
    expectBytes(p1.read(own, 2 * G), data)
    // Capacity is per device: device 1 has 12 MiB left, device 0 all of its 16.
    expectDriverError(() => p1.memCreate(8 * G), { call: "cuMemCreate", reason: "OutOfMemory" })
    const h0 = p0.memCreate(8 * G)
    p0.memRelease(h0)
    p1.memUnmap(own, 2 * G)
    p1.addressFree(own, 2 * G)
    p1.memRelease(h) // still mapped at device 0's range: the memory stays on device 1
    expect(fake.deviceUsed(1)).toBe(4 * MiB)
    p0.memUnmap(va, 2 * G)
    expect(fake.deviceUsed(1)).toBe(0)
    p0.addressFree(va, 2 * G)
    d1.close()
    d0.close()
  })

  it("refuses access over a denied pair and grants nothing", async () => {
    lib = await freshLibrary({ devices: 2 })
    fake.setPeerAccess(0, 1, false)
    const d0 = openDevice(lib, 0)
    const d1 = openDevice(lib, 1)
    expect(d0.canAccessPeer(d1.device)).toBe(false)
    expect(d1.canAccessPeer(d0.device)).toBe(true)
    const p0 = new CudaDevicePort(d0)
    const p1 = new CudaDevicePort(d1)
    const h = p1.memCreate(G)
    const va = p0.addressReserve(G)
    p0.memMap(va, G, h) // mapping is allowed; access is not
    expectDriverError(() => p0.setAccess(va, G), { call: "cuMemSetAccess", reason: "NotSupported", code: 217 })
    expectDriverError(() => p0.read(va, 1), { call: "cuMemcpyDtoH_v2" })
    p0.memUnmap(va, G)
    p0.addressFree(va, G)
    p1.memRelease(h)
    d1.close()
    d0.close()
  })
})
