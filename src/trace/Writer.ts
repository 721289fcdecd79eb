/**
 * Writing `gmlake-trace/1` files as a stream: the header, then events as they come, gzip when the
 * name ends in `.gz`, so that a trace of any length is written in constant memory.
 *
 * @since 0.2.0
 */
import { once } from "node:events"
import { createWriteStream } from "node:fs"
import type { Writable } from "node:stream"
import { constants as zlib, createGzip } from "node:zlib"
import { Op, type Trace } from "./Trace.ts"

/** The header of a written trace: everything but `events`. @category models */
export interface TraceHead {
  readonly format: "gmlake-trace/1"
  readonly workload: string
  readonly description?: string
  readonly source?: Readonly<Record<string, unknown>>
  readonly pytorch?: Readonly<Record<string, unknown>>
}

/** What was written. @category models */
export interface Written {
  readonly events: number
  /** Bytes in the file (compressed, for gzip). */
  readonly bytes: number
}

const FLUSH = 1 << 20

/**
 * Writes a trace: `head`, then each event (already JSON, such as `["a",1,512]`). Rejects with the
 * file system's error (its `code` says why) when the file cannot be written.
 * @category writing
 */
export const writeTraceFile = async (
  file: string,
  head: TraceHead,
  events: Iterable<string>,
  options: { readonly level?: number; readonly onProgress?: (events: number) => void } = {}
): Promise<Written> => {
  const out = createWriteStream(file)
  const opened = once(out, "open")
  const failed = new Promise<never>((_, reject) => out.once("error", reject))
  failed.catch(() => {})
  await Promise.race([opened, failed])
  const gzip = file.endsWith(".gz") ? createGzip({ level: options.level ?? zlib.Z_DEFAULT_COMPRESSION }) : undefined
  if (gzip !== undefined) gzip.pipe(out)
  const sink: Writable = gzip ?? out
  const put = async (text: string) => {
    if (!sink.write(text)) await Promise.race([once(sink, "drain"), failed])
  }
  const json = JSON.stringify({ ...head, events: [] })
  let buffer = json.slice(0, -2)
  let n = 0
  for (const e of events) {
    buffer += n === 0 ? e : "," + e
    n++
    if (buffer.length >= FLUSH) {
      await put(buffer)
      buffer = ""
      options.onProgress?.(n)
    }
  }
  await put(buffer + "]}")
  sink.end()
  await Promise.race([once(out, "finish"), failed])
  return { events: n, bytes: out.bytesWritten }
}

/**
 * The events of a decoded trace, as JSON, in order: its requests with dense ids, and PyTorch's
 * recorded driver actions where they were.
 * @category writing
 */
export function* traceEvents(trace: Trace): Generator<string> {
  const { op, id, size, stream, recorded } = trace
  let r = 0
  const driver = function*(before: number) {
    while (r < recorded.length && recorded[r]!.before <= before) {
      const d = recorded[r++]!
      yield `["${d.kind}",${d.bytes}]`
    }
  }
  for (let i = 0; i < trace.length; i++) {
    yield* driver(i)
    const k = id[i]!
    switch (op[i]) {
      case Op.alloc:
        yield stream[i] === 0 ? `["a",${k},${size[i]}]` : `["a",${k},${size[i]},${stream[i]}]`
        break
      case Op.free:
        yield `["f",${k}]`
        break
      default:
        yield `["F",${k}]`
    }
  }
  yield* driver(Number.POSITIVE_INFINITY)
}

/** The header of a decoded trace, to write it out again. @category writing */
export const traceHead = (trace: Trace, source: Readonly<Record<string, unknown>> = {}): TraceHead => ({
  format: "gmlake-trace/1",
  workload: trace.workload,
  description: trace.description,
  source: { ...(trace.device !== undefined ? { device: trace.device } : {}), ...source },
  ...(trace.native !== undefined || trace.expandable !== undefined
    ? {
      pytorch: {
        ...(trace.native !== undefined ? { native: trace.native } : {}),
        ...(trace.expandable !== undefined ? { expandable_segments: trace.expandable } : {})
      }
    }
    : {})
})
