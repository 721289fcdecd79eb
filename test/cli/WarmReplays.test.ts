import { describe, expect, it } from "@effect/vitest"
import { WARM_EVENTS, warmReplays } from "../../src/cli/ReplayCommand.ts"

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
