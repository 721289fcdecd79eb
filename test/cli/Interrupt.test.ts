/**
 * Ctrl-C while a trace is still loading: the real executable, reading a trace from a pipe that
 * never ends, stops at once with the one-line message and 130.
 */
import { describe, expect, it } from "@effect/vitest"
import { spawn, spawnSync } from "node:child_process"
import { closeSync, mkdtempSync, openSync, writeSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

const fifo = spawnSync("mkfifo", ["--help"]).status === 0

describe("interrupting a load", () => {
  it.skipIf(!fifo)("SIGINT during decode: exit 130 and one line, at once", async () => {
    const pipe = join(mkdtempSync(join(tmpdir(), "gmlake-int-")), "trace.json")
    spawnSync("mkfifo", [pipe])
    const child = spawn(process.execPath, ["src/bin.ts", "replay", pipe, "--json"], { stdio: ["ignore", "pipe", "pipe"] })
    let err = ""
    child.stderr.on("data", (d) => (err += d))
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))
    // Blocks until the child opens the pipe for reading.
    const fd = openSync(pipe, "w")
    const events = Array.from({ length: 20000 }, (_, i) => `["a",${i},512],["f",${i}]`).join(",")
    writeSync(fd, `{"format":"gmlake-trace/1","workload":"w","events":[${events},`)
    await new Promise((r) => setTimeout(r, 1500))
    const t0 = performance.now()
    child.kill("SIGINT")
    const code = await exited
    const ms = performance.now() - t0
    closeSync(fd)
    expect(code).toBe(130)
    expect(err).toBe("gmlake: interrupted; everything was released\n")
    expect(ms).toBeLessThan(3000)
  }, 30_000)
})
