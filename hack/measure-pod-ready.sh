#!/usr/bin/env bash
# Measures how long the kubelet stand-in takes to make a Pod Ready on the local cluster:
# creates N Pods one after another and times each from `kubectl create` returning to the
# Ready condition seen by a watch (`kubectl wait`). Prints each time, then min/median/max.
#   hack/measure-pod-ready.sh [N]    (default 20; the cluster must be up)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${1:-20}
eval "$("$ROOT/hack/local-cluster.sh" env)"
ns=pod-ready-$$
kubectl create namespace "$ns" >/dev/null
trap 'kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true' EXIT
until kubectl -n "$ns" get serviceaccount default -o jsonpath='{.secrets[0].name}' 2>/dev/null | grep -q .; do sleep 0.1; done
times=()
for i in $(seq "$N"); do
  start=$(date +%s%N)
  kubectl -n "$ns" run "p$i" --image=example/app:1 --restart=Never >/dev/null
  kubectl -n "$ns" wait --for=condition=Ready "pod/p$i" --timeout=30s >/dev/null
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  times+=("$ms")
  echo "pod $i ready after ${ms} ms (kubectl round trips included)"
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
echo "pods=$N min=$(echo "$sorted" | head -1)ms median=$(echo "$sorted" | sed -n "$(( (N + 1) / 2 ))p")ms max=$(echo "$sorted" | tail -1)ms"
