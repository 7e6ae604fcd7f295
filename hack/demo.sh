#!/usr/bin/env bash
# weir's whole job on the local control plane, narrated and checked:
#   v2 (good) walks 10% -> 30% -> 60% -> 100%, analysis passing at each step;
#   v3 (bad: 30% errors) fails its first analysis, the whole app returns to v2, v3 is
#   rejected, and the revert commit weir pushes shows in `git log`.
# It exits 0 only if all of that really happened. The cluster stays up afterwards.
#
#   hack/demo.sh          run it (make demo)
#   ROUTER=istio hack/demo.sh
#                         the same story on another router (make demo ROUTER=istio): one of
#                         gateway-api (the default), istio, nginx, smi, alb
#   DEMO_DASHBOARD=1 hack/demo.sh
#                         also leave `kubectl weir dashboard` running (port 3100, or
#                         DEMO_DASHBOARD_PORT; 0 for any free one)
#   hack/demo.sh stop     stop what the demo started (the cluster stays; see the end)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${WEIR_CLUSTER_DIR:-$ROOT/.local-cluster}
DEMO=$STATE/demo
BIN=$ROOT/target/debug
LIMIT=${WEIR_DEMO_LIMIT:-180}
ROUTER=${ROUTER:-gateway-api}
case "$ROUTER" in
  gateway-api | istio | nginx | smi | alb) ;;
  *) echo "ROUTER=$ROUTER: not a router weir has; use gateway-api, istio, nginx, smi or alb" >&2; exit 2 ;;
esac

# shellcheck source=hack/demo-lib.sh
. "$ROOT/hack/demo-lib.sh"

stop() {
  stop_pids
  rm -f "$STATE"/prometheus/targets/weir-demo-*.json
}

# Earlier demos' namespaces go, without waiting: their controller is gone, so their Rollouts'
# finalizer (weir.dev/route-cleanup, which the controller would have honoured) is dropped.
forget_earlier_demos() {
  local ns
  for ns in $(kubectl get namespaces -o name | sed -n 's|^namespace/\(weir-demo-[0-9]*\)$|\1|p'); do
    kubectl get rollouts -n "$ns" -o name 2>/dev/null |
      xargs -r -n1 kubectl patch -n "$ns" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
    kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  done
}

if [ "${1:-}" = stop ]; then
  stop
  echo "demo processes stopped; the cluster runs on (hack/local-cluster.sh down stops it)"
  exit 0
fi

# A failed demo leaves no process behind (its logs stay in $DEMO); a good one runs on.
trap 'code=$?; [ $code -eq 0 ] || stop' EXIT

say "building weir"
cargo build --quiet --bins

say "starting the local control plane"
"$ROOT/hack/local-cluster.sh" up
eval "$("$ROOT/hack/local-cluster.sh" env)"
PROM=$WEIR_PROMETHEUS_URL
export PATH="$BIN:$PATH"

stop
forget_earlier_demos
NS=weir-demo-$(date +%s)
kubectl create namespace "$NS" >/dev/null
rm -rf "$DEMO" && mkdir -p "$DEMO"

say "a Git repository on loopback: the team's application, version 1"
serve_repo

# What splits the traffic, as Argo Rollouts documents each router: the objects the team keeps
# in Git beside its Services, and the Rollout's trafficRouting.
routing_objects() {
  case "$ROUTER" in
    gateway-api) cat <<EOF
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{name: gateway}]
  rules: [{backendRefs: [{name: web-stable, port: 80}, {name: web-canary, port: 80}]}]
EOF
    ;;
    istio) cat <<EOF
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
    - name: primary
      route:
        - {destination: {host: web-stable}, weight: 100}
        - {destination: {host: web-canary}, weight: 0}
EOF
    ;;
    nginx) cat <<EOF
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  ingressClassName: nginx
  rules:
    - host: shop.example
      http:
        paths: [{path: /, pathType: Prefix, backend: {service: {name: web-stable, port: {number: 80}}}}]
EOF
    ;;
    smi) cat <<EOF
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 80, protocol: TCP}]}
EOF
    ;;
    alb) cat <<EOF
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  annotations: {alb.ingress.kubernetes.io/scheme: internet-facing}
spec:
  ingressClassName: alb
  rules:
    - host: shop.example
      http:
        paths: [{path: /, pathType: Prefix, backend: {service: {name: web-stable, port: {name: use-annotation}}}}]
EOF
    ;;
  esac
}

traffic_routing() {
  case "$ROUTER" in
    gateway-api) echo "{gatewayAPI: {httpRoute: web}}" ;;
    istio) echo "{istio: {virtualService: {name: web, routes: [primary]}}}" ;;
    nginx) echo "{nginx: {stableIngress: web}}" ;;
    smi) echo "{smi: {rootService: web}}" ;;
    alb) echo "{alb: {ingress: web, servicePort: 80}}" ;;
  esac
}

# The app: Services, the router's objects, analysis on success rate and p99 latency, a
# ConfigMap, and the Rollout (its pod template says how the simulated version behaves).
write_app() { # version error-rate latency-ms greeting
  mkdir -p deploy
  cat >deploy/app.yaml <<EOF
apiVersion: v1
kind: Service
metadata: {name: web-stable}
spec: {selector: {app: web}, ports: [{port: 80, protocol: TCP}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-canary}
spec: {selector: {app: web}, ports: [{port: 80, protocol: TCP}]}
---
$(routing_objects)
---
apiVersion: weir.dev/v1alpha1
kind: AnalysisTemplate
metadata: {name: canary-health}
spec:
  metrics:
    - name: success-rate
      initialDelay: 10s
      count: 1
      successCondition: "result[0] >= 0.95"
      provider:
        prometheus:
          query: |
            sum(rate(http_requests_total{namespace="$NS",service="web-canary",code="200"}[10s]))
            / sum(rate(http_requests_total{namespace="$NS",service="web-canary"}[10s]))
    - name: p99-latency
      initialDelay: 10s
      count: 1
      successCondition: "result[0] <= 0.25"
      provider:
        prometheus:
          query: |
            histogram_quantile(0.99, sum by (le) (rate(
              http_request_duration_seconds_bucket{namespace="$NS",service="web-canary"}[10s])))
---
apiVersion: v1
kind: ConfigMap
metadata: {name: web-settings}
data: {greeting: "$4"}
---
apiVersion: weir.dev/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations: {sim.weir.dev/error-rate: "$2", sim.weir.dev/latency-ms: "$3"}
    spec: {containers: [{name: web, image: "shop/web:$1"}]}
  strategy:
    canary:
      stableService: web-stable
      canaryService: web-canary
      trafficRouting: $(traffic_routing)
      scaleDownDelaySeconds: 5
      steps:
        - setWeight: 10
        - analysis: {templates: [{templateName: canary-health}]}
        - setWeight: 30
        - analysis: {templates: [{templateName: canary-health}]}
        - setWeight: 60
        - analysis: {templates: [{templateName: canary-health}]}
EOF
}
write_app 1 0 40 "hello"
git add -A && git commit -qm "web 1: first release" && git push -q origin main 2>/dev/null
V1=$(git rev-parse HEAD)

say "the simulated data plane, the controller, and a GitSync with write-back"
SIM_PORT=$(free_port)
weir-sim traffic --namespace "$NS" --rps 200 --listen "127.0.0.1:$SIM_PORT" >"$DEMO/traffic.log" 2>&1 &
echo $! >"$DEMO/traffic.pid"
printf '[{"targets": ["127.0.0.1:%s"], "labels": {"job": "weir-demo-traffic"}}]' "$SIM_PORT" \
  >"$STATE/prometheus/targets/$NS.json"
say "the team's identity: weir applies what Git holds as the team's ServiceAccount, never as itself"
# Lockdown, as the chart sets it up: a manifest that names another namespace is refused
# whole (hack/demo-lib.sh, tenant_rbac, says what the ServiceAccount may do).
tenant_rbac "$NS" | kubectl apply -n "$NS" -f - >/dev/null
kubectl auth can-i create rollouts.weir.dev -n "$NS" --as "system:serviceaccount:$NS:weir-gitsync" >/dev/null \
  || fail "the team's ServiceAccount may not create Rollouts (are weir's tenant roles installed?)"
if kubectl auth can-i create configmaps -n kube-system --as "system:serviceaccount:$NS:weir-gitsync" >/dev/null; then
  fail "the team's ServiceAccount reaches kube-system"
fi
echo "weir-gitsync may write in $NS, and nowhere else"
weir controller --namespace "$NS" --prometheus-url "$PROM" --metrics-addr 127.0.0.1:0 \
  --default-service-account weir-gitsync \
  >"$DEMO/controller.log" 2>&1 &
echo $! >"$DEMO/controller.pid"
kubectl apply -n "$NS" -f - >/dev/null <<EOF
apiVersion: weir.dev/v1alpha1
kind: GitSync
metadata: {name: shop}
spec:
  url: $URL
  ref: {branch: main}
  path: deploy
  interval: 5s
  rollback:
    writeBack: {enabled: true, authorName: weir, authorEmail: weir@example.com}
EOF
wait_until "the GitSync to apply v1" kubectl get rollout web -n "$NS"
kubectl weir -n "$NS" status web --timeout "${LIMIT}s" || fail "v1 did not become Healthy"
kubectl weir -n "$NS" list

say "v2 (good): pushed to Git; watch it walk its steps"
write_app 2 0 40 "hello again"
git commit -qam "web 2: faster search" && git push -q origin main 2>/dev/null
V2=$(git rev-parse HEAD)
kubectl weir -n "$NS" get web -w >"$DEMO/watch-v2.log" 2>&1 &
WATCH=$!
wait_until "v2's canary to start" \
  sh -c "kubectl get rollout web -n $NS -o jsonpath='{.status.canaryRevision}' | grep -q $V2"
kubectl weir -n "$NS" status web --timeout "${LIMIT}s" || fail "v2 did not become Healthy"
kill $WATCH 2>/dev/null || true
cat "$DEMO/watch-v2.log"
for weight in 10 30 60; do
  grep -q "weight=$weight%" "$DEMO/watch-v2.log" || fail "v2 never carried ${weight}% of traffic"
done
passed=$(kubectl get analysisruns -n "$NS" -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | grep -c Successful || true)
[ "$passed" -ge 3 ] || fail "expected 3 successful analysis runs for v2, saw $passed"
kubectl weir -n "$NS" get web

say "v3 (bad: 30% of its requests fail): pushed to Git"
write_app 3 0.3 40 "hello, broken"
git commit -qam "web 3: new checkout" && git push -q origin main 2>/dev/null
V3=$(git rev-parse HEAD)
rejected() { kubectl get gitsync shop -n "$NS" -o jsonpath='{.status.rejectedRevisions[*].revision}' | grep -q "$V3"; }
wait_until "v3 to be rejected" rejected
reverted() {
  [ -n "$(kubectl get gitsync shop -n "$NS" -o jsonpath='{.status.rejectedRevisions[0].revert}')" ]
}
wait_until "the revert to be pushed" reverted
# Caught by its analysis at the first step (10%), on the success-rate metric.
cause=$(kubectl get gitsync shop -n "$NS" -o jsonpath='{.status.rejectedRevisions[0].reason}/{.status.rejectedRevisions[0].metric}')
[ "$cause" = AnalysisFailed/success-rate ] || fail "v3 was rejected for '$cause', not AnalysisFailed/success-rate"
failed_steps=$(kubectl get analysisruns -n "$NS" -o jsonpath='{range .items[?(@.status.phase=="Failed")]}{.metadata.labels.weir\.dev/step}{"\n"}{end}' | sort -u | tr '\n' ' ')
[ "$failed_steps" = "1 " ] || fail "v3's failed analysis ran at step(s) '$failed_steps', not only at step index 1 (its first, at 10%)"
# What a pipeline that pushed v3 sees: its release failed (exit 1), though the app is
# Healthy again on v2.
status=0
kubectl weir -n "$NS" status web --revision "$V3" --timeout "${LIMIT}s" || status=$?
[ "$status" -eq 1 ] || fail "kubectl weir status --revision v3 exited $status, not 1 (rejected)"
healthy() { [ "$(kubectl get rollout web -n "$NS" -o jsonpath='{.status.phase}')" = Healthy ]; }
wait_until "web to be Healthy on v2 again" healthy
image=$(kubectl get rollout web -n "$NS" -o jsonpath='{.spec.template.spec.containers[0].image}')
[ "$image" = shop/web:2 ] || fail "the Rollout runs $image, not shop/web:2"
greeting=$(kubectl get configmap web-settings -n "$NS" -o jsonpath='{.data.greeting}')
[ "$greeting" = "hello again" ] || fail "the ConfigMap says '$greeting', not v2's"
kubectl get gitsync shop -n "$NS" -o jsonpath='{range .status.rejectedRevisions[*]}rejected {.revision}: {.reason} in {.rollout}, {.metric} = {.value}{"\n"}{end}'
echo
echo "The remote's log, newest first:"
git -C "$DEMO/shop.git" log --format='  %h %an: %s' -4 main
git -C "$DEMO/shop.git" log -1 --format=%B main | grep -q "Weir-Rejected-Revision: $V3" \
  || fail "the branch's tip is not weir's revert of v3"
[ "$(git -C "$DEMO/shop.git" rev-parse main:deploy)" = "$(git -C "$DEMO/shop.git" rev-parse "$V2:deploy")" ] \
  || fail "Git's deploy/ is not v2's after the revert"
echo
git -C "$DEMO/shop.git" log -1 --format=%B main | sed 's/^/  /'
kubectl weir -n "$NS" history web

DASHBOARD="kubectl weir -n $NS dashboard   (DEMO_DASHBOARD=1 make demo leaves it running)"
if [ "${DEMO_DASHBOARD:-}" = 1 ]; then
  # Left running, like the rest: the release's pages, plots and timeline in a browser.
  kubectl weir -n "$NS" dashboard --port "${DEMO_DASHBOARD_PORT:-3100}" >"$DEMO/dashboard.log" 2>&1 &
  echo $! >"$DEMO/dashboard.pid"
  wait_until "the dashboard to print its address" grep -q 'http://127.0.0.1:' "$DEMO/dashboard.log"
  DASHBOARD_URL=$(grep -o 'http://127.0.0.1:[0-9]*/' "$DEMO/dashboard.log" | head -1)
  curl -fsS "${DASHBOARD_URL}gitsyncs/$NS/shop" | grep -q 'class="rejected"' \
    || fail "the dashboard's GitSync page does not show v3 rejected"
  DASHBOARD="the dashboard runs at $DASHBOARD_URL (its log: $DEMO/dashboard.log)"
fi

say "done ($ROUTER): v2 went 10% -> 30% -> 60% -> 100%; v3 was caught, rejected and reverted in Git"
cat <<EOF
Everything still runs. Look around:
  eval "\$(hack/local-cluster.sh env)"; export PATH=$BIN:\$PATH
  $DASHBOARD
  kubectl weir -n $NS get web
  kubectl get gitsync shop -n $NS -o yaml
  git -C $DEMO/shop.git log --stat
  Prometheus: $PROM (try http_requests_total{namespace="$NS"})
Stop the demo's processes with 'hack/demo.sh stop', the cluster with 'hack/local-cluster.sh down'.
EOF
