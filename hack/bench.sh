#!/usr/bin/env bash
# make bench: the criterion benchmarks of the pure parts, then the scale and latency harness
# (benches/cluster.rs) on the local control plane, which regenerates BENCHMARKS.md.
# A cluster that was already up is used and left up; one started here is stopped at the end.
#
#   WEIR_BENCH_SIZES="100 1000 5000"  Rollout counts for memory, resync and recovery
#   WEIR_BENCH_SAMPLES=50              aborts and pauses timed
#   WEIR_BENCH_ONLY="scale"            only these parts (steps aborts git scale), to profile one
#   WEIR_BENCH_OUT=BENCHMARKS.md       where the report goes
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
cargo bench --bench core --bench validate
if hack/local-cluster.sh status >/dev/null 2>&1; then
  echo "Using the running local cluster."
  hack/local-cluster.sh up
else
  trap 'hack/local-cluster.sh down' EXIT
  hack/local-cluster.sh up
fi
eval "$(hack/local-cluster.sh env)"
# Namespaces left Terminating by earlier tests (their controller gone, their Rollouts' route
# cleanup finalizer never honoured) keep the namespace controller listing and deleting in a
# loop, which the request counts would take for weir's: let them go first.
for ns in $(kubectl get namespaces -o jsonpath='{range .items[?(@.status.phase=="Terminating")]}{.metadata.name}{" "}{end}'); do
  kubectl get rollouts -n "$ns" -o name 2>/dev/null |
    xargs -r -n1 kubectl patch -n "$ns" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
done
cargo bench --bench cluster
