#!/usr/bin/env bash
# How much of an idle controller's heap glibc holds free: N Rollouts (default 1000) brought
# to Healthy by one release controller, which is stopped; a second one started on them (a
# restart, as `make bench`'s idle figure is taken) and left 45 s; then its RSS, glibc's
# malloc_stats() (printed into its log: "system bytes" held, "in use bytes" live), and its
# RSS again after malloc_trim(0), both called in the process through gdb.
# Needs the local cluster up (hack/local-cluster.sh up), `cargo build --release` and gdb.
#
#   hack/malloc-stats.sh [N]        (NS=<namespace> to run beside an earlier namespace still going)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
eval "$(hack/local-cluster.sh env)"
N=${1:-1000}
NS=${NS:-weir-malloc-stats}
OUT=$ROOT/target/malloc-stats
mkdir -p "$OUT"
kubectl create namespace "$NS" >/dev/null
for i in $(seq 1 "$N"); do
  name=$(printf 'r-%05d' "$i")
  printf -- '---\napiVersion: weir.dev/v1alpha1\nkind: Rollout\nmetadata: {name: %s}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: %s}}\n  template:\n    metadata: {labels: {app: %s}}\n    spec: {containers: [{name: app, image: "bench:1"}]}\n  strategy: {canary: {steps: [{setWeight: 50}, {pause: {}}]}}\n' "$name" "$name" "$name"
done | kubectl -n "$NS" apply -f - >/dev/null
target/release/weir controller --namespace "$NS" --metrics-addr 127.0.0.1:0 >"$OUT/first.log" 2>&1 &
first=$!
healthy=0
for _ in $(seq 1 240); do
  healthy=$(kubectl -n "$NS" get rollouts.weir.dev -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | grep -cx Healthy || true)
  [ "$healthy" = "$N" ] && break
  sleep 5
done
echo "$healthy/$N Healthy"
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
# The namespace goes with its finalizers lifted: no controller runs to honour them now.
kubectl -n "$NS" get rollouts.weir.dev -o name | xargs -P 8 -I{} kubectl -n "$NS" patch {} --type merge \
  -p '{"metadata":{"finalizers":null}}' >/dev/null
kubectl delete namespace "$NS" --wait=false
