/**
 * Reading a trace from disk: `gmlake-trace/1` JSON (plain or gzip), or a PyTorch memory snapshot
 * (a `_dump_snapshot` pickle, plain or gzip), told apart by their first bytes. Every failure is
 * a `TraceError` naming the file and what is wrong.
 *
 * Note [Reading without holding the file]
 * ---------------------------------------
 * A JSON trace is streamed: the file is read in 1 MiB chunks, inflated as a stream when it is
 * gzip, and each chunk goes to the streaming decoder (Note [Streaming JSON decode]) before the
 * next is read, so nothing but the decoded columns grows with the trace, and no string ever
 * holds the document (V8 caps strings at 512 MiB-1 GiB). Between chunks the event loop runs, so
 * an interrupt (Ctrl-C) stops the decode at once. A snapshot is a pickle, which cannot be read in
 * pieces: it is read whole, and its size is checked first.
 *
 * @since 0.1.0
 */
import { Effect, Result } from "effect"
import { closeSync, createReadStream, fstatSync, openSync, readSync } from "node:fs"
import { Socket } from "node:net"
import { Readable, Writable } from "node:stream"
import { pipeline } from "node:stream/promises"
import { createGunzip, gunzipSync } from "node:zlib"
import { JsonTraceDecoder } from "./Codec.ts"
import { decodeSnapshot, MAX_SNAPSHOT_BYTES, type SnapshotOptions } from "./Snapshot.ts"
import { type Trace, TraceError } from "./Trace.ts"

/** How to read a trace. @category models */
export interface LoadOptions extends SnapshotOptions {
  /** Called after each chunk read, with the bytes of the file read so far and its size. */
  readonly onProgress?: (progress: LoadProgress) => void
}

/** Where a load is. @category models */
export interface LoadProgress {
  readonly bytesRead: number
  readonly totalBytes: number
  /** Events decoded so far (JSON traces only). */
  readonly events: number
}

const isGzip = (data: Uint8Array) => data.length >= 2 && data[0] === 0x1f && data[1] === 0x8b
/** A pickle of protocol 2 or later starts with PROTO (0x80) and its version. */
const isPickle = (data: Uint8Array) => data.length >= 2 && data[0] === 0x80 && data[1]! >= 2 && data[1]! <= 5

/** A zlib failure, in the user's words: cut short, or damaged. */
const gzipError = (file: string, e: unknown): TraceError => {
  const err = e as NodeJS.ErrnoException
  if (err.code === "Z_BUF_ERROR" || /unexpected end of file/i.test(err.message)) {
    return new TraceError({ file, detail: "truncated: the gzip data ends early (the file is cut short)", reason: "truncated" })
  }
  if (err.code === "ERR_BUFFER_TOO_LARGE" || e instanceof RangeError) {
    return new TraceError({ file, detail: `too large: it inflates beyond what fits in memory at once (${err.message})`, reason: "too-large" })
  }
  return new TraceError({ file, detail: `corrupt gzip data (${err.message})`, reason: "invalid" })
}

/** Output pieces of a one-call inflate: few enough that joining them costs little (traces inflate ~6x). */
const inflateChunk = (compressed: number) => Math.min(1 << 24, Math.max(1 << 16, 2 ** Math.ceil(Math.log2(compressed * 8))))

const notGzip = (file: string) => new TraceError({ file, detail: "not gzip data, though the name ends in .gz", reason: "invalid" })

/**
 * Parses trace bytes held in memory: gzip is recognised by its magic number, a pickle is read as
 * a PyTorch memory snapshot, anything else must be JSON. For files, prefer `loadTrace`, which
 * streams.
 * @category decoding
 */
export const parseTraceBytes = (file: string, data: Uint8Array, options: SnapshotOptions = {}): Result.Result<Trace, TraceError> => {
  try {
    let bytes = data
    if (isGzip(data)) {
      try {
        bytes = gunzipSync(data, { maxOutputLength: MAX_SNAPSHOT_BYTES, chunkSize: inflateChunk(data.length) })
      } catch (e) {
        return Result.fail(gzipError(file, e))
      }
    } else if (file.endsWith(".gz")) return Result.fail(notGzip(file))
    if (isPickle(bytes)) return Result.succeed(decodeSnapshot(file, bytes, options))
    const decoder = new JsonTraceDecoder(file)
    for (let o = 0; o < bytes.length; o += 1 << 20) decoder.write(bytes.subarray(o, o + (1 << 20)))
    return Result.succeed(decoder.end())
  } catch (e) {
    if (e instanceof TraceError) return Result.fail(e)
    throw e
  }
}

const CHUNK = 1 << 20

/**
 * The sink of the read pipeline: the first bytes say JSON or pickle; JSON is decoded chunk by
 * chunk, a pickle is gathered (up to `MAX_SNAPSHOT_BYTES`) and decoded at the end.
 */
const traceSink = (file: string, options: LoadOptions, onChunk: () => void) => {
  let json: JsonTraceDecoder | undefined
  let pickle: Array<Uint8Array> | undefined
  let pickleBytes = 0
  let first = true
  const sink = new Writable({
    highWaterMark: CHUNK,
    write(chunk: Uint8Array, _encoding, callback) {
      try {
        if (first) {
          first = false
          if (isPickle(chunk)) pickle = []
          else json = new JsonTraceDecoder(file)
        }
        if (pickle !== undefined) {
          pickleBytes += chunk.length
          if (pickleBytes > MAX_SNAPSHOT_BYTES) {
            throw new TraceError({ file, detail: `too large: a snapshot over ${MAX_SNAPSHOT_BYTES} bytes (pickles are read whole)`, reason: "too-large" })
          }
          pickle.push(chunk)
        } else json!.write(chunk)
        onChunk()
        callback()
      } catch (e) {
        callback(e as Error)
      }
    }
  })
  const finish = (): Trace => {
    if (pickle !== undefined) return decodeSnapshot(file, Buffer.concat(pickle), options)
    if (json === undefined) json = new JsonTraceDecoder(file)
    return json.end()
  }
  return { sink, finish, events: () => json?.event ?? 0 }
}

/** Files up to this size are read at once (Note [Reading without holding the file]). */
const SMALL_FILE = 8 * 1024 * 1024
/** A small file inflating beyond this is streamed instead. */
const SMALL_INFLATED = 64 * 1024 * 1024

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve))

/**
 * A small file: read and inflated in one call each, decoded in chunks with a turn of the event
 * loop between them (so an interrupt gets in). `undefined` when it inflates too far: stream it.
 */
const readSmall = async (
  file: string,
  fd: number,
  size: number,
  gzip: boolean,
  options: LoadOptions,
  signal: AbortSignal
): Promise<Trace | undefined> => {
  let data: Uint8Array = Buffer.allocUnsafe(size)
  let got = 0
  try {
    while (got < size) {
      const n = readSync(fd, data, got, size - got, got)
      if (n === 0) break
      got += n
    }
  } catch (e) {
    closeSync(fd)
    throw new TraceError({ file, detail: `cannot read the file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, reason: "unreadable" })
  }
  data = data.subarray(0, got)
  if (gzip) {
    try {
      data = gunzipSync(data, { maxOutputLength: SMALL_INFLATED, chunkSize: inflateChunk(data.length) })
    } catch (e) {
      const err = e as NodeJS.ErrnoException
      if (err.code === "ERR_BUFFER_TOO_LARGE" || e instanceof RangeError) return undefined
      closeSync(fd)
      throw gzipError(file, e)
    }
  }
  closeSync(fd)
  if (isPickle(data)) {
    options.onProgress?.({ bytesRead: got, totalBytes: size, events: 0 })
    return decodeSnapshot(file, data, options)
  }
  const decoder = new JsonTraceDecoder(file)
  for (let o = 0; o < data.length; o += CHUNK) {
    decoder.write(data.subarray(o, o + CHUNK))
    options.onProgress?.({ bytesRead: Math.round(got * Math.min(1, (o + CHUNK) / data.length)), totalBytes: size, events: decoder.event })
    if (o + CHUNK < data.length) {
      await nextTurn()
      if (signal.aborted) throw new TraceError({ file, detail: "interrupted", reason: "interrupted" })
    }
  }
  return decoder.end()
}

const readTrace = async (file: string, options: LoadOptions, signal: AbortSignal): Promise<Trace> => {
  // Opening and sniffing are synchronous: a few microseconds each, where an asynchronous call
  // is a hop through the thread pool that a busy machine makes slow.
  let fd: number
  let size: number
  let regular: boolean
  const head = new Uint8Array(2)
  try {
    fd = openSync(file, "r")
  } catch (e) {
    throw new TraceError({ file, detail: `cannot read the file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, reason: "unreadable" })
  }
  try {
    const stat = fstatSync(fd)
    size = stat.size
    regular = stat.isFile()
    // A pipe or a terminal is only read asynchronously: a blocking read would hold off Ctrl-C.
    if (regular) readSync(fd, head, 0, 2, 0)
  } catch (e) {
    closeSync(fd)
    throw new TraceError({ file, detail: `cannot read the file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, reason: "unreadable" })
  }
  const gzip = regular ? isGzip(head) : file.endsWith(".gz")
  if (!gzip && file.endsWith(".gz")) {
    closeSync(fd)
    throw notGzip(file)
  }
  if (regular && size <= SMALL_FILE) {
    const small = await readSmall(file, fd, size, gzip, options, signal)
    if (small !== undefined) return small
  }
  let bytesRead = 0
  // A pipe is read through a socket handle (epoll), not the file system's thread pool, where a
  // read waits for the writer and could not be called off: Ctrl-C must stop at once.
  const input: Readable = regular
    ? createReadStream(file, { fd, highWaterMark: CHUNK, start: 0 })
    : new Socket({ fd, readable: true, writable: false })
  input.on("data", (chunk) => (bytesRead += chunk.length))
  const { sink, finish, events } = traceSink(file, options, () =>
    options.onProgress?.({ bytesRead, totalBytes: size, events: events() }))
  const stages: Array<Readable | Writable> = [input]
  if (gzip) stages.push(createGunzip({ chunkSize: CHUNK }))
  try {
    await pipeline([...stages, sink] as unknown as [Readable, Writable], { signal })
  } catch (e) {
    if (e instanceof TraceError) throw e
    if (signal.aborted) throw new TraceError({ file, detail: "interrupted", reason: "interrupted" })
    if ((e as NodeJS.ErrnoException).code?.startsWith("Z_") || /gzip|zlib|header check|invalid (block|distance|code)/i.test((e as Error).message)) {
      throw gzipError(file, e)
    }
    throw new TraceError({ file, detail: `cannot read the file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, reason: "unreadable" })
  }
  return finish()
}

/**
 * Reads and decodes a trace file (Note [Reading without holding the file]); interrupting the
 * effect stops the read at once.
 * @category decoding
 */
export const loadTrace = (file: string, options: LoadOptions = {}): Effect.Effect<Trace, TraceError> =>
  Effect.tryPromise({
    try: (signal) => readTrace(file, options, signal),
    catch: (e) =>
      e instanceof TraceError
        ? e
        : new TraceError({ file, detail: `cannot read the file (${(e as Error).message})`, reason: "unreadable" })
  })
