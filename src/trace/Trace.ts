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
import { Column, MAX_EVENTS } from "./Columns.ts"
import { IdIndex } from "./IdIndex.ts"

/**
 * What is wrong with a trace, for a caller that acts on it: `invalid` (the content breaks the
 * format), `truncated` (the input ends early), `too-large` (beyond what the format or this
 * machine allows), `too-deep` (nesting beyond any trace's), `unreadable` (the file cannot be
 * read), `not-a-snapshot` / `no-history` (a pickle that cannot become a trace), `interrupted`.
 * @category errors
 */
export type TraceErrorReason =
  | "invalid"
  | "truncated"
  | "too-large"
  | "too-deep"
  | "unreadable"
  | "not-a-snapshot"
  | "no-history"
  | "interrupted"

/** A trace that cannot be used, with where and why. @category errors */
export class TraceError extends Data.TaggedError("TraceError")<{
  readonly file: string
  /** The index of the bad event in the `events` array, when the problem is an event. */
  readonly event?: number
  readonly detail: string
  readonly reason?: TraceErrorReason
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

/**
 * A value for an error message: JSON, cut to 80 characters; never throws (a value nested too
 * deep for `JSON.stringify` is named as such).
 */
export const describe = (v: unknown): string => {
  let s: string | undefined
  try {
    s = JSON.stringify(v)
  } catch {
    return Array.isArray(v) ? "an array nested too deep to show" : "a value that cannot be shown"
  }
  return s === undefined ? String(v) : s.length > 80 ? `${s.slice(0, 77)}...` : s
}

/** A trace's header: everything but its events. @category models */
export type Header = Omit<typeof TraceHeader.Type, "events">

/**
 * Validates a header with Schema. `events` is not part of it (Note [Trace validation]): pass the
 * header's other keys, and `events: []` in place of the events.
 * @category decoding
 */
export const decodeHeader = (file: string, value: unknown): Result.Result<Header, TraceError> => {
  const header = Schema.decodeUnknownResult(TraceHeader)(value, { errors: "all" })
  if (Result.isSuccess(header)) return Result.succeed(header.success)
  const issues = SchemaIssue.makeFormatterStandardSchemaV1()(header.failure.issue).issues
  const detail = issues
    .map((i) => `${i.path && i.path.length > 0 ? i.path.map(String).join(".") : "<root>"}: ${i.message}`)
    .join("; ")
  return Result.fail(new TraceError({ file, detail: `not a gmlake-trace/1 document: ${detail}`, reason: "invalid" }))
}

/** An event for a message: its kept elements, and "..." for those not kept. */
const shown = (e: ArrayLike<unknown>, n: number) =>
  describe(Array.from({ length: Math.min(n, e.length) }, (_, k) => e[k]).concat(n > e.length ? ["..."] : []))

const LIVE = 1
const FREED = 2
const DONE = 3

const isId = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0

/**
 * Builds a `Trace` event by event, checking the sequence as it goes (Note [Trace validation]);
 * every decoder (JSON, snapshots, documents in memory) feeds one. A bad event throws a
 * `TraceError` naming it.
 * @category decoding
 */
export class TraceBuilder {
  readonly file: string
  /** Request events so far. */
  length = 0
  private readonly opCol = new Column(Uint8Array)
  private readonly idCol = new Column(Int32Array)
  private readonly sizeCol = new Column(Float64Array)
  private readonly streamCol = new Column(Int32Array)
  /** Per allocation: LIVE, FREED (awaiting its F, if any) or DONE. */
  private readonly stateCol = new Column(Uint8Array)
  private readonly streamOfCol = new Column(Uint16Array)
  private readonly index = new IdIndex()
  private maxStream = 0
  private readonly recorded: Array<RecordedDriverEvent> = []

  constructor(file: string) {
    this.file = file
  }

  /** Allocations so far. */
  get allocs(): number {
    return this.index.size
  }

  private fail(event: number, detail: string, reason: TraceErrorReason = "invalid"): never {
    throw new TraceError({ file: this.file, event, detail, reason })
  }

  private room(): void {
    const n = this.length + 1
    if (n > MAX_EVENTS) this.fail(this.length, `more than ${MAX_EVENTS} request events: too large`, "too-large")
    if (n > this.opCol.capacity) {
      this.opCol.grow(n)
      this.idCol.grow(n)
      this.sizeCol.grow(n)
      this.streamCol.grow(n)
    }
  }

  /** `["a", id, bytes, stream]`, values already known to be of the right kinds. */
  alloc(event: number, rawId: number, bytes: number, stream: number): void {
    if (this.index.get(rawId) !== -1) this.fail(event, `allocation id ${rawId} is used twice`)
    this.room()
    const d = this.index.add(rawId)
    if (d >= this.stateCol.capacity) {
      this.stateCol.grow(d + 1)
      this.streamOfCol.grow(d + 1)
    }
    this.stateCol.set(d, LIVE)
    this.streamOfCol.set(d, stream)
    if (stream > this.maxStream) this.maxStream = stream
    const i = this.length++
    this.opCol.set(i, Op.alloc)
    this.idCol.set(i, d)
    this.sizeCol.set(i, bytes)
    this.streamCol.set(i, stream)
  }

  /** `["f", id]` (`complete` false) or `["F", id]`. */
  free(event: number, rawId: number, complete: boolean): void {
    const kind = complete ? "F" : "f"
    const d = this.index.get(rawId)
    if (d === -1) this.fail(event, `"${kind}" of allocation ${rawId}, which was never allocated`)
    const state = this.stateCol.get(d)
    if (!complete) {
      if (state !== LIVE) this.fail(event, `"f" of allocation ${rawId}, which is already freed`)
      this.stateCol.set(d, FREED)
    } else {
      if (state === LIVE) this.fail(event, `"F" of allocation ${rawId} before its "f"`)
      if (state === DONE) this.fail(event, `"F" of allocation ${rawId} given twice`)
      this.stateCol.set(d, DONE)
    }
    this.room()
    const i = this.length++
    this.opCol.set(i, complete ? Op.complete : Op.free)
    this.idCol.set(i, d)
    this.sizeCol.set(i, 0)
    this.streamCol.set(i, this.streamOfCol.get(d))
  }

  /** One of PyTorch's recorded driver actions (`S`, `s`, `M`, `m`). */
  driver(kind: RecordedDriverEvent["kind"], bytes: number): void {
    this.recorded.push({ kind, bytes, before: this.length })
  }

  /**
   * One event as decoded JSON: its first `n` elements are in `e` (`n` may exceed what `e`
   * holds when the event was too long to keep; it is then refused).
   */
  event(i: number, e: ArrayLike<unknown>, n: number): void {
    if (n === 0) this.fail(i, `expected an array such as ["a", id, bytes], got []`)
    const kind = e[0]
    switch (kind) {
      case "a": {
        if (n !== 3 && n !== 4) this.fail(i, `"a" takes [id, bytes] or [id, bytes, stream], got ${shown(e, n)}`)
        const rawId = e[1]
        const bytes = e[2]
        const s = n === 4 ? e[3] : 0
        if (!isId(rawId)) this.fail(i, `allocation id must be a non-negative integer, got ${describe(rawId)}`)
        if (typeof bytes !== "number" || !Number.isSafeInteger(bytes) || bytes < 0) {
          this.fail(i, `size of allocation ${rawId} must be a non-negative integer, got ${describe(bytes)}`)
        }
        if (!isId(s) || s > 0xffff) {
          this.fail(i, `stream of allocation ${rawId} must be an integer from 0 to 65535, got ${describe(s)}`)
        }
        this.alloc(i, rawId, bytes, s)
        return
      }
      case "f":
      case "F": {
        if (n !== 2) this.fail(i, `"${kind}" takes [id], got ${shown(e, n)}`)
        const rawId = e[1]
        if (!isId(rawId)) this.fail(i, `allocation id must be a non-negative integer, got ${describe(rawId)}`)
        this.free(i, rawId, kind === "F")
        return
      }
      case "S":
      case "s":
      case "M":
      case "m": {
        const bytes = e[1]
        if (n !== 2 || typeof bytes !== "number" || !Number.isSafeInteger(bytes) || bytes < 0) {
          this.fail(i, `"${kind}" takes [bytes] with a non-negative integer, got ${shown(e, n)}`)
        }
        this.driver(kind, bytes)
        return
      }
      default:
        this.fail(i, `unknown operation ${describe(kind)} (expected "a", "f", "F", "S", "s", "M" or "m")`)
    }
  }

  /** The trace, once every event is in. The builder must not be used afterwards. */
  finish(header: Header): Trace {
    const allocs = this.index.size
    const length = this.length
    // The state column becomes the deferred column in place: an allocation is deferred when its
    // `F` was given.
    const deferred = this.stateCol.take(allocs)
    for (let d = 0; d < allocs; d++) deferred[d] = deferred[d] === DONE ? 1 : 0
    this.streamOfCol.take(0)
    const source = header.source
    return {
      file: this.file,
      workload: header.workload,
      description: header.description ?? "",
      device: typeof source?.["device"] === "string" ? (source["device"] as string) : undefined,
      native: header.pytorch?.native,
      expandable: header.pytorch?.expandable_segments,
      length,
      op: this.opCol.take(length),
      id: this.idCol.take(length),
      size: this.sizeCol.take(length),
      stream: this.streamCol.take(length),
      deferred,
      allocs,
      streams: this.maxStream + 1,
      recorded: this.recorded
    }
  }
}

/**
 * Decodes a `gmlake-trace/1` document already in memory. `file` names the source in error
 * messages. Files go through `File.ts`, which never holds the whole document.
 * @category decoding
 */
export const decodeTrace = (file: string, doc: unknown): Result.Result<Trace, TraceError> => {
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) {
    return Result.fail(new TraceError({ file, detail: `not a gmlake-trace/1 document: expected an object, got ${describe(doc)}`, reason: "invalid" }))
  }
  const { events, ...rest } = doc as Record<string, unknown>
  const header = decodeHeader(file, { ...rest, events: Array.isArray(events) ? [] : events })
  if (Result.isFailure(header)) return Result.fail(header.failure)
  const builder = new TraceBuilder(file)
  const list = events as ReadonlyArray<unknown>
  for (let i = 0; i < list.length; i++) {
    const e = list[i]
    if (!Array.isArray(e)) {
      return Result.fail(new TraceError({ file, event: i, detail: `expected an array such as ["a", id, bytes], got ${describe(e)}`, reason: "invalid" }))
    }
    try {
      builder.event(i, e, e.length)
    } catch (error) {
      if (error instanceof TraceError) return Result.fail(error)
      throw error
    }
  }
  return Result.succeed(builder.finish(header.success))
}
