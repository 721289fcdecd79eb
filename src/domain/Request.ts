/**
 * What a request must be before any policy looks at it: the rules every allocator entry point
 * applies, in one place, so that the three policies (and the adaptors around them) accept and
 * refuse exactly the same sizes, streams and block ids.
 *
 * @since 0.1.0
 */
import { InvalidBlockError, InvalidRequestError } from "./Errors.ts"

/**
 * The largest stream id. Streams are small ids that a session hands out (0 is the default
 * stream; Note [Stream ids] in `layers/HandleRegistry.ts`) and that traces number 0, 1, 2...;
 * allocators keep per-stream state in arrays indexed by them, so the range is bounded.
 * @category constants
 */
export const maxStream = 0xffff

/** `describe` for messages: numbers as they print, other values by type, never a huge string. */
const show = (x: unknown): string => {
  if (typeof x === "number") return String(x)
  if (typeof x === "bigint") return `${x}n (a bigint)`
  if (x === null) return "null"
  if (x === undefined) return "undefined"
  if (typeof x === "string") return `the string ${JSON.stringify(x.length > 40 ? `${x.slice(0, 40)}...` : x)}`
  return `a value of type ${typeof x}`
}

/**
 * Checks a requested size: a positive integer number of bytes that a double holds exactly.
 * Throws `InvalidRequestError` otherwise.
 * @category validation
 */
export const checkSize = (size: number): void => {
  if (typeof size === "number" && size > 0 && size <= Number.MAX_SAFE_INTEGER && Number.isInteger(size)) return
  if (typeof size === "number" && size > Number.MAX_SAFE_INTEGER) {
    throw new InvalidRequestError({
      detail: `size ${size} is larger than the largest safe integer (2^53 - 1 = ${Number.MAX_SAFE_INTEGER} B), ` +
        "more than any device holds"
    })
  }
  throw new InvalidRequestError({ detail: `size must be a positive integer number of bytes, got ${show(size)}` })
}

/**
 * Checks a stream id: an integer from 0 to `maxStream`. Throws `InvalidRequestError` otherwise.
 * @category validation
 */
export const checkStream = (stream: number): void => {
  if (typeof stream === "number" && Number.isInteger(stream) && stream >= 0 && stream <= maxStream) return
  throw new InvalidRequestError({ detail: `stream must be an integer from 0 to ${maxStream}, got ${show(stream)}` })
}

/**
 * Checks a block id before a policy looks it up: a non-negative safe integer. Throws
 * `InvalidBlockError` labelled with `operation` otherwise.
 * @category validation
 */
export const checkBlockId = (block: number, operation: string): void => {
  if (typeof block === "number" && Number.isSafeInteger(block) && block >= 0) return
  throw new InvalidBlockError({
    block: typeof block === "number" ? block : Number.NaN,
    operation,
    detail: `expected a block id (a non-negative integer), got ${show(block)}`
  })
}

/** The same error, labelled with the operation the caller asked for (not the lookup it used). @category errors */
export const relabel = (e: unknown, operation: string): unknown =>
  e instanceof InvalidBlockError && e.operation !== operation
    ? new InvalidBlockError({ block: e.block, operation, detail: e.detail })
    : e
