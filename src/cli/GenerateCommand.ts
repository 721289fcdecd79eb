/**
 * `gmlake generate`: a synthetic multi-stream training trace.
 *
 * @since 0.1.0
 */
import { Console, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { writeFileSync } from "node:fs"
import { gzipSync } from "node:zlib"
import { MAX_EVENTS } from "../trace/Columns.ts"
import { multiStreamEvents, multiStreamHead, multiStreamTrace } from "../trace/Synthetic.ts"
import { writeTraceFile } from "../trace/Writer.ts"
import { OutputError, UsageError } from "./Errors.ts"
import { withProgress } from "./Progress.ts"
import * as Options from "./Options.ts"
import { formatSize } from "./Render.ts"

/** `gmlake generate`. @category commands */
export const generate = Command.make(
  "generate",
  {
    seed: Options.countWithDefault("seed", 0, 2 ** 32 - 1, 1, "seed of the generator"),
    steps: Options.countWithDefault("steps", 1, 1000, 6, "training steps"),
    layers: Options.countWithDefault("layers", 1, 1000, 12, "layers of the model"),
    events: Flag.String("events").pipe(
      Flag.withMetavar("N"),
      Flag.filterMap(
        (t) => Option.fromUndefinedOr(Options.parseCount(t, 1, MAX_EVENTS)),
        () => `a whole number of events from 1 to ${MAX_EVENTS}`
      ),
      Flag.withDescription("a trace of exactly N events, as many steps as it takes, written as a stream (needs --out)"),
      Flag.optional
    ),
    out: Flag.String("out").pipe(
      Flag.withMetavar("FILE"),
      Flag.withDescription("write the trace here (gzip if the name ends in .gz) instead of to standard output"),
      Flag.optional
    )
  },
  (o) =>
    Effect.gen(function*() {
      if (Option.isSome(o.events)) {
        if (Option.isNone(o.out)) return yield* new UsageError({ where: "generate: --events", detail: "needs --out FILE (a long trace is written to a file)" })
        const file = o.out.value
        const options = { seed: o.seed, layers: o.layers, maxEvents: o.events.value }
        // Level 1: long traces are written to be read back, and level 6 costs four times the time.
        const written = yield* withProgress(`writing ${file}`, false, (tick) =>
          Effect.tryPromise({
            try: () =>
              writeTraceFile(file, multiStreamHead(options), multiStreamEvents(options), {
                level: 1,
                ...(tick !== undefined ? { onProgress: (n: number) => tick(n, options.maxEvents, `${n.toLocaleString("en-US")} events`) } : {})
              }),
            catch: (e) => new OutputError({ file, detail: (e as NodeJS.ErrnoException).code ?? String(e) })
          }))
        return yield* Console.log(
          `wrote ${file}: ${written.events} events on 3 stream(s), ${formatSize(written.bytes)}` +
            `${file.endsWith(".gz") ? " gzip" : ""} (seed ${o.seed}, ${o.layers} layers)`
        )
      }
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
