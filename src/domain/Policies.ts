/**
 * Building an allocator of a named policy over a driver port.
 *
 * @since 0.1.0
 */
import type { Allocator, PolicyName } from "./Allocator.ts"
import type { DriverPort } from "./DriverPort.ts"
import { CachingAllocator } from "./policies/Caching.ts"
import { ExpandableAllocator } from "./policies/Expandable.ts"
import { StitchingAllocator } from "./policies/Stitching.ts"
import type { StitchingConfig } from "./policies/StitchingConfig.ts"

/** Per-policy configuration; absent means the policy's defaults. @category models */
export interface PolicyOptions {
  readonly gmlake?: StitchingConfig
}

/**
 * A fresh allocator of policy `name` over `port`.
 * @category constructors
 */
export const makeAllocator = (name: PolicyName, port: DriverPort, options: PolicyOptions = {}): Allocator => {
  switch (name) {
    case "caching":
      return new CachingAllocator(port)
    case "expandable":
      return new ExpandableAllocator(port)
    case "gmlake":
      return new StitchingAllocator(port, options.gmlake)
  }
}

/** Parses a policy name, or `undefined`. @category parsing */
export const policyFromString = (s: string): PolicyName | undefined =>
  s === "caching" || s === "expandable" || s === "gmlake" ? s : undefined
