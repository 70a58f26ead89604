#!/bin/bash
# The PostgreSQL `pop verify` bench with the server's CPU too: runs one store bench binary
# (`cargo bench -p pop-store --bench store --no-run` prints its path) for the verify part and
# reads the CPU (user + system) of the test cluster postmaster's reaped children when the seal
# line appears and when the verify line appears: the verify runs' backends (and any autovacuum
# worker that ended meanwhile; the last run's backends only if already reaped, so compare two
# binaries with it, not the figure with the client's). The bench prints the client's CPU cost.
#
#   bench/pg-verify-cpu.sh target/release/deps/store-<hash> [runs] [events]
set -u
bin=$1
runs=${2:-3}
events=${3:-200000}
tck=$(getconf CLK_TCK)
cpu() { awk -v t="$tck" '{print ($16 + $17) / t}' "/proc/$1/stat"; }
postmaster() {
  for p in $(pgrep -x postgres); do
    tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q -- " -D " && echo "$p"
  done | tail -1
}
coproc B { exec "$bin" --postgres --only verify --runs "$runs" --read-events "$events" --bench 2>&1; }
# bash unsets B when the bench exits: read from a copy of its descriptor.
exec {out}<&"${B[0]}"
pm= s0= s1= v= c=
while IFS= read -r line <&"$out"; do
  case "$line" in
    seal*) pm=$(postmaster); s0=$(cpu "$pm") ;;
    # At once: a moment later the bench closes its store and the cluster, whose processes
    # (the fill's connections among them) would be counted too. So the last run's backends
    # may not be in it yet.
    verify*) s1=$(cpu "$pm"); v=$line ;;
    *"client CPU"*) c=$line ;;
  esac
done
echo "$(echo "$v" | tr -s ' ')"
echo "$(echo "$c" | tr -s ' ')"
echo "server CPU over $runs verify runs: $(echo "$s1 - $s0" | bc) s"
