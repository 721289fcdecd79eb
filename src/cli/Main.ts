/**
 * Running the `gmlake` command line in-process: arguments in, an exit code out, and every failure
 * printed as one line, `gmlake: <what is wrong and where>` (Note [Exit codes]). The process
 * (`src/cli/Process.ts`) adds signals; tests call `run` directly.
 *
 * @since 0.1.0
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import * as NodeStdio from "@effect/platform-node/NodeStdio"
import * as NodeTerminal from "@effect/platform-node/NodeTerminal"
import { Cause, Console, Effect, FileSystem, Layer, Path } from "effect"
import { ChildProcessSpawner } from "effect/process"
import { CliConfig, CliOutput, Command, GlobalFlag } from "effect/cli"
import { gmlake, subcommands } from "./Commands.ts"
import { ExitCode, outcomeOf } from "./Errors.ts"

export { bundledTraces } from "./CompareCommand.ts"

/** The version `--version` prints. @category constants */
export const VERSION = "0.1.0"

const formatter = CliOutput.defaultFormatter({ colors: false })

/**
 * Help and version go to standard output; an invalid invocation prints nothing here, because
 * `run` prints its one line (the full help is one `--help` away, and the line says so).
 */
const presenter: CliOutput.Presenter = {
  present: (event) =>
    event._tag === "Help"
      ? Console.log(formatter.formatHelpDoc(event.helpDoc))
      : event._tag === "Version"
      ? Console.log(`gmlake ${event.version}`)
      : Effect.void
}

/**
 * The platform's child-process spawner, loaded when a process is first spawned. `effect/cli`
 * asks for one in its environment but gmlake spawns nothing, and Node's spawner loads
 * `node:child_process` and `node:dgram`, about 8 ms of every call's start-up
 * (Note [Start-up] in src/bin.ts). A spawn, if one ever comes, runs on `@effect/platform-node`'s.
 */
const lazySpawner = Layer.effect(
  ChildProcessSpawner.ChildProcessSpawner,
  Effect.gen(function*() {
    const platform = yield* Effect.context<FileSystem.FileSystem | Path.Path>()
    const real = yield* Effect.cached(
      Effect.promise(() => import("@effect/platform-node/NodeChildProcessSpawner")).pipe(
        Effect.flatMap(({ layer }) =>
          Effect.gen(function*() {
            return yield* ChildProcessSpawner.ChildProcessSpawner
          }).pipe(Effect.provide(layer))
        ),
        Effect.provide(platform)
      )
    )
    return ChildProcessSpawner.make((command) => Effect.flatMap(real, (spawner) => spawner.spawn(command)))
  })
)

/**
 * What the CLI module needs from the platform: Node's file system, path, terminal, standard streams
 * and child processes, from `@effect/platform-node` (its `NodeServices`, with the spawner loaded
 * on first use). The commands read their own files (streaming, see src/trace), so the CLI module
 * uses these only for its own help and completions.
 * @category running
 */
export const platform = lazySpawner.pipe(
  Layer.provideMerge(Layer.mergeAll(NodeFileSystem.layer, NodePath.layer, NodeStdio.layer, NodeTerminal.layer))
)

const environment = Layer.mergeAll(
  platform,
  CliOutput.layerPresenter(presenter),
  CliOutput.layer(formatter),
  CliConfig.layer({ builtIns: [GlobalFlag.Help, GlobalFlag.Version, GlobalFlag.Completions] })
)

const runCommand = Command.runWith(gmlake, { version: VERSION })

/**
 * Runs `gmlake` with `argv` (without the program name) and gives its exit code. Failures are
 * printed as one line on standard error; interruption is not caught (the caller owns signals).
 * @category running
 */
export const run = (argv: ReadonlyArray<string>): Effect.Effect<ExitCode> =>
  Effect.suspend(() => runCommand(argv)).pipe(
    Effect.provide(environment),
    Effect.as(ExitCode.Ok as ExitCode),
    Effect.catchCause((cause): Effect.Effect<ExitCode> => {
      if (Cause.hasInterrupts(cause) && !Cause.hasFails(cause) && !Cause.hasDies(cause)) return Effect.failCause(cause) as never
      const reason = cause.reasons.find((r) => r._tag === "Fail" || r._tag === "Die")
      const error = reason === undefined ? undefined : reason._tag === "Fail" ? reason.error : reason.defect
      const { code, line } = outcomeOf(error, subcommands.map((c) => c.name))
      if (code === ExitCode.Ok) return Effect.succeed(code)
      const debug = code === ExitCode.Internal && process.env["GMLAKE_DEBUG"] !== undefined ? `\n${Cause.pretty(cause)}` : ""
      return Console.error(`gmlake: ${line}${debug}`).pipe(Effect.as(code))
    })
  )
