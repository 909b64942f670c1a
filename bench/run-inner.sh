#!/usr/bin/env bash
# The benchmark scenarios, run by bench/run.sh inside scripts/services.sh (which
# provides SAGAD_DATABASE_URL, SAGAD_NATS_URL, SAGAD_TEST_* and cleans up after).
# Each scenario gets a fresh system: its own schema, subject and stream prefix,
# sagad and participants, stopped before the next one starts, so an overloaded
# step cannot leak retries into the next scenario.
#   1 capacity    ladder of offered rates until completions fall behind
#   2 latency     at half the highest sustained rate (--runs times)
#   3 baseline    the same three steps as a synchronous chain (closed loop, then paced)
#   4 outage      participants stopped (SIGSTOP) at a steady rate, then resumed
#   5 report      bench/report.py: figures, ratios, seed verification
set -euo pipefail
{ # read the whole script before running it, so editing it mid-run cannot derail a running copy

build=build-bench out='' quick=0 seed_full=0 rates='' runs='' parts=4 fail=0 lat_ms=0
callers=16 pause='' outage_saga=order_patient profile=1 compare=''

while [ $# -gt 0 ]; do
	case $1 in
	--build) build=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	--quick) quick=1; shift ;;
	--seed-full) seed_full=1; shift ;;
	--no-profile) profile=0; shift ;;
	--rates) rates=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--participants) parts=$2; shift 2 ;;
	--fail-rate) fail=$2; shift 2 ;;
	--latency-ms) lat_ms=$2; shift 2 ;;
	--callers) callers=$2; shift 2 ;;
	--pause) pause=$2; shift 2 ;;
	--outage-saga) outage_saga=$2; shift 2 ;;
	--compare) compare=$2; shift 2 ;;
	*) echo "run-inner.sh: unknown option $1" >&2; exit 2 ;;
	esac
done
[ -n "$out" ] || { echo "run-inner.sh: --out DIR is required" >&2; exit 2; }

if [ "$quick" = 1 ]; then
	W=3 D=8 DRAIN=20 LAT_D=12 SYNC_D=10 OUT_PRE=8
	: "${rates:=100 200 400 800}" "${runs:=1}" "${pause:=20}"
else
	W=5 D=20 DRAIN=60 LAT_D=30 SYNC_D=20 OUT_PRE=20
	: "${rates:=100 200 300 400 600 800 1200 1600 2400 3200}" "${runs:=3}" "${pause:=60}"
fi
bin=$build/orchestrator
sc_bin=$bin  # sagad and sagactl of the next scenario (--compare: the baseline's for B runs)
participant=$build/examples/saga-participant
sc_participant=$participant  # the participants of the next scenario (likewise)
if [ -n "$compare" ]; then
	[ -x "$compare/orchestrator/sagad" ] || { echo "run-inner.sh: no $compare/orchestrator/sagad" >&2; exit 2; }
	bin_b=$(cd "$compare/orchestrator" && pwd -P)
	participant_b=$compare/examples/saga-participant
	[ -x "$participant_b" ] || participant_b=$participant
fi
bench=$build/bench/saga-bench
logs=$out/logs
mkdir -p "$logs"
pg_pid=$(head -n 1 "$SAGAD_TEST_PG_DATA/postmaster.pid")
nats_pid=$SAGAD_TEST_NATS_PID
t_start=$SECONDS
# Throughput is measured here, not permissions (tests/integration/test_security.c does that):
# every process uses the NATS admin user, so saga-bench may set up and watch any subject, and a
# --compare baseline from before the per-user inboxes runs unchanged.
export SAGAD_NATS_URL=${SAGAD_NATS_URL_ADMIN:-$SAGAD_NATS_URL}

say() { printf '\n== [%4ds] %s\n' "$((SECONDS - t_start))" "$*"; }
json_get() { python3 -c 'import json,sys
v=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): v=v[k]
print(v)' "$1" "$2"; }

{
	echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "host=$(uname -n), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
	echo "git=$(cat "$build/bench-build-id" 2>/dev/null || echo "unknown build; HEAD $(git rev-parse --short HEAD 2>/dev/null)")"
	[ -z "$compare" ] || echo "git_b=$(cat "$compare/bench-build-id" 2>/dev/null || echo unknown)"
	for v in quick seed_full rates runs parts fail lat_ms callers pause outage_saga W D LAT_D SYNC_D \
		compare; do
		echo "$v=${!v}"
	done
	echo "load_before=$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$out/run.env"

# One line per autovacuum and checkpoint in the PostgreSQL log (copied to logs/ at the end).
psql "$SAGAD_DATABASE_URL" -X -q -c "ALTER SYSTEM SET log_autovacuum_min_duration = 0" \
	-c "ALTER SYSTEM SET log_checkpoints = on" -c "SELECT pg_reload_conf()" >/dev/null 2>&1 || true

# ---- the system of one scenario ----------------------------------------------------------
sc_sagad='' sc_parts=()

scenario_stop() {
	local p
	for p in ${sc_parts[@]+"${sc_parts[@]}"} $sc_sagad; do kill -CONT "$p" 2>/dev/null || true; done
	for p in ${sc_parts[@]+"${sc_parts[@]}"} $sc_sagad; do kill -TERM "$p" 2>/dev/null || true; done
	for p in ${sc_parts[@]+"${sc_parts[@]}"} $sc_sagad; do wait "$p" 2>/dev/null || true; done
	sc_parts=() sc_sagad=''
}
trap scenario_stop EXIT

wait_ready() {  # wait_ready LOG WHAT
	local i
	for i in $(seq 1 300); do
		grep -q '"msg":"ready' "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "run-inner.sh: $2 not ready; last lines of $1:" >&2
	tail -n 20 "$1" >&2
	exit 1
}

# scenario_start NAME [sagad=1]: fresh schema b_NAME, subjects bNAME.*, streams BNAME_*.
scenario_start() {
	local name with_sagad=${2:-1} k svc
	name=$(echo "$1" | tr '[:upper:]' '[:lower:]')  # schema names are lower case
	scenario_stop
	export SAGAD_DB_SCHEMA=b_$name SAGAD_SUBJECT_PREFIX=b$name
	SAGAD_STREAM_PREFIX=B$(echo "$name" | tr '[:lower:]' '[:upper:]')
	export SAGAD_STREAM_PREFIX
	if [ "$with_sagad" = 1 ]; then
		"$sc_bin/sagad" migrate >"$logs/migrate-$name.log" 2>&1
		"$sc_bin/sagactl" define sagas/order.yaml >/dev/null
		"$sc_bin/sagactl" define bench/sagas/order_patient.yaml >/dev/null
		# HTTP on a free port: never collides with another sagad on this machine.
		SAGAD_HTTP_LISTEN=127.0.0.1:0 "$sc_bin/sagad" run >"$logs/sagad-$name.log" 2>&1 &
		sc_sagad=$!
		wait_ready "$logs/sagad-$name.log" sagad
	else
		"$bench" --mode setup >"$logs/setup-$name.log" 2>&1
	fi
	for k in $(seq 1 "$parts"); do
		for svc in stock payments shipping; do
			local extra=()
			[ "$svc" = payments ] && extra=(--fail-rate "$fail")
			"$sc_participant" --service "$svc" --name "$svc-$k" --latency-ms "$lat_ms" \
				${extra[@]+"${extra[@]}"} >"$logs/$svc-$k-$name.log" 2>&1 &
			sc_parts+=($!)
		done
	done
	for k in $(seq 1 "$parts"); do
		for svc in stock payments shipping; do wait_ready "$logs/$svc-$k-$name.log" "$svc-$k"; done
	done
}

parts_plus() { local IFS=+; echo "${sc_parts[*]}"; }
parts_comma() { local IFS=,; echo "${sc_parts[*]}"; }

# run_bench TAG ARGS...: one saga-bench run; JSON, CSV and the table land in $out.
run_bench() {
	local tag=$1; shift
	local pidarg=() watch backend=''
	watch="postgres=$pg_pid,nats=$nats_pid,participants=$(parts_plus)"
	if [ -n "$sc_sagad" ]; then
		pidarg=(--sagad-pid "$sc_sagad")
		# sagad's own PostgreSQL backend (part of "postgres" too): its share of the database's CPU.
		backend=$(psql "$SAGAD_DATABASE_URL" -X -q -At -c \
			"SELECT pid FROM pg_stat_activity WHERE application_name = 'sagad' LIMIT 1" 2>/dev/null || true)
		[ -z "$backend" ] || watch="$watch,pg-backend-of-sagad=$backend"
	fi
	"$bench" --tag "$tag" ${pidarg[@]+"${pidarg[@]}"} --watch "$watch" \
		--csv "$out/$tag.csv" --json "$out/$tag.json" \
		--participant-fail-rate "$fail" --participant-latency-ms "$lat_ms" \
		--participant-instances "$parts" --max-completion-p95-ms $((1000 + 3 * ${lat_ms%.*})) \
		"$@" | tee "$out/$tag.txt" | grep -v '^{' || true
	[ -s "$out/$tag.json" ] || { echo "run-inner.sh: saga-bench $tag failed" >&2; exit 1; }
	# Per table of the scenario's schema: updates, those made in place (HOT), sequential scans
	# and the rows they read (cumulative since the scenario's schema was made).
	psql "$SAGAD_DATABASE_URL" -X -q -At -F ' ' -c "SELECT relname, n_tup_upd, n_tup_hot_upd,
	  seq_scan, seq_tup_read, idx_scan FROM pg_stat_user_tables
	  WHERE schemaname = '$SAGAD_DB_SCHEMA' ORDER BY 1" >"$out/$tag.tables.txt" 2>/dev/null || true
}

# profile TAG DELAY SECONDS: perf (on-CPU), main-thread waits and sagad's PostgreSQL session,
# in the background (prof_pid; profile_wait waits for it).
prof_pid=''
profile() {
	local tag=$1 delay=$2 secs=$3 pid=$sc_sagad
	prof_pid=''
	[ "$profile" = 1 ] && [ -n "$pid" ] || return 0
	(
		sleep "$delay"
		kill -0 "$pid" 2>/dev/null || exit 0
		perf record -q -F 999 --call-graph dwarf,16384 -p "$pid" -o "$out/perf-$tag.data" \
			-- sleep "$secs" >/dev/null 2>&1 &
		python3 bench/waits.py "$pid" "$secs" 5 >"$out/waits-$tag.txt" 2>&1 &
		# The PostgreSQL backend serving sagad's main connection: where its statements go.
		local backend
		backend=$(psql "$SAGAD_DATABASE_URL" -X -q -At -c \
			"SELECT pid FROM pg_stat_activity WHERE application_name = 'sagad' LIMIT 1" 2>/dev/null || true)
		if [ -n "$backend" ]; then
			perf record -q -F 999 -p "$backend" -o "$out/perf-pg-$tag.data" -- sleep "$secs" \
				>/dev/null 2>&1 &
		fi
		# psql's \watch: every sample is its own short transaction. (A sampling loop inside one
		# statement holds a snapshot for its whole length, which keeps vacuum from removing
		# the outbox's dead rows and slows sagad down: the probe must not do that.)
		printf '%s\n' "SELECT 'W|' || coalesce(state, '?') || ' / ' || coalesce(wait_event_type, '-')
		  || ':' || coalesce(wait_event, '-') || CASE WHEN state = 'active'
		  THEN ' / ' || left(regexp_replace(query, '\s+', ' ', 'g'), 90) ELSE '' END
		  FROM pg_stat_activity WHERE application_name = 'sagad'" '\watch 0.02' |
			timeout "$secs" psql "$SAGAD_DATABASE_URL" -X -q -At 2>/dev/null |
			sed -n 's/^W|//p' >"$out/pgwait-$tag.raw" || true
		local n
		n=$(wc -l <"$out/pgwait-$tag.raw")
		{
			echo "sagad's PostgreSQL session, $n samples (20 ms apart):"
			sort "$out/pgwait-$tag.raw" | uniq -c | sort -rn |
				awk -v n="$n" '{ c = $1; sub(/^ *[0-9]+ /, ""); printf "%5.1f%%  %s\n", 100 * c / n, $0 }'
		} >"$out/pgwait-$tag.txt"
		rm -f "$out/pgwait-$tag.raw"
		wait
		if [ -s "$out/perf-$tag.data" ]; then
			perf report -i "$out/perf-$tag.data" --stdio --no-children --percent-limit 1.5 \
				--sort symbol 2>/dev/null | grep -v '^$' | head -n 150 >"$out/profile-$tag.txt" || true
			perf report -i "$out/perf-$tag.data" --stdio --no-children --sort dso \
				-g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 20 \
				>"$out/profile-dso-$tag.txt" || true
			rm -f "$out/perf-$tag.data"
		fi
		if [ -s "$out/perf-pg-$tag.data" ]; then
			perf report -i "$out/perf-pg-$tag.data" --stdio --no-children --sort dso,symbol \
				--percent-limit 1 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 40 \
				>"$out/profile-pg-$tag.txt" || true
			rm -f "$out/perf-pg-$tag.data"
		fi
	) &
	prof_pid=$!
}
profile_wait() {
	[ -z "$prof_pid" ] || wait "$prof_pid" 2>/dev/null || true
	prof_pid=''
}

# ---- 1 capacity ----------------------------------------------------------------------------
# One system climbs the ladder until a step fails. This machine is shared, so a failed step is
# tried once more on a fresh system before the climb stops (twice at most per ladder).
say "1 capacity: offered rates $rates (warm-up $W s, steady $D s each)"
cap_step() {  # cap_step TAG RATE -> 0 when sustained
	run_bench "$1" --rate "$2" --warmup "$W" --duration "$D" --drain "$DRAIN"
	[ "$(json_get "$out/$1.json" sustained)" = True ]
}
ladder() {  # ladder PREFIX: climb the rates; sets best and first_bad
	local p=$1 r retries=0 sys=0 mid
	best=0 first_bad=
	scenario_start "$p$sys"
	for r in $rates; do
		if cap_step "$p-$r" "$r"; then
			best=$r
			continue
		fi
		if [ "$retries" -lt 2 ]; then
			retries=$((retries + 1)) sys=$((sys + 1))
			say "1 capacity: $r/s failed; once more on a fresh system"
			scenario_start "$p$sys"
			if cap_step "$p-$r-retry" "$r"; then
				best=$r
				continue
			fi
		fi
		first_bad=$r
		break
	done
	scenario_stop
	# Two halvings of the gap between the last rate sustained and the first not (1200 and
	# 1600 -> 1400, then 1300 or 1500), each on a fresh system.
	local round
	for round in 1 2; do
		[ "$quick" = 0 ] && [ -n "$first_bad" ] && [ "$best" -gt 0 ] || break
		mid=$(((best + first_bad) / 2 / 50 * 50))
		[ "$mid" -gt "$best" ] && [ "$mid" -lt "$first_bad" ] || break
		say "1 capacity: between $best and $first_bad/s"
		scenario_start "${p}mid$round"
		if cap_step "$p-$mid" "$mid"; then best=$mid; else first_bad=$mid; fi
		scenario_stop
	done
}
if [ -n "$compare" ]; then
	say "1 capacity of the baseline build ($compare)"
	sc_bin=$bin_b sc_participant=$participant_b
	ladder capB
	echo "highest sustained rate of the baseline build: $best/s" | tee "$out/capacity-b.txt"
	sc_bin=$bin sc_participant=$participant
	say "1 capacity of this build"
fi
ladder cap
set -- $rates
if [ "$best" -gt 0 ]; then half=$((best / 2)); else half=$(($1 / 2)); fi
[ "$half" -ge 1 ] || half=1
echo "highest sustained rate: $best/s; latency and baseline at $half/s" | tee "$out/capacity.txt"

# ---- 1b profile ----------------------------------------------------------------------------
# Profilers take CPU from a 2-core machine and change what they measure, so they run in runs of
# their own (prof-*), never in the ones the headline figures come from: at the highest sustained
# rate and at the first rate that was not.
if [ "$profile" = 1 ]; then
	for r in $best $first_bad; do
		[ "$r" -gt 0 ] || continue
		say "1b profile of sagad at $r/s"
		scenario_start "prof$r"
		profile "prof-$r" $((W + 2)) $((D > 12 ? 10 : D - 2))
		run_bench "prof-$r" --rate "$r" --warmup "$W" --duration "$D" --drain "$DRAIN"
		profile_wait
		scenario_stop
	done
fi

# ---- 2 latency -----------------------------------------------------------------------------
say "2 latency at $half/s (half the highest sustained rate), $runs run(s) of $LAT_D s"
scenario_start lat
for i in $(seq 1 "$runs"); do
	run_bench "lat-$i" --rate "$half" --warmup "$W" --duration "$LAT_D" --drain "$DRAIN"
	if [ -n "$compare" ]; then
		# The baseline build at the same rate, alternating, each on a fresh system.
		sc_bin=$bin_b sc_participant=$participant_b
		scenario_start "latb$i"
		run_bench "latB-$i" --rate "$half" --warmup "$W" --duration "$LAT_D" --drain "$DRAIN"
		sc_bin=$bin sc_participant=$participant
		scenario_start "lat$i"
	fi
done
scenario_stop

# ---- 3 synchronous baseline ----------------------------------------------------------------
say "3 synchronous baseline: the same steps as a chain, $callers callers"
scenario_start sync 0
for i in $(seq 1 "$runs"); do
	run_bench "sync-$i" --mode sync --definition sagas/order.yaml --callers "$callers" --rate 0 \
		--warmup 3 --duration "$SYNC_D"
done
if [ "$quick" = 0 ]; then
	run_bench "syncw-1" --mode sync --definition sagas/order.yaml --callers $((callers * 4)) \
		--rate 0 --warmup 3 --duration "$SYNC_D"
fi
run_bench "syncp-1" --mode sync --definition sagas/order.yaml --callers "$callers" --rate "$half" \
	--warmup 3 --duration "$SYNC_D"
scenario_stop

# ---- 4 consumer outage ---------------------------------------------------------------------
outage() {  # outage TAG RATE PAUSE RECOVER_MAX
	local tag=$1 rate=$2 p=$3 rec=$4
	say "4 outage: $rate/s of $outage_saga, participants stopped for $p s (drain budget $rec s)"
	scenario_start "$(echo "$tag" | tr -d -- '-')"
	run_bench "$tag" --saga "$outage_saga" --rate "$rate" --warmup "$W" --duration "$OUT_PRE" \
		--pause-pids "$(parts_comma)" --pause-for "$p" --recover-max "$rec" --after-drain 5 \
		--drain 120
	scenario_stop
}
# A quarter of the sustained rate: the seed asks for recovery above 1.7x the producer rate.
orate=$((best / 4)); [ "$orate" -ge 10 ] || orate=10
outage "out-1" "$orate" "$pause" $((pause * 3 / 2 > 60 ? pause * 3 / 2 : 60))
if [ "$seed_full" = 1 ]; then
	# sagad's default admission limit is 100k sagas in flight: 150/s x 600 s stays below it.
	srate=$((orate < 150 ? orate : 150))
	outage "seed-1" "$srate" 600 900
fi

# ---- 5 report ------------------------------------------------------------------------------
say "5 report"
echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/run.env"
echo "elapsed_s=$((SECONDS - t_start))" >>"$out/run.env"
for csv in "$out"/*.csv; do
	[ -s "$csv" ] || continue
	gnuplot -e "csv='$csv'; png='${csv%.csv}.png'; title='$(basename "${csv%.csv}")'" \
		bench/plot.gp 2>>"$logs/gnuplot.log" || echo "plot of $csv failed (see logs/gnuplot.log)"
done
cp "$SAGAD_RUN_DIR/postgres.log" "$SAGAD_RUN_DIR/nats.log" "$logs/" 2>/dev/null || true
python3 bench/report.py "$out" | tee "$out/report.md"
echo
echo "results: $out (report.md, summary.json, per-run JSON/CSV/PNG, profile-*.txt)"
exit 0
}
