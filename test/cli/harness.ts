/**
 * Runs the command line in-process, capturing what it prints.
 */
import { Console, Effect } from "effect"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { run } from "../../src/cli/Main.ts"

export interface Captured {
  readonly code: number
  readonly out: string
  readonly err: string
}

/** `gmlake ...argv` in this process: exit code, standard output and standard error. */
export const gmlakeIn = (argv: ReadonlyArray<string>, env: Record<string, string | undefined> = {}): Promise<Captured> => {
  const out: Array<string> = []
  const err: Array<string> = []
  const console: Console.Console = {
    ...globalThis.console,
    log: (...a: ReadonlyArray<unknown>) => void out.push(a.join(" ")),
    info: (...a: ReadonlyArray<unknown>) => void out.push(a.join(" ")),
    error: (...a: ReadonlyArray<unknown>) => void err.push(a.join(" ")),
    warn: (...a: ReadonlyArray<unknown>) => void err.push(a.join(" "))
  }
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]))
  for (const [k, v] of Object.entries(env)) v === undefined ? delete process.env[k] : (process.env[k] = v)
  return Effect.runPromise(run(argv).pipe(Effect.provideService(Console.Console, console)))
    .then((code) => ({ code, out: out.map((l) => l + "\n").join(""), err: err.map((l) => l + "\n").join("") }))
    .finally(() => {
      for (const [k, v] of Object.entries(saved)) v === undefined ? delete process.env[k] : (process.env[k] = v)
    })
}

/** A fresh scratch folder (`prefix` names it) and a writer of files in it that returns their paths. */
export const scratch = (prefix: string) => {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  const write = (name: string, data: string | Uint8Array): string => {
    const file = join(dir, name)
    writeFileSync(file, data)
    return file
  }
  return { dir, write }
}
