/**
 * The koffi binding of the CUDA driver library (`libcuda.so.1`): the raw entry points the
 * project uses, the VMM structs, and the out slots the hot calls write into. The only module that
 * touches koffi; `CudaDevicePort.ts` builds the `DriverPort` on top of it.
 *
 * Note [Lazy koffi]
 * -----------------
 * koffi is imported with `await import("koffi")` inside `loadCuda`, never statically, so that the
 * bundled CLI starts (and runs on the simulator) where koffi is not installed (a static import of
 * a native module fails at load time, before any code can fall back).
 * Importing this module costs nothing; only `loadCuda` needs koffi and the driver, and it turns
 * every failure to get them into a `DriverError`.
 *
 * Note [Versioned symbols]
 * ------------------------
 * `cuda.h` `#define`s many entry points to versioned names (`cuMemGetInfo` is
 * `cuMemGetInfo_v2`), and libcuda exports both the versioned symbol and, for old binaries, the
 * original one with its old ABI (32-bit sizes). A binding must declare the name that `cuda.h`
 * expands to, or it gets the old ABI. `cuMemsetD8Async`, `cuStreamWaitEvent`, `cuEventRecord` and
 * `cuStreamSynchronize` are plain names: their `_ptsz` variants exist only for per-thread default
 * streams. The fake libcuda (test/fake-cuda) is compiled against `cuda.h` and exports exactly
 * these names, so a wrong name fails the tests as "symbol missing".
 *
 * Note [Handles as numbers]
 * -------------------------
 * Device addresses (`CUdeviceptr`) and handles (`CUmemGenericAllocationHandle`, and the context,
 * stream and event pointers) are 64-bit, but on 64-bit Linux they stay below 2^47 (user virtual
 * addresses), so they are carried as plain JS numbers, which koffi passes to `uint64_t`
 * parameters without a BigInt. Opaque pointers (`CUcontext`, `CUstream`, `CUevent`) are declared
 * as `uint64_t`: on the LP64 ABIs the two are passed identically, and koffi then neither boxes
 * them nor type-checks them. Every value that comes back is checked to be below 2^53 (`OutSlot`);
 * one that is not is a `DriverError`, never a silently rounded address.
 *
 * Note [Pre-encoded structs and out slots]
 * ----------------------------------------
 * koffi marshals a JS object into a struct on every call (1.8 us for `cuMemCreate`, measured
 * with koffi 3 on Node 24), and a `[null]` out array costs about 0.3 us. The hot calls therefore take their
 * structs as `const void *` pointing at bytes encoded once per device (`encodeAllocationProp`,
 * `encodeAccessDesc`), and write their results into a reused `BigUint64Array(1)` (`OutSlot`),
 * read through a `Uint32Array` view of the same bytes so that no BigInt is made. The struct bytes
 * live in ordinary `Uint8Array`s: koffi passes a typed array as a pointer to its contents for the
 * duration of the call, which is all the driver needs (it copies the struct), at the same cost as
 * `koffi.alloc` memory, and the garbage collector owns them. Measured on the fake libcuda (Node 24,
 * 2-core VM): about 60 ns per `cuMemCreate`/`cuMemRelease` this way, 540 ns with the struct as a
 * JS object and a `[null]` out array.
 *
 * @since 0.1.0
 */
import type { LibraryHandle, TypeObject } from "koffi"
import {
  type DescribeResult,
  type ErrorText,
  koffiUnavailable,
  libraryUnavailable,
  symbolsMissing
} from "./CudaError.ts"

/** The koffi module (its default export). @category models */
export type KoffiModule = typeof import("koffi").default

/** The default name of the driver library on Linux. @category constants */
export const LIBCUDA = "libcuda.so.1"

/** `CUmemAllocationType`, `CUmemLocationType`, `CUmemAccess_flags`, granularity options, flags. @category constants */
export const CU = {
  MEM_ALLOCATION_TYPE_PINNED: 1,
  MEM_LOCATION_TYPE_DEVICE: 1,
  MEM_HANDLE_TYPE_NONE: 0,
  MEM_ACCESS_FLAGS_PROT_NONE: 0,
  MEM_ACCESS_FLAGS_PROT_READ: 1,
  MEM_ACCESS_FLAGS_PROT_READWRITE: 3,
  MEM_ALLOC_GRANULARITY_MINIMUM: 0,
  MEM_ALLOC_GRANULARITY_RECOMMENDED: 1,
  STREAM_DEFAULT: 0,
  STREAM_NON_BLOCKING: 1,
  EVENT_DEFAULT: 0,
  EVENT_BLOCKING_SYNC: 1,
  EVENT_DISABLE_TIMING: 2
} as const

/**
 * The raw driver entry points, as koffi calls them. Every one returns a CUresult. Out
 * parameters are typed arrays (a `BigUint64Array(1)` for 64-bit results, an `Int32Array(1)` for
 * `int`); addresses, handles, contexts, streams and events are numbers (Note [Handles as numbers]).
 * @category models
 */
export interface CudaApi {
  cuInit(flags: number): number
  cuDriverGetVersion(version: Int32Array): number
  cuDeviceGetCount(count: Int32Array): number
  cuDeviceGet(device: Int32Array, ordinal: number): number
  cuDeviceGetName(name: Uint8Array, len: number, device: number): number
  cuDeviceTotalMem_v2(bytes: BigUint64Array, device: number): number
  cuDeviceCanAccessPeer(canAccess: Int32Array, device: number, peer: number): number
  cuDevicePrimaryCtxRetain(context: BigUint64Array, device: number): number
  cuDevicePrimaryCtxRelease_v2(device: number): number
  cuCtxSetCurrent(context: number): number
  cuCtxSynchronize(): number
  cuMemGetInfo_v2(free: BigUint64Array, total: BigUint64Array): number
  cuMemGetAllocationGranularity(granularity: BigUint64Array, prop: Uint8Array, option: number): number
  cuMemCreate(handle: BigUint64Array, bytes: number, prop: Uint8Array, flags: number): number
  cuMemRelease(handle: number | bigint): number
  cuMemAddressReserve(va: BigUint64Array, bytes: number, alignment: number, hint: number, flags: number): number
  cuMemAddressFree(va: number | bigint, bytes: number): number
  cuMemMap(va: number, bytes: number, offset: number, handle: number, flags: number): number
  cuMemUnmap(va: number, bytes: number): number
  cuMemSetAccess(va: number, bytes: number, desc: Uint8Array, count: number): number
  cuMemAlloc_v2(va: BigUint64Array, bytes: number): number
  cuMemFree_v2(va: number | bigint): number
  cuMemcpyHtoD_v2(dst: number, src: Uint8Array, bytes: number): number
  cuMemcpyDtoH_v2(dst: Uint8Array, src: number, bytes: number): number
  cuMemsetD8_v2(dst: number, value: number, count: number): number
  cuMemsetD8Async(dst: number, value: number, count: number, stream: number): number
  cuMemcpyDtoDAsync_v2(dst: number, src: number, bytes: number, stream: number): number
  cuStreamCreate(stream: BigUint64Array, flags: number): number
  cuStreamSynchronize(stream: number): number
  cuStreamDestroy_v2(stream: number | bigint): number
  cuStreamWaitEvent(stream: number, event: number, flags: number): number
  cuEventCreate(event: BigUint64Array, flags: number): number
  cuEventRecord(event: number, stream: number): number
  cuEventQuery(event: number): number
  cuEventSynchronize(event: number): number
  cuEventDestroy_v2(event: number | bigint): number
  cuGetErrorName(code: number, name: [string | null]): number
  cuGetErrorString(code: number, text: [string | null]): number
}

/** The name of a driver entry point. @category models */
export type CudaSymbol = keyof CudaApi

/**
 * The koffi declarations, one per entry point, with `cuda.h`'s parameter types spelled out
 * (CUresult and the enums are `int`; `CUdeviceptr`, handles and opaque pointers `uint64_t`).
 */
const PROTOTYPES: { readonly [K in CudaSymbol]: string } = {
  cuInit: "int cuInit(unsigned int flags)",
  cuDriverGetVersion: "int cuDriverGetVersion(int *version)",
  cuDeviceGetCount: "int cuDeviceGetCount(int *count)",
  cuDeviceGet: "int cuDeviceGet(int *device, int ordinal)",
  cuDeviceGetName: "int cuDeviceGetName(void *name, int len, int dev)",
  cuDeviceTotalMem_v2: "int cuDeviceTotalMem_v2(size_t *bytes, int dev)",
  cuDeviceCanAccessPeer: "int cuDeviceCanAccessPeer(int *canAccessPeer, int dev, int peerDev)",
  cuDevicePrimaryCtxRetain: "int cuDevicePrimaryCtxRetain(uint64_t *pctx, int dev)",
  cuDevicePrimaryCtxRelease_v2: "int cuDevicePrimaryCtxRelease_v2(int dev)",
  cuCtxSetCurrent: "int cuCtxSetCurrent(uint64_t ctx)",
  cuCtxSynchronize: "int cuCtxSynchronize(void)",
  cuMemGetInfo_v2: "int cuMemGetInfo_v2(size_t *free, size_t *total)",
  cuMemGetAllocationGranularity:
    "int cuMemGetAllocationGranularity(size_t *granularity, const void *prop, int option)",
  cuMemCreate: "int cuMemCreate(uint64_t *handle, size_t size, const void *prop, unsigned long long flags)",
  cuMemRelease: "int cuMemRelease(uint64_t handle)",
  cuMemAddressReserve:
    "int cuMemAddressReserve(uint64_t *ptr, size_t size, size_t alignment, uint64_t addr, unsigned long long flags)",
  cuMemAddressFree: "int cuMemAddressFree(uint64_t ptr, size_t size)",
  cuMemMap: "int cuMemMap(uint64_t ptr, size_t size, size_t offset, uint64_t handle, unsigned long long flags)",
  cuMemUnmap: "int cuMemUnmap(uint64_t ptr, size_t size)",
  cuMemSetAccess: "int cuMemSetAccess(uint64_t ptr, size_t size, const void *desc, size_t count)",
  cuMemAlloc_v2: "int cuMemAlloc_v2(uint64_t *dptr, size_t bytesize)",
  cuMemFree_v2: "int cuMemFree_v2(uint64_t dptr)",
  cuMemcpyHtoD_v2: "int cuMemcpyHtoD_v2(uint64_t dstDevice, const void *srcHost, size_t byteCount)",
  cuMemcpyDtoH_v2: "int cuMemcpyDtoH_v2(void *dstHost, uint64_t srcDevice, size_t byteCount)",
  cuMemsetD8_v2: "int cuMemsetD8_v2(uint64_t dstDevice, uint8_t uc, size_t n)",
  cuMemsetD8Async: "int cuMemsetD8Async(uint64_t dstDevice, uint8_t uc, size_t n, uint64_t hStream)",
  cuMemcpyDtoDAsync_v2:
    "int cuMemcpyDtoDAsync_v2(uint64_t dstDevice, uint64_t srcDevice, size_t byteCount, uint64_t hStream)",
  cuStreamCreate: "int cuStreamCreate(uint64_t *phStream, unsigned int flags)",
  cuStreamSynchronize: "int cuStreamSynchronize(uint64_t hStream)",
  cuStreamDestroy_v2: "int cuStreamDestroy_v2(uint64_t hStream)",
  cuStreamWaitEvent: "int cuStreamWaitEvent(uint64_t hStream, uint64_t hEvent, unsigned int flags)",
  cuEventCreate: "int cuEventCreate(uint64_t *phEvent, unsigned int flags)",
  cuEventRecord: "int cuEventRecord(uint64_t hEvent, uint64_t hStream)",
  cuEventQuery: "int cuEventQuery(uint64_t hEvent)",
  cuEventSynchronize: "int cuEventSynchronize(uint64_t hEvent)",
  cuEventDestroy_v2: "int cuEventDestroy_v2(uint64_t hEvent)",
  cuGetErrorName: "int cuGetErrorName(int error, _Out_ const char **pStr)",
  cuGetErrorString: "int cuGetErrorString(int error, _Out_ const char **pStr)"
}

/** Every entry point the binding declares. @category constants */
export const cudaSymbols: ReadonlyArray<CudaSymbol> = Object.keys(PROTOTYPES) as Array<CudaSymbol>

/** The entry points a device session needs (`openDevice`). @category constants */
export const sessionSymbols: ReadonlyArray<CudaSymbol> = [
  "cuInit",
  "cuDeviceGetCount",
  "cuDeviceGet",
  "cuDeviceGetName",
  "cuDeviceTotalMem_v2",
  "cuDevicePrimaryCtxRetain",
  "cuDevicePrimaryCtxRelease_v2",
  "cuCtxSetCurrent"
]

/** The virtual memory management entry points (CUDA 10.2+) the `DriverPort` needs. @category constants */
export const vmmSymbols: ReadonlyArray<CudaSymbol> = [
  "cuMemGetAllocationGranularity",
  "cuMemCreate",
  "cuMemRelease",
  "cuMemAddressReserve",
  "cuMemAddressFree",
  "cuMemMap",
  "cuMemUnmap",
  "cuMemSetAccess"
]

/**
 * A reusable out slot for one 64-bit result (Note [Pre-encoded structs and out slots]).
 * @category models
 */
export class OutSlot {
  /** Pass this to the driver. */
  readonly slot: BigUint64Array = new BigUint64Array(1)
  private readonly words: Uint32Array = new Uint32Array(this.slot.buffer)

  /** The value as a number, or -1 if it is 2^53 or more (Note [Handles as numbers]). */
  get value(): number {
    const hi = this.words[1]!
    return hi < 0x200000 ? hi * 4294967296 + this.words[0]! : -1
  }

  /** The value as a bigint (exact, slower). */
  get big(): bigint {
    return this.slot[0]!
  }
}

/** Sizes and offsets of the VMM structs as koffi lays them out. @category models */
export interface StructLayout {
  readonly allocationProp: {
    readonly size: number
    readonly type: number
    readonly requestedHandleTypes: number
    readonly location: number
    readonly locationId: number
    readonly win32HandleMetaData: number
    readonly allocFlags: number
  }
  readonly location: { readonly size: number; readonly type: number; readonly id: number }
  readonly accessDesc: { readonly size: number; readonly location: number; readonly flags: number }
}

interface StructTypes {
  readonly location: TypeObject
  readonly allocationProp: TypeObject
  readonly accessDesc: TypeObject
}

/** Struct types per koffi instance. Anonymous: koffi's registry of type names is global. */
const structTypesCache = new WeakMap<KoffiModule, StructTypes>()

const structTypes = (koffi: KoffiModule): StructTypes => {
  const cached = structTypesCache.get(koffi)
  if (cached !== undefined) return cached
  const location = koffi.struct({ type: "int", id: "int" })
  const allocationProp = koffi.struct({
    type: "int",
    requestedHandleTypes: "int",
    location,
    win32HandleMetaData: "void *",
    allocFlags: koffi.struct({
      compressionType: "uint8_t",
      gpuDirectRDMACapable: "uint8_t",
      usage: "uint16_t",
      reserved: koffi.array("uint8_t", 4, "Array")
    })
  })
  const accessDesc = koffi.struct({ location, flags: "int" })
  const types = { location, allocationProp, accessDesc }
  structTypesCache.set(koffi, types)
  return types
}

/**
 * The loaded driver library: the raw entry points, and the struct encoders the port needs.
 * Built by `loadCuda` (or `bindCuda` when koffi is already at hand).
 * @category models
 */
export class CudaLibrary {
  /** The path given to the loader. */
  readonly path: string
  /** The entry points; a missing one throws a `DriverError` (NotSupported) when called. */
  readonly api: CudaApi
  /** Entry points the library does not export. */
  readonly missing: ReadonlyArray<CudaSymbol>
  /** The koffi version that loaded it. */
  readonly koffiVersion: string
  /**
   * The context this binding last made current on this thread (0 for none). The driver keeps
   * one current context per OS thread, and koffi's synchronous calls all run on the JS thread,
   * so this mirrors it exactly as long as every `cuCtxSetCurrent` goes through `makeCurrent`.
   */
  currentContext = 0

  private readonly koffi: KoffiModule
  private readonly handle: LibraryHandle
  private readonly texts = new Map<number, ErrorText | undefined>()

  constructor(koffi: KoffiModule, path: string) {
    if (koffi.sizeof("void *") !== 8 || new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
      throw libraryUnavailable(path, new Error("the CUDA binding needs a 64-bit little-endian platform"))
    }
    this.koffi = koffi
    this.path = path
    this.koffiVersion = koffi.version
    try {
      this.handle = koffi.load(path)
    } catch (e) {
      throw libraryUnavailable(path, e)
    }
    const missing: Array<CudaSymbol> = []
    const api: Record<string, unknown> = {}
    for (const name of cudaSymbols) {
      try {
        api[name] = this.handle.func(PROTOTYPES[name])
      } catch {
        missing.push(name)
        api[name] = () => {
          throw symbolsMissing(path, [name], "this call")
        }
      }
    }
    this.api = api as unknown as CudaApi
    this.missing = missing
  }

  /**
   * Throws a `DriverError` (NotSupported) naming every symbol of `symbols` the library lacks;
   * `purpose` says what they are needed for.
   */
  requireSymbols(symbols: ReadonlyArray<CudaSymbol>, purpose: string): void {
    const absent = symbols.filter((s) => this.missing.includes(s))
    if (absent.length > 0) throw symbolsMissing(this.path, absent, purpose)
  }

  /**
   * The driver's own name and text for a CUresult (`cuGetErrorName`, `cuGetErrorString`), or
   * `undefined` where it has none or lacks those entry points. Cached per code.
   */
  readonly describe: DescribeResult = (code) => {
    if (this.texts.has(code)) return this.texts.get(code)
    let text: ErrorText | undefined
    try {
      const name: [string | null] = [null]
      const str: [string | null] = [null]
      if (this.api.cuGetErrorName(code, name) === 0 && name[0] !== null) {
        text = { name: name[0], text: this.api.cuGetErrorString(code, str) === 0 && str[0] !== null ? str[0] : name[0] }
      }
    } catch {
      text = undefined
    }
    this.texts.set(code, text)
    return text
  }

  /**
   * The `CUmemAllocationProp` bytes for pinned memory on device `ordinal`, with no exported handle
   * type and every other field zero (`CU_MEM_ALLOCATION_TYPE_PINNED`, location type device).
   */
  encodeAllocationProp(ordinal: number): Uint8Array {
    const t = structTypes(this.koffi).allocationProp
    const bytes = new Uint8Array(this.koffi.sizeof(t))
    this.koffi.encode(bytes, t, {
      type: CU.MEM_ALLOCATION_TYPE_PINNED,
      requestedHandleTypes: CU.MEM_HANDLE_TYPE_NONE,
      location: { type: CU.MEM_LOCATION_TYPE_DEVICE, id: ordinal },
      win32HandleMetaData: null,
      allocFlags: { compressionType: 0, gpuDirectRDMACapable: 0, usage: 0, reserved: [0, 0, 0, 0] }
    })
    return bytes
  }

  /** The `CUmemAccessDesc` bytes granting `flags` (read-write by default) to device `ordinal`. */
  encodeAccessDesc(ordinal: number, flags: number = CU.MEM_ACCESS_FLAGS_PROT_READWRITE): Uint8Array {
    const t = structTypes(this.koffi).accessDesc
    const bytes = new Uint8Array(this.koffi.sizeof(t))
    this.koffi.encode(bytes, t, { location: { type: CU.MEM_LOCATION_TYPE_DEVICE, id: ordinal }, flags })
    return bytes
  }

  /** The VMM struct layouts as declared to koffi (checked against the C compiler's in the tests). */
  structLayout(): StructLayout {
    const k = this.koffi
    const { accessDesc, allocationProp, location } = structTypes(k)
    return {
      allocationProp: {
        size: k.sizeof(allocationProp),
        type: k.offsetof(allocationProp, "type"),
        requestedHandleTypes: k.offsetof(allocationProp, "requestedHandleTypes"),
        location: k.offsetof(allocationProp, "location"),
        locationId: k.offsetof(allocationProp, "location") + k.offsetof(location, "id"),
        win32HandleMetaData: k.offsetof(allocationProp, "win32HandleMetaData"),
        allocFlags: k.offsetof(allocationProp, "allocFlags")
      },
      location: { size: k.sizeof(location), type: k.offsetof(location, "type"), id: k.offsetof(location, "id") },
      accessDesc: {
        size: k.sizeof(accessDesc),
        location: k.offsetof(accessDesc, "location"),
        flags: k.offsetof(accessDesc, "flags")
      }
    }
  }
}

/**
 * Binds the driver library at `path` with a koffi module already imported. Throws a
 * `DriverError` (NoDevice) if the library cannot be loaded. Missing entry points do not fail
 * here (see `CudaLibrary.missing`, `requireSymbols`).
 * @category constructors
 */
export const bindCuda = (koffi: KoffiModule, path: string = LIBCUDA): CudaLibrary => new CudaLibrary(koffi, path)

/** Options of `loadCuda`. @category models */
export interface LoadCudaOptions {
  /** How to import koffi (tests replace it to simulate a missing package). */
  readonly importKoffi?: () => Promise<KoffiModule>
}

const importKoffi = async (): Promise<KoffiModule> => (await import("koffi")).default

/**
 * Imports koffi lazily (Note [Lazy koffi]) and binds the driver library at `path` (default
 * `libcuda.so.1`; the tests pass the fake's path). Rejects with a `DriverError` when koffi is
 * not installed (NotSupported) or the library cannot be loaded (NoDevice).
 * @category constructors
 */
export const loadCuda = async (path: string = LIBCUDA, options: LoadCudaOptions = {}): Promise<CudaLibrary> => {
  let koffi: KoffiModule
  try {
    koffi = await (options.importKoffi ?? importKoffi)()
  } catch (e) {
    throw koffiUnavailable(e)
  }
  return bindCuda(koffi, path)
}
