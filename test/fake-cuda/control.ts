/**
 * The fake libcuda's test-only controls (`fake_cuda_*` in `fake_cuda.c`): reset it, inspect
 * what is alive, inject failures. It binds the same library file as the code under test, and
 * the dynamic loader hands both the same instance, so both see one fake device.
 *
 * Test infrastructure: the project's own code touches koffi only in `src/cuda/`.
 *
 * @since 0.1.0
 */
import koffi from "koffi"
import { ensureFakeCuda } from "./setup.ts"

/** What the fake holds now. @category models */
export interface FakeLedger {
  readonly chunks: number
  readonly ranges: number
  readonly mappings: number
  readonly allocations: number
  readonly streams: number
  readonly events: number
  /** Primary-context references held. */
  readonly contextRefs: number
  /** Physical bytes counted against the capacity, all devices together. */
  readonly usedBytes: number
}

/** The fake's C layouts, as compiled. @category models */
export interface FakeLayout {
  readonly allocationProp: {
    readonly size: number
    readonly type: number
    readonly requestedHandleTypes: number
    readonly location: number
    readonly locationId: number
    readonly win32HandleMetaData: number
    readonly allocFlags: number
  }
  readonly location: { readonly size: number }
  readonly accessDesc: { readonly size: number; readonly location: number; readonly flags: number }
  /** Whether it was compiled against the toolkit's `cuda.h`. */
  readonly withCudaH: boolean
}

/** Controls of one fake library file. @category models */
export interface FakeCuda {
  readonly path: string
  /** Frees everything; uninitialized again; optional new capacity, granularity, device count. */
  reset(options?: { readonly capacity?: number; readonly granularity?: number; readonly devices?: number }): void
  ledger(): FakeLedger
  /** The next reservation's base address. */
  setVaBase(base: bigint): void
  /** How many NOT_READY answers a recorded event gives before it completes (default 1). */
  setEventPolls(polls: number): void
  /** The next call of entry point `call` fails with CUresult `code`. */
  inject(call: string, code: number): void
  /** The raw bytes of the last CUmemAllocationProp and CUmemAccessDesc the fake was given. */
  lastStructs(): { readonly prop: Uint8Array; readonly access: Uint8Array }
  layout(): FakeLayout
  /** Allows or denies device `dev` access to memory located on device `peer` (until the next reset). */
  setPeerAccess(dev: number, peer: number, allowed: boolean): void
  /** Physical bytes counted against device `dev`'s capacity. */
  deviceUsed(dev: number): number
}

const controls = new Map<string, FakeCuda>()

/**
 * The controls of the fake at `path` (default: the full fake, built if needed).
 * @category constructors
 */
export const fakeCuda = (path: string = ensureFakeCuda().full): FakeCuda => {
  const known = controls.get(path)
  if (known !== undefined) return known
  const lib = koffi.load(path)
  const reset = lib.func("void fake_cuda_reset(uint64_t capacity, uint64_t granularity, int devices)")
  const ledger = lib.func("void fake_cuda_ledger(uint64_t *out)")
  const setVaBase = lib.func("void fake_cuda_set_va_base(uint64_t base)")
  const setEventPolls = lib.func("void fake_cuda_set_event_polls(int polls)")
  const inject = lib.func("void fake_cuda_inject(const char *call, int code)")
  const lastStructs = lib.func("void fake_cuda_last_structs(uint8_t *prop32, uint8_t *access12)")
  const layout = lib.func("void fake_cuda_layout(uint64_t *out)")
  const setPeerAccess = lib.func("void fake_cuda_set_peer_access(int dev, int peer, int allowed)")
  const deviceUsed = lib.func("uint64_t fake_cuda_device_used(int dev)")
  const control: FakeCuda = {
    path,
    reset: (o = {}) => reset(o.capacity ?? 0, o.granularity ?? 0, o.devices ?? 0),
    ledger: () => {
      const out = new BigUint64Array(8)
      ledger(out)
      const n = (i: number) => Number(out[i])
      return {
        chunks: n(0),
        ranges: n(1),
        mappings: n(2),
        allocations: n(3),
        streams: n(4),
        events: n(5),
        contextRefs: n(6),
        usedBytes: n(7)
      }
    },
    setVaBase: (base) => setVaBase(base),
    setEventPolls: (polls) => setEventPolls(polls),
    inject: (call, code) => inject(call, code),
    lastStructs: () => {
      const prop = new Uint8Array(32)
      const access = new Uint8Array(12)
      lastStructs(prop, access)
      return { prop, access }
    },
    setPeerAccess: (dev, peer, allowed) => setPeerAccess(dev, peer, allowed ? 1 : 0),
    deviceUsed: (dev) => Number(deviceUsed(dev)),
    layout: () => {
      const out = new BigUint64Array(12)
      layout(out)
      const n = (i: number) => Number(out[i])
      return {
        allocationProp: {
          size: n(0),
          type: n(1),
          requestedHandleTypes: n(2),
          location: n(3),
          locationId: n(4),
          win32HandleMetaData: n(5),
          allocFlags: n(6)
        },
        location: { size: n(7) },
        accessDesc: { size: n(8), location: n(9), flags: n(10) },
        withCudaH: n(11) === 1
      }
    }
  }
  controls.set(path, control)
  return control
}
