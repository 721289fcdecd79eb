/**
 * Shared set-up of the CUDA binding tests: the fake libcuda, bound once per test file, reset
 * before each test, and a matcher for the `DriverError`s the binding throws.
 */
import { expect } from "@effect/vitest"
import { type CudaLibrary, loadCuda } from "../../src/cuda/Binding.ts"
import { DriverError, type DriverFailureReason } from "../../src/domain/Errors.ts"
import { fakeCuda } from "../fake-cuda/control.ts"
import { ensureFakeCuda } from "../fake-cuda/setup.ts"

export const MiB = 1024 * 1024
export const GiB = 1024 * MiB

export const libraries = ensureFakeCuda()
export const fake = fakeCuda(libraries.full)

let bound: CudaLibrary | undefined

/** The binding over the fake, with the fake reset to a fresh device (1 GiB, 2 MiB granule). */
export const freshLibrary = async (
  options: { readonly capacity?: number; readonly granularity?: number; readonly devices?: number } = {}
): Promise<CudaLibrary> => {
  bound ??= await loadCuda(libraries.full)
  fake.reset({ capacity: options.capacity ?? GiB, granularity: options.granularity ?? 2 * MiB, devices: options.devices ?? 1 })
  bound.currentContext = 0
  return bound
}

/** Runs `f`, expecting it to throw a `DriverError` with these fields; returns the error. */
export const expectDriverError = (
  f: () => unknown,
  expected: { readonly call?: string; readonly reason?: DriverFailureReason; readonly code?: number; readonly detail?: RegExp }
): DriverError => {
  let thrown: unknown
  try {
    f()
  } catch (e) {
    thrown = e
  }
  expect(thrown, "expected a DriverError to be thrown").toBeInstanceOf(DriverError)
  const e = thrown as DriverError
  if (expected.call !== undefined) expect(e.call).toBe(expected.call)
  if (expected.reason !== undefined) expect(e.reason).toBe(expected.reason)
  if (expected.code !== undefined) expect(e.code).toBe(expected.code)
  if (expected.detail !== undefined) expect(e.detail).toMatch(expected.detail)
  return e
}

/** Bytes 0, 1, 2, ... (mod 251) of length `n`, offset by `seed`. */
export const pattern = (n: number, seed = 0): Uint8Array => {
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i++) out[i] = (i + seed) % 251
  return out
}

/** Expects two byte arrays to be equal (fast on megabytes; names the first difference). */
export const expectBytes = (actual: Uint8Array, expected: Uint8Array): void => {
  expect(actual.length).toBe(expected.length)
  if (Buffer.from(actual.buffer, actual.byteOffset, actual.length).equals(expected)) return
  const i = actual.findIndex((b, k) => b !== expected[k])
  expect({ index: i, byte: actual[i] }).toEqual({ index: i, byte: expected[i] })
}
