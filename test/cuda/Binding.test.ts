/**
 * The koffi binding against the fake libcuda: symbols, struct layouts (koffi's against the C
 * compiler's, compiled against cuda.h where present), the struct bytes the driver receives,
 * loading failures and missing entry points.
 */
import { describe, expect, it } from "@effect/vitest"
import { bindCuda, cudaSymbols, loadCuda, OutSlot, sessionSymbols, vmmSymbols } from "../../src/cuda/Binding.ts"
import { CudaDevicePort, openDevice } from "../../src/cuda/CudaDevicePort.ts"
import { DriverError } from "../../src/domain/Errors.ts"
import { fakeCuda } from "../fake-cuda/control.ts"
import { expectDriverError, fake, freshLibrary, libraries } from "./fixture.ts"

describe("Binding", () => {
  it("binds every entry point of the fake, under cuda.h's exported names", async () => {
    const lib = await freshLibrary()
    expect(lib.missing).toEqual([])
    expect(cudaSymbols).toHaveLength(38)
    for (const s of ["cuMemGetInfo_v2", "cuMemAlloc_v2", "cuStreamDestroy_v2", "cuDevicePrimaryCtxRelease_v2", "cuMemsetD8Async"]) {
      expect(cudaSymbols).toContain(s)
    }
  })

  it("lays out the VMM structs as the C compiler does", async () => {
    const lib = await freshLibrary()
    const koffiLayout = lib.structLayout()
    const c = fake.layout()
    expect(koffiLayout.allocationProp).toEqual({
      size: 32,
      type: 0,
      requestedHandleTypes: 4,
      location: 8,
      locationId: 12,
      win32HandleMetaData: 16,
      allocFlags: 24
    })
    expect(koffiLayout.location).toEqual({ size: 8, type: 0, id: 4 })
    expect(koffiLayout.accessDesc).toEqual({ size: 12, location: 0, flags: 8 })
    expect(c.allocationProp).toEqual(koffiLayout.allocationProp)
    expect(c.location.size).toBe(koffiLayout.location.size)
    expect(c.accessDesc).toEqual(koffiLayout.accessDesc)
    expect(c.withCudaH).toBe(libraries.withCudaH)
  })

  it("pre-encodes the allocation properties and access descriptor byte for byte", async () => {
    const lib = await freshLibrary({ devices: 2 })
    const prop = lib.encodeAllocationProp(1)
    // type PINNED, no handle types, location { DEVICE, 1 }, win32 NULL, allocFlags zero.
    expect([...prop]).toEqual([1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, ...new Array<number>(16).fill(0)])
    expect([...lib.encodeAccessDesc(1)]).toEqual([1, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0])
    expect([...lib.encodeAccessDesc(0, 1)]).toEqual([1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0])

    // And the driver receives exactly those bytes.
    const device = openDevice(lib, 1)
    const port = new CudaDevicePort(device)
    const h = port.memCreate(2 * 1024 * 1024)
    const va = port.addressReserve(2 * 1024 * 1024)
    port.memMap(va, 2 * 1024 * 1024, h)
    port.setAccess(va, 2 * 1024 * 1024)
    const seen = fake.lastStructs()
    expect([...seen.prop]).toEqual([...prop])
    expect([...seen.access]).toEqual([...lib.encodeAccessDesc(1)])
    port.memUnmap(va, 2 * 1024 * 1024)
    port.addressFree(va, 2 * 1024 * 1024)
    port.memRelease(h)
    device.close()
  })

  it("meets a fake that enforces the driver's argument rules (offset 0, flags 0, a current context)", async () => {
    const lib = await freshLibrary()
    const api = lib.api
    const prop = lib.encodeAllocationProp(0)
    const slot = new OutSlot()
    expect(api.cuMemCreate(slot.slot, 2 << 20, prop, 0)).toBe(3) // CUDA_ERROR_NOT_INITIALIZED before cuInit
    const device = openDevice(lib, 0)
    expect(api.cuMemCreate(slot.slot, 2 << 20, prop, 1)).toBe(1) // flags must be 0
    expect(api.cuMemCreate(slot.slot, 2 << 20, lib.encodeAllocationProp(5), 0)).toBe(1) // no device 5
    expect(api.cuMemCreate(slot.slot, 2 << 20, prop, 0)).toBe(0)
    const h = slot.value
    expect(api.cuMemAddressReserve(slot.slot, 4 << 20, 0, 0, 0)).toBe(0)
    const va = slot.value
    expect(api.cuMemMap(va, 2 << 20, 4096, h, 0)).toBe(1) // offset must be 0
    expect(api.cuMemMap(va + 4096, 2 << 20, 0, h, 0)).toBe(1) // unaligned address
    expect(api.cuMemMap(va, 2 << 20, 0, h, 0)).toBe(0)
    expect(api.cuMemSetAccess(va, 2 << 20, lib.encodeAccessDesc(0, 2), 1)).toBe(1) // no such protection
    expect(api.cuMemUnmap(va, 2 << 20)).toBe(0)
    api.cuCtxSetCurrent(0)
    lib.currentContext = 0
    expect(api.cuMemAddressFree(va, 4 << 20)).toBe(201) // CUDA_ERROR_INVALID_CONTEXT without a current context
    device.makeCurrent()
    expect(api.cuMemAddressFree(va, 4 << 20)).toBe(0)
    expect(api.cuMemRelease(h)).toBe(0)
    device.close()
    expect(fake.ledger().chunks + fake.ledger().ranges).toBe(0)
  })

  it("asks the driver for error names and texts", async () => {
    const lib = await freshLibrary()
    expect(lib.describe(2)).toEqual({ name: "CUDA_ERROR_OUT_OF_MEMORY", text: "out of memory" })
    expect(lib.describe(123456)).toBeUndefined()
  })

  it("reads 64-bit out slots as numbers below 2^53 and flags the rest", () => {
    const slot = new OutSlot()
    slot.slot[0] = 0x7f00_0020_0000n
    expect(slot.value).toBe(0x7f00_0020_0000)
    slot.slot[0] = 2n ** 53n - 1n
    expect(slot.value).toBe(2 ** 53 - 1)
    slot.slot[0] = 2n ** 53n
    expect(slot.value).toBe(-1)
    expect(slot.big).toBe(2n ** 53n)
    slot.slot[0] = 2n ** 64n - 1n
    expect(slot.value).toBe(-1)
  })

  it("turns a missing library into a NoDevice DriverError, not a crash", async () => {
    const error = await loadCuda("/nonexistent/libcuda.so.1").then(
      () => undefined,
      (e: unknown) => e
    )
    expect(error).toBeInstanceOf(DriverError)
    const e = error as DriverError
    expect(e.call).toBe("dlopen")
    expect(e.reason).toBe("NoDevice")
    expect(e.code).toBe(100)
    expect(e.detail).toMatch(/\/nonexistent\/libcuda\.so\.1/)
    expect(e.detail).toMatch(/no NVIDIA driver/)
  })

  it("turns a missing koffi into a NotSupported DriverError", async () => {
    const error = await loadCuda(libraries.full, {
      importKoffi: () => Promise.reject(new Error("Cannot find package 'koffi'"))
    }).then(() => undefined, (e: unknown) => e)
    expect(error).toBeInstanceOf(DriverError)
    expect((error as DriverError).reason).toBe("NotSupported")
    expect((error as DriverError).call).toBe("import(koffi)")
    expect((error as DriverError).detail).toMatch(/koffi/)
  })

  it("reports a driver without the VMM entry points clearly (driver too old)", async () => {
    const lib = await loadCuda(libraries.noVmm)
    fakeCuda(libraries.noVmm).reset({ capacity: 1 << 30, granularity: 2 << 20, devices: 1 })
    expect([...lib.missing].sort()).toEqual([...vmmSymbols].sort())
    const device = openDevice(lib, 0)
    const e = expectDriverError(() => new CudaDevicePort(device), { reason: "NotSupported", code: 500 })
    for (const s of vmmSymbols) expect(e.detail).toContain(s)
    expect(e.detail).toMatch(/too old/)
    // Calling a missing entry point directly is a DriverError too.
    expectDriverError(() => lib.api.cuMemCreate(new BigUint64Array(1), 2 << 20, new Uint8Array(32), 0), {
      call: "cuMemCreate",
      reason: "NotSupported"
    })
    device.close()
  })

  it("reports a library that is not a CUDA driver at all", async () => {
    const { default: koffi } = await import("koffi")
    const lib = bindCuda(koffi, "libc.so.6")
    expect(lib.missing).toHaveLength(cudaSymbols.length)
    const e = expectDriverError(() => openDevice(lib, 0), { call: "cuInit", reason: "NotSupported" })
    for (const s of sessionSymbols) expect(e.detail).toContain(s)
    // No error names to ask for: the binding falls back to its own.
    expect(lib.describe(2)).toBeUndefined()
  })
})
