#!/usr/bin/env bash
# Fuzzes every message decoder and the YAML definition parser with libFuzzer
# (clang, address + undefined sanitizers): builds tests/fuzz/ into build-fuzz/
# (tests/fuzz/build.sh), then runs each target for a while on a temporary copy
# of its seed corpus tests/data/fuzz/<target>/, so runs never touch the
# repository. Any crash, leak, timeout, out-of-memory, sanitizer report or
# broken property fails the script, which prints the report and the path of
# the reproducer (kept in build-fuzz/artifacts/).
#
#   scripts/fuzz.sh [-t SECONDS] [-j JOBS] [TARGET...]
#     -t  seconds per target (default $FUZZ_SECONDS or 30)
#     -j  targets run side by side (default $FUZZ_JOBS or the number of CPUs, at most 2)
#     TARGET  e.g. reply definition_yaml (default: every tests/fuzz/fuzz_*.c)
#     $FUZZ_BUILD_DIR  build directory (default build-fuzz)
#
# Reproduce a failure: build-fuzz/fuzz_<target> build-fuzz/artifacts/<target>/crash-...
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-30}
cpus=$(nproc)
jobs=${FUZZ_JOBS:-$((cpus < 2 ? cpus : 2))}
while getopts 't:j:h' opt; do
	case $opt in
	t) seconds=$OPTARG ;;
	j) jobs=$OPTARG ;;
	*)
		sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
		exit 2
		;;
	esac
done
shift $((OPTIND - 1))

out=$(realpath -m "${FUZZ_BUILD_DIR:-build-fuzz}")
if [ $# -gt 0 ]; then
	targets=("$@")
else
	targets=()
	for f in tests/fuzz/fuzz_*.c; do
		t=${f#tests/fuzz/fuzz_}
		t=${t%.c}
		[ "$t" = common ] || targets+=("$t")
	done
fi
for t in "${targets[@]}"; do
	[ -f "tests/fuzz/fuzz_$t.c" ] || { echo "fuzz: no target tests/fuzz/fuzz_$t.c" >&2; exit 2; }
	[ -d "tests/data/fuzz/$t" ] || { echo "fuzz: no seed corpus tests/data/fuzz/$t/" >&2; exit 2; }
done

printf '\n== fuzz (%d targets x %ss, %d at a time; libFuzzer + ASan/UBSan)\n' \
	"${#targets[@]}" "$seconds" "$jobs"
started=$SECONDS
mkdir -p "$out"
if ! bash tests/fuzz/build.sh "$out" >"$out/build.log" 2>&1; then
	cat "$out/build.log" >&2
	echo "fuzz: build failed" >&2
	exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/sagad-fuzz.XXXXXX")
# On exit (or ^C) stop the fuzzers this script started, by their pids, and drop the copies.
# shellcheck disable=SC2317 # called by the trap
cleanup() {
	local f
	for f in "$work"/*.pid; do
		[ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null
	done
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Our own sanitizer settings: the test suites' LSan suppressions must not hide a leak here.
export ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1:allocator_may_return_null=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:report_error_type=1
export LSAN_OPTIONS=
unset LLVM_PROFILE_FILE

# Run one target; writes $work/<target>.rc and .log; keeps artifacts outside $work.
run_one() {
	local t=$1
	local corpus=$work/corpus/$t
	local arts=$work/artifacts/$t
	local extra=()

	mkdir -p "$corpus" "$arts"
	cp -R "tests/data/fuzz/$t/." "$corpus/"
	[ -f "tests/fuzz/fuzz_$t.dict" ] && extra+=("-dict=tests/fuzz/fuzz_$t.dict")
	[ "$t" = definition_yaml ] && extra+=(-max_len=8192)
	[ "$t" = start ] && extra+=(-max_len=6144) # past the 4096-byte slack of its size limit
	"$out/fuzz_$t" -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 \
		-print_final_stats=1 -close_fd_mask=1 -artifact_prefix="$arts/" \
		"${extra[@]}" "$corpus" >"$work/$t.log" 2>&1 &
	echo $! >"$work/$t.pid"
	local rc=0
	wait $! || rc=$?
	rm -f "$work/$t.pid"
	echo "$rc" >"$work/$t.rc"
}

running=0
for t in "${targets[@]}"; do
	run_one "$t" &
	running=$((running + 1))
	if [ "$running" -ge "$jobs" ]; then
		wait -n || true
		running=$((running - 1))
	fi
done
wait

# True when a target's run failed: a non-zero exit or any report in its log
# (a sanitizer report fails the run even when the exit status says otherwise).
run_failed() {
	local rc
	rc=$(cat "$work/$1.rc" 2>/dev/null || echo 1)
	[ "$rc" -ne 0 ] || grep -qE "$reports" "$work/$1.log"
}
reports='ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|libFuzzer)|runtime error:|==fuzz== property broken'

final_stat() { # log, name
	sed -n "s/^stat::$2: *//p" "$1" | tail -1
}

failed=0
printf '%-16s %-6s %10s %8s %8s %7s\n' target result execs exec/s "corpus" "rss MB"
for t in "${targets[@]}"; do
	log=$work/$t.log
	seeds=$(find "tests/data/fuzz/$t" -type f | wc -l)
	now=$(find "$work/corpus/$t" -type f | wc -l)
	result=ok
	if run_failed "$t"; then
		result=FAIL
		failed=1
	fi
	printf '%-16s %-6s %10s %8s %8s %7s\n' "$t" "$result" \
		"$(final_stat "$log" number_of_executed_units)" "$(final_stat "$log" average_exec_per_sec)" \
		"$seeds->$now" "$(final_stat "$log" peak_rss_mb)"
done

for t in "${targets[@]}"; do
	log=$work/$t.log
	rc=$(cat "$work/$t.rc" 2>/dev/null || echo 1)
	run_failed "$t" || continue
	keep=$out/artifacts/$t
	rm -rf "$keep"
	mkdir -p "$keep"
	cp -R "$work/artifacts/$t/." "$keep/" 2>/dev/null || true
	cp "$log" "$keep/fuzz.log"
	printf '\n---- fuzz_%s failed (exit %s); report:\n' "$t" "$rc"
	# The report: from the first sanitizer / property line to libFuzzer's summary.
	awk '/==fuzz==|ERROR: |runtime error:|WARNING: |^SUMMARY:|INFO: a leak|deadly signal/ {on=1}
	     on {print; n++} n >= 80 {exit}' "$log"
	mapfile -t arts < <(find "$keep" -type f ! -name fuzz.log | sort)
	if [ ${#arts[@]} -eq 0 ]; then
		echo "fuzz_$t: no reproducer was written; full log: $keep/fuzz.log"
	fi
	for a in "${arts[@]}"; do
		echo "reproducer: $a"
		echo "  run it:   $out/fuzz_$t $a"
		echo "  bytes:    $(od -An -v -tx1 -N64 "$a" | tr -s ' \n' ' ')$([ "$(stat -c %s "$a")" -gt 64 ] && echo ...)"
	done
	echo "full log: $keep/fuzz.log"
done

printf 'fuzz: %s in %ds\n' "$([ $failed -eq 0 ] && echo 'all clean' || echo FAILED)" \
	$((SECONDS - started))
exit $failed
