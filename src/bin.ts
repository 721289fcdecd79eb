#!/usr/bin/env node
/**
 * The `gmlake` executable. It turns on Node's compile cache, then loads the process
 * (`src/cli/Process.ts`: the command, its exit code, Note [Signals]).
 *
 * Note [Start-up]
 * ---------------
 * A command's wall time is node's own start (about 0.07 s), plus compiling and evaluating the
 * bundle, plus the command's work. Compiling is most of the middle part, so:
 *
 * - `module.enableCompileCache()` keeps V8's compiled code of every module loaded after it, in
 *   the directory `NODE_COMPILE_CACHE` names or else `<tmpdir>/node-compile-cache` (what Node
 *   recommends for command-line tools). It must run before the code it is to cache is compiled,
 *   so this module imports nothing of the program statically: the program is a dynamic
 *   `import()`, which the bundle keeps as a separate file (esbuild `--splitting`). Caching is an
 *   optimization only: when the directory cannot be created or written, or
 *   `NODE_DISABLE_COMPILE_CACHE=1` is set, Node returns a status instead of throwing, and the
 *   command runs uncached. An entry is checked against its source, so a rebuilt bundle is
 *   compiled afresh once.
 * - The bundle builds effect's grapheme segmenter (help-text widths) on first use rather than at
 *   load (Note [Lazy grapheme segmenter] in tools/bundle.ts), and the CLI's child-process spawner
 *   is loaded on its first spawn (`src/cli/Main.ts`).
 *
 * Not done: loading each command's code only when it runs. A bundle of the replay command alone
 * was 751 KB against 793 KB and no faster to start: most of the bundle is effect (Schema, the CLI
 * module), which every command needs, and the compile cache already spares compiling the rest.
 * What is left is npm's: `npx` itself costs 0.5-0.65 s on this project's machine before the bin
 * starts (README, Install).
 *
 * `bench/cli-startup.sh` measures the result (`bench/results/`).
 *
 * @since 0.1.0
 */
import module from "node:module"

// Optional call: a Node older than the engines field asks for (22.19) gets no cache rather than
// a failure here.
module.enableCompileCache?.()
await import("./cli/Process.ts")
