/**
 * The flags the commands share, typed and validated where they are parsed: a bad value is a
 * usage error naming the flag before anything runs (Note [What the command line refuses]).
 *
 * Note [What the command line refuses]
 * ------------------------------------
 * A value is accepted only if the device it is meant for could have it:
 *
 * - `--granularity` on the simulated device: a multiple of 2 MiB (the granularity of every
 *   NVIDIA GPU this was measured on, and the simulator's default), at most 1 GiB. A real driver
 *   has exactly its own granularity and multiples of it; a 3-byte granule is not a device, and
 *   replaying on one only produces millions of 3-byte chunks.
 * - `--capacity` on the simulated device: at most 1 TiB. The simulator's address windows (2 TiB
 *   for `cudaMalloc`-style allocations, 32 TiB of virtual space shared by every stream's segments)
 *   bound what it can model; 1 TiB is seven times the largest GPU's memory and fits every policy's
 *   reservations. Small capacities are fine: allocations that do not fit fail, and a run with
 *   failed allocations is an error unless `--count-ooms` is given (Note [Failed runs]).
 * - `--inject-faults`: a decimal probability in [0, 1] (`0.01`, `1`), not `0x1` or `1e-2`.
 * - Counts (`--repeat`, `--warmup`, `--rounds`, `--steps`, `--layers`, `--seed`): decimal
 *   integers within bounds that keep a run's work proportional to what was asked.
 * - `--config` and `GMLAKE_ALLOC_CONF`: Note [Allocator settings]; a key that applies to none of
 *   the chosen policies is refused rather than silently ignored.
 *
 * @since 0.1.0
 */
import { ByteSize, Option } from "effect"
import { Flag } from "effect/cli"
import { type PolicyName, policyNames } from "../domain/Allocator.ts"
import { policyFromString } from "../domain/policies/Policies.ts"
import { GiB, MiB } from "../domain/Units.ts"


/** The simulated device's granularity, and the unit every `--granularity` must be a multiple of. @category constants */
export const simGranularity = MiB(2)
/** The largest simulated device (Note [What the command line refuses]). @category constants */
export const maxSimCapacity = GiB(1024)
/** The largest simulated granule. @category constants */
export const maxSimGranularity = GiB(1)

/**
 * Parses a byte size: a plain number of bytes (`4096`) or a number with a unit (`512MiB`,
 * `80GiB`, `1.5GB`), by effect's `ByteSize`. `undefined` when it is not one.
 * @category parsing
 */
export const parseSize = (text: string): number | undefined => {
  const t = text.trim()
  const b = /^\d+$/.test(t) ? Option.some(ByteSize.bytes(BigInt(t))) : ByteSize.fromString(t)
  if (Option.isNone(b)) return undefined
  const n = ByteSize.toNumber(b.value)
  return Option.isSome(n) && Number.isSafeInteger(n.value) ? n.value : undefined
}

/** A decimal integer within [min, max], or `undefined`. @category parsing */
export const parseCount = (text: string, min: number, max: number): number | undefined => {
  if (!/^\d{1,16}$/.test(text.trim())) return undefined
  const n = Number(text.trim())
  return n >= min && n <= max ? n : undefined
}

const count = (name: string, min: number, max: number, description: string) =>
  Flag.String(name).pipe(
    Flag.withMetavar("N"),
    Flag.filterMap((t) => Option.fromUndefinedOr(parseCount(t, min, max)), () => `a whole number from ${min} to ${max}`),
    Flag.withDescription(description)
  )

/** `--json`. @category flags */
export const json = Flag.Boolean("json").pipe(
  Flag.withDescription("print JSON (one object per line) instead of tables"),
  Flag.withDefault(false)
)

/** `--policy a,b`: policies in the order given, without repeats. @category flags */
export const policies = Flag.String("policy").pipe(
  Flag.withMetavar("caching,expandable,gmlake"),
  Flag.filterMap(
    (text) => {
      const out: Array<PolicyName> = []
      for (const part of text.split(",")) {
        const name = policyFromString(part.trim())
        if (name === undefined) return Option.none()
        if (!out.includes(name)) out.push(name)
      }
      return Option.some(out as ReadonlyArray<PolicyName>)
    },
    () => `policies separated by commas (known: ${policyNames.join(", ")})`
  ),
  Flag.withDescription(
    "the policies to run, comma separated: caching (PyTorch's native allocator), expandable " +
      "(PyTorch's expandable_segments), gmlake (stitching); default: all three"
  ),
  Flag.withDefault(policyNames)
)

/** `--device sim|cuda`. @category flags */
export const device = Flag.Literals("device", ["sim", "cuda"]).pipe(
  Flag.withDescription("sim: the simulated device (default); cuda: GPU 0 through libcuda.so.1"),
  Flag.withDefault("sim" as const)
)

/** `--capacity SIZE` (simulated device). @category flags */
export const capacity = Flag.String("capacity").pipe(
  Flag.withMetavar("SIZE"),
  Flag.filterMap(
    (t) => {
      const n = parseSize(t)
      return n !== undefined && n > 0 && n <= maxSimCapacity ? Option.some(n) : Option.none()
    },
    (t) =>
      parseSize(t) === undefined
        ? "a size such as 16GiB, 512MiB or 4096 (bytes)"
        : "must be more than 0 and at most 1TiB, what the simulator can model"
  ),
  Flag.withDescription("simulated device memory (default 80GiB, at most 1TiB)"),
  Flag.optional
)

/** `--granularity SIZE` (simulated device). @category flags */
export const granularity = Flag.String("granularity").pipe(
  Flag.withMetavar("SIZE"),
  Flag.filterMap(
    (t) => {
      const n = parseSize(t)
      return n !== undefined && n > 0 && n % simGranularity === 0 && n <= maxSimGranularity ? Option.some(n) : Option.none()
    },
    () => "must be 2MiB (the device's granularity) or a multiple of it, at most 1GiB"
  ),
  Flag.withDescription("simulated VMM granularity: 2MiB (default) or a multiple of it"),
  Flag.optional
)

/** `--inject-faults P`. @category flags */
export const injectFaults = Flag.String("inject-faults").pipe(
  Flag.withMetavar("P"),
  Flag.filterMap(
    (t) => /^(?:0(?:\.\d{1,15})?|1(?:\.0{1,15})?|\.\d{1,15})$/.test(t.trim()) ? Option.some(Number(t.trim())) : Option.none(),
    () => "a decimal probability from 0 to 1, such as 0.01"
  ),
  Flag.withDescription("simulated device: the probability that a driver call which acquires something fails"),
  Flag.optional
)

/** `--event-latency N`. @category flags */
export const eventLatency = count(
  "event-latency",
  0,
  2 ** 30,
  "simulated device: trace events between an event's record and its completion (default 8; 0 is a device that keeps up, as a GPU replaying a trace does)"
).pipe(Flag.optional)

/** `--seed N`. @category flags */
export const seed = count("seed", 0, 2 ** 32 - 1, "seed of the simulated device's fault injector (with --inject-faults)").pipe(
  Flag.optional
)

/** `--config key:value,...` (Note [Allocator settings]). @category flags */
export const config = Flag.String("config").pipe(
  Flag.withMetavar("key:value,..."),
  Flag.withDescription(
    "allocator settings in PYTORCH_CUDA_ALLOC_CONF form, over those of GMLAKE_ALLOC_CONF; " +
      "e.g. max_split_size_mb:128 (caching, expandable) or reuse_limit:4 (gmlake)"
  ),
  Flag.optional
)

/** `--cross-stream on|off`. @category flags */
export const crossStream = Flag.Literals("cross-stream", ["on", "off"]).pipe(
  Flag.withDescription(
    "on: one pool for all streams, frees guarded by events (any policy); off: every stream keeps to its own " +
      "memory, gmlake's cross-stream adoption off too (default: gmlake adopts chunks other streams are done with)"
  ),
  Flag.optional
)

/** `--verify`. @category flags */
export const verify = Flag.Boolean("verify").pipe(
  Flag.withDescription(
    "check bytes: every block is written on its own stream at allocation and read back at its free, and its " +
      "freeing stream writes it last; memory handed across streams too early, or shared by two live blocks, " +
      "shows as wrong bytes (on cuda the device is synchronized before each check)"
  ),
  Flag.withDefault(false)
)

/** `--count-ooms`. @category flags */
export const countOoms = Flag.Boolean("count-ooms").pipe(
  Flag.withDescription(
    "a run whose allocations fail is an error (exit 3); with this, failed allocations are counted " +
      "and reported instead, and the utilization is marked as not a result"
  ),
  Flag.withDefault(false)
)

/** `--driver-levels FILE` (Note [Host levels] in `Latency.ts`). @category flags */
export const driverLevels = Flag.String("driver-levels").pipe(
  Flag.withMetavar("FILE"),
  Flag.withDescription(
    "cost the driver calls (driver ms) at this machine's levels, measured by gmlake calibrate --device cuda, " +
      "instead of the model's (an H200's)"
  ),
  Flag.optional
)

/** `--repeat N` with a default. @category flags */
export const repeat = (fallback: number, description: string) =>
  count("repeat", 1, 1000, description).pipe(Flag.withDefault(fallback))

/** `--warmup N` with a default. @category flags */
export const warmup = (fallback: number) =>
  count("warmup", 0, 1000, `untimed replays before the timed ones (default ${fallback})`).pipe(Flag.withDefault(fallback))

/**
 * `--warmup N` where its absence means as many untimed replays as make `WARM_EVENTS` events
 * (Note [Warm by events] in `ReplayCommand.ts`). @category flags
 */
export const warmupByEvents = count(
  "warmup",
  0,
  1000,
  "untimed replays before the timed ones (default: as many as make 1,000,000 events, from 5 to 60)"
).pipe(Flag.optional)

/** A bounded count with a default. @category flags */
export const countWithDefault = (name: string, min: number, max: number, fallback: number, description: string) =>
  count(name, min, max, `${description} (default ${fallback})`).pipe(Flag.withDefault(fallback))

/** `--device-index N`: which device's history of a PyTorch snapshot to read. @category flags */
export const deviceIndex = count(
  "device-index",
  0,
  1023,
  "for a PyTorch memory snapshot: the device whose history to read (default: the first that has any)"
).pipe(Flag.optional)

