/**
 * A small command-line parser: `command <positional...> --flag value --switch`. Every mistake is
 * a `UsageError` with one line that says what is wrong; the entry point prints it and exits 2.
 *
 * @since 0.1.0
 */
import { Data } from "effect"

/** Bad command-line input. @category errors */
export class UsageError extends Data.TaggedError("UsageError")<{ readonly detail: string }> {
  override get message(): string {
    return this.detail
  }
}

/** Parsed arguments. @category models */
export interface Parsed {
  readonly positionals: ReadonlyArray<string>
  readonly flags: ReadonlyMap<string, string | true>
}

/**
 * Parses `argv` against the flags a command knows: `valued` take a value (`--f v` or `--f=v`),
 * `switches` take none. Unknown flags are errors.
 * @category parsing
 */
export const parseArgs = (
  command: string,
  argv: ReadonlyArray<string>,
  valued: ReadonlyArray<string>,
  switches: ReadonlyArray<string>
): Parsed => {
  const positionals: Array<string> = []
  const flags = new Map<string, string | true>()
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (a.startsWith("--")) {
      const eq = a.indexOf("=")
      const name = eq >= 0 ? a.slice(2, eq) : a.slice(2)
      if (valued.includes(name)) {
        const value = eq >= 0 ? a.slice(eq + 1) : argv[++i]
        if (value === undefined || (eq < 0 && value.startsWith("--"))) {
          throw new UsageError({ detail: `${command}: --${name} needs a value` })
        }
        flags.set(name, value)
      } else if (switches.includes(name)) {
        if (eq >= 0) throw new UsageError({ detail: `${command}: --${name} takes no value` })
        flags.set(name, true)
      } else {
        const known = [...valued, ...switches].map((f) => `--${f}`).join(", ")
        throw new UsageError({ detail: `${command}: unknown option --${name} (known: ${known || "none"})` })
      }
    } else positionals.push(a)
  }
  return { positionals, flags }
}

/** A valued flag, or `undefined`. @category parsing */
export const flag = (p: Parsed, name: string): string | undefined => {
  const v = p.flags.get(name)
  return typeof v === "string" ? v : undefined
}

const UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1024,
  kb: 1000,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1000 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1000 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1000 ** 4,
  tib: 1024 ** 4
}

/**
 * Parses a byte size such as `80GiB`, `512MiB`, `1.5GB` or `4096`.
 * @category parsing
 */
export const parseBytes = (what: string, text: string): number => {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text)
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined
  if (!m || unit === undefined) {
    throw new UsageError({ detail: `${what}: "${text}" is not a size (examples: 4096, 512MiB, 80GiB, 1.5GB)` })
  }
  const n = Math.round(Number(m[1]) * unit)
  if (!(n > 0) || !Number.isSafeInteger(n)) throw new UsageError({ detail: `${what}: "${text}" must be a positive size` })
  return n
}

/** Parses a non-negative integer. @category parsing */
export const parseInteger = (what: string, text: string): number => {
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(Number(text))) {
    throw new UsageError({ detail: `${what}: "${text}" is not a non-negative integer` })
  }
  return Number(text)
}

/** Parses a number in [0, 1]. @category parsing */
export const parseFraction = (what: string, text: string): number => {
  const n = Number(text)
  if (text.trim() === "" || !Number.isFinite(n) || n < 0 || n > 1) {
    throw new UsageError({ detail: `${what}: "${text}" is not a number between 0 and 1` })
  }
  return n
}
