/**
 * The package as a user gets it: `npm pack`, installed into an empty project with nothing but the
 * tarball (offline: the dependencies come from npm's cache, pinned by the repository's lock;
 * bench/ConsumerProject.ts), the README's library example type-checked and run against it, and
 * `npx gmlake --help` from there.
 */
import { describe, expect, it } from "@effect/vitest"
import { execFileSync, spawnSync } from "node:child_process"
import { readFileSync, writeFileSync } from "node:fs"
import { join, resolve } from "node:path"
import { consumerProject } from "../../bench/ConsumerProject.ts"

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

describe("the package", () => {
  it("packs, installs into an empty project, type-checks and runs the README's example, and runs npx gmlake --help", () => {
    const { dir, tarball } = consumerProject(repo, env)
    const listing = execFileSync("tar", ["tzf", join(dir, tarball)], { encoding: "utf8" })
    expect(listing).toContain("package/build/index.js")
    expect(listing).toContain("package/build/index.d.ts")
    expect(listing).toContain("package/dist/gmlake.mjs")
    expect(listing).toMatch(/package\/dist\/gmlake\/Process-\w+\.mjs/)
    expect(listing).toContain("package/LICENSE")
    expect(listing).not.toContain("package/src/")
    expect(listing).not.toContain("package/test/")
    expect(listing).not.toContain("package/build/cli/Process.")

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
    // Note [Start-up]: a compile cache that cannot be made (here: a directory under a file) is
    // no cache, not a failure.
    const uncached = spawnSync(join(dir, "node_modules", ".bin", "gmlake"), ["--version"], {
      cwd: dir,
      env: { ...env, NODE_COMPILE_CACHE: join(dir, "package.json", "cache") },
      encoding: "utf8"
    })
    expect(uncached.stderr).toBe("")
    expect(uncached.stdout).toBe("gmlake 0.1.0\n")
    expect(uncached.status).toBe(0)
  }, 300_000)
})
