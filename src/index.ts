/**
 * gmlake-ts: a virtual-memory-stitching GPU allocator on Effect.
 *
 * A session is a device layer (`layerSim`, the simulated device; `layerCuda`, a GPU through
 * libcuda) with the allocator service over it (`GpuAllocator.layer`, with a policy from
 * `makeAllocator`); closing the session's scope gives every chunk, range and mapping back.
 *
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { GiB, GpuAllocator, layerSim, makeAllocator, MiB, summary } from "gmlake-ts"
 * ```
 *
 * @since 0.1.0
 */

// The allocator service and the device.
export * as GpuAllocator from "./services/Allocator.ts"
export * as Streams from "./services/Streams.ts"
export * as Vmm from "./services/Vmm.ts"
export * as Devices from "./layers/Devices.ts"
export { type DeviceInfo, Driver, driverCall } from "./services/Driver.ts"
export { allocatorMetrics, publishMetrics } from "./services/AllocatorMetrics.ts"
export { layerSim, layerSimWith } from "./layers/sim/SimDriverLayer.ts"
export { SimDriver, type SimDriverOptions } from "./layers/sim/SimDriver.ts"
export { SimSystem } from "./layers/sim/SimSystem.ts"
export { type CudaSessionOptions, layerCuda } from "./layers/cuda/CudaDriverLayer.ts"

// Policies, settings and statistics (plain synchronous values, usable without Effect).
export { type Allocator, type PolicyCounters, type PolicyName, policyNames } from "./domain/Allocator.ts"
export { makeAllocator, policyFromString, type PolicyOptions } from "./domain/policies/Policies.ts"
export { CachingAllocator, type CachingConfig } from "./domain/policies/pytorch/Caching.ts"
export { ExpandableAllocator, type ExpandableConfig } from "./domain/policies/pytorch/Expandable.ts"
export { StitchingAllocator } from "./domain/policies/gmlake/StitchingAllocator.ts"
export {
  decodeStitchingConfig,
  defaultStitchingConfig,
  StitchingConfig,
  StitchingConfigError
} from "./domain/policies/gmlake/StitchingConfig.ts"
export { emptySettings, parseSettings, type Settings, SettingsError, settingKeys } from "./domain/Settings.ts"
export { type AllocatorStats, type MemoryStats, memoryStats, StatsAllocator, summary } from "./domain/adaptors/Stats.ts"
export { type DriverFailureReason, DriverError, InvalidBlockError, InvalidRequestError, OutOfMemoryError } from "./domain/Errors.ts"
export { type Address, type BlockId, type Bytes, formatBytes, GiB, KiB, MiB, type StreamId } from "./domain/Units.ts"

// Traces and replay.
export { decodeTrace, type Trace, TraceError } from "./trace/Trace.ts"
export { loadTrace, parseTraceBytes } from "./trace/File.ts"
export { multiStreamTrace, type SyntheticOptions } from "./trace/Synthetic.ts"
export { type CudaReplayReport, replayCuda, replaySim, type ReplayReport, replayWith } from "./replay/ReplayRunner.ts"
