/**
 * Calibration of the driver-time model (Note [Driver-time model]) on a GPU: the median wall time
 * of each VMM call through the binding over a sweep of sizes, and of stitched ranges of N chunks
 * (map each, one set access over the whole range or one per chunk, one unmap over the range or
 * one per chunk). Writes JSON lines in the format of `bench/calibration/vmm-sizes-h200.jsonl`
 * (and a few more columns). Everything it makes is given back before it returns, whatever happens;
 * the last line says the device's free memory before and after.
 *
 * On the GPU machine (see `bench/gpu/driver-bill.sh`, which runs it):
 *
 *   npx esbuild bench/gpu/calibrate.ts --bundle --platform=node --format=esm --target=node22 \
 *     --external:koffi --outfile=dist/calibrate.mjs
 *   node dist/calibrate.mjs [out.jsonl] [repeats, default 5]     (stdout without a file)
 *
 * @since 0.2.0
 */
import { writeFileSync } from "node:fs"
import { pathToFileURL } from "node:url"
import { type CudaLibrary, loadCuda } from "../../src/cuda/Binding.ts"
import { CudaDevicePort, openDevice } from "../../src/cuda/CudaDevicePort.ts"
import type { Address, ChunkHandle } from "../../src/domain/Units.ts"

/** @category models */
export interface CalibrationOptions {
  readonly ordinal?: number
  /** Repetitions of each figure (the median is reported); default 5. */
  readonly repeats?: number
  /** Sizes of the single-object sweep, MiB (default 2 .. 8192). */
  readonly sizesMiB?: ReadonlyArray<number>
  /** Chunk counts of the stitched ranges (default 1 .. 128). */
  readonly stitchChunks?: ReadonlyArray<number>
  /** Chunk sizes of the stitched ranges, MiB (default 2, and 20 as expandable segments' pages). */
  readonly stitchChunkMiB?: ReadonlyArray<number>
}

/** One line of output. @category models */
export type CalibrationLine = Record<string, number | string>

const MIB = 1024 * 1024

const median = (xs: ReadonlyArray<number>): number => {
  const s = [...xs].sort((a, b) => a - b)
  const n = s.length
  return n === 0 ? Number.NaN : n % 2 === 1 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2
}

const round1 = (x: number): number => Math.round(x * 10) / 10

/** Microseconds `f` took. */
const time = (f: () => void): number => {
  const t0 = process.hrtime.bigint()
  f()
  return Number(process.hrtime.bigint() - t0) / 1000
}

/**
 * Runs the calibration on device `ordinal` of `lib`; returns the lines.
 * @category constructors
 */
export const calibrate = (lib: CudaLibrary, options: CalibrationOptions = {}): Array<CalibrationLine> => {
  const device = openDevice(lib, options.ordinal ?? 0)
  const port = new CudaDevicePort(device)
  const G = port.granularity
  const repeats = options.repeats ?? 5
  const budget = port.capacity / 4
  const out: Array<CalibrationLine> = []
  // Everything made here, undone newest first at the end whatever happens.
  const undo: Array<() => void> = []
  const chunk = (bytes: number, timing?: Array<number>): { h: ChunkHandle; release: () => void } => {
    let h = 0 as ChunkHandle
    const t = time(() => (h = port.memCreate(bytes)))
    timing?.push(t)
    let live = true
    const release = () => {
      if (live) {
        live = false
        port.memRelease(h)
      }
    }
    undo.push(release)
    return { h, release }
  }
  const range = (bytes: number, timing?: Array<number>): { va: Address; free: () => void } => {
    let va = 0 as Address
    const t = time(() => (va = port.addressReserve(bytes)))
    timing?.push(t)
    let live = true
    const free = () => {
      if (live) {
        live = false
        port.addressFree(va, bytes)
      }
    }
    undo.push(free)
    return { va, free }
  }
  /** Maps `h` at `va`; the returned function unmaps it unless already unmapped by a range unmap. */
  const mapping = (va: Address, bytes: number, h: ChunkHandle, timing?: Array<number>): { unmap: () => void; forget: () => void } => {
    const t = time(() => port.memMap(va, bytes, h))
    timing?.push(t)
    let live = true
    const unmap = () => {
      if (live) {
        live = false
        port.memUnmap(va, bytes)
      }
    }
    undo.push(unmap)
    return { unmap, forget: () => (live = false) }
  }
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

  try {
    port.ctxSynchronize()
    const freeBefore = port.memGetInfo().free
    const started = Date.now()

    // One call on one object of each size.
    for (const mib of options.sizesMiB ?? [2, 8, 20, 32, 128, 512, 1024, 2048, 8192]) {
      const bytes = Math.ceil(mib * MIB / G) * G
      if (bytes > budget) continue
      const t: Record<string, Array<number>> = { create: [], reserve: [], map: [], access: [], unmap: [], free: [], release: [], alloc: [], allocFree: [] }
      for (let r = 0; r < repeats; r++) {
        const c = chunk(bytes, t["create"])
        const v = range(bytes, t["reserve"])
        const m = mapping(v.va, bytes, c.h, t["map"])
        t["access"]!.push(time(() => port.setAccess(v.va, bytes)))
        t["unmap"]!.push(time(() => m.unmap()))
        t["free"]!.push(time(() => v.free()))
        t["release"]!.push(time(() => c.release()))
        let a = 0 as Address
        t["alloc"]!.push(time(() => (a = port.memAlloc(bytes))))
        t["allocFree"]!.push(time(() => port.memFree(a)))
        undo.length = 0
      }
      const line: CalibrationLine = { mib: bytes / MIB }
      for (const [k, xs] of Object.entries(t)) line[k] = round1(median(xs))
      out.push(line)
    }

    // Stitched ranges: N chunks mapped side by side into one range.
    for (const chunkMiB of options.stitchChunkMiB ?? [2, 20]) {
      const cb = Math.ceil(chunkMiB * MIB / G) * G
      for (const n of options.stitchChunks ?? [1, 2, 4, 8, 16, 32, 64, 128]) {
        if (n * cb > budget) continue
        const t: Record<string, Array<number>> = {
          createPerChunk: [],
          mapPerChunk: [],
          accessWholeRange: [],
          accessEachChunk: [],
          accessAgain: [],
          unmapWholeRange: [],
          unmapEachChunk: [],
          releasePerChunk: []
        }
        for (let r = 0; r < repeats; r++) {
          const creates: Array<number> = []
          const chunks = Array.from({ length: n }, () => chunk(cb, creates))
          t["createPerChunk"]!.push(creates.reduce((a, b) => a + b, 0) / n)
          const v = range(n * cb)
          const at = (i: number) => (v.va + i * cb) as Address
          // Round 1: map each, one set access over the range, set it again, one unmap over the range.
          const maps: Array<number> = []
          const ms = chunks.map((c, i) => mapping(at(i), cb, c.h, maps))
          t["mapPerChunk"]!.push(maps.reduce((a, b) => a + b, 0) / n)
          t["accessWholeRange"]!.push(time(() => port.setAccess(v.va, n * cb)))
          t["accessAgain"]!.push(time(() => port.setAccess(v.va, n * cb)))
          t["unmapWholeRange"]!.push(time(() => port.memUnmap(v.va, n * cb)))
          for (const m of ms) m.forget()
          // Round 2: map each, one set access per chunk, one unmap per chunk.
          const ms2 = chunks.map((c, i) => mapping(at(i), cb, c.h))
          t["accessEachChunk"]!.push(chunks.reduce((s, _, i) => s + time(() => port.setAccess(at(i), cb)), 0))
          t["unmapEachChunk"]!.push(ms2.reduce((s, m) => s + time(() => m.unmap()), 0) / n)
          v.free()
          t["releasePerChunk"]!.push(chunks.reduce((s, c) => s + time(() => c.release()), 0) / n)
          undo.length = 0
        }
        const line: CalibrationLine = { stitchChunks: n, chunkMiB: cb / MIB }
        for (const [k, xs] of Object.entries(t)) line[`${k}Us`] = round1(median(xs))
        // The name the first sweep used for the per-chunk cost of one unmap over the range.
        line["unmapPerChunkUs"] = round1(median(t["unmapWholeRange"]!) / n)
        out.push(line)
      }
    }

    const failures = giveBack()
    port.ctxSynchronize()
    out.push({
      device: device.name,
      driverVersion: device.driverVersion,
      granularity: G,
      repeats,
      seconds: round1((Date.now() - started) / 1000),
      freeBefore,
      freeAfter: port.memGetInfo().free,
      ...(failures.length > 0 ? { failures: failures.join("; ") } : {})
    })
    return out
  } finally {
    giveBack()
    device.close()
  }
}

const main = async (): Promise<void> => {
  const [file, repeats] = process.argv.slice(2)
  const lib = await loadCuda(process.env["GMLAKE_LIBCUDA"])
  const lines = calibrate(lib, repeats === undefined ? {} : { repeats: Number(repeats) })
  const text = lines.map((l) => JSON.stringify(l)).join("\n") + "\n"
  if (file === undefined) process.stdout.write(text)
  else writeFileSync(file, text)
  const last = lines[lines.length - 1]!
  process.exitCode = last["freeAfter"] === last["freeBefore"] && last["failures"] === undefined ? 0 : 1
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e: unknown) => {
    console.error(e instanceof Error ? e.message : e)
    process.exitCode = 2
  })
}
