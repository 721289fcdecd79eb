#!/bin/bash
# Everything the GPU acceptance needs, in one call on the GPU machine (see ../shared/gpu/README.md).
# From the project root, after `npm run bundle` and `bash ../shared/gpu/pack.sh dist/gmlake.mjs dist/probe.mjs`:
#   device run, carry [".gpu"]:  bash .gpu/run.sh bash bench/gpu/run-all.sh "$OUT"
# Writes at most 8 files under $1.
set -u
out=${1:?output folder}
g() { node .gpu/gmlake.mjs "$@"; }
log=$out/run.log
exec > >(tee "$log") 2>&1
echo "# $(date -u +%FT%TZ) $(uname -n)"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv
echo "## selftest"
g selftest --device cuda; echo "exit $?"
g selftest --device cuda --json > "$out/selftest.json"; echo "exit $?"
echo "## probe"
node .gpu/probe.mjs > "$out/probe.json"; echo "exit $?"
echo "## replays on the GPU (gmlake, caching) and on the simulator"
: > "$out/replay-cuda.jsonl"; : > "$out/replay-sim.jsonl"
for t in traces/*.json.gz; do
  g replay "$t" --policy gmlake,caching --device cuda --json | tee -a "$out/replay-cuda.jsonl"; echo "exit $?"
  g replay "$t" --policy gmlake,caching --json >> "$out/replay-sim.jsonl"; echo "exit $?"
done
echo "## interrupted replay (SIGINT after 4 s)"
timeout --preserve-status -s INT 4 node .gpu/gmlake.mjs replay traces/llama1b_lora_varlen.json.gz --policy gmlake,caching --repeat 1000 --device cuda > /dev/null
echo "exit $? (130 = interrupted)"
echo "## free device memory after the interrupted process, from a fresh one"
g selftest --device cuda --json | head -c 300; echo
echo "## streams on the GPU"
g streams --device cuda --json > "$out/streams.json"; echo "exit $?"
cat "$out/streams.json"
echo "## done"
