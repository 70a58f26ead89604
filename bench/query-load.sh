#!/usr/bin/env bash
# Read-side load: `agendaProgress(id)` queries over HTTP on loopback against a release-built
# `pop serve` on a fresh temp data dir. Seeds AGENDAS agendas through the API, checks one query
# answers with data, then runs wrk RUNS times (CONNECTIONS connections, THREADS threads,
# DURATION each) and prints every run and the median requests/s and p99.
#
#   bench/query-load.sh                  # defaults below
#   AGENDAS=10000 RUNS=5 bench/query-load.sh
#
# Needs wrk (Debian: apt-get install -y wrk), curl and jq. Loopback only; the server is stopped
# (SIGTERM) and its temp dir removed on exit, whatever happens.
set -euo pipefail

AGENDAS=${AGENDAS:-1000}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
DURATION=${DURATION:-15s}
WARMUP=${WARMUP:-3s}
RUNS=${RUNS:-3}
# Concurrent submissions while seeding (they share group commits).
SEED_PARALLEL=${SEED_PARALLEL:-16}

root=$(cd "$(dirname "$0")/.." && pwd)
here="$root/bench"
for tool in wrk curl jq; do
  command -v "$tool" >/dev/null || { echo "query-load: $tool is required" >&2; exit 2; }
done

if [[ -z "${POP_BIN:-}" ]]; then
  (cd "$root" && cargo build --release -p pop-server --quiet)
  POP_BIN="$root/target/release/pop"
fi

work=$(mktemp -d)
pop_pid=""
cleanup() {
  if [[ -n "$pop_pid" ]] && kill -0 "$pop_pid" 2>/dev/null; then
    kill -TERM "$pop_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pop_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pop_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

RUST_LOG=warn "$POP_BIN" serve --data-dir "$work/data" --bind 127.0.0.1:0 \
  >"$work/stdout" 2>"$work/stderr" &
pop_pid=$!
addr=""
for _ in $(seq 1 300); do   # up to 30 s
  addr=$(sed -n 's|^pop: listening on http://\(.*\)/graphql$|\1|p' "$work/stdout")
  [[ -n "$addr" ]] && break
  kill -0 "$pop_pid" 2>/dev/null || { cat "$work/stderr" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$addr" ]] || { echo "query-load: pop serve did not start" >&2; cat "$work/stderr" >&2; exit 1; }
token=$(tr -d '[:space:]' <"$work/data/admin.token")
url="http://$addr/graphql"

gql() {  # gql QUERY VARIABLES-JSON → the response body; fails on GraphQL errors
  local body
  body=$(jq -cn --arg q "$1" --argjson v "$2" '{query: $q, variables: $v}')
  local out
  out=$(curl -sS --fail-with-body -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' --data "$body" "$url")
  if [[ $(jq 'has("errors")' <<<"$out") == true ]]; then echo "query-load: $out" >&2; return 1; fi
  printf '%s\n' "$out"
}
export -f gql
export token url

gql 'mutation { createResourcePool(resourcePool: {id: "pool-1", customerId: "ops", title: "Pool"}) { position } }' '{}' >/dev/null
gql 'mutation { createCustomer(customer: {id: "acme", title: "Acme", resourcePoolId: "pool-1"}) { position } }' '{}' >/dev/null
seeded=$(gql 'mutation { createInsight(insight: {id: "transcode", customerId: "ops", title: "Transcode", resourcePoolId: "pool-1", queueSize: 5, isGlobal: true, mappers: {operationType: ["ffmpeg"]}}) { position } }' '{}' | jq -r '.data.createInsight.position')

echo "query-load: seeding $AGENDAS agendas on $addr ..." >&2
submit='mutation($a: JSON!, $p: String) { submitAgenda(agenda: $a, atLeastPosition: $p) { agenda { id } } }'
export submit seeded
seq 1 "$AGENDAS" | xargs -P "$SEED_PARALLEL" -I{} bash -c '
  gql "$submit" "{\"p\": \"$seeded\", \"a\": {\"customerId\": \"acme\", \"linkId\": \"batch-$(( {} % 100 ))\", \"title\": \"transcode {}\", \"operations\": [{\"name\": \"probe\", \"type\": \"ffmpeg\", \"payload\": {\"src\": \"in-{}.mp4\"}}, {\"name\": \"encode\", \"type\": \"ffmpeg\", \"payload\": \"@<probe.out::/streams>\"}]}}" \
    | jq -r .data.submitAgenda.agenda.id' >"$work/ids"
[[ $(wc -l <"$work/ids") -eq $AGENDAS ]] || { echo "query-load: seeding failed" >&2; exit 1; }

# One query by hand: it must answer with the agenda, not null or an error.
first=$(head -1 "$work/ids")
gql 'query($id: String!) { agendaProgress(id: $id, atLeastPosition: "0") { id processingState } }' "{\"id\": \"$first\"}" \
  | jq -e --arg id "$first" '.data.agendaProgress.id == $id' >/dev/null \
  || { echo "query-load: agendaProgress($first) did not answer" >&2; exit 1; }
# Let the projections catch up with the last submission before measuring.
for _ in $(seq 1 100); do
  curl -sf "http://$addr/readyz" >/dev/null && break
  sleep 0.1
done

export POP_BENCH_TOKEN="$token" POP_BENCH_IDS="$work/ids"
echo "query-load: warm-up $WARMUP" >&2
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" -s "$here/query.lua" "$url" >/dev/null
results=()
cpu_ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$pop_pid/stat"; }
for run in $(seq 1 "$RUNS"); do
  before=$(cpu_ticks); started=$(date +%s.%N)
  line=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$here/query.lua" "$url" | grep '^RESULT')
  cores=$(awk -v a="$before" -v b="$(cpu_ticks)" -v s="$started" -v e="$(date +%s.%N)" -v hz="$(getconf CLK_TCK)" \
    'BEGIN {printf "%.2f", (b - a) / hz / (e - s)}')
  echo "run $run: ${line#RESULT } server_cores=$cores"
  results+=("${line#RESULT }")
done
rss_kib=$(awk '/^VmRSS/ {print $2}' "/proc/$pop_pid/status")

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
field() { printf '%s\n' "${results[@]}" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
rps=$(field rps | median)
p99=$(field p99_ms | median)
echo "median of $RUNS runs: $rps req/s, p99 $p99 ms (target >= 20000 req/s: ratio $(awk -v r="$rps" 'BEGIN {printf "%.2f", r / 20000}')); server RSS $((rss_kib / 1024)) MiB"
echo "setup: $AGENDAS agendas, $CONNECTIONS connections, $THREADS wrk threads, $DURATION per run, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
