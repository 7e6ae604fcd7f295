#!/usr/bin/env bash
# How much of an idle controller's heap glibc holds free: N Rollouts (default 1000) brought
# to Healthy by one release controller, which is stopped; a second one started on them (a
# restart, as `make bench`'s idle figure is taken) and left 45 s; then its RSS, glibc's
# malloc_stats() (printed into its log: "system bytes" held, "in use bytes" live), and its
# RSS again after malloc_trim(0), both called in the process through gdb.
# Needs the local cluster up (hack/local-cluster.sh up) and `cargo build --release`; installs
# gdb if it is missing.
#
#   hack/malloc-stats.sh [N]        (NS=<namespace> to run beside an earlier namespace still going)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
N=${1:-1000}
NS=${NS:-weir-malloc-stats}
OUT=$ROOT/target/malloc-stats
source hack/probe-lib.sh
need gdb
eval "$(hack/local-cluster.sh env)"
mkdir -p "$OUT"
create_rollouts
target/release/weir controller --namespace "$NS" --metrics-addr 127.0.0.1:0 >"$OUT/first.log" 2>&1 &
first=$!
wait_for Healthy
kill -INT "$first"; wait "$first" || true
target/release/weir controller --namespace "$NS" --metrics-addr 127.0.0.1:0 >"$OUT/second.log" 2>&1 &
second=$!
sleep 45
echo "restarted controller, $(grep VmRSS "/proc/$second/status")"
gdb -p "$second" -batch -ex 'call (void)malloc_stats()' >/dev/null 2>&1 || true
gdb -p "$second" -batch -ex 'call (int)malloc_trim(0)' >/dev/null 2>&1 || true
echo "after malloc_trim(0), $(grep VmRSS "/proc/$second/status")"
kill -INT "$second"; wait "$second" || true
grep -E "^(Arena|Total|system bytes|in use bytes)" "$OUT/second.log" || true
remove_namespace
