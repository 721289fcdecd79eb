#!/bin/bash
# The driver bill on the GPU with the traces interleaved (Note [Host levels]): `driver-bill.sh` replays
# one trace after another, and the H200 ran the first or the last trace of a run up to a third
# faster than the others, which is the size of the model's 25% goal. Here each round replays every
# trace once (gmlake and expandable, three times each, interleaved, in one process; the first of
# each policy in a process is dropped as cold), and the rounds repeat, so that each trace's medians
# are taken over the whole run's time and the leave-one-out levels are fitted on traces measured
# over the same span.
# From the project root, here: npm run bundle && bash <gpu-pack>/pack.sh dist/gpu/gmlake.mjs
#   device run, carry [".gpu"]:  bash .gpu/run.sh bash bench/gpu/bill-rounds.sh "$OUT" [rounds]
#   and, in the same call, tar "$OUT" into one file: the device tool returns only a few files.
# Writes under $1: rounds.log, levels.json, replay-cuda.jsonl (warm runs only), summary.md.
set -u
out=${1:?output folder}
rounds=${2:-5}
. bench/gpu/start.sh rounds.log
SECONDS=0
timeout 120 node .gpu/gmlake.mjs calibrate --device cuda --out "$out/levels.json"; echo "calibrate exit $? after ${SECONDS}s"
levels=()
[ -s "$out/levels.json" ] && levels=(--driver-levels "$out/levels.json")
: > "$out/replay-cuda.jsonl"
for r in $(seq 1 "$rounds"); do
  for t in traces/*.json.gz; do
    SECONDS=0
    # keep a policy's runs after its first in this process (the first pays for compiling the replay loop)
    timeout 100 node .gpu/gmlake.mjs replay "$t" --policy gmlake,expandable --repeat 3 --device cuda --json ${levels[@]+"${levels[@]}"} |
      node -e '
        const seen = new Set()
        for (const l of require("fs").readFileSync(0, "utf8").split("\n")) {
          if (!l.startsWith("{")) continue
          const p = JSON.parse(l).policy
          if (seen.has(p)) console.log(l)
          seen.add(p)
        }' >> "$out/replay-cuda.jsonl"
    echo "round $r $t: exit ${PIPESTATUS[0]} after ${SECONDS}s"
  done
done
node bench/gpu/bill-summary.ts "$out/replay-cuda.jsonl" "$out/levels.json" > "$out/summary.md"
grep -A20 "^acceptance" "$out/summary.md"
echo "## done after ${SECONDS}s of the last step"
