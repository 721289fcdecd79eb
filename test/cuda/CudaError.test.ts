/**
 * The one CUresult mapping: reasons, names and the detail a user reads.
 */
import { describe, expect, it } from "@effect/vitest"
import { classify, codeName, cudaError, CUresult } from "../../src/cuda/CudaError.ts"
import type { DriverFailureReason } from "../../src/domain/Errors.ts"

describe("CudaError", () => {
  it("classifies every named CUresult", () => {
    const expected: ReadonlyArray<readonly [number, DriverFailureReason]> = [
      [CUresult.INVALID_VALUE, "InvalidValue"],
      [CUresult.OUT_OF_MEMORY, "OutOfMemory"],
      [CUresult.NOT_INITIALIZED, "NotInitialized"],
      [CUresult.DEINITIALIZED, "NotInitialized"],
      [CUresult.STUB_LIBRARY, "NoDevice"],
      [CUresult.CALL_REQUIRES_NEWER_DRIVER, "NotSupported"],
      [CUresult.DEVICE_UNAVAILABLE, "NoDevice"],
      [CUresult.NO_DEVICE, "NoDevice"],
      [CUresult.INVALID_DEVICE, "NoDevice"],
      [CUresult.DEVICE_NOT_LICENSED, "NotSupported"],
      [CUresult.INVALID_CONTEXT, "InvalidContext"],
      [CUresult.CONTEXT_IS_DESTROYED, "InvalidContext"],
      [CUresult.CONTEXT_ALREADY_IN_USE, "InvalidContext"],
      [CUresult.ALREADY_MAPPED, "InvalidValue"],
      [CUresult.NOT_MAPPED, "InvalidValue"],
      [CUresult.INVALID_HANDLE, "InvalidValue"],
      [CUresult.ILLEGAL_STATE, "InvalidValue"],
      [CUresult.NOT_FOUND, "NotSupported"],
      [CUresult.NOT_READY, "NotReady"],
      [CUresult.PEER_ACCESS_UNSUPPORTED, "NotSupported"],
      [CUresult.NOT_PERMITTED, "NotSupported"],
      [CUresult.NOT_SUPPORTED, "NotSupported"],
      [CUresult.COMPAT_NOT_SUPPORTED_ON_DEVICE, "NotSupported"],
      [CUresult.SYSTEM_NOT_READY, "NoDevice"],
      [CUresult.SYSTEM_DRIVER_MISMATCH, "NotSupported"],
      [CUresult.ILLEGAL_ADDRESS, "Unknown"],
      [CUresult.LAUNCH_FAILED, "Unknown"],
      [CUresult.ECC_UNCORRECTABLE, "Unknown"],
      [CUresult.OPERATING_SYSTEM, "Unknown"],
      [CUresult.UNKNOWN, "Unknown"],
      [4242, "Unknown"]
    ]
    for (const [code, reason] of expected) expect([code, classify(code).reason]).toEqual([code, reason])
    // Every named code is covered above.
    const covered = new Set(expected.map(([code]) => code))
    for (const code of Object.values(CUresult)) if (code !== 0) expect(covered.has(code)).toBe(true)
  })

  it("names codes as cuda.h does when the driver cannot", () => {
    expect(codeName(2)).toBe("CUDA_ERROR_OUT_OF_MEMORY")
    expect(codeName(0)).toBe("CUDA_SUCCESS")
    expect(codeName(4242)).toBe("CUresult 4242")
  })

  it("puts the driver's words, the meaning and the context in the detail", () => {
    const describe = (code: number) => (code === 2 ? { name: "CUDA_ERROR_OUT_OF_MEMORY", text: "out of memory" } : undefined)
    const e = cudaError("cuMemCreate", 2, describe, "a 2.00 MiB chunk")
    expect(e.call).toBe("cuMemCreate")
    expect(e.reason).toBe("OutOfMemory")
    expect(e.code).toBe(2)
    expect(e.detail).toBe(
      "CUDA_ERROR_OUT_OF_MEMORY (out of memory): the device has no memory left for this request " +
        "(other processes may hold device memory too); a 2.00 MiB chunk"
    )
    expect(e.message).toMatch(/^cuMemCreate failed: OutOfMemory \(CUresult 2\): CUDA_ERROR_OUT_OF_MEMORY/)
    const bare = cudaError("cuMemMap", 208)
    expect(bare.detail).toBe("CUDA_ERROR_ALREADY_MAPPED: the virtual range is already mapped")
    expect(cudaError("cuMemMap", 4242, describe).detail).toMatch(/^CUresult 4242: an unexpected driver error$/)
  })
})
