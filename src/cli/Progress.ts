/**
 * A progress line on standard error while a trace loads or replays, only when standard error is
 * an interactive terminal (never when it is piped, and never with `--json`), drawn by
 * cli-progress (throttled redraws, cleared when done).
 *
 * @since 0.2.0
 */
import cliProgress from "cli-progress"
import { Effect } from "effect"
import { ReplayProgress } from "../replay/ReplayRunner.ts"
import { loadTrace } from "../trace/File.ts"
import type { Trace, TraceError } from "../trace/Trace.ts"
import { formatSize } from "./Render.ts"

/** Reports `done` of `total` (with a short note after the bar). @category models */
export type Tick = (done: number, total: number, note: string) => void

/**
 * Runs `use` with a `Tick` that draws a bar labelled `label` on an interactive stderr, or
 * `undefined` otherwise; the bar is cleared however `use` ends (an interrupt included).
 * @category progress
 */
export const withProgress = <A, E, R>(
  label: string,
  quiet: boolean,
  use: (tick: Tick | undefined) => Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> => {
  if (quiet || process.stderr.isTTY !== true) return use(undefined)
  return Effect.acquireUseRelease(
    Effect.sync(() => ({
      started: false,
      bar: new cliProgress.SingleBar({
        stream: process.stderr,
        format: `${label} [{bar}] {percentage}% {note}`,
        barsize: 30,
        clearOnComplete: true,
        hideCursor: false,
        etaBuffer: 20,
        fps: 5
      }, cliProgress.Presets.shades_classic)
    })),
    (p) =>
      use((done, total, note) => {
        if (!p.started) {
          p.started = true
          p.bar.start(total, done, { note })
        } else p.bar.update(done, { note })
      }),
    (p) => Effect.sync(() => p.started && p.bar.stop())
  )
}

/**
 * Loads a trace, with a progress line when interactive (`quiet` for `--json`).
 * @category progress
 */
export const loadTraceWithProgress = (
  file: string,
  deviceIndex: number | undefined,
  quiet: boolean
): Effect.Effect<Trace, TraceError> =>
  withProgress(`loading ${file}`, quiet, (tick) =>
    loadTrace(file, {
      ...(deviceIndex !== undefined ? { deviceIndex } : {}),
      ...(tick !== undefined
        ? { onProgress: (p) => tick(p.bytesRead, p.totalBytes, `${formatSize(p.bytesRead)} read, ${p.events.toLocaleString("en-US")} events`) }
        : {})
    }))

/**
 * Runs a replay (or several) with a progress line when interactive (`quiet` for `--json`).
 * @category progress
 */
export const withReplayProgress = <A, E, R>(label: string, quiet: boolean, replay: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  withProgress(label, quiet, (tick) =>
    tick === undefined
      ? replay
      : replay.pipe(
        Effect.provideService(ReplayProgress, (done, total) => tick(done, total, `${done.toLocaleString("en-US")} of ${total.toLocaleString("en-US")} events`))
      ))
