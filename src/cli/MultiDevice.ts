/**
 * The multi-device part of `gmlake selftest --device cuda`: every visible device, and peer
 * access between every ordered pair of them, checked with bytes.
 *
 * Note [Multi-device selftest]
 * ----------------------------
 * For each device i (`cuDeviceGetCount`): a session on its primary context, a chunk created on
 * it, mapped with access for i, written and read back through i. For each ordered pair (i, j),
 * i != j: `cuDeviceCanAccessPeer(i, j)`; where it allows access, the peer-stitching path itself
 * (Note [Peer stitching]): a chunk created on j (its location is j), mapped into a range reserved
 * through i's port with access granted to i only, written through that mapping in i's context,
 * then mapped into a second range through j's port with access for j and read back there, in j's
 * context: the bytes must be the same. A pair without peer access is reported as such (it is a
 * fact of the machine, not a failure; peer stitching then never borrows across it). Finally every
 * device's free memory must be back where it started.
 *
 * It opens its own sessions and switches contexts between devices on this thread, so run it
 * while no other CUDA session of this process is open (before or after the single-device
 * selftest's session, not inside it): a session's binding remembers which context it made
 * current (Note [One context per thread]). Every device is closed, and no context is left
 * current, when it returns. It never fails: a failure is a check with `ok: false`. It never
 * creates NVLink multicast objects.
 *
 * @since 0.1.0
 */
import { Effect, type Scope } from "effect"
import { type CudaLibrary, loadCuda } from "../cuda/Binding.ts"
import { cudaError } from "../cuda/CudaError.ts"
import { type CudaDevice, CudaPort, openDevice } from "../cuda/CudaPort.ts"
import { DriverError } from "../domain/Errors.ts"
import { type Address, type ChunkHandle, formatBytes } from "../domain/Units.ts"
import { executeMap } from "../domain/vmm/Plan.ts"
import { driverCall } from "../services/Driver.ts"

/** One check's outcome (the same shape as the selftest's checks). @category models */
export interface MultiDeviceCheck {
  readonly name: string
  readonly ok: boolean
  readonly detail: string
}

/** @category models */
export interface MultiDeviceOptions {
  /** The driver library (default: `$GMLAKE_LIBCUDA` if set, else `libcuda.so.1`). */
  readonly library?: string
  /** Bytes written and read per check, rounded up to the granularity (default: one granule). */
  readonly bytes?: number
}

/** A recognisable pattern of `n` bytes, different per salt. */
const pattern = (n: number, salt: number): Uint8Array => {
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i++) out[i] = (i * 131 + salt * 29 + (i >>> 9)) & 255
  return out
}

const firstDifference = (a: Uint8Array, b: Uint8Array): number => {
  if (a.length !== b.length) return Math.min(a.length, b.length)
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i
  return -1
}

/** Releases cannot fail: a handle that will not go is reported by the memory check at the end. */
const quietly = (f: () => void) =>
  Effect.sync(() => {
    try {
      f()
    } catch {
      // counted by the "memory given back" check
    }
  })

const chunkOn = (port: CudaPort, bytes: number) =>
  Effect.acquireRelease(driverCall(() => port.memCreate(bytes)), (h) => quietly(() => port.memRelease(h)))

const rangeOn = (port: CudaPort, bytes: number) =>
  Effect.acquireRelease(driverCall(() => port.addressReserve(bytes)), (va) => quietly(() => port.addressFree(va, bytes)))

/** Maps `handle` at `va` through `port` and grants `port`'s device access; unmapped at scope close. */
const mapWithAccess = (port: CudaPort, va: Address, bytes: number, handle: ChunkHandle) =>
  Effect.acquireRelease(
    driverCall(() => {
      executeMap(port, { reserve: 0, at: va, sizes: [bytes], handles: [handle], create: false })
    }),
    () => quietly(() => port.memUnmap(va, bytes))
  )

const message = (e: unknown): string => (e instanceof Error ? e.message : String(e))

/** Runs a scoped check; a failure becomes `ok: false` with its message. */
const attempt = (
  name: string,
  body: Effect.Effect<MultiDeviceCheck, DriverError, Scope.Scope>
): Effect.Effect<MultiDeviceCheck> =>
  Effect.scoped(body).pipe(
    Effect.catch((e) => Effect.succeed({ name, ok: false, detail: message(e) })),
    Effect.catchDefect((e) => Effect.succeed({ name, ok: false, detail: `defect: ${message(e)}` }))
  )

/** The device count the driver reports (`cuInit`, `cuDeviceGetCount`). */
const deviceCount = (lib: CudaLibrary): number => {
  const check = (call: string, rc: number) => {
    if (rc !== 0) throw cudaError(call, rc, lib.describe)
  }
  check("cuInit", lib.api.cuInit(0))
  const count = new Int32Array(1)
  check("cuDeviceGetCount", lib.api.cuDeviceGetCount(count))
  return count[0]!
}

/**
 * The multi-device checks (Note [Multi-device selftest]): one per visible device, one per ordered
 * pair of devices, and the memory check, as plain `{ name, ok, detail }` results.
 * @category selftest
 */
export const multiDeviceChecks = (options: MultiDeviceOptions = {}): Effect.Effect<ReadonlyArray<MultiDeviceCheck>> =>
  Effect.scoped(Effect.gen(function*() {
    const checks: Array<MultiDeviceCheck> = []
    const opened = yield* Effect.gen(function*() {
      const lib = yield* Effect.tryPromise({
        try: () => loadCuda(options.library ?? process.env["GMLAKE_LIBCUDA"] ?? undefined),
        catch: (e) => e instanceof DriverError ? e : new DriverError({ call: "dlopen", reason: "NoDevice", code: 100, detail: message(e) })
      })
      const count = yield* driverCall(() => deviceCount(lib))
      const devices: Array<CudaDevice> = []
      const ports: Array<CudaPort> = []
      for (let i = 0; i < count; i++) {
        const device = yield* Effect.acquireRelease(
          driverCall(() => openDevice(lib, i)),
          (d) => quietly(() => d.close())
        )
        devices.push(device)
        ports.push(yield* driverCall(() => new CudaPort(device)))
      }
      return { devices, ports }
    }).pipe(Effect.result)
    if (opened._tag === "Failure") {
      return [{ name: "devices", ok: false, detail: opened.failure.message }]
    }
    const { devices, ports } = opened.success
    const n = devices.length
    const g = ports[0]?.granularity ?? 0
    const sameGranule = ports.every((p) => p.granularity === g)
    checks.push({
      name: "devices",
      ok: n >= 1 && sameGranule,
      detail: `${n} visible: ` + devices.map((d, i) => `${i} ${d.name} (${formatBytes(d.totalMemory)}, granule ${formatBytes(ports[i]!.granularity)})`).join("; ") +
        (sameGranule ? "" : "; granularities differ, peer stitching needs one")
    })
    const freeBefore = ports.map((p) => {
      try {
        return p.memGetInfo().free
      } catch {
        return -1
      }
    })

    // Every device on its own: a chunk here, mapped with access for it, bytes through it.
    for (let i = 0; i < n; i++) {
      const port = ports[i]!
      const bytes = Math.ceil((options.bytes ?? port.granularity) / port.granularity) * port.granularity
      checks.push(yield* attempt(`device ${i}`, Effect.gen(function*() {
        const h = yield* chunkOn(port, bytes)
        const va = yield* rangeOn(port, bytes)
        yield* mapWithAccess(port, va, bytes, h)
        const data = pattern(bytes, i)
        yield* driverCall(() => port.write(va, data))
        const back = yield* driverCall(() => port.read(va, bytes))
        const at = firstDifference(back, data)
        return {
          name: `device ${i}`,
          ok: at < 0,
          detail: at < 0
            ? `${devices[i]!.name}: ${formatBytes(bytes)} written and read back through its own mapping`
            : `byte ${at} read back differs`
        }
      })))
    }

    // Every ordered pair: can i map j's memory, and do the bytes arrive?
    if (n === 1) checks.push({ name: "peer access", ok: true, detail: "one device: no peer to check" })
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        if (i === j) continue
        const name = `peer ${i}->${j}`
        const local = ports[i]!
        const lender = ports[j]!
        const can = yield* driverCall(() => devices[i]!.canAccessPeer(devices[j]!.device)).pipe(Effect.result)
        if (can._tag === "Failure") {
          checks.push({ name, ok: false, detail: can.failure.message })
          continue
        }
        if (!can.success) {
          checks.push({
            name,
            ok: true,
            detail: `no peer access (cuDeviceCanAccessPeer(${i}, ${j}) = 0): device ${i} will not borrow from device ${j}`
          })
          continue
        }
        if (!sameGranule) {
          checks.push({ name, ok: false, detail: "granularities differ: cannot map one device's chunks at the other's" })
          continue
        }
        const bytes = Math.ceil((options.bytes ?? g) / g) * g
        checks.push(yield* attempt(name, Effect.gen(function*() {
          // The chunk lives on j; device i maps it in its own range with access for i only.
          const h = yield* chunkOn(lender, bytes)
          const borrowed = yield* rangeOn(local, bytes)
          yield* mapWithAccess(local, borrowed, bytes, h)
          const data = pattern(bytes, 7 + i * 16 + j)
          yield* driverCall(() => local.write(borrowed, data))
          yield* driverCall(() => local.ctxSynchronize())
          // Read back through j's own mapping of the same chunk, in j's context.
          const own = yield* rangeOn(lender, bytes)
          yield* mapWithAccess(lender, own, bytes, h)
          const back = yield* driverCall(() => lender.read(own, bytes))
          const at = firstDifference(back, data)
          return {
            name,
            ok: at < 0,
            detail: at < 0
              ? `${formatBytes(bytes)} located on device ${j}, written through device ${i}'s mapping, ` +
                `read back through device ${j}'s own`
              : `byte ${at} read through device ${j}'s mapping differs from what device ${i} wrote`
          }
        })))
      }
    }

    const freeAfter = ports.map((p) => {
      try {
        return p.memGetInfo().free
      } catch {
        return -2
      }
    })
    const leaked = freeAfter.flatMap((f, i) => (f === freeBefore[i] ? [] : [i]))
    checks.push({
      name: "memory given back (all devices)",
      ok: leaked.length === 0,
      detail: leaked.length === 0
        ? "every device's free memory is back at its start value"
        : leaked.map((i) => `device ${i}: ${formatBytes(freeBefore[i]! - freeAfter[i]!)} not given back`).join("; ")
    })
    return checks
  }))
