#!/usr/bin/env bash
# make bench: the criterion benchmarks of the pure parts, then the scale and latency harness
# (benches/cluster.rs) on the local control plane, which regenerates BENCHMARKS.md.
# A cluster that was already up is used and left up; one started here is stopped at the end.
#
#   WEIR_BENCH_SIZES="100 1000 5000"  Rollout counts for memory, resync and recovery
#   WEIR_BENCH_SAMPLES=50              aborts and pauses timed
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
cargo bench --bench cluster
