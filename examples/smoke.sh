#!/usr/bin/env bash
# Smoke check of the participant library and saga-participant against a real PostgreSQL + NATS.
#
# Usage: bash examples/smoke.sh [BUILD_DIR]   (default build-part; run it by hand, not by meson)
# Starts throw-away services through scripts/services.sh, applies sagad's migrations, lets
# `sagad check` create the streams, then drives `saga-participant --service stock` with
# `saga-send-command` and checks replies, the ledger and participant_effects.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build-part}" && pwd)

if [ -z "${SAGAD_SMOKE_INNER:-}" ]; then
  SAGAD_SMOKE_INNER=1 exec bash "$root/scripts/services.sh" -- bash "$0" "$build"
fi

# --- inside services.sh: SAGAD_DATABASE_URL, SAGAD_NATS_URL, SAGAD_RUN_DIR are set -------------
export SAGAD_DB_SCHEMA=smoke
# saga-send-command plays sagad and the checks look at every stream: the admin NATS user;
# the participant runs as its own (docs/security.md).
stock_nats=${SAGAD_NATS_URL_STOCK:-$SAGAD_NATS_URL}
export SAGAD_NATS_URL=${SAGAD_NATS_URL_ADMIN:-$SAGAD_NATS_URL}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
sagad=$build/orchestrator/sagad
participant=$build/examples/saga-participant
send=$build/examples/saga-send-command
log=$SAGAD_RUN_DIR/participant.log
pid=''
failures=0

say() { printf 'smoke: %s\n' "$*" >&2; }
fail() { say "FAIL: $*"; failures=$((failures + 1)); }
ok() { say "ok: $*"; }
sql() { "$SAGAD_TEST_PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 "$SAGAD_DATABASE_URL" \
          -c "SET search_path TO smoke" -c "$1"; }
new_uuid() { cat /proc/sys/kernel/random/uuid; }
field() { python3 -c 'import json,sys; print(json.loads(sys.stdin.read())[sys.argv[1]])' "$1"; }

start_participant() {  # start_participant [ARGS...]: stock service, log appended to $log
  local n
  n=$(grep -c '"msg":"ready"' "$log" 2>/dev/null || true)
  SAGAD_NATS_URL=$stock_nats "$participant" --service stock --name smoke-stock "$@" 2>>"$log" &
  pid=$!
  for _ in $(seq 100); do
    [ "$(grep -c '"msg":"ready"' "$log" 2>/dev/null || true)" -gt "${n:-0}" ] && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; say "saga-participant died at start"; exit 1; }
    sleep 0.1
  done
  say "saga-participant not ready after 10 s"; exit 1
}

stop_participant() {  # SIGTERM must stop it cleanly with exit 0
  local rc=0
  kill -TERM "$pid"
  wait "$pid" || rc=$?
  pid=''
  if [ "$rc" -eq 0 ]; then ok "saga-participant stopped on SIGTERM with exit 0"
  else fail "saga-participant exit code $rc after SIGTERM"; fi
}

cleanup() { [ -z "$pid" ] || kill -TERM "$pid" 2>/dev/null || true; }
trap cleanup EXIT

send_cmd() {  # send_cmd SAGA_ID PHASE ATTEMPT [more args]: prints the reply JSON
  local sid=$1 phase=$2 attempt=$3; shift 3
  "$send" --subject stock.reserve --saga-id "$sid" --step reserve_stock --phase "$phase" \
    --attempt "$attempt" "$@"
}

expect() {  # expect WHAT JSON KEY VALUE
  local got
  got=$(printf '%s' "$2" | field "$3")
  if [ "$got" = "$4" ]; then ok "$1: $3=$4"; else fail "$1: $3 is '$got', expected '$4' ($2)"; fi
}

expect_eq() {  # expect_eq WHAT GOT WANT
  if [ "$2" = "$3" ]; then ok "$1 ($2)"; else fail "$1: got '$2', expected '$3'"; fi
}

say "migrate + check (creates the streams)"
"$sagad" migrate >/dev/null 2>"$SAGAD_RUN_DIR/sagad-migrate.log" || { cat "$SAGAD_RUN_DIR/sagad-migrate.log" >&2; exit 1; }
"$sagad" check >/dev/null 2>"$SAGAD_RUN_DIR/sagad-check.log" || { cat "$SAGAD_RUN_DIR/sagad-check.log" >&2; exit 1; }

start_participant
if grep '"msg":"ready"' "$log" | tail -n 1 | grep -q '"subjects":\["stock.reserve","stock.release"\]'; then
  ok "ready line names both subjects"
else
  fail "ready line: $(grep '"msg":"ready"' "$log" | tail -n 1)"
fi

# --- 1. action, then the same command again (attempt 2): stored reply, one effect -------------
s1=$(new_uuid)
r=$(send_cmd "$s1" action 1)
expect "first action" "$r" outcome success
expect "first action" "$r" msg_id "reply:$s1/reserve_stock/a:1"
expect "first action" "$r" output "{\"service\":\"stock\",\"reservation\":\"${s1:0:8}\"}"
expect "first action" "$r" content_type "application/x-protobuf; proto=saga.v1.StepReply"
expect "first action" "$r" correlation_id "corr-$s1"
r=$(send_cmd "$s1" action 2)
expect "re-sent action (attempt 2)" "$r" outcome success
expect "re-sent action (attempt 2)" "$r" attempt 2
expect "re-sent action (attempt 2)" "$r" msg_id "reply:$s1/reserve_stock/a:2"
expect "re-sent action (attempt 2)" "$r" output "{\"service\":\"stock\",\"reservation\":\"${s1:0:8}\"}"
expect_eq "one effect row for the action key" \
  "$(sql "SELECT count(*) FROM participant_effects WHERE idempotency_key = '$s1/reserve_stock/a'")" 1

# --- 2. compensation after the action: runs once; the recorded action outcome stands ----------
r=$("$send" --subject stock.release --saga-id "$s1" --step reserve_stock --phase compensation --attempt 1)
expect "compensation" "$r" outcome success
expect "compensation" "$r" msg_id "reply:$s1/reserve_stock/c:1"
r=$(send_cmd "$s1" action 3)
expect "action re-sent after its compensation (it had run)" "$r" outcome success
expect_eq "still one effect row for the action" \
  "$(sql "SELECT count(*) FROM participant_effects WHERE idempotency_key = '$s1/reserve_stock/a'")" 1

# --- 3. compensation BEFORE the action: tombstone, the action never runs ----------------------
s2=$(new_uuid)
r=$("$send" --subject stock.release --saga-id "$s2" --step reserve_stock --phase compensation --attempt 1)
expect "compensation first" "$r" outcome success
expect_eq "tombstone recorded under the action's consumer" \
  "$(sql "SELECT consumer || ' ' || outcome || ' ' || error_code FROM participant_ledger WHERE idempotency_key = '$s2/reserve_stock/a'")" \
  "p_stock_reserve 3 compensated"
r=$(send_cmd "$s2" action 1)
expect "action after its compensation" "$r" outcome permanent_failure
if printf '%s' "$r" | field error | grep -q '^compensated'; then ok "error starts with 'compensated'"
else fail "error of the tombstoned action: $r"; fi
expect_eq "no effect row for the tombstoned action" \
  "$(sql "SELECT count(*) FROM participant_effects WHERE idempotency_key = '$s2/reserve_stock/a'")" 0

# --- 4. garbage and a command with a foreign reply subject: terminated, no crash --------------
"$send" --subject stock.reserve --garbage >/dev/null
s3=$(new_uuid)
send_cmd "$s3" action 1 --reply-subject elsewhere.reply.x --no-wait >/dev/null
sleep 1.5  # longer than the nak delay: a put-back command would have come again
if kill -0 "$pid" 2>/dev/null; then ok "saga-participant survived garbage"; else fail "saga-participant died"; fi
expect_eq "garbage logged once as terminated" "$(grep -c 'terminated, it can never be read' "$log")" 1
expect_eq "foreign reply subject logged once as terminated" "$(grep -c 'terminated, it breaks a rule' "$log")" 1
if grep 'terminated, it breaks a rule' "$log" | grep -q "\"saga_id\":\"$s3\""; then
  ok "the rule-breaking command's log line carries its saga id"
else
  fail "no saga id on the log line"
fi
r=$(send_cmd "$(new_uuid)" action 1)
expect "a good command after the bad ones" "$r" outcome success
jsz=$(python3 -c 'import sys,urllib.request as u; print(u.urlopen(sys.argv[1]).read().decode())' \
  "http://127.0.0.1:$SAGAD_TEST_NATS_MONITOR_PORT/jsz?consumers=true")
expect_eq "SAGA_CMD holds no command (all acked or terminated)" \
  "$(printf '%s' "$jsz" | python3 -c 'import json,sys
d=json.load(sys.stdin)
print(sum(s["state"]["messages"] for a in d["account_details"] for s in a["stream_detail"] if s["name"]=="SAGA_CMD"))')" 0
stop_participant

# --- 5. permanent failure: effect rolled back, failure recorded, handler not run again ---------
start_participant --fail-rate 1
s4=$(new_uuid)
r=$(send_cmd "$s4" action 1)
expect "action with --fail-rate 1" "$r" outcome permanent_failure
r=$(send_cmd "$s4" action 2)
expect "re-sent failed action" "$r" outcome permanent_failure
expect "re-sent failed action" "$r" attempt 2
expect_eq "no effect row for the failed action (rolled back to the savepoint)" \
  "$(sql "SELECT count(*) FROM participant_effects WHERE saga_id = '$s4'")" 0
expect_eq "handler ran once for the failed key" "$(grep -c "\"saga_id\":\"$s4\".*permanent_failure declined: " "$log")" 1
stop_participant

# --- 6. retryable failure: nothing recorded, the next attempt runs the handler again ---------
start_participant --retryable-rate 1
s5=$(new_uuid)
r=$(send_cmd "$s5" action 1)
expect "action with --retryable-rate 1" "$r" outcome retryable_failure
expect_eq "no ledger row after a retryable failure" \
  "$(sql "SELECT count(*) FROM participant_ledger WHERE idempotency_key = '$s5/reserve_stock/a'")" 0
stop_participant
start_participant
r=$(send_cmd "$s5" action 2)
expect "next attempt after a retryable failure" "$r" outcome success
expect_eq "exactly one effect row for it" \
  "$(sql "SELECT count(*) FROM participant_effects WHERE saga_id = '$s5'")" 1
stop_participant

# --- 7. PostgreSQL restart: the command is put back (logged once) and answered afterwards ------
as_pg=(env -C /)
[ "$(id -u)" -ne 0 ] || as_pg=(runuser -u postgres -- env -C /)
start_participant
"${as_pg[@]}" "$SAGAD_TEST_PG_BIN/pg_ctl" -D "$SAGAD_TEST_PG_DATA" -m fast -w stop >/dev/null
s6=$(new_uuid)
send_cmd "$s6" action 1 --timeout-ms 30000 >"$SAGAD_RUN_DIR/s6.out" &
sender=$!
sleep 3
"${as_pg[@]}" "$SAGAD_TEST_PG_BIN/pg_ctl" -D "$SAGAD_TEST_PG_DATA" -l "$SAGAD_RUN_DIR/postgres.log" \
  -w start >/dev/null
if wait "$sender"; then r=$(cat "$SAGAD_RUN_DIR/s6.out"); else r='{"outcome":"none"}'; fi
expect "command sent while PostgreSQL was down" "$r" outcome success
expect_eq "connection loss logged once" "$(grep -c 'PostgreSQL connection lost' "$log")" 1
if grep -q 'reconnected to PostgreSQL' "$log"; then ok "reconnected to PostgreSQL"; else fail "no reconnection line"; fi
expect_eq "one effect row for it" "$(sql "SELECT count(*) FROM participant_effects WHERE saga_id = '$s6'")" 1
stop_participant

# --- summary -----------------------------------------------------------------------------------
expect_eq "no duplicate side effects at all" \
  "$(sql "SELECT count(*) - count(DISTINCT idempotency_key) FROM participant_effects")" 0
if grep -E 'AddressSanitizer|LeakSanitizer|runtime error:' "$log" >&2; then
  fail "sanitizer reports in $log"
fi
if [ "$failures" -ne 0 ]; then
  say "$failures check(s) failed; participant log:"
  cat "$log" >&2
  exit 1
fi
say "all checks passed"
