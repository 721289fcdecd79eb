/**
 * Note [Refusing what cannot fit] on the CUDA binding (over the fake libcuda): the device's free
 * memory comes from cuMemGetInfo, so memory another user holds counts, and a refused request
 * makes no allocating driver call.
 */
import { afterEach, beforeEach, describe, expect, it } from "@effect/vitest"
import type { CudaLibrary } from "../../src/cuda/Binding.ts"
import { type CudaContext, CudaDevicePort, openDevice } from "../../src/cuda/CudaDevicePort.ts"
import { policyNames } from "../../src/domain/Allocator.ts"
import { OutOfMemoryError } from "../../src/domain/Errors.ts"
import { makeAllocator } from "../../src/domain/policies/Policies.ts"
import { MeteredPort } from "../../src/layers/MeteredPort.ts"
import { fake, freshLibrary, GiB, MiB } from "./fixture.ts"

describe.each(policyNames)("admission on CUDA: %s", (policy) => {
  let lib: CudaLibrary
  let device: CudaContext
  beforeEach(async () => {
    lib = await freshLibrary({ capacity: GiB })
    device = openDevice(lib, 0)
  })
  afterEach(() => device.close())

  it("refuses, with no allocating call, what exceeds the device or its free memory plus what it holds", () => {
    const port = new CudaDevicePort(device)
    const other = port.memCreate(512 * MiB) // another user of the device
    const metered = new MeteredPort(port)
    const a = makeAllocator(policy, metered)
    for (const size of [2 * GiB, 768 * MiB]) {
      let thrown: unknown
      try {
        a.malloc(size, 0)
      } catch (e) {
        thrown = e
      }
      expect(thrown).toBeInstanceOf(OutOfMemoryError)
      expect((thrown as OutOfMemoryError).capacity).toBe(GiB)
      expect((thrown as OutOfMemoryError).deviceFree).toBeLessThanOrEqual(512 * MiB)
      expect(metered.totalCalls()).toBe(0)
      expect(fake.ledger().usedBytes).toBe(512 * MiB)
    }
    const b = a.malloc(256 * MiB, 0)
    a.free(b)
    a.emptyCache()
    port.memRelease(other)
    expect(fake.ledger().usedBytes).toBe(0)
  })
})
