#!/usr/bin/env bash
# Installs every Debian package sagad needs to build, test and run its demo.
# Idempotent: packages already present are left alone. Must run as root.
set -euo pipefail

packages=(
  build-essential pkg-config meson ninja-build clang-format
  libpq-dev postgresql postgresql-contrib
  nats-server libnats-dev
  protobuf-c-compiler libprotobuf-c-dev
  libcriterion-dev libyaml-dev
  libmicrohttpd-dev libjansson-dev
  python3 procps iproute2
  clang libclang-rt-14-dev # libFuzzer and sanitizer runtimes (scripts/fuzz.sh)
  gnuplot-nox # plots of bench/run.sh
  faketime # libfaketime: sagad's clock jumps (tests/integration/test_outages.c)
)
# scripts/check-proto.sh installs buf with npm (into tools/buf/). Any Node.js
# with npm will do, so Debian's are added only when no npm is on the PATH.
if ! command -v npm >/dev/null 2>&1; then
  packages+=(nodejs npm)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}; run this script as root" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "install-deps: done"
