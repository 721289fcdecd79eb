/**
 * `gmlake selftest` and `gmlake streams`: does the allocator work on this machine's device?
 *
 * @since 0.1.0
 */
import { Console, Effect, Layer, Option } from "effect"
import { Command } from "effect/cli"
import { makeAllocator } from "../domain/policies/Policies.ts"
import { layerCuda } from "../layers/cuda/CudaDriverLayer.ts"
import { layerSim } from "../layers/sim/SimDriverLayer.ts"
import * as GpuAllocatorService from "../services/Allocator.ts"
import * as StreamsService from "../services/Streams.ts"
import * as Vmm from "../services/Vmm.ts"
import { CheckFailed, UsageError } from "./Errors.ts"
import { multiDeviceChecks } from "./MultiDevice.ts"
import * as Options from "./Options.ts"
import { formatSize } from "./Render.ts"
import { selftest as runSelftest } from "./Selftest.ts"
import { streamsDemo } from "./StreamsDemo.ts"
import { renderTable } from "./Table.ts"

/** `gmlake selftest`. @category commands */
export const selftest = Command.make(
  "selftest",
  { device: Options.device, capacity: Options.capacity, json: Options.json },
  (o) =>
    Effect.gen(function*() {
      if (o.device === "cuda" && Option.isSome(o.capacity)) {
        return yield* new UsageError({ where: "selftest: --capacity", detail: "only for the simulated device (--device sim)" })
      }
      const session = o.device === "cuda"
        ? layerCuda()
        : layerSim(Option.isSome(o.capacity) ? { capacity: o.capacity.value } : {})
      const single = yield* runSelftest().pipe(Effect.provide(Layer.provideMerge(Vmm.layer, session)))
      // Every visible device and peer access between them, once the single-device session has
      // closed (Note [Multi-device selftest]).
      const multi = o.device === "cuda" ? yield* multiDeviceChecks() : []
      const report = { ...single, checks: [...single.checks, ...multi], ok: single.ok && multi.every((c) => c.ok) }
      if (o.json) yield* Console.log(JSON.stringify(report))
      else {
        yield* Console.log(renderTable(["check", "result", "detail"], report.checks.map((c) => [c.name, c.ok ? "ok" : "FAILED", c.detail])))
        yield* Console.log("")
        yield* Console.log(renderTable(["VMM call", "median us"], Object.entries(report.latencyMicros).map(([k, v]) => [k, v.toFixed(2)])))
      }
      if (!report.ok) {
        return yield* new CheckFailed({ detail: `selftest failed: ${report.checks.filter((c) => !c.ok).map((c) => c.name).join(", ")}` })
      }
    })
).pipe(
  Command.withDescription(
    "Check that the allocator works on this machine: the device, its granularity, a stitch written through one " +
      "virtual range and read through another, memory given back, and each VMM call's latency (exit 1 if a check fails)"
  )
)

/** `gmlake streams`. @category commands */
export const streams = Command.make(
  "streams",
  {
    device: Options.device,
    rounds: Options.countWithDefault("rounds", 1, 100_000, 32, "rounds of work on each of the two streams"),
    json: Options.json
  },
  (o) =>
    Effect.gen(function*() {
      const session = Layer.mergeAll(
        GpuAllocatorService.layer((port) => makeAllocator("gmlake", port, { crossStream: true }, port)),
        StreamsService.layer
      ).pipe(Layer.provideMerge(o.device === "cuda" ? layerCuda() : layerSim()))
      const report = yield* streamsDemo(o.rounds).pipe(Effect.provide(session))
      if (o.json) yield* Console.log(JSON.stringify(report))
      else {
        const sizes = new Set(["bytesVerified", "peakReserved", "freeBefore", "freeAfter"])
        yield* Console.log(
          renderTable(
            ["figure", "value"],
            Object.entries(report).map(([k, v]) => [k, sizes.has(k) && typeof v === "number" ? formatSize(v) : String(v)])
          )
        )
      }
      if (!report.ok) {
        return yield* new CheckFailed({
          detail: `streams: ${report.mismatches} byte(s) differ; free memory ${formatSize(report.freeBefore)} before, ` +
            `${formatSize(report.freeAfter)} after`
        })
      }
    })
).pipe(
  Command.withDescription(
    "Two streams' work through memory reused across them (safe cross-stream reuse), verified byte for byte, " +
      "with free device memory back where it started (exit 1 if not)"
  )
)

