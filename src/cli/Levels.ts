/**
 * The file of a host's driver levels (Note [Host levels] in `Latency.ts`): written by
 * `gmlake calibrate`, read by `--driver-levels`.
 *
 * @since 0.1.0
 */
import { Effect, Option, Result, Schema, SchemaIssue } from "effect"
import { readFileSync, writeFileSync } from "node:fs"
import { driverCallKinds } from "../domain/DriverPort.ts"
import type { DriverLevels } from "../domain/Latency.ts"
import { OutputError, UsageError } from "./Errors.ts"

/** The format tag of a levels file. @category models */
export const LEVELS_FORMAT = "gmlake-driver-levels/1"

/** A level: how many times the model's figure the host takes (Note [Host levels]). */
const Level = Schema.Number.pipe(
  Schema.check(Schema.makeFilter((n: number) => Number.isFinite(n) && n >= 0.01 && n <= 100, {
    message: "must be a number from 0.01 to 100 (the host's time over the model's)"
  }))
)

/** A levels file. @category models */
export const LevelsFile = Schema.Struct({
  format: Schema.Literal(LEVELS_FORMAT),
  /** The device and driver measured, for the reader. */
  device: Schema.String,
  /** When, ISO 8601. */
  measuredAt: Schema.String,
  /** What was replayed to measure it. */
  workload: Schema.String,
  levels: Schema.Struct(
    Object.fromEntries(driverCallKinds.map((k) => [k, Schema.optionalKey(Level)])) as {
      [K in (typeof driverCallKinds)[number]]: Schema.optionalKey<typeof Level>
    }
  )
})

/** A levels file's content. @category models */
export type LevelsFile = typeof LevelsFile.Type

const decode = Schema.decodeUnknownResult(LevelsFile)
const format = SchemaIssue.makeFormatterStandardSchemaV1()

/**
 * Reads the levels in `file`; a file that cannot be read, is not JSON or is not a levels file is
 * a `UsageError` naming the flag, the file and what is wrong (the first problem, with its path).
 * @category decoding
 */
export const readLevels = (file: string): Effect.Effect<DriverLevels, UsageError> =>
  Effect.gen(function*() {
    const where = `--driver-levels ${file}`
    const text = yield* Effect.try({
      try: () => readFileSync(file, "utf8"),
      catch: (e) => new UsageError({ where, detail: `cannot read it (${(e as NodeJS.ErrnoException).code ?? String(e)})` })
    })
    const value = yield* Effect.try({
      try: () => JSON.parse(text) as unknown,
      catch: () => new UsageError({ where, detail: `not JSON: write it with gmlake calibrate --device cuda --out ${file}` })
    })
    const r = decode(value, { errors: "all", onExcessProperty: "error" })
    if (Result.isFailure(r)) {
      const issue = format(r.failure.issue).issues[0]
      const path = issue?.path && issue.path.length > 0 ? issue.path.map(String).join(".") : "<root>"
      const message = path.startsWith("levels.") && issue?.message.includes("excess")
        ? `not a driver call (known: ${driverCallKinds.join(", ")})`
        : issue?.message ?? "invalid"
      return yield* new UsageError({ where, detail: `not a ${LEVELS_FORMAT} file: ${path}: ${message}` })
    }
    return r.success.levels
  })

/** The levels of `--driver-levels` when it was given (`readLevels`), else `undefined`. @category decoding */
export const levelsOf = (file: Option.Option<string>): Effect.Effect<DriverLevels | undefined, UsageError> =>
  Option.isSome(file) ? readLevels(file.value) : Effect.succeed(undefined)

/** Writes a levels file. @category encoding */
export const writeLevels = (file: string, content: LevelsFile): Effect.Effect<void, OutputError> =>
  Effect.try({
    try: () => writeFileSync(file, JSON.stringify(content, null, 2) + "\n"),
    catch: (e) => new OutputError({ file, detail: (e as NodeJS.ErrnoException).code ?? String(e) })
  })
