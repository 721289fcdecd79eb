/**
 * The replay's byte check (Note [Replay byte check]): green on multi-stream replays with
 * cross-stream adoption, on the simulator and through the CUDA binding over the fake libcuda;
 * red when blocks share bytes; and the device holds nothing afterwards, events included.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Result } from "effect"
import type { Allocator } from "../../src/domain/Allocator.ts"
import { makeAllocator } from "../../src/domain/policies/Policies.ts"
import type { BlockId } from "../../src/domain/Units.ts"
import { SimDriver } from "../../src/layers/sim/SimDriver.ts"
import { StitchingAllocator } from "../../src/domain/policies/gmlake/StitchingAllocator.ts"
import { Replayer, replayTrace } from "../../src/replay/Replay.ts"
import { replayCuda, replaySim } from "../../src/replay/ReplayRunner.ts"
import { ByteVerifier } from "../../src/replay/Verify.ts"
import { multiStreamTrace } from "../../src/trace/Synthetic.ts"
import { decodeTrace, type Trace } from "../../src/trace/Trace.ts"
import { fake, freshLibrary, libraries } from "../cuda/fixture.ts"

const decode = (doc: unknown): Trace => Result.getOrThrow(decodeTrace("t", doc))
const synthetic = decode(multiStreamTrace({ seed: 2, steps: 3, layers: 4, hidden: 512 }))

describe("replay --verify", () => {
  it.effect("multi-stream replay with adoption on the simulator: every freed block checked, no byte wrong", () =>
    Effect.gen(function*() {
      for (const latency of [0, 4, 64]) {
        const r = yield* replaySim(synthetic, "gmlake", { sim: { eventLatency: latency }, verify: true })
        expect(r.verified).not.toBeNull()
        expect(r.verified!.mismatches).toBe(0)
        expect(r.verified!.blocks).toBeGreaterThan(50)
        expect(r.leakedHandles).toBe(0)
      }
      const plain = yield* replaySim(synthetic, "gmlake")
      expect(plain.verified).toBeNull()
      // not vacuous: memory does move between streams on this trace
      const sim = new SimDriver({ eventLatency: 0 })
      for (let s = 1; s < synthetic.streams; s++) sim.streamCreate()
      const a = new StitchingAllocator(sim, undefined, sim)
      replayTrace(synthetic, a, () => sim.tick())
      expect(a.adoption!.nChunks).toBeGreaterThan(0)
    }))

  it("finds blocks that share bytes", () => {
    // Two live blocks of the same size; the broken allocator gives the second the first's address.
    const trace = decode({
      format: "gmlake-trace/1",
      workload: "alias",
      events: [["a", 1, 3 << 20], ["a", 2, 3 << 20, 1], ["f", 2], ["f", 1]]
    })
    const sim = new SimDriver()
    sim.streamCreate()
    const inner = makeAllocator("gmlake", sim, {}, sim)
    let first: BlockId | undefined
    const aliasing: Allocator = Object.assign(Object.create(inner) as Allocator, {
      malloc: (size: number, stream: number) => {
        const b = inner.malloc(size, stream)
        first ??= b
        return b
      },
      address: (b: BlockId) => inner.address(first ?? b)
    })
    const replayer = new Replayer(trace, aliasing)
    const verifier = new ByteVerifier({
      fill: (a, v, n, s) => sim.fillAsync(a, v, n, s),
      read: (a, n) => sim.read(a, n),
      synchronize: undefined
    })
    replayer.verifier = verifier
    replayer.run()
    const report = verifier.report()
    expect(report.blocks).toBe(2)
    expect(report.mismatches).toBeGreaterThan(0)
    expect(report.first).toMatch(/allocation/)
  })

  it("through the CUDA binding (fake libcuda): three streams, adoption, byte check green, nothing left", async () => {
    await freshLibrary({ capacity: 8 * 1024 ** 3 })
    const reports = await Effect.runPromise(
      replayCuda(synthetic, ["gmlake", "expandable"], { cuda: { library: libraries.full }, verify: true })
    )
    for (const r of reports) {
      expect(r.verified!.mismatches).toBe(0)
      expect(r.verified!.blocks).toBeGreaterThan(50)
      expect(r.failedAllocs).toBe(0)
      expect(r.deviceFreeAfter).toBe(r.deviceFreeBefore)
    }
    const l = fake.ledger()
    expect([l.streams, l.events]).toEqual([0, 0])
  })
})
