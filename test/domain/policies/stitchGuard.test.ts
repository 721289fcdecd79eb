/**
 * A stitched view must hold the whole request (`Stitcher.map`'s guard): a selection that falls short
 * is a bug, thrown before any driver call, not a block served past its view's end (which would alias
 * other memory and show only as a utilization above 1).
 */
import { describe, expect, it } from "@effect/vitest"
import { makePool } from "../../../src/domain/policies/gmlake/Parts.ts"
import { Stitcher } from "../../../src/domain/policies/gmlake/Stitcher.ts"
import { makeAllocator } from "../../../src/domain/policies/Policies.ts"
import { MiB } from "../../../src/domain/Units.ts"
import { SimDriver } from "../../../src/layers/sim/SimDriver.ts"

/** A stitcher given one chunk too few: what a selection bug would hand it. */
class ShortStitcher extends Stitcher {
  override map(list: Array<number>, off: number, stream: number, need: number): number {
    return super.map(list.length > 1 ? list.slice(0, -1) : list, off, stream, need)
  }
}

const fragmented = (short: boolean) => {
  const sim = new SimDriver({ capacity: MiB(1024), record: true })
  const a = makeAllocator("gmlake", sim, short
    ? { gmlakeParts: { pool: makePool, stitcher: (i) => new ShortStitcher(i.port, i.chunks, i.segments, i.reuseLimit, i.maxCached) } }
    : {})
  // 8 MiB tensors with 8 MiB tensors between them: freeing every other one leaves 8 MiB holes,
  // each its own chunk, that only a stitch can serve a 24 MiB request from.
  const ids = Array.from({ length: 8 }, () => a.malloc(MiB(8), 0))
  for (let i = 0; i < ids.length; i += 2) a.free(ids[i]!)
  return { a, sim }
}

describe("Stitcher.map's guard", () => {
  it("a stitch for a request its free chunks cover is served (the same steps, correct parts)", () => {
    const { a } = fragmented(false)
    const before = a.counters().stitches
    const id = a.malloc(MiB(24), 0)
    expect(a.counters().stitches).toBe(before + 1)
    expect(a.size(id)).toBe(MiB(24))
  })

  it("a view one chunk short throws before the driver is called, and serves nothing", () => {
    const { a, sim } = fragmented(true)
    const calls = sim.log!.length
    expect(() => a.malloc(MiB(24), 0)).toThrow(/cannot hold 25165824 B \(the selection fell short\)/)
    expect(sim.log!.length).toBe(calls)
  })
})
