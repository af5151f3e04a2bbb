#!/usr/bin/env bash
# Runs every libFuzzer target for RUNS executions (default 10 million) on its seed corpus and
# prints one line per target: executions, wall time, exec/s, and libFuzzer's final coverage
# (`cov`: edges covered, `ft`: features) and corpus size. For developers, not CI (CI runs each
# target for a bounded time: .ci/run). Builds the targets first (fuzz/run.sh build, clang >= 16).
#
#   bench/fuzz.sh [RUNS] [TARGET...]
# Logs: build-fuzz/<target>.bench.log. New corpus entries go to build-fuzz/corpus/<target>.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10000000}
shift || true
build_dir=${FUZZ_BUILD_DIR:-build-fuzz}
./fuzz/run.sh build >/dev/null
if (($#)); then
  targets=("$@")
else
  mapfile -t targets < <(./fuzz/run.sh list)
fi

printf '%-26s %10s %7s %9s %7s %7s %s\n' target execs seconds exec/s cov ft corpus
status=0
for t in "${targets[@]}"; do
  log=$build_dir/$t.bench.log
  start=$(date +%s.%N)
  if ! ./fuzz/run.sh run "$t" -runs="$runs" >"$log" 2>&1; then
    echo "$t: FAILED (see $log)"
    status=1
    continue
  fi
  end=$(date +%s.%N)
  # "#10000000<TAB>DONE   cov: 812 ft: 2905 corp: 310/19Kb lim: 4096 exec/s: 52631 rss: 61Mb"
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
  execs=$(sed -E 's/^#([0-9]+).*/\1/' <<<"$done_line")
  cov=$(sed -E 's/.* cov: ([0-9]+).*/\1/' <<<"$done_line")
  ft=$(sed -E 's/.* ft: ([0-9]+).*/\1/' <<<"$done_line")
  corp=$(sed -E 's/.* corp: ([^ ]+).*/\1/' <<<"$done_line")
  seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", b - a }')
  rate=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+)/\1/p' "$log")
  printf '%-26s %10s %7s %9s %7s %7s %s\n' "$t" "$execs" "$seconds" "$rate" "$cov" "$ft" "$corp"
done
echo "($(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end)"
exit $status
