#!/usr/bin/env bash
# Soak: an hour of mixed load against a fresh `pop serve` (server/benches/soak.rs: submits,
# claims, reports and failures, retries, cancels, reruns, reads, lists, subscriptions, the data
# reaper), then the memory, latency-drift and total-queue verdicts; non-zero exit when one fails.
# Extra arguments go to the benchmark, e.g.
#
#   bench/soak.sh                          # 60 minutes, 10 agendas/s, durability full
#   bench/soak.sh --minutes 10 --window-minutes 1
#   POP_BENCH_BIN=/path/to/pop bench/soak.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo bench -p pop-server --bench soak --quiet -- "$@"
