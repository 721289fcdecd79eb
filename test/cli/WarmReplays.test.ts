import { describe, expect, it } from "@effect/vitest"
import { pairedRatio, WARM_EVENTS, warmReplays } from "../../src/cli/ReplayCommand.ts"

describe("warmReplays (Note [Warm by events])", () => {
  it("replays a trace untimed until a million events, from 5 to 60 replays", () => {
    expect(WARM_EVENTS).toBe(1_000_000)
    expect(warmReplays(23_821)).toBe(42) // gpt2_fixed
    expect(warmReplays(64_462)).toBe(16) // llama1b_ckpt_varlen
    expect(warmReplays(96_276)).toBe(11)
    expect(warmReplays(1_000_000)).toBe(5)
    expect(warmReplays(6)).toBe(60)
    expect(warmReplays(0)).toBe(60)
  })
})

describe("pairedRatio (Note [Paired rounds])", () => {
  it("is the median of the per-round ratios, not the ratio of the medians", () => {
    // rounds 2 and 3 were busy for both policies; the ratio of medians would say 20/25 = 0.8
    const rounds = [[10, 40, 20], [20, 80, 25]]
    expect(pairedRatio(rounds, 0, 1)).toBe(0.5)
    expect(pairedRatio(rounds, 1, 0)).toBe(2)
    expect(pairedRatio(rounds, 0, 0)).toBe(1)
  })
})
