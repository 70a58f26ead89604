#!/usr/bin/env bash
# Hand-out latency: RUNS runs of server/benches/handout.rs against a fresh `pop serve`
# (scheduler on, durable store) each — an idle worker waits in getAgenda(waitSeconds), an
# agenda is submitted, the time until the waiting call answers with it — then the medians of
# the runs' p50 and p99. Extra arguments go to the benchmark, e.g.
#
#   bench/handout.sh                                  # 400 samples, 64 agendas queued elsewhere
#   RUNS=1 bench/handout.sh --samples 100
#   POP_BENCH_BIN=/path/to/pop bench/handout.sh       # a server binary built elsewhere
#
# Loopback only; every server is stopped (SIGTERM) and its temp dir removed by the benchmark.
set -euo pipefail

RUNS=${RUNS:-3}
root=$(cd "$(dirname "$0")/.." && pwd)

(cd "$root" && cargo bench -p pop-server --bench handout --no-run --quiet)

results=()
for run in $(seq 1 "$RUNS"); do
  out=$(cd "$root" && cargo bench -p pop-server --bench handout --quiet -- "$@")
  printf '%s\n' "$out" | grep -v '^RESULT' >&2
  line=$(printf '%s\n' "$out" | grep '^RESULT')
  echo "run $run: ${line#RESULT }"
  results+=("${line#RESULT }")
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
field() { printf '%s\n' "${results[@]}" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
p50=$(field p50_ms | median)
p99=$(field p99_ms | median)
echo "median of $RUNS runs: submit -> claim p50 $p50 ms (target <= 2: ratio $(awk -v v="$p50" 'BEGIN {printf "%.2f", v / 2}')), p99 $p99 ms (target <= 10: ratio $(awk -v v="$p99" 'BEGIN {printf "%.2f", v / 10}')); ack -> claim p50 $(field ack_p50_ms | median) ms, p99 $(field ack_p99_ms | median) ms"
echo "load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
