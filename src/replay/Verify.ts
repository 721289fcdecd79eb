/**
 * The byte check of a replay (`gmlake replay --verify`): real device work on every block, on its
 * own stream, checked when the block is freed, so that memory handed from one stream to another
 * too early, or two live blocks sharing a byte, shows as wrong bytes.
 *
 * Note [Replay byte check]
 * ------------------------
 * At each allocation the block's first and last `window` bytes (all of it when it is small) are
 * filled with a value of its own (1 to 251, from its trace id), queued on the block's stream
 * (`cuMemsetD8Async`). At its free, before the allocator sees the free, the device is
 * synchronized (on a GPU), the windows are read back and compared with that value, and then they
 * are filled with 255, queued on the block's stream again: the freeing stream's last use of the
 * memory, still running when the allocator records its event. If the allocator handed that memory
 * to another stream before the event completed (Note [Cross-stream adoption]), the late 255 can
 * land after the new owner's own fill, and the new owner's check at its free finds it. If two
 * live blocks ever shared a byte, one's fill would overwrite the other's value, found the same
 * way. This is the `streams` command's check (write on one stream, read on the other, the event in
 * between), on every block of a real trace.
 *
 * On the simulator, stream work runs at once (Note [Simulated streams]), so there is no late
 * write to catch and the device is not synchronized (that would complete every event and change
 * what the allocator does); the check then proves that no two live blocks share a byte, through
 * the simulator's address translation. Blocks never freed are not checked.
 *
 * @since 0.1.0
 */

/** What the check needs of a device, synchronously. @category models */
export interface VerifyDevice {
  /** Sets `bytes` bytes at `address` to `value`, queued on session stream `stream`. */
  readonly fill: (address: number, value: number, bytes: number, stream: number) => void
  /** Reads `bytes` at `address` (after the work it depends on). */
  readonly read: (address: number, bytes: number) => Uint8Array
  /** Waits for all device work, or undefined where stream work runs at once (the simulator). */
  readonly synchronize: (() => void) | undefined
  /** Bytes checked at each end of a block (default `verifyWindow`). */
  readonly window?: number
}

/** What the check found. @category models */
export interface VerifyReport {
  /** Blocks checked (freed during the replay). */
  readonly blocks: number
  /** Bytes read back and compared. */
  readonly bytes: number
  /** Bytes that differed from what their block's own stream wrote. */
  readonly mismatches: number
  /** The first block found wrong, in words, or null. */
  readonly first: string | null
}

/** Bytes checked at each end of a block (Note [Replay byte check]). @category constants */
export const verifyWindow = 64 * 1024

/** The value a block's own stream writes; never 0 (fresh memory) or 255 (a last use). */
const valueOf = (key: number): number => 1 + (key * 131) % 251

/** The value every freeing stream writes last. */
const LAST_USE = 255

/**
 * The byte check (Note [Replay byte check]); the replay calls `allocated` after each allocation
 * and `freeing` before each free.
 * @category replay
 */
export class ByteVerifier {
  private readonly device: VerifyDevice
  private readonly window: number
  private nBlocks = 0
  private nBytes = 0
  private nMismatches = 0
  private first: string | null = null

  constructor(device: VerifyDevice) {
    this.device = device
    this.window = device.window ?? verifyWindow
  }

  /** The one or two windows of a block: [start, length] pairs. */
  private windows(address: number, size: number): ReadonlyArray<number> {
    const w = this.window
    return size <= 2 * w ? [address, size] : [address, w, address + size - w, w]
  }

  allocated(key: number, address: number, size: number, stream: number): void {
    const ws = this.windows(address, size)
    const v = valueOf(key)
    for (let i = 0; i < ws.length; i += 2) this.device.fill(ws[i]!, v, ws[i + 1]!, stream)
  }

  freeing(key: number, address: number, size: number, stream: number): void {
    const device = this.device
    if (device.synchronize !== undefined) device.synchronize()
    const ws = this.windows(address, size)
    const v = valueOf(key)
    let bad = 0
    for (let i = 0; i < ws.length; i += 2) {
      const data = device.read(ws[i]!, ws[i + 1]!)
      for (let j = 0; j < data.length; j++) if (data[j] !== v) bad++
      this.nBytes += data.length
    }
    this.nBlocks++
    if (bad > 0) {
      this.nMismatches += bad
      this.first ??= `allocation ${key} (stream ${stream}, ${size} B at 0x${address.toString(16)}): ` +
        `${bad} byte(s) differ from the ${v} its stream wrote`
    }
    for (let i = 0; i < ws.length; i += 2) device.fill(ws[i]!, LAST_USE, ws[i + 1]!, stream)
  }

  report(): VerifyReport {
    return { blocks: this.nBlocks, bytes: this.nBytes, mismatches: this.nMismatches, first: this.first }
  }
}
