/**
 * `gmlake selftest`: the check a user runs to know the allocator works on their machine: the
 * device and driver, the granularity, a stitch whose bytes are written through one virtual range
 * and read back through the other, an allocate/free cycle after which the device's free memory
 * is back where it started, and the measured latency of each VMM call.
 *
 * @since 0.1.0
 */
import { Effect } from "effect"
import type { DriverCallKind } from "../domain/DriverPort.ts"
import { StitchingAllocator } from "../domain/policies/gmlake/StitchingAllocator.ts"
import { type Address, type ChunkHandle, formatBytes } from "../domain/Units.ts"
import { executeMap, executeUnmap } from "../domain/vmm/Plan.ts"
import { Driver, driverCall } from "../services/Driver.ts"
import { Vmm } from "../services/Vmm.ts"

/** One check's outcome. @category models */
export interface Check {
  readonly name: string
  readonly ok: boolean
  readonly detail: string
}

/** The selftest's report. @category models */
export interface SelftestReport {
  readonly device: string
  readonly deviceName: string
  readonly driverVersion: string | null
  readonly granularity: number
  readonly capacity: number
  readonly checks: ReadonlyArray<Check>
  /** Median microseconds per call, at one granule (and a 64 MiB size where noted). */
  readonly latencyMicros: Partial<Record<DriverCallKind | "stitch8PerChunk", number>>
  readonly ok: boolean
}

const median = (xs: Array<number>) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0
const now = () => Number(process.hrtime.bigint()) / 1000

/** A recognisable pattern of `n` bytes. */
const pattern = (n: number, salt: number) => {
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i++) out[i] = (i * 131 + salt + (i >>> 8)) & 255
  return out
}

const equal = (a: Uint8Array, b: Uint8Array) => {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/**
 * Runs the selftest on the session's device.
 * @category selftest
 */
export const selftest = (options: { readonly latencyIterations?: number } = {}) =>
  Effect.gen(function*() {
    const driver = yield* Driver
    const vmm = yield* Vmm
    const g = driver.info.granularity
    const checks: Array<Check> = []
    const check = (name: string, ok: boolean, detail: string) => checks.push({ name, ok, detail })
    const startInfo = yield* driver.memGetInfo
    check("device", true, `${driver.info.name}, ${formatBytes(driver.info.capacity)}, ` +
      `${formatBytes(startInfo.free)} free${driver.info.driverVersion ? `, driver ${driver.info.driverVersion}` : ""}`)
    check("granularity", g > 0 && (g & (g - 1)) === 0, `${formatBytes(g)}`)

    // A stitch: two chunks mapped in one order at range A, in the other order at range B; bytes
    // written through A must read back through B, with the halves swapped.
    const stitch = yield* Effect.scoped(Effect.gen(function*() {
      const c1 = yield* vmm.chunk(g)
      const c2 = yield* vmm.chunk(g)
      const a = yield* vmm.range(2 * g)
      const b = yield* vmm.range(2 * g)
      yield* vmm.map(a.address, c1)
      yield* vmm.map((a.address + g) as Address, c2)
      yield* vmm.map(b.address, c2)
      yield* vmm.map((b.address + g) as Address, c1)
      const data = pattern(2 * g, 7)
      yield* driver.write(a.address, data)
      yield* driver.synchronize
      const back = yield* driver.read(b.address, 2 * g)
      const swapped = new Uint8Array(2 * g)
      swapped.set(data.subarray(g), 0)
      swapped.set(data.subarray(0, g), g)
      return equal(back, swapped)
    })).pipe(Effect.catch((e) => Effect.succeed(e.message)))
    check("stitch", stitch === true,
      stitch === true
        ? `${formatBytes(2 * g)} written through one range read back through a stitched alias`
        : typeof stitch === "string" ? stitch : "bytes read through the stitched range differ")

    // An allocate/free cycle through the stitching allocator: the device's free memory must come
    // back to where it started once the cache is emptied.
    const before = (yield* driver.memGetInfo).free
    const cycle = yield* driverCall(() => {
      const a = new StitchingAllocator(driver.port)
      const blocks = []
      // Every other granule freed: no free run holds four granules, so the request is stitched.
      for (let i = 0; i < 16; i++) blocks.push(a.malloc(g, 0))
      for (let i = 0; i < blocks.length; i += 2) a.free(blocks[i]!)
      const stitched = a.malloc(4 * g, 0)
      const peak = a.reserved()
      a.free(stitched)
      for (let i = 1; i < blocks.length; i += 2) a.free(blocks[i]!)
      a.emptyCache()
      return { peak, counters: a.counters(), left: a.reserved() }
    }).pipe(Effect.result)
    const after = (yield* driver.memGetInfo).free
    if (cycle._tag === "Success") {
      const c = cycle.success
      check("allocate/free cycle", after === before && c.left === 0 && c.counters.stitches > 0,
        `peak reserved ${formatBytes(c.peak)}, ${c.counters.stitches} stitch(es); free memory ` +
          (after === before ? `back to ${formatBytes(before)}` : `${formatBytes(before)} before, ${formatBytes(after)} after`))
    } else check("allocate/free cycle", false, cycle.failure.message)

    // Latency of each VMM call at one granule.
    const n = options.latencyIterations ?? 20
    const port = driver.port
    const lat: Record<string, Array<number>> = {}
    const time = (k: string, f: () => void) => {
      const t = now()
      f()
      ;(lat[k] ??= []).push(now() - t)
    }
    const latency = yield* driverCall(() => {
      for (let i = 0; i < n; i++) {
        let h = 0 as ChunkHandle
        let va = 0 as Address
        time("memCreate", () => (h = port.memCreate(g)))
        time("addressReserve", () => (va = port.addressReserve(g)))
        time("memMap", () => port.memMap(va, g, h))
        time("setAccess", () => port.setAccess(va, g))
        time("memUnmap", () => port.memUnmap(va, g))
        time("addressFree", () => port.addressFree(va, g))
        time("memRelease", () => port.memRelease(h))
      }
      // Stitching eight separate chunks into one range: maps plus one set-access over it.
      const hs = Array.from({ length: 8 }, () => port.memCreate(g))
      const sizes = hs.map(() => g)
      for (let r = 0; r < Math.max(3, n / 4); r++) {
        const va = port.addressReserve(8 * g)
        const t = now()
        executeMap(port, { reserve: 0, at: va, sizes, handles: hs, create: false })
        ;(lat["stitch8PerChunk"] ??= []).push((now() - t) / 8)
        executeUnmap(port, { at: va, bytes: 8 * g, handles: [], freeBase: va, freeBytes: 8 * g })
      }
      for (const h of hs) port.memRelease(h)
      const out: Record<string, number> = {}
      for (const k in lat) out[k] = Math.round(median(lat[k]!) * 100) / 100
      return out
    }).pipe(Effect.result)
    if (latency._tag === "Failure") check("latency", false, latency.failure.message)
    const end = (yield* driver.memGetInfo).free
    check("memory given back", end === startInfo.free,
      end === startInfo.free ? `free memory at its start value, ${formatBytes(end)}` : `${formatBytes(startInfo.free - end)} not given back`)
    const report: SelftestReport = {
      device: driver.info.kind,
      deviceName: driver.info.name,
      driverVersion: driver.info.driverVersion ?? null,
      granularity: g,
      capacity: driver.info.capacity,
      checks,
      latencyMicros: latency._tag === "Success" ? latency.success : {},
      ok: checks.every((c) => c.ok)
    }
    return report
  })
