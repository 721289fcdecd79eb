/**
 * Streaming decode of `gmlake-trace/1` JSON: bytes in, chunk by chunk, a `Trace` out, with
 * memory bounded by the decoded columns (never the document, nor an object per event).
 *
 * Note [Streaming JSON decode]
 * ----------------------------
 * The lexing (UTF-8, escapes, numbers) is @streamparser/json's `Tokenizer`, chosen over
 * stream-json because it is synchronous, has no dependencies, takes `Uint8Array` chunks and runs
 * at about 50 MB/s here, where stream-json's pipeline of Node streams pays an object and a stream
 * hop per token. Its `TokenParser` is not used: it would build an array per event. Instead
 * this module checks the grammar itself with a small state machine that knows where it is in
 * the document: header values are built (bounded in depth and size) and validated by Schema at
 * the end (Note [Trace validation]); each event's scalars go to one reused buffer and straight
 * into the `TraceBuilder`'s columns. Everything a hostile file can do is bounded by its size:
 * nesting is refused past `MAX_DEPTH` (at once inside events, where none is allowed), a single
 * token longer than `MAX_TOKEN` bytes is refused as too large, and an input that stops early is
 * named truncated, with the event it stopped in.
 *
 * Why one file of ~540 lines: the fast path for the common event shape and the tokenizer fallback
 * hand the same partial state (a cut event, the column writers, the position for error messages)
 * back and forth at every chunk boundary (Note [Streaming JSON decode]).
 *
 * @since 0.2.0
 */
import Tokenizer from "@streamparser/json/tokenizer.js"
import { Result } from "effect"
import { decodeHeader, describe, type Trace, TraceBuilder, TraceError, type TraceErrorReason } from "./Trace.ts"

/** Deepest nesting of a header value (a trace's header is a few levels deep). @category models */
export const MAX_DEPTH = 64
/** Longest single JSON token (string, number, run of spaces), in bytes. @category models */
export const MAX_TOKEN = 16 * 1024 * 1024
/** Most JSON values in the header (everything but the events). @category models */
export const MAX_HEADER_VALUES = 1_000_000
/** Elements of one event kept for its error message; an event has at most 4. */
const EVENT_KEEP = 8

// Token types of @streamparser/json (utils/types/tokenType.js).
const LEFT_BRACE = 0
const RIGHT_BRACE = 1
const LEFT_BRACKET = 2
const RIGHT_BRACKET = 3
const COLON = 4
const COMMA = 5

// Where the decoder is.
const START = 0
const ROOT = 1
const VALUE = 2
const EVENTS = 3
const EVENT = 4
const END = 5

// Expectations inside a container.
const KEY_OR_CLOSE = 0
const KEY = 1
const COLON_NEXT = 2
const ITEM = 3
const ITEM_OR_CLOSE = 4
const COMMA_OR_CLOSE = 5

// Why the fast path stopped.
const INCOMPLETE = 0
const MISMATCH = 1

/** The event kinds, by their one letter's byte. */
const KINDS: Array<string | undefined> = []
for (const k of ["a", "f", "F", "S", "s", "M", "m"]) KINDS[k.charCodeAt(0)] = k

const isSpace = (c: number) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09

const TOKEN_NAMES = ["'{'", "'}'", "'['", "']'", "':'", "','", "true", "false", "null", "a string", "a number"]

/** Sets a key as `JSON.parse` does: `"__proto__"` is an own key, never the prototype. */
const put = (o: Record<string, unknown>, key: string, v: unknown): void => {
  if (key === "__proto__") Object.defineProperty(o, key, { value: v, enumerable: true, writable: true, configurable: true })
  else o[key] = v
}

interface Frame {
  readonly container: Record<string, unknown> | Array<unknown>
  state: number
  key: string
}

/**
 * Decodes one `gmlake-trace/1` JSON document pushed in chunks. `write` and `end` throw a
 * `TraceError` naming the file, the event and the problem.
 * @category decoding
 */
export class JsonTraceDecoder {
  readonly file: string
  /** Bytes of JSON consumed so far. */
  bytes = 0
  /** Index of the next event in the `events` array (for progress and messages). */
  event = 0
  private readonly builder: TraceBuilder
  private readonly tokenizer: Tokenizer
  private mode = START
  private state = KEY_OR_CLOSE
  private key = ""
  private readonly header: Record<string, unknown> = {}
  private headerValues = 0
  private sawEvents = false
  private readonly frames: Array<Frame> = []
  private readonly ev: Array<unknown> = new Array(EVENT_KEEP)
  private n = 0
  /** Absolute position of the last token (the last byte of the last event the fast path took). */
  private lastToken = -1
  /** Bytes the fast path took (the tokenizer's offsets are short by this much). */
  private skipped = 0
  /** Whether the tokenizer holds no partial token (only spaces since its last token). */
  private clean = true
  /** Why the fast path stopped. */
  private stop = MISMATCH
  /** Where the fast path's last event ended in the current buffer (-1: none). */
  private took = -1
  /** The start of an event cut by the end of a chunk, for the next chunk. */
  private tail: Uint8Array | undefined
  private joined = new Uint8Array(0)
  private failure: TraceError | undefined

  constructor(file: string) {
    this.file = file
    this.builder = new TraceBuilder(file)
    this.tokenizer = new Tokenizer()
    this.tokenizer.onToken = ({ token, value, offset }) => {
      // The tokenizer never sees what the fast path took: its offsets are shifted by that.
      const at = offset + this.skipped
      this.lastToken = at
      this.token(token, value, at)
    }
    this.tokenizer.onError = (e) => {
      throw e
    }
    this.tokenizer.onEnd = () => {}
  }

  private fail(detail: string, reason: TraceErrorReason = "invalid", event = this.inEvents() ? this.event : undefined): never {
    const e = event === undefined
      ? new TraceError({ file: this.file, detail, reason })
      : new TraceError({ file: this.file, event, detail, reason })
    this.failure = e
    throw e
  }

  private inEvents(): boolean {
    return this.mode === EVENTS || this.mode === EVENT
  }

  private syntax(token: number, value: unknown, offset: number, expected: string): never {
    const got = token >= 9 ? `${TOKEN_NAMES[token]} ${describe(value)}` : TOKEN_NAMES[token]
    return this.fail(`not valid JSON at byte ${offset}: expected ${expected}, got ${got}`)
  }

  /** Pushes the next chunk of the document. */
  write(chunk: Uint8Array): void {
    if (this.failure !== undefined) throw this.failure
    if (this.bytes - this.lastToken > MAX_TOKEN) {
      this.fail(`too large: more than ${MAX_TOKEN} bytes without a complete JSON token at byte ${this.lastToken} (no trace has a string, number or run of spaces that long)`, "too-large")
    }
    let buf = chunk
    if (this.tail !== undefined) {
      // The cut event and the new chunk, in one reused buffer (no garbage per chunk).
      const n = this.tail.length + chunk.length
      if (this.joined.length < n) this.joined = new Uint8Array(Math.max(n, 2 * this.joined.length))
      this.joined.set(this.tail)
      this.joined.set(chunk, this.tail.length)
      buf = this.joined.subarray(0, n)
      this.tail = undefined
    }
    // Absolute position of buf[0] in the document.
    const base = this.bytes - (buf.length - chunk.length)
    this.bytes += chunk.length
    this.consume(buf, base, false)
  }

  /**
   * Runs `buf` through the fast path where it applies and the tokenizer elsewhere
   * (Note [Streaming JSON decode]). At the end of input (`last`), nothing is carried over.
   */
  private consume(buf: Uint8Array, base: number, last: boolean): void {
    let p = 0
    try {
      while (p < buf.length) {
        if (this.mode === EVENTS && this.clean) {
          this.took = -1
          const q = this.fast(buf, p)
          if (q > p) this.skipped += q - p
          // The last event taken is the last token; spaces alone are not (MAX_TOKEN counts them).
          if (this.took >= 0) this.lastToken = base + this.took - 1
          p = q
          if (p >= buf.length) break
          if (this.stop === INCOMPLETE && !last) {
            this.tail = buf.slice(p)
            return
          }
        }
        // The tokenizer takes over in pieces, small inside the events so that the fast path
        // resumes as soon as the decoder is between two events again.
        const q = this.mode === END ? buf.length : Math.min(buf.length, p + (this.mode === EVENTS || this.mode === EVENT ? 64 : 4096))
        this.tokenizer.write(buf.subarray(p, q))
        // Clean: nothing but spaces after the last token, so the tokenizer holds no partial token.
        const from = this.lastToken + 1 - base
        let clean = from >= p ? true : this.clean
        for (let i = Math.max(from, p); i < q && clean; i++) clean = isSpace(buf[i]!)
        this.clean = clean
        p = q
      }
    } catch (e) {
      this.rethrow(e)
    }
  }

  /**
   * The fast path: events of the regular form `["a", 12, 4096]` (a one-letter kind and up to
   * three unsigned integers of at most 15 digits, any spaces), read straight from the bytes.
   * Returns the position after the last event it took; `stop` says why it stopped: the input
   * ended inside an event (`INCOMPLETE`), or something it does not handle is next (`MISMATCH`),
   * which the tokenizer then reads, reporting any error exactly as without the fast path.
   */
  private fast(buf: Uint8Array, p: number): number {
    const n = buf.length
    const ev = this.ev
    let start = p
    let state = this.state
    for (;;) {
      let q = start
      // Spaces between events are taken here (the tokenizer, between tokens, would skip them):
      // handing a long run of them over 64 bytes at a time would rescan it each time.
      while (q < n && isSpace(buf[q]!)) q++
      start = q
      if (q >= n) return this.incomplete(start, q)
      let c = buf[q]!
      if (state === COMMA_OR_CLOSE) {
        if (c !== 0x2c) return this.mismatch(start)
        q++
        while (q < n && isSpace(buf[q]!)) q++
        if (q >= n) return this.incomplete(start, q)
        c = buf[q]!
      }
      if (c !== 0x5b) return this.mismatch(start)
      q++
      while (q < n && isSpace(buf[q]!)) q++
      if (q + 2 >= n) return this.incomplete(start, q)
      if (buf[q] !== 0x22 || buf[q + 2] !== 0x22) return this.mismatch(start)
      const kind = KINDS[buf[q + 1]!]
      if (kind === undefined) return this.mismatch(start)
      ev[0] = kind
      q += 3
      let count = 1
      for (;;) {
        while (q < n && isSpace(buf[q]!)) q++
        if (q >= n) return this.incomplete(start, q)
        c = buf[q]!
        if (c === 0x5d) break
        if (c !== 0x2c || count === 4) return this.mismatch(start)
        q++
        while (q < n && isSpace(buf[q]!)) q++
        if (q >= n) return this.incomplete(start, q)
        c = buf[q]!
        if (c < 0x30 || c > 0x39) return this.mismatch(start)
        let v = c - 0x30
        let digits = 1
        q++
        if (v !== 0) {
          while (q < n && (c = buf[q]!) >= 0x30 && c <= 0x39) {
            v = v * 10 + (c - 0x30)
            q++
            if (++digits > 15) return this.mismatch(start)
          }
        }
        if (q >= n) return this.incomplete(start, q)
        c = buf[q]!
        // A fraction, an exponent or a leading zero: the tokenizer's business.
        if (c === 0x2e || c === 0x65 || c === 0x45 || (c >= 0x30 && c <= 0x39)) return this.mismatch(start)
        ev[count++] = v
      }
      q++
      this.builder.event(this.event, ev, count)
      this.event++
      this.took = q
      state = COMMA_OR_CLOSE
      this.state = COMMA_OR_CLOSE
      start = q
    }
  }

  private incomplete(start: number, q: number): number {
    // An event of the regular form is short; a long stretch of spaces is the tokenizer's.
    this.stop = q - start > 256 ? MISMATCH : INCOMPLETE
    return start
  }

  private mismatch(start: number): number {
    this.stop = MISMATCH
    return start
  }

  private rethrow(e: unknown): never {
    if (e instanceof TraceError) {
      this.failure = e
      throw e
    }
    if (e instanceof RangeError) this.fail(`too large: ${e.message}`, "too-large")
    const text = e instanceof Error ? e.message : String(e)
    // The tokenizer's own words name the byte, counted in what it saw: count the fast path's too.
    const fixed = text.replace(/ at chunk position "\d+" \(absolute position "(\d+)"\)/, (_, at) => ` at byte ${Number(at) + this.skipped}`)
    return this.fail(`not valid JSON (${fixed})`)
  }

  /** Ends the document and returns the trace. */
  end(): Trace {
    if (this.failure !== undefined) throw this.failure
    const tail = this.tail
    if (tail !== undefined) {
      this.tail = undefined
      this.consume(tail, this.bytes - tail.length, true)
    }
    if (this.mode !== END) {
      try {
        this.tokenizer.end()
      } catch (e) {
        if (e instanceof TraceError) throw e
      }
      if (this.bytes === 0) this.fail("empty: no JSON document", "truncated")
      const where = this.mode === EVENT || this.mode === EVENTS
        ? `inside the events array, after ${this.event} complete event(s)`
        : this.mode === START ? "before any JSON value" : "inside the header"
      this.fail(`truncated: the input ends ${where} (at byte ${this.bytes}); the file is cut short`, "truncated")
    }
    if (this.sawEvents) put(this.header, "events", [])
    const header = decodeHeader(this.file, this.header)
    if (Result.isFailure(header)) {
      this.failure = header.failure
      throw header.failure
    }
    return this.builder.finish(header.success)
  }

  private token(token: number, value: unknown, offset: number): void {
    switch (this.mode) {
      case EVENT:
        return this.eventToken(token, value, offset)
      case EVENTS:
        return this.eventsToken(token, value, offset)
      case ROOT:
        return this.rootToken(token, value, offset)
      case VALUE:
        return this.valueToken(token, value, offset)
      case START:
        if (token !== LEFT_BRACE) {
          const got = token >= 9 ? describe(value) : token === LEFT_BRACKET ? "an array" : TOKEN_NAMES[token]
          this.fail(`not a gmlake-trace/1 document: expected an object ({"format": "gmlake-trace/1", ...}), got ${got}`)
        }
        this.mode = ROOT
        this.state = KEY_OR_CLOSE
        return
      default:
        return this.syntax(token, value, offset, "the end of the document")
    }
  }

  // Inside one event: scalars separated by commas.
  private eventToken(token: number, value: unknown, offset: number): void {
    if (token >= 6) {
      if (this.state !== ITEM && this.state !== ITEM_OR_CLOSE) this.syntax(token, value, offset, "',' or ']'")
      if (this.n < EVENT_KEEP) this.ev[this.n] = value
      this.n++
      this.state = COMMA_OR_CLOSE
      return
    }
    switch (token) {
      case COMMA:
        if (this.state !== COMMA_OR_CLOSE) this.syntax(token, value, offset, "a value")
        this.state = ITEM
        return
      case RIGHT_BRACKET: {
        if (this.state === ITEM) this.syntax(token, value, offset, "a value")
        const i = this.event
        this.builder.event(i, this.ev, this.n)
        this.event = i + 1
        this.mode = EVENTS
        this.state = COMMA_OR_CLOSE
        return
      }
      case LEFT_BRACKET:
      case LEFT_BRACE:
        return this.fail(
          `an event holds strings and numbers only, such as ["a", id, bytes]; found a nested ${token === LEFT_BRACKET ? "array" : "object"} at byte ${offset}`
        )
      default:
        return this.syntax(token, value, offset, this.state === COMMA_OR_CLOSE ? "',' or ']'" : "a value")
    }
  }

  // Inside the events array: events separated by commas.
  private eventsToken(token: number, value: unknown, offset: number): void {
    switch (token) {
      case LEFT_BRACKET:
        if (this.state === COMMA_OR_CLOSE) this.syntax(token, value, offset, "',' or ']'")
        this.mode = EVENT
        this.state = ITEM_OR_CLOSE
        this.n = 0
        return
      case COMMA:
        if (this.state !== COMMA_OR_CLOSE) this.syntax(token, value, offset, "an event")
        this.state = ITEM
        return
      case RIGHT_BRACKET:
        if (this.state === ITEM) this.syntax(token, value, offset, "an event")
        this.mode = ROOT
        this.state = COMMA_OR_CLOSE
        return
      default:
        if (this.state === COMMA_OR_CLOSE) this.syntax(token, value, offset, "',' or ']'")
        return this.fail(`expected an array such as ["a", id, bytes], got ${token >= 6 ? describe(value) : token === LEFT_BRACE ? "an object" : TOKEN_NAMES[token]}`)
    }
  }

  // Inside the top-level object.
  private rootToken(token: number, value: unknown, offset: number): void {
    switch (this.state) {
      case KEY_OR_CLOSE:
      case KEY:
        if (token === 9) {
          this.key = value as string
          this.state = COLON_NEXT
          return
        }
        if (token === RIGHT_BRACE && this.state === KEY_OR_CLOSE) {
          this.mode = END
          return
        }
        return this.syntax(token, value, offset, "a key")
      case COLON_NEXT:
        if (token !== COLON) this.syntax(token, value, offset, "':'")
        this.state = ITEM
        return
      case ITEM:
        if (this.key === "events") {
          if (this.sawEvents) this.fail(`"events" is given twice`)
          this.sawEvents = true
          this.checkFormat()
          if (token === LEFT_BRACKET) {
            this.mode = EVENTS
            this.state = ITEM_OR_CLOSE
            return
          }
        }
        this.startValue(token, value, offset)
        return
      default:
        if (token === COMMA) this.state = KEY
        else if (token === RIGHT_BRACE) this.mode = END
        else this.syntax(token, value, offset, "',' or '}'")
    }
  }

  /** Refuses a document whose `format` (when it comes before the events) is not ours, before reading them. */
  private checkFormat(): void {
    if ("format" in this.header && this.header["format"] !== "gmlake-trace/1") {
      this.fail(`not a gmlake-trace/1 document: format: Expected "gmlake-trace/1", got ${describe(this.header["format"])}`)
    }
  }

  private countValue(): void {
    if (++this.headerValues > MAX_HEADER_VALUES) {
      this.fail(`too large: the header holds more than ${MAX_HEADER_VALUES} values`, "too-large")
    }
  }

  // A header value: a scalar, or a container built by `valueToken`.
  private startValue(token: number, value: unknown, offset: number): void {
    this.countValue()
    if (token >= 6) {
      put(this.header, this.key, value)
      this.state = COMMA_OR_CLOSE
      return
    }
    if (token !== LEFT_BRACE && token !== LEFT_BRACKET) this.syntax(token, value, offset, "a value")
    this.mode = VALUE
    this.frames.length = 0
    this.frames.push({ container: token === LEFT_BRACE ? {} : [], state: token === LEFT_BRACE ? KEY_OR_CLOSE : ITEM_OR_CLOSE, key: "" })
  }

  private valueToken(token: number, value: unknown, offset: number): void {
    const top = this.frames[this.frames.length - 1]!
    const isObject = !Array.isArray(top.container)
    switch (top.state) {
      case KEY_OR_CLOSE:
      case KEY:
        if (token === 9) {
          top.key = value as string
          top.state = COLON_NEXT
          return
        }
        if (token === RIGHT_BRACE && top.state === KEY_OR_CLOSE) return this.close()
        return this.syntax(token, value, offset, "a key")
      case COLON_NEXT:
        if (token !== COLON) this.syntax(token, value, offset, "':'")
        top.state = ITEM
        return
      case ITEM:
      case ITEM_OR_CLOSE: {
        if (token === RIGHT_BRACKET && top.state === ITEM_OR_CLOSE && !isObject) return this.close()
        this.countValue()
        let v: unknown
        if (token >= 6) v = value
        else if (token === LEFT_BRACE || token === LEFT_BRACKET) {
          if (this.frames.length >= MAX_DEPTH) {
            this.fail(`nested too deep: header value "${this.key}" nests more than ${MAX_DEPTH} levels (at byte ${offset})`, "too-deep")
          }
          v = token === LEFT_BRACE ? {} : []
        } else return this.syntax(token, value, offset, "a value")
        if (isObject) put(top.container as Record<string, unknown>, top.key, v)
        else (top.container as Array<unknown>).push(v)
        top.state = COMMA_OR_CLOSE
        if (token === LEFT_BRACE || token === LEFT_BRACKET) {
          this.frames.push({
            container: v as Record<string, unknown>,
            state: token === LEFT_BRACE ? KEY_OR_CLOSE : ITEM_OR_CLOSE,
            key: ""
          })
        }
        return
      }
      default:
        if (token === COMMA) top.state = isObject ? KEY : ITEM
        else if (token === (isObject ? RIGHT_BRACE : RIGHT_BRACKET)) this.close()
        else this.syntax(token, value, offset, isObject ? "',' or '}'" : "',' or ']'")
    }
  }

  private close(): void {
    const done = this.frames.pop()!
    if (this.frames.length === 0) {
      put(this.header, this.key, done.container)
      this.mode = ROOT
      this.state = COMMA_OR_CLOSE
    }
  }
}
