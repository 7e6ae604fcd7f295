#!/usr/bin/env bash
# Runs the integration tests against the local control plane. A cluster that was already up
# is used and left up; one started here is stopped again when the tests end.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# The default cluster, and a second one (`remote`) that GitSyncs with spec.kubeConfig
# apply to.
stop=()
for name in "" remote; do
  if hack/local-cluster.sh status ${name:+--name $name} >/dev/null 2>&1; then
    echo "Using the running local cluster${name:+ $name}."
    hack/local-cluster.sh up ${name:+--name $name}   # idempotent: reinstalls changed CRDs, restarts a dead part
  else
    stop+=("${name:-default}")
    hack/local-cluster.sh up ${name:+--name $name}
  fi
done
stop_started() {
  local name
  for name in "${stop[@]+"${stop[@]}"}"; do
    if [ "$name" = default ]; then hack/local-cluster.sh down; else hack/local-cluster.sh down --name "$name"; fi
  done
}
trap stop_started EXIT
eval "$(hack/local-cluster.sh env)"
cargo test --test '*'
# The demo is the end-to-end check of weir's whole job (make demo); here its processes stop
# when it is done.
# With its dashboard, on any free port, checked to show the rejected revision.
DEMO_DASHBOARD=1 DEMO_DASHBOARD_PORT=0 hack/demo.sh
hack/demo.sh stop
# The same across environments on the two clusters (make demo-fleet).
hack/demo-fleet.sh
hack/demo-fleet.sh stop
