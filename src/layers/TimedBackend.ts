/**
 * A `DeviceIo` adaptor that measures the wall time of every driver call it passes on, by
 * kind: the driver time a replay really spent on the GPU, to hold the model's `driverMicros`
 * against (Note [Driver-time model]). Two clock reads per call (about 0.1 us) against calls of
 * 2 us and more.
 *
 * @since 0.2.0
 */
import type { DriverCallKind } from "../domain/DriverPort.ts"
import type { DeviceIo } from "./DriverLayer.ts"
import { type CallCounts, zeroCallCounts } from "./MeteredPort.ts"

/** What the timer measured. @category models */
export interface DriverTimes {
  /** Microseconds spent inside driver calls, by kind (failed calls included). */
  readonly micros: CallCounts
  /** Calls timed, by kind. */
  readonly calls: CallCounts
  /** Microseconds inside driver calls, all kinds together. */
  readonly total: number
}

/**
 * Wraps `backend`; `times()` reads what was measured so far.
 * @category constructors
 */
export const timedBackend = (backend: DeviceIo): { readonly backend: DeviceIo; readonly times: () => DriverTimes } => {
  const micros = zeroCallCounts()
  const calls = zeroCallCounts()
  const timed = <A>(kind: DriverCallKind, f: () => A): A => {
    const t0 = process.hrtime.bigint()
    try {
      return f()
    } finally {
      micros[kind] += Number(process.hrtime.bigint() - t0) / 1000
      calls[kind]++
    }
  }
  const wrapped: DeviceIo = {
    ...backend,
    get granularity() {
      return backend.granularity
    },
    get capacity() {
      return backend.capacity
    },
    memCreate: (bytes) => timed("memCreate", () => backend.memCreate(bytes)),
    memRelease: (h) => timed("memRelease", () => backend.memRelease(h)),
    addressReserve: (bytes) => timed("addressReserve", () => backend.addressReserve(bytes)),
    addressFree: (va, bytes) => timed("addressFree", () => backend.addressFree(va, bytes)),
    memMap: (va, bytes, h) => timed("memMap", () => backend.memMap(va, bytes, h)),
    memUnmap: (va, bytes) => timed("memUnmap", () => backend.memUnmap(va, bytes)),
    setAccess: (va, bytes) => timed("setAccess", () => backend.setAccess(va, bytes)),
    memAlloc: (bytes) => timed("memAlloc", () => backend.memAlloc(bytes)),
    memFree: (va) => timed("memFree", () => backend.memFree(va))
  }
  const times = (): DriverTimes => {
    let total = 0
    for (const k in micros) total += micros[k as DriverCallKind]
    return { micros: { ...micros }, calls: { ...calls }, total }
  }
  return { backend: wrapped, times }
}
