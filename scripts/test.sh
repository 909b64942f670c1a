#!/usr/bin/env bash
# Runs every test from a fresh machine: installs dependencies, checks formatting,
# builds with warnings fatal (plain and address+undefined sanitizer builds), and
# runs the unit and integration suites of both against a throw-away PostgreSQL
# and NATS JetStream started by scripts/services.sh. Extra arguments go to
# `meson test` (e.g. --suite unit).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "dependencies"
bash scripts/install-deps.sh

step "format check"
bash scripts/format.sh check

step "schema-evolution gate (buf lint + buf breaking against proto/BASELINE)"
bash scripts/check-proto.sh

setup() { # dir, options...
	local dir=$1
	shift
	if [ -f "$dir/build.ninja" ]; then
		meson setup --reconfigure "$dir" "$@" >/dev/null
	else
		meson setup "$dir" "$@" >/dev/null
	fi
}

step "build (warnings fatal)"
setup build-test -Dwerror=true -Dbuildtype=debugoptimized
ninja -C build-test

step "build (address + undefined sanitizers, warnings fatal)"
setup build-asan -Dwerror=true -Dbuildtype=debug -Db_sanitize=address,undefined -Db_lundef=false
ninja -C build-asan

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0}

step "tests (plain and sanitizer builds, real PostgreSQL + NATS)"
rc=0
bash scripts/services.sh -- bash -c '
	rc=0
	meson test -C build-test --print-errorlogs --num-processes 2 "$@" || rc=1
	meson test -C build-asan --print-errorlogs --num-processes 2 "$@" || rc=1
	exit $rc' test-suites "$@" || rc=$?
bash scripts/fuzz.sh || rc=1 # libFuzzer over the decoders and the YAML parser, ~2.5 min

step "summary"
python3 scripts/test-summary.py build-test/meson-logs/testlog.json build-asan/meson-logs/testlog.json || rc=1
exit $rc
