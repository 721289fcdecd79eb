// Records the driver calls of one replay (bench/driver-calls-ab.ts): node bench/driver-calls-log.ts <policy> <trace> <file>
import { Effect } from "effect"
import { mkdirSync, writeFileSync } from "node:fs"
import { dirname, join, resolve } from "node:path"
import { replayWith } from "../src/replay/ReplayRunner.ts"
import { layerSimWith } from "../src/layers/sim/SimDriverLayer.ts"
import { SimDriver } from "../src/layers/sim/SimDriver.ts"
import { loadTrace } from "../src/trace/File.ts"
const [policy, name, file] = process.argv.slice(2) as [any, string, string]
const root = resolve(import.meta.dirname, "..")
const trace = await Effect.runPromise(loadTrace(join(root, "traces", `${name}.json.gz`)))
const sim = new SimDriver({ record: true })
await Effect.runPromise(replayWith(trace, policy, layerSimWith(sim), {}, () => ({ leaked: 0, faults: 0 }), trace.streams > 1 ? () => sim.tick() : undefined))
mkdirSync(dirname(file), { recursive: true })
writeFileSync(file, JSON.stringify(sim.log))
