/**
 * Byte sizes, addresses and ids.
 *
 * Brands are type-level only (no runtime cost): the allocator's hot path handles plain numbers,
 * and the brands keep a size from being passed where an address or an id is expected.
 * Every byte count in this project fits in a double exactly (device memories are < 2^53 bytes).
 *
 * @since 0.1.0
 */
import type { Brand } from "effect"

/** A count of bytes. @category models */
export type Bytes = number & Brand.Brand<"Bytes">
/** A device virtual address. @category models */
export type Address = number & Brand.Brand<"Address">
/** A physical allocation handle (`CUmemGenericAllocationHandle`). @category models */
export type ChunkHandle = number & Brand.Brand<"ChunkHandle">
/** A stream, as a small integer (0 is the default stream). @category models */
export type StreamId = number & Brand.Brand<"StreamId">
/** A block handed out by an allocator. @category models */
export type BlockId = number & Brand.Brand<"BlockId">

/** @category constructors */
export const bytes = (n: number): Bytes => n as Bytes
/** @category constructors */
export const KiB = (n: number): Bytes => (n * 1024) as Bytes
/** @category constructors */
export const MiB = (n: number): Bytes => (n * 1024 * 1024) as Bytes
/** @category constructors */
export const GiB = (n: number): Bytes => (n * 1024 * 1024 * 1024) as Bytes

/** Rounds `n` up to a multiple of `unit` (a positive integer). @category utils */
export const roundUp = (n: number, unit: number): number => Math.ceil(n / unit) * unit

/** Human-readable size with binary units, for messages and tables. @category formatting */
export const formatBytes = (n: number): string => {
  const a = Math.abs(n)
  if (a >= 1024 ** 3) return `${(n / 1024 ** 3).toFixed(2)} GiB`
  if (a >= 1024 ** 2) return `${(n / 1024 ** 2).toFixed(2)} MiB`
  if (a >= 1024) return `${(n / 1024).toFixed(1)} KiB`
  return `${n} B`
}

/** Decimal gigabytes, as the trace anchors print them. @category formatting */
export const formatGB = (n: number): string => `${(n / 1e9).toFixed(3)} GB`
