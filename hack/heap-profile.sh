#!/usr/bin/env bash
# A heap profile of the release controller under load, as BENCHMARKS.md reports it:
# N Rollouts (default 500) created and brought to Healthy, all moved to a new template and
# held mid-canary, then the controller stopped with SIGINT so heaptrack can write its data.
# With `idle`, the controller is killed (SIGKILL) once all are Healthy and quiet instead:
# whatever it still held then is reported as leaked, which is what an idle Rollout costs.
# Needs the local cluster up (hack/local-cluster.sh up) and `cargo build --release`.
#
#   hack/heap-profile.sh [N] [idle]   -> target/heap-profile/weir.zst and peaks.txt
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
N=${1:-500}
MODE=${2:-canary}
OUT=$ROOT/target/heap-profile
NS=weir-heap-profile
source hack/probe-lib.sh
need heaptrack
eval "$(hack/local-cluster.sh env)"
mkdir -p "$OUT"
rm -f "$OUT"/weir.*

create_rollouts
heaptrack -o "$OUT/weir" target/release/weir controller --namespace "$NS" --metrics-addr 127.0.0.1:0 >"$OUT/controller.log" 2>&1 &
wait_for Healthy
pid=$(pgrep -f "^target/release/weir controller --namespace $NS" | head -1)
if [ "$MODE" = idle ]; then
  sleep 30
  grep -E "VmRSS|VmHWM" "/proc/$pid/status"
  kill -KILL "$pid"
  wait || true
  heaptrack_print -f "$OUT"/weir.*zst --print-peaks 0 --print-allocators 0 --print-temporary 0 \
    --print-leaks 1 --peak-limit 25 >"$OUT/peaks.txt" 2>/dev/null || true
else
  kubectl -n "$NS" get rollouts.weir.dev -o name | xargs -P 8 -I{} kubectl -n "$NS" patch {} --type merge \
    -p '{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"bench:2"}]}}}}' >/dev/null
  wait_for Paused
  grep VmHWM "/proc/$pid/status"
  kill -INT "$pid"
  wait
  heaptrack_print -f "$OUT"/weir.*zst --print-peaks 1 --print-allocators 0 --print-temporary 0 \
    --print-leaks 0 --peak-limit 10 >"$OUT/peaks.txt" 2>/dev/null || true
fi
grep -E "^(peak heap memory consumption|peak RSS)" "$OUT/peaks.txt" || true
remove_namespace
echo "written: $OUT/peaks.txt (and heaptrack --analyze $OUT/weir.*zst)"
