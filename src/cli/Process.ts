/**
 * The `gmlake` process: `run` (src/cli/Main.ts) on the process's arguments, its exit code as
 * the process's, and signals. Loaded by the executable, `src/bin.ts` (Note [Start-up]); importing
 * this module runs the command.
 *
 * Note [Signals]
 * --------------
 * SIGINT (Ctrl-C) and SIGTERM interrupt the running command: every scope closes and every
 * finalizer runs, so all device memory is given back, and only then does the process print
 * `gmlake: interrupted; everything was released` and exit with 130 (SIGINT) or 143 (SIGTERM),
 * the shell's 128 + signal number. A second signal while finalizers run exits at once with the
 * same code (the driver reclaims a dead process's memory; the user asked twice). The installed
 * `bin` is this file bundled, run by node itself, so signals reach this process and not an npm
 * wrapper.
 *
 * Note [Orphaned under npx]
 * -------------------------
 * `npx gmlake` runs this process under `npm exec` through `sh -c`; a SIGTERM sent to npx ends npm
 * and the shell but is not passed on, and the replay would run on, orphaned, holding device memory.
 * So when started by `npm exec` (npm sets `npm_command=exec`), the process watches its parent: once
 * it is gone (the process is re-parented), it does what SIGTERM does. The check is one `ppid` read
 * every 200 ms on an unref'd timer, so it never keeps the process alive.
 *
 * @since 0.1.0
 */
import { Effect, Exit, Fiber } from "effect"
import { ExitCode } from "./Errors.ts"
import { run } from "./Main.ts"

const fiber = Effect.runFork(run(process.argv.slice(2)))
let signalled: ExitCode | undefined

const onSignal = (code: ExitCode) => () => {
  if (signalled !== undefined) process.exit(signalled)
  signalled = code
  Effect.runFork(Fiber.interrupt(fiber))
}
const onInt = onSignal(ExitCode.Interrupted)
const onTerm = onSignal(ExitCode.Terminated)
process.on("SIGINT", onInt)
process.on("SIGTERM", onTerm)

// Note [Orphaned under npx]
const parent = process.ppid
const orphanWatch = process.env["npm_command"] === "exec"
  ? setInterval(() => {
    if (process.ppid !== parent) {
      clearInterval(orphanWatch)
      if (signalled === undefined) onTerm()
    }
  }, 200)
  : undefined
orphanWatch?.unref()

fiber.addObserver((exit) => {
  process.removeListener("SIGINT", onInt)
  process.removeListener("SIGTERM", onTerm)
  if (orphanWatch !== undefined) clearInterval(orphanWatch)
  if (Exit.isSuccess(exit)) {
    process.exitCode = exit.value
  } else {
    process.stderr.write("gmlake: interrupted; everything was released\n")
    process.exitCode = signalled ?? ExitCode.Interrupted
  }
})
