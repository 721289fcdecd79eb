/**
 * `gmlake report <trace> --out report.html`: one self-contained page that shows a trace's replay
 * under each policy (`src/report/`).
 *
 * @since 0.2.0
 */
import { Console, Effect, Option } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import { writeFileSync } from "node:fs"
import { loadChartAssets } from "../report/Assets.ts"
import { render } from "../report/Html.ts"
import { make } from "../report/Report.ts"
import { OutputError } from "./Errors.ts"
import { levelsOf } from "./Levels.ts"
import * as Options from "./Options.ts"
import { loadTraceWithProgress, withReplayProgress } from "./Progress.ts"
import { resolvePolicyOptions } from "./ReplayCommand.ts"
import { formatSize } from "./Render.ts"

/** `--capacity SIZE[,SIZE...]`: the smaller devices to replay on again. */
const capacities = Flag.String("capacity").pipe(
  Flag.withMetavar("SIZE,..."),
  Flag.filterMap(
    (text) => {
      const out: Array<number> = []
      for (const part of text.split(",")) {
        const n = Options.parseSize(part)
        if (n === undefined || n <= 0 || n > Options.maxSimCapacity) return Option.none()
        out.push(n)
      }
      return Option.some(out as ReadonlyArray<number>)
    },
    () => "sizes separated by commas, such as 16GiB or 12GiB,16GiB, each more than 0 and at most 1TiB"
  ),
  Flag.withDescription("replay every policy again on a simulated device of each size, and show which complete"),
  Flag.withDefault([] as ReadonlyArray<number>)
)

/** `gmlake report`. @category commands */
export const report = Command.make(
  "report",
  {
    trace: Argument.String("trace").pipe(
      Argument.withDescription("a gmlake-trace/1 file (gzip or plain JSON) or a PyTorch memory snapshot (.pickle)")
    ),
    out: Flag.String("out").pipe(Flag.withMetavar("FILE"), Flag.withDescription("write the HTML page here")),
    policies: Options.policies,
    capacities,
    config: Options.config,
    crossStream: Options.crossStream,
    deviceIndex: Options.deviceIndex,
    driverLevels: Options.driverLevels
  },
  (o) =>
    Effect.gen(function*() {
      const policy = yield* resolvePolicyOptions(o.config, o.crossStream, o.policies)
      const levels = yield* levelsOf(o.driverLevels)
      const assets = yield* loadChartAssets
      const trace = yield* loadTraceWithProgress(o.trace, Option.getOrUndefined(o.deviceIndex), false)
      const data = yield* withReplayProgress(
        `replaying ${trace.workload}`,
        false,
        make(trace, { policies: o.policies, capacities: o.capacities, policy, ...(levels !== undefined ? { levels } : {}) })
      )
      const page = render(data, assets, "gmlake report")
      yield* Effect.try({
        try: () => writeFileSync(o.out, page),
        catch: (e) => new OutputError({ file: o.out, detail: (e as NodeJS.ErrnoException).code ?? String(e) })
      })
      yield* Console.log(
        `wrote ${o.out}: ${data.workload} under ${o.policies.join(", ")}` +
          (o.capacities.length > 0 ? `, and again on ${o.capacities.map(formatSize).join(", ")}` : "") +
          `; open it in a browser (${formatSize(page.length)}, no network needed)`
      )
    })
).pipe(
  Command.withDescription(
    "Write one self-contained HTML page about a trace: requested and reserved bytes over the trace per policy, " +
      "driver calls and stitches over time, the comparison with PyTorch's recorded figures, and with --capacity " +
      "which policies complete on a smaller GPU."
  ),
  Command.withExamples([
    { command: "gmlake report traces/llama1b_lora_varlen.json.gz --out report.html", description: "every policy on one trace" },
    { command: "gmlake report t.json.gz --capacity 9GiB,8GiB --out report.html", description: "and which fit on smaller GPUs" }
  ])
)
