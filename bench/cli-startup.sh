#!/bin/bash
# Wall time of one CLI call, five rounds side by side (run from the project root after npm ci):
#   a: npx gmlake (the bundled bin through npm)   b: node dist/gmlake.mjs (the bundle alone)
#   c: node src/bin.ts (the TypeScript sources)   d: npx gmlake --version   e: node dist/gmlake.mjs --version
# Each row is one round; take the median of each column. `uptime` says how loaded the machine was.
set -u
export PATH=$PWD/node_modules/.bin:$PATH
trace=${1:-traces/gpt2_fixed.json.gz}
t() { local s=$(date +%s.%N); "$@" >/dev/null 2>&1; echo "$(date +%s.%N) - $s" | bc; }
echo "npx-replay bundle-replay sources-replay npx-version bundle-version"
for i in 1 2 3 4 5; do
  echo "$(t npx gmlake replay "$trace" --policy gmlake) $(t node dist/gmlake.mjs replay "$trace" --policy gmlake)" \
    "$(t node src/bin.ts replay "$trace" --policy gmlake) $(t npx gmlake --version) $(t node dist/gmlake.mjs --version)"
done
uptime
