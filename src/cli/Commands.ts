/**
 * The `gmlake` command tree: the root and its subcommands, in one list.
 *
 * Adding a command: write it as an `effect/cli` `Command` in its own module (see
 * `ReplayCommand.ts`), failing only with the errors of `Errors.ts` (or any tagged error that
 * `outcomeOf` knows), and add it to `subcommands` below. Help, `--help` on the command, flag
 * parsing and the one-line errors with their exit codes come with it.
 *
 * @since 0.1.0
 */
import { Command } from "effect/cli"
import { calibrate } from "./CalibrateCommand.ts"
import { bench, compare } from "./CompareCommand.ts"
import { convert } from "./ConvertCommand.ts"
import { selftest, streams } from "./DeviceCommands.ts"
import { generate } from "./GenerateCommand.ts"
import { replay } from "./ReplayCommand.ts"
import { report } from "./ReportCommand.ts"

/**
 * Every subcommand of `gmlake`, in the order help lists them.
 * @category commands
 */
export const subcommands = [replay, compare, bench, report, selftest, streams, calibrate, generate, convert] as const

/**
 * `gmlake` itself.
 * @category commands
 */
export const gmlake = Command.make("gmlake").pipe(
  Command.withDescription(
    "A virtual-memory-stitching GPU allocator (GMLake, reimplemented and improved): replay allocation traces " +
      "under PyTorch's allocators and the stitching one, on a simulated device or a GPU. " +
      "Settings: --config or GMLAKE_ALLOC_CONF, in PYTORCH_CUDA_ALLOC_CONF form. " +
      "Exit codes: 0 ok, 1 a check failed, 2 usage, 3 allocations failed, 65 bad trace, 66 unreadable input, " +
      "69 no device, 70 bug, 73 unwritable output, 130 SIGINT, 143 SIGTERM."
  ),
  Command.withSubcommands(subcommands)
)
