/**
 * Streams, events and stream-ordered work of the CUDA port over the fake libcuda, whose events
 * answer NOT_READY to their first query after a record (Note [Fake device model]).
 */
import { beforeEach, describe, expect, it } from "@effect/vitest"
import type { CudaLibrary } from "../../src/cuda/Binding.ts"
import { CudaDevicePort, type CudaContext, defaultStream, openDevice } from "../../src/cuda/CudaDevicePort.ts"
import type { Address } from "../../src/domain/Units.ts"
import { expectBytes, expectDriverError, fake, freshLibrary, MiB, pattern } from "./fixture.ts"

const G = 2 * MiB

describe("CudaDevicePort streams and events", () => {
  let lib: CudaLibrary
  let device: CudaContext
  let port: CudaDevicePort
  beforeEach(async () => {
    lib = await freshLibrary()
    device = openDevice(lib, 0)
    port = new CudaDevicePort(device)
    return () => {
      device.close()
      const l = fake.ledger()
      expect([l.streams, l.events, l.contextRefs]).toEqual([0, 0, 0])
    }
  })

  it("creates, synchronizes and destroys streams", () => {
    const s = port.streamCreate()
    const t = port.streamCreate({ nonBlocking: false })
    expect(s).toBeGreaterThan(0)
    expect(s).not.toBe(t)
    expect(fake.ledger().streams).toBe(2)
    port.streamSynchronize(s)
    port.streamSynchronize(defaultStream)
    port.ctxSynchronize()
    port.streamDestroy(s)
    port.streamDestroy(t)
    expectDriverError(() => port.streamDestroy(s), { call: "cuStreamDestroy_v2", reason: "InvalidValue", code: 400 })
    expectDriverError(() => port.streamSynchronize(s), { call: "cuStreamSynchronize", code: 400 })
  })

  it("records an event that completes after the work before it", () => {
    const s = port.streamCreate()
    const e = port.eventRecord(s)
    expect(port.eventQuery(e)).toBe(false) // CUDA_ERROR_NOT_READY is an answer, not an error
    expect(port.eventQuery(e)).toBe(true)
    port.eventRecordExisting(e, s)
    port.eventSynchronize(e)
    expect(port.eventQuery(e)).toBe(true)
    port.eventDestroy(e)
    port.streamDestroy(s)
  })

  it("treats an event never recorded as complete, and a destroyed one as an error", () => {
    const e = port.eventCreate({ timing: true, blockingSync: true })
    expect(port.eventQuery(e)).toBe(true)
    port.eventDestroy(e)
    expectDriverError(() => port.eventQuery(e), { call: "cuEventQuery", reason: "InvalidValue", code: 400 })
    expectDriverError(() => port.eventDestroy(e), { call: "cuEventDestroy_v2", code: 400 })
  })

  it("orders a stream after another's event", () => {
    const [a, b] = [port.streamCreate(), port.streamCreate()]
    fake.setEventPolls(3)
    const e = port.eventRecord(a)
    port.streamWaitEvent(b, e)
    expect([port.eventQuery(e), port.eventQuery(e), port.eventQuery(e), port.eventQuery(e)]).toEqual([
      false,
      false,
      false,
      true
    ])
    port.eventDestroy(e)
    port.streamDestroy(a)
    port.streamDestroy(b)
  })

  it("leaves no event behind when recording fails", () => {
    const s = port.streamCreate()
    fake.inject("cuEventRecord", 400)
    expectDriverError(() => port.eventRecord(s), { call: "cuEventRecord", reason: "InvalidValue", code: 400 })
    expect(fake.ledger().events).toBe(0)
    port.streamDestroy(s)
  })

  it("runs memset and device-to-device copies on a stream, through aliases", () => {
    const s = port.streamCreate()
    const h = port.memCreate(G)
    const [a, b] = [port.addressReserve(G), port.addressReserve(G)]
    for (const va of [a, b]) {
      port.memMap(va, G, h)
      port.setAccess(va, G)
    }
    port.memsetAsync(a, 0x5a, 4096, s)
    port.memcpyHtoD((a + MiB) as Address, pattern(4096, 1))
    port.memcpyDtoDAsync(b, (a + MiB) as Address, 4096, s) // b aliases a: overwrites the 0x5a bytes
    port.streamSynchronize(s)
    expectBytes(port.read(a, 4096), pattern(4096, 1))
    expectDriverError(() => port.memsetAsync(a, 1, 16, 12345 as never), { call: "cuMemsetD8Async", code: 400 })
    expectDriverError(() => port.memcpyDtoDAsync(a, (b + G) as Address, 16, s), {
      call: "cuMemcpyDtoDAsync_v2",
      reason: "InvalidValue"
    })
    for (const va of [a, b]) {
      port.memUnmap(va, G)
      port.addressFree(va, G)
    }
    port.memRelease(h)
    port.streamDestroy(s)
  })
})
