/**
 * A probe of a CUDA driver through the binding: the checks that only a device can settle
 * (aliasing and stitching through real copies, release while mapped, streams and events, no
 * memory left behind), the CUresult the driver gives for each broken VMM rule, and the per-call
 * cost of the hot calls. `Probe.test.ts` runs it on the fake libcuda on every `npm test` and on
 * the real one where a GPU is present; on the GPU machine, bundle and run it on its own:
 *
 *   npx esbuild test/cuda/probe.ts --bundle --platform=node --format=esm --target=node22 \
 *     --external:koffi --outfile=dist/probe.mjs
 *   node dist/probe.mjs [library path, default libcuda.so.1] [device ordinal] > probe.json
 *
 * @since 0.1.0
 */
import { pathToFileURL } from "node:url"
import { type CudaLibrary, loadCuda } from "../../src/cuda/Binding.ts"
import { CudaDevicePort, openDevice } from "../../src/cuda/CudaDevicePort.ts"
import { DriverError, type DriverFailureReason } from "../../src/domain/Errors.ts"
import type { Address, ChunkHandle } from "../../src/domain/Units.ts"

/** One check that the device follows the VMM rules the binding and the simulator assume. */
export interface ProbeCheck {
  readonly name: string
  readonly ok: boolean
  readonly detail: string
}

/** What the driver answered to a call that breaks a rule. */
export interface ProbeRefusal {
  readonly rule: string
  /** The reason the binding's tests expect (the simulator's). */
  readonly expected: DriverFailureReason
  readonly call: string
  readonly reason: DriverFailureReason | "none"
  readonly code: number
  readonly detail: string
}

/** Median cost of one call, in nanoseconds, through `CudaDevicePort`. */
export interface ProbeTiming {
  readonly call: string
  readonly bytes: number
  readonly ns: number
}

/** @category models */
export interface ProbeReport {
  readonly library: string
  readonly koffi: string
  readonly missing: ReadonlyArray<string>
  readonly device: {
    readonly ordinal: number
    readonly name: string
    readonly totalMemory: number
    readonly driverVersion: number
  }
  readonly granularity: number
  readonly checks: ReadonlyArray<ProbeCheck>
  readonly refusals: ReadonlyArray<ProbeRefusal>
  readonly timings: ReadonlyArray<ProbeTiming>
}

const bytesEqual = (a: Uint8Array, b: Uint8Array): boolean =>
  a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.length).equals(b)

const pattern = (n: number, seed: number): Uint8Array => {
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i++) out[i] = (i * 7 + seed) & 0xff
  return out
}

/**
 * Probes device `ordinal` of `lib`. Every handle it makes is given back before it returns,
 * whatever happens; `iterations` sets how many calls each timing is the median of (in 5 rounds).
 */
export const probe = (
  lib: CudaLibrary,
  options: { readonly ordinal?: number; readonly iterations?: number } = {}
): ProbeReport => {
  const device = openDevice(lib, options.ordinal ?? 0)
  const port = new CudaDevicePort(device)
  const G = port.granularity
  // Everything made here, undone in reverse order at the end whatever happens.
  const undo: Array<() => void> = []
  const releaseHooks = new Map<number, () => void>()
  const unmapHooks = new Map<number, () => void>()
  const chunk = (bytes: number): ChunkHandle => {
    const h = port.memCreate(bytes)
    let live = true
    const give = () => {
      if (live) {
        live = false
        port.memRelease(h)
      }
    }
    undo.push(give)
    releaseHooks.set(h, give)
    return h
  }
  const release = (h: ChunkHandle): void => releaseHooks.get(h)?.()
  const range = (bytes: number): Address => {
    const va = port.addressReserve(bytes)
    undo.push(() => port.addressFree(va, bytes))
    return va
  }
  /** Maps the whole chunk `h` at `va` and grants access. */
  const mapped = (va: Address, bytes: number, h: ChunkHandle): void => {
    port.memMap(va, bytes, h)
    let live = true
    const give = () => {
      if (live) {
        live = false
        port.memUnmap(va, bytes)
      }
    }
    undo.push(give)
    unmapHooks.set(va, give)
    port.setAccess(va, bytes)
  }
  const unmap = (va: Address): void => unmapHooks.get(va)?.()

  /** Undoes everything still recorded, newest first, going on past failures (returned). */
  const giveBack = (): Array<string> => {
    const failures: Array<string> = []
    for (const f of undo.splice(0).reverse()) {
      try {
        f()
      } catch (e) {
        failures.push(e instanceof Error ? e.message : String(e))
      }
    }
    return failures
  }

  const checks: Array<ProbeCheck> = []
  const refusals: Array<ProbeRefusal> = []
  const timings: Array<ProbeTiming> = []
  const check = (name: string, f: () => string): void => {
    try {
      checks.push({ name, ok: true, detail: f() })
    } catch (e) {
      checks.push({ name, ok: false, detail: e instanceof Error ? e.message : String(e) })
    }
  }
  /** Runs `f`, which must be refused; `accepted` undoes it if the driver did it anyway. */
  const refuse = (rule: string, expected: DriverFailureReason, f: () => void, accepted?: () => void): void => {
    try {
      f()
      accepted?.()
      refusals.push({ rule, expected, call: "", reason: "none", code: 0, detail: "the driver accepted it" })
    } catch (e) {
      if (!(e instanceof DriverError)) throw e
      refusals.push({ rule, expected, call: e.call, reason: e.reason, code: e.code, detail: e.detail })
    }
  }

  try {
    port.ctxSynchronize()
    const baseline = port.memGetInfo().free

    check("a chunk mapped at two ranges shows the same bytes at both", () => {
      const h = chunk(G)
      const [a, b] = [range(G), range(G)]
      mapped(a, G, h)
      mapped(b, G, h)
      const data = pattern(G, 1)
      port.memcpyHtoD(a, data)
      if (!bytesEqual(port.read(b, G), data)) throw new Error("bytes read through the second range differ")
      port.write(b + 12345, new Uint8Array([1, 2, 3]))
      if (!bytesEqual(port.read(a + 12345, 3), new Uint8Array([1, 2, 3]))) {
        throw new Error("a write through the second range is not seen through the first")
      }
      return `${G} bytes through ${a.toString(16)} read back through ${b.toString(16)}`
    })

    check("a stitched range reads its chunks in order, across the seam", () => {
      const [h1, h2] = [chunk(G), chunk(G)]
      const [p1, p2, s] = [range(G), range(G), range(2 * G)]
      mapped(p1, G, h1)
      mapped(p2, G, h2)
      port.memMap(s, G, h1)
      port.memMap((s + G) as Address, G, h2)
      undo.push(() => port.memUnmap(s, 2 * G)) // one unmap over two adjacent mappings
      port.setAccess(s, 2 * G)
      const data = pattern(2 * 65536, 5)
      port.write(s + G - 65536, data)
      if (!bytesEqual(port.read(p1 + G - 65536, 65536), data.subarray(0, 65536))) throw new Error("first half differs")
      if (!bytesEqual(port.read(p2, 65536), data.subarray(65536))) throw new Error("second half differs")
      return "one set-access over two mappings; a copy across the seam lands in both chunks"
    })

    check("a released chunk stays readable until its last mapping goes", () => {
      const h = chunk(G)
      const va = range(G)
      mapped(va, G, h)
      port.memset(va, 0x3c, 4096)
      release(h)
      const back = port.read(va, 4096)
      if (back.some((x) => x !== 0x3c)) throw new Error("bytes changed after cuMemRelease")
      unmap(va)
      return "memset, cuMemRelease, read, cuMemUnmap"
    })

    check("streams and events order device work", () => {
      const s = port.streamCreate()
      undo.push(() => port.streamDestroy(s))
      const h = chunk(G)
      const va = range(G)
      mapped(va, G, h)
      port.memsetAsync(va, 0x11, G / 2, s)
      port.memcpyDtoDAsync((va + G / 2) as Address, va, G / 2, s)
      const e = port.eventRecord(s)
      undo.push(() => port.eventDestroy(e))
      let polls = 0
      while (!port.eventQuery(e) && polls < 1_000_000) polls++
      port.eventSynchronize(e)
      if (!port.eventQuery(e)) throw new Error("event not complete after cuEventSynchronize")
      const back = port.read(va + G - 16, 16)
      if (back.some((x) => x !== 0x11)) throw new Error("stream-ordered memset + copy did not land")
      return `event complete after ${polls} NOT_READY poll(s)`
    })

    refuse("size not a multiple of the granularity", "InvalidValue", () => port.memRelease(port.memCreate(G + 512)))
    {
      const [h1, h2] = [chunk(G), chunk(2 * G)]
      const va = range(4 * G)
      port.memMap(va, G, h1)
      undo.push(() => port.memUnmap(va, G))
      refuse("map over a mapping", "InvalidValue", () => port.memMap(va, G, h1), () => port.memUnmap(va, G))
      refuse("map part of a chunk", "NotSupported", () => port.memMap((va + G) as Address, G, h2),
        () => port.memUnmap((va + G) as Address, G))
      refuse("set access over unmapped space", "InvalidValue", () => port.setAccess(va, 2 * G))
      refuse("free a range of the wrong size", "InvalidValue", () => port.addressFree(va, 2 * G))
    }
    {
      const h = chunk(2 * G)
      const va = range(2 * G)
      port.memMap(va, 2 * G, h)
      undo.push(() => port.memUnmap(va, 2 * G))
      refuse("unmap part of a mapping", "InvalidValue", () => port.memUnmap(va, G),
        () => port.memUnmap((va + G) as Address, G))
    }
    refuse("create more than the device holds", "OutOfMemory", () => {
      port.memRelease(port.memCreate(Math.ceil((2 * port.capacity) / G) * G))
    })
    {
      const h = port.memCreate(G)
      port.memRelease(h)
      refuse("release a chunk twice", "InvalidValue", () => port.memRelease(h))
    }

    const rounds = 5
    const n = options.iterations ?? 200
    const time = (call: string, bytes: number, calls: number, body: () => void): void => {
      const runs: Array<number> = []
      for (let r = 0; r < rounds; r++) {
        const t = process.hrtime.bigint()
        for (let i = 0; i < n; i++) body()
        runs.push(Number(process.hrtime.bigint() - t) / n / calls)
      }
      runs.sort((x, y) => x - y)
      timings.push({ call, bytes, ns: Math.round(runs[rounds >> 1]!) })
    }
    for (const bytes of [G, 32 * G]) {
      time("memCreate+memRelease", bytes, 2, () => port.memRelease(port.memCreate(bytes)))
      time("addressReserve+addressFree", bytes, 2, () => port.addressFree(port.addressReserve(bytes), bytes))
      const h = chunk(bytes)
      const va = range(bytes)
      time("memMap+memUnmap", bytes, 2, () => {
        port.memMap(va, bytes, h)
        port.memUnmap(va, bytes)
      })
      port.memMap(va, bytes, h)
      time("setAccess", bytes, 1, () => port.setAccess(va, bytes))
      port.memUnmap(va, bytes)
    }

    const failures = giveBack()
    port.ctxSynchronize()
    check("everything made is given back without error", () => {
      if (failures.length > 0) throw new Error(failures.join("; "))
      return "unmap, free range, release chunk, destroy event and stream, in reverse order"
    })
    check("no device memory left behind", () => {
      const free = port.memGetInfo().free
      if (free < baseline) throw new Error(`${baseline - free} bytes fewer free than before the probe`)
      return `free ${free} B, ${free - baseline} B more than at the start`
    })

    return {
      library: lib.path,
      koffi: lib.koffiVersion,
      missing: lib.missing,
      device: {
        ordinal: device.ordinal,
        name: device.name,
        totalMemory: device.totalMemory,
        driverVersion: device.driverVersion
      },
      granularity: G,
      checks,
      refusals,
      timings
    }
  } finally {
    giveBack()
    device.close()
  }
}

const main = async (): Promise<void> => {
  const [path, ordinal] = process.argv.slice(2)
  const lib = await loadCuda(path)
  const report = probe(lib, { ordinal: ordinal === undefined ? 0 : Number(ordinal) })
  console.log(JSON.stringify(report, null, 2))
  const bad = report.checks.filter((c) => !c.ok).length + report.refusals.filter((r) => r.reason !== r.expected).length
  process.exitCode = bad === 0 ? 0 : 1
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e: unknown) => {
    console.error(e instanceof Error ? e.message : e)
    process.exitCode = 2
  })
}
