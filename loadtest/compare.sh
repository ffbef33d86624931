#!/usr/bin/env bash
# Before and after: the REST, fan-out and relay commands against an older
# weir binary and the current release build, interleaved round by round so
# that both sides see the same machine. BENCHMARKS.md ("Before and after
# the typed surface") renders the files with `weir-load report`.
#
#   git worktree add --detach /tmp/before <commit>
#   (cd /tmp/before && cargo build --release -p weir)
#   bash loadtest/compare.sh /tmp/before/target/release/weir [ROUNDS]
#
# Writes loadtest/results/spread/{rest,fanout,proxy}_{before,after}_N.json
# (OUT=loadtest/results/<dir> writes there instead: one folder per
# comparison).
# About four minutes a round; run it on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:?usage: compare.sh OLD_WEIR_BIN [ROUNDS]}
ROUNDS=${2:-3}
L=target/release/weir-load
R=${OUT:-loadtest/results/spread}
A=target/release/weir
mkdir -p $R
[ -n "${NO_BUILD:-}" ] || cargo build --release -p weir -p weir-load
for i in $(seq "$ROUNDS"); do
  for side in before after; do
    bin=$B; [ $side = after ] && bin=$A
    echo "== $(date -u +%T) round $i $side"
    $L rest --cases embedded --secs 10 --connections 64 --weir-bin "$bin" --json $R/rest_${side}_$i.json >/dev/null
    $L fanout --subscribers 10000 --rate 30 --secs 10 --weir-bin "$bin" --json $R/fanout_${side}_$i.json >/dev/null
    $L proxy --rates 2000 --step-secs 10 --slo-p99-ms 1000 --nginx --weir-bin "$bin" --json $R/proxy_${side}_$i.json >/dev/null
  done
done
