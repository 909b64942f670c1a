#!/usr/bin/env bash
# Demo body, run by scripts/demo.sh inside scripts/services.sh (which provides
# SAGAD_DATABASE_URL, SAGAD_NATS_URL and SAGAD_RUN_DIR and cleans up after).
set -euo pipefail
build=${1:-build-demo}
sagad=$build/orchestrator/sagad
sagactl=$build/orchestrator/sagactl
log=$SAGAD_RUN_DIR/sagad.log
sagad_pid=

stop_sagad() {
	if [ -n "$sagad_pid" ] && kill -0 "$sagad_pid" 2>/dev/null; then
		kill -TERM "$sagad_pid"
		wait "$sagad_pid" || true
	fi
}
trap stop_sagad EXIT

echo "-- sagad migrate"
"$sagad" migrate

echo "-- sagad run (log: $log)"
"$sagad" run >"$log" 2>&1 &
sagad_pid=$!
for _ in $(seq 1 100); do
	grep -q '"msg":"ready' "$log" && break
	kill -0 "$sagad_pid" 2>/dev/null || { cat "$log"; echo "sagad exited early" >&2; exit 1; }
	sleep 0.1
done
grep -q '"msg":"ready' "$log" || { cat "$log"; echo "sagad did not become ready" >&2; exit 1; }
cat "$log"

echo "-- sagactl status"
"$sagactl" status

echo "-- stopping sagad (SIGTERM)"
kill -TERM "$sagad_pid"
rc=0
wait "$sagad_pid" || rc=$?
sagad_pid=
tail -n 1 "$log"
echo "sagad exited with status $rc"
exit "$rc"
