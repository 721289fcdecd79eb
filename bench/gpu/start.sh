# The start every GPU script shares; source it with the log's name once `out` is set:
#   . bench/gpu/start.sh run.log
# It makes $out, sends all the script prints to the console and to $out/<log>, heads the log with
# the time, the machine, the revision and the GPU, and defines g, the bundled command line.
mkdir -p "$out"
exec > >(tee "$out/$1") 2>&1
echo "# $(date -u +%FT%TZ) $(uname -n) $(git rev-parse --short HEAD 2>/dev/null)"
nvidia-smi -i 0 --query-gpu=name,driver_version,memory.total,memory.used,memory.free --format=csv
g() { node .gpu/gmlake.mjs "$@"; }
