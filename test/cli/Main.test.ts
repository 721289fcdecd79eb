/**
 * The command line, end to end: the real executable in a child process, its output and exit codes.
 */
import { describe, expect, it } from "@effect/vitest"
import { spawnSync } from "node:child_process"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { gzipSync } from "node:zlib"
import { multiStreamTrace } from "../../src/trace/Synthetic.ts"

const gmlake = (...args: Array<string>) => {
  const r = spawnSync(process.execPath, ["src/bin.ts", ...args], { encoding: "utf8", timeout: 120_000 })
  return { code: r.status, out: r.stdout, err: r.stderr }
}

const dir = mkdtempSync(join(tmpdir(), "gmlake-cli-"))
const write = (name: string, data: string | Uint8Array) => {
  const file = join(dir, name)
  writeFileSync(file, data)
  return file
}
const small = write("small.json", JSON.stringify({
  format: "gmlake-trace/1",
  workload: "small",
  pytorch: { native: { peakRequested: 3 * 1024 * 1024 + 1000, peakReserved: 22 * 1024 * 1024 } },
  events: [["a", 1, 3145728], ["a", 2, 1000], ["f", 1], ["a", 3, 200000000], ["f", 2], ["f", 3]]
}))

describe("gmlake command line", () => {
  it("replays a trace under several policies, as JSON lines with every figure", () => {
    const r = gmlake("replay", small, "--policy", "caching,expandable,gmlake", "--json")
    expect(r.err).toBe("")
    expect(r.code).toBe(0)
    const lines = r.out.trim().split("\n").map((l) => JSON.parse(l))
    expect(lines.map((l) => l.policy)).toEqual(["caching", "expandable", "gmlake"])
    for (const l of lines) {
      for (const k of ["workload", "policy", "device", "events", "peakRequested", "peakReserved", "utilization", "nsPerOp",
        "driverCalls", "ooms", "stitches", "stitchedChunks", "cachedStitchHits", "evictions", "driverMicros",
        "failedAllocs", "driverFaults", "leakedHandles"]) expect(l).toHaveProperty(k)
      expect(l.workload).toBe("small")
      expect(l.device).toBe("sim")
      expect(l.events).toBe(6)
      expect(l.peakRequested).toBe(200000000 + 1000)
      expect(l.utilization).toBeCloseTo(l.peakRequested / l.peakReserved, 10)
      expect(l.leakedHandles).toBe(0)
    }
    // The native baseline asks cudaMalloc for its segments: 2 MiB small, 20 MiB, then 200 MB rounded.
    expect(lines[0].driverCalls.memAlloc).toBe(3)
  })

  it("prints a readable table by default", () => {
    const r = gmlake("replay", small, "--policy", "gmlake")
    expect(r.code).toBe(0)
    expect(r.out).toContain("small: 6 events")
    expect(r.out).toMatch(/policy\s+peak reserved\s+util/)
    expect(r.out).toMatch(/\ngmlake\s/)
  })

  it("replays a multi-stream trace with fault injection, counting failures and leaking nothing", () => {
    const file = write("multi.json.gz", gzipSync(JSON.stringify(multiStreamTrace({ seed: 5, steps: 3, layers: 6 }))))
    const r = gmlake("replay", file, "--inject-faults", "0.3", "--seed", "3", "--json")
    expect(r.code).toBe(0)
    for (const line of r.out.trim().split("\n")) {
      const l = JSON.parse(line)
      expect(l.driverFaults).toBeGreaterThan(0)
      expect(l.failedAllocs).toBeGreaterThan(0)
      expect(l.leakedHandles).toBe(0)
    }
  })

  it.each([
    [["replay"], 2, "replay: expected one trace file, got 0"],
    [["replay", "x.json", "--policy", "nope"], 2, "--policy: unknown policy \"nope\""],
    [["replay", "x.json", "--frobnicate"], 2, "replay: unknown option --frobnicate"],
    [["replay", "x.json", "--capacity", "lots"], 2, "--capacity: \"lots\" is not a size"],
    [["replay", "x.json", "--inject-faults", "2"], 2, "--inject-faults: \"2\" is not a number between 0 and 1"],
    [["replay", "x.json", "--device", "tpu"], 2, "--device: unknown device \"tpu\""],
    [["replay", "/nonexistent/t.json"], 1, "/nonexistent/t.json: cannot read the file (ENOENT)"],
    [["frob"], 2, "unknown command \"frob\""]
  ])("fails with one line and a non-zero exit: %j", (args, code, message) => {
    const r = gmlake(...args)
    expect(r.code).toBe(code)
    expect(r.out).toBe("")
    expect(r.err.trim().split("\n")).toHaveLength(1)
    expect(r.err).toContain(`gmlake: ${message}`)
  })

  it("names the bad event of a malformed trace", () => {
    const bad = write("bad.json", JSON.stringify({ format: "gmlake-trace/1", workload: "w", events: [["a", 1, 10], ["f", 2]] }))
    const r = gmlake("replay", bad)
    expect(r.code).toBe(1)
    expect(r.err.trim()).toBe(`gmlake: ${bad}: event 1: "f" of allocation 2, which was never allocated`)
  })

  it("rejects a bad --config for the stitching policy with a clear message", () => {
    const r = gmlake("replay", small, "--policy", "gmlake", "--config", "{bad")
    expect(r.code).toBe(2)
    expect(r.err).toContain("--config: not valid JSON")
  })

  it("self-tests the simulated device", () => {
    const r = gmlake("selftest", "--device", "sim", "--json")
    expect(r.code).toBe(0)
    const report = JSON.parse(r.out)
    expect(report.ok).toBe(true)
    expect(report.checks.map((c: { name: string }) => c.name)).toEqual(
      ["device", "granularity", "stitch", "allocate/free cycle", "memory given back"]
    )
    expect(report.latencyMicros.memMap).toBeGreaterThanOrEqual(0)
  })
})
