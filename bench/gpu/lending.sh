#!/bin/bash
# Cross-stream lending on the GPU (Note [Cross-stream lending]): gpt2_streams and three synthetic
# multi-stream traces replayed on the device with adoption (the default), lending, and one move then lending, each with
# the cross-stream byte check (--verify), then without it for the timing (--repeat 3), and on the
# simulator at event latency 0 for the same decisions.
# From the project root, on a machine with npm:
#   npm run bundle && bash <gpu-pack>/pack.sh dist/gpu/gmlake.mjs
#   then on the GPU machine (carry .gpu): bash .gpu/run.sh bash bench/gpu/lending.sh "$OUT"
#   and, in the same call, tar "$OUT" into one file: the device tool returns only a few files.
set -u
out=${1:?output folder}
. bench/gpu/start.sh run.log
for s in 1 4 5; do g generate --seed $s --steps 30 --out "$out/s$s-30.json.gz"; done
for t in traces/gpt2_streams.json.gz "$out"/s1-30.json.gz "$out"/s4-30.json.gz "$out"/s5-30.json.gz; do
  n=$(basename "$t" .json.gz)
  for mode in adoption lending move1; do
    cfg=()
    [ $mode = lending ] && cfg=(--config cross_stream_lending:True)
    [ $mode = move1 ] && cfg=(--config cross_stream_lending:True,cross_stream_moves:1)
    echo "## $n $mode"
    g replay "$t" --policy gmlake --device cuda --verify --json "${cfg[@]}" > "$out/$n-$mode-verify.json"; echo "verify exit $?"
    g replay "$t" --policy gmlake --device cuda --repeat 3 --json "${cfg[@]}" > "$out/$n-$mode-cuda.json"; echo "cuda exit $?"
    g replay "$t" --policy gmlake --event-latency 0 --json "${cfg[@]}" > "$out/$n-$mode-sim.json"; echo "sim exit $?"
  done
done
node -e '
  const fs = require("fs"), path = require("path")
  const rd = (f) => fs.readFileSync(f, "utf8").trim().split("\n").filter(Boolean).map((l) => JSON.parse(l))
  const half = (r) => r.timeline.slice(Math.floor(r.timeline.length / 2)).reduce((a, s) => a + s.driverCalls, 0)
  const med = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)]
  console.log("| trace | mode | verified | util | driver calls | second half | cuda peak = sim peak | replay ms (median of 3) |")
  console.log("| --- | --- | --- | --- | --- | --- | --- | --- |")
  const dir = process.argv[1]
  for (const n of ["gpt2_streams", "s1-30", "s4-30", "s5-30"]) for (const m of ["adoption", "lending", "move1"]) {
    const p = (k) => path.join(dir, n + "-" + m + "-" + k + ".json")
    try {
      const v = rd(p("verify"))[0], c = rd(p("cuda")), s = rd(p("sim"))[0]
      console.log("| " + [n, m, JSON.stringify(v.verified), c[0].utilization.toFixed(4), c[0].driverCallsTotal, half(c[0]),
        c[0].peakReserved === s.peakReserved ? "yes" : "NO", med(c.map((r) => r.replayMs)).toFixed(1)].join(" | ") + " |")
    } catch (e) { console.log("| " + n + " | " + m + " | missing: " + e.message + " |") }
  }
' "$out" | tee "$out/summary.md"
