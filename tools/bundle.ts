/**
 * `npm run bundle`: the command line as the package's `bin`, `dist/gmlake.mjs` (a small entry)
 * and `dist/gmlake/*.mjs` (the program, loaded by it; Note [Start-up] in src/bin.ts); the same
 * command line in one file, `dist/gpu/gmlake.mjs`, for the GPU runs; and the two stand-alone GPU
 * tools, `dist/probe.mjs` and `dist/calibrate.mjs`.
 *
 * Note [Lazy grapheme segmenter]
 * ------------------------------
 * effect 4.1.0's `effect/cli/CliOutput.js` builds an `Intl.Segmenter` at module top level, for
 * measuring help text. Building one loads ICU's break-iterator data: about 15 ms on this
 * project's machine, paid by every call of the command, `--version` and `replay` included, though
 * only help and tables measure text. The bundle builds it on first use instead (same segmenter,
 * same results). The build fails if the line is not found, so an upgrade of effect is looked at
 * again rather than losing this silently.
 */
import * as esbuild from "esbuild"
import { readFile, rm } from "node:fs/promises"

// Note [Lazy grapheme segmenter]
const eagerSegmenter = 'const graphemeSegmenter = /*#__PURE__*/new Intl.Segmenter(undefined, {\n  granularity: "grapheme"\n});'
const lazySegmenter = "let graphemeSegmenterInstance;\n" +
  "const graphemeSegmenter = { segment: (text) => (graphemeSegmenterInstance ??= " +
  'new Intl.Segmenter(undefined, { granularity: "grapheme" })).segment(text) };'

const lazyGraphemeSegmenter: esbuild.Plugin = {
  name: "lazy-grapheme-segmenter",
  setup(build) {
    build.onLoad({ filter: /[\\/]effect[\\/]dist[\\/]cli[\\/]CliOutput\.js$/ }, async (args) => {
      const source = await readFile(args.path, "utf8")
      if (!source.includes(eagerSegmenter)) {
        throw new Error(`${args.path}: the Intl.Segmenter line changed; see Note [Lazy grapheme segmenter] in tools/bundle.ts`)
      }
      return { contents: source.replace(eagerSegmenter, lazySegmenter), loader: "js" }
    })
  }
}

const node: esbuild.BuildOptions = {
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node22",
  external: ["koffi"],
  logLevel: "warning"
}

// cli-progress is CommonJS and requires Node's modules; an ESM bundle has no `require` of its own.
const requireBanner = "import{createRequire as __cjsRequire}from'node:module';const require=__cjsRequire(import.meta.url);"

await rm("dist/gmlake", { recursive: true, force: true })
await esbuild.build({
  ...node,
  entryPoints: { gmlake: "src/bin.ts" },
  outdir: "dist",
  splitting: true,
  chunkNames: "gmlake/[name]-[hash]",
  outExtension: { ".js": ".mjs" },
  minify: true,
  banner: { js: requireBanner },
  plugins: [lazyGraphemeSegmenter]
})
// The same command line in one file, for the GPU runs (bench/gpu/*.sh), which carry single files
// to the GPU machine: no chunk beside it to load, so no compile cache either.
await esbuild.build({
  ...node,
  entryPoints: ["src/bin.ts"],
  outfile: "dist/gpu/gmlake.mjs",
  minify: true,
  banner: { js: requireBanner },
  plugins: [lazyGraphemeSegmenter]
})
await esbuild.build({ ...node, entryPoints: ["test/cuda/probe.ts"], outfile: "dist/probe.mjs" })
await esbuild.build({ ...node, entryPoints: ["bench/gpu/calibrate.ts"], outfile: "dist/calibrate.mjs" })
