#!/bin/bash
# Every GPU acceptance check of this round, in one call on the GPU machine (under ten minutes).
# From the project root, on a machine with npm:
#   npm run bundle && bash <gpu-pack>/pack.sh dist/gpu/gmlake.mjs dist/calibrate.mjs   (dist/gpu/gmlake.mjs: the command line in one file)
#   then on the GPU machine, from the project root (carry .gpu):
#   bash .gpu/run.sh bash bench/gpu/run-all.sh "$OUT"
# Writes under $1: run.log and results.tgz holding selftest.json, streams.json, verify-*.json, snapshot-cuda.json,
# bill/ (driver-bill.sh: calibration, every trace with gmlake and expandable, summary.md),
# oversize/ (oversize.sh: the 1 TB request with nvidia-smi sampling).
set -u
out=${1:?output folder}
. bench/gpu/start.sh run.log
SECONDS=0
echo "## selftest"
g selftest --device cuda; echo "exit $?"
g selftest --device cuda --json > "$out/selftest.json"; echo "exit $?"
echo "## streams (two streams, memory reused across them, byte for byte)"
g streams --device cuda --json > "$out/streams.json"; echo "exit $?"; head -c 600 "$out/streams.json"; echo
echo "## gpt2_streams on the GPU with the cross-stream byte check, and on the simulator"
g replay traces/gpt2_streams.json.gz --policy gmlake,expandable,caching --device cuda --verify --json > "$out/verify-cuda.json"; echo "exit $?"
# a GPU replaying a trace keeps up with it: compare with a simulated device whose events complete at once
g replay traces/gpt2_streams.json.gz --policy gmlake,expandable,caching --event-latency 0 --json > "$out/verify-sim.json"; echo "exit $?"
node -e '
  const rd = (f) => require("fs").readFileSync(f, "utf8").trim().split("\n").filter(Boolean).map((l) => JSON.parse(l))
  const c = rd(process.argv[1]), s = rd(process.argv[2])
  for (const r of c) {
    const m = s.find((x) => x.policy === r.policy)
    console.log(r.policy, "cuda peakReserved", r.peakReserved, "sim", m && m.peakReserved, r.peakReserved === (m && m.peakReserved) ? "SAME" : "DIFFERENT", "verify", JSON.stringify(r.verified ?? null))
  }
' "$out/verify-cuda.json" "$out/verify-sim.json"
echo "## the PyTorch snapshot fixture on the GPU"
g replay test/fixtures/gpt2_small.snapshot.pickle --policy caching,expandable,gmlake --device cuda --json > "$out/snapshot-cuda.json"; echo "exit $?"
echo "## interrupted replay (SIGINT after 3 s), then free memory from a fresh process"
timeout --preserve-status -s INT 3 node .gpu/gmlake.mjs replay traces/llama1b_lora_varlen.json.gz --policy gmlake --repeat 1000 --device cuda > /dev/null
echo "exit $? (130 = interrupted)"
nvidia-smi --query-gpu=memory.used,memory.free --format=csv
echo "## after ${SECONDS}s: oversize"
bash bench/gpu/oversize.sh "$out/oversize" > /dev/null 2>&1; echo "exit $?"; cat "$out/oversize/summary.txt" 2>/dev/null
echo "## after ${SECONDS}s: driver bill"
bash bench/gpu/driver-bill.sh "$out/bill" > /dev/null 2>&1; echo "exit $?"; cat "$out/bill/summary.md" 2>/dev/null
echo "## free device memory at the end"
nvidia-smi --query-gpu=memory.used,memory.free --format=csv
echo "## done after ${SECONDS}s"
# The device tool brings back only a few files: everything but run.log travels as one archive.
(cd "$out" && tar czf /tmp/results.tgz --exclude=run.log . && find . -mindepth 1 ! -name run.log -delete && mv /tmp/results.tgz .)
