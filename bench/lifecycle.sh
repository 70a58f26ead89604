#!/usr/bin/env bash
# Scheduling and hand-out lifecycle: RUNS runs of server/benches/lifecycle.rs against a fresh
# release-built `pop serve` (scheduler on) each — submit, queue, getAgenda, 3 progress reports,
# complete — then the median agendas/s and claim latency p50/p99. Extra arguments go to the
# benchmark, e.g.
#
#   bench/lifecycle.sh                              # 16 pullers (8 in flight each), 32 submitters, 20 s, durability full
#   RUNS=1 bench/lifecycle.sh --seconds 5 --durability normal
#
# Loopback only; every server is stopped (SIGTERM) and its temp dir removed by the benchmark.
set -euo pipefail

RUNS=${RUNS:-3}
TARGET=2000
root=$(cd "$(dirname "$0")/.." && pwd)

(cd "$root" && cargo bench -p pop-server --bench lifecycle --no-run --quiet)

results=()
for run in $(seq 1 "$RUNS"); do
  out=$(cd "$root" && cargo bench -p pop-server --bench lifecycle --quiet -- "$@")
  printf '%s\n' "$out" | grep -v '^RESULT' >&2
  line=$(printf '%s\n' "$out" | grep '^RESULT')
  echo "run $run: ${line#RESULT }"
  results+=("${line#RESULT }")
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
field() { printf '%s\n' "${results[@]}" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
rate=$(field agendas_per_s | median)
echo "median of $RUNS runs: $rate agendas/s completed (target >= $TARGET: ratio $(awk -v r="$rate" -v t="$TARGET" 'BEGIN {printf "%.2f", r / t}')), claim latency p50 $(field claim_p50_ms | median) ms, p99 $(field claim_p99_ms | median) ms, server $(field server_cores | median) cores ($(field per_core | median) agendas/s per server core)"
echo "load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
