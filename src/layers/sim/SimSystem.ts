/**
 * Several simulated devices in one process, as CUDA's unified addressing shows a machine's GPUs:
 * one virtual address space and one handle table, a capacity and a ledger per device, and peer
 * access between them (Note [Simulated system] in `SimDriver.ts`).
 *
 * Note [Simulated peer access]
 * ----------------------------
 * Peer access is allowed between every pair of devices by default, as on the machines this
 * project targets: the GPUs of an HGX/DGX H100 or H200 board are all connected through NVLink
 * and NVSwitch, and `cuDeviceCanAccessPeer` answers 1 for every ordered pair. Each ordered pair
 * can be denied (`peerAccess: "none"`, a list of denied pairs, or `setPeerAccess` at any time),
 * to model GPUs on different PCIe root complexes or a virtualized machine. Access is directed:
 * device i may map device j's memory when (i, j) is allowed, whatever (j, i) says; a device is
 * never its own peer. A denied pair makes `setAccess` through device i over a chunk located on
 * j fail (NotSupported, CUresult 217), exactly as the mapping then does on a GPU; mapping without
 * access is allowed, as `cuMemMap` is. Changing a pair does not revoke access already granted.
 *
 * @since 0.1.0
 */
import { DriverError } from "../../domain/Errors.ts"
import { emptyLedger, type Ledger, maxSimDevices, type PhysicalPiece, SimDriver, type SimDriverOptions } from "./SimDriver.ts"

/** @category models */
export interface SimSystemOptions {
  /** The devices, by ordinal: a count (each with `device`'s options) or one options object each. */
  readonly devices: number | ReadonlyArray<SimDriverOptions>
  /** Options shared by every device (a per-device object overrides them). */
  readonly device?: SimDriverOptions
  /**
   * Peer access (Note [Simulated peer access]): `"all"` (the default), `"none"`, or
   * `{ deny: [[from, to], ...] }` to deny only these ordered pairs.
   */
  readonly peerAccess?: "all" | "none" | { readonly deny: ReadonlyArray<readonly [number, number]> }
}

/** Every device's ledger, and their sum. @category models */
export interface SystemLedger {
  readonly devices: ReadonlyArray<Ledger>
  readonly total: Ledger
}

/**
 * A system of simulated devices.
 * @category constructors
 */
export class SimSystem {
  /** The devices, by ordinal: each a `DriverPort` and `StreamPort` of its own. */
  readonly devices: ReadonlyArray<SimDriver>
  /** allowed[from][to]. */
  private readonly allowed: Array<Array<boolean>>

  constructor(options: SimSystemOptions) {
    const shared = options.device ?? {}
    const list = typeof options.devices === "number"
      ? Array.from({ length: options.devices }, () => shared)
      : options.devices.map((d) => ({ ...shared, ...d }))
    const n = list.length
    if (!(n >= 1 && n <= maxSimDevices)) {
      throw new DriverError({
        call: "SimSystem",
        reason: "InvalidValue",
        code: 1,
        detail: `a simulated system holds 1 to ${maxSimDevices} devices, got ${n}`
      })
    }
    const access = options.peerAccess ?? "all"
    this.allowed = Array.from({ length: n }, () => new Array<boolean>(n).fill(access !== "none"))
    if (typeof access === "object") for (const [from, to] of access.deny) this.setPeerAccess(from, to, false)
    this.devices = SimDriver.system(list, (from, to) => this.allowed[from]?.[to] === true)
  }

  /** Number of devices. */
  get count(): number {
    return this.devices.length
  }

  /** Device `ordinal` (`DriverError`, NoDevice, for one that does not exist). */
  device(ordinal: number): SimDriver {
    const d = this.devices[ordinal]
    if (d === undefined) {
      throw new DriverError({
        call: "cuDeviceGet",
        reason: "NoDevice",
        code: 101,
        detail: `there is no device ${ordinal}: the system has ${this.devices.length}`
      })
    }
    return d
  }

  /** Whether device `from` may access memory located on device `to` (`cuDeviceCanAccessPeer`). */
  canAccessPeer(from: number, to: number): boolean {
    return this.device(from).canAccessPeer(to)
  }

  /** Allows or denies device `from` access to memory located on device `to`. */
  setPeerAccess(from: number, to: number, allowed: boolean): void {
    const row = this.allowed[from]
    if (row === undefined || to < 0 || to >= row.length || !Number.isInteger(to)) {
      throw new DriverError({
        call: "SimSystem",
        reason: "InvalidValue",
        code: 1,
        detail: `(${from}, ${to}) is not a pair of devices of this system`
      })
    }
    row[to] = allowed
  }

  /** The physical pieces behind `[va, va + bytes)` as device `ordinal` sees them (`SimDriver.translate`). */
  translate(ordinal: number, va: number, bytes: number): Array<PhysicalPiece> {
    return this.device(ordinal).translate(va, bytes)
  }

  /** What is alive, per device and in all. */
  ledger(): SystemLedger {
    const devices = this.devices.map((d) => d.ledger())
    const sum = devices.reduce<Ledger>((acc, l) => ({
      chunks: acc.chunks + l.chunks,
      ranges: acc.ranges + l.ranges,
      mappings: acc.mappings + l.mappings,
      allocations: acc.allocations + l.allocations,
      streams: acc.streams + l.streams,
      events: acc.events + l.events,
      physicalBytes: acc.physicalBytes + l.physicalBytes
    }), emptyLedger)
    return { devices, total: sum }
  }

  /** Live handles of every kind on every device, for leak checks. */
  liveHandles(): number {
    return this.devices.reduce((n, d) => n + d.liveHandles(), 0)
  }
}
