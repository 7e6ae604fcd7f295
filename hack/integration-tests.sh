#!/usr/bin/env bash
# Runs the integration tests against the local control plane. A cluster that was already up
# is used and left up; one started here is stopped again when the tests end.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
if hack/local-cluster.sh status >/dev/null 2>&1; then
  echo "Using the running local cluster."
  hack/local-cluster.sh up   # idempotent: reinstalls changed CRDs, restarts a dead part
else
  trap 'hack/local-cluster.sh down' EXIT
  hack/local-cluster.sh up
fi
eval "$(hack/local-cluster.sh env)"
cargo test --test '*'
# The demo is the end-to-end check of weir's whole job (make demo); here its processes stop
# when it is done.
hack/demo.sh
hack/demo.sh stop
