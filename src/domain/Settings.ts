/**
 * One settings value for every policy, written as PyTorch users write `PYTORCH_CUDA_ALLOC_CONF`:
 * `key:value,key:value`.
 *
 * Note [Allocator settings]
 * -------------------------
 * PyTorch users tune the caching allocator with `PYTORCH_CUDA_ALLOC_CONF`, so the same text form
 * and, where the baselines model an option, the same key and meaning are used here, from
 * `--config` or the environment variable `GMLAKE_ALLOC_CONF`:
 *
 * - `max_split_size_mb` (caching, expandable): blocks of at least this many MiB are never split
 *   (PyTorch requires more than 20).
 * - `max_non_split_rounding_mb` (caching, expandable): an oversize request takes a cached block
 *   less than this many MiB larger (default 20).
 * - `roundup_power2_divisions` (caching, expandable): one power of two for every size (`4`), or
 *   PyTorch's per-interval list (`[256:1,512:2,1024:4,>:8]`, interval starts in MiB).
 * - `garbage_collection_threshold` (caching): a fraction strictly between 0 and 1; as in PyTorch
 *   it acts only with `per_process_memory_fraction` (PyTorch's
 *   `torch.cuda.set_per_process_memory_fraction`, a fraction in (0, 1]).
 * - The stitching policy's tunables (gmlake), in the same snake_case: `split_bytes`,
 *   `reuse_limit`, `max_cached_stitched_bytes`, `allocate_and_stitch`, `min_partial_bytes`,
 *   `chunk_divisor`, `max_chunk_bytes`, `tail_chunk`, `min_stitch_saving_bytes`, `segment_bytes`, `placement`,
 *   `cross_stream`, `cross_stream_lending`, `cross_stream_moves` (`StitchingConfig`, Note [One set of defaults]). Byte values take a size (`64MiB`) or a
 *   plain number of bytes; booleans are `True`/`False` as in PyTorch.
 *
 * The text is split into entries (commas inside `[...]` stay in their entry), each entry's value
 * becomes a number, a boolean or stays a string, and the resulting record is decoded by one
 * Schema whose excess keys are errors: an unknown key, a repeated key or a bad value is one
 * `SettingsError` that names the key. The per-policy values are then checked by the policies' own
 * rules (`divisionsTable`, `StitchingConfig`), with their messages.
 *
 * @since 0.1.0
 */
import { ByteSize, Data, Option, Result, Schema, SchemaIssue } from "effect"
import type { PolicyName } from "./Allocator.ts"
import { type CachingConfig, divisionsTable, kRoundUpPowerOfTwoIntervals } from "./policies/pytorch/Caching.ts"
import type { ExpandableConfig } from "./policies/pytorch/Expandable.ts"
import { decodeStitchingConfig, type StitchingConfig } from "./policies/gmlake/StitchingConfig.ts"
import { MiB } from "./Units.ts"

/**
 * A setting could not be read: `source` is where it came from (`--config`,
 * `GMLAKE_ALLOC_CONF`), `key` the setting (or `<text>` for the form itself).
 * @category errors
 */
export class SettingsError extends Data.TaggedError("SettingsError")<{
  readonly source: string
  readonly key: string
  readonly detail: string
}> {
  override get message(): string {
    return `${this.source}: ${this.key}: ${this.detail}`
  }
}

/** The settings of every policy; absent entries take the policy's defaults. @category models */
export interface Settings {
  readonly caching: Partial<CachingConfig>
  readonly expandable: Partial<ExpandableConfig>
  /** `undefined` when no gmlake key was given (the defaults). */
  readonly gmlake: StitchingConfig | undefined
  /** The keys given, in the order given, with their text. */
  readonly entries: ReadonlyArray<readonly [key: string, value: string]>
}

/** No settings: every policy's defaults. @category constructors */
export const emptySettings: Settings = { caching: {}, expandable: {}, gmlake: undefined, entries: [] }

const pytorchBoth: ReadonlyArray<PolicyName> = ["caching", "expandable"]
const gmlakeOnly: ReadonlyArray<PolicyName> = ["gmlake"]

/** The gmlake keys and the `StitchingConfig` field each sets. */
const stitchingKeys = {
  split_bytes: "splitBytes",
  reuse_limit: "reuseLimit",
  max_cached_stitched_bytes: "maxCachedStitchedBytes",
  allocate_and_stitch: "allocateAndStitch",
  min_partial_bytes: "minPartialBytes",
  chunk_divisor: "chunkDivisor",
  max_chunk_bytes: "maxChunkBytes",
  tail_chunk: "tailChunk",
  min_stitch_saving_bytes: "minStitchSavingBytes",
  segment_bytes: "segmentBytes",
  placement: "placement",
  cross_stream: "crossStream",
  cross_stream_lending: "crossStreamLending",
  cross_stream_moves: "crossStreamMoves"
} as const satisfies Record<string, keyof StitchingConfig>

/**
 * Every key, with the policies it applies to (Note [Allocator settings]).
 * @category models
 */
export const settingKeys: Readonly<Record<string, ReadonlyArray<PolicyName>>> = {
  max_split_size_mb: pytorchBoth,
  max_non_split_rounding_mb: pytorchBoth,
  roundup_power2_divisions: pytorchBoth,
  garbage_collection_threshold: ["caching"],
  per_process_memory_fraction: ["caching"],
  ...Object.fromEntries(Object.keys(stitchingKeys).map((k) => [k, gmlakeOnly]))
}

// --- the text form -------------------------------------------------------------------------------

/** Splits `key:value,key:value` into entries; commas inside `[...]` belong to their entry. */
const splitEntries = (text: string): Array<string> => {
  const out: Array<string> = []
  let depth = 0
  let start = 0
  for (let i = 0; i < text.length; i++) {
    const c = text[i]
    if (c === "[") depth++
    else if (c === "]") depth = Math.max(0, depth - 1)
    else if (c === "," && depth === 0) {
      out.push(text.slice(start, i))
      start = i + 1
    }
  }
  out.push(text.slice(start))
  return out.map((s) => s.trim()).filter((s) => s.length > 0)
}

/** A value as written: decimal numbers and booleans become values, anything else stays text. */
const valueOf = (text: string): unknown => {
  if (/^(?:\d+(?:\.\d*)?|\.\d+)$/.test(text)) return Number(text)
  if (text === "True" || text === "true") return true
  if (text === "False" || text === "false") return false
  return text
}

// --- the schema ----------------------------------------------------------------------------------

const isPow2 = (n: number) => Number.isSafeInteger(n) && n >= 1 && 2 ** Math.round(Math.log2(n)) === n

const bounded = (min: number, max: number, message: string) =>
  Schema.Number.pipe(Schema.check(Schema.makeFilter((n: number) => Number.isSafeInteger(n) && n >= min && n <= max, { message })))

const fraction = (message: string, closed: boolean) =>
  Schema.Number.pipe(Schema.check(Schema.makeFilter((n: number) => n > 0 && (closed ? n <= 1 : n < 1), { message })))

/** A byte count: a plain number of bytes or a size such as `64MiB` (effect's `ByteSize`). */
const Size = Schema.Union([Schema.Number, Schema.String]).pipe(
  Schema.check(Schema.makeFilter((v: number | string) => sizeOf(v) !== undefined, {
    message: "must be a number of bytes or a size such as 512KiB, 64MiB, 1GiB"
  }))
)

const sizeOf = (v: unknown): number | undefined => {
  if (typeof v === "number") return Number.isSafeInteger(v) && v >= 0 ? v : undefined
  if (typeof v !== "string") return undefined
  const b = ByteSize.fromString(v)
  if (Option.isNone(b)) return undefined
  const n = ByteSize.toNumber(b.value)
  return Option.isSome(n) && Number.isSafeInteger(n.value) ? n.value : undefined
}

const Bool = Schema.Boolean.annotate({ message: "must be True or False" })

/** PyTorch's list form, `[256:1,512:2,>:8]`, or one number. */
const Divisions = Schema.Union([Schema.Number, Schema.String]).pipe(
  Schema.check(Schema.makeFilter((v: number | string) => typeof divisionsOf(v) !== "string", {
    message: "must be a power of two, or a list such as [256:1,512:2,1024:4,>:8] (interval starts in MiB, powers of two)"
  }))
)

/**
 * PyTorch's `parseRoundUpPower2Divisions`: the first interval's divisions also cover every
 * smaller interval, `>` covers every interval from the last one named, an interval's index is
 * log2 of its start in MiB. Returns the table, or why not.
 */
const divisionsOf = (v: unknown): number | ReadonlyArray<number> | string => {
  if (typeof v === "number") return isPow2(v) && v <= 2 ** 30 ? v : "not a power of two"
  if (typeof v !== "string") return "not a number or a list"
  const m = /^\[(.*)\]$/.exec(v.trim())
  if (m === null) return "not a list in brackets"
  const table = new Array<number>(kRoundUpPowerOfTwoIntervals).fill(0)
  let first = true
  let last = 0
  for (const part of m[1]!.split(",")) {
    const kv = /^\s*(>|\d+)\s*:\s*(\d+)\s*$/.exec(part)
    if (kv === null) return `bad entry "${part}"`
    const d = Number(kv[2])
    if (!(d === 0 || (isPow2(d) && d <= 2 ** 30))) return `divisions ${d} are not 0 or a power of two`
    if (kv[1] === ">") {
      table.fill(d, last)
      continue
    }
    const start = Number(kv[1])
    if (!isPow2(start)) return `interval ${start} is not a power of two`
    const index = Math.min(Math.floor(Math.log2(start)), kRoundUpPowerOfTwoIntervals - 1)
    if (first) {
      table.fill(d, 0, index)
      first = false
    }
    table[index] = d
    last = index
  }
  return table
}

/**
 * The settings record: every key optional, nothing else allowed.
 * @category schemas
 */
export const SettingsRecord = Schema.Struct({
  max_split_size_mb: Schema.optionalKey(bounded(21, 2 ** 33, "must be a whole number of MiB above 20 (as PyTorch requires)")),
  max_non_split_rounding_mb: Schema.optionalKey(bounded(1, 2 ** 33, "must be a positive whole number of MiB")),
  roundup_power2_divisions: Schema.optionalKey(Divisions),
  garbage_collection_threshold: Schema.optionalKey(fraction("must be a fraction strictly between 0 and 1", false)),
  per_process_memory_fraction: Schema.optionalKey(fraction("must be a fraction in (0, 1]", true)),
  split_bytes: Schema.optionalKey(Size),
  reuse_limit: Schema.optionalKey(Schema.Number),
  max_cached_stitched_bytes: Schema.optionalKey(Size),
  allocate_and_stitch: Schema.optionalKey(Bool),
  min_partial_bytes: Schema.optionalKey(Size),
  chunk_divisor: Schema.optionalKey(Schema.Number),
  max_chunk_bytes: Schema.optionalKey(Size),
  tail_chunk: Schema.optionalKey(Bool),
  min_stitch_saving_bytes: Schema.optionalKey(Size),
  segment_bytes: Schema.optionalKey(Size),
  placement: Schema.optionalKey(Bool),
  cross_stream: Schema.optionalKey(Bool),
  cross_stream_lending: Schema.optionalKey(Bool),
  cross_stream_moves: Schema.optionalKey(Schema.Number)
})

const decodeRecord = Schema.decodeUnknownResult(SettingsRecord)
const formatIssues = SchemaIssue.makeFormatterStandardSchemaV1()

const keyList = () => Object.keys(settingKeys).join(", ")

/**
 * Parses and decodes settings text (`key:value,key:value`) read from `source`. An empty text is
 * the defaults.
 * @category decoding
 */
export const parseSettings = (text: string, source: string): Result.Result<Settings, SettingsError> => {
  const fail = (key: string, detail: string) => Result.fail(new SettingsError({ source, key, detail }))
  const entries: Array<readonly [string, string]> = []
  const record: Record<string, unknown> = {}
  for (const entry of splitEntries(text)) {
    const colon = entry.indexOf(":")
    if (colon <= 0) return fail(entry, `expected key:value (keys: ${keyList()})`)
    const key = entry.slice(0, colon).trim()
    const value = entry.slice(colon + 1).trim()
    if (!(key in settingKeys)) {
      return fail(key, key === "expandable_segments"
        ? "choose the policy with --policy expandable instead"
        : `unknown setting (known: ${keyList()})`)
    }
    if (key in record) return fail(key, "given twice")
    if (value.length === 0) return fail(key, "needs a value")
    entries.push([key, value])
    record[key] = valueOf(value)
  }
  const r = decodeRecord(record, { errors: "all", onExcessProperty: "error" })
  if (Result.isFailure(r)) {
    const issue = formatIssues(r.failure.issue).issues[0]
    const key = issue?.path?.map(String).join(".") ?? "<text>"
    const value = entries.find(([k]) => k === key)?.[1]
    return fail(key, `${issue?.message ?? "invalid"}${value === undefined ? "" : `, got "${value}"`}`)
  }
  const s = r.success
  const pytorch: { -readonly [K in keyof CachingConfig]?: CachingConfig[K] } = {}
  if (s.max_split_size_mb !== undefined) pytorch.maxSplitSize = MiB(s.max_split_size_mb)
  if (s.max_non_split_rounding_mb !== undefined) pytorch.maxNonSplitRoundingSize = MiB(s.max_non_split_rounding_mb)
  if (s.roundup_power2_divisions !== undefined) {
    pytorch.roundupPower2Divisions = divisionsOf(s.roundup_power2_divisions) as number | ReadonlyArray<number>
  }
  const expandable: Partial<ExpandableConfig> = { ...pytorch }
  const caching: Partial<CachingConfig> = {
    ...pytorch,
    ...(s.garbage_collection_threshold !== undefined ? { garbageCollectionThreshold: s.garbage_collection_threshold } : {}),
    ...(s.per_process_memory_fraction !== undefined ? { memoryFraction: s.per_process_memory_fraction } : {})
  }
  // The baselines' own rules, with their messages, before anything runs.
  try {
    divisionsTable({
      maxSplitSize: pytorch.maxSplitSize ?? Infinity,
      maxNonSplitRoundingSize: pytorch.maxNonSplitRoundingSize ?? MiB(20),
      roundupPower2Divisions: pytorch.roundupPower2Divisions ?? 0
    })
  } catch (e) {
    return fail(entries.find(([k]) => settingKeys[k] === pytorchBoth)?.[0] ?? "<text>", (e as Error).message)
  }
  let gmlake: StitchingConfig | undefined
  const stitching = Object.entries(stitchingKeys).filter(([k]) => k in record)
  if (stitching.length > 0) {
    const input: Record<string, unknown> = {}
    for (const [k, field] of stitching) {
      const v = record[k]
      input[field] = k.endsWith("_bytes") ? sizeOf(v) : v
    }
    const d = decodeStitchingConfig(input)
    if (Result.isFailure(d)) {
      const first = d.failure.issues[0]
      const key = stitching.find(([, field]) => field === first?.field)?.[0] ?? "<text>"
      return fail(key, first?.message ?? "invalid")
    }
    gmlake = d.success
  }
  return Result.succeed({ caching, expandable, gmlake, entries })
}

/**
 * The keys of `settings` that apply to none of `policies` (Note [Allocator settings]).
 * @category decoding
 */
export const inapplicableKeys = (settings: Settings, policies: ReadonlyArray<PolicyName>): Array<string> =>
  settings.entries.map(([k]) => k).filter((k) => !settingKeys[k]!.some((p) => policies.includes(p)))

/**
 * `base` with the entries of `over` replacing the same keys (the command line over the
 * environment).
 * @category combinators
 */
export const settingsText = (base: Settings, over: Settings): string => {
  const keys = new Set(over.entries.map(([k]) => k))
  return [...base.entries.filter(([k]) => !keys.has(k)), ...over.entries].map(([k, v]) => `${k}:${v}`).join(",")
}
