/**
 * The command line, end to end: in-process for output and exit codes, and the real executable in
 * a child process for what only a process has (its exit status, signals).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { ChildProcess, ChildProcessSpawner } from "effect/process"
import { spawn, spawnSync } from "node:child_process"
import { existsSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { gunzipSync, gzipSync } from "node:zlib"
import { subcommands } from "../../src/cli/Commands.ts"
import { platform } from "../../src/cli/Main.ts"
import { multiStreamTrace } from "../../src/trace/Synthetic.ts"
import { gmlakeIn, scratch } from "./harness.ts"

const gmlake = (...args: Array<string>) => {
  const r = spawnSync(process.execPath, ["src/bin.ts", ...args], { encoding: "utf8", timeout: 120_000 })
  return { code: r.status, out: r.stdout, err: r.stderr }
}

const { dir, write } = scratch("gmlake-cli-")
const small = write("small.json", JSON.stringify({
  format: "gmlake-trace/1",
  workload: "small",
  pytorch: { native: { peakRequested: 3 * 1024 * 1024 + 1000, peakReserved: 22 * 1024 * 1024 } },
  events: [["a", 1, 3145728], ["a", 2, 1000], ["f", 1], ["a", 3, 200000000], ["f", 2], ["f", 3]]
}))
const multi = write("multi.json.gz", gzipSync(JSON.stringify(multiStreamTrace({ seed: 5, steps: 3, layers: 6 }))))

describe("gmlake command line", () => {
  it("replays a trace under several policies, as JSON lines with every figure (the real executable)", () => {
    const r = gmlake("replay", small, "--policy", "caching,expandable,gmlake", "--json")
    expect(r.err).toBe("")
    expect(r.code).toBe(0)
    const lines = r.out.trim().split("\n").map((l) => JSON.parse(l))
    expect(lines.map((l) => l.policy)).toEqual(["caching", "expandable", "gmlake"])
    for (const l of lines) {
      for (const k of ["workload", "policy", "device", "events", "peakRequested", "peakReserved", "utilization", "nsPerOp",
        "driverCalls", "ooms", "faultedAllocs", "stitches", "stitchedChunks", "cachedStitchHits", "evictions", "driverMicros",
        "failedAllocs", "driverFaults", "leakedHandles", "complete"]) expect(l).toHaveProperty(k)
      expect(l.workload).toBe("small")
      expect(l.device).toBe("sim")
      expect(l.events).toBe(6)
      expect(l.complete).toBe(true)
      expect(l.peakRequested).toBe(200000000 + 1000)
      expect(l.utilization).toBeCloseTo(l.peakRequested / l.peakReserved, 10)
      expect(l.leakedHandles).toBe(0)
    }
    // The native baseline asks cudaMalloc for its segments: 2 MiB small, 20 MiB, then 200 MB rounded.
    expect(lines[0].driverCalls.memAlloc).toBe(3)
  })

  it("bench prints each policy's ns/event against caching's, per trace, paired by round", () => {
    const r = gmlake("bench", small, multi, "--policy", "gmlake,caching,expandable", "--repeat", "3", "--warmup", "1")
    expect(r.code).toBe(0)
    const at = r.out.indexOf("ns/event against caching's, per trace (the median of each round's ratio)")
    expect(at).toBeGreaterThan(0)
    const table = r.out.slice(at).split("\n")
    expect(table[1]).toMatch(/^trace\s+gmlake\s+expandable$/)
    expect(table[3]).toMatch(/^small\s+\d+\.\d\dx\s+\d+\.\d\dx$/)
    expect(table[4]).toMatch(/\s\d+\.\d\dx\s+\d+\.\d\dx$/)
  })

  it("bench warms every policy up by events unless told how many replays (Note [Warm by events])", () => {
    const r = gmlake("bench", small, multi, "--policy", "gmlake,caching", "--repeat", "1")
    expect(r.code).toBe(0)
    expect(r.out).toContain("(ns/event: median of 1 replays after untimed ones of 1,000,000 events (5 to 60 replays) per policy)")
    const told = gmlake("bench", small, multi, "--policy", "gmlake,caching", "--repeat", "1", "--warmup", "2")
    expect(told.out).toContain("(ns/event: median of 1 replays after 2 untimed per policy)")
  })

  it("prints a readable table by default, sizes in binary units, the comparison column named", async () => {
    const r = await gmlakeIn(["replay", small, "--policy", "gmlake"])
    expect(r.code).toBe(0)
    expect(r.out).toContain("small: 6 events, peak requested 190.74 MiB")
    expect(r.out).toMatch(/policy\s+peak reserved\s+util\s+vs native/)
    expect(r.out).toMatch(/\ngmlake\s+\d+\.\d\d MiB\s+0\.\d{4}\s+[+-]\d/)
    expect(r.out).not.toMatch(/\bGB\b/)
  })

  it.each(subcommands.map((c) => c.name))("%s --help exits 0 and lists its flags", async (name) => {
    const r = await gmlakeIn([name, "--help"])
    expect(r.code).toBe(0)
    expect(r.err).toBe("")
    expect(r.out).toContain(`gmlake ${name}`)
    expect(r.out).toContain("--help")
  })

  it("a run whose allocations failed is an error, unless --count-ooms; then it says the figures are not a result", async () => {
    const failed = await gmlakeIn(["replay", small, "--policy", "gmlake,caching", "--capacity", "1"])
    expect(failed.code).toBe(3)
    expect(failed.err.trim().split("\n")).toHaveLength(1)
    expect(failed.err).toMatch(/^gmlake: replay: small under gmlake: \d+ allocation\(s\) failed: \d+ out of memory/)
    expect(failed.out).not.toMatch(/\b1\.0000\b(?!\*)/)
    const counted = await gmlakeIn(["replay", small, "--policy", "gmlake", "--capacity", "1", "--count-ooms"])
    expect(counted.code).toBe(0)
    expect(counted.out).toMatch(/\d\*/)
    expect(counted.out).toContain("not a result")
    const json = await gmlakeIn(["replay", small, "--policy", "expandable", "--capacity", "1", "--json"])
    expect(json.code).toBe(3)
    const line = JSON.parse(json.out)
    expect(line.complete).toBe(false)
    expect(line.utilization).toBe(null)
    expect(line.failedAllocs).toBeGreaterThan(0)
  })

  it("injected driver faults are reported as driver faults, not out of memory", async () => {
    const r = await gmlakeIn(["replay", multi, "--inject-faults", "1", "--seed", "3", "--json", "--count-ooms"])
    expect(r.code).toBe(0)
    for (const line of r.out.trim().split("\n")) {
      const l = JSON.parse(line)
      expect(l.complete).toBe(false)
      expect(l.driverFaults).toBeGreaterThan(0)
      expect(l.faultedAllocs).toBe(l.failedAllocs)
      expect(l.ooms).toBe(0)
      expect(l.leakedHandles).toBe(0)
    }
    const t = await gmlakeIn(["replay", multi, "--policy", "gmlake", "--inject-faults", "0.3", "--seed", "3"])
    expect(t.code).toBe(3)
    expect(t.err).toMatch(/by injected driver faults \(\d+ injected\)/)
  })

  it.each([
    [["replay"], 2, "replay: missing <trace>"],
    [["replay", "x.json", "--policy", "nope"], 2, "replay: --policy \"nope\": policies separated by commas"],
    [["replay", "x.json", "--frobnicate"], 2, "replay: unknown option --frobnicate"],
    [["replay", "x.json", "--capacity", "lots"], 2, "replay: --capacity \"lots\": a size such as"],
    [["replay", "x.json", "--capacity", "64TiB"], 2, "at most 1TiB, what the simulator can model"],
    [["replay", "x.json", "--granularity", "3"], 2, "replay: --granularity \"3\": must be 2MiB (the device's granularity) or a multiple"],
    [["replay", "x.json", "--granularity", "16"], 2, "--granularity \"16\": must be 2MiB"],
    [["replay", "x.json", "--inject-faults", "2"], 2, "replay: --inject-faults \"2\": a decimal probability from 0 to 1"],
    [["replay", "x.json", "--inject-faults", "0x1"], 2, "--inject-faults \"0x1\": a decimal probability"],
    [["replay", "x.json", "--device", "tpu"], 2, "replay: --device \"tpu\": one of sim, cuda"],
    [["replay", "x.json", "--repeat", "0"], 2, "replay: --repeat \"0\": a whole number from 1 to 1000"],
    [["replay", "x.json", "--seed", "3"], 2, "replay: --seed: only meaningful with --inject-faults"],
    [["replay", "x.json", "--config", "{bad"], 2, "--config: {bad: expected key:value"],
    [["replay", "x.json", "--config", "frob:1"], 2, "--config: frob: unknown setting"],
    [["replay", "x.json", "--config", "max_split_size_mb:10"], 2, "--config: max_split_size_mb: must be a whole number of MiB above 20"],
    [["replay", "x.json", "--policy", "caching", "--config", "reuse_limit:4"], 2, "--config: reuse_limit: does not apply to --policy caching"],
    [["replay", "x.json", "--policy", "gmlake", "--config", "max_split_size_mb:128"], 2, "max_split_size_mb: does not apply to --policy gmlake"],
    [["replay", "/nonexistent/t.json"], 66, "/nonexistent/t.json: cannot read the file (ENOENT)"],
    [["generate", "--out", "/nonexistent/dir/t.json"], 73, "/nonexistent/dir/t.json: cannot write (ENOENT)"],
    [["frob"], 2, "unknown command \"frob\""]
  ])("fails with one line and its exit code: %j", async (args, code, message) => {
    const r = await gmlakeIn(args)
    expect(r.code).toBe(code)
    expect(r.out).toBe("")
    expect(r.err.trim().split("\n")).toHaveLength(1)
    expect(r.err).toMatch(/^gmlake: /)
    expect(r.err).toContain(message)
  })

  it("names the bad event of a malformed trace (exit 65)", async () => {
    const bad = write("bad.json", JSON.stringify({ format: "gmlake-trace/1", workload: "w", events: [["a", 1, 10], ["f", 2]] }))
    const r = await gmlakeIn(["replay", bad])
    expect(r.code).toBe(65)
    expect(r.err.trim()).toBe(`gmlake: ${bad}: event 1: "f" of allocation 2, which was never allocated`)
  })

  it("reads settings from GMLAKE_ALLOC_CONF and --config, which wins key by key", async () => {
    const base = await gmlakeIn(["replay", small, "--policy", "caching", "--json"])
    const tuned = await gmlakeIn(["replay", small, "--policy", "caching", "--json", "--config", "roundup_power2_divisions:4"])
    expect(tuned.code).toBe(0)
    expect(JSON.parse(tuned.out).peakReserved).toBeGreaterThanOrEqual(JSON.parse(base.out).peakReserved)
    const bad = await gmlakeIn(["replay", small, "--policy", "caching"], { GMLAKE_ALLOC_CONF: "max_split_size_mb:lots" })
    expect(bad.code).toBe(2)
    expect(bad.err).toContain("gmlake: GMLAKE_ALLOC_CONF: max_split_size_mb: ")
    const over = await gmlakeIn(["replay", small, "--policy", "gmlake", "--config", "reuse_limit:2"], { GMLAKE_ALLOC_CONF: "reuse_limit:3" })
    expect(over.code).toBe(0)
  })

  it("generate --out says what it wrote", async () => {
    const file = join(dir, "gen.json.gz")
    const r = await gmlakeIn(["generate", "--seed", "2", "--steps", "2", "--layers", "3", "--out", file])
    expect(r.code).toBe(0)
    expect(r.out).toMatch(new RegExp(`^wrote ${file}: \\d+ events on \\d+ stream\\(s\\), [\\d.]+ (KiB|MiB|B) gzip \\(seed 2, 2 steps, 3 layers\\)\\n$`))
    expect(existsSync(file)).toBe(true)
    expect(JSON.parse(gunzipSync(readFileSync(file)).toString()).format).toBe("gmlake-trace/1")
  })

  it.effect("the CLI's child-process spawner is Node's, loaded on its first spawn", () =>
    Effect.gen(function*() {
      const spawner = yield* ChildProcessSpawner.ChildProcessSpawner
      const out = yield* spawner.string(ChildProcess.make(process.execPath, ["-e", "process.stdout.write('ok')"]))
      expect(out).toBe("ok")
    }).pipe(Effect.provide(platform)))

  it("self-tests the simulated device", async () => {
    const r = await gmlakeIn(["selftest", "--device", "sim", "--json"])
    expect(r.code).toBe(0)
    const report = JSON.parse(r.out)
    expect(report.ok).toBe(true)
    expect(report.checks.map((c: { name: string }) => c.name)).toEqual(
      ["device", "granularity", "stitch", "allocate/free cycle", "memory given back"]
    )
    expect(report.latencyMicros.memMap).toBeGreaterThanOrEqual(0)
  })

  it("shows sizes in the streams table in binary units", async () => {
    const r = await gmlakeIn(["streams", "--rounds", "2"])
    expect(r.code).toBe(0)
    expect(r.out).toMatch(/peakReserved\s+[\d.]+ MiB/)
  })

  it.each([["SIGINT", 130], ["SIGTERM", 143]] as const)(
    "%s interrupts a replay: everything is released, one line, exit %i",
    async (signal, code) => {
      // The small trace's line says the process is replaying; the large one then runs for minutes.
      const child = spawn(process.execPath, ["src/bin.ts", "compare", small, "traces/llama1b_lora_varlen.json.gz", "--repeat", "1000", "--json"], {
        stdio: ["ignore", "pipe", "pipe"]
      })
      let err = ""
      child.stderr.on("data", (d) => (err += String(d)))
      await new Promise((resolve) => child.stdout.once("data", resolve))
      child.kill(signal)
      const status = await new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c)))
      expect(status).toBe(code)
      expect(err).toBe("gmlake: interrupted; everything was released\n")
    }
  )

  it("under npx, a replay whose npm parent is killed stops and releases everything (Note [Orphaned under npx])", async () => {
    // As npm exec runs it: a shell between npm and the process, npm_command=exec in the environment.
    // Killing the shell (as npm's SIGTERM does, without passing it on) orphans the replay.
    const shell = spawn("sh", ["-c", `"${process.execPath}" src/bin.ts compare "${small}" traces/llama1b_lora_varlen.json.gz --repeat 1000 --json & echo $!; wait`], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, npm_command: "exec" }
    })
    const firstLines = await new Promise<string>((resolve) => {
      let out = ""
      shell.stdout.on("data", (d) => {
        out += String(d)
        if (out.split("\n").length > 2) resolve(out)
      })
    })
    const pid = Number(firstLines.split("\n")[0])
    expect(Number.isInteger(pid) && pid > 0).toBe(true)
    shell.kill("SIGKILL")
    const alive = () => {
      try {
        process.kill(pid, 0)
        return true
      } catch {
        return false
      }
    }
    const t0 = Date.now()
    while (alive() && Date.now() - t0 < 20_000) await new Promise((r) => setTimeout(r, 100))
    expect(alive()).toBe(false)
  }, 60_000)
})
