/**
 * PyTorch memory snapshots (the pickle `torch.cuda.memory._dump_snapshot` writes, the file
 * pytorch.org/memory_viz reads) as traces.
 *
 * Note [Snapshot import]
 * ----------------------
 * A snapshot's `device_traces[d]` lists what device `d`'s caching allocator did while history
 * was recorded, one dict per action: `alloc` (with the requested size), `free_requested` (the
 * framework freed the block), `free_completed` (the block's memory became reusable: at once, or
 * once the events of other streams that used it completed: `record_stream`), `segment_alloc` /
 * `segment_free` (cudaMalloc / cudaFree), `segment_map` / `segment_unmap` (expandable segments),
 * and a few that are no requests (`oom`, `snapshot`, `user_defined`).
 *
 * Actions refer to blocks by device address, which the allocator reuses, so each `alloc` gets a
 * fresh id. `alloc` becomes `a` (its stream renumbered to a small integer in order of first use),
 * `free_requested` becomes `f`, and `free_completed` becomes `F` only when something happened
 * between the two (the block was held back for other streams); right after its own
 * `free_requested` it adds nothing. Segment actions are kept as PyTorch's own record (`S`, `s`,
 * `M`, `m`). A free of an address whose allocation came before recording started (or was
 * dropped when `max_entries` wrapped) gets its allocation at the start of the trace, with the
 * size the free reports, as memory_viz does.
 *
 * The recorded run's peak reserved is the running sum of its segment actions; it is a fair
 * anchor only when the record is whole (nothing allocated before it started, and its segments
 * add up to those the snapshot lists at the end). A snapshot written by tools/record_trace.py
 * also carries PyTorch's own `memory_stats()` peaks, which are used as they are.
 *
 * @since 0.2.0
 */
import { Parser } from "pickleparser"
import { basename } from "node:path"
import { type Anchor, type Header, type Trace, TraceBuilder, TraceError } from "./Trace.ts"

/** Largest snapshot read (pickles are read whole). @category models */
export const MAX_SNAPSHOT_BYTES = 2 ** 31

/** How to read a snapshot. @category models */
export interface SnapshotOptions {
  /** Which device's history to read (`device_traces[i]`); by default the first that has any. */
  readonly deviceIndex?: number
}

type Entry = { readonly action?: unknown; readonly addr?: unknown; readonly size?: unknown; readonly stream?: unknown }

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v)
const num = (v: unknown): number | undefined => {
  const n = typeof v === "bigint" ? Number(v) : v
  return typeof n === "number" && Number.isSafeInteger(n) ? n : undefined
}

/**
 * The peaks `tools/record_trace.py` stores next to the history: `gmlake.memory_stats[device]`,
 * in `torch.cuda.memory_stats()` names.
 */
const recordedAnchor = (snapshot: Record<string, unknown>, device: number): Anchor | undefined => {
  const g = snapshot["gmlake"]
  if (!isRecord(g) || !isRecord(g["memory_stats"])) return undefined
  const s = g["memory_stats"][String(device)]
  if (!isRecord(s)) return undefined
  const peakRequested = num(s["requested_bytes.all.peak"])
  const peakReserved = num(s["reserved_bytes.all.peak"])
  if (peakRequested === undefined || peakReserved === undefined) return undefined
  const peakAllocated = num(s["allocated_bytes.all.peak"])
  const deviceAllocs = num(s["num_device_alloc"])
  return {
    peakRequested,
    peakReserved,
    ...(peakAllocated !== undefined ? { peakAllocated } : {}),
    ...(deviceAllocs !== undefined ? { deviceAllocs } : {}),
    ...(peakReserved > 0 ? { utilization: peakRequested / peakReserved } : {})
  }
}

const SEGMENT_KIND: Record<string, "S" | "s" | "M" | "m"> = {
  segment_alloc: "S",
  segment_free: "s",
  segment_map: "M",
  segment_unmap: "m"
}

/**
 * Reads a snapshot pickle as a trace (Note [Snapshot import]). Throws a `TraceError`.
 * @category decoding
 */
export const decodeSnapshot = (file: string, data: Uint8Array, options: SnapshotOptions = {}): Trace => {
  const fail: (detail: string, reason?: TraceError["reason"], event?: number) => never = (detail, reason = "invalid", event) => {
    throw event === undefined ? new TraceError({ file, detail, reason }) : new TraceError({ file, event, detail, reason })
  }
  let snapshot: unknown
  try {
    snapshot = new Parser().parse(data)
  } catch (e) {
    const text = (e as Error).message
    if (e instanceof RangeError) fail(`too large: the pickle holds more objects than can be read (${text})`, "too-large")
    if (/end of file|more bytes/i.test(text)) fail(`truncated: the pickle ends early (${text})`, "truncated")
    fail(`not a readable pickle (${text})`, "not-a-snapshot")
  }
  if (!isRecord(snapshot) || !("segments" in snapshot || "device_traces" in snapshot)) {
    fail(
      "a pickle, but not a PyTorch memory snapshot (expected a dict with \"segments\" and \"device_traces\", as torch.cuda.memory._dump_snapshot writes)",
      "not-a-snapshot"
    )
  }
  const s = snapshot as Record<string, unknown>
  const traces = s["device_traces"]
  if (!Array.isArray(traces) || traces.every((t) => !Array.isArray(t) || t.length === 0)) {
    fail(
      "a memory snapshot recorded without trace history: call torch.cuda.memory._record_memory_history() before the work " +
        "and _dump_snapshot() after it (see docs/recording.md)",
      "no-history"
    )
  }
  const devices = (traces as Array<unknown>).flatMap((t, i) => (Array.isArray(t) && t.length > 0 ? [i] : []))
  const device = options.deviceIndex ?? devices[0]!
  if (!devices.includes(device)) {
    fail(`device ${device} has no trace history in this snapshot (devices with history: ${devices.join(", ")})`, "invalid")
  }
  const entries = (traces as Array<Array<unknown>>)[device]!

  // Pass 1: allocations made before recording started (freed, never allocated in the record).
  const seen = new Set<number>()
  const before: Array<{ addr: number; size: number; stream: number }> = []
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i] as Entry
    if (!isRecord(e)) fail(`expected a dict with "action", got ${typeof e}`, "invalid", i)
    const addr = num(e.addr)
    if (e.action === "alloc" && addr !== undefined) seen.add(addr)
    else if (e.action === "free_requested" && addr !== undefined) {
      if (!seen.has(addr)) {
        // an allocation made before recording: its size is the one the free reports
        const size = num(e.size) ?? 0
        if (size < 0) fail(`"free_requested" needs a size of at least 0, got ${size}`, "invalid", i)
        before.push({ addr, size, stream: num(e.stream) ?? 0 })
      }
      seen.delete(addr)
    }
  }
  seen.clear()

  const builder = new TraceBuilder(file)
  const streams = new Map<number, number>()
  const streamOf = (raw: number) => {
    let s = streams.get(raw)
    if (s === undefined) {
      s = streams.size
      if (s > 0xffff) fail("more than 65536 streams", "too-large")
      streams.set(raw, s)
    }
    return s
  }
  const live = new Map<number, number>()
  const awaiting = new Map<number, number>()
  let nextId = 0
  let lastFreed = -1
  let requested = 0
  let peakRequested = 0
  const sizes = new Map<number, number>()
  for (const b of before) {
    const id = nextId++
    builder.alloc(-1, id, b.size, streamOf(b.stream))
    live.set(b.addr, id)
    sizes.set(id, b.size)
    requested += b.size
  }
  peakRequested = requested
  let reserved = 0
  let peakReserved = 0
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i] as Entry
    const action = e.action
    const addr = num(e.addr)
    const size = num(e.size)
    let freed = -1
    switch (action) {
      case "alloc": {
        if (addr === undefined || size === undefined || size < 0) fail(`"alloc" needs an address and a size, got ${JSON.stringify({ addr: e.addr, size: e.size })}`, "invalid", i)
        // A block still awaiting completion at this address completed unrecorded.
        awaiting.delete(addr)
        const id = nextId++
        builder.alloc(i, id, size, streamOf(num(e.stream) ?? 0))
        live.set(addr, id)
        sizes.set(id, size)
        requested += size
        if (requested > peakRequested) peakRequested = requested
        break
      }
      case "free_requested": {
        const id = addr === undefined ? undefined : live.get(addr)
        if (id === undefined) break
        live.delete(addr!)
        builder.free(i, id, false)
        awaiting.set(addr!, id)
        freed = addr!
        break
      }
      case "free_completed": {
        const id = addr === undefined ? undefined : awaiting.get(addr)
        if (id === undefined) break
        awaiting.delete(addr!)
        // Completed right after its own free: nothing was held back (Note [Snapshot import]).
        if (lastFreed !== addr) builder.free(i, id, true)
        requested -= sizes.get(id) ?? 0
        sizes.delete(id)
        break
      }
      default: {
        const kind = typeof action === "string" ? SEGMENT_KIND[action] : undefined
        if (kind === undefined || size === undefined) break
        if (size < 0) fail(`"${action as string}" needs a size of at least 0, got ${size}`, "invalid", i)
        builder.driver(kind, size)
        reserved += kind === "S" || kind === "M" ? size : -size
        if (reserved > peakReserved) peakReserved = reserved
      }
    }
    lastFreed = freed
  }

  const settings = isRecord(s["allocator_settings"]) ? s["allocator_settings"] : {}
  const expandable = settings["expandable_segments"] === true
  // The recorded segments are whole when they add up to what the snapshot holds at the end.
  const segments = Array.isArray(s["segments"]) ? s["segments"] : []
  const held = segments.reduce<number>((sum, seg) =>
    isRecord(seg) && (num(seg["device"]) ?? device) === device ? sum + (num(seg["total_size"]) ?? 0) : sum, 0)
  const whole = before.length === 0 && held === reserved
  const anchor: Anchor | undefined = recordedAnchor(s, device) ??
    (whole && peakReserved > 0 ? { peakRequested, peakReserved, utilization: peakRequested / peakReserved } : undefined)
  const name = basename(file).replace(/(\.gz)?$/, "").replace(/\.(pickle|pkl)$/, "")
  const notes = [
    `device ${device} of ${traces instanceof Array ? traces.length : 1}`,
    `${entries.length} recorded actions`,
    before.length > 0 ? `${before.length} allocation(s) made before recording started, placed at the start` : undefined,
    expandable ? "expandable_segments" : undefined
  ].filter((n) => n !== undefined)
  const header: Header = {
    format: "gmlake-trace/1",
    workload: name,
    description: `PyTorch memory snapshot ${basename(file)} (${notes.join("; ")})`,
    source: { snapshot: basename(file), deviceIndex: device, streams: streams.size, preexisting: before.length },
    ...(anchor !== undefined ? { pytorch: expandable ? { expandable_segments: anchor } : { native: anchor } } : {})
  }
  return builder.finish(header)
}
