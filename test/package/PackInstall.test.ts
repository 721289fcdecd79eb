/**
 * The package as a user gets it: `npm pack`, installed into an empty project with nothing but the
 * tarball (offline: the dependencies come from npm's cache, pinned by the repository's lock), the
 * README's library example type-checked and run against it, and `npx gmlake --help` from there.
 */
import { describe, expect, it } from "@effect/vitest"
import { execFileSync, spawnSync } from "node:child_process"
import { createHash } from "node:crypto"
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"

const repo = resolve(".")
const bin = join(repo, "node_modules", ".bin")
// npm scripts and npx run on the project's own Node (node_modules/.bin/node) when it is on PATH.
const env = { ...process.env, PATH: `${bin}:${process.env["PATH"] ?? ""}`, npm_config_update_notifier: "false" }

/** The README's library example: the first `ts` block of the "As a library" section. */
const readmeExample = (): string => {
  const readme = readFileSync(join(repo, "README.md"), "utf8")
  const section = readme.slice(readme.indexOf("## As a library"))
  const m = /```ts\n([\s\S]*?)```/.exec(section)
  if (m === null) throw new Error("README.md: no ts block under \"## As a library\"")
  return m[1]!
}

/** A lock for the consumer: the tarball, and the repository's pinned runtime dependencies. */
const consumerLock = (tarball: string, integrity: string) => {
  const lock = JSON.parse(readFileSync(join(repo, "package-lock.json"), "utf8")) as {
    packages: Record<string, { dependencies?: Record<string, string>; optionalDependencies?: Record<string, string> }>
  }
  const root = lock.packages[""]!
  const me = JSON.parse(readFileSync(join(repo, "package.json"), "utf8"))
  const packages: Record<string, unknown> = {
    "": { name: "consumer", version: "1.0.0", dependencies: { "gmlake-ts": `file:${tarball}` } },
    "node_modules/gmlake-ts": {
      version: me.version,
      resolved: `file:${tarball}`,
      integrity,
      license: me.license,
      dependencies: root.dependencies,
      bin: me.bin,
      engines: me.engines
    }
  }
  const todo = Object.keys(root.dependencies ?? {})
  while (todo.length > 0) {
    const key = `node_modules/${todo.pop()!}`
    if (key in packages) continue
    const entry = lock.packages[key]!
    packages[key] = entry
    todo.push(...Object.keys(entry.dependencies ?? {}), ...Object.keys(entry.optionalDependencies ?? {}))
  }
  return { name: "consumer", version: "1.0.0", lockfileVersion: 3, requires: true, packages }
}

describe("the package", () => {
  it("packs, installs into an empty project, type-checks and runs the README's example, and runs npx gmlake --help", () => {
    const dir = mkdtempSync(join(tmpdir(), "gmlake-pack-"))
    execFileSync("npm", ["pack", "--pack-destination", dir, "--silent"], { cwd: repo, env, stdio: "pipe" })
    const tarball = readdirSync(dir).find((f) => f.endsWith(".tgz"))!
    const listing = execFileSync("tar", ["tzf", join(dir, tarball)], { encoding: "utf8" })
    expect(listing).toContain("package/build/index.js")
    expect(listing).toContain("package/build/index.d.ts")
    expect(listing).toContain("package/dist/gmlake.mjs")
    expect(listing).toContain("package/LICENSE")
    expect(listing).not.toContain("package/src/")
    expect(listing).not.toContain("package/test/")

    const integrity = `sha512-${createHash("sha512").update(readFileSync(join(dir, tarball))).digest("base64")}`
    writeFileSync(join(dir, "package.json"), JSON.stringify({
      name: "consumer",
      version: "1.0.0",
      private: true,
      type: "module",
      dependencies: { "gmlake-ts": `file:${tarball}` }
    }))
    writeFileSync(join(dir, "package-lock.json"), JSON.stringify(consumerLock(tarball, integrity)))
    execFileSync("npm", ["ci", "--offline", "--no-audit", "--no-fund", "--silent"], { cwd: dir, env, stdio: "pipe" })

    const example = readmeExample()
    expect(example).toContain(`from "gmlake-ts"`)
    writeFileSync(join(dir, "example.ts"), example)
    writeFileSync(join(dir, "tsconfig.json"), JSON.stringify({
      compilerOptions: {
        target: "ES2022",
        lib: ["ES2022", "DOM"],
        module: "NodeNext",
        moduleResolution: "NodeNext",
        strict: true,
        exactOptionalPropertyTypes: true,
        noEmit: true,
        skipLibCheck: true,
        types: []
      },
      files: ["example.ts"]
    }))
    const tsc = spawnSync(join(bin, "tsc"), ["-p", "."], { cwd: dir, env, encoding: "utf8" })
    expect(tsc.stdout + tsc.stderr).toBe("")
    expect(tsc.status).toBe(0)

    const run = spawnSync(process.execPath, ["example.ts"], { cwd: dir, env, encoding: "utf8", timeout: 60_000 })
    expect(run.stderr).toBe("")
    expect(run.status).toBe(0)
    expect(run.stdout).toContain("gmlake memory summary, policy gmlake")
    expect(run.stdout).toMatch(/reserved_bytes\.all\.peak: \d+/)

    const help = spawnSync("npx", ["--no-install", "gmlake", "--help"], { cwd: dir, env, encoding: "utf8", timeout: 60_000 })
    expect(help.stderr).toBe("")
    expect(help.status).toBe(0)
    expect(help.stdout).toContain("USAGE")
    expect(help.stdout).toContain("replay")
    const replayHelp = spawnSync(join(dir, "node_modules", ".bin", "gmlake"), ["replay", "--help"], { cwd: dir, env, encoding: "utf8" })
    expect(replayHelp.status).toBe(0)
    expect(replayHelp.stdout).toContain("--count-ooms")
  }, 300_000)
})
