/** The README's example program runs, is interrupted, and leaves nothing on the device. */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { program, session } from "../examples/two-streams.ts"
import { SimDriver } from "../src/layers/sim/SimDriver.ts"
import { layerSimWith } from "../src/layers/sim/SimDriverLayer.ts"

describe("examples/two-streams.ts", () => {
  it.live("runs two streams' work as fibers, is interrupted, and leaks nothing", () =>
    Effect.gen(function*() {
      const sim = new SimDriver()
      const result = yield* program.pipe(Effect.provide(session(layerSimWith(sim))))
      expect(result.allocations).toBeGreaterThan(0)
      expect(sim.liveHandles()).toBe(0)
      expect(sim.ledger().physicalBytes).toBe(0)
    }))
})
