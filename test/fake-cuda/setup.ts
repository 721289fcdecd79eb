/**
 * Builds the fake libcuda (`fake_cuda.c`) with the machine's C compiler into `test/.fake-cuda/`
 * (git-ignored): `libfakecuda.so`, and `libfakecuda-novmm.so`, a driver without the VMM entry
 * points. A vitest `globalSetup` (it runs once before the test files); the test files also call
 * `ensureFakeCuda` themselves, which is a cheap no-op when the libraries are up to date, so they
 * pass when run on their own.
 *
 * Where the CUDA toolkit's `cuda.h` is found (`$CUDA_HOME`, `$CUDA_PATH`, `/usr/local/cuda`) the
 * fake is compiled against it with `-Wmissing-prototypes -Werror`: every exported `cu*` name must
 * then be one that `cuda.h` declares, with the same prototype, after its versioning `#define`s.
 *
 * @since 0.1.0
 */
import { execFileSync } from "node:child_process"
import { existsSync, mkdirSync, renameSync, statSync } from "node:fs"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"

const here = dirname(fileURLToPath(import.meta.url))
const source = join(here, "fake_cuda.c")
const outDir = resolve(here, "..", ".fake-cuda")

/** The built libraries. @category models */
export interface FakeCudaLibraries {
  /** The fake driver with every entry point the binding declares. */
  readonly full: string
  /** The same without the VMM entry points (a driver older than CUDA 10.2). */
  readonly noVmm: string
  /** Whether it was compiled against the toolkit's `cuda.h`. */
  readonly withCudaH: boolean
}

const cudaInclude = (): string | undefined => {
  const roots = [process.env["CUDA_HOME"], process.env["CUDA_PATH"], "/usr/local/cuda"]
  for (const root of roots) {
    if (root !== undefined && root !== "" && existsSync(join(root, "include", "cuda.h"))) return join(root, "include")
  }
  return undefined
}

const compiler = (): string => {
  const cc = process.env["CC"]
  return cc !== undefined && cc !== "" ? cc : "cc"
}

const mtime = (path: string): number => (existsSync(path) ? statSync(path).mtimeMs : -1)

const build = (out: string, defines: ReadonlyArray<string>, include: string | undefined): void => {
  if (mtime(out) >= Math.max(mtime(source), mtime(fileURLToPath(import.meta.url)))) return
  // Build under a unique name and rename: test files may build concurrently.
  const tmp = `${out}.${process.pid}.${Date.now()}.tmp`
  const args = ["-std=c11", "-O2", "-fPIC", "-shared", "-Wall", "-Wextra", "-Werror"]
  if (include !== undefined) args.push("-Wmissing-prototypes", "-DFAKE_CUDA_WITH_CUDA_H", `-I${include}`)
  for (const d of defines) args.push(`-D${d}`)
  args.push("-o", tmp, source)
  try {
    execFileSync(compiler(), args, { stdio: ["ignore", "pipe", "pipe"] })
  } catch (e) {
    const err = e as { stderr?: Buffer; message: string }
    throw new Error(
      `could not build the fake libcuda with \`${compiler()} ${args.join(" ")}\`: ` +
        `${err.stderr?.toString() ?? err.message}\n(a C compiler is needed for the CUDA binding tests; set CC to choose one)`
    )
  }
  renameSync(tmp, out)
}

/**
 * Builds the fake libcuda if it is missing or older than its source, and returns its paths.
 * @category constructors
 */
export const ensureFakeCuda = (): FakeCudaLibraries => {
  mkdirSync(outDir, { recursive: true })
  const include = cudaInclude()
  const full = join(outDir, "libfakecuda.so")
  const noVmm = join(outDir, "libfakecuda-novmm.so")
  build(full, [], include)
  build(noVmm, ["FAKE_CUDA_NO_VMM"], include)
  return { full, noVmm, withCudaH: include !== undefined }
}

/** vitest `globalSetup`. */
export default function setup(): void {
  ensureFakeCuda()
}
