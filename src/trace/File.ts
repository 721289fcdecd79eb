/**
 * Reading a trace from disk: gzip or plain JSON, then `decodeTrace` (domain). Every failure is a
 * `TraceError` naming the file and what is wrong.
 *
 * @since 0.1.0
 */
import { Effect, Result } from "effect"
import { readFile } from "node:fs/promises"
import { gunzipSync } from "node:zlib"
import { decodeTrace, type Trace, TraceError } from "./Trace.ts"

/**
 * Parses trace bytes: gzip is recognised by its magic number, anything else must be JSON.
 * @category decoding
 */
export const parseTraceBytes = (file: string, data: Uint8Array): Result.Result<Trace, TraceError> => {
  let text: string
  if (data.length >= 2 && data[0] === 0x1f && data[1] === 0x8b) {
    try {
      text = gunzipSync(data).toString("utf8")
    } catch (e) {
      return Result.fail(new TraceError({ file, detail: `corrupt gzip data (${(e as Error).message})` }))
    }
  } else {
    text = Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString("utf8")
    if (file.endsWith(".gz")) {
      return Result.fail(new TraceError({ file, detail: "not gzip data, though the name ends in .gz" }))
    }
  }
  let doc: unknown
  try {
    doc = JSON.parse(text)
  } catch (e) {
    return Result.fail(new TraceError({ file, detail: `not valid JSON (${(e as Error).message})` }))
  }
  return decodeTrace(file, doc)
}

/**
 * Reads and decodes a trace file.
 * @category decoding
 */
export const loadTrace = (file: string): Effect.Effect<Trace, TraceError> =>
  Effect.tryPromise({
    try: () => readFile(file),
    catch: (e) => new TraceError({ file, detail: `cannot read the file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` })
  }).pipe(Effect.flatMap((data) => Effect.fromResult(parseTraceBytes(file, data))))
