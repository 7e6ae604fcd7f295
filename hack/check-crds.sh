#!/usr/bin/env bash
# Fails when crds/ or hack/crds/ differ from what the Rust types generate.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT
cargo run --quiet --bin weir -- crds --dir "$fresh/crds" --reference "$fresh/crd-reference.md"
cargo run --quiet --bin weir-sim -- gateway-api-crds --dir "$fresh/hack-crds"
cargo run --quiet --bin weir-sim -- smi-crds --dir "$fresh/hack-crds"
cargo run --quiet --bin weir-sim -- istio-crds --dir "$fresh/hack-crds"
status=0
diff -ru crds "$fresh/crds" || status=1
diff -ru hack/crds "$fresh/hack-crds" || status=1
diff -u docs/crd-reference.md "$fresh/crd-reference.md" || status=1
# The chart installs the same CRDs.
diff -ru crds charts/weir/crds || status=1
if [ $status -ne 0 ]; then
  echo "The committed CRDs differ from the types (diff above). Regenerate them with: make crds" >&2
  exit 1
fi
echo "CRDs match the types."
