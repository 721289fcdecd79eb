/**
 * Grants: what a `BlockId` of the stitching allocator names, in the shared slot table (Note
 * [Block handles] in `SlotTable.ts`).
 *
 * @since 0.1.0
 */
import { grownF64, grownI32, SlotTable } from "../../SlotTable.ts"
import type { BlockId } from "../../Units.ts"

/** Grant states. @category models */
export const G_DEAD = 0
/** @category models */
export const G_LIVE = 1
/** @category models */
export const G_DEFERRED = 2
/**
 * Freed, its view mapping other streams' chunks, which go back to them once the freeing stream's
 * work is done (Note [Cross-stream lending]).
 * @category models
 */
export const G_RETURNING = 3

/**
 * Grants, what a `BlockId` names (Note [Block table] in `Segments.ts`): a primary block (`view`
 * -1), or a view and its primary spans (`blks`).
 * @category models
 */
export class GrantTable extends SlotTable {
  addr = new Float64Array(256)
  req = new Float64Array(256)
  blk = new Int32Array(256)
  view = new Int32Array(256)
  readonly blks: Array<Array<number> | null> = []

  constructor() {
    super(G_DEAD, 256)
  }

  /** A live grant; returns its id. */
  make(addr: number, req: number, blk: number, blks: Array<number> | null, view: number): BlockId {
    const s = this.take(G_LIVE)
    this.addr[s] = addr
    this.req[s] = req
    this.blk[s] = blk
    this.blks[s] = blks
    this.view[s] = view
    return this.mint(s)
  }

  protected override resize(n: number): void {
    super.resize(n)
    this.addr = grownF64(this.addr, n)
    this.req = grownF64(this.req, n)
    this.blk = grownI32(this.blk, n)
    this.view = grownI32(this.view, n)
  }
}
