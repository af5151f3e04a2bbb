#!/usr/bin/env bash
# Builds and runs the libFuzzer targets (fuzz/CMakeLists.txt).
#   fuzz/run.sh build            configure build-fuzz with clang >= 16 and build every target
#   fuzz/run.sh ci [SECONDS]     build, then run each target SECONDS (default 30) on its seed
#                                corpus fuzz/corpus/<target>; exit 1 on any crash, leak,
#                                sanitizer report, timeout or out-of-memory
#   fuzz/run.sh list             the targets, one a line
# New inputs go to build-fuzz/corpus/<target> (the committed seeds are only read); crash inputs
# to build-fuzz/artifacts/. Reproduce one with: build-fuzz/fuzz/<target> <crash file>.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${FUZZ_BUILD_DIR:-build-fuzz}
# Symbolized stacks in crash reports (Debian's llvm-16 puts the symbolizer outside PATH).
for s in /usr/lib/llvm-*/bin/llvm-symbolizer; do
  [[ -x $s ]] && export ASAN_SYMBOLIZER_PATH=${ASAN_SYMBOLIZER_PATH:-$s}
done

targets() {
  for f in fuzz/*_fuzzer.cpp; do
    basename "$f" .cpp
  done
}

find_clang() {
  for v in "" -19 -18 -17 -16; do
    if command -v "clang++$v" >/dev/null; then
      local major
      major=$("clang++$v" -dumpversion | cut -d. -f1)
      if ((major >= 16)); then
        echo "$v"
        return
      fi
    fi
  done
  echo "fuzz/run.sh: no clang >= 16 (Debian 12: apt-get install clang-16 libclang-rt-16-dev)" >&2
  exit 1
}

build() {
  local v
  v=$(find_clang)
  if [[ ! -f $build_dir/build.ninja ]]; then
    CC=clang$v CXX=clang++$v cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DIOP_BUILD_TESTS=OFF -DIOP_BUILD_BENCH=OFF >/dev/null
  fi
  # Only the fuzzers: the rest of the project is not built with clang.
  cmake --build "$build_dir" -j "$(nproc)" --target fuzzers
}

# run TARGET ARGS...: the target on its seed corpus with its dictionary, if any.
run() {
  local t=$1
  shift
  local out=$build_dir/corpus/$t
  mkdir -p "$out" "$build_dir/artifacts"
  local dict=()
  [[ -f fuzz/dict/$t.dict ]] && dict=(-dict="fuzz/dict/$t.dict")
  "$build_dir/fuzz/$t" "${dict[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$build_dir/artifacts/$t-" "$@" "$out" "fuzz/corpus/$t"
}

case ${1:-} in
  build)
    build
    ;;
  list)
    targets
    ;;
  ci)
    seconds=${2:-30}
    build
    failed=()
    for t in $(targets); do
      start=$SECONDS
      if run "$t" -max_total_time="$seconds" >"$build_dir/$t.log" 2>&1; then
        echo "fuzz: $t ok ($((SECONDS - start)) s): $(grep -E '^#[0-9]+[[:space:]]+DONE' "$build_dir/$t.log" | tail -1)"
      else
        echo "fuzz: $t FAILED, log follows (crash input in $build_dir/artifacts/)"
        tail -60 "$build_dir/$t.log"
        failed+=("$t")
      fi
    done
    if ((${#failed[@]})); then
      echo "fuzz: failed: ${failed[*]}"
      exit 1
    fi
    ;;
  run)
    shift
    run "$@"
    ;;
  *)
    echo "usage: fuzz/run.sh build | ci [SECONDS] | list | run TARGET [libFuzzer flags]" >&2
    exit 2
    ;;
esac
