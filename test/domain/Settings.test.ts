/**
 * Settings text (`key:value,...`, Note [Allocator settings]): the stitching keys reach the
 * stitching configuration with sizes parsed, and a bad key or value is one error naming the key.
 */
import { describe, expect, it } from "@effect/vitest"
import { Result } from "effect"
import { parseSettings } from "../../src/domain/Settings.ts"
import { MiB } from "../../src/domain/Units.ts"

const ok = (text: string) => {
  const r = parseSettings(text, "--config")
  if (Result.isFailure(r)) throw new Error(r.failure.message)
  return r.success
}
const error = (text: string) => {
  const r = parseSettings(text, "--config")
  if (Result.isSuccess(r)) throw new Error(`accepted: ${text}`)
  return r.failure.message
}

describe("settings", () => {
  it("passes the stitching keys, sizes included, to the stitching configuration", () => {
    const s = ok("min_stitch_saving_bytes:8MiB,reuse_limit:4,tail_chunk:False")
    expect(s.gmlake).toMatchObject({ minStitchSavingBytes: MiB(8), reuseLimit: 4, tailChunk: false })
    expect(ok("").gmlake).toBeUndefined()
    expect(ok("min_stitch_saving_bytes:1048576").gmlake?.minStitchSavingBytes).toBe(MiB(1))
  })

  it("names the key of a bad value or an unknown key", () => {
    expect(error("min_stitch_saving_bytes:-1")).toMatch(/^--config: min_stitch_saving_bytes: /)
    expect(error("min_stitch_saving_bytes:lots")).toMatch(/^--config: min_stitch_saving_bytes: /)
    expect(error("frob:1")).toMatch(/^--config: frob: unknown setting \(known: .*min_stitch_saving_bytes/)
    expect(error("reuse_limit:2,reuse_limit:3")).toBe("--config: reuse_limit: given twice")
  })
})
