#!/usr/bin/env bash
# Runs a command next to a throw-away PostgreSQL cluster and NATS JetStream server, then tears both down.
#
# Usage: scripts/services.sh [--keep] -- COMMAND [ARGS...]
# Env:   SAGAD_RUN_DIR_BASE (parent of the run dir, default /tmp), SAGAD_KEEP_RUN_DIR=1 (same as --keep),
#        SAGAD_PG_BIN (PostgreSQL bin dir; default: 15, else newest under /usr/lib/postgresql).
# The command gets SAGAD_DATABASE_URL (owner), SAGAD_DATABASE_URL_SERVICE / _OPERATOR (logins in the
#        sagad_service / sagad_operator roles), SAGAD_NATS_URL (NATS user sagad), SAGAD_NATS_URL_<ROLE>
#        for ADMIN, OPERATOR, CLIENT, STOCK, PAYMENTS, SHIPPING, and SAGAD_TEST_* (all also in
#        $SAGAD_RUN_DIR/env). The NATS users, their permissions and the roles: docs/security.md.
# shellcheck disable=SC2317  # cleanup/signal functions are only reached through traps
set -euo pipefail
{ # read the whole script before running it, so editing it mid-run cannot derail a running copy

log() { printf 'services: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { sed -n '4,10s/^# \{0,1\}//p' "$0" >&2; exit 2; }

keep=${SAGAD_KEEP_RUN_DIR:-0}
while [ $# -gt 0 ]; do
  case $1 in
    --keep) keep=1; shift ;;
    --) shift; break ;;
    -h|--help) usage ;;
    -*) log "unknown option: $1"; usage ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || usage

# --- binaries -------------------------------------------------------------------------------
PG_BIN=${SAGAD_PG_BIN:-}
if [ -z "$PG_BIN" ]; then
  if [ -x /usr/lib/postgresql/15/bin/initdb ]; then PG_BIN=/usr/lib/postgresql/15/bin
  else PG_BIN=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1)
  fi
fi
for b in "$PG_BIN/initdb" "$PG_BIN/pg_ctl" "$PG_BIN/psql"; do
  [ -x "$b" ] || die "PostgreSQL binary not found: $b; run scripts/install-deps.sh"
done
NATS_SERVER=$(command -v nats-server || true)
[ -n "$NATS_SERVER" ] || die "nats-server not found in PATH; run scripts/install-deps.sh"
command -v python3 >/dev/null || die "python3 not found; run scripts/install-deps.sh"

# Commands run as postgres from / (the caller's cwd may be unreadable to it). An array, not a function:
# a redirection on a function call would also capture what a signal trap prints meanwhile.
AS_PG=(env -C /)
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || die "no 'postgres' user (initdb refuses to run as root); run scripts/install-deps.sh"
  AS_PG=(runuser -u postgres -- env -C /)
fi

# --- state & cleanup ------------------------------------------------------------------------
RUN_DIR='' PG_DATA='' NATS_STORE='' NATS_CONF='' NATS_PID='' CHILD_PID='' CLEANED=0

alive() {  # alive PID...: prints those still running (zombies count as gone)
  local p st
  for p; do
    read -r st 2>/dev/null <"/proc/$p/stat" || continue
    st=${st##*) }; [ "${st%% *}" = Z ] || echo "$p"
  done
}

tree() {  # tree PID: PID and all its descendants
  ps -e -o pid= -o ppid= | awk -v root="$1" '{ kids[$2] = kids[$2] " " $1 }
    END { q = root; while (q != "") { n = split(q, a, " "); q = ""
            for (i = 1; i <= n; i++) { print a[i]; q = q " " kids[a[i]] } } }'
}

stop_pids() {  # stop_pids SIGNAL PID...: signal them, wait up to ~10 s, then SIGKILL what is left
  local sig=$1 i left=(); shift
  [ $# -gt 0 ] || return 0
  kill -s "$sig" "$@" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do mapfile -t left < <(alive "$@"); [ ${#left[@]} -gt 0 ] || break; sleep 0.1; done
  if [ ${#left[@]} -gt 0 ]; then
    log "still running after SIG$sig, killing: ${left[*]}"
    kill -KILL "${left[@]}" 2>/dev/null || true
  fi
  for i; do wait "$i" 2>/dev/null || true; done  # reap our own children
}

stop_child() {  # stop_child SIGNAL: the command and everything it started (like a process-group signal)
  [ -n "$CHILD_PID" ] || return 0
  local pids; mapfile -t pids < <(tree "$CHILD_PID")
  stop_pids "$1" "${pids[@]}"
  CHILD_PID=''
}

stop_nats() {  # our nats-server, plus any one a test restarted on the same store
  local pids=() p
  [ -n "$NATS_PID" ] && pids+=("$NATS_PID")
  if [ -n "$NATS_STORE" ]; then
    for p in $(pgrep -x nats-server 2>/dev/null || true); do
      grep -qaF -- "$NATS_STORE" "/proc/$p/cmdline" 2>/dev/null && pids+=("$p")
    done
  fi
  stop_pids TERM ${pids[@]+"${pids[@]}"}
}

stop_pg() {
  [ -n "$PG_DATA" ] && [ -f "$PG_DATA/postmaster.pid" ] || return 0
  "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 20 stop >/dev/null 2>&1 && return 0
  log "fast shutdown of PostgreSQL failed, trying immediate"
  "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w -t 10 stop >/dev/null 2>&1 && return 0
  local pid; pid=$(head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null || true)
  if [ -n "$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
}

cleanup() {
  local rc=$?
  [ "$CLEANED" = 1 ] && return; CLEANED=1
  trap '' INT TERM HUP
  stop_child TERM
  stop_nats
  stop_pg
  if [ -n "$RUN_DIR" ] && [ -d "$RUN_DIR" ]; then
    if [ "$keep" = 1 ]; then log "kept run dir $RUN_DIR (logs, data, env)"
    else rm -rf -- "$RUN_DIR"; fi
  fi
  exit "$rc"
}

on_signal() {  # forward to the command (TERM for INT: async children ignore SIGINT), then clean up
  trap '' INT TERM HUP
  log "caught SIG$1, stopping"
  if [ "$1" = INT ]; then stop_child TERM; else stop_child "$1"; fi
  exit $((128 + $2))
}

trap cleanup EXIT
trap 'log "failed (line $LINENO): $BASH_COMMAND"' ERR
trap 'on_signal INT 2' INT
trap 'on_signal TERM 15' TERM
trap 'on_signal HUP 1' HUP

# --- run dir --------------------------------------------------------------------------------
base=${SAGAD_RUN_DIR_BASE:-/tmp}
mkdir -p "$base"
RUN_DIR=$(mktemp -d "$(cd "$base" && pwd -P)/sagad-run.XXXXXX")
chmod 711 "$RUN_DIR"  # postgres may traverse, not list
PG_DATA=$RUN_DIR/pg-data PG_SOCKET=$RUN_DIR/pg-socket PG_LOG=$RUN_DIR/postgres.log
NATS_STORE=$RUN_DIR/nats-store NATS_LOG=$RUN_DIR/nats.log NATS_CONF=$RUN_DIR/nats.conf
mkdir -m 700 "$PG_DATA" && mkdir -m 755 "$PG_SOCKET" && mkdir "$NATS_STORE"
touch "$PG_LOG"
[ "$(id -u)" -ne 0 ] || chown postgres: "$PG_DATA" "$PG_SOCKET" "$PG_LOG"
"${AS_PG[@]}" test -w "$PG_DATA" || die "postgres user cannot reach $PG_DATA (check permissions of $base)"
[ ${#PG_SOCKET} -lt 90 ] || die "run dir path too long for a Unix socket: $PG_SOCKET"

pick_ports() {  # bind N sockets to port 0 at once so the kernel hands out N distinct free ports
  python3 -c 'import socket,sys
s=[socket.socket() for _ in range(int(sys.argv[1]))]
for x in s: x.bind(("127.0.0.1",0))
print(*(x.getsockname()[1] for x in s))' "$1"
}
tail_log() { log "last lines of $1:"; tail -n 20 "$1" | sed 's/^/    /' >&2 || true; }

# --- PostgreSQL -----------------------------------------------------------------------------
PG_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
log "initdb in $PG_DATA ($("$PG_BIN/postgres" --version 2>/dev/null || echo "$PG_BIN"))"
( umask 077; printf '%s\n' "$PG_PASSWORD" >"$RUN_DIR/pwfile" )
[ "$(id -u)" -ne 0 ] || chown postgres: "$RUN_DIR/pwfile"
"${AS_PG[@]}" "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --pwfile="$RUN_DIR/pwfile" --auth-local=peer \
  --auth-host=scram-sha-256 -E UTF8 --locale=C --no-instructions >"$RUN_DIR/initdb.log" 2>&1 \
  || { tail_log "$RUN_DIR/initdb.log"; die "initdb failed"; }
rm -f "$RUN_DIR/pwfile"
echo "include = 'sagad.conf'" >>"$PG_DATA/postgresql.conf"

start_pg() {  # start_pg PORT -> 0 ok, 2 port taken; dies on other errors
  cat >"$PG_DATA/sagad.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $1
password_encryption = 'scram-sha-256'
unix_socket_directories = '$PG_SOCKET'
fsync = on
synchronous_commit = on
max_connections = 200
shared_buffers = 256MB
EOF
  [ "$(id -u)" -ne 0 ] || chown postgres: "$PG_DATA/sagad.conf"
  : >"$PG_LOG"
  log "starting PostgreSQL on 127.0.0.1:$1"
  "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 start >/dev/null 2>&1 && return 0
  grep -q 'Address already in use' "$PG_LOG" && return 2
  tail_log "$PG_LOG"; die "PostgreSQL did not start"
}

# --- NATS users and permissions -------------------------------------------------------------
# One user per process role, allowed exactly the subjects its job needs (docs/security.md says
# why for each line). A "*" first token stands for the subject prefix ("saga" in the demo; each
# test has its own one-token prefix); a "*" where a stream name goes stands for <PREFIX>_CMD and
# its siblings. A participant's consumer is p_<subject with '.' -> '_'>, its inboxes
# _INBOX_<user>.> (config_nats_inbox_prefix). The file holds passwords: mode 600, like ./env.
secret() { python3 -c 'import secrets; print(secrets.token_hex(16))'; }
declare -A NATS_PASSWORD=()
for u in admin sagad operator client stock payments shipping; do NATS_PASSWORD[$u]=$(secret); done
# The participant services of the demo and the tests, and the subjects each serves.
declare -A SERVICE_SUBJECTS=([stock]='stock.reserve stock.release'
                             [payments]='payments.charge payments.refund' [shipping]='shipping.ship')

list() {  # list INDENT ITEM...: a config list, one quoted item a line
  local indent=$1 s sep=''
  shift
  printf '['
  for s; do printf '%s\n%s"%s"' "$sep" "$indent" "$s"; sep=,; done
  printf ' ]'
}

participant_user() {  # participant_user SERVICE: the user block of one participant service
  local svc=$1 subj durable pub=()
  for subj in ${SERVICE_SUBJECTS[$svc]}; do
    durable=p_${subj//./_}
    pub+=("*.reply.$subj"                                # its replies (JetStream publish)
          "\$JS.API.CONSUMER.INFO.*.$durable"            # look its consumer up
          "\$JS.API.CONSUMER.CREATE.*.$durable.*.cmd.$subj"  # create/update it, with this filter only
          "\$JS.API.CONSUMER.MSG.NEXT.*.$durable"        # fetch its commands
          "\$JS.ACK.*.$durable.>")                       # ack, nak, term, in-progress
  done
  printf '    { user: "%s", password: "%s", permissions: {\n' "$svc" "${NATS_PASSWORD[$svc]}"
  printf '        publish: { deny: [ "*.cmd.>", "$JS.API.CONSUMER.DURABLE.CREATE.>" ],\n'
  printf '                   allow: %s }\n' "$(list '            ' "${pub[@]}")"
  printf '        subscribe: { allow: [ "_INBOX_%s.>" ] }\n    } }\n' "$svc"
}

write_nats_conf() {  # the users; address, ports and JetStream come as flags (start_nats)
  local sagad_pub=("*.cmd.>" "*.event.>" "*.dlq.>" "*.start.>"
                   "\$JS.API.STREAM.INFO.*" "\$JS.API.STREAM.CREATE.*" "\$JS.API.STREAM.UPDATE.*")
  local c
  for c in sagad_replies sagad_submits; do
    sagad_pub+=("\$JS.API.CONSUMER.INFO.*.$c" "\$JS.API.CONSUMER.DURABLE.CREATE.*.$c"
                "\$JS.API.CONSUMER.MSG.NEXT.*.$c" "\$JS.ACK.*.$c.>")
  done
  ( umask 077
    cat <<CONF >"$NATS_CONF"
# Written by scripts/services.sh; docs/security.md explains the users and their permissions.
authorization {
  users: [
    # Tests and benchmarks only (set-up, inspection, fault injection): everything.
    { user: "admin", password: "${NATS_PASSWORD[admin]}" }
    # sagad: owns the streams and its two consumers; sends commands, lifecycle events and dead
    # letters; answers starts and definitions (allow_responses: one answer per request received).
    { user: "sagad", password: "${NATS_PASSWORD[sagad]}", permissions: {
        publish: { allow: $(list '            ' "${sagad_pub[@]}") }
        subscribe: { allow: [ "*.start.*", "*.define", "_INBOX_sagad.>" ] }
        allow_responses: true
    } }
    # sagactl: status, start, dead-letter replay (re-published on its reply or submit subject).
    { user: "operator", password: "${NATS_PASSWORD[operator]}", permissions: {
        publish: { allow: [ "*.start.>", "*.reply.>", "*.submit.>", "\$JS.API.STREAM.INFO.*",
                            "\$JS.API.CONSUMER.INFO.*.sagad_replies", "\$JS.API.CONSUMER.INFO.*.sagad_submits" ] }
        subscribe: { allow: [ "_INBOX_operator.>" ] }
    } }
    # A business client: starts sagas, registers definitions, follows lifecycle events.
    { user: "client", password: "${NATS_PASSWORD[client]}", permissions: {
        publish: { allow: [ "*.start.>", "*.define", "*.submit.>" ] }
        subscribe: { allow: [ "_INBOX_client.>", "*.event.>" ] }
    } }
    # Participant services: their own commands' consumers, their own replies; never a command.
$(for svc in stock payments shipping; do participant_user "$svc"; done)
  ]
}
CONF
  )
}

# --- NATS -----------------------------------------------------------------------------------
start_nats() {  # start_nats PORT MONITOR_PORT -> 0 ok, 2 port taken; dies on other errors
  local deadline=$((SECONDS + 30))
  log "starting nats-server on 127.0.0.1:$1 (monitor $2)"
  "$NATS_SERVER" -c "$NATS_CONF" -a 127.0.0.1 -p "$1" -m "$2" -js -sd "$NATS_STORE" </dev/null >>"$NATS_LOG" 2>&1 &
  NATS_PID=$!
  while [ "$SECONDS" -lt "$deadline" ]; do
    if ! kill -0 "$NATS_PID" 2>/dev/null; then
      wait "$NATS_PID" 2>/dev/null || true; NATS_PID=''
      grep -q 'address already in use' "$NATS_LOG" && return 2
      tail_log "$NATS_LOG"; die "nats-server exited during startup"
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && python3 -c 'import sys,urllib.request as u
sys.exit(b"ok" not in u.urlopen(sys.argv[1], timeout=1).read())' "http://127.0.0.1:$2/healthz" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  tail_log "$NATS_LOG"; die "nats-server not healthy after 30 s"
}

write_nats_conf
pg_port='' nats_port='' mon_port=''
for attempt in 1 2 3 4 5; do
  ports=$(pick_ports 3); read -r p1 p2 p3 <<<"$ports"
  if [ -z "$pg_port" ]; then
    rc=0; start_pg "$p1" || rc=$?
    if [ "$rc" -ne 0 ]; then log "PostgreSQL port $p1 taken, retrying ($attempt)"; continue; fi
    pg_port=$p1
  fi
  rc=0; start_nats "$p2" "$p3" || rc=$?
  if [ "$rc" -ne 0 ]; then log "NATS port $p2/$p3 taken, retrying ($attempt)"; continue; fi
  nats_port=$p2 mon_port=$p3; break
done
[ -n "$nats_port" ] || die "could not find free ports after 5 attempts"

pg_sql() { PGPASSWORD=$PG_PASSWORD PGCONNECT_TIMEOUT=3 "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 \
             -h 127.0.0.1 -p "$pg_port" -U postgres -d "$1" -c "$2" 2>"$RUN_DIR/psql.err"; }
for ((i = 0; ; i++)); do
  [ "$(pg_sql postgres 'SELECT 1')" = 1 ] && break
  [ "$i" -lt 60 ] || { tail_log "$PG_LOG"; die "PostgreSQL does not answer over TCP on port $pg_port"; }
  sleep 0.5
done
pg_sql postgres 'CREATE DATABASE sagad OWNER postgres' || die "CREATE DATABASE failed: $(cat "$RUN_DIR/psql.err")"
[ "$(pg_sql sagad 'SELECT 1')" = 1 ] || die "database sagad does not answer SELECT 1: $(cat "$RUN_DIR/psql.err")"

# The group roles of migration 0004, created here as a DBA would (0004 finds them and grants
# them their rights in each schema it migrates), and two logins: sagad runs as a sagad_service
# member (DML only, no DDL); people read the operator views as a sagad_operator member.
# The passwords go in on stdin, not on a command line; PostgreSQL keeps SCRAM-SHA-256 verifiers.
PG_SERVICE_PASSWORD=$(secret) PG_OPERATOR_PASSWORD=$(secret)
PGPASSWORD=$PG_PASSWORD PGCONNECT_TIMEOUT=3 "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 \
  -p "$pg_port" -U postgres -d sagad >/dev/null 2>"$RUN_DIR/psql.err" <<SQL \
  || die "creating the roles failed: $(cat "$RUN_DIR/psql.err")"
CREATE ROLE sagad_owner NOLOGIN;
COMMENT ON ROLE sagad_owner IS 'sagad: owns the schema objects and runs migrations';
CREATE ROLE sagad_service NOLOGIN;
COMMENT ON ROLE sagad_service IS 'sagad: what the sagad daemon needs, and no DDL';
CREATE ROLE sagad_operator NOLOGIN;
COMMENT ON ROLE sagad_operator IS 'sagad: reads the operator views, nothing else';
CREATE ROLE sagad_daemon LOGIN PASSWORD '$PG_SERVICE_PASSWORD' IN ROLE sagad_service;
CREATE ROLE sagad_ops LOGIN PASSWORD '$PG_OPERATOR_PASSWORD' IN ROLE sagad_operator;
SQL

# --- environment & command ------------------------------------------------------------------
export SAGAD_DATABASE_URL="postgresql://postgres:$PG_PASSWORD@127.0.0.1:$pg_port/sagad"
export SAGAD_DATABASE_URL_SERVICE="postgresql://sagad_daemon:$PG_SERVICE_PASSWORD@127.0.0.1:$pg_port/sagad"
export SAGAD_DATABASE_URL_OPERATOR="postgresql://sagad_ops:$PG_OPERATOR_PASSWORD@127.0.0.1:$pg_port/sagad"
nats_url() { printf 'nats://%s:%s@127.0.0.1:%s' "$1" "${NATS_PASSWORD[$1]}" "$nats_port"; }
SAGAD_NATS_URL=$(nats_url sagad)
export SAGAD_NATS_URL
nats_vars=()
for u in admin operator client stock payments shipping; do
  v=SAGAD_NATS_URL_${u^^}
  printf -v "$v" '%s' "$(nats_url "$u")"
  export "${v?}"
  nats_vars+=("$v")
done
export SAGAD_TEST_PG_BIN=$PG_BIN SAGAD_TEST_PG_DATA=$PG_DATA SAGAD_TEST_PG_PORT=$pg_port
export SAGAD_TEST_NATS_PORT=$nats_port SAGAD_TEST_NATS_MONITOR_PORT=$mon_port
export SAGAD_TEST_NATS_STORE=$NATS_STORE SAGAD_TEST_NATS_PID=$NATS_PID SAGAD_RUN_DIR=$RUN_DIR
( umask 077
  for v in SAGAD_DATABASE_URL SAGAD_DATABASE_URL_SERVICE SAGAD_DATABASE_URL_OPERATOR SAGAD_NATS_URL \
           "${nats_vars[@]}" SAGAD_TEST_PG_BIN SAGAD_TEST_PG_DATA SAGAD_TEST_PG_PORT \
           SAGAD_TEST_NATS_PORT SAGAD_TEST_NATS_MONITOR_PORT SAGAD_TEST_NATS_STORE SAGAD_TEST_NATS_PID SAGAD_RUN_DIR; do
    printf 'export %s=%q\n' "$v" "${!v}"
  done >"$RUN_DIR/env" )
log "postgres on 127.0.0.1:$pg_port (db sagad, scram-sha-256 on TCP), nats on 127.0.0.1:$nats_port (monitor $mon_port; users ${!NATS_PASSWORD[*]}); run dir $RUN_DIR"

# Run as a background child so signals reach our traps at once; <&0 keeps the caller's stdin.
"$@" <&0 &
CHILD_PID=$!
rc=0; wait "$CHILD_PID" || rc=$?
CHILD_PID=''
exit "$rc"
}
