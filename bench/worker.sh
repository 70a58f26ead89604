#!/usr/bin/env bash
# Worker throughput: RUNS runs of server/benches/worker.rs — a fresh release-built `pop serve`
# and one `pop worker` each, agendas of 10 chained trivial local-process operations — then the
# median agendas/s, operations/s and worker CPU per operation. Extra arguments go to the
# benchmark, e.g.
#
#   bench/worker.sh                                  # 300 agendas, 16 in flight, durability full
#   RUNS=1 bench/worker.sh --agendas 100 --durability normal
#
# The worker's own overhead per operation, without a server: cargo bench -p pop-worker --bench overhead
set -euo pipefail

RUNS=${RUNS:-3}
root=$(cd "$(dirname "$0")/.." && pwd)

(cd "$root" && cargo bench -p pop-server --bench worker --no-run --quiet)

results=()
for run in $(seq 1 "$RUNS"); do
  out=$(cd "$root" && cargo bench -p pop-server --bench worker --quiet -- "$@")
  printf '%s\n' "$out" | grep -v '^RESULT' >&2
  line=$(printf '%s\n' "$out" | grep '^RESULT')
  echo "run $run: ${line#RESULT }"
  results+=("${line#RESULT }")
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
field() { printf '%s\n' "${results[@]}" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
echo "median of $RUNS runs: $(field agendas_per_s | median) agendas/s, $(field ops_per_s | median) operations/s, worker CPU $(field worker_cpu_ms_per_op | median) ms per operation"
echo "load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
