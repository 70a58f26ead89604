#!/usr/bin/env bash
# pop side by side with the systems a user would otherwise pick, in one window, one after the
# other, with the same durability (every commit fsync'd; PostgreSQL with its defaults, fsync
# and synchronous_commit on) and the same workload shape: workflows of 6 events each, one
# transaction per command. Prints every figure and its ratio pop / peer.
#
#   bench/compare.sh                         # 3,000 workflows, 3 runs each, waits ≤ 120 s for a quiet machine
#   COMPARE_WORKFLOWS=10000 COMPARE_RUNS=5 bench/compare.sh
#   COMPARE_PEERS="eventsourcing cqrs-es" bench/compare.sh   # a subset (also: graphile-worker)
#
# The peers are installed from their registries at run time under /tmp/peers, never vendored:
# Python `eventsourcing` (PyPI), `cqrs-es` + `postgres-es` (crates.io, built in /tmp/peers),
# `graphile-worker` (npm). Their runners are in bench/peers/ (see its README). PostgreSQL
# comes from Debian's `postgresql` (installed if missing): the peers share one throwaway
# cluster on 127.0.0.1:54329; pop's own PostgreSQL figures start their own throwaway cluster.
# Needs root (initdb runs as the `postgres` user via runuser), cargo, python3, node and npm.
#
# Raw logs: /tmp/peers/compare-<time>/. The machine's load and O_DSYNC write rate are printed
# before each part, so a figure can be judged against the noise it was taken in.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
peers="$root/bench/peers"
N=${COMPARE_WORKFLOWS:-3000}
RUNS=${COMPARE_RUNS:-3}
PEERS=${COMPARE_PEERS:-eventsourcing cqrs-es graphile-worker}
export PEERS_QUIET_WAIT=${PEERS_QUIET_WAIT:-120}
# shellcheck source=peers/_lib.sh
source "$peers/_lib.sh"
logs="$PEERS_TMP/compare-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$logs"
events=$((N * 6))

say() { echo "compare: $*" >&2; }
context() { # a part's noise: load, fsync rate, CPU busy before it starts
  wait_quiet
  machine_probe
}

# --- pop -------------------------------------------------------------------------------------
say "building pop's benchmarks (release)"
(cd "$root" && cargo bench -q -p pop-store --bench store --no-run \
  && cargo bench -q -p pop-projections --bench rebuild --no-run \
  && cargo bench -q -p pop-server --bench lifecycle --no-run)

# The store benchmark's append workload is the peers' shape: each appender appends 6
# single-event transactions (expected version checked) to a fresh stream, then the next.
say "pop, SQLite: append (1 writer), replay"
{ context; (cd "$root" && cargo bench -q -p pop-store --bench store -- --runs "$RUNS" \
  --appenders 1 --append-events "$events" --latency-appends "$events" \
  --read-events "$events" --only append,latency,read); } >"$logs/pop-sqlite.log" 2>&1
say "pop, PostgreSQL: append (1 and 4 writers), replay"
{ context; (cd "$root" && cargo bench -q -p pop-store --bench store -- --postgres --runs "$RUNS" \
  --appenders 1,4 --append-events "$events" --latency-appends "$events" \
  --read-events "$events" --only append,latency,read); } >"$logs/pop-postgres.log" 2>&1
say "pop: rebuild of the read models incl. fold (SQLite)"
{ context; (cd "$root" && cargo bench -q -p pop-projections --bench rebuild -- \
  --agendas "$N" --runs "$RUNS" --memory-agendas 1000); } >"$logs/pop-rebuild.log" 2>&1
say "pop: full lifecycles and claim latency with a small backlog"
{ context; for _ in $(seq 1 "$RUNS"); do
  (cd "$root" && cargo bench -q -p pop-server --bench lifecycle -- --seconds 10)
  (cd "$root" && cargo bench -q -p pop-server --bench lifecycle -- --seconds 10 --outstanding 64 \
    | sed 's/^RESULT /RESULT64 /')
  # The batched work calls (claim 100, report 100 per request, 16 submits per body), as the
  # peer's batched row is its batched mode; still one command and one event per step.
  (cd "$root" && cargo bench -q -p pop-server --bench lifecycle -- --seconds 10 --batch 100 \
    | sed 's/^RESULT /RESULTB /')
done; } >"$logs/pop-lifecycle.log" 2>&1

# --- peers -----------------------------------------------------------------------------------
for peer in $PEERS; do
  say "peer $peer"
  case $peer in
    eventsourcing) ES_AGGREGATES=$N ES_RUNS=$RUNS "$peers/run-eventsourcing.sh" ;;
    cqrs-es) CQ_AGGREGATES=$N CQ_RUNS=$RUNS "$peers/run-cqrs-es.sh" ;;
    graphile-worker) GW_JOBS=$((N * 4)) GW_RUNS=$RUNS "$peers/run-graphile-worker.sh" ;;
    *) say "unknown peer $peer"; exit 2 ;;
  esac >"$logs/$peer.log" 2>&1 || { say "peer $peer failed: see $logs/$peer.log"; tail -5 "$logs/$peer.log" >&2; }
done

# --- the table -------------------------------------------------------------------------------
median() { sort -g | awk '{a[NR]=$1} END {if (NR) print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
# pop store bench line "<label>   <median> ev/s runs: …"
store() { grep -F "$2" "$logs/$1" | head -1 | awk '{for (i=1;i<=NF;i++) if ($i=="ev/s"||$i=="µs") {print $(i-1); exit}}'; }
# a peer's "name: value unit" line
peer() { grep -h "^$1: " "$logs"/*.log 2>/dev/null | head -1 | awk '{print $2}'; }
result() { grep -h "^$1 " "$logs/pop-lifecycle.log" | tr ' ' '\n' | sed -n "s/^$2=//p" | median; }
rebuild() { sed -n 's/^rebuild rate (median): \([0-9]*\) events\/s.*/\1/p' "$logs/pop-rebuild.log"; }

row() { # label, pop value, peer label, peer value, unit, higher-is-better (1) or lower (0)
  local ratio="—"
  if [ -n "$2" ] && [ -n "$4" ] && awk -v a="$2" -v b="$4" 'BEGIN{exit !(a>0 && b>0)}'; then
    ratio=$(awk -v a="$2" -v b="$4" -v h="$6" 'BEGIN{printf "%.2fx", h ? a/b : b/a}')
  fi
  printf '| %s | %s %s | %s: %s %s | %s |\n' "$1" "${2:-n/a}" "$5" "$3" "${4:-n/a}" "$5" "$ratio"
}

{
  echo "## Side by side ($(date -u +'%Y-%m-%d %H:%M UTC'), $N workflows × 6 events, $RUNS runs, medians)"
  echo
  echo "Machine during the run (each part's probe): $(grep -h '^machine\.' "$logs"/*.log | sort | uniq -c | sort -rn | head -6 | awk '{$1=""; print}' | paste -sd';' -)"
  echo
  echo "| figure | pop | peer | pop vs peer (>1 = pop better) |"
  echo "|---|---|---|---|"
  row "durable append, 1 writer, SQLite" "$(store pop-sqlite.log 'append, 1 appenders')" "eventsourcing" "$(peer es.sqlite.t1.append)" "ev/s" 1
  row "append latency p50, 1 writer, SQLite" "$(store pop-sqlite.log 'append latency p50')" "eventsourcing" "$(awk -v v="$(peer es.sqlite.t1.command_latency_p50)" 'BEGIN{if (v!="") print v*1000}')" "µs" 0
  row "durable append, 1 writer, PostgreSQL" "$(store pop-postgres.log 'append, 1 appenders')" "cqrs-es" "$(peer cqrs_es.postgres.c1.append)" "ev/s" 1
  row "durable append, 4 writers, PostgreSQL" "$(store pop-postgres.log 'append, 4 appenders')" "cqrs-es" "$(peer cqrs_es.postgres.c4.append)" "ev/s" 1
  row "durable append, 1 writer, PostgreSQL" "$(store pop-postgres.log 'append, 1 appenders')" "eventsourcing" "$(peer es.postgres.t1.append)" "ev/s" 1
  row "durable append, 4 writers, PostgreSQL" "$(store pop-postgres.log 'append, 4 appenders')" "eventsourcing" "$(peer es.postgres.t4.append)" "ev/s" 1
  row "append latency p50, 1 writer, PostgreSQL" "$(store pop-postgres.log 'append latency p50')" "cqrs-es" "$(awk -v v="$(peer cqrs_es.postgres.c1.command_latency_p50)" 'BEGIN{if (v!="") print v*1000}')" "µs" 0
  row "replay, read + decode (pop) vs decode + fold (peer), SQLite" "$(store pop-sqlite.log 'read_all + decode')" "eventsourcing" "$(peer es.sqlite.t1.replay_decode_fold)" "ev/s" 1
  row "replay incl. fold into the read models (SQLite) vs decode + fold (PostgreSQL)" "$(rebuild)" "cqrs-es" "$(peer cqrs_es.postgres.c1.replay_decode_fold)" "ev/s" 1
  row "replay, read + decode, PostgreSQL" "$(store pop-postgres.log 'read_all + decode')" "cqrs-es (decode + fold)" "$(peer cqrs_es.postgres.c1.replay_decode_fold)" "ev/s" 1
  gw_e2e=$(awk -v n=$((N * 4)) -v t="$(peer gw.plain.enqueue_plus_process_time)" 'BEGIN{if (t>0) printf "%.0f", n/t}')
  row "full lifecycles (pop: submit, claim, 3 reports, complete over HTTP) vs jobs end to end (add, then process)" "$(result RESULT agendas_per_s)" "graphile-worker plain" "$gw_e2e" "/s" 1
  row "full lifecycles vs processing alone, batched (localQueue 100)" "$(result RESULT agendas_per_s)" "graphile-worker batched" "$(peer gw.batched.process_claim_complete)" "/s" 1
  row "full lifecycles with batched calls (pop --batch 100) vs processing alone, batched" "$(result RESULTB agendas_per_s)" "graphile-worker batched" "$(peer gw.batched.process_claim_complete)" "/s" 1
  row "hand-out latency p50 (pop: submit → claim, backlog ≤ 64) vs add → start" "$(result RESULT64 claim_p50_ms)" "graphile-worker" "$(peer gw.latency.add_to_start_p50)" "ms" 0
  row "hand-out latency p99" "$(result RESULT64 claim_p99_ms)" "graphile-worker" "$(peer gw.latency.add_to_start_p99)" "ms" 0
  echo
  echo "Raw logs: $logs"
} | tee "$logs/table.md"
