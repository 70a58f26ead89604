#!/usr/bin/env bash
# The cost of tracing: RUNS pairs of lifecycle runs (server/benches/lifecycle.rs), each pair one
# run with tracing off (the default: no exporter) and one with `--otlp` (the server exports
# every span over OTLP/gRPC to a counting sink in the benchmark), alternated so that the
# machine's load drifts over both alike; then the medians and the on/off ratios. Extra
# arguments go to every run, e.g.
#
#   bench/tracing.sh                                  # 3 pairs, 20 s each, durability full
#   RUNS=5 bench/tracing.sh --seconds 10
#   POP_BENCH_BIN=/path/to/older/pop bench/tracing.sh # another build's server (before/after)
#
# Loopback only; every server is stopped by the benchmark.
set -euo pipefail

RUNS=${RUNS:-3}
root=$(cd "$(dirname "$0")/.." && pwd)

(cd "$root" && cargo bench -p pop-server --bench lifecycle --no-run --quiet)

off=()
on=()
for run in $(seq 1 "$RUNS"); do
  for mode in off on; do
    flag=()
    [ "$mode" = on ] && flag=(--otlp)
    out=$(cd "$root" && cargo bench -p pop-server --bench lifecycle --quiet -- "${flag[@]}" "$@")
    line=$(printf '%s\n' "$out" | grep '^RESULT')
    echo "run $run $mode: ${line#RESULT }"
    if [ "$mode" = on ]; then on+=("${line#RESULT }"); else off+=("${line#RESULT }"); fi
  done
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
field() { local -n runs=$1; printf '%s\n' "${runs[@]}" | tr ' ' '\n' | sed -n "s/^$2=//p" | median; }
for f in agendas_per_s per_core claim_p50_ms claim_p99_ms server_cores rss_peak_mib spans; do
  a=$(field off "$f"); b=$(field on "$f")
  echo "median $f: off $a, on $b (on/off $(awk -v a="$a" -v b="$b" 'BEGIN {if (a > 0) printf "%.2f", b / a; else print "-"}'))"
done
echo "load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
