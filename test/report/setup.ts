/**
 * Installs Debian's `chromium` for the report test (a vitest `globalSetup`, as `test/fake-cuda/setup.ts`
 * builds the fake libcuda): the report is checked in a real browser, and a test tool's own browser
 * download cannot be used here. A no-op when the browser is already there.
 *
 * The browser is `$CHROMIUM` when set, else `/usr/bin/chromium`. When it is missing and we are root
 * with `apt-get`, it is installed (`apt-get update` first when the package lists are empty, and again
 * once if the install fails on stale lists). When that cannot be done the set-up says why and
 * lets the rest of the suite run; the report test then fails with the same reason.
 *
 * @since 0.2.0
 */
import { execFileSync } from "node:child_process"
import { existsSync, readdirSync } from "node:fs"

const debianChromium = "/usr/bin/chromium"

/** Where the browser is expected. @category constructors */
export const chromiumPath = (): string => {
  const env = process.env["CHROMIUM"]
  return env !== undefined && env !== "" ? env : debianChromium
}

const apt = (args: ReadonlyArray<string>): void => {
  execFileSync("apt-get", ["-o", "DPkg::Lock::Timeout=300", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    maxBuffer: 64 * 1024 * 1024
  })
}

const listsEmpty = (): boolean => {
  try {
    return !readdirSync("/var/lib/apt/lists").some((f) => f.includes("Packages"))
  } catch {
    return true
  }
}

const stderrOf = (e: unknown): string => {
  const err = e as { stderr?: Buffer; message?: string }
  return (err.stderr?.toString() ?? "").trim().split("\n").slice(-3).join(" / ") || String(err.message ?? e)
}

/**
 * Installs Chromium if it is missing; returns its path, or throws with what to do.
 * @category constructors
 */
export const ensureChromium = (): string => {
  const path = chromiumPath()
  if (existsSync(path)) return path
  if (path !== debianChromium) throw new Error(`$CHROMIUM is ${path}, which does not exist`)
  if (process.getuid?.() !== 0) {
    throw new Error(`${path} is missing and the tests do not run as root: install it (apt-get install chromium) or set CHROMIUM`)
  }
  try {
    execFileSync("apt-get", ["--version"], { stdio: "ignore" })
  } catch {
    throw new Error(`${path} is missing and there is no apt-get: install Chromium and set CHROMIUM to its executable`)
  }
  process.stderr.write("test set-up: installing Debian's chromium for the report test (once)\n")
  // Fonts: without any, the page renders its text as boxes.
  const install = ["install", "-y", "--no-install-recommends", "chromium", "fonts-liberation"]
  try {
    if (listsEmpty()) apt(["update"])
    apt(install)
  } catch {
    try {
      apt(["update"])
      apt(install)
    } catch (e) {
      throw new Error(`could not install chromium with apt-get: ${stderrOf(e)}`)
    }
  }
  if (!existsSync(path)) throw new Error(`apt-get installed chromium but ${path} is not there`)
  return path
}

/** vitest `globalSetup`. */
export default function setup(): void {
  try {
    ensureChromium()
  } catch (e) {
    process.stderr.write(`test set-up: ${(e as Error).message}; the report test will fail\n`)
  }
}
