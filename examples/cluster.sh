#!/usr/bin/env bash
# The whole cluster of config/cluster.toml on loopback, in one command:
# a private redis-server, a PostgreSQL database, one `weir store --db
# postgres://…`, two gateways (`weir serve --workers 0`: they only queue runs
# and serve connections) and two `weir worker` processes that execute the
# runs. Every process reads config/cluster.toml; the environment overrides
# the addresses, ports and secrets (WEIR_* beats the file).
#
#   bash examples/cluster.sh            # start, print the URLs, wait for Ctrl-C
#   bash examples/cluster.sh --check   # start, one chat via A watched on B, exit 0/1
#
# Environment:
#   WEIR_BIN   the weir binary (default: target/release/weir, built if missing)
#   PGURL      an existing database to use as-is (it is not dropped); by default
#              a database weir_cluster_<pid> is made on the server PGHOST:PGPORT
#              as PGUSER (127.0.0.1:5432, postgres: trust auth) and dropped on exit
#   KEEP_LOGS  1: keep the temporary directory with every process' log
#   CLUSTER_INFO  a file to write once the cluster is up: A=, B=, KEY= and
#              WORKER_1_PID=, WORKER_2_PID= lines (tests/api/cluster/script.rs
#              kills a worker through it)
#
# A worker that dies (or is killed to watch its run end with worker_lost)
# leaves the rest running; any other process dying stops the cluster.
#
# Ctrl-C (or any exit) stops every process this script started, drops the
# database it made and removes its temporary directory.

set -euo pipefail

usage() { sed -n '2,26s/^# \{0,1\}//p' "$0"; }
CHECK=0
case "${1:-}" in
    --check) CHECK=1 ;;
    -h | --help) usage; exit 0 ;;
    "") ;;
    *) usage >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.."
unset WEIR_CONFIG WEIR_DB WEIR_STORE_URL WEIR_REDIS_URL
export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"

log() { printf 'cluster.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# --- cleanup: everything below registers what it starts or makes ------------

TMP=$(mktemp -d "${TMPDIR:-/tmp}/weir-cluster.XXXXXX")
PIDS=()
declare -A NAME_OF=() PID_OF=()
DB_NAME=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # Children first (workers and gateways hold store and Redis connections).
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill "${PIDS[i]}" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n $DB_NAME ]]; then
        psql -q -d postgres -c "DROP DATABASE IF EXISTS \"$DB_NAME\" WITH (FORCE)" >/dev/null 2>&1 \
            || log "could not drop database $DB_NAME"
    fi
    # Ctrl-C (130) and SIGTERM (143) are the normal way out: nothing to keep.
    if [[ ${KEEP_LOGS:-0} == 1 || ! $rc =~ ^(0|130|143)$ ]]; then
        log "logs kept in $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the binary ---------------------------------------------------------------

has_worker() { "$1" worker --help >/dev/null 2>&1; }
if [[ -n ${WEIR_BIN:-} ]]; then
    has_worker "$WEIR_BIN" || die "WEIR_BIN=$WEIR_BIN has no \`worker\` subcommand"
else
    WEIR_BIN="${CARGO_TARGET_DIR:-target}/release/weir"
    if [[ ! -x $WEIR_BIN ]] || ! has_worker "$WEIR_BIN"; then
        log "building $WEIR_BIN (cargo build --release)"
        cargo build --release --bin weir >&2
    fi
fi

# --- helpers ------------------------------------------------------------------

USED_PORTS=" "
# Ports below the kernel's ephemeral range, so outgoing connections (which
# take ephemeral ports) rarely hold the one picked.
EPHEMERAL_LOW=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
((EPHEMERAL_LOW > 12000)) || EPHEMERAL_LOW=60000
# A loopback port nothing listens on and this script has not handed out yet.
free_port() {
    local p
    for _ in $(seq 200); do
        p=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))
        [[ $USED_PORTS == *" $p "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            USED_PORTS+="$p "
            echo "$p"
            return
        fi
    done
    die "no free port found"
}

# Starts a background process logging to $TMP/<name>.log and records its pid.
start() {
    local name=$1
    shift
    "$@" >"$TMP/$name.log" 2>&1 &
    PIDS+=($!)
    NAME_OF[$!]=$name
}

# Readiness checks for launch: 0 ready, 1 the process ($2) exited.
http_ready() {
    local port=$1 pid=$2 name=$3
    for _ in $(seq 300); do
        curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    die "$name did not answer http://127.0.0.1:$port/healthz within 30 s"
}
redis_ready() {
    local port=$1 pid=$2 name=$3
    for _ in $(seq 100); do
        [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]] && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    die "$name did not answer on port $port within 10 s"
}

# Starts `name` ($1) on a free port and waits with the check $2; in the
# command ("$@" after those) @PORT@ stands for the port. free_port sees only
# listeners, so another process may take the port meanwhile: then it tries
# another. Sets PORT to the port used.
launch() {
    local name=$1 ready=$2 pid
    shift 2
    for _ in 1 2 3 4 5; do
        PORT=$(free_port)
        start "$name" "${@//@PORT@/$PORT}"
        pid=${PIDS[-1]}
        "$ready" "$PORT" "$pid" "$name" && { PID_OF[$name]=$pid; return 0; }
        wait "$pid" 2>/dev/null || true
        unset 'PIDS[-1]'
        if ! grep -q "Address already in use" "$TMP/$name.log"; then
            tail -n 20 "$TMP/$name.log" >&2
            die "$name exited during start-up (log above)"
        fi
        log "$name: port $PORT was taken meanwhile; trying another"
    done
    die "$name: no free port in 5 attempts"
}

# The value of the first string field "$1" in the JSON on stdin (no jq needed).
json_field() { grep -o "\"$1\":\"[^\"]*\"" | head -n 1 | cut -d'"' -f4; }

# --- Redis --------------------------------------------------------------------

command -v redis-server >/dev/null || die "redis-server not found (apt-get install redis-server)"
command -v redis-cli >/dev/null || die "redis-cli not found (it comes with redis-server)"
mkdir -p "$TMP/redis"
launch redis redis_ready redis-server --port @PORT@ --bind 127.0.0.1 --dir "$TMP/redis" \
    --save "" --appendonly no
REDIS_URL="redis://127.0.0.1:$PORT"

# --- PostgreSQL ---------------------------------------------------------------

if [[ -n ${PGURL:-} ]]; then
    DB_URL=$PGURL
else
    command -v psql >/dev/null || die "psql not found: install PostgreSQL's client, or set PGURL"
    DB_NAME="weir_cluster_$$"
    psql -q -d postgres -c "CREATE DATABASE \"$DB_NAME\"" >/dev/null \
        || { DB_NAME=""; die "cannot create a database on $PGUSER@$PGHOST:$PGPORT (set PGURL?)"; }
    DB_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB_NAME"
fi

# --- weir: one store, two gateways, two workers ------------------------------

export WEIR_STORE_TOKEN="cluster-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
KEY="wk_cluster_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
export WEIR_LOG_FORMAT=text

launch store http_ready env WEIR_DB="$DB_URL" WEIR_DATA_DIR="$TMP/store" \
    "$WEIR_BIN" store --config config/cluster.toml --listen "127.0.0.1:@PORT@"
STORE_URL="http://127.0.0.1:$PORT"

# Gateways and workers share these; each gets its own listen address and data dir.
node_env=(WEIR_STORE_URL="$STORE_URL" WEIR_REDIS_URL="$REDIS_URL" WEIR_BOOTSTRAP_KEY="$KEY")

declare -A URL
for name in gateway-a gateway-b worker-1 worker-2; do
    case $name in
        gateway-*) cmd=(serve) extra=(WEIR_WORKERS=0) ;;
        worker-*) cmd=(worker) extra=() ;;
    esac
    # One at a time: each seeds the bootstrap key in the store at start.
    launch "$name" http_ready env "${node_env[@]}" "${extra[@]}" WEIR_DATA_DIR="$TMP/$name" \
        "$WEIR_BIN" "${cmd[@]}" --config config/cluster.toml --listen "127.0.0.1:@PORT@"
    URL[$name]="http://127.0.0.1:$PORT"
done
A=${URL[gateway-a]}
B=${URL[gateway-b]}

# --- --check: one chat via A, watched on B -----------------------------------

check() {
    local agent run sse=$TMP/b-events.sse
    agent=$(curl -sf -H "Authorization: Bearer $KEY" "$A/v1/agents" \
        -d '{"name":"cluster-check","metadata":{"echo_delay_ms":20}}' | json_field id)
    [[ -n $agent ]] || die "could not create an agent on gateway A"
    curl -sN -H "Authorization: Bearer $KEY" "$B/v1/agents/$agent/events" >"$sse" 2>/dev/null &
    PIDS+=($!)
    # The stream opens with a comment; once it is here B is subscribed.
    for i in $(seq 100); do
        [[ -s $sse ]] && break
        ((i == 100)) && die "gateway B's event stream did not open"
        sleep 0.1
    done
    run=$(curl -sf -H "Authorization: Bearer $KEY" "$A/v1/agents/$agent/messages" \
        -d '{"message":"hello from gateway A, watched on gateway B","stream_tokens":true}' \
        | json_field run_id)
    [[ -n $run ]] || die "the run via gateway A did not answer"
    for i in $(seq 300); do
        grep -q '^event: done' "$sse" && break
        ((i == 300)) && { cat "$sse" >&2; die "no done event on gateway B for $run within 30 s"; }
        sleep 0.1
    done
    local status events
    status=$(curl -sf -H "Authorization: Bearer $KEY" "$B/v1/runs/$run" | json_field status)
    events=$(grep -c '^event: ' "$sse")
    [[ $status == completed ]] || die "run $run is $status on gateway B, expected completed"
    log "ok: run $run via A: $events events on B's stream, ending with done; status $status on B"
    curl -sf -H "Authorization: Bearer $KEY" "$B/v1/agents/$agent/logs" \
        | grep -o '"run started[^"]*"' | head -n 1 | sed 's/^/cluster.sh: log line: /' >&2 || true
}

if ((CHECK)); then
    check
    exit 0
fi

if [[ -n ${CLUSTER_INFO:-} ]]; then
    printf 'A=%s\nB=%s\nKEY=%s\nWORKER_1_PID=%s\nWORKER_2_PID=%s\n' \
        "$A" "$B" "$KEY" "${PID_OF[worker-1]}" "${PID_OF[worker-2]}" >"$CLUSTER_INFO.tmp"
    mv "$CLUSTER_INFO.tmp" "$CLUSTER_INFO"
fi

cat <<EOF

weir cluster on loopback (logs in $TMP):
  gateway A    $A
  gateway B    $B
  worker 1     ${URL[worker-1]}/healthz
  worker 2     ${URL[worker-2]}/healthz
  weir store   $STORE_URL   (PostgreSQL: $DB_URL)
  redis        $REDIS_URL
  key          $KEY

Try it (a second terminal):
  export KEY=$KEY
  AGENT=\$(curl -s -H "Authorization: Bearer \$KEY" $A/v1/agents -d '{"name":"demo","metadata":{"echo_delay_ms":100}}' | jq -r .id)
  curl -N -H "Authorization: Bearer \$KEY" $B/v1/agents/\$AGENT/events &     # watch on B
  curl -H "Authorization: Bearer \$KEY" $A/v1/agents/\$AGENT/messages -d '{"message":"hi","stream_tokens":true}'

Ctrl-C stops everything.
EOF

# Waits for Ctrl-C. A worker that dies is reported and the rest go on (the
# run it held ends with worker_lost on every gateway); any other process
# dying stops the cluster.
set +e
waiting=("${PIDS[@]}")
while true; do
    dead=""
    wait -n -p dead "${waiting[@]}"
    name=${NAME_OF[$dead]:-a process}
    if [[ $name != worker-* ]]; then
        log "$name (pid $dead) exited; stopping the cluster (see its log)"
        exit 1
    fi
    log "$name (pid $dead) exited; the rest of the cluster goes on"
    left=()
    for pid in "${waiting[@]}"; do
        [[ $pid == "$dead" ]] || left+=("$pid")
    done
    waiting=("${left[@]}")
done
