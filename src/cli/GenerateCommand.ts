/**
 * `gmlake generate`: a synthetic multi-stream training trace.
 *
 * @since 0.1.0
 */
import { Console, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { writeFileSync } from "node:fs"
import { gzipSync } from "node:zlib"
import { multiStreamTrace } from "../trace/Synthetic.ts"
import { OutputError } from "./Errors.ts"
import * as Options from "./Options.ts"
import { formatSize } from "./Render.ts"

/** `gmlake generate`. @category commands */
export const generate = Command.make(
  "generate",
  {
    seed: Options.countWithDefault("seed", 0, 2 ** 32 - 1, 1, "seed of the generator"),
    steps: Options.countWithDefault("steps", 1, 1000, 6, "training steps"),
    layers: Options.countWithDefault("layers", 1, 1000, 12, "layers of the model"),
    out: Flag.String("out").pipe(
      Flag.withMetavar("FILE"),
      Flag.withDescription("write the trace here (gzip if the name ends in .gz) instead of to standard output"),
      Flag.optional
    )
  },
  (o) =>
    Effect.gen(function*() {
      const doc = multiStreamTrace({ seed: o.seed, steps: o.steps, layers: o.layers })
      const text = JSON.stringify(doc)
      if (Option.isNone(o.out)) return yield* Console.log(text)
      const file = o.out.value
      const data = file.endsWith(".gz") ? gzipSync(text) : Buffer.from(text)
      yield* Effect.try({
        try: () => writeFileSync(file, data),
        catch: (e) => new OutputError({ file, detail: (e as NodeJS.ErrnoException).code ?? String(e) })
      })
      const streams = new Set(doc.events.filter((e) => e[0] === "a").map((e) => e[3] ?? 0)).size
      yield* Console.log(
        `wrote ${file}: ${doc.events.length} events on ${streams} stream(s), ${formatSize(data.length)}` +
          `${file.endsWith(".gz") ? " gzip" : ""} (seed ${o.seed}, ${o.steps} steps, ${o.layers} layers)`
      )
    })
).pipe(Command.withDescription("Write a synthetic multi-stream training trace (gmlake-trace/1) for replay"))
