#!/usr/bin/env bash
# Demo body, run by scripts/demo.sh inside scripts/services.sh (which provides
# SAGAD_DATABASE_URL, SAGAD_NATS_URL, the per-role URLs and SAGAD_RUN_DIR, and
# cleans up after): migrate, register sagas/order.yaml, start sagad and the
# three order participants (some card charges fail), run a few hundred order
# sagas, and print what happened. Every process runs as its own restricted
# user (docs/security.md): sagad as NATS user sagad and a sagad_service login,
# each participant as its own NATS user, the client as NATS user client.
set -euo pipefail
build=${1:-build-demo}
count=${SAGAD_DEMO_SAGAS:-400}
rate=${SAGAD_DEMO_RATE:-200}
bin=$build/orchestrator
export SAGAD_HTTP_LISTEN=${SAGAD_HTTP_LISTEN:-127.0.0.1:0} # any free port: never collide
pids=()

stop_all() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap stop_all EXIT

sql() { psql "$SAGAD_DATABASE_URL" -X -q -v ON_ERROR_STOP=1 "$@"; }
# The runner's URL for a role, else the general one (a runner without users).
nats_as() { local v=SAGAD_NATS_URL_$1; printf '%s' "${!v:-$SAGAD_NATS_URL}"; }
db_as() { local v=SAGAD_DATABASE_URL_$1; printf '%s' "${!v:-$SAGAD_DATABASE_URL}"; }

echo "-- sagad migrate (as the database owner)"
"$bin/sagad" migrate
echo "-- sagactl define sagas/order.yaml"
SAGAD_NATS_URL=$(nats_as OPERATOR) "$bin/sagactl" define sagas/order.yaml

echo "-- starting sagad and the participants, each on its own user (logs in $SAGAD_RUN_DIR)"
SAGAD_DATABASE_URL=$(db_as SERVICE) "$bin/sagad" run >"$SAGAD_RUN_DIR/sagad.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
	grep -q '"msg":"ready' "$SAGAD_RUN_DIR/sagad.log" && break
	sleep 0.1
done
grep -q '"msg":"ready' "$SAGAD_RUN_DIR/sagad.log" || { cat "$SAGAD_RUN_DIR/sagad.log"; exit 1; }
SAGAD_NATS_URL=$(nats_as STOCK) "$build/examples/saga-participant" --service stock \
	>"$SAGAD_RUN_DIR/stock.log" 2>&1 &
pids+=($!)
# 10% of card charges are declined for good (-> compensation), 5% of attempts fail transiently (-> retry).
SAGAD_NATS_URL=$(nats_as PAYMENTS) "$build/examples/saga-participant" --service payments \
	--fail-rate 0.1 --retryable-rate 0.05 >"$SAGAD_RUN_DIR/payments.log" 2>&1 &
pids+=($!)
SAGAD_NATS_URL=$(nats_as SHIPPING) "$build/examples/saga-participant" --service shipping --latency-ms 2 \
	>"$SAGAD_RUN_DIR/shipping.log" 2>&1 &
pids+=($!)
sleep 0.5

echo "-- starting $count order sagas at $rate/s"
SAGAD_NATS_URL=$(nats_as CLIENT) SAGAD_NATS_NAME=saga-demo-client \
	"$build/examples/saga-demo-client" "$count" "$rate" order

echo "-- waiting for every saga to finish"
for _ in $(seq 1 600); do
	active=$(sql -tA -c "SELECT count(*) FROM saga_instance WHERE state IN ('running','compensating')")
	[ "$active" = 0 ] && break
	sleep 0.1
done

echo
echo "== summary"
sql -c "SELECT state, count(*) AS sagas FROM saga_instance GROUP BY state ORDER BY state"
sql -c "SELECT state,
	       round((percentile_cont(0.50) WITHIN GROUP (ORDER BY extract(epoch FROM ended_at - created_at)) * 1000)::numeric, 1) AS p50_ms,
	       round((percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM ended_at - created_at)) * 1000)::numeric, 1) AS p95_ms,
	       round((percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM ended_at - created_at)) * 1000)::numeric, 1) AS p99_ms
	  FROM saga_instance WHERE ended_at IS NOT NULL GROUP BY state ORDER BY state" \
	--pset=title='completion latency (start to end)'
sql -c "SELECT count(*) AS side_effects, count(*) - count(DISTINCT idempotency_key) AS duplicate_side_effects,
	       count(*) FILTER (WHERE phase = 'compensation') AS compensations FROM participant_effects"
sql -c "SELECT error_class, count(*) AS dead_letters FROM saga_dead_letter GROUP BY 1" \
	--pset=title='dead letters'
sql -c "SELECT count(*) AS retried_attempts FROM saga_step WHERE attempt > 1"
psql "$(db_as OPERATOR)" -X -q -v ON_ERROR_STOP=1 \
	-c "SELECT saga_id, state, reason, waiting_step, attempts, last_error FROM saga_stuck" \
	--pset=title='stuck sagas (view saga_stuck, read as a sagad_operator login)'
echo "-- who is connected as whom (NATS /connz, pg_stat_activity), and refusals logged"
if [ -n "${SAGAD_TEST_NATS_MONITOR_PORT:-}" ]; then
	python3 -c 'import json,sys,urllib.request as u
conns = json.load(u.urlopen(sys.argv[1], timeout=5))["connections"]
for c in sorted(conns, key=lambda c: c.get("name", "")):
    print("   nats  %-12s as user %s" % (c.get("name", "?"), c.get("authorized_user", "(none)")))' \
		"http://127.0.0.1:$SAGAD_TEST_NATS_MONITOR_PORT/connz?auth=1"
fi
sql -tA -c "SELECT format('   pg    %-12s as login %s', application_name, usename) FROM pg_stat_activity
	  WHERE application_name LIKE 'sagad%' ORDER BY 1"
echo "   NATS refusals logged by sagad and the participants: $(cat "$SAGAD_RUN_DIR"/{sagad,stock,payments,shipping}.log |
	grep -c 'NATS refused' || true)"
echo "-- one compensated saga's timeline"
sql -c "SELECT seq, event, outcome, from_state, to_state, step, phase, attempt, left(detail, 60) AS detail
	  FROM saga_transition WHERE saga_id = (SELECT id FROM saga_instance WHERE state = 'compensated' LIMIT 1)
	  ORDER BY seq"
echo "-- stopping (SIGTERM)"
