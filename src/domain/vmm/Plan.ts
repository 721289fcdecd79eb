/**
 * Driver plans: the one transaction every VMM user makes, as a value, and the one function that
 * executes it.
 *
 * Note [Map plans]
 * ----------------
 * Putting memory behind a virtual range is always the same steps: reserve the range (unless the
 * caller maps into one it holds), create the chunks (unless it maps chunks it has), map them side
 * by side, and set access once over the whole contiguous range (one `cuMemSetAccess` per call,
 * not per chunk: it costs about as much for one chunk as for a hundred). Any step may fail; then
 * the steps done are undone in reverse (unmap what was mapped, release what was created, free what
 * was reserved) and the first failure is thrown, so the device is as it was and the caller's own
 * state, which it updates only after success, needs no undo. `executeMap` runs those steps in that
 * order, exactly, so the driver bill of a policy does not depend on who wrote its transaction.
 * The inverse, `executeUnmap`, unmaps a range in one call, releases its chunks, and frees the
 * range if asked: the release order of the driver (unmap before release before free). If the
 * unmap is refused nothing else is tried (the chunks are still mapped); after it, every step is
 * tried and the first failure is thrown.
 *
 * Chunks may live on other devices than the range (peer stitching): `owners[i]` is then the port
 * that creates and releases chunk i, while the range's own port reserves, maps and sets access.
 *
 * Plans are plain objects the caller may reuse; executing one allocates only the handles array
 * when chunks are created. The executor is synchronous: it runs inside a policy's hot path.
 *
 * @since 0.1.0
 */
import type { DriverPort } from "../DriverPort.ts"
import type { Address, ChunkHandle } from "../Units.ts"

/**
 * Map chunks side by side into a contiguous range (Note [Map plans]).
 * @category models
 */
export interface MapPlan {
  /** Bytes of fresh virtual range to reserve, the chunks mapped from its base; 0 to map at `at`. */
  readonly reserve: number
  /** Where to map when `reserve` is 0 (reserved, unmapped space the caller holds). */
  readonly at: number
  /** Chunk sizes in range order (multiples of the granularity). */
  readonly sizes: ArrayLike<number>
  /** The chunks to map, in range order; when `create` is set, filled by the executor. */
  readonly handles: Array<number>
  /** Whether the executor creates the chunks (`cuMemCreate`, all before any map). */
  readonly create: boolean
  /** The port that creates (and on undo releases) chunk i, when not the range's own. */
  readonly owners?: ArrayLike<DriverPort>
}

/**
 * Unmap a contiguous range, release chunks, free the range (Note [Map plans]).
 * @category models
 */
export interface UnmapPlan {
  /** The mapped range to unmap in one call; `bytes` 0 for none. */
  readonly at: number
  readonly bytes: number
  /** Chunks to release after the unmap. */
  readonly handles: ArrayLike<number>
  /** The reservation to free last (its exact base and size); `freeBytes` 0 for none. */
  readonly freeBase: number
  readonly freeBytes: number
  /** The port that releases chunk i, when not the range's own. */
  readonly owners?: ArrayLike<DriverPort>
}

/**
 * Executes a map plan: reserve, create, map each chunk, set access once; on the first failure
 * undoes what was done and throws that failure. Returns where the range starts (the reservation's
 * base, or `at`).
 * @category execution
 */
export const executeMap = (port: DriverPort, plan: MapPlan): Address => {
  const sizes = plan.sizes
  const handles = plan.handles
  const owners = plan.owners
  const base = plan.reserve > 0 ? port.addressReserve(plan.reserve) : (plan.at as Address)
  let created = 0
  let mapped = 0
  try {
    if (plan.create) {
      handles.length = 0
      for (let i = 0; i < sizes.length; i++) {
        handles.push((owners === undefined ? port : owners[i]!).memCreate(sizes[i]!))
        created++
      }
    }
    for (let i = 0; i < sizes.length; i++) {
      port.memMap((base + mapped) as Address, sizes[i]!, handles[i]! as ChunkHandle)
      mapped += sizes[i]!
    }
    if (mapped > 0) port.setAccess(base, mapped)
  } catch (e) {
    if (mapped > 0) quietly(() => port.memUnmap(base, mapped))
    for (let i = 0; i < created; i++) {
      const owner = owners === undefined ? port : owners[i]!
      quietly(() => owner.memRelease(handles[i]! as ChunkHandle))
    }
    if (plan.create) handles.length = 0
    if (plan.reserve > 0) quietly(() => port.addressFree(base, plan.reserve))
    throw e
  }
  return base
}

/** Runs an undo step; its failure is passed over (Note [Map plans]). */
const quietly = (f: () => void): void => {
  try {
    f()
  } catch {
    // the session's handle registry gives back what is left
  }
}

/**
 * Executes an unmap plan: the unmap (if refused, nothing else is tried), then each release and
 * the free, all tried; throws the first failure.
 * @category execution
 */
export const executeUnmap = (port: DriverPort, plan: UnmapPlan): void => {
  if (plan.bytes > 0) port.memUnmap(plan.at as Address, plan.bytes)
  const handles = plan.handles
  const owners = plan.owners
  let first: unknown = undefined
  let failed = false
  for (let i = 0; i < handles.length; i++) {
    try {
      ;(owners === undefined ? port : owners[i]!).memRelease(handles[i]! as ChunkHandle)
    } catch (e) {
      if (!failed) first = e
      failed = true
    }
  }
  if (plan.freeBytes > 0) {
    try {
      port.addressFree(plan.freeBase as Address, plan.freeBytes)
    } catch (e) {
      if (!failed) first = e
      failed = true
    }
  }
  if (failed) throw first
}
