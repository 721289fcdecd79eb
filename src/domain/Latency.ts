/**
 * What driver calls cost on an NVIDIA H100 80GB (DESIGN.md section 6: median microseconds per
 * call through koffi, measured at 2, 16, 64 and 512 MiB). Used to estimate the driver time a
 * replay's plan would take on the real device (`driverMicros`), on the simulator.
 *
 * Between measured sizes the cost is interpolated linearly in log2(size); outside, it is clamped
 * to the nearest measurement. For `memUnmap` and `setAccess` over several mappings at once the
 * size is the whole extent (one call over a contiguous range, as the allocator issues them).
 *
 * @since 0.1.0
 */
import type { DriverCallKind } from "./DriverPort.ts"

const SIZES_MIB = [2, 16, 64, 512] as const

/** Median microseconds per call at 2, 16, 64 and 512 MiB. @category models */
export const h100Latency: Record<DriverCallKind, readonly [number, number, number, number]> = {
  memCreate: [22, 21, 47, 43],
  addressReserve: [2.9, 2.6, 7.6, 9.4],
  memMap: [2.5, 2.1, 2.7, 3.9],
  setAccess: [33, 33, 56, 79],
  memUnmap: [22, 22, 32, 39],
  memRelease: [16, 29, 76, 330],
  addressFree: [1.7, 1.4, 4.8, 5.7],
  memAlloc: [54, 55, 74, 118],
  memFree: [43, 58, 89, 367]
}

/**
 * Estimated microseconds for one call of `kind` over `bytes`.
 * @category models
 */
export const estimateMicros = (kind: DriverCallKind, bytes: number): number => {
  const row = h100Latency[kind]
  const mib = bytes / (1024 * 1024)
  if (!(mib > SIZES_MIB[0])) return row[0]
  if (mib >= SIZES_MIB[3]) return row[3]
  const x = Math.log2(mib)
  for (let i = 0; i < 3; i++) {
    const lo = SIZES_MIB[i]!
    const hi = SIZES_MIB[i + 1]!
    if (mib <= hi) {
      const t = (x - Math.log2(lo)) / (Math.log2(hi) - Math.log2(lo))
      return row[i]! + t * (row[i + 1]! - row[i]!)
    }
  }
  return row[3]
}
