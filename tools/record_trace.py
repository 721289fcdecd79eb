#!/usr/bin/env python3
"""Record a PyTorch job's GPU memory allocations for gmlake (see docs/recording.md).

    python tools/record_trace.py --out run.pickle [options] -- train.py [its arguments]
    python tools/record_trace.py --out run.pickle [options] -m package.module [its arguments]

Runs the job in this process with PyTorch's allocator history on
(torch.cuda.memory._record_memory_history), and when it ends (normally, by an exception or
by sys.exit) writes:

- the memory snapshot (`--out`, the file pytorch.org/memory_viz reads), with PyTorch's own
  figures for the run added under the key "gmlake": torch.cuda.memory_stats() of every device
  (peak requested, reserved and allocated bytes, device allocations), the device names and the
  torch version. gmlake reads them as the run's anchors: `gmlake replay run.pickle` compares
  each policy with what PyTorch itself reserved;
- with `--trace run.json.gz`, the same history as a gmlake-trace/1 file (what
  `gmlake convert run.pickle --out run.json.gz` writes; the rules are those of
  src/trace/Snapshot.ts, Note [Snapshot import]).

Only torch and the standard library are needed. Record from an empty allocator: start the
recorder before the job allocates anything on the GPU (it does, when it wraps the job), so that
the history is whole.
"""
import argparse
import gzip
import json
import os
import pickle
import runpy
import sys

STAT_KEYS = (
    "requested_bytes.all.peak",
    "reserved_bytes.all.peak",
    "allocated_bytes.all.peak",
    "active_bytes.all.peak",
    "num_device_alloc",
    "num_device_free",
    "num_ooms",
    "num_alloc_retries",
)

SEGMENT_KIND = {"segment_alloc": "S", "segment_free": "s", "segment_map": "M", "segment_unmap": "m"}


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="record_trace.py",
        description="Run a PyTorch job with allocator history on; write its memory snapshot (and a gmlake trace).",
    )
    p.add_argument("--out", required=True, help="the snapshot to write (a pickle, as torch.cuda.memory._dump_snapshot writes)")
    p.add_argument("--trace", help="also write the history as gmlake-trace/1 here (gzip if it ends in .gz)")
    p.add_argument("--device", type=int, default=None, help="the device whose history --trace holds (default: the first with any)")
    p.add_argument("--max-entries", type=int, default=10_000_000, help="history entries kept per device (default 10,000,000)")
    p.add_argument("--stacks", action="store_true", help="keep Python and C++ stacks with each event (for memory_viz; much larger files)")
    p.add_argument("-m", dest="module", help="run a module, as python -m does")
    p.add_argument("job", nargs=argparse.REMAINDER, help="the script and its arguments (after --)")
    a = p.parse_args(argv)
    job = a.job[1:] if a.job[:1] == ["--"] else a.job
    if a.module is None and not job:
        p.error("give the job to run: -- script.py [args] or -m module [args]")
    return a, job


def stats(torch):
    out, names = {}, {}
    for d in range(torch.cuda.device_count()):
        s = torch.cuda.memory_stats(d)
        out[str(d)] = {k: int(s[k]) for k in STAT_KEYS if k in s}
        names[str(d)] = torch.cuda.get_device_name(d)
    return out, names


def to_trace(snapshot, name, device=None):
    """The history of one device as a gmlake-trace/1 document (Note [Snapshot import])."""
    traces = snapshot.get("device_traces") or []
    devices = [i for i, t in enumerate(traces) if t]
    if not devices:
        raise SystemExit("record_trace.py: the snapshot has no trace history")
    device = devices[0] if device is None else device
    if device not in devices:
        raise SystemExit(f"record_trace.py: device {device} has no history (devices with history: {devices})")
    entries = traces[device]
    seen, before = set(), []
    for e in entries:
        if e["action"] == "alloc":
            seen.add(e["addr"])
        elif e["action"] == "free_requested":
            if e["addr"] not in seen:
                before.append(e)
            seen.discard(e["addr"])
    streams, events, live, awaiting = {}, [], {}, {}

    def stream(raw):
        return streams.setdefault(raw, len(streams))

    next_id = [0]

    def alloc(addr, size, raw):
        i = next_id[0]
        next_id[0] += 1
        s = stream(raw)
        events.append(["a", i, size] + ([s] if s else []))
        live[addr] = i

    for e in before:
        alloc(e["addr"], e["size"], e.get("stream", 0))
    last_freed = None
    for e in entries:
        action, addr, freed = e["action"], e.get("addr"), None
        if action == "alloc":
            awaiting.pop(addr, None)
            alloc(addr, e["size"], e.get("stream", 0))
        elif action == "free_requested" and addr in live:
            i = live.pop(addr)
            events.append(["f", i])
            awaiting[addr] = i
            freed = addr
        elif action == "free_completed" and addr in awaiting:
            i = awaiting.pop(addr)
            if last_freed != addr:
                events.append(["F", i])
        elif action in SEGMENT_KIND:
            events.append([SEGMENT_KIND[action], e["size"]])
        last_freed = freed
    g = snapshot.get("gmlake", {})
    doc = {
        "format": "gmlake-trace/1",
        "workload": name,
        "description": f"recorded by tools/record_trace.py (device {device})",
        "source": {"framework": f"torch {g.get('torch', '?')}", "device": g.get("device_names", {}).get(str(device), "?")},
    }
    s = g.get("memory_stats", {}).get(str(device))
    if s and "requested_bytes.all.peak" in s and "reserved_bytes.all.peak" in s:
        anchor = {"peakRequested": s["requested_bytes.all.peak"], "peakReserved": s["reserved_bytes.all.peak"]}
        if "allocated_bytes.all.peak" in s:
            anchor["peakAllocated"] = s["allocated_bytes.all.peak"]
        if "num_device_alloc" in s:
            anchor["deviceAllocs"] = s["num_device_alloc"]
        expandable = (snapshot.get("allocator_settings") or {}).get("expandable_segments", False)
        doc["pytorch"] = {"expandable_segments" if expandable else "native": anchor}
    doc["events"] = events
    return doc


def main(argv):
    a, job = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("record_trace.py: no CUDA device visible to PyTorch")
    torch.cuda.memory._record_memory_history(
        max_entries=a.max_entries,
        context="all" if a.stacks else None,
        stacks="all" if a.stacks else "python",
    )
    status = 0
    try:
        if a.module is not None:
            sys.argv = [a.module] + job
            runpy.run_module(a.module, run_name="__main__", alter_sys=True)
        else:
            sys.argv = job
            sys.path.insert(0, os.path.dirname(os.path.abspath(job[0])))
            runpy.run_path(job[0], run_name="__main__")
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        torch.cuda.synchronize()
        snapshot = torch.cuda.memory._snapshot()
        memory_stats, names = stats(torch)
        snapshot["gmlake"] = {"memory_stats": memory_stats, "device_names": names, "torch": torch.__version__}
        torch.cuda.memory._record_memory_history(enabled=None)
        with open(a.out, "wb") as f:
            pickle.dump(snapshot, f, protocol=4)
        print(f"record_trace.py: wrote {a.out}", file=sys.stderr)
        if a.trace:
            name = os.path.basename(a.trace).split(".")[0]
            doc = json.dumps(to_trace(snapshot, name, a.device), separators=(",", ":"))
            opener = gzip.open if a.trace.endswith(".gz") else open
            with opener(a.trace, "wt") as f:
                f.write(doc)
            print(f"record_trace.py: wrote {a.trace}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
