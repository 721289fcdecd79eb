/**
 * Replay speed of the gmlake policy, side by side: this tree against an earlier revision
 * (default a8bb4cb), on the bundled traces, alternating old and new in one process (the order
 * flips each round), after 5 untimed warm-up replays each; median of N timed replays per side.
 *
 *   node bench/replay-ab.ts [--rev a8bb4cb] [--runs 15] [--policy gmlake] [trace ...]
 *
 * Prints per trace the replay's own ns/event (what `npm run bench` reports) and this process's
 * CPU time per event (user + system around the replay: on a shared machine, wall time also counts
 * the time other processes held the cores), and their new/old ratios with the geometric mean.
 * No GC is forced between replays: a full GC discards compiled code, so every replay would start
 * cold (measured: 3 to 6 times slower).
 *
 * The earlier revision is checked out with `git worktree add` into scratch/ (ignored by git),
 * sharing this tree's node_modules.
 */
import { execFileSync } from "node:child_process"
import { existsSync, mkdirSync, symlinkSync } from "node:fs"
import { join, resolve } from "node:path"
import { takeOption } from "./Args.ts"
import { Effect } from "effect"

const args = process.argv.slice(2)
const opt = (name: string, fallback: string) => takeOption(args, name, fallback)
const rev = opt("rev", "a8bb4cb")
const runs = Number(opt("runs", "15"))
const policy = opt("policy", "gmlake")
const root = resolve(import.meta.dirname, "..")
const traces = args.length > 0 ? args : ["gpt2_fixed", "gpt2_varlen", "llama1b_ckpt_varlen", "llama1b_lora_varlen"]

const oldDir = join(root, "scratch", `rev-${rev}`)
if (!existsSync(oldDir)) {
  mkdirSync(join(root, "scratch"), { recursive: true })
  execFileSync("git", ["-C", root, "worktree", "add", "--detach", oldDir, rev], { stdio: "ignore" })
  symlinkSync(join(root, "node_modules"), join(oldDir, "node_modules"))
}

interface Report {
  readonly nsPerOp: number
  readonly events: number
}
interface Side {
  readonly run: (trace: unknown, policy: string) => Effect.Effect<Report, unknown>
  readonly loadTrace: (file: string) => Effect.Effect<unknown, unknown>
}
const load = async (dir: string): Promise<Side> => ({
  run: (await import(join(dir, "src/replay/ReplayRunner.ts"))).replaySim,
  loadTrace: (await import(join(dir, "src/trace/File.ts"))).loadTrace
})
const sides = { old: await load(oldDir), new: await load(root) }
const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const geo = (xs: ReadonlyArray<number>) => Math.exp(xs.reduce((a, b) => a + Math.log(b), 0) / xs.length)

const wallRatios: Array<number> = []
const cpuRatios: Array<number> = []
console.log(`${policy}: this tree (new) vs ${rev} (old), median of ${runs} alternating replays per side`)
for (const name of traces) {
  const trace = {
    old: await Effect.runPromise(sides.old.loadTrace(join(oldDir, "traces", `${name}.json.gz`))),
    new: await Effect.runPromise(sides.new.loadTrace(join(root, "traces", `${name}.json.gz`)))
  }
  const wall = { old: [] as Array<number>, new: [] as Array<number> }
  const cpu = { old: [] as Array<number>, new: [] as Array<number> }
  const once = async (side: "old" | "new", keep: boolean) => {
    const c0 = process.cpuUsage()
    const r = await Effect.runPromise(sides[side].run(trace[side], policy))
    const c = process.cpuUsage(c0)
    if (keep) {
      wall[side].push(r.nsPerOp)
      cpu[side].push(((c.user + c.system) * 1000) / r.events)
    }
  }
  for (let i = 0; i < 5; i++) {
    await once("old", false)
    await once("new", false)
  }
  for (let r = 0; r < runs; r++) {
    for (const side of r % 2 === 0 ? (["old", "new"] as const) : (["new", "old"] as const)) await once(side, true)
  }
  const [wo, wn, co, cn] = [median(wall.old), median(wall.new), median(cpu.old), median(cpu.new)]
  wallRatios.push(wn / wo)
  cpuRatios.push(cn / co)
  console.log(
    `${name.padEnd(20)} ns/event old ${wo.toFixed(0).padStart(5)} new ${wn.toFixed(0).padStart(5)} ratio ${(wn / wo).toFixed(3)}` +
      ` | cpu ns/event old ${co.toFixed(0).padStart(5)} new ${cn.toFixed(0).padStart(5)} ratio ${(cn / co).toFixed(3)}`
  )
}
console.log(`geometric mean new/old: ns/event ${geo(wallRatios).toFixed(3)}, cpu ${geo(cpuRatios).toFixed(3)}`)
