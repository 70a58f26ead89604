#!/usr/bin/env bash
# The dashboard's budgets in Debian's headless Chromium against a release-built `pop serve`
# (scheduler on) on a fresh temp data dir: a 500-operation DAG rendered, 200 updates/s into
# an open agenda page (the slowest frame), the list's first page as the page sees it
# (contract/dashboard.bench.mjs), and the dashboard's JavaScript as served compressed.
#
#   bench/dashboard.sh
#   RUNS=7 UPDATE_RATE=200 UPDATE_SECONDS=10 OPS=500 INFLIGHT=16 bench/dashboard.sh
#   POP_DURABILITY=normal bench/dashboard.sh   # no fsync per commit: more reports/s offered
#
# Needs node, `npm ci --prefix contract` and /usr/bin/chromium (or POP_CHROMIUM). The first
# page at a million agendas is `cargo bench -p pop-api --bench dashboard_page`. Loopback
# only; the server is stopped and its temp dir removed on exit.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z "${POP_BIN:-}" ]]; then
  (cd "$root" && cargo build --release -p pop-server --quiet)
  POP_BIN="${CARGO_TARGET_DIR:-$root/target}/release/pop"
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
for _ in $(seq 1 300); do
  addr=$(sed -n 's|^pop: listening on http://\(.*\)/graphql$|\1|p' "$work/stdout")
  [[ -n "$addr" ]] && break
  kill -0 "$pop_pid" 2>/dev/null || { cat "$work/stderr" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$addr" ]] || { echo "dashboard: pop serve did not start" >&2; exit 1; }
token=$(tr -d '[:space:]' <"$work/data/admin.token")

# The dashboard's JavaScript as the server sends it to a browser (gzip), GraphiQL aside.
total=0
for f in app.js api.js views.js overview.js dag.js vendor/htm-preact-3.1.1.mjs \
         vendor/dagre-3.1.3.mjs vendor/uplot-1.6.32.min.js vendor/graphql-ws-6.4.2.min.js; do
  n=$(curl -sS -H 'Accept-Encoding: gzip' "http://$addr/dashboard/$f" | wc -c)
  total=$((total + n))
done
echo "js: the dashboard's JavaScript, gzip as served: $total bytes ($((total / 1024)) KiB)"

POP_BASE="http://$addr" POP_ADMIN="$token" node "$root/contract/dashboard.bench.mjs"
