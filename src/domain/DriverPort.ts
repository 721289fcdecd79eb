/**
 * The synchronous contract between an allocator policy and a device: the CUDA VMM primitives
 * (and `cuMemAlloc`/`cuMemFree`, which the native PyTorch baseline uses).
 *
 * Note [Plans as a dialogue]
 * --------------------------
 * A policy is pure in the sense that matters for testing: it does no I/O of its own, reads no
 * clock and no global configuration, and every effect it has on a device is a call on this port.
 * The sequence of port calls an operation makes is its *plan*. The plan is not returned as a
 * finished list because a real driver can refuse any step (out of memory because another process
 * took the memory, an injected fault) and what the allocator does next depends on that outcome
 * (evict stitched views, release cached chunks, retry, then report out of memory). So the plan is
 * a dialogue: the policy issues a step, the port performs it or throws a `DriverError`, and the
 * policy carries on from there. With a recording port (see `layers/sim/SimDriver.ts`, which records
 * and validates every step) a policy is exactly a function from (state, request, outcomes) to
 * (state, plan), and tests check plans and outcomes step by step.
 *
 * The port is synchronous on purpose: both backends are (the simulator is plain code, koffi calls
 * into libcuda are blocking), and the allocator's hot path must not pay for an Effect per step
 * (about 0.1 us each inside a fiber on Effect 4, as much as a whole simulated step). The Effect services wrap whole operations, not steps.
 *
 * Preconditions the port enforces (as the real driver does) and policies must respect:
 * - sizes passed to `memCreate`, `addressReserve`, `memMap` are positive multiples of `granularity`;
 * - `memMap` maps a whole chunk at `va`, into reserved, unmapped space;
 * - `memUnmap(va, bytes)` covers whole mappings only, and may span several adjacent ones;
 * - `setAccess` covers mapped space only;
 * - `addressFree` takes the exact base and size of a reservation with nothing mapped in it.
 *
 * Every method throws `DriverError` on failure and leaves the device unchanged.
 *
 * @since 0.1.0
 */
import type { Address, ChunkHandle } from "./Units.ts"

/** The kinds of driver call, for counting and for the latency model. @category models */
export type DriverCallKind =
  | "memCreate"
  | "memRelease"
  | "addressReserve"
  | "addressFree"
  | "memMap"
  | "memUnmap"
  | "setAccess"
  | "memAlloc"
  | "memFree"

/** All call kinds, in a fixed order (for tables and JSON). @category models */
export const driverCallKinds: ReadonlyArray<DriverCallKind> = [
  "memCreate",
  "memRelease",
  "addressReserve",
  "addressFree",
  "memMap",
  "memUnmap",
  "setAccess",
  "memAlloc",
  "memFree"
]

/**
 * What a device can do, synchronously. Implemented by the simulator and by the CUDA binding.
 * @category models
 */
export interface DriverPort {
  /** The VMM allocation granularity in bytes (`cuMemGetAllocationGranularity`). */
  readonly granularity: number
  /** Total device memory in bytes. */
  readonly capacity: number
  /** `cuMemCreate`: a physical chunk of `bytes` (a multiple of the granularity). */
  memCreate(bytes: number): ChunkHandle
  /** `cuMemRelease`. The memory goes once no mapping of it remains. */
  memRelease(handle: ChunkHandle): void
  /** `cuMemAddressReserve`: a virtual range of `bytes`, aligned to the granularity. */
  addressReserve(bytes: number): Address
  /** `cuMemAddressFree`: the exact base and size returned by `addressReserve`. */
  addressFree(va: Address, bytes: number): void
  /** `cuMemMap`: the whole chunk `handle` (of `bytes`) at `va`. */
  memMap(va: Address, bytes: number, handle: ChunkHandle): void
  /** `cuMemUnmap`: whole mappings covering exactly `[va, va + bytes)`. */
  memUnmap(va: Address, bytes: number): void
  /** `cuMemSetAccess`: read-write access for this device over mapped `[va, va + bytes)`. */
  setAccess(va: Address, bytes: number): void
  /** `cuMemAlloc`: a classic device allocation (used by the native caching baseline). */
  memAlloc(bytes: number): Address
  /** `cuMemFree`. */
  memFree(va: Address): void
  /** `cuMemGetInfo`: free and total device memory. */
  memGetInfo(): { readonly free: number; readonly total: number }
}
