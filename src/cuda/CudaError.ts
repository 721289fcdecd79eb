/**
 * CUresult to `DriverError`, in one place: the reason (backend-independent), the driver's own
 * name and text for the code where the library can give them, and what it means for the user.
 *
 * Failures that happen before any driver call (koffi not installed, no `libcuda.so.1`, a symbol
 * the driver lacks, a value the binding cannot represent) are `DriverError`s too, built here, so
 * that no path through the binding crashes with a bare exception.
 *
 * @since 0.1.0
 */
import { DriverError, type DriverFailureReason } from "../domain/Errors.ts"

/**
 * The CUresult codes the binding names (`cuda.h`, `enum cudaError_enum`).
 * @category models
 */
export const CUresult = {
  SUCCESS: 0,
  INVALID_VALUE: 1,
  OUT_OF_MEMORY: 2,
  NOT_INITIALIZED: 3,
  DEINITIALIZED: 4,
  STUB_LIBRARY: 34,
  CALL_REQUIRES_NEWER_DRIVER: 36,
  DEVICE_UNAVAILABLE: 46,
  NO_DEVICE: 100,
  INVALID_DEVICE: 101,
  DEVICE_NOT_LICENSED: 102,
  INVALID_CONTEXT: 201,
  ALREADY_MAPPED: 208,
  NOT_MAPPED: 211,
  ECC_UNCORRECTABLE: 214,
  CONTEXT_ALREADY_IN_USE: 216,
  PEER_ACCESS_UNSUPPORTED: 217,
  OPERATING_SYSTEM: 304,
  INVALID_HANDLE: 400,
  ILLEGAL_STATE: 401,
  NOT_FOUND: 500,
  NOT_READY: 600,
  ILLEGAL_ADDRESS: 700,
  CONTEXT_IS_DESTROYED: 709,
  LAUNCH_FAILED: 719,
  NOT_PERMITTED: 800,
  NOT_SUPPORTED: 801,
  SYSTEM_NOT_READY: 802,
  SYSTEM_DRIVER_MISMATCH: 803,
  COMPAT_NOT_SUPPORTED_ON_DEVICE: 804,
  UNKNOWN: 999
} as const

/** The driver's name and text for a code (`cuGetErrorName`, `cuGetErrorString`). @category models */
export interface ErrorText {
  readonly name: string
  readonly text: string
}

/** Asks the loaded driver for a code's name and text; `undefined` where it cannot. @category models */
export type DescribeResult = (code: number) => ErrorText | undefined

/** How a CUresult is classified: its reason and what it means for the user. @category models */
export interface Classification {
  readonly reason: DriverFailureReason
  readonly meaning: string
}

/**
 * The one mapping from CUresult to reason and meaning.
 * @category errors
 */
export const classify = (code: number): Classification => {
  switch (code) {
    case CUresult.INVALID_VALUE:
      return c("InvalidValue",
        "the driver refused an argument (a size not a multiple of the granularity, an unaligned or unreserved " +
          "address, a mapping over a mapping, an unmap that splits a mapping, a stale handle)")
    case CUresult.OUT_OF_MEMORY:
      return c("OutOfMemory",
        "the device has no memory left for this request (other processes may hold device memory too)")
    case CUresult.NOT_INITIALIZED:
      return c("NotInitialized", "the driver was not initialized: cuInit must come first")
    case CUresult.DEINITIALIZED:
      return c("NotInitialized", "the driver is shutting down (the process is exiting)")
    case CUresult.STUB_LIBRARY:
      return c("NoDevice",
        "the libcuda.so.1 loaded is the CUDA toolkit's stub, not the NVIDIA driver's: fix the library path")
    case CUresult.CALL_REQUIRES_NEWER_DRIVER:
      return c("NotSupported", "the installed NVIDIA driver is too old for this call")
    case CUresult.DEVICE_UNAVAILABLE:
      return c("NoDevice", "the device is busy or unavailable (exclusive-process mode, or held by another process)")
    case CUresult.NO_DEVICE:
      return c("NoDevice", "the driver sees no CUDA-capable device (check nvidia-smi and CUDA_VISIBLE_DEVICES)")
    case CUresult.INVALID_DEVICE:
      return c("NoDevice", "no device has this ordinal (check CUDA_VISIBLE_DEVICES)")
    case CUresult.DEVICE_NOT_LICENSED:
      return c("NotSupported", "the device is not licensed for this use")
    case CUresult.INVALID_CONTEXT:
    case CUresult.CONTEXT_IS_DESTROYED:
    case CUresult.CONTEXT_ALREADY_IN_USE:
      return c("InvalidContext",
        "no usable CUDA context is current on this thread (the device session was closed, or never opened)")
    case CUresult.ALREADY_MAPPED:
      return c("InvalidValue", "the virtual range is already mapped")
    case CUresult.NOT_MAPPED:
      return c("InvalidValue", "the virtual range is not mapped")
    case CUresult.INVALID_HANDLE:
    case CUresult.ILLEGAL_STATE:
      return c("InvalidValue", "a handle (stream, event, chunk) is not live")
    case CUresult.NOT_READY:
      return c("NotReady", "the work is not finished yet (not a failure: poll again or synchronize)")
    case CUresult.NOT_FOUND:
      return c("NotSupported", "the driver lacks what was named (a symbol or resource)")
    case CUresult.PEER_ACCESS_UNSUPPORTED:
    case CUresult.NOT_PERMITTED:
    case CUresult.NOT_SUPPORTED:
    case CUresult.COMPAT_NOT_SUPPORTED_ON_DEVICE:
      return c("NotSupported",
        "the device or driver does not support this operation (virtual memory management needs CUDA 10.2+ " +
          "and a device that reports it)")
    case CUresult.SYSTEM_NOT_READY:
      return c("NoDevice", "the system is not ready (on NVSwitch systems: is the fabric manager running?)")
    case CUresult.SYSTEM_DRIVER_MISMATCH:
      return c("NotSupported",
        "the user-mode driver (libcuda) and the kernel module differ in version: reinstall the driver or reboot")
    case CUresult.ILLEGAL_ADDRESS:
    case CUresult.LAUNCH_FAILED:
    case CUresult.ECC_UNCORRECTABLE:
      return c("Unknown", "the device hit a fatal fault; the context is unusable and the process must restart")
    case CUresult.OPERATING_SYSTEM:
      return c("Unknown", "an operating-system call inside the driver failed")
    default:
      return c("Unknown", "an unexpected driver error")
  }
}

const c = (reason: DriverFailureReason, meaning: string): Classification => ({ reason, meaning })

const names = new Map<number, string>(
  Object.entries(CUresult).map(([k, v]) => [v, k === "SUCCESS" ? "CUDA_SUCCESS" : `CUDA_ERROR_${k}`])
)

/**
 * The `cuda.h` name of a code the binding knows (`CUDA_ERROR_OUT_OF_MEMORY`), for when the
 * driver cannot name it.
 * @category errors
 */
export const codeName = (code: number): string => names.get(code) ?? `CUresult ${code}`

/**
 * The `DriverError` for a failed driver call. `context` says what the call was doing
 * (sizes, addresses) in words; `describe` asks the driver for the code's own name and text.
 * @category errors
 */
export const cudaError = (call: string, code: number, describe?: DescribeResult, context?: string): DriverError => {
  const k = classify(code)
  const own = describe?.(code)
  const head = own !== undefined ? `${own.name} (${own.text})` : codeName(code)
  const detail = `${head}: ${k.meaning}${context !== undefined && context !== "" ? `; ${context}` : ""}`
  return new DriverError({ call, reason: k.reason, code, detail })
}

/**
 * koffi could not be imported: the CUDA backend is unavailable (the simulator still works).
 * @category errors
 */
export const koffiUnavailable = (cause: unknown): DriverError =>
  new DriverError({
    call: "import(koffi)",
    reason: "NotSupported",
    code: CUresult.NOT_SUPPORTED,
    detail: `the koffi package could not be loaded (${messageOf(cause)}): install koffi@3.3.4 next to the program ` +
      "to use a GPU, or use the simulated device"
  })

/**
 * The driver library could not be loaded: no NVIDIA driver on this machine (or not on the
 * loader's path).
 * @category errors
 */
export const libraryUnavailable = (path: string, cause: unknown): DriverError =>
  new DriverError({
    call: "dlopen",
    reason: "NoDevice",
    code: CUresult.NO_DEVICE,
    detail: `could not load ${path} (${messageOf(cause)}): no NVIDIA driver is installed, or it is not on the ` +
      "loader's path (LD_LIBRARY_PATH); use the simulated device on machines without a GPU"
  })

/**
 * The driver library lacks entry points the binding needs: a driver too old for them.
 * @category errors
 */
export const symbolsMissing = (path: string, symbols: ReadonlyArray<string>, purpose: string): DriverError =>
  new DriverError({
    call: symbols[0] ?? "dlsym",
    reason: "NotSupported",
    code: CUresult.NOT_FOUND,
    detail: `${path} does not export ${symbols.join(", ")}, needed for ${purpose}: the NVIDIA driver is too old ` +
      "(virtual memory management needs a driver for CUDA 10.2 or later)"
  })

/**
 * A handle or address came back that does not fit in a JS number exactly (>= 2^53), which the
 * binding relies on (Note [Handles as numbers] in Binding.ts).
 * @category errors
 */
export const unrepresentable = (call: string, what: string, value: bigint): DriverError =>
  new DriverError({
    call,
    reason: "NotSupported",
    code: CUresult.NOT_SUPPORTED,
    detail: `the driver returned ${what} 0x${value.toString(16)}, which does not fit in a JS number exactly (2^53); ` +
      "this binding supports 64-bit Linux, where device addresses and handles stay below 2^47"
  })

/**
 * A size or count that is not a positive safe integer, refused before it reaches the driver
 * (koffi would silently wrap a negative or fractional `size_t`).
 * @category errors
 */
export const invalidArgument = (call: string, detail: string): DriverError =>
  new DriverError({ call, reason: "InvalidValue", code: CUresult.INVALID_VALUE, detail })

const messageOf = (cause: unknown): string => (cause instanceof Error ? cause.message : String(cause))
