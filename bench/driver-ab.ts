/**
 * Cost of one call through the simulated driver stack a replay uses (MeteredPort over
 * HandleRegistry over SimDriver), side by side: this tree against an earlier revision, alternating
 * in one process; median of N rounds per side after a warm-up.
 *
 *   node bench/driver-ab.ts [--rev 2c4e0d2] [--runs 301]
 *
 * A round is a growth phase shaped like gmlake's (300 grows of 1 to 4 chunks of 2 to 20 MiB:
 * reserve, create, map each, one set-access; every third followed by a stitched view over the same
 * chunks, mapped and unmapped), then the registry's teardown; the figure is the round's wall time
 * over its driver calls. The simulator must end with nothing live. The revision is checked out as
 * `bench/replay-ab.ts` does, into scratch/.
 */
import { execFileSync } from "node:child_process"
import { existsSync, mkdirSync, symlinkSync } from "node:fs"
import { join, resolve } from "node:path"
import { takeOption } from "./Args.ts"
import type { DriverPort } from "../src/domain/DriverPort.ts"

const args = process.argv.slice(2)
const rev = takeOption(args, "rev", "2c4e0d2")
const runs = Number(takeOption(args, "runs", "301"))
const root = resolve(import.meta.dirname, "..")
const oldDir = join(root, "scratch", `rev-${rev}`)
if (!existsSync(oldDir)) {
  mkdirSync(join(root, "scratch"), { recursive: true })
  execFileSync("git", ["-C", root, "worktree", "add", "--detach", oldDir, rev], { stdio: "ignore" })
  symlinkSync(join(root, "node_modules"), join(oldDir, "node_modules"))
}

interface Side {
  readonly stack: () => { readonly port: DriverPort; readonly teardown: () => void; readonly live: () => number }
  readonly executeMap: typeof import("../src/domain/vmm/Plan.ts").executeMap
  readonly executeUnmap: typeof import("../src/domain/vmm/Plan.ts").executeUnmap
}
const load = async (dir: string): Promise<Side> => {
  const { SimDriver } = await import(join(dir, "src/layers/sim/SimDriver.ts"))
  const { HandleRegistry } = await import(join(dir, "src/layers/HandleRegistry.ts"))
  const { MeteredPort } = await import(join(dir, "src/layers/MeteredPort.ts"))
  const plan = await import(join(dir, "src/domain/vmm/Plan.ts"))
  return {
    stack: () => {
      const sim = new SimDriver({})
      const registry = new HandleRegistry(sim, () => sim.synchronize())
      return { port: new MeteredPort(registry), teardown: () => registry.releaseAll(), live: () => sim.liveHandles() }
    },
    executeMap: plan.executeMap,
    executeUnmap: plan.executeUnmap
  }
}
const sides = { old: await load(oldDir), new: await load(root) }

const MiB = 2 ** 20
const round = (side: Side): number => {
  const { live, port, teardown } = side.stack()
  let calls = 0
  const t0 = process.hrtime.bigint()
  for (let g = 0; g < 300; g++) {
    const n = 1 + (g % 4)
    const sizes = Array.from({ length: n }, (_, i) => 2 * MiB * (1 + ((g + i) % 10)))
    const total = sizes.reduce((a, b) => a + b, 0)
    const handles: Array<number> = []
    side.executeMap(port, { reserve: total, at: 0, sizes, handles, create: true })
    calls += 2 + 2 * n
    if (g % 3 === 2) {
      const view = side.executeMap(port, { reserve: total, at: 0, sizes, handles, create: false })
      side.executeUnmap(port, { at: view, bytes: total, handles: [], freeBase: view, freeBytes: total })
      calls += 4 + n
    }
  }
  teardown()
  const ns = Number(process.hrtime.bigint() - t0)
  if (live() !== 0) throw new Error("the simulator holds handles after the teardown")
  return ns / calls
}

const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const times = { old: [] as Array<number>, new: [] as Array<number> }
for (let r = 0; r < 50; r++) {
  round(sides.old)
  round(sides.new)
}
for (let r = 0; r < runs; r++) {
  for (const side of r % 2 === 0 ? (["old", "new"] as const) : (["new", "old"] as const)) times[side].push(round(sides[side]))
}
const [o, n] = [median(times.old), median(times.new)]
console.log(`driver stack, ns/call: old (${rev}) ${o.toFixed(0)} new ${n.toFixed(0)} ratio ${(n / o).toFixed(3)}`)
