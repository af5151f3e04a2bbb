#!/usr/bin/env bash
# Installs the dependencies, builds, and runs the whole test suite (unit + integration).
# The integration tests start their own peers (redis-server, the test token endpoint) on
# loopback ports; nothing needs to be running beforehand.
#
# Environment: BUILD_DIR (default build), BUILD_TYPE (default RelWithDebInfo), CMAKE_ARGS (extra
# configure arguments), LINE_TABLES_ONLY=1 (-g1: a faster build that nobody debugs, for CI).
# SANITIZE=1 is the ASan + UBSan pass of .ci/run: it builds in build-asan (unless BUILD_DIR says
# otherwise) with -DIOP_SANITIZE=ON, without the benchmarks, and makes
# any sanitizer report fail the test that triggered it. Arguments go to ctest (e.g. -R Name).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
if [[ ${SANITIZE:-0} == 1 ]]; then
  build_dir=${BUILD_DIR:-build-asan}
  # -O1 -g1 (line tables): less than half the compile time of -O2 -g under ASan (proxy/session.cpp:
  # 63 s against 149 s of CPU), still fast enough to run, still file:line in every report, and
  # assertions on.
  cmake_args=(-DIOP_SANITIZE=ON -DIOP_BUILD_BENCH=OFF "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1")
  # UBSan in GCC reports and carries on by default: halt so that the test fails. Leak
  # detection is off by default: OpenSSL's process-lifetime allocations in the test binaries
  # show up as leaks (ASAN_OPTIONS=detect_leaks=1 turns it on for a local look).
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
else
  build_dir=${BUILD_DIR:-build}
  # LINE_TABLES_ONLY=1 (.ci/run): -g1 instead of -g, still file:line in backtraces, about a
  # quarter less compile time (auth/token_service.cpp: 28 s against 39 s of CPU). Without it the
  # flags go back to CMake's default, so a local CI_QUICK=1 .ci/run does not leave the build
  # directory at -g1.
  if [[ ${LINE_TABLES_ONLY:-0} == 1 ]]; then
    cmake_args=("-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG")
  else
    cmake_args=(-UCMAKE_CXX_FLAGS_RELWITHDEBINFO)
  fi
fi
# shellcheck disable=SC2086  # CMAKE_ARGS is a list of words
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" \
  "${cmake_args[@]}" ${CMAKE_ARGS:-}
cmake --build "$build_dir" -j "$(nproc)"
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)" --timeout 600 "$@"
