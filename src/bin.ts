#!/usr/bin/env node
/**
 * The `gmlake` executable: `run` (src/cli/Main.ts) on the process's arguments, its exit code as
 * the process's, and signals.
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
 * @since 0.1.0
 */
import { Effect, Exit, Fiber } from "effect"
import { ExitCode } from "./cli/Errors.ts"
import { run } from "./cli/Main.ts"

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

fiber.addObserver((exit) => {
  process.removeListener("SIGINT", onInt)
  process.removeListener("SIGTERM", onTerm)
  if (Exit.isSuccess(exit)) {
    process.exitCode = exit.value
  } else {
    process.stderr.write("gmlake: interrupted; everything was released\n")
    process.exitCode = signalled ?? ExitCode.Interrupted
  }
})
