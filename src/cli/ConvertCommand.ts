/**
 * `gmlake convert <trace|snapshot> --out FILE`: any input a replay takes (a PyTorch memory
 * snapshot, a gmlake-trace/1 file) written out as gmlake-trace/1.
 *
 * @since 0.2.0
 */
import { Console, Effect, Option } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import { basename } from "node:path"
import { traceEvents, traceHead, writeTraceFile } from "../trace/Writer.ts"
import { OutputError } from "./Errors.ts"
import * as Options from "./Options.ts"
import { loadTraceWithProgress } from "./Progress.ts"
import { formatSize } from "./Render.ts"

/** `gmlake convert`. @category commands */
export const convert = Command.make(
  "convert",
  {
    input: Argument.String("input").pipe(
      Argument.withDescription("a PyTorch memory snapshot (_dump_snapshot pickle) or a gmlake-trace/1 file, plain or gzip")
    ),
    out: Flag.String("out").pipe(
      Flag.withMetavar("FILE"),
      Flag.withDescription("the gmlake-trace/1 file to write (gzip if the name ends in .gz)")
    ),
    deviceIndex: Options.deviceIndex
  },
  (o) =>
    Effect.gen(function*() {
      const trace = yield* loadTraceWithProgress(o.input, Option.getOrUndefined(o.deviceIndex), false)
      const written = yield* Effect.tryPromise({
        try: () => writeTraceFile(o.out, traceHead(trace, { convertedFrom: basename(o.input) }), traceEvents(trace)),
        catch: (e) => new OutputError({ file: o.out, detail: (e as NodeJS.ErrnoException).code ?? String(e) })
      })
      yield* Console.log(
        `wrote ${o.out}: ${written.events} events (${trace.allocs} allocations on ${trace.streams} stream(s)), ` +
          `${formatSize(written.bytes)}${o.out.endsWith(".gz") ? " gzip" : ""}`
      )
    })
).pipe(
  Command.withDescription(
    "Write a PyTorch memory snapshot (or any trace) as gmlake-trace/1: requests, streams and PyTorch's own segment record (docs/recording.md)"
  ),
  Command.withExamples([
    { command: "gmlake convert run.pickle --out run.json.gz", description: "a snapshot from torch.cuda.memory._dump_snapshot" },
    { command: "gmlake convert run.pickle --device-index 1 --out gpu1.json.gz", description: "another device's history" }
  ])
)
