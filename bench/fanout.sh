#!/usr/bin/env bash
# Subscription fan-out: RUNS runs of the fan-out benchmark (server/benches/fanout.rs) against a
# fresh release-built `pop serve` each, then the median delivery p50/p99 and server RSS.
# Extra arguments go to the benchmark, e.g.
#
#   bench/fanout.sh                                  # 10,000 subscribers, 1,000 agendas, 1,000 updates/s, 20 s
#   RUNS=1 bench/fanout.sh --subscribers 2000 --seconds 5
#
# Loopback only. Every socket is one fd in the benchmark and one in the server, so the fd limit
# is raised to the hard limit first.
set -euo pipefail

RUNS=${RUNS:-3}
root=$(cd "$(dirname "$0")/.." && pwd)

ulimit -n "$(ulimit -Hn)"
echo "fanout: fd limit $(ulimit -n)" >&2
(cd "$root" && cargo bench -p pop-server --bench fanout --no-run --quiet)

results=()
for run in $(seq 1 "$RUNS"); do
  out=$(cd "$root" && cargo bench -p pop-server --bench fanout --quiet -- "$@")
  printf '%s\n' "$out" | grep -v '^RESULT' >&2
  line=$(printf '%s\n' "$out" | grep '^RESULT')
  echo "run $run: ${line#RESULT }"
  results+=("${line#RESULT }")
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
field() { printf '%s\n' "${results[@]}" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
p99=$(field p99_ms | median)
echo "median of $RUNS runs: delivery p50 $(field p50_ms | median) ms, p99 $p99 ms (target < 100 ms: ratio $(awk -v p="$p99" 'BEGIN {printf "%.2f", p / 100}')), achieved $(field achieved_rate | median) updates/s, server RSS peak $(field rss_peak_mib | median) MiB, server $(field server_cores | median) cores"
echo "load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
