/**
 * The driver calls a policy made on each bundled trace (recorded once by the simulator, into
 * scratch/driver-calls/), replayed through MeteredPort over HandleRegistry over SimDriver: this tree
 * against an earlier revision (checked out into scratch/ by bench/replay-ab.ts or bench/driver-ab.ts),
 * alternating, after 20 untimed rounds; median ns per call, teardown included. The figures (calls,
 * modelled microseconds, peak reserved) must agree between the two.
 *
 *   node bench/driver-calls-ab.ts <rev> [policy] [runs] [trace ...]
 */
import { join, resolve } from "node:path"
const args = process.argv.slice(2)
const rev = args[0]!, policy = args[1] ?? "gmlake", runs = Number(args[2] ?? 101)
const traces = args.slice(3).length ? args.slice(3) : ["gpt2_fixed", "gpt2_streams", "gpt2_varlen", "llama1b_ckpt_varlen", "llama1b_lora_varlen"]
const root = resolve(import.meta.dirname, "..")
const oldDir = join(root, "scratch", `rev-${rev}`)
const load = async (dir: string) => {
  const { SimDriver } = await import(join(dir, "src/layers/sim/SimDriver.ts"))
  const { HandleRegistry } = await import(join(dir, "src/layers/HandleRegistry.ts"))
  const { MeteredPort } = await import(join(dir, "src/layers/MeteredPort.ts"))
  return (log: any[]) => {
    const sim = new SimDriver({})
    const reg = new HandleRegistry(sim, () => sim.synchronize())
    const m = new MeteredPort(reg)
    const t0 = process.hrtime.bigint()
    for (const s of log) {
      switch (s.call) {
        case "memCreate": if (m.memCreate(s.a) !== s.b) throw new Error("handle"); break
        case "memRelease": m.memRelease(s.a); break
        case "addressReserve": if (m.addressReserve(s.a) !== s.b) throw new Error("va"); break
        case "addressFree": m.addressFree(s.a, s.b); break
        case "memMap": m.memMap(s.a, s.b, s.c); break
        case "memUnmap": m.memUnmap(s.a, s.b); break
        case "setAccess": m.setAccess(s.a, s.b); break
        case "memAlloc": if (m.memAlloc(s.a) !== s.b) throw new Error("alloc"); break
        case "memFree": m.memFree(s.a); break
      }
    }
    const errs = reg.releaseAll()
    const ns = Number(process.hrtime.bigint() - t0)
    if (errs.length || sim.liveHandles() !== 0) throw new Error("leak")
    return { ns: ns / log.length, micros: m.micros, calls: m.total, peak: m.peakReserved }
  }
}
const sides = { old: await load(oldDir), new: await load(root) }
import { readFileSync, existsSync } from "node:fs"
import { execFileSync } from "node:child_process"
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
for (const name of traces) {
  const file = `${root}/scratch/driver-calls/${policy}-${name}.json`
  if (!existsSync(file)) execFileSync(process.execPath, [join(root, "bench/driver-calls-log.ts"), policy, name, file], { stdio: "inherit" })
  const log: any[] = JSON.parse(readFileSync(file, "utf8"))
  if (log.length === 0) { console.log("no log captured"); break }
  const a = sides.old(log), b = sides.new(log)
  if (a.micros !== b.micros || a.calls !== b.calls || a.peak !== b.peak) throw new Error(`figures differ ${JSON.stringify([a, b])}`)
  const t = { old: [] as number[], new: [] as number[] }
  for (let i = 0; i < 20; i++) { sides.old(log); sides.new(log) }
  for (let i = 0; i < runs; i++) for (const s of i % 2 ? ["new", "old"] as const : ["old", "new"] as const) t[s].push(sides[s](log).ns)
  const [o, n] = [median(t.old), median(t.new)]
  console.log(`${policy} ${name.padEnd(20)} ${log.length} calls (with teardown) ns/call old ${o.toFixed(0)} new ${n.toFixed(0)} ratio ${(n / o).toFixed(3)}`)
}
