/**
 * The `gmlake-trace/1` format (traces/README.md): decoding with errors that name the file, the
 * event and what is wrong, and a compact columnar form for replay.
 *
 * Note [Trace validation]
 * -----------------------
 * The header (format, workload, anchors) is decoded with Schema. The events are checked by one
 * hand-written pass instead: there are up to a hundred thousand of them, and the rules that matter
 * most are about the sequence, not the shape (an allocation id used twice, a free of an id never
 * allocated or already freed, an `F` without its `f`), which a per-event schema cannot express.
 * The pass stops at the first bad event and reports its index, so nothing is replayed from a trace
 * that is not whole: decoding finishes before any replay starts.
 *
 * @since 0.1.0
 */
import { Data, Result, Schema, SchemaIssue } from "effect"

/** A trace that cannot be used, with where and why. @category errors */
export class TraceError extends Data.TaggedError("TraceError")<{
  readonly file: string
  /** The index of the bad event in the `events` array, when the problem is an event. */
  readonly event?: number
  readonly detail: string
}> {
  override get message(): string {
    return this.event === undefined
      ? `${this.file}: ${this.detail}`
      : `${this.file}: event ${this.event}: ${this.detail}`
  }
}

const NonNegativeInt = Schema.Int.pipe(Schema.check(Schema.isGreaterThanOrEqualTo(0)))
const NonNegative = Schema.Number.pipe(Schema.check(Schema.isGreaterThanOrEqualTo(0)))

/** What PyTorch itself did on the recorded run, in one mode. @category models */
export const Anchor = Schema.Struct({
  peakRequested: NonNegativeInt,
  peakReserved: NonNegativeInt,
  peakAllocated: Schema.optionalKey(NonNegativeInt),
  deviceAllocs: Schema.optionalKey(NonNegativeInt),
  replayColdNsPerOp: Schema.optionalKey(NonNegative),
  replayWarmNsPerOp: Schema.optionalKey(NonNegative),
  utilization: Schema.optionalKey(NonNegative),
  runSeconds: Schema.optionalKey(NonNegative)
})
/** @category models */
export type Anchor = typeof Anchor.Type

/** The header of a trace; `events` are checked separately (Note [Trace validation]). @category models */
export const TraceHeader = Schema.Struct({
  format: Schema.Literal("gmlake-trace/1"),
  workload: Schema.String,
  description: Schema.optionalKey(Schema.String),
  source: Schema.optionalKey(Schema.Record(Schema.String, Schema.Unknown)),
  pytorch: Schema.optionalKey(Schema.Struct({
    native: Schema.optionalKey(Anchor),
    expandable_segments: Schema.optionalKey(Anchor)
  })),
  events: Schema.Array(Schema.Unknown)
})

/** Operation codes of the columnar event form. @category models */
export const Op = { alloc: 0, free: 1, complete: 2 } as const

/** One of PyTorch's own recorded driver actions (`S`, `s`, `M`, `m`), with where it happened. @category models */
export interface RecordedDriverEvent {
  readonly kind: "S" | "s" | "M" | "m"
  readonly bytes: number
  /** Index in the columnar request events of the next request after it. */
  readonly before: number
}

/**
 * A decoded trace. Requests (`a`, `f`, `F`) are stored in columns, so that replay touches no
 * object per event; ids are renumbered densely (0..allocs-1) in order of allocation.
 * @category models
 */
export interface Trace {
  readonly file: string
  readonly workload: string
  readonly description: string
  readonly device: string | undefined
  readonly native: Anchor | undefined
  readonly expandable: Anchor | undefined
  /** Number of request events (`a`, `f`, `F`). */
  readonly length: number
  /** `Op.alloc`, `Op.free` or `Op.complete`. */
  readonly op: Uint8Array
  /** Dense allocation index (0..allocs-1). */
  readonly id: Int32Array
  /** Requested bytes (allocations; 0 otherwise). */
  readonly size: Float64Array
  /** Stream of the allocation (for frees and completions: of the allocation freed). */
  readonly stream: Int32Array
  /** For each allocation index: whether its free is followed by an `F` (deferred free). */
  readonly deferred: Uint8Array
  readonly allocs: number
  readonly streams: number
  readonly recorded: ReadonlyArray<RecordedDriverEvent>
}

const describe = (v: unknown): string => {
  const s = JSON.stringify(v)
  return s === undefined ? String(v) : s.length > 80 ? `${s.slice(0, 77)}...` : s
}

/**
 * Decodes a parsed `gmlake-trace/1` document. `file` names the source in error messages.
 * @category decoding
 */
export const decodeTrace = (file: string, doc: unknown): Result.Result<Trace, TraceError> => {
  const header = Schema.decodeUnknownResult(TraceHeader)(doc, { errors: "all" })
  if (Result.isFailure(header)) {
    const issues = SchemaIssue.makeFormatterStandardSchemaV1()(header.failure.issue).issues
    const detail = issues
      .map((i) => `${i.path && i.path.length > 0 ? i.path.map(String).join(".") : "<root>"}: ${i.message}`)
      .join("; ")
    return Result.fail(new TraceError({ file, detail: `not a gmlake-trace/1 document: ${detail}` }))
  }
  const h = header.success
  const events = h.events
  const n = events.length
  const op = new Uint8Array(n)
  const id = new Int32Array(n)
  const size = new Float64Array(n)
  const stream = new Int32Array(n)
  const recorded: Array<RecordedDriverEvent> = []
  // Per original id: dense index; state 1 = live, 2 = freed (awaiting F if deferred), 3 = done.
  const dense = new Map<number, number>()
  const state: Array<number> = []
  const streamOf: Array<number> = []
  const deferredList: Array<number> = []
  let length = 0
  let maxStream = 0
  const bad = (i: number, detail: string) => Result.fail(new TraceError({ file, event: i, detail }))
  const isId = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0
  for (let i = 0; i < n; i++) {
    const e = events[i]
    if (!Array.isArray(e) || e.length === 0) return bad(i, `expected an array such as ["a", id, bytes], got ${describe(e)}`)
    const kind = e[0]
    switch (kind) {
      case "a": {
        if (e.length !== 3 && e.length !== 4) return bad(i, `"a" takes [id, bytes] or [id, bytes, stream], got ${describe(e)}`)
        const [, rawId, bytes, s = 0] = e as Array<unknown>
        if (!isId(rawId)) return bad(i, `allocation id must be a non-negative integer, got ${describe(rawId)}`)
        if (typeof bytes !== "number" || !Number.isSafeInteger(bytes) || bytes < 0) {
          return bad(i, `size of allocation ${rawId} must be a non-negative integer, got ${describe(bytes)}`)
        }
        if (!isId(s) || s > 0xffff) return bad(i, `stream of allocation ${rawId} must be a small non-negative integer, got ${describe(s)}`)
        if (dense.has(rawId)) return bad(i, `allocation id ${rawId} is used twice`)
        const d = state.length
        dense.set(rawId, d)
        state.push(1)
        streamOf.push(s)
        if (s > maxStream) maxStream = s
        op[length] = Op.alloc
        id[length] = d
        size[length] = bytes
        stream[length] = s
        length++
        break
      }
      case "f":
      case "F": {
        if (e.length !== 2) return bad(i, `"${kind}" takes [id], got ${describe(e)}`)
        const rawId = e[1]
        if (!isId(rawId)) return bad(i, `allocation id must be a non-negative integer, got ${describe(rawId)}`)
        const d = dense.get(rawId)
        if (d === undefined) return bad(i, `"${kind}" of allocation ${rawId}, which was never allocated`)
        if (kind === "f") {
          if (state[d] !== 1) return bad(i, `"f" of allocation ${rawId}, which is already freed`)
          state[d] = 2
          op[length] = Op.free
        } else {
          if (state[d] === 1) return bad(i, `"F" of allocation ${rawId} before its "f"`)
          if (state[d] === 3) return bad(i, `"F" of allocation ${rawId} given twice`)
          state[d] = 3
          deferredList.push(d)
          op[length] = Op.complete
        }
        id[length] = d
        stream[length] = streamOf[d]!
        length++
        break
      }
      case "S":
      case "s":
      case "M":
      case "m": {
        const bytes = e[1]
        if (e.length !== 2 || typeof bytes !== "number" || !Number.isSafeInteger(bytes) || bytes < 0) {
          return bad(i, `"${kind}" takes [bytes] with a non-negative integer, got ${describe(e)}`)
        }
        recorded.push({ kind, bytes, before: length })
        break
      }
      default:
        return bad(i, `unknown operation ${describe(kind)} (expected "a", "f", "F", "S", "s", "M" or "m")`)
    }
  }
  const deferred = new Uint8Array(state.length)
  for (const d of deferredList) deferred[d] = 1
  return Result.succeed({
    file,
    workload: h.workload,
    description: h.description ?? "",
    device: typeof h.source?.["device"] === "string" ? (h.source["device"] as string) : undefined,
    native: h.pytorch?.native,
    expandable: h.pytorch?.expandable_segments,
    length,
    op: op.subarray(0, length),
    id: id.subarray(0, length),
    size: size.subarray(0, length),
    stream: stream.subarray(0, length),
    deferred,
    allocs: state.length,
    streams: maxStream + 1,
    recorded
  })
}
