/**
 * Building an allocator of a named policy over a driver port.
 *
 * @since 0.1.0
 */
import type { Allocator, PolicyName } from "../Allocator.ts"
import { AdmissionAllocator } from "../adaptors/Admission.ts"
import { CrossStreamAllocator } from "../adaptors/CrossStream.ts"
import type { DriverPort } from "../DriverPort.ts"
import type { StreamPort } from "../StreamPort.ts"
import { CachingAllocator, type CachingConfig } from "./pytorch/Caching.ts"
import { ExpandableAllocator, type ExpandableConfig } from "./pytorch/Expandable.ts"
import { StitchingAllocator } from "./gmlake/StitchingAllocator.ts"
import type { PartFactories } from "./gmlake/Parts.ts"
import type { StitchingConfig } from "./gmlake/StitchingConfig.ts"

/** Per-policy configuration; absent means the policy's defaults. @category models */
export interface PolicyOptions {
  readonly gmlake?: StitchingConfig
  /** PyTorch's options of the native allocator (`max_split_size_mb`, ...; Note [Allocator settings]). */
  readonly caching?: Partial<CachingConfig>
  /** PyTorch's options that apply in expandable mode. */
  readonly expandable?: Partial<ExpandableConfig>
  /**
   * Safe cross-stream reuse (Note [Cross-stream reuse]): one pool for all streams, frees guarded
   * by events. Needs a `StreamPort`. Off by default: every policy then keeps a pool per stream,
   * as PyTorch and GMLake do. It saves memory when events complete soon after the frees they
   * follow and costs memory when the device runs far behind the allocator (bench/results).
   */
  readonly crossStream?: boolean
  /** The gmlake policy's pool and stitcher (Note [Replaceable parts]); absent means the defaults. */
  readonly gmlakeParts?: PartFactories
}

/**
 * A fresh allocator of policy `name` over `port`, behind the admission checks that every entry
 * point shares (arguments, and Note [Refusing what cannot fit]).
 * @category constructors
 */
export const makeAllocator = (
  name: PolicyName,
  port: DriverPort,
  options: PolicyOptions = {},
  streams?: StreamPort
): Allocator => {
  const core = name === "caching"
    ? new CachingAllocator(port, options.caching)
    : name === "expandable"
    ? new ExpandableAllocator(port, options.expandable)
    : new StitchingAllocator(port, options.gmlake, streams, options.gmlakeParts)
  const shared = options.crossStream === true && streams !== undefined ? new CrossStreamAllocator(core, streams) : core
  return new AdmissionAllocator(shared, port, streams)
}

/** Parses a policy name, or `undefined`. @category parsing */
export const policyFromString = (s: string): PolicyName | undefined =>
  s === "caching" || s === "expandable" || s === "gmlake" ? s : undefined
