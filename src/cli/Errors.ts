/**
 * The command line's one error model: every way a `gmlake` run can end other than success, as a
 * typed failure with one line for a person and one exit code for a program.
 *
 * Note [Exit codes]
 * -----------------
 * The codes follow BSD's sysexits.h where it has a word for the case, so that scripts can tell a
 * bad command line from a bad file from a missing device without reading the message:
 *
 * | code | meaning |
 * | ---: | --- |
 * | 0 | success |
 * | 1 | a check failed (`selftest`, `streams`): the report was printed, the device misbehaved |
 * | 2 | usage: a bad command, flag, value or setting; nothing was run |
 * | 3 | allocations failed during a replay (out of memory or driver faults), without `--count-ooms` |
 * | 65 | bad input data: the trace is not a valid gmlake-trace/1 document (EX_DATAERR) |
 * | 66 | an input file cannot be read (EX_NOINPUT) |
 * | 69 | the device is not available or the driver failed (EX_UNAVAILABLE) |
 * | 70 | internal error: a bug, please report it (EX_SOFTWARE) |
 * | 73 | an output file cannot be written (EX_CANTCREAT) |
 * | 130 | interrupted by SIGINT (Ctrl-C), after everything was released |
 * | 143 | terminated by SIGTERM, after everything was released |
 *
 * Usage is 2 rather than sysexits' 64 because that is what shells and most command lines use.
 *
 * @since 0.1.0
 */
import { Data } from "effect"
import { CliError } from "effect/cli"

/** The exit codes (Note [Exit codes]). @category models */
export const ExitCode = {
  Ok: 0,
  CheckFailed: 1,
  Usage: 2,
  AllocationsFailed: 3,
  DataError: 65,
  NoInput: 66,
  Unavailable: 69,
  Internal: 70,
  CantCreate: 73,
  Interrupted: 130,
  Terminated: 143
} as const

/** @category models */
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode]

/**
 * Bad command-line input: a flag, a value, a setting or an argument. `where` names it
 * (`--granularity`, `GMLAKE_ALLOC_CONF`, `replay`), `detail` says what is wrong.
 * @category errors
 */
export class UsageError extends Data.TaggedError("UsageError")<{
  readonly where: string
  readonly detail: string
}> {
  override get message(): string {
    return `${this.where}: ${this.detail}`
  }
}

/** A check of `selftest` or `streams` failed; its report was printed already. @category errors */
export class CheckFailed extends Data.TaggedError("CheckFailed")<{ readonly detail: string }> {
  override get message(): string {
    return this.detail
  }
}

/**
 * A replay had allocations that failed and the user did not ask for them to be counted
 * (`--count-ooms`): its utilization is not a result (Note [Failed runs]).
 * @category errors
 */
export class AllocationsFailed extends Data.TaggedError("AllocationsFailed")<{ readonly detail: string }> {
  override get message(): string {
    return this.detail
  }
}

/** An output file could not be written. @category errors */
export class OutputError extends Data.TaggedError("OutputError")<{ readonly file: string; readonly detail: string }> {
  override get message(): string {
    return `${this.file}: cannot write (${this.detail})`
  }
}

/** How a failure ends the process. @category models */
export interface Outcome {
  readonly code: ExitCode
  readonly line: string
}

const oneLine = (s: string) => s.replace(/\s*\n\s*/g, "; ").trim()

/** The one line for an error of the CLI module (flag parsing). */
const cliErrorLine = (command: ReadonlyArray<string>, e: CliError.CliError, known: ReadonlyArray<string>): string => {
  // The path without the program's own name, which the line's prefix already says.
  const where = command.length > 1 ? command.slice(1).join(" ") : "gmlake"
  switch (e._tag) {
    case "UnrecognizedOption":
      return `${where}: unknown option ${e.option}` +
        (e.suggestions.length > 0 ? ` (did you mean ${e.suggestions.join(" or ")}?)` : "") + ` (try: ${where} --help)`
    case "InvalidValue": {
      const raw = e.expected.replace(/^Expected:?\s*/, "")
      // A choice comes as `"a" | "b"`: say it in words.
      const expected = /^"[^"]*"(?:\s*\|\s*"[^"]*")+$/.test(raw) ? `one of ${raw.replace(/"/g, "").split(/\s*\|\s*/).join(", ")}` : raw
      return e.kind === "argument"
        ? `${where}: <${e.option}> "${e.value}": ${expected}`
        : e.value.length === 0
        ? `${where}: --${e.option} needs a value (${expected})`
        : `${where}: --${e.option} "${e.value}": ${expected}`
    }
    case "MissingArgument":
      return `${where}: missing <${e.argument}> (try: ${where} --help)`
    case "MissingOption":
      return `${where}: missing --${e.option} (try: ${where} --help)`
    case "UnknownSubcommand":
      return `unknown command "${e.subcommand}"` +
        (e.suggestions.length > 0 ? ` (did you mean ${e.suggestions.join(" or ")}?)` : "") +
        (known.length > 0 ? ` (known: ${known.join(", ")})` : " (try: gmlake --help)")
    case "UnexpectedArgument":
      return `${where}: unexpected argument${e.arguments.length > 1 ? "s" : ""} ${e.arguments.map((a) => `"${a}"`).join(" ")} (try: ${where} --help)`
    case "DuplicateOption":
      return `${where}: ${oneLine(e.message)}`
    default:
      return `${where}: ${oneLine(e.message)}`
  }
}

/** What a failure is, as an exit code and one line (without the `gmlake: ` prefix). @category models */
export const outcomeOf = (error: unknown, knownCommands: ReadonlyArray<string> = []): Outcome => {
  if (CliError.isCliError(error)) {
    if (error._tag === "ShowHelp") {
      const first = error.errors[0]
      return first === undefined
        ? { code: ExitCode.Ok, line: "" } // help was asked for (or implied) and printed
        : { code: ExitCode.Usage, line: cliErrorLine(error.commandPath, first, knownCommands) }
    }
    return { code: ExitCode.Usage, line: cliErrorLine(["gmlake"], error, knownCommands) }
  }
  if (typeof error === "object" && error !== null && "_tag" in error) {
    const message = error instanceof Error ? oneLine(error.message) : String(error._tag)
    switch (error._tag) {
      case "UsageError":
        return { code: ExitCode.Usage, line: message }
      case "CheckFailed":
        return { code: ExitCode.CheckFailed, line: message }
      case "AllocationsFailed":
        return { code: ExitCode.AllocationsFailed, line: message }
      case "OutputError":
        return { code: ExitCode.CantCreate, line: message }
      case "TraceError": {
        // A trace that cannot be read at all is missing input; anything else is bad data.
        const reason = (error as { reason?: unknown }).reason
        const detail = String((error as { detail?: unknown }).detail ?? "")
        const io = reason === "Io" || reason === "NotFound" || detail.startsWith("cannot read")
        return { code: io ? ExitCode.NoInput : ExitCode.DataError, line: message }
      }
      case "DriverError":
      case "CudaError":
        return { code: ExitCode.Unavailable, line: message }
      case "OutOfMemoryError":
        return { code: ExitCode.AllocationsFailed, line: message }
      case "StitchingConfigError":
      case "SettingsError":
        return { code: ExitCode.Usage, line: message }
    }
  }
  return { code: ExitCode.Internal, line: `internal error (a bug; please report it): ${oneLine(String(error))}` }
}
