#!/bin/bash
# Wall time of one CLI call, ROUNDS rounds side by side (run from the project root after npm ci):
#   bench/cli-startup.sh [TRACE] [ROUNDS]        (default traces/gpt2_fixed.json.gz, 5)
# It packs this repository and installs the tarball into a new project (bench/ConsumerProject.ts),
# so `npx gmlake` is also timed the way a user runs it, from a project that installed the package.
# Columns (replay = `replay TRACE --policy gmlake`):
#   npx-root      npx gmlake replay, from this repository's root (npm's self-exec path, see README)
#   npx-user      npx gmlake replay, from the project that installed the package
#   bin-user      node_modules/.bin/gmlake replay, in that project (no npm)
#   bundle        node dist/gmlake.mjs replay (the bin, here)
#   sources       node src/bin.ts replay (the TypeScript sources)
#   npx-noop      npx noop in that project: npm's own cost of npx (a bin that does nothing)
#   bundle-ver    node dist/gmlake.mjs --version
#   node          node -e 0 (node's own start)
# BASELINE=path/to/an/older/gmlake.mjs adds two columns, base (its replay) and base-ver.
# Each row is one round; the last rows are the medians. `uptime` says how loaded the machine was.
set -eu
export PATH=$PWD/node_modules/.bin:$PATH
export npm_config_update_notifier=false
trace=$(realpath "${1:-traces/gpt2_fixed.json.gz}")
rounds=${2:-5}
user=$(mktemp -d "${TMPDIR:-/tmp}/gmlake-startup-XXXXXX")
trap 'rm -rf "$user"' EXIT
node bench/ConsumerProject.ts "$user" >/dev/null
printf '#!/bin/sh\nexit 0\n' >"$user/node_modules/.bin/noop"
chmod +x "$user/node_modules/.bin/noop"
# One call with each first: Node's compile cache (Note [Start-up] in src/bin.ts) is then warm, as
# it is for every call after a user's first.
(cd "$user" && npx gmlake --version >/dev/null)
node dist/gmlake.mjs --version >/dev/null
npx gmlake --version >/dev/null

replay=(replay "$trace" --policy gmlake)
t() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1 || echo "failed: $*" >&2; e=$(date +%s%N); echo "scale=3; ($e - $s) / 1000000000" | bc | sed 's/^\./0./'; }
in_user() { (cd "$user" && "$@"); }
columns="npx-root npx-user bin-user bundle sources npx-noop bundle-ver node"
[ -n "${BASELINE:-}" ] && columns="$columns base base-ver"
echo "$columns"
rows=()
for ((i = 0; i < rounds; i++)); do
  row="$(t npx gmlake "${replay[@]}") $(t in_user npx gmlake "${replay[@]}") $(t "$user/node_modules/.bin/gmlake" "${replay[@]}")"
  row="$row $(t node dist/gmlake.mjs "${replay[@]}") $(t node src/bin.ts "${replay[@]}") $(t in_user npx noop)"
  row="$row $(t node dist/gmlake.mjs --version) $(t node -e 0)"
  [ -n "${BASELINE:-}" ] && row="$row $(t node "$BASELINE" "${replay[@]}") $(t node "$BASELINE" --version)"
  echo "$row"
  rows+=("$row")
done
printf '%s\n' "${rows[@]}" | node -e '
  const rows = require("node:fs").readFileSync(0, "utf8").trim().split("\n").map((r) => r.split(" ").map(Number))
  const median = (xs) => xs.sort((a, b) => a - b)[(xs.length - 1) >> 1]
  console.log("median " + rows[0].map((_, c) => median(rows.map((r) => r[c])).toFixed(3)).join(" "))'
echo "node $(node --version), npm $(npm --version), $(nproc) cores; $(uptime)"
