#!/usr/bin/env bash
# Installs the dependencies, builds, and runs `serve` on the embedded default: a config, master
# key and SQLite database under ./local (created on first run), no Redis required.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
build_dir=${BUILD_DIR:-build-run}
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DIOP_BUILD_TESTS=OFF -DIOP_BUILD_BENCH=OFF
cmake --build "$build_dir" -j "$(nproc)" --target imap-oauth2-proxy
bin="$build_dir/app/imap-oauth2-proxy"
state=${IOP_STATE_DIR:-local}
[[ -f "$state/imap-oauth2-proxy.toml" ]] || "$bin" init --dir "$state"
exec "$bin" serve --config "$state/imap-oauth2-proxy.toml" "$@"
