/**
 * The `gmlake` executable. Known failures become one line on stderr and an exit code (2 for
 * usage, 1 otherwise); SIGINT interrupts the program, so every finalizer runs (device memory is
 * given back) before the process exits with 130.
 *
 * @since 0.1.0
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Cause, Effect } from "effect"
import { UsageError } from "./cli/Args.ts"
import { main } from "./cli/Main.ts"

const program = Effect.suspend(() => main(process.argv.slice(2))).pipe(
  Effect.catchCause((cause) => {
    if (Cause.hasInterruptsOnly(cause)) {
      return Effect.sync(() => {
        process.stderr.write("gmlake: interrupted; everything was released\n")
        process.exitCode = 130
      })
    }
    const failure = cause.reasons.find((r) => r._tag === "Fail" || r._tag === "Die")
    const error = failure === undefined ? undefined : failure._tag === "Fail" ? failure.error : failure.defect
    const known = error instanceof UsageError || (typeof error === "object" && error !== null && "_tag" in error)
    return Effect.sync(() => {
      if (known && error instanceof Error) {
        process.stderr.write(`gmlake: ${error.message}\n`)
        process.exitCode = error instanceof UsageError ? 2 : 1
      } else {
        process.stderr.write(`gmlake: internal error (a bug; please report it):\n${Cause.pretty(cause)}\n`)
        process.exitCode = 70
      }
    })
  })
)

NodeRuntime.runMain(program, { disableErrorReporting: true })
