#!/bin/bash
# The two sides of the driver bill on the GPU (bench/results/2026-12-03-h200-frontier/; the simulated
# grid: bench/results/2026-12-03-settings-frontier.md): the
# default settings and the settings that trade memory for driver calls, each replayed the way
# bill-rounds.sh replays the default (traces interleaved in rounds, gmlake and expandable side by
# side), the settings passed in GMLAKE_ALLOC_CONF.
# From the project root, here: npm run bundle && bash <gpu-pack>/pack.sh dist/gpu/gmlake.mjs
#   device run, carry [".gpu"]:  bash .gpu/run.sh bash bench/gpu/frontier.sh "$OUT" [rounds]
#   and, in the same call, tar "$OUT" into one file: the device tool returns only a few files.
# Writes under $1: one folder per setting with bill-rounds.sh's files, and settings.txt.
set -u
out=${1:?output folder}
rounds=${2:-3}
mkdir -p "$out"
settings=(
  "default="
  "saving8=min_stitch_saving_bytes:8MiB"
  "lean256=max_chunk_bytes:256MiB,min_stitch_saving_bytes:8MiB,tail_chunk:False"
  "lean1g=max_chunk_bytes:1GiB,min_stitch_saving_bytes:16MiB"
)
: > "$out/settings.txt"
for s in "${settings[@]}"; do
  name=${s%%=*}
  conf=${s#*=}
  echo "$name ${conf:-(defaults)}" >> "$out/settings.txt"
  if [ -n "$conf" ]; then
    GMLAKE_ALLOC_CONF=$conf bash bench/gpu/bill-rounds.sh "$out/$name" "$rounds" > /dev/null
  else
    env -u GMLAKE_ALLOC_CONF bash bench/gpu/bill-rounds.sh "$out/$name" "$rounds" > /dev/null
  fi
  echo "## $name: ${conf:-(defaults)}"
  grep -A8 "^acceptance" "$out/$name/summary.md"
done
