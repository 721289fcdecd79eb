/**
 * Synthetic multi-stream traces, for the cross-stream work the recorded single-stream traces do
 * not show: a training step whose compute stream is fed by a prefetch stream (parameters gathered
 * ahead of each layer, as FSDP does) and drained by a communication stream (gradient buckets
 * reduced while backward goes on), with PyTorch's `record_stream` on every buffer that crosses
 * streams.
 *
 * Note [Synthetic multi-stream trace]
 * -----------------------------------
 * Stream 0 computes; stream 1 prefetches; stream 2 communicates. A prefetched parameter buffer is
 * allocated on stream 1 and used by stream 0, so its free (`f`) is followed a few events later by
 * `F`, the completion of the event stream 0 recorded after its last use: between the two, its
 * memory must not be handed out. Gradient buckets are allocated on stream 2 for stream 0's
 * output, with the same guard. Activation sizes follow a sequence length drawn per step, as in the
 * recorded varlen traces, so the caches fragment. Everything is drawn from one seed.
 *
 * @since 0.1.0
 */
import { mulberry32 } from "../domain/Random.ts"

/** @category models */
export interface SyntheticOptions {
  readonly seed?: number
  readonly steps?: number
  readonly layers?: number
  /** Hidden size; activations are batch x seq x hidden x 2 bytes. */
  readonly hidden?: number
  readonly batch?: number
  /** Events between a cross-stream buffer's `f` and its `F`. */
  readonly guardLag?: number
}

/** A `gmlake-trace/1` document (see traces/README.md). @category models */
export interface TraceDocument {
  readonly format: "gmlake-trace/1"
  readonly workload: string
  readonly description: string
  readonly events: Array<Array<string | number>>
}

/**
 * The events of a multi-stream training trace (Note [Synthetic multi-stream trace]), as JSON
 * strings, one step at a time: `steps` steps, then the outstanding completions; with
 * `maxEvents`, as many steps as it takes, cut at exactly `maxEvents` events (allocations still
 * live then are live at the end, and frees whose completion is cut off stay plain frees).
 * Memory is one step's events, whatever the length.
 * @category constructors
 */
export function* multiStreamEvents(options: SyntheticOptions & { readonly maxEvents?: number } = {}): Generator<string> {
  const seed = options.seed ?? 1
  const steps = options.maxEvents === undefined ? options.steps ?? 6 : Number.POSITIVE_INFINITY
  const max = options.maxEvents ?? Number.POSITIVE_INFINITY
  const layers = options.layers ?? 12
  const hidden = options.hidden ?? 2048
  const batch = options.batch ?? 4
  const lag = options.guardLag ?? 3
  const random = mulberry32(seed)
  let pending: Array<string> = []
  let emitted = 0
  let nextId = 0
  // Completions due: [event count at which to emit F, id].
  const due: Array<[number, number]> = []
  const emit = (e: string) => {
    pending.push(e)
    emitted++
    for (let i = 0; i < due.length; i++) {
      if (due[i]![0] <= emitted) {
        pending.push(`["F",${due[i]![1]}]`)
        emitted++
        due.splice(i--, 1)
      }
    }
  }
  const alloc = (bytes: number, stream: number): number => {
    const id = nextId++
    emit(stream === 0 ? `["a",${id},${bytes}]` : `["a",${id},${bytes},${stream}]`)
    return id
  }
  const free = (id: number) => emit(`["f",${id}]`)
  const guardedFree = (id: number) => {
    free(id)
    due.push([emitted + lag, id])
  }
  let count = 0
  // Yields what is pending, up to `max` events in all; false once `max` is reached.
  const flush = function*(): Generator<string, boolean> {
    const out = pending
    pending = []
    for (const e of out) {
      if (count >= max) return false
      count++
      yield e
    }
    return count < max
  }
  const paramBytes = 3 * hidden * hidden * 2 + 512
  // Weights and optimizer state that live for the whole run.
  for (let l = 0; l < layers; l++) alloc(hidden * hidden * 2 * 4, 0)
  for (let s = 0; s < steps; s++) {
    const seq = 256 * (1 + Math.floor(random() * 8))
    const act = batch * seq * hidden * 2
    const saved: Array<number> = []
    // Forward: gather layer l's parameters on stream 1 one layer ahead.
    let prefetched = alloc(paramBytes, 1)
    for (let l = 0; l < layers; l++) {
      const current = prefetched
      if (l + 1 < layers) prefetched = alloc(paramBytes, 1)
      const tmp = alloc(act * 4, 0)
      saved.push(alloc(act, 0))
      const small = alloc(512 + Math.floor(random() * 64) * 512, 0)
      free(tmp)
      free(small)
      guardedFree(current)
    }
    const logits = alloc(batch * seq * 32000 * 2, 0)
    const loss = alloc(4, 0)
    free(logits)
    // Backward: regather parameters, produce gradients, reduce them in buckets on stream 2.
    let bucket = -1
    let bucketFill = 0
    for (let l = layers - 1; l >= 0; l--) {
      const params = alloc(paramBytes, 1)
      const grad = alloc(act * 2, 0)
      const wgrad = alloc(paramBytes, 0)
      free(saved[l]!)
      free(grad)
      guardedFree(params)
      if (bucket < 0) {
        bucket = alloc(25 * 1024 * 1024 + Math.floor(random() * 16) * 1024 * 1024, 2)
        bucketFill = 0
      }
      free(wgrad)
      if (++bucketFill === 3 || l === 0) {
        guardedFree(bucket)
        bucket = -1
      }
    }
    free(loss)
    if (!(yield* flush())) return
  }
  while (due.length > 0) {
    const [, id] = due.shift()!
    pending.push(`["F",${id}]`)
  }
  yield* flush()
}

/** The header of a synthetic multi-stream trace. @category constructors */
export const multiStreamHead = (options: SyntheticOptions & { readonly maxEvents?: number } = {}) => {
  const seed = options.seed ?? 1
  const layers = options.layers ?? 12
  const length = options.maxEvents === undefined ? `${options.steps ?? 6} steps` : `${options.maxEvents} events`
  return {
    format: "gmlake-trace/1" as const,
    workload: options.maxEvents === undefined ? `synthetic_multistream_s${seed}` : `synthetic_multistream_s${seed}_${options.maxEvents}`,
    description: `synthetic training step, ${layers} layers, ${length}: compute on stream 0, ` +
      `parameter prefetch on stream 1, gradient buckets on stream 2, record_stream guards (seed ${seed})`
  }
}

/**
 * Generates a multi-stream training trace in memory.
 * @category constructors
 */
export const multiStreamTrace = (options: SyntheticOptions = {}): TraceDocument => ({
  ...multiStreamHead(options),
  events: Array.from(multiStreamEvents(options), (e) => JSON.parse(e) as Array<string | number>)
})
