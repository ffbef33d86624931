#!/usr/bin/env bash
# Regenerates every results file that BENCHMARKS.md and README.md cite, then
# re-renders the documents from them. Run it on a quiet machine (nothing
# else building or benchmarking: the figures are only as good as the
# machine is idle), from anywhere in the repository:
#
#   bash loadtest/run_all.sh            # everything, about an hour
#   bash loadtest/run_all.sh rest bus   # only these steps (names below)
#
# Needs: redis-server, wrk, nginx-light, openssl (apt-get install
# redis-server wrk nginx-light openssl; openssl makes the TLS steps'
# throwaway certificate), a PostgreSQL on 127.0.0.1:5432 trusting user postgres for
# the `postgres` REST case (skipped without one), python3-venv for LiteLLM
# (`peer` installs it into loadtest/.venv on first use, a few minutes).
# Everything runs on loopback and stops by itself.
#
# Afterwards: `git diff BENCHMARKS.md README.md` shows the new figures;
# sections whose blocks awaited a file are rendered now, so read their prose
# against the new figures before committing.
set -euo pipefail
cd "$(dirname "$0")/.."
R=loadtest/results
L=target/release/weir-load

step() { # step NAME: whether to run it
  [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]
}
ONLY="$*"
say() { echo "== $(date -u +%H:%M:%S) $*"; }

say "build (release, one build for weir and weir-load)"
cargo build --release -p weir -p weir-load

if step connections; then
  say "connections (~3 min)"
  $L connections --connections 19000 --ws-ping-secs 10 --sse-ping-secs 10 --json $R/connections.json
  $L connections --connections 2000 --ws-percent 0 --ws-ping-secs 10 --sse-ping-secs 10 --json $R/connections_2k_sse.json
  $L connections --connections 2000 --ws-percent 100 --ws-ping-secs 10 --sse-ping-secs 10 --json $R/connections_2k_ws.json
  $L connections --connections 2000 --ws-percent 50 --ws-ping-secs 10 --sse-ping-secs 10 --json $R/connections_2k_mixed.json
fi

if step fanout; then
  say "fanout: 10, 30 and 100 events/s offered to 10,000 subscribers (~6 min)"
  for rate in 10 30 100; do
    $L fanout --subscribers 10000 --rate $rate --secs 20 --json $R/fanout_$rate.json
  done
fi

if step proxy; then
  say "proxy: the ramp with nginx, then five runs at 2,000 req/s (~9 min)"
  $L proxy --rates 250,500,1000,2000,3000,4000 --step-secs 10 --slo-p99-ms 1000 --nginx --json $R/proxy_nginx.json
  $L proxy --rates 2000 --step-secs 10 --slo-p99-ms 1000 --nginx --repeat 5 --json $R/proxy_2k_nginx_x5.json
fi

if step peer; then
  say "peer: weir and LiteLLM in front of the same provider (~5 min, plus LiteLLM's install once)"
  $L peer --rates 250,500,1000,2000,3000,4000 --peer-rates 5,10,25,50,100,200 --step-secs 8 \
    --slo-p99-ms 1000 --json $R/peer.json
fi

if step runs; then
  say "runs: agent runs in the gateway, through the queue, on workers (~6 min)"
  $L runs --rates 100,200,300,400,600 --step-secs 8 --json $R/runs.json
  $L runs --route openai --rates 100,200,300,400,600 --step-secs 8 --json $R/runs_openai.json
fi

if step rest; then
  say "rest: point reads per store, then limits on/off interleaved (~4 min)"
  $L rest --cases embedded,remote,postgres --secs 10 --connections 64 --json $R/rest.json
  $L rest --cases embedded,limits-redis,limits-off --secs 8 --connections 64 --rounds 3 --json $R/rest_limits.json
fi

if step bus; then
  say "bus: Redis publish cost and fan-out at the bus (~3 min)"
  $L bus --publishers 1,8,64 --fanout 1000x200,1000x1000,10000x30,10000x100,1000x5000 --secs 5 --json $R/bus.json
fi

if step edge; then
  say "edge: one rate-limit check, local and through Redis (~1 min)"
  $L edge --checks 1000000 --redis-checks 50000 --keys 10000 --json $R/edge.json
fi

if step webhooks; then
  say "webhooks: deliveries to a local receiver, and notify's cost per run (~3 min)"
  $L webhooks --runs 2000 --concurrency 16 --subscriptions 0,1,10 --json $R/webhooks.json
fi

if step transport; then
  say "transport: TLS handshakes, idle SSE memory and fan-out to 9,000 over HTTP/1.1 and HTTP/2 (~8 min)"
  $L transport --idle-streams 10000 --streams-per-conn 100 --subscribers 9000 --rate 30 --secs 20 \
    --json $R/transport.json
  say "transport: the relay over TLS, nginx terminating TLS in front of the same provider (~5 min)"
  $L proxy --tls --nginx --rates 250,500,1000,2000,3000 --step-secs 10 --slo-p99-ms 1000 \
    --json $R/proxy_tls_nginx.json
fi

if step soak; then
  say "soak: 10,000 streams for 10 minutes (~11 min)"
  $L soak --streams 10000 --secs 600 --rate 30 --json $R/soak.json
fi

say "render BENCHMARKS.md and README.md from the results, then check them"
$L report --write
$L report   # the check of loadtest/tests/documents.rs, without a test build
