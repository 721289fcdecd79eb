/**
 * A project that uses the package as a user gets it: `npm pack` of this repository, installed
 * into an empty project with nothing but the tarball (offline: the dependencies come from npm's
 * cache, pinned by the repository's lock). Used by the pack-install test
 * (test/package/PackInstall.test.ts) and by `bench/cli-startup.sh`, which times `npx gmlake`
 * there, where npm finds the bin in `node_modules/.bin` as it does for any user.
 *
 *   node bench/ConsumerProject.ts [DIR]    # prints the project's directory
 *
 * Run it with the project's Node on PATH (`node_modules/.bin`), as npm scripts do.
 */
import { execFileSync } from "node:child_process"
import { createHash } from "node:crypto"
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { fileURLToPath } from "node:url"

type Lock = {
  readonly packages: Record<string, { dependencies?: Record<string, string>; optionalDependencies?: Record<string, string> }>
}

/** A lock for the consumer: the tarball, and the repository's pinned runtime dependencies. */
const consumerLock = (repo: string, tarball: string, integrity: string) => {
  const lock = JSON.parse(readFileSync(join(repo, "package-lock.json"), "utf8")) as Lock
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

/**
 * Packs `repo` into `dir` (a new temporary directory when not given) and installs the tarball
 * there; gives the directory and the tarball's file name.
 */
export const consumerProject = (
  repo: string,
  env: NodeJS.ProcessEnv,
  dir: string = mkdtempSync(join(tmpdir(), "gmlake-pack-"))
): { readonly dir: string; readonly tarball: string } => {
  mkdirSync(dir, { recursive: true })
  execFileSync("npm", ["pack", "--pack-destination", dir, "--silent"], { cwd: repo, env, stdio: "pipe" })
  const tarball = readdirSync(dir).find((f) => f.endsWith(".tgz"))!
  const integrity = `sha512-${createHash("sha512").update(readFileSync(join(dir, tarball))).digest("base64")}`
  writeFileSync(join(dir, "package.json"), JSON.stringify({
    name: "consumer",
    version: "1.0.0",
    private: true,
    type: "module",
    dependencies: { "gmlake-ts": `file:${tarball}` }
  }))
  writeFileSync(join(dir, "package-lock.json"), JSON.stringify(consumerLock(repo, tarball, integrity)))
  // --legacy-peer-deps, as this repository's .npmrc says: @effect/platform-node names redis as a
  // peer (for its redis layer, which gmlake does not use), and npm would fetch it.
  execFileSync("npm", ["ci", "--offline", "--legacy-peer-deps", "--no-audit", "--no-fund", "--silent"], { cwd: dir, env, stdio: "pipe" })
  return { dir, tarball }
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const repo = resolve(".")
  const env = { ...process.env, npm_config_update_notifier: "false" }
  const arg = process.argv[2]
  console.log(consumerProject(repo, env, arg === undefined ? undefined : resolve(arg)).dir)
}
