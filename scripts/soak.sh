#!/usr/bin/env bash
# Soak test (not run in CI): sustained load through sagad while random faults strike, then a
# drain and the invariants I1-I7 of RELIABILITY.md. Exits 1 when one is violated.
#
# Usage: bash scripts/soak.sh [options]
#   --minutes N        minutes of load (default 30)
#   --rate R           saga starts per second, open loop (default 20)
#   --faults LIST      fault kinds drawn from, comma-separated (default sagad,participant,nats,postgres,failing):
#                        sagad        kill -9 sagad, start it again 0-3 s later
#                        participant  SIGSTOP one participant process for 5-30 s, then SIGCONT
#                        nats         stop nats-server (TERM or KILL, drawn), start it again 1-5 s later
#                        postgres     pg_ctl stop -m immediate, start again 1-5 s later
#                        failing      every payments process answers every command with a retryable
#                                     failure for 60-180 s (the circuit breaker's case), then heals
#                      or "none" for load only
#   --fault-every A-B  seconds between two faults, drawn uniformly (default 20-60)
#   --seed S           seed of the fault schedule (default: the clock; printed)
#   --participants K   processes per participant service (default 2)
#   --fail-rate F      card charges payments declines for good: compensations (default 0.05)
#   --drain-max S      seconds the drain may take after the load (default 600)
#   --sample-every S   seconds between two resource samples (default 10)
#   --out DIR          results: soak.csv, bench.*, accepted.txt, logs/ (default soak-out/<UTC time>)
#   --build DIR        build directory (default build-soak; configured if missing)
#   --skip-build       use the build directory as it is
# Everything runs against a throw-away PostgreSQL and nats-server (scripts/services.sh); the script
# only ever signals processes it started itself (sagad, participants, saga-bench, and the
# servers services.sh started for it), by pid.
# shellcheck disable=SC2317  # cleanup is only reached through its trap
set -euo pipefail
{ # read the whole script before running it, so editing it mid-run cannot derail a running copy
cd "$(dirname "$0")/.."

usage() { sed -n '5,27s/^# \{0,1\}//p' "$0" >&2; exit 2; }

minutes=30 rate=20 faults=sagad,participant,nats,postgres,failing fault_every=20-60 seed='' parts=2
fail_rate=0.05 drain_max=600 sample_every=10 out='' build=build-soak skip_build=0 inner=0
while [ $# -gt 0 ]; do
	case $1 in
	--minutes) minutes=$2; shift 2 ;;
	--rate) rate=$2; shift 2 ;;
	--faults) faults=$2; shift 2 ;;
	--fault-every) fault_every=$2; shift 2 ;;
	--seed) seed=$2; shift 2 ;;
	--participants) parts=$2; shift 2 ;;
	--fail-rate) fail_rate=$2; shift 2 ;;
	--drain-max) drain_max=$2; shift 2 ;;
	--sample-every) sample_every=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	--build) build=$2; shift 2 ;;
	--skip-build) skip_build=1; shift ;;
	--inner) inner=1; shift ;;
	-h | --help) usage ;;
	*) echo "soak.sh: unknown option $1" >&2; usage ;;
	esac
done
[[ $minutes =~ ^[0-9]+(\.[0-9]+)?$ && $rate =~ ^[0-9]+(\.[0-9]+)?$ ]] || usage
[[ $fault_every =~ ^([0-9]+)-([0-9]+)$ ]] || usage
fault_min=${BASH_REMATCH[1]} fault_max=${BASH_REMATCH[2]}
if [ "$fault_min" -lt 1 ] || [ "$fault_max" -lt "$fault_min" ]; then usage; fi
[[ $parts =~ ^[1-9][0-9]*$ && $drain_max =~ ^[0-9]+$ && $sample_every =~ ^[1-9][0-9]*$ ]] || usage
[ -n "$seed" ] || seed=$(( $(date +%s) % 32768 ))
[[ $seed =~ ^[0-9]+$ ]] || usage
IFS=, read -r -a fault_kinds <<<"$faults"
for k in "${fault_kinds[@]}"; do
	case $k in sagad | participant | nats | postgres | failing | none) ;; *) echo "soak.sh: unknown fault $k" >&2; usage ;; esac
done

# ---- outer: build, then run the inner part next to throw-away servers ----------------------
if [ "$inner" = 0 ]; then
	[ -n "$out" ] || out=soak-out/$(date -u +%Y%m%dT%H%M%SZ)
	mkdir -p "$out"
	out=$(cd "$out" && pwd -P)
	echo "== dependencies"
	bash scripts/install-deps.sh
	if [ "$skip_build" = 0 ]; then
		echo "== build ($build: debugoptimized, no tests)"
		if [ -f "$build/build.ninja" ]; then
			meson setup --reconfigure "$build" -Dbuildtype=debugoptimized -Dtests=false >/dev/null
		else
			meson setup "$build" -Dbuildtype=debugoptimized -Dtests=false >/dev/null
		fi
		ninja -C "$build"
	fi
	echo "== soak (results in $out)"
	exec bash scripts/services.sh -- bash "$0" --inner --minutes "$minutes" --rate "$rate" \
		--faults "$faults" --fault-every "$fault_every" --seed "$seed" --participants "$parts" \
		--fail-rate "$fail_rate" --drain-max "$drain_max" --sample-every "$sample_every" \
		--out "$out" --build "$build"
fi

# ---- inner: under scripts/services.sh ------------------------------------------------------
: "${SAGAD_DATABASE_URL:?run through scripts/soak.sh, not with --inner}"
bin=$build/orchestrator participant=$build/examples/saga-participant bench=$build/bench/saga-bench
for b in "$bin/sagad" "$bin/sagactl" "$participant" "$bench"; do
	[ -x "$b" ] || { echo "soak.sh: $b not built" >&2; exit 1; }
done
logs=$out/logs
mkdir -p "$logs"
export SAGAD_DB_SCHEMA=soak SAGAD_SUBJECT_PREFIX=soak SAGAD_STREAM_PREFIX=SOAK
export SAGAD_HTTP_LISTEN=127.0.0.1:0
PSQL=("$SAGAD_TEST_PG_BIN/psql" "$SAGAD_DATABASE_URL" -X -q -At -v ON_ERROR_STOP=1)
AS_PG=(env -C /)
[ "$(id -u)" -ne 0 ] || AS_PG=(runuser -u postgres -- env -C /)
RANDOM=$seed R=0
t0=$SECONDS

say() { printf '[%5ds] %s\n' "$((SECONDS - t0))" "$*" | tee -a "$out/soak.log"; }
# rand A B: R = uniform in [A, B] (no $(...): a subshell would not advance the seeded RANDOM)
rand() { R=$(($1 + RANDOM % ($2 - $1 + 1))); }
sql() { PGCONNECT_TIMEOUT=3 "${PSQL[@]}" -c "SET search_path TO soak" -c "$1" 2>/dev/null; }
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# ---- the processes ---------------------------------------------------------------------------
sagad_pid='' sagad_n=0 part_pids=() part_names=() bench_pid='' nats_pid=$SAGAD_TEST_NATS_PID
paused_pid='' resume_at=0 heal_at=0

wait_log() {  # wait_log FILE PATTERN SECONDS
	local i
	for ((i = 0; i < $3 * 10; i++)); do
		grep -q "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

start_sagad() {
	local log tries
	for tries in 1 2 3 4 5; do
		sagad_n=$((sagad_n + 1))
		log=$logs/sagad-$sagad_n.log
		"$bin/sagad" run >"$log" 2>&1 &
		sagad_pid=$!
		wait_log "$log" '"msg":"ready' 30 && return 0
		say "sagad $sagad_n did not become ready (try $tries): $(tail -n 1 "$log")"
		kill -KILL "$sagad_pid" 2>/dev/null || true
		wait "$sagad_pid" 2>/dev/null || true
		sleep 2
	done
	say "sagad does not start"; return 1
}

start_participant() {  # start_participant INDEX SERVICE K [broken]: (re)starts part_pids[INDEX]
	local extra=() log=$logs/$2-$3.log
	[ "$2" = payments ] && extra=(--fail-rate "$fail_rate" --retryable-rate 0.02)
	[ -z "${4:-}" ] || extra=(--retryable-rate 1)
	"$participant" --service "$2" --name "$2-$3" ${extra[@]+"${extra[@]}"} >>"$log" 2>&1 &
	part_pids[$1]=$! part_names[$1]=$2-$3
}

start_participants() {
	local k svc
	for ((k = 1; k <= parts; k++)); do
		for svc in stock payments shipping; do start_participant "${#part_pids[@]}" "$svc" "$k"; done
	done
	for k in "${!part_pids[@]}"; do
		wait_log "$logs/${part_names[$k]}.log" '"msg":"ready' 30 ||
			{ say "participant ${part_names[$k]} not ready"; return 1; }
	done
}

# Replace every payments process (broken: answering every command with a retryable failure).
restart_payments() {
	local i k=0 p
	for i in "${!part_pids[@]}"; do
		[[ ${part_names[$i]} == payments-* ]] || continue
		p=${part_pids[$i]}
		[ "$p" != "$paused_pid" ] || resume_paused
		kill -TERM "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
		k=$((k + 1))
		start_participant "$i" payments "$k" "${1:-}"
	done
}

nats_healthy() {
	python3 -c 'import sys,urllib.request as u
sys.exit(b"ok" not in u.urlopen(sys.argv[1], timeout=1).read())' \
		"http://127.0.0.1:$SAGAD_TEST_NATS_MONITOR_PORT/healthz" 2>/dev/null
}

start_nats() {  # same ports and store as services.sh gave it (its cleanup finds it by the store)
	local i
	nats-server -a 127.0.0.1 -p "$SAGAD_TEST_NATS_PORT" -m "$SAGAD_TEST_NATS_MONITOR_PORT" -js \
		-sd "$SAGAD_TEST_NATS_STORE" </dev/null >>"$logs/nats-restarted.log" 2>&1 &
	nats_pid=$!
	for ((i = 0; i < 300; i++)); do nats_healthy && return 0; sleep 0.1; done
	say "nats-server not healthy after a restart"; return 1
}

stop_pid() {  # stop_pid PID SIGNAL: signal, then wait until it is gone (not necessarily our child)
	local i
	kill -s "$2" "$1" 2>/dev/null || return 0
	for ((i = 0; i < 300; i++)); do
		kill -0 "$1" 2>/dev/null || { wait "$1" 2>/dev/null || true; return 0; }
		sleep 0.1
	done
	kill -KILL "$1" 2>/dev/null || true
}

pg_ctl() { "${AS_PG[@]}" "$SAGAD_TEST_PG_BIN/pg_ctl" -D "$SAGAD_TEST_PG_DATA" "$@" >/dev/null 2>&1; }

cleanup() {
	local p
	[ -z "$paused_pid" ] || kill -CONT "$paused_pid" 2>/dev/null || true
	for p in $bench_pid ${part_pids[@]+"${part_pids[@]}"} $sagad_pid; do kill -TERM "$p" 2>/dev/null || true; done
	for p in $bench_pid ${part_pids[@]+"${part_pids[@]}"} $sagad_pid; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# ---- faults --------------------------------------------------------------------------------
n_faults=0
fault() {
	local kind=${fault_kinds[$((RANDOM % ${#fault_kinds[@]}))]} i down sig old
	n_faults=$((n_faults + 1))
	case $kind in
	none) n_faults=$((n_faults - 1)) ;;
	sagad)
		rand 0 3
		old=$sagad_pid down=$R
		kill -KILL "$sagad_pid" 2>/dev/null || true
		wait "$sagad_pid" 2>/dev/null || true
		sleep "$down"
		start_sagad
		say "fault $n_faults [sagad]: kill -9 sagad (pid $old), restarted after ${down}s as pid $sagad_pid" ;;
	participant)
		if [ -n "$paused_pid" ]; then n_faults=$((n_faults - 1)); return; fi
		rand 5 30
		i=$((RANDOM % ${#part_pids[@]})) down=$R
		paused_pid=${part_pids[$i]} resume_at=$((SECONDS + down))
		kill -STOP "$paused_pid"
		say "fault $n_faults [participant]: SIGSTOP participant ${part_names[$i]} (pid $paused_pid) for ${down}s" ;;
	nats)
		rand 1 5
		sig=TERM down=$R
		[ $((RANDOM % 2)) = 0 ] || sig=KILL
		old=$nats_pid
		stop_pid "$nats_pid" "$sig" 2>/dev/null # also hides bash's "Killed" notice
		sleep "$down"
		start_nats
		say "fault $n_faults [nats]: nats-server (pid $old) stopped with SIG$sig, restarted after ${down}s as pid $nats_pid" ;;
	failing)
		if [ "$heal_at" != 0 ]; then n_faults=$((n_faults - 1)); return; fi
		rand 60 180
		down=$R
		restart_payments broken
		heal_at=$((SECONDS + down))
		say "fault $n_faults [failing]: every payments process fails every command for ${down}s" ;;
	postgres)
		rand 1 5
		down=$R
		pg_ctl stop -m immediate -w -t 30 || say "pg_ctl stop -m immediate failed"
		sleep "$down"
		pg_ctl start -w -t 60 -l "$SAGAD_RUN_DIR/postgres.log" || { say "PostgreSQL does not start again"; exit 1; }
		say "fault $n_faults [postgres]: PostgreSQL stopped with -m immediate, started again after ${down}s" ;;
	esac
}

resume_paused() {
	[ -n "$paused_pid" ] || return 0
	kill -CONT "$paused_pid" 2>/dev/null || true
	say "SIGCONT participant pid $paused_pid"
	paused_pid=''
}

heal_payments() {
	[ "$heal_at" != 0 ] || return 0
	restart_payments
	heal_at=0
	say "payments healed (pids $(for i in "${!part_pids[@]}"; do [[ ${part_names[$i]} != payments-* ]] || printf '%s ' "${part_pids[$i]}"; done))"
}

# ---- samples: sagad's memory, the outbox, the streams --------------------------------------
echo "t_s,phase,sagad_pid,sagad_rss_kb,sagas,in_flight,outbox_rows,dead_letters,cmd_msgs,cmd_bytes,reply_msgs,reply_bytes,submit_msgs,event_bytes,dlq_bytes,reply_ack_pending,reply_pending,submit_ack_pending" >"$out/soak.csv"
streams() {  # one CSV fragment of stream and consumer figures, or blanks when NATS is down
	curl -s -m 2 "http://127.0.0.1:$SAGAD_TEST_NATS_MONITOR_PORT/jsz?accounts=true&streams=true&consumers=true" 2>/dev/null |
		python3 -c 'import json,sys
try:
    d = json.load(sys.stdin)
except Exception:
    print(",,,,,,,,,"); sys.exit(0)
st, co = {}, {}
for a in d.get("account_details", []):
    for s in a.get("stream_detail", []):
        st[s["name"]] = s["state"]
        for c in s.get("consumer_detail") or []:
            co[(s["name"], c["name"])] = c
g = lambda n, k: st.get("SOAK_" + n, {}).get(k, "")
c = lambda n, name, k: co.get(("SOAK_" + n, name), {}).get(k, "")
print(",".join(str(x) for x in (g("CMD", "messages"), g("CMD", "bytes"), g("REPLY", "messages"),
      g("REPLY", "bytes"), g("SUBMIT", "messages"), g("EVENT", "bytes"), g("DLQ", "bytes"),
      c("REPLY", "sagad_replies", "num_ack_pending"), c("REPLY", "sagad_replies", "num_pending"),
      c("SUBMIT", "sagad_submits", "num_ack_pending"))))'
}
sample() {  # sample PHASE
	local rss='' db
	alive "$sagad_pid" && rss=$(awk '/^VmRSS/ {print $2}' "/proc/$sagad_pid/status" 2>/dev/null || true)
	db=$(sql "SELECT count(*) || ',' || count(*) FILTER (WHERE state IN ('running', 'compensating'))
	           || ',' || (SELECT count(*) FROM saga_outbox) || ',' || (SELECT count(*) FROM saga_dead_letter)
	          FROM saga_instance" || true)
	[ -n "$db" ] || db=",,,"
	echo "$((SECONDS - t0)),$1,$sagad_pid,$rss,$db,$(streams)" >>"$out/soak.csv"
}

# ---- run -------------------------------------------------------------------------------------
{
	echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ) host=$(uname -n) cores=$(nproc)"
	echo "git=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo +changes)"
	echo "minutes=$minutes rate=$rate faults=$faults fault_every=$fault_every seed=$seed participants=$parts fail_rate=$fail_rate"
} | tee "$out/run.env"
"$bin/sagad" migrate >"$logs/migrate.log" 2>&1 || { cat "$logs/migrate.log"; exit 1; }
"$bin/sagactl" define sagas/order.yaml >/dev/null
start_sagad
start_participants
say "sagad pid $sagad_pid, ${#part_pids[@]} participants; load: $rate starts/s for $minutes min"
duration=$(python3 -c "print(int(round($minutes * 60)))")
"$bench" --tag soak --saga order --rate "$rate" --warmup 0 --duration "$duration" --drain 0 \
	--progress 0 --max-completion-p95-ms 600000 --csv "$out/bench.csv" --json "$out/bench.json" \
	--accepted-file "$out/accepted.txt" --participant-fail-rate "$fail_rate" \
	--participant-instances "$parts" >"$out/bench.txt" 2>"$logs/saga-bench.log" &
bench_pid=$!
sample load
rand "$fault_min" "$fault_max"
next_sample=$((SECONDS + sample_every)) next_fault=$((SECONDS + R))
while alive "$bench_pid"; do
	if [ -n "$paused_pid" ] && [ "$SECONDS" -ge "$resume_at" ]; then resume_paused; fi
	if [ "$heal_at" != 0 ] && [ "$SECONDS" -ge "$heal_at" ]; then heal_payments; fi
	if [ "$SECONDS" -ge "$next_fault" ]; then
		fault
		rand "$fault_min" "$fault_max"
		next_fault=$((SECONDS + R))
	fi
	if [ "$SECONDS" -ge "$next_sample" ]; then sample load; next_sample=$((SECONDS + sample_every)); fi
	if ! alive "$sagad_pid"; then say "sagad (pid $sagad_pid) died by itself: $(tail -n 2 "$logs/sagad-$sagad_n.log")"; exit 1; fi
	sleep 1
done
bench_rc=0
wait "$bench_pid" || bench_rc=$?
bench_pid=''
[ "$bench_rc" = 0 ] || { say "saga-bench failed (exit $bench_rc): $(tail -n 3 "$logs/saga-bench.log")"; exit 1; }
resume_paused
heal_payments
say "load done after $n_faults faults; draining (at most ${drain_max}s)"

# ---- drain ---------------------------------------------------------------------------------
# Idle: no saga running, nothing in the outbox, the work streams empty and nothing in sagad's
# hands. A reply fetched by a sagad that was killed comes back only after consumer_ack_wait (30 s).
idle() {
	local left cmd reply submit ack sack
	left=$(sql "SELECT (SELECT count(*) FROM saga_instance WHERE state IN ('running', 'compensating'))
	                 + (SELECT count(*) FROM saga_outbox)" || true)
	IFS=, read -r cmd _ reply _ submit _ _ ack _ sack < <(streams)
	[ "$left" = 0 ] && [ "$cmd" = 0 ] && [ "$reply" = 0 ] && [ "$submit" = 0 ] && [ "$ack" = 0 ] &&
		[ "$sack" = 0 ]
}
drained=0 drain_start=$SECONDS
while [ $((SECONDS - drain_start)) -lt "$drain_max" ]; do
	if idle; then drained=1; break; fi
	if [ "$SECONDS" -ge "$next_sample" ]; then sample drain; next_sample=$((SECONDS + sample_every)); fi
	sleep 1
done
sleep 2 # the relay's last acks, the consumers' last acks
sample end
say "drain $([ "$drained" = 1 ] && echo "done in $((SECONDS - drain_start))s" || echo "NOT done after ${drain_max}s")"

# ---- verdict -------------------------------------------------------------------------------
violations=0
check() {  # check INVARIANT NAME VALUE [DESCRIPTION]: VALUE must be 0
	local mark=ok
	if [ -z "$2" ] || [ -z "$3" ]; then mark=ERROR violations=$((violations + 1))
	elif [ "$3" != 0 ]; then mark=VIOLATED violations=$((violations + 1)); fi
	printf '  %-3s %-34s %8s  %-8s %s\n' "$1" "$2" "${3:-?}" "$mark" "${4:-}" | tee -a "$out/soak.log"
}
info() { printf '  %-22s %s\n' "$1" "$2" | tee -a "$out/soak.log"; }

n_accepted=$(wc -l <"$out/accepted.txt")
i1=$(PGCONNECT_TIMEOUT=3 "${PSQL[@]}" -c "SET search_path TO soak" \
	-c "CREATE TEMP TABLE accepted_keys (key text PRIMARY KEY)" \
	-c "\\copy accepted_keys FROM '$out/accepted.txt'" \
	-c "SELECT count(*) FROM accepted_keys k WHERE NOT EXISTS
	      (SELECT 1 FROM saga_instance i WHERE i.correlation_id = k.key)" 2>"$logs/i1.err" || true)

echo | tee -a "$out/soak.log"
say "invariants (after $n_faults faults, $n_accepted starts answered accepted)"
check I1 accepted_without_saga "$i1" "accepted starts (accepted.txt) with no saga row"
check I1 two_sagas_for_one_key "$(sql "SELECT count(*) - count(DISTINCT correlation_id) FROM saga_instance
                                      WHERE correlation_id LIKE 'soak:%'")" "idempotency keys with more than one saga"
check I2 still_running "$(sql "SELECT count(*) FROM saga_instance WHERE state IN ('running', 'compensating')")" \
	"sagas neither ended nor visibly failed after the drain"
while IFS='|' read -r inv name n desc; do
	[ -n "$inv" ] || continue
	[ "$inv $name" != "I1 accepted_without_row" ] || continue # needs saga ids; checked by key above
	check "$inv" "$name" "$n" "$desc"
done < <(sql "SELECT invariant, check_name, violations, description FROM saga_check_invariants()" || echo 'I? saga_check_invariants||')
check I3 one_effect_per_step_phase "$(sql "SELECT count(*) FROM (SELECT saga_id, step, phase FROM participant_effects
                                          GROUP BY 1, 2, 3 HAVING count(*) > 1) g")" \
	"a step's action or compensation done twice at a participant"
check I3 effect_without_ledger_row "$(sql "SELECT count(*) FROM participant_effects e WHERE NOT EXISTS
                                          (SELECT 1 FROM participant_ledger l WHERE l.idempotency_key = e.idempotency_key)")" \
	"side effects without the participant's dedupe record (ledger)"
# I7: back to empty after the drain, and sagad's memory per incarnation.
IFS=, read -r _ _ _ _ _ _ end_outbox _ end_cmd _ end_reply _ end_submit _ _ end_ack _ end_sack \
	< <(tail -n 1 "$out/soak.csv")
check I7 outbox_rows_after_drain "$end_outbox"
check I7 commands_left_in_stream "$end_cmd" "SOAK_CMD messages (work queue: acked ones are gone)"
check I7 replies_left_in_stream "$end_reply"
check I7 submits_left_in_stream "$end_submit"
check I7 reply_ack_pending "$end_ack"
check I7 submit_ack_pending "$end_sack"
rss_growth=$(python3 - "$out/soak.csv" <<'EOF'
import csv, sys
by_pid = {}
for r in csv.DictReader(open(sys.argv[1])):
    if r["sagad_rss_kb"]:
        by_pid.setdefault(r["sagad_pid"], []).append((int(r["t_s"]), int(r["sagad_rss_kb"])))
worst, lines = 0, []
for pid, xs in by_pid.items():
    first, last = xs[0][1], xs[-1][1]
    grow = last - first
    # An incarnation grows too much when it more than doubles and gains over 64 MB.
    if grow > 65536 and last > 2 * first:
        worst += 1
    lines.append("pid %s: %d s, RSS %.1f -> %.1f MB (max %.1f)" % (pid, xs[-1][0] - xs[0][0],
                 first / 1024, last / 1024, max(x[1] for x in xs) / 1024))
print(worst)
for l in lines[-12:]:
    print(l)
EOF
)
check I7 sagad_rss_runaway "$(head -n 1 <<<"$rss_growth")" "incarnations whose RSS doubled and grew by > 64 MB"

echo | tee -a "$out/soak.log"
say "figures"
{
	info "faults" "$n_faults$([ "$n_faults" = 0 ] || printf ':') $(grep -o '^\[ *[0-9]*s\] fault [0-9]* \[[a-z]*\]' "$out/soak.log" |
		sed 's/.*\[\([a-z]*\)\]$/\1/' | sort | uniq -c | awk '{printf "%s%s x%s", sep, $2, $1; sep=", "}')"
	info "sagas by state" "$(sql "SELECT string_agg(state || ' ' || n, ', ' ORDER BY state) FROM
	                               (SELECT state, count(*) n FROM saga_instance GROUP BY state) s")"
	info "dead letters by class" "$(sql "SELECT coalesce(string_agg(error_class || ' ' || n, ', '), 'none') FROM
	                                     (SELECT error_class, count(*) n FROM saga_dead_letter GROUP BY 1) d")"
	info "side effects" "$(sql "SELECT count(*) FROM participant_effects")"
	info "retries / timeouts" "$(sql "SELECT count(*) FILTER (WHERE event = 'retry_due') || ' / '
	                                 || count(*) FILTER (WHERE event = 'timeout') FROM saga_transition
	                                 WHERE outcome = 'applied'")"
} || true
python3 - "$out/soak.csv" <<'EOF' | tee -a "$out/soak.log"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
def col(name):
    return [(int(r["t_s"]), float(r[name])) for r in rows if r[name] not in ("", None)]
print("  resource             first       max      last   (every --sample-every s: soak.csv)")
for name, unit, div in (("sagad_rss_kb", "MB", 1024), ("outbox_rows", "rows", 1), ("in_flight", "sagas", 1),
                        ("cmd_bytes", "KB", 1024), ("reply_bytes", "KB", 1024), ("event_bytes", "MB", 1 << 20),
                        ("reply_ack_pending", "msgs", 1)):
    xs = col(name)
    if xs:
        print("  %-20s %6.1f %9.1f %9.1f  %s" % (name, xs[0][1] / div, max(v for _, v in xs) / div, xs[-1][1] / div, unit))
EOF
printf '%s\n' "$rss_growth" | tail -n +2 | sed 's/^/  sagad /' | tee -a "$out/soak.log"
python3 -c 'import json,sys
s = json.load(open(sys.argv[1]))["starts"]
print("  load (saga-bench): %d starts sent, %d answered accepted, %d rejected (sagad, NATS or"
      " PostgreSQL down), %d unanswered" % (s["sent"], s["accepted"], s["rejected"], s["unanswered"]))' \
	"$out/bench.json" 2>/dev/null | tee -a "$out/soak.log" || true

echo | tee -a "$out/soak.log"
if [ "$drained" = 1 ] && [ "$violations" = 0 ]; then
	say "PASS: every invariant holds (results in $out)"
	exit 0
fi
say "FAIL: $violations check(s) violated$([ "$drained" = 1 ] || echo ", drain incomplete") (results in $out)"
exit 1
}
