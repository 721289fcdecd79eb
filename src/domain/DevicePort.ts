/**
 * A device as the allocator stack sees it: the VMM primitives (`DriverPort`) and streams and
 * events (`StreamPort`), and what a session's handle registry holds of it.
 *
 * @since 0.1.0
 */
import type { DriverPort } from "./DriverPort.ts"
import type { StreamPort } from "./StreamPort.ts"

/** A device: VMM primitives, streams and events. @category models */
export type DevicePort = DriverPort & StreamPort

/** What a session's handle registry holds now (Note [Handle ownership] in `layers/HandleRegistry.ts`). @category models */
export interface LiveHandles {
  readonly chunks: number
  readonly ranges: number
  readonly mappings: number
  readonly allocations: number
  readonly streams: number
  readonly events: number
}
