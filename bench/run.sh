#!/usr/bin/env bash
# The standard benchmark report: install, build a release build (build-bench),
# start a throw-away PostgreSQL + NATS (scripts/services.sh) and run the
# scenarios of bench/run-inner.sh against sagad and the example participants:
# capacity, latency at half of it, a synchronous baseline, a consumer outage,
# and the seed verification report. Everything is stopped again on exit.
#
# Usage: bash bench/run.sh [--quick] [--seed-full] [options]
#   --quick              a short run (3-4 minutes after the build): fewer, shorter steps, one run each
#   (default)            the full report: longer steps, 3 runs for medians (10-25 minutes, as far
#                        as the capacity ladder climbs)
#   --seed-full          the outage as the seed states it: 10 min pause, 15 min drain budget
#                        (adds 15-30 minutes)
#   --rates "R1 R2 ..."  capacity ladder, starts/s (default 100 200 300 400 600 800 1200 1600
#                        2400 3200; quick: 100 200 400 800)
#   --runs N             repetitions of the latency and baseline runs (default 3; quick 1)
#   --participants K     processes per participant service (default 4)
#   --fail-rate F        fraction of card charges declined for good (default 0)
#   --latency-ms L       participant work per command (default 0)
#   --callers N          synchronous baseline callers (default 16)
#   --pause S            outage length in seconds (default 60; quick 20)
#   --outage-saga NAME   saga run through the outage (default order_patient, see bench/sagas/)
#   --compare DIR        also run the capacity ladder and the latency runs (alternating) with the
#                        sagad of another build dir (e.g. a worktree of the last commit): ratios
#                        measured in the same run
#   --out DIR            results directory (default bench/out/<UTC time>)
#   --no-profile         skip the perf profile of sagad
#   --skip-build         use build-bench as it is
# Results: DIR/report.md (figures, seed verification), DIR/summary.json, one JSON + CSV + PNG
# per run, DIR/profile-*.txt, DIR/logs/.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '8,30s/^# \{0,1\}//p' "$0" >&2; exit 2; }

skip_build=0
args=()
out=''
while [ $# -gt 0 ]; do
	case $1 in
	--skip-build) skip_build=1; shift ;;
	--out) out=$2; shift 2 ;;
	--quick | --seed-full | --no-profile) args+=("$1"); shift ;;
	--rates | --runs | --participants | --fail-rate | --latency-ms | --callers | --pause | --outage-saga | --compare)
		[ $# -ge 2 ] || usage
		args+=("$1" "$2"); shift 2 ;;
	-h | --help) usage ;;
	*) echo "run.sh: unknown option $1" >&2; usage ;;
	esac
done
[ -n "$out" ] || out=bench/out/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
out=$(cd "$out" && pwd -P)

echo "== dependencies"
bash scripts/install-deps.sh

if [ "$skip_build" = 0 ]; then
	echo "== build (build-bench: release, no tests)"
	if [ -f build-bench/build.ninja ]; then
		meson setup --reconfigure build-bench -Dbuildtype=release -Dtests=false >/dev/null
	else
		meson setup build-bench -Dbuildtype=release -Dtests=false >/dev/null
	fi
	ninja -C build-bench
	# What was built: other work changes the tree, so HEAD alone does not say.
	echo "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null \
		|| echo "+changes:$(git diff HEAD 2>/dev/null | sha1sum | cut -c1-8)")" >build-bench/bench-build-id
fi

echo "== benchmark (results in $out)"
exec bash scripts/services.sh -- bash bench/run-inner.sh --build build-bench --out "$out" ${args[@]+"${args[@]}"}
