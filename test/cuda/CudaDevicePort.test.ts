/**
 * The CUDA `DriverPort` over the fake libcuda: sessions, granularity and capacity, VMM round
 * trips, aliasing and stitching through real copies, and every error path as a `DriverError`
 * with the right call, reason and code.
 */
import { beforeEach, describe, expect, it } from "@effect/vitest"
import type { CudaLibrary } from "../../src/cuda/Binding.ts"
import { CudaDevicePort, openDevice } from "../../src/cuda/CudaDevicePort.ts"
import type { Address } from "../../src/domain/Units.ts"
import { expectBytes, expectDriverError, fake, freshLibrary, GiB, MiB, pattern } from "./fixture.ts"

const G = 2 * MiB

describe("openDevice", () => {
  let lib: CudaLibrary
  beforeEach(async () => {
    lib = await freshLibrary()
  })

  it("opens the primary context and closes it once", () => {
    const device = openDevice(lib, 0)
    expect(device.name).toBe("Fake CUDA Device 0")
    expect(device.totalMemory).toBe(GiB)
    expect(device.driverVersion).toBe(13000)
    expect(device.isOpen).toBe(true)
    expect(lib.currentContext).toBe(device.context)
    expect(fake.ledger().contextRefs).toBe(1)
    device.close()
    device.close()
    expect(device.isOpen).toBe(false)
    expect(fake.ledger().contextRefs).toBe(0)
    expect(lib.currentContext).toBe(0)
  })

  it("refuses calls on a closed session with InvalidContext", () => {
    const device = openDevice(lib, 0)
    const port = new CudaDevicePort(device)
    device.close()
    expectDriverError(() => port.memCreate(G), { call: "cuCtxSetCurrent", reason: "InvalidContext", detail: /closed/ })
  })

  it("gives NoDevice for an ordinal the driver does not have", () => {
    expectDriverError(() => openDevice(lib, 3), { call: "cuDeviceGet", reason: "NoDevice", code: 101, detail: /1 device/ })
    expectDriverError(() => openDevice(lib, -1), { reason: "NoDevice" })
    expect(fake.ledger().contextRefs).toBe(0)
  })

  it("gives NoDevice when the driver sees no device", () => {
    fake.inject("cuInit", 100)
    expectDriverError(() => openDevice(lib, 0), {
      call: "cuInit",
      reason: "NoDevice",
      code: 100,
      detail: /CUDA_ERROR_NO_DEVICE \(no CUDA-capable device is detected\)/
    })
  })

  it("releases the retained context when making it current fails", () => {
    fake.inject("cuCtxSetCurrent", 201)
    expectDriverError(() => openDevice(lib, 0), { call: "cuCtxSetCurrent", reason: "InvalidContext", code: 201 })
    expect(fake.ledger().contextRefs).toBe(0)
  })
})

describe("CudaDevicePort", () => {
  let lib: CudaLibrary
  beforeEach(async () => {
    lib = await freshLibrary()
  })

  const withPort = <A>(f: (port: CudaDevicePort) => A, options: { readonly ordinal?: number } = {}): A => {
    const device = openDevice(lib, options.ordinal ?? 0)
    try {
      return f(new CudaDevicePort(device))
    } finally {
      device.close()
    }
  }

  const expectNothingLive = () => {
    const l = fake.ledger()
    expect({ ...l, contextRefs: 0 }).toEqual({
      chunks: 0,
      ranges: 0,
      mappings: 0,
      allocations: 0,
      streams: 0,
      events: 0,
      contextRefs: 0,
      usedBytes: 0
    })
  }

  it("reads granularity and capacity from the device", async () => {
    withPort((port) => {
      expect(port.granularity).toBe(G)
      expect(port.capacity).toBe(GiB)
      expect(port.memGetInfo()).toEqual({ free: GiB, total: GiB })
    })
    lib = await freshLibrary({ capacity: 512 * MiB, granularity: 4 * MiB })
    withPort((port) => {
      expect(port.granularity).toBe(4 * MiB)
      expect(port.capacity).toBe(512 * MiB)
    })
  })

  it("creates, reserves, maps, sets access, copies, unmaps, frees and releases", () => {
    withPort((port) => {
      const h = port.memCreate(2 * G)
      const va = port.addressReserve(2 * G)
      expect(va % G).toBe(0)
      expect(Number.isSafeInteger(h) && Number.isSafeInteger(va)).toBe(true)
      port.memMap(va, 2 * G, h)
      port.setAccess(va, 2 * G)
      expect(port.memGetInfo().free).toBe(GiB - 2 * G)
      const data = pattern(3 * MiB, 7)
      port.write(va + 1000, data)
      expectBytes(port.read(va + 1000, data.length), data)
      port.memUnmap(va, 2 * G)
      port.addressFree(va, 2 * G)
      port.memRelease(h)
      expect(port.memGetInfo().free).toBe(GiB)
    })
    expectNothingLive()
  })

  it("shows a chunk mapped at two ranges as the same bytes at both", () => {
    withPort((port) => {
      const h = port.memCreate(G)
      const a = port.addressReserve(G)
      const b = port.addressReserve(G)
      expect(a).not.toBe(b)
      port.memMap(a, G, h)
      port.memMap(b, G, h)
      port.setAccess(a, G)
      port.setAccess(b, G)
      const data = pattern(G, 3)
      port.memcpyHtoD(a, data)
      const back = new Uint8Array(G)
      port.memcpyDtoH(back, b)
      expectBytes(back, data)
      // And the other way, on a sub-range.
      port.memcpyHtoD((b + 4096) as Address, new Uint8Array([9, 8, 7]))
      expectBytes(port.read(a + 4096, 3), new Uint8Array([9, 8, 7]))
      // The physical memory is counted once.
      expect(port.memGetInfo().free).toBe(GiB - G)
      port.memUnmap(a, G)
      port.memUnmap(b, G)
      port.addressFree(a, G)
      port.addressFree(b, G)
      port.memRelease(h)
    })
    expectNothingLive()
  })

  it("stitches two chunks side by side: one copy across the seam lands in both", () => {
    withPort((port) => {
      const [h1, h2] = [port.memCreate(G), port.memCreate(G)]
      const [p1, p2] = [port.addressReserve(G), port.addressReserve(G)]
      port.memMap(p1, G, h1)
      port.memMap(p2, G, h2)
      port.setAccess(p1, G)
      port.setAccess(p2, G)
      const s = port.addressReserve(2 * G)
      port.memMap(s, G, h1)
      port.memMap((s + G) as Address, G, h2)
      port.setAccess(s, 2 * G) // one set-access over both mappings
      const data = pattern(2 * MiB, 11)
      port.write(s + G - MiB, data) // the last MiB of h1 and the first MiB of h2
      expectBytes(port.read(p1 + G - MiB, MiB), data.subarray(0, MiB))
      expectBytes(port.read(p2, MiB), data.subarray(MiB))
      port.memUnmap(s, 2 * G) // one unmap over two adjacent mappings
      port.addressFree(s, 2 * G)
      for (const p of [p1, p2]) {
        port.memUnmap(p, G)
        port.addressFree(p, G)
      }
      port.memRelease(h1)
      port.memRelease(h2)
    })
    expectNothingLive()
  })

  it("keeps a released chunk's memory until its last mapping goes", () => {
    withPort((port) => {
      const h = port.memCreate(G)
      const va = port.addressReserve(G)
      port.memMap(va, G, h)
      port.setAccess(va, G)
      port.write(va, new Uint8Array([42]))
      port.memRelease(h)
      expect(port.memGetInfo().free).toBe(GiB - G)
      expect(port.read(va, 1)).toEqual(new Uint8Array([42]))
      expectDriverError(() => port.memRelease(h), { call: "cuMemRelease", reason: "InvalidValue", code: 1 })
      port.memUnmap(va, G)
      expect(port.memGetInfo().free).toBe(GiB)
      port.addressFree(va, G)
    })
    expectNothingLive()
  })

  it("serves classic allocations, memset and memGetInfo", () => {
    withPort((port) => {
      const a = port.memAlloc(3 * MiB + 5)
      expect(port.memGetInfo().free).toBe(GiB - (3 * MiB + 5))
      port.memset(a, 0xab, 3 * MiB + 5)
      expect(port.read(a + 3 * MiB, 5)).toEqual(new Uint8Array(5).fill(0xab))
      port.memFree(a)
      expectDriverError(() => port.memFree(a), { call: "cuMemFree_v2", reason: "InvalidValue", code: 1 })
    })
    expectNothingLive()
  })

  describe("errors", () => {
    it("refuses a size that is not a multiple of the granularity", () => {
      withPort((port) => {
        const e = expectDriverError(() => port.memCreate(G + 512), { call: "cuMemCreate", reason: "InvalidValue", code: 1 })
        expect(e.detail).toMatch(/CUDA_ERROR_INVALID_VALUE \(invalid argument\)/)
        expect(e.detail).toMatch(/2097664 B/)
        expectDriverError(() => port.addressReserve(MiB), { call: "cuMemAddressReserve", reason: "InvalidValue" })
      })
      expectNothingLive()
    })

    it("refuses sizes koffi would wrap, before the driver sees them", () => {
      withPort((port) => {
        for (const bad of [0, -G, 1.5, Number.NaN, 2 ** 60]) {
          expectDriverError(() => port.memCreate(bad), { call: "cuMemCreate", reason: "InvalidValue", code: 1 })
        }
        expectDriverError(() => port.memset(0 as Address, 256, 1), { call: "cuMemsetD8_v2", reason: "InvalidValue" })
      })
      expectNothingLive()
    })

    it("refuses a mapping over a mapping, and a chunk of another size", () => {
      withPort((port) => {
        const [h1, h2, big] = [port.memCreate(G), port.memCreate(G), port.memCreate(2 * G)]
        const va = port.addressReserve(4 * G)
        port.memMap((va + G) as Address, G, h1)
        expectDriverError(() => port.memMap((va + G) as Address, G, h2), { call: "cuMemMap", reason: "InvalidValue", code: 1 })
        expectDriverError(() => port.memMap(va, 2 * G, big), { call: "cuMemMap", reason: "InvalidValue" })
        expectDriverError(() => port.memMap(va, 2 * G, h2), { call: "cuMemMap", reason: "InvalidValue" })
        expectDriverError(() => port.memMap((va + 4 * G) as Address, G, h2), { call: "cuMemMap", reason: "InvalidValue" })
        port.memUnmap((va + G) as Address, G)
        port.addressFree(va, 4 * G)
        for (const h of [h1, h2, big]) port.memRelease(h)
      })
      expectNothingLive()
    })

    it("refuses an unmap that does not cover whole mappings", () => {
      withPort((port) => {
        const h = port.memCreate(2 * G)
        const va = port.addressReserve(4 * G)
        port.memMap(va, 2 * G, h)
        expectDriverError(() => port.memUnmap(va, G), { call: "cuMemUnmap", reason: "InvalidValue", code: 1 })
        expectDriverError(() => port.memUnmap((va + G) as Address, G), { call: "cuMemUnmap", reason: "InvalidValue" })
        expectDriverError(() => port.memUnmap(va, 3 * G), { call: "cuMemUnmap", reason: "InvalidValue" })
        port.memUnmap(va, 2 * G)
        port.addressFree(va, 4 * G)
        port.memRelease(h)
      })
      expectNothingLive()
    })

    it("refuses set-access over unmapped space, and copies without access", () => {
      withPort((port) => {
        const h = port.memCreate(G)
        const va = port.addressReserve(2 * G)
        port.memMap(va, G, h)
        expectDriverError(() => port.write(va, new Uint8Array(1)), { call: "cuMemcpyHtoD_v2", reason: "InvalidValue" })
        expectDriverError(() => port.setAccess(va, 2 * G), { call: "cuMemSetAccess", reason: "InvalidValue", code: 1 })
        port.setAccess(va, G)
        expectDriverError(() => port.read(va + G - 1, 2), { call: "cuMemcpyDtoH_v2", reason: "InvalidValue" })
        port.memUnmap(va, G)
        port.addressFree(va, 2 * G)
        port.memRelease(h)
      })
      expectNothingLive()
    })

    it("refuses an address free of the wrong size or with mappings left", () => {
      withPort((port) => {
        const h = port.memCreate(G)
        const va = port.addressReserve(2 * G)
        expectDriverError(() => port.addressFree(va, G), { call: "cuMemAddressFree", reason: "InvalidValue", code: 1 })
        port.memMap(va, G, h)
        expectDriverError(() => port.addressFree(va, 2 * G), { call: "cuMemAddressFree", reason: "InvalidValue" })
        port.memUnmap(va, G)
        port.addressFree(va, 2 * G)
        port.memRelease(h)
      })
      expectNothingLive()
    })

    it("runs out of memory past the capacity", async () => {
      lib = await freshLibrary({ capacity: 8 * MiB })
      withPort((port) => {
        const hs = [port.memCreate(G), port.memCreate(G), port.memCreate(G)]
        const e = expectDriverError(() => port.memCreate(2 * G), { call: "cuMemCreate", reason: "OutOfMemory", code: 2 })
        expect(e.detail).toMatch(/CUDA_ERROR_OUT_OF_MEMORY \(out of memory\)/)
        expect(e.detail).toMatch(/4\.00 MiB/)
        expectDriverError(() => port.memAlloc(3 * MiB), { call: "cuMemAlloc_v2", reason: "OutOfMemory", code: 2 })
        hs.push(port.memCreate(G))
        expect(port.memGetInfo().free).toBe(0)
        for (const h of hs) port.memRelease(h)
      })
      expectNothingLive()
    })

    it("gives back what it got when the driver returns an address beyond 2^53", () => {
      withPort((port) => {
        fake.setVaBase(2n ** 53n)
        const e = expectDriverError(() => port.addressReserve(G), { call: "cuMemAddressReserve", reason: "NotSupported" })
        expect(e.detail).toMatch(/0x20000000000000/)
        expect(fake.ledger().ranges).toBe(0)
      })
      expectNothingLive()
    })

    it("maps any injected CUresult to its reason", () => {
      withPort((port) => {
        const cases = [
          ["cuMemMap", 801, "NotSupported"],
          ["cuMemSetAccess", 3, "NotInitialized"],
          ["cuMemUnmap", 700, "Unknown"],
          ["cuMemRelease", 201, "InvalidContext"]
        ] as const
        const h = port.memCreate(G)
        const va = port.addressReserve(G)
        for (const [call, code, reason] of cases) {
          fake.inject(call, code)
          expectDriverError(
            () => {
              if (call === "cuMemMap") port.memMap(va, G, h)
              else if (call === "cuMemSetAccess") port.setAccess(va, G)
              else if (call === "cuMemUnmap") port.memUnmap(va, G)
              else port.memRelease(h)
            },
            { call, reason, code }
          )
          if (call === "cuMemMap") port.memMap(va, G, h) // now for real
        }
        port.memUnmap(va, G)
        port.addressFree(va, G)
        port.memRelease(h)
      })
      expectNothingLive()
    })
  })

  it("switches contexts between ports on two devices", async () => {
    lib = await freshLibrary({ devices: 2 })
    const d0 = openDevice(lib, 0)
    const d1 = openDevice(lib, 1)
    const p0 = new CudaDevicePort(d0)
    const p1 = new CudaDevicePort(d1)
    expect(d0.canAccessPeer(1)).toBe(true)
    expect(d0.canAccessPeer(0)).toBe(false)
    const h1 = p1.memCreate(G)
    expect(lib.currentContext).toBe(d1.context)
    expect(fake.lastStructs().prop[12]).toBe(1) // location.id
    const h0 = p0.memCreate(G)
    expect(lib.currentContext).toBe(d0.context)
    expect(fake.lastStructs().prop[12]).toBe(0)
    p1.memRelease(h1)
    p0.memRelease(h0)
    d1.close()
    // Closing d1 while d0's context is current leaves d0 usable.
    expect(p0.memGetInfo().total).toBe(GiB)
    d0.close()
    expectNothingLive()
  })
})
