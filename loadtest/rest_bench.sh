#!/usr/bin/env bash
# REST benchmark for the gateway core: requests/s and latency percentiles of
# GET /v1/agents/{id} with a warm key, against the embedded store, against
# a separate `weir store` process, and against `weir store --db postgres://…`
# (when a PostgreSQL answers). Uses wrk (apt-get install wrk).
#
#   bash loadtest/rest_bench.sh [duration_secs] [connections] [limits: on|off]
#
# With limits on (the default, as in production) every request passes the
# per-key rate limiter; the benchmark key has rpm 1000000 so none is refused.
# `off` starts the gateways with --rate-limit false (BENCHMARKS.md compares).
#
# Everything binds to loopback on free ports and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CONNS=${2:-64}
LIMITS=${3:-on}
BOOT=wk_bench_0123456789abcdefghijklmnopqrstuv
case "$LIMITS" in on) RL=true ;; off) RL=false ;; *) echo "limits: on or off"; exit 2 ;; esac
command -v wrk >/dev/null || { echo "wrk is required: apt-get install wrk"; exit 1; }
cargo build --release --quiet
BIN=target/release/weir
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 100); do curl -sf "$1/healthz" >/dev/null && return 0; sleep 0.1; done; echo "$1 did not start"; exit 1; }

run_case() { # run_case NAME GATEWAY_ARGS...
  local name=$1; shift
  local port; port=$(free_port)
  RUST_LOG=warn WEIR_BOOTSTRAP_KEY=$BOOT $BIN serve --listen 127.0.0.1:$port --rate-limit $RL "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  local base=http://127.0.0.1:$port
  wait_up "$base"
  # The bootstrap key has the default 120 rpm: mint a key that is never limited.
  local KEY
  KEY=$(curl -sf "$base/v1/keys" -H "Authorization: Bearer $BOOT" -H 'content-type: application/json' \
        -d '{"label":"bench","scopes":["*"],"rpm":1000000}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
  local id
  id=$(curl -sf "$base/v1/agents" -H "Authorization: Bearer $KEY" -H 'content-type: application/json' \
        -d '{"name":"bench","system":"s","tags":["t"],"metadata":{"k":1}}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  # Warm up (key cache, connection pools, page cache).
  wrk -t1 -c"$CONNS" -d2s -H "Authorization: Bearer $KEY" "$base/v1/agents/$id" >/dev/null
  echo "== $name (limits $LIMITS): GET /v1/agents/{id}, ${DURATION}s, $CONNS connections, wrk -t1"
  wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -H "Authorization: Bearer $KEY" "$base/v1/agents/$id" \
    | grep -E "Requests/sec|50%|90%|99%|Non-2xx|Socket errors|Latency  "
}

run_case embedded --data-dir "$WORK/embedded"

SPORT=$(free_port)
RUST_LOG=warn WEIR_STORE_TOKEN=bench $BIN store --listen 127.0.0.1:$SPORT --data-dir "$WORK/remote" >"$WORK/store.log" 2>&1 &
PIDS+=($!)
wait_up "http://127.0.0.1:$SPORT"
run_case remote-store --store-url "http://127.0.0.1:$SPORT" --store-token bench

# The same through `weir store --db postgres://…`, on a fresh database of the
# PostgreSQL at WEIR_BENCH_PG_URL (default: the local trust-auth server),
# dropped at the end. Skipped when no server answers.
PG_ADMIN=${WEIR_BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
if command -v psql >/dev/null && psql -w "$PG_ADMIN" -Atqc 'SELECT 1' >/dev/null 2>&1; then
  PG_DB=weir_bench_$$
  psql -w "$PG_ADMIN" -qc "CREATE DATABASE $PG_DB"
  trap 'cleanup; psql -w "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" || true' EXIT
  PPORT=$(free_port)
  RUST_LOG=warn WEIR_STORE_TOKEN=bench $BIN store --listen 127.0.0.1:$PPORT --db "${PG_ADMIN%/*}/$PG_DB" >"$WORK/pg-store.log" 2>&1 &
  PIDS+=($!)
  wait_up "http://127.0.0.1:$PPORT"
  run_case postgres-store --store-url "http://127.0.0.1:$PPORT" --store-token bench
else
  echo "== postgres-store: skipped (no PostgreSQL at $PG_ADMIN; set WEIR_BENCH_PG_URL)"
fi
