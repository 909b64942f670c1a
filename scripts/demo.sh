#!/usr/bin/env bash
# The main job: from a fresh machine, install, build, start a throw-away
# PostgreSQL and NATS, run a few hundred real order sagas through sagad and
# the example participants, print a summary, and stop everything again (also
# on Ctrl-C). SAGAD_DEMO_SAGAS and SAGAD_DEMO_RATE change the load.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "dependencies"
bash scripts/install-deps.sh

step "build"
if [ -f build-demo/build.ninja ]; then
	meson setup --reconfigure build-demo -Dbuildtype=release -Dtests=false >/dev/null
else
	meson setup build-demo -Dbuildtype=release -Dtests=false >/dev/null
fi
ninja -C build-demo

step "local PostgreSQL + NATS, then sagad, participants and sagas"
exec bash scripts/services.sh -- bash scripts/demo-inner.sh build-demo
