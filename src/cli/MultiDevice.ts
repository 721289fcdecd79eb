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
 * It runs on one multi-device session, `layerCuda` of `layers/Devices.ts` (Note [Multi-device
 * sessions]): every device on its primary context, one binding of the driver library shared by
 * all, peer access as `cuDeviceCanAccessPeer` reports it when the session opens, and each check's
 * chunks, ranges and mappings taken through the device's `Vmm` service (`services/Vmm.ts`), so
 * they are scoped to the check and owned by the device's handle registry. A driver that cannot
 * be loaded, or a session that cannot be opened (no device, a failing `cuDeviceCanAccessPeer`),
 * is one failed "devices" check. The session switches contexts between devices on this thread, so
 * run it while no other CUDA session of this process is open (before or after the single-device
 * selftest's session, not inside it): a session's binding remembers which context it made
 * current (Note [One context per thread]). Every device is closed, and no context is left
 * current, when it returns. It never fails: a failure is a check with `ok: false`. It never
 * creates NVLink multicast objects.
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer, type Scope } from "effect"
import type { DriverError } from "../domain/Errors.ts"
import { formatBytes } from "../domain/Units.ts"
import { type DeviceSession, Devices, layerCuda } from "../layers/Devices.ts"
import { Vmm, layer as vmmLayer } from "../services/Vmm.ts"

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

/** The scoped VMM primitives of one device of the session. */
const vmmOf = (session: DeviceSession): Effect.Effect<Vmm["Service"], never, Scope.Scope> =>
  Layer.build(vmmLayer).pipe(Effect.map((c) => Context.get(c, Vmm)), Effect.provideContext(session.context))

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

/**
 * The multi-device checks (Note [Multi-device selftest]): one per visible device, one per ordered
 * pair of devices, and the memory check, as plain `{ name, ok, detail }` results.
 * @category selftest
 */
export const multiDeviceChecks = (options: MultiDeviceOptions = {}): Effect.Effect<ReadonlyArray<MultiDeviceCheck>> =>
  Effect.scoped(checksOn(options)).pipe(
    Effect.provide(layerCuda(options.library !== undefined ? { library: options.library } : {})),
    Effect.catch((e) => Effect.succeed([{ name: "devices", ok: false, detail: e.message }])),
    Effect.catchDefect((e) => Effect.succeed([{ name: "devices", ok: false, detail: `defect: ${message(e)}` }]))
  )

/** The checks on an open session; every failure inside is a check of its own. */
const checksOn = (options: MultiDeviceOptions): Effect.Effect<ReadonlyArray<MultiDeviceCheck>, never, Devices | Scope.Scope> =>
  Effect.gen(function*() {
    const { canAccessPeer, sessions } = yield* Devices
    const checks: Array<MultiDeviceCheck> = []
    const n = sessions.length
    const infos = sessions.map((s) => s.driver.info)
    const vmms: Array<Vmm["Service"]> = []
    for (const s of sessions) vmms.push(yield* vmmOf(s))
    const g = infos[0]?.granularity ?? 0
    const sameGranule = infos.every((d) => d.granularity === g)
    checks.push({
      name: "devices",
      ok: n >= 1 && sameGranule,
      detail: `${n} visible: ` + infos.map((d, i) => `${i} ${d.name} (${formatBytes(d.capacity)}, granule ${formatBytes(d.granularity)})`).join("; ") +
        (sameGranule ? "" : "; granularities differ, peer stitching needs one")
    })
    const freeNow = (missing: number) =>
      Effect.forEach(sessions, (s) => s.driver.memGetInfo.pipe(Effect.map((m) => m.free), Effect.orElseSucceed(() => missing)))
    const freeBefore = yield* freeNow(-1)

    // Every device on its own: a chunk here, mapped with access for it, bytes through it.
    for (let i = 0; i < n; i++) {
      const driver = sessions[i]!.driver
      const vmm = vmms[i]!
      const granule = infos[i]!.granularity
      const bytes = Math.ceil((options.bytes ?? granule) / granule) * granule
      checks.push(yield* attempt(`device ${i}`, Effect.gen(function*() {
        const chunk = yield* vmm.chunk(bytes)
        const range = yield* vmm.range(bytes)
        yield* vmm.map(range.address, chunk)
        const data = pattern(bytes, i)
        yield* driver.write(range.address, data)
        const back = yield* driver.read(range.address, bytes)
        const at = firstDifference(back, data)
        return {
          name: `device ${i}`,
          ok: at < 0,
          detail: at < 0
            ? `${infos[i]!.name}: ${formatBytes(bytes)} written and read back through its own mapping`
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
        if (!canAccessPeer(i, j)) {
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
        const local = sessions[i]!.driver
        const lender = sessions[j]!.driver
        const bytes = Math.ceil((options.bytes ?? g) / g) * g
        checks.push(yield* attempt(name, Effect.gen(function*() {
          // The chunk lives on j; device i maps it in its own range with access for i only.
          const chunk = yield* vmms[j]!.chunk(bytes)
          const borrowed = yield* vmms[i]!.range(bytes)
          yield* vmms[i]!.map(borrowed.address, chunk)
          const data = pattern(bytes, 7 + i * 16 + j)
          yield* local.write(borrowed.address, data)
          yield* local.synchronize
          // Read back through j's own mapping of the same chunk, in j's context.
          const own = yield* vmms[j]!.range(bytes)
          yield* vmms[j]!.map(own.address, chunk)
          const back = yield* lender.read(own.address, bytes)
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

    const freeAfter = yield* freeNow(-2)
    const leaked = freeAfter.flatMap((f, i) => (f === freeBefore[i] ? [] : [i]))
    checks.push({
      name: "memory given back (all devices)",
      ok: leaked.length === 0,
      detail: leaked.length === 0
        ? "every device's free memory is back at its start value"
        : leaked.map((i) => `device ${i}: ${formatBytes(freeBefore[i]! - freeAfter[i]!)} not given back`).join("; ")
    })
    return checks
  })
