/**
 * The simulated system's rules (Note [Simulated system], Note [Simulated peer access]): one
 * address space and handle table, a capacity and ledger per device, access per device, peer
 * access per ordered pair.
 */
import { describe, expect, it } from "@effect/vitest"
import { DriverError } from "../../../src/domain/Errors.ts"
import type { Address } from "../../../src/domain/Units.ts"
import { emptyLedger, SimDriver } from "../../../src/layers/sim/SimDriver.ts"
import { SimSystem } from "../../../src/layers/sim/SimSystem.ts"

const MiB = 1024 * 1024
const G = 2 * MiB

const failsWith = (f: () => unknown, call: string, reason: string, code?: number) => {
  try {
    f()
  } catch (e) {
    expect(e).toBeInstanceOf(DriverError)
    expect((e as DriverError).call).toBe(call)
    expect((e as DriverError).reason).toBe(reason)
    if (code !== undefined) expect((e as DriverError).code).toBe(code)
    return e as DriverError
  }
  throw new Error(`expected ${call} to fail with ${reason}`)
}

const bytes = (n: number, salt: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + salt) & 255)

describe("SimSystem", () => {
  it("maps a peer's chunk into a device's range with access for that device only", () => {
    const sys = new SimSystem({ devices: 2, device: { capacity: 64 * MiB } })
    const [d0, d1] = [sys.device(0), sys.device(1)]
    const h = d1.memCreate(2 * G) // located on device 1
    const va = d0.addressReserve(2 * G) // device 0's range, in the shared address space
    d0.memMap(va, 2 * G, h)
    d0.setAccess(va, 2 * G)
    expect(d0.translate(va + 10, 100)).toEqual([{ chunk: h, offset: 10, bytes: 100 }])
    // Access is per device: device 1 was granted nothing at this range.
    failsWith(() => d1.translate(va, 100), "translate", "InvalidValue")
    const data = bytes(4096, 3)
    d0.write(va + G - 2048, data)
    expect(d0.read(va + G - 2048, 4096)).toEqual(data)
    // The lender maps the same chunk in a range of its own and sees the bytes device 0 wrote.
    const own = d1.addressReserve(2 * G)
    d1.memMap(own, 2 * G, h)
    d1.setAccess(own, 2 * G)
    expect(d1.read(own + G - 2048, 4096)).toEqual(data)
    failsWith(() => d0.translate(own, 1), "translate", "InvalidValue")
    d1.memUnmap(own, 2 * G)
    d1.addressFree(own, 2 * G)
    d0.memUnmap(va, 2 * G)
    d0.addressFree(va, 2 * G)
    d1.memRelease(h)
    expect(sys.liveHandles()).toBe(0)
  })

  it("keeps a capacity and a ledger per device; a chunk counts where it is located", () => {
    const sys = new SimSystem({ devices: [{ capacity: 8 * MiB }, { capacity: 16 * MiB }] })
    const [d0, d1] = [sys.device(0), sys.device(1)]
    const a = d0.memCreate(3 * G)
    failsWith(() => d0.memCreate(2 * G), "cuMemCreate", "OutOfMemory") // device 0 is full...
    const b = d1.memCreate(2 * G) // ...device 1 is not
    expect(a).not.toBe(b) // one handle table
    expect(d0.memGetInfo()).toEqual({ free: 2 * MiB, total: 8 * MiB })
    expect(d1.memGetInfo()).toEqual({ free: 12 * MiB, total: 16 * MiB })
    const va = d0.addressReserve(3 * G)
    d0.memMap(va, 2 * G, b)
    d0.setAccess(va, 2 * G)
    // The range and its mapping are device 0's; the chunk and its bytes device 1's.
    expect(d0.ledger()).toEqual({ chunks: 1, ranges: 1, mappings: 1, allocations: 0, streams: 0, events: 0, physicalBytes: 6 * MiB })
    expect(d1.ledger()).toEqual({ chunks: 1, ranges: 0, mappings: 0, allocations: 0, streams: 0, events: 0, physicalBytes: 4 * MiB })
    expect(sys.ledger().total.physicalBytes).toBe(10 * MiB)
    // Released through its own device while device 0 still maps it: the memory stays on
    // device 1 until device 0's unmap, which gives it back to device 1.
    d1.memRelease(b)
    expect(d1.ledger().physicalBytes).toBe(4 * MiB)
    d0.memUnmap(va, 2 * G)
    expect(d1.ledger()).toEqual(emptyLedger)
    d0.addressFree(va, 3 * G)
    d0.memRelease(a)
    expect(sys.ledger().total).toEqual(emptyLedger)
  })

  it("classic allocations and streams are per device", () => {
    const sys = new SimSystem({ devices: 2, device: { capacity: 16 * MiB } })
    const [d0, d1] = [sys.device(0), sys.device(1)]
    const p = d0.memAlloc(MiB)
    const q = d1.memAlloc(MiB)
    expect(p).not.toBe(q)
    failsWith(() => d1.memFree(p), "cuMemFree", "InvalidValue")
    const s = d1.streamCreate()
    expect(d1.ledger().streams).toBe(1)
    expect(d0.ledger().streams).toBe(0)
    d1.streamDestroy(s)
    d0.memFree(p)
    d1.memFree(q)
    expect(sys.liveHandles()).toBe(0)
  })

  it("denies peer access per ordered pair, at construction or later", () => {
    const sys = new SimSystem({ devices: 3, device: { capacity: 32 * MiB }, peerAccess: { deny: [[0, 1]] } })
    const [d0, d1, d2] = [sys.device(0), sys.device(1), sys.device(2)]
    expect(sys.canAccessPeer(0, 1)).toBe(false)
    expect(sys.canAccessPeer(1, 0)).toBe(true) // directed
    expect(sys.canAccessPeer(0, 2)).toBe(true)
    expect(sys.canAccessPeer(0, 0)).toBe(false) // never its own peer
    failsWith(() => sys.canAccessPeer(0, 3), "cuDeviceCanAccessPeer", "NoDevice")
    const h1 = d1.memCreate(G)
    const h2 = d2.memCreate(G)
    const h0 = d0.memCreate(G)
    const va = d0.addressReserve(3 * G)
    d0.memMap(va, G, h0)
    d0.memMap((va + G) as Address, G, h1) // mapping is allowed, as cuMemMap is
    d0.memMap((va + 2 * G) as Address, G, h2)
    const before = sys.ledger()
    failsWith(() => d0.setAccess(va, 3 * G), "cuMemSetAccess", "NotSupported", 217)
    expect(sys.ledger()).toEqual(before)
    failsWith(() => d0.translate(va, 1), "translate", "InvalidValue") // nothing was granted
    d0.setAccess(va, G) // its own chunk
    d0.setAccess((va + 2 * G) as Address, G) // device 2's: allowed
    expect(d0.translate(va + 2 * G, 8)).toEqual([{ chunk: h2, offset: 0, bytes: 8 }])
    // Device 1 may access device 0's memory: the pair is directed.
    const r1 = d1.addressReserve(G)
    d1.memMap(r1, G, h0)
    d1.setAccess(r1, G)
    // Allowing the pair later lets the grant through.
    sys.setPeerAccess(0, 1, true)
    expect(sys.canAccessPeer(0, 1)).toBe(true)
    d0.setAccess((va + G) as Address, G)
    sys.setPeerAccess(0, 2, false)
    failsWith(() => d0.setAccess((va + 2 * G) as Address, G), "cuMemSetAccess", "NotSupported", 217)
    expect(() => sys.setPeerAccess(0, 5, true)).toThrow(DriverError)
    d1.memUnmap(r1, G)
    d1.addressFree(r1, G)
    d0.memUnmap(va, 3 * G)
    d0.addressFree(va, 3 * G)
    for (const [d, h] of [[d0, h0], [d1, h1], [d2, h2]] as const) d.memRelease(h)
    expect(sys.liveHandles()).toBe(0)
  })

  it("with peer access off, no device may map another's memory with access", () => {
    const sys = new SimSystem({ devices: 2, device: { capacity: 8 * MiB }, peerAccess: "none" })
    const h = sys.device(1).memCreate(G)
    const va = sys.device(0).addressReserve(G)
    sys.device(0).memMap(va, G, h)
    failsWith(() => sys.device(0).setAccess(va, G), "cuMemSetAccess", "NotSupported", 217)
    sys.device(0).memUnmap(va, G)
    sys.device(0).addressFree(va, G)
    sys.device(1).memRelease(h)
    expect(sys.liveHandles()).toBe(0)
  })

  it("validates its configuration", () => {
    expect(() => new SimSystem({ devices: 0 })).toThrow(DriverError)
    expect(() => new SimSystem({ devices: 17 })).toThrow(DriverError)
    expect(() => new SimSystem({ devices: [{ granularity: G }, { granularity: 2 * G }] })).toThrow(/granularity/)
    expect(() => new SimSystem({ devices: 2 }).device(2)).toThrow(DriverError)
    const sys = new SimSystem({ devices: [{ name: "left" }, {}] })
    expect(sys.device(0).name).toBe("left")
    expect(sys.device(1).name).toContain("simulated device 1")
    expect(sys.device(1).ordinal).toBe(1)
    expect(sys.device(1).peers).toHaveLength(2)
  })

  it("a standalone device is a system of one", () => {
    const d = new SimDriver({ capacity: 8 * MiB })
    expect(d.ordinal).toBe(0)
    expect(d.peers).toEqual([d])
    expect(d.canAccessPeer(0)).toBe(false)
    expect(() => d.canAccessPeer(1)).toThrow(DriverError)
  })
})
