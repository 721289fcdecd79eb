/**
 * The tunables of the stitching allocator (`StitchingAllocator.ts`), as one validated value.
 *
 * Note [One set of defaults]
 * --------------------------
 * The defaults are the same for every workload and every device; each has a reason that does not
 * depend on the four traces in `traces/`, which were used to measure, not to fit (the figures
 * below are what turning each off cost on them; the notes named are in the modules of this folder):
 *
 * - `splitBytes` 512: PyTorch's `kMinBlockSize`. Frameworks align tensors to 512 B or less, and
 *   a finer unit would only add free-list entries too small to serve anything.
 * - `allocateAndStitch` on: when what a stitch could gather falls short of a request, create only
 *   the shortfall and stitch it with the rest (Note [Shortfall]). Creating the whole request
 *   leaves the free chunks idle at exactly the moment memory peaks (off: 4.9 points of mean
 *   utilization, and more reserved than `expandable_segments` on GPT-2).
 * - `minPartialBytes` 512 KiB (a quarter of the common 2 MiB granule): a partly free chunk at an
 *   end of a stitched range (Note [Stitch selection]) costs one more map (about 2.5 us) and makes
 *   the range harder to reuse from the cache; below a quarter granule the bytes it recovers are
 *   not worth that (never: 0.5 points).
 * - `chunkDivisor` 1 and `maxChunkBytes` 64 MiB: new memory is created in chunks of half to all
 *   of the request that made it (a power of two of granules), at most 64 MiB, and a separate
 *   one-granule chunk for its tail (`tailChunk`; off: 0.1 points), Note [Chunk sizes]. A chunk
 *   can only be stitched when it is wholly free, so its size bounds the free bytes that a live
 *   neighbour strands; the number of chunks is the driver bill: one `cuMemCreate` and one map
 *   each, and every later stitch maps each chunk it uses again and pays a set access per chunk
 *   (about 30 us each on an H200, Note [Driver-time model]), while a `cuMemCreate` costs about the
 *   same from 2 MiB to 512 MiB. Past 64 MiB a chunk no longer gets cheaper per call and
 *   `cuMemRelease` gets dearer (100 us at 128 MiB, 225 us at 512 MiB), while a larger chunk
 *   strands more. Measured on the five bundled traces (`bench/results/2026-12-02-chunk-divisor.md`):
 *   divisor 4 (chunks of a quarter to an eighth of the request) gave 0.9896-0.9984 utilization
 *   for 1.7-5.3 times expandable segments' driver calls and 565 and 532 calls in the second half
 *   of the two llama traces; divisor 1 gives 0.9818-0.9974 (>= 0.98 everywhere) for 0.95-2.4
 *   times their calls, a second half of 154 and 251, and half the modelled driver time (with the
 *   densest-run selection of Note [Stitch selection]: 0.9830 and 119 on llama1b_ckpt_varlen). Memory
 *   stays within the goal, driver time is what a user pays every step: divisor 1.
 * - `minStitchSavingBytes` 0: a stitch for the shortfall is made whatever it saves per chunk
 *   it maps (Note [Stitch saving] in `StitchingAllocator.ts`). A threshold trades memory for driver
 *   calls; on the bundled traces none keeps every trace at >= 0.98 utilization, so memory wins by
 *   default and the choice is the user's.
 * - `reuseLimit` 10: GMLake's own: a cached stitched range serves a request of at least a tenth
 *   of the block it was stitched for (the rest of its chunks stay free for others, Note [Stitched
 *   view cache]).
 * - `maxCachedStitchedBytes` 64 GiB: virtual address space, not memory (a cached range holds no
 *   physical byte of its own). The bound keeps stale ranges from growing without limit; on a
 *   device with 2^47 bytes of virtual space it is far from any real limit, and eviction costs a
 *   driver call that a reuse would have saved.
 * - `segmentBytes` 0 (= the device's capacity): the virtual size of each stream's growable
 *   segment (Note [Growth]), so one segment can hold everything the device can.
 * - `placement` on: take a request from the end of a free block that leaves more whole chunks
 *   free (Note [Placement]; off: 0.6 points).
 * - `crossStream` on: a stream about to grow first adopts chunks that lie wholly free in other
 *   streams' segments, once an event shows their last use has completed (Note [Cross-stream
 *   adoption]). Single-stream work never reaches it; on gpt2_streams it lifts utilization from
 *   0.973 to 0.995 at event latencies 0-256, and is never worse than per-stream pools
 *   (bench/results/2026-12-02-cross-stream-latency.txt).
 * - `crossStreamLending` off: lending instead of moving (Note [Cross-stream lending]) settles
 *   repeated multi-stream steps that adoption moves back and forth for ever, but makes 6-18
 *   second-half driver calls on gpt2_streams where adoption makes none, and can hold more than
 *   per-stream pools while the device runs behind, which adoption never does
 *   (bench/results/2026-12-03-cross-stream-lending.md). `crossStreamMoves` 0 with it: lending
 *   settled more random steps than one move first, with less memory.
 *
 * @since 0.1.0
 */
import { Data, Effect, Result, Schema, SchemaIssue } from "effect"
import { GiB, KiB, MiB } from "../../Units.ts"

const Int = (min: number, message: string) =>
  Schema.Int.pipe(Schema.check(Schema.isGreaterThanOrEqualTo(min, { message })))

const withDefault = <S extends Schema.Top>(schema: S, value: S["Encoded"]) =>
  schema.pipe(Schema.withDecodingDefaultKey(Effect.succeed(value)))

const PowerOfTwo = Schema.Int.pipe(
  Schema.check(Schema.makeFilter((n: number) => n > 0 && (n & (n - 1)) === 0 && n <= 2 ** 30, {
    message: "must be a power of two between 1 B and 1 GiB"
  }))
)

const Bool = Schema.Boolean.annotate({ message: "must be true or false" })

/**
 * The stitching allocator's tunables. Decode with `decodeStitchingConfig` (missing keys take
 * their defaults, unknown keys are ignored); `defaultStitchingConfig` holds the defaults.
 * @category models
 */
export class StitchingConfig extends Schema.Class<StitchingConfig>("gmlake/StitchingConfig")({
  /** Requests are rounded up to this and blocks are split at it (bytes, a power of two). */
  splitBytes: withDefault(PowerOfTwo, 512),
  /** A cached stitched range serves a request only if it is at most this many times larger. */
  reuseLimit: withDefault(
    Schema.Number.pipe(Schema.check(Schema.isGreaterThanOrEqualTo(1, { message: "must be a number of at least 1" }))),
    10
  ),
  /** Cached stitched ranges are evicted, least recently released first, past this many bytes. */
  maxCachedStitchedBytes: withDefault(Int(0, "must be a non-negative integer number of bytes"), GiB(64)),
  /** When the free chunks fall short, create only the shortfall and stitch (else grow by the request). */
  allocateAndStitch: withDefault(Bool, true),
  /** A partly free chunk may begin or end a stitched range when it offers at least this many bytes. */
  minPartialBytes: withDefault(Int(0, "must be a non-negative integer number of bytes"), KiB(512)),
  /** New memory comes in chunks of about the request divided by this (a power of two of granules). */
  chunkDivisor: withDefault(Int(1, "must be a positive integer"), 1),
  /** No chunk is created larger than this (bytes; rounded down to the granularity, at least one granule). */
  maxChunkBytes: withDefault(Int(1, "must be a positive integer number of bytes"), MiB(64)),
  /**
   * Grow rather than stitch for the shortfall when the stitch would save fewer than this many bytes
   * per chunk it maps (0: always stitch; Note [Stitch saving]).
   */
  minStitchSavingBytes: withDefault(Int(0, "must be a non-negative integer number of bytes"), 0),
  /** Give the last, partly used granule of new memory a chunk of its own. */
  tailChunk: withDefault(Bool, true),
  /** Virtual size of each stream's growable segment in bytes; 0 means the device's capacity. */
  segmentBytes: withDefault(Int(0, "must be a non-negative integer number of bytes"), 0),
  /** Take a request from whichever end of a free block leaves more whole chunks free. */
  placement: withDefault(Bool, true),
  /**
   * Before a stream grows, adopt chunks wholly free in other streams' segments whose last use
   * has completed (Note [Cross-stream adoption]; needs the device's streams and events).
   */
  crossStream: withDefault(Bool, true),
  /**
   * With `crossStream`: lend other streams' free chunks through views of the borrowing stream
   * instead of moving them (Note [Cross-stream lending]).
   */
  crossStreamLending: withDefault(Bool, false),
  /**
   * With `crossStreamLending`: how many times a chunk may move to another stream (adoption) before
   * it is only lent (0: only ever lent; 1 keeps gpt2_streams at no second-half call, Note
   * [Cross-stream lending]). Without lending, moves are not limited.
   */
  crossStreamMoves: withDefault(Int(0, "must be a non-negative integer"), 0)
}) {}

/**
 * The configuration could not be decoded: one line per bad field.
 * @category errors
 */
export class StitchingConfigError extends Data.TaggedError("StitchingConfigError")<{
  readonly issues: ReadonlyArray<{ readonly field: string; readonly message: string }>
}> {
  override get message(): string {
    return `invalid stitching configuration: ${this.issues.map((i) => `${i.field}: ${i.message}`).join("; ")}`
  }
}

const decode = Schema.decodeUnknownResult(StitchingConfig)
const format = SchemaIssue.makeFormatterStandardSchemaV1()

/**
 * Decodes a configuration from unknown input (parsed JSON, say). Missing keys take their
 * defaults; unknown keys are ignored; every bad field is reported.
 * @category decoding
 */
export const decodeStitchingConfig = (input: unknown): Result.Result<StitchingConfig, StitchingConfigError> => {
  const r = decode(input, { errors: "all", reportInput: true })
  if (Result.isSuccess(r)) return Result.succeed(r.success)
  const issues = format(r.failure.issue).issues.map((i) => {
    const path = i.path ?? []
    let message = i.message
    if (path.length === 1 && !message.includes(", got ") && typeof input === "object" && input !== null) {
      message += `, got ${JSON.stringify((input as Record<PropertyKey, unknown>)[path[0] as PropertyKey]) ?? "undefined"}`
    }
    return { field: path.length > 0 ? path.map(String).join(".") : "<root>", message }
  })
  return Result.fail(new StitchingConfigError({ issues }))
}

/**
 * The defaults (Note [One set of defaults]).
 * @category constructors
 */
export const defaultStitchingConfig: StitchingConfig = Result.getOrThrow(decodeStitchingConfig({}))
