#!/bin/bash
# The driver bill on the GPU (issue "the driver bill"), in one call of under three minutes:
# the calibration sweep of the driver-time model, then every bundled trace replayed with gmlake
# and expandable on the device (five rounds, the policies interleaved; the acceptance takes the medians of the warm runs), with wall time,
# driver time measured around every call and the model's driverMicros; a summary table.
# From the project root, here:
#   npm run bundle, then carry dist/gpu/gmlake.mjs (the command line in one file), dist/calibrate.mjs, a Node >= 22 binary and koffi as .gpu/
#   device run, carry [".gpu"]:  bash .gpu/run.sh bash bench/gpu/driver-bill.sh "$OUT"
# Writes under $1: bill.log, calibration.jsonl, levels.json (gmlake calibrate), replay-cuda.jsonl, summary.md, and the same for
# gmlake with min_stitch_saving_bytes:8MiB: replay-cuda-saving.jsonl, summary-saving.md.
set -u
out=${1:?output folder}
. bench/gpu/start.sh bill.log
echo "## calibration"
SECONDS=0
timeout 120 node .gpu/calibrate.mjs "$out/calibration.jsonl"; echo "exit $? after ${SECONDS}s"
tail -1 "$out/calibration.jsonl"
# This machine's levels (Note [Host levels]), measured on a synthetic workload, not on the traces below.
echo "## host levels (gmlake calibrate)"
SECONDS=0
timeout 120 node .gpu/gmlake.mjs calibrate --device cuda --out "$out/levels.json"; echo "exit $? after ${SECONDS}s"
levels=()
[ -s "$out/levels.json" ] && levels=(--driver-levels "$out/levels.json")
echo "## replays (gmlake, expandable; five rounds each, interleaved), driver time modelled at this machine's levels"
: > "$out/replay-cuda.jsonl"
for t in traces/*.json.gz; do
  SECONDS=0
  timeout 100 node .gpu/gmlake.mjs replay "$t" --policy gmlake,expandable --repeat 5 --device cuda --json ${levels[@]+"${levels[@]}"} >> "$out/replay-cuda.jsonl"
  echo "$t: exit $? after ${SECONDS}s"
done
echo "## summary"
node bench/gpu/bill-summary.ts "$out/replay-cuda.jsonl" "$out/levels.json" | tee "$out/summary.md"
# The other side of the trade-off (Note [Stitch saving]): gmlake set for fewer driver calls,
# interleaved with expandable in the same process as above.
echo "## gmlake with min_stitch_saving_bytes:8MiB, and expandable (five rounds each, interleaved)"
: > "$out/replay-cuda-saving.jsonl"
for t in traces/*.json.gz; do
  SECONDS=0
  timeout 100 node .gpu/gmlake.mjs replay "$t" --policy gmlake,expandable --config min_stitch_saving_bytes:8MiB --repeat 5 --device cuda --json ${levels[@]+"${levels[@]}"} >> "$out/replay-cuda-saving.jsonl"
  echo "$t: exit $? after ${SECONDS}s"
done
node bench/gpu/bill-summary.ts "$out/replay-cuda-saving.jsonl" "$out/levels.json" | tee "$out/summary-saving.md"
echo "## free device memory after everything, from a fresh process"
node .gpu/gmlake.mjs selftest --device cuda --json | head -c 300; echo
echo "## done"
