#!/usr/bin/env bash
# Installs every Debian package the project needs to build, test and run.
# Idempotent; run as root on Debian 12 (bookworm).
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config
  libboost-dev libssl-dev libcurl4-openssl-dev libhiredis-dev libsqlite3-dev
  libspdlog-dev libfmt-dev googletest libgtest-dev libgmock-dev
  libcli11-dev libtomlplusplus-dev nlohmann-json3-dev
  redis-server sqlite3 python3 curl openssl
  libpq-dev postgresql  # [storage] database = "postgresql://..." (issue #10); the tests start their own cluster
  dovecot-core dovecot-imapd dovecot-submissiond
  python3-aiosmtpd swaks libnet-ssleay-perl libio-socket-ssl-perl msmtp  # submission tests: the sink, real senders
  clang-16 libclang-rt-16-dev llvm-16  # fuzz/run.sh: libFuzzer targets, symbolized reports
  systemd  # systemd-analyze verify in tests/integration/install_test.cpp (skipped without it)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
