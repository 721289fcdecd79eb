import { describe, expect, it } from "@effect/vitest"
import { Effect, Result } from "effect"
import { spawnSync } from "node:child_process"
import { readFileSync } from "node:fs"
import { gzipSync } from "node:zlib"
import { policyNames } from "../../src/domain/Allocator.ts"
import { replaySim } from "../../src/replay/ReplayRunner.ts"
import { loadTrace, parseTraceBytes } from "../../src/trace/File.ts"
import { Op } from "../../src/trace/Trace.ts"
import { pickle } from "./pickle.ts"

const FIXTURE = "test/fixtures/gpt2_small.snapshot.pickle"
// What PyTorch's memory_stats() reported for the fixture's run (test/fixtures/README.md).
const PYTORCH_PEAK_RESERVED = 897_581_056
const PYTORCH_PEAK_REQUESTED = 762_361_960

const error = (data: Uint8Array, file = "x.pickle", options = {}) => {
  const r = parseTraceBytes(file, data, options)
  if (Result.isSuccess(r)) throw new Error("expected a TraceError")
  return r.failure
}

const entry = (action: string, addr: number, size: number, stream = 0) => ({
  action,
  addr,
  size,
  stream,
  time_us: 0,
  frames: []
})

describe("PyTorch memory snapshots", () => {
  it.effect("reads the fixture: every action of its one device, in order", () =>
    Effect.gen(function*() {
      const t = yield* loadTrace(FIXTURE)
      expect(t.allocs).toBe(1639)
      let allocs = 0
      let frees = 0
      let completes = 0
      for (let i = 0; i < t.length; i++) {
        if (t.op[i] === Op.alloc) allocs++
        else if (t.op[i] === Op.free) frees++
        else completes++
      }
      // One stream: every free_completed follows its free_requested at once, so no `F`.
      expect([allocs, frees, completes]).toEqual([1639, 1636, 0])
      expect(t.streams).toBe(1)
      expect(t.recorded.filter((r) => r.kind === "S").length).toBe(60)
      // The recorded segments are whole, so their running sum is PyTorch's peak reserved.
      expect(t.native?.peakReserved).toBe(PYTORCH_PEAK_RESERVED)
      expect(t.native?.peakRequested).toBe(PYTORCH_PEAK_REQUESTED)
      expect(t.workload).toBe("gpt2_small.snapshot")
    }))

  it.effect("the caching baseline reproduces PyTorch's peak reserved to the byte; every policy replays it", () =>
    Effect.gen(function*() {
      const t = yield* loadTrace(FIXTURE)
      for (const policy of policyNames) {
        const r = yield* replaySim(t, policy)
        expect(r.ooms).toBe(0)
        expect(r.peakRequested).toBe(PYTORCH_PEAK_REQUESTED)
        if (policy === "caching") expect(r.peakReserved).toBe(PYTORCH_PEAK_RESERVED)
        expect(r.peakReserved).toBeGreaterThanOrEqual(r.peakRequested)
      }
    }), 60_000)

  it("reads a gzipped snapshot alike", () => {
    const raw = readFileSync(FIXTURE)
    const a = Result.getOrThrow(parseTraceBytes("s.pickle", raw))
    const b = Result.getOrThrow(parseTraceBytes("s.pickle.gz", gzipSync(raw)))
    expect(b.length).toBe(a.length)
    expect([...b.size]).toEqual([...a.size])
  })

  it("turns cross-stream frees into f ... F, renumbers streams, and selects a device", () => {
    const snap = {
      segments: [],
      device_traces: [
        [],
        [
          entry("segment_alloc", 1000, 4096, 7777),
          entry("alloc", 1000, 512, 7777),
          entry("alloc", 2000, 1024, 0),
          entry("free_requested", 1000, 512, 7777),
          entry("alloc", 3000, 64, 0),
          entry("free_completed", 1000, 512, 7777),
          entry("free_requested", 2000, 1024, 0),
          entry("free_completed", 2000, 1024, 0),
          entry("alloc", 1000, 256, 7777),
          entry("oom", 0, 99999999, 0)
        ]
      ],
      allocator_settings: { expandable_segments: false }
    }
    const t = Result.getOrThrow(parseTraceBytes("multi.pickle", pickle(snap)))
    expect([...t.op]).toEqual([Op.alloc, Op.alloc, Op.free, Op.alloc, Op.complete, Op.free, Op.alloc])
    expect([...t.stream]).toEqual([0, 1, 0, 1, 0, 1, 0])
    expect([...t.size]).toEqual([512, 1024, 0, 64, 0, 0, 256])
    expect([...t.deferred]).toEqual([1, 0, 0, 0])
    expect(t.recorded).toEqual([{ kind: "S", bytes: 4096, before: 0 }])
    // The snapshot's segments (none) do not add up to what was recorded: no anchor.
    expect(t.native).toBeUndefined()
    expect(error(pickle(snap), "multi.pickle", { deviceIndex: 0 }).message)
      .toBe("multi.pickle: device 0 has no trace history in this snapshot (devices with history: 1)")
  })

  it("places allocations made before recording started at the start", () => {
    const snap = {
      segments: [],
      device_traces: [[entry("free_requested", 50, 300), entry("free_completed", 50, 300), entry("alloc", 60, 10)]]
    }
    const t = Result.getOrThrow(parseTraceBytes("late.pickle", pickle(snap)))
    expect([...t.op]).toEqual([Op.alloc, Op.free, Op.alloc])
    expect([...t.size]).toEqual([300, 0, 10])
    expect(t.description).toContain("1 allocation(s) made before recording started")
  })

  it("refuses a negative size where it would become an allocation's or a segment's (fuzz: a damaged byte made one)", () => {
    const early = { segments: [], device_traces: [[entry("free_requested", 50, -4096), entry("alloc", 60, 10)]] }
    expect(error(pickle(early)).message).toBe('x.pickle: event 0: "free_requested" needs a size of at least 0, got -4096')
    const segment = { segments: [], device_traces: [[entry("alloc", 60, 10), entry("segment_alloc", 0, -4096)]] }
    expect(error(pickle(segment)).message).toBe('x.pickle: event 1: "segment_alloc" needs a size of at least 0, got -4096')
    const alloc = { segments: [], device_traces: [[entry("alloc", 60, -10)]] }
    expect(error(pickle(alloc)).message).toMatch(/^x\.pickle: event 0: "alloc" needs an address and a size/)
  })

  it("names a pickle that is not a snapshot, or has no history, or is cut short", () => {
    expect(error(pickle([1, 2, 3])).message)
      .toMatch(/^x\.pickle: a pickle, but not a PyTorch memory snapshot/)
    expect(error(pickle({ segments: [], device_traces: [[], []] })).message)
      .toMatch(/^x\.pickle: a memory snapshot recorded without trace history: call torch\.cuda\.memory\._record_memory_history\(\)/)
    expect(error(pickle({ segments: [] })).reason).toBe("no-history")
    const whole = readFileSync(FIXTURE)
    const cut = error(whole.subarray(0, whole.length >> 1))
    expect(cut.reason).toBe("truncated")
    expect(cut.message).toMatch(/^x\.pickle: truncated/)
  })
})

describe("the recorder's snapshots", () => {
  it("uses PyTorch's own peaks stored by tools/record_trace.py, for the device read", () => {
    const snap = {
      segments: [],
      device_traces: [[entry("alloc", 1, 100)], [entry("alloc", 1, 100)]],
      allocator_settings: { expandable_segments: true },
      gmlake: {
        memory_stats: {
          "1": { "requested_bytes.all.peak": 100, "reserved_bytes.all.peak": 2097152, "num_device_alloc": 1, "allocated_bytes.all.peak": 512 }
        },
        torch: "2.11.0"
      }
    }
    const t = Result.getOrThrow(parseTraceBytes("rec.pickle", pickle(snap, 4), { deviceIndex: 1 }))
    expect(t.expandable).toEqual({ peakRequested: 100, peakReserved: 2097152, peakAllocated: 512, deviceAllocs: 1, utilization: 100 / 2097152 })
    expect(t.native).toBeUndefined()
    expect(Result.getOrThrow(parseTraceBytes("rec.pickle", pickle(snap, 4))).expandable).toBeUndefined()
  })

  const python = spawnSync("python3", ["--version"]).status === 0
  it.skipIf(!python)("its converter (tools/record_trace.py --trace) writes what gmlake convert reads from the same snapshot", () => {
    const r = spawnSync("python3", ["-c", [
      "import sys, json, pickle",
      "sys.path.insert(0, 'tools')",
      "import record_trace",
      `print(json.dumps(record_trace.to_trace(pickle.load(open('${FIXTURE}', 'rb')), 'gpt2_small.snapshot')))`
    ].join("\n")], { encoding: "utf8", maxBuffer: 1 << 28 })
    expect(r.stderr).toBe("")
    const fromPython = Result.getOrThrow(parseTraceBytes("py.json", new TextEncoder().encode(r.stdout)))
    const direct = Result.getOrThrow(parseTraceBytes(FIXTURE, readFileSync(FIXTURE)))
    for (const k of ["op", "id", "size", "stream", "deferred"] as const) expect([...fromPython[k]]).toEqual([...direct[k]])
    expect(fromPython.recorded).toEqual(direct.recorded)
  })
})
