#!/usr/bin/env bash
# weir across environments on two local control planes, narrated and checked:
#   one repository with a staging and a production directory; the management cluster runs
#   staging and both GitSyncs, the second cluster (`remote`) is production, reached with a
#   kubeconfig in a Secret. A good revision goes staging -> soak -> production; a bad one
#   is caught by staging's canary analysis, rejected, reverted in Git, and never touches
#   production.
# It exits 0 only if all of that really happened. Both clusters stay up afterwards.
#
#   hack/demo-fleet.sh         run it (make demo-fleet)
#   hack/demo-fleet.sh stop    stop what the demo started
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${WEIR_CLUSTER_DIR:-$ROOT/.local-cluster}
REMOTE_STATE=$ROOT/.local-cluster-remote
DEMO=$STATE/demo-fleet
BIN=$ROOT/target/debug
LIMIT=${WEIR_DEMO_LIMIT:-180}
SOAK=10s
# shellcheck source=hack/demo-lib.sh
. "$ROOT/hack/demo-lib.sh"

stop() {
  stop_pids
  rm -f "$STATE"/prometheus/targets/weir-fleet-*.json
}

if [ "${1:-}" = stop ]; then
  stop
  echo "fleet demo processes stopped; the clusters run on"
  exit 0
fi
trap 'code=$?; [ $code -eq 0 ] || stop' EXIT

say "building weir"
cargo build --quiet --bins
export PATH="$BIN:$PATH"

say "two control planes: staging (and the GitSyncs) here, production on the second"
"$ROOT/hack/local-cluster.sh" up
"$ROOT/hack/local-cluster.sh" up --name remote
eval "$("$ROOT/hack/local-cluster.sh" env)"
PROM=$WEIR_PROMETHEUS_URL
REMOTE_KUBECONFIG=$REMOTE_STATE/kubeconfig
prod() { kubectl --kubeconfig "$REMOTE_KUBECONFIG" "$@"; }

stop
rm -rf "$DEMO" && mkdir -p "$DEMO"
NS=weir-fleet-$(date +%s)
kubectl create namespace "$NS" >/dev/null
prod create namespace "$NS" >/dev/null

say "each environment's tenant identity: weir acts as it, in each cluster"
tenant_rbac "$NS" | kubectl apply -n "$NS" -f - >/dev/null
tenant_rbac "$NS" | prod apply -n "$NS" -f - >/dev/null

say "a Git repository on loopback: staging/ and production/ of one application"
serve_repo

# Staging: a canary behind an HTTPRoute, gated by its success rate. Production: the same
# image with a plain replica canary (its gate is staging, and the soak).
write_app() { # version error-rate greeting
  mkdir -p staging production
  cat >staging/app.yaml <<EOT
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
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{name: gateway}]
  rules: [{backendRefs: [{name: web-stable, port: 80}, {name: web-canary, port: 80}]}]
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
---
apiVersion: v1
kind: ConfigMap
metadata: {name: web-settings}
data: {greeting: "$3"}
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
      annotations: {sim.weir.dev/error-rate: "$2"}
    spec: {containers: [{name: web, image: "shop/web:$1"}]}
  strategy:
    canary:
      stableService: web-stable
      canaryService: web-canary
      trafficRouting: {gatewayAPI: {httpRoute: web}}
      scaleDownDelaySeconds: 5
      steps:
        - setWeight: 20
        - analysis: {templates: [{templateName: canary-health}]}
        - setWeight: 60
EOT
  cat >production/app.yaml <<EOT
apiVersion: v1
kind: ConfigMap
metadata: {name: web-settings}
data: {greeting: "$3"}
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
    spec: {containers: [{name: web, image: "shop/web:$1"}]}
  strategy:
    canary:
      steps:
        - setWeight: 50
        - pause: {duration: 2}
EOT
}
write_app 1 0 "hello"
git add -A && git commit -qm "web 1: first release" && git push -q origin main 2>/dev/null
V1=$(git rev-parse HEAD)

say "the data plane for staging, weir here and weir in production"
SIM_PORT=$(free_port)
weir-sim traffic --namespace "$NS" --rps 200 --listen "127.0.0.1:$SIM_PORT" >"$DEMO/traffic.log" 2>&1 &
echo $! >"$DEMO/traffic.pid"
printf '[{"targets": ["127.0.0.1:%s"], "labels": {"job": "weir-fleet-traffic"}}]' "$SIM_PORT" \
  >"$STATE/prometheus/targets/$NS.json"
weir controller --namespace "$NS" --prometheus-url "$PROM" --metrics-addr 127.0.0.1:0 \
  --default-service-account weir-gitsync >"$DEMO/controller.log" 2>&1 &
echo $! >"$DEMO/controller.pid"
KUBECONFIG=$REMOTE_KUBECONFIG weir controller --namespace "$NS" --metrics-addr 127.0.0.1:0 \
  --default-service-account weir-gitsync >"$DEMO/controller-production.log" 2>&1 &
echo $! >"$DEMO/controller-production.pid"

say "production's kubeconfig in a Secret (inline values only), and the two GitSyncs"
. "$REMOTE_STATE/cluster.env"
kubectl create secret generic production-kubeconfig -n "$NS" --from-file=value=/dev/stdin >/dev/null <<EOT
apiVersion: v1
kind: Config
current-context: production
contexts: [{name: production, context: {cluster: production, user: weir}}]
clusters:
- name: production
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 "$REMOTE_STATE/certs/apiserver.crt")
users: [{name: weir, user: {token: $(cat "$REMOTE_STATE/admin.token")}}]
EOT
kubectl apply -n "$NS" -f - >/dev/null <<EOT
apiVersion: weir.dev/v1alpha1
kind: GitSync
metadata: {name: staging}
spec:
  url: $URL
  ref: {branch: main}
  path: staging
  interval: 5s
  rollback:
    writeBack: {enabled: true, authorName: weir, authorEmail: weir@example.com}
---
apiVersion: weir.dev/v1alpha1
kind: GitSync
metadata: {name: production}
spec:
  url: $URL
  ref: {branch: main}
  path: production
  interval: 5s
  kubeConfig: {secretRef: {name: production-kubeconfig}}
  promotion:
    from: {gitSync: staging}
    soak: $SOAK
EOT

good_in() { [ "$(kubectl get gitsync "$1" -n "$NS" -o jsonpath='{.status.lastGoodRevision}')" = "$2" ]; }
prod_image() { prod get rollout web -n "$NS" -o jsonpath='{.spec.template.spec.containers[0].image}'; }
prod_healthy_on() { [ "$(prod_image)" = "shop/web:$1" ] && [ "$(prod get rollout web -n "$NS" -o jsonpath='{.status.phase}')" = Healthy ]; }

say "v1: good in staging, then, after its $SOAK soak, in production"
wait_until "v1 good in staging" good_in staging "$V1"
wait_until "v1 good in production" good_in production "$V1"
wait_until "production Healthy on v1" prod_healthy_on 1
kubectl weir -n "$NS" fleet

say "v2 (good): its staging canary passes analysis, then production follows"
write_app 2 0 "hello again"
git commit -qam "web 2: faster search" && git push -q origin main 2>/dev/null
V2=$(git rev-parse HEAD)
wait_until "v2 good in staging" good_in staging "$V2"
waiting=$(kubectl get gitsync production -n "$NS" -o jsonpath='{.status.promotion.waitingFor}')
echo "production: ${waiting:-(v2 already soaked)}"
wait_until "v2 good in production" good_in production "$V2"
wait_until "production Healthy on v2" prod_healthy_on 2
passed=$(kubectl get analysisruns -n "$NS" -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | grep -c Successful || true)
[ "$passed" -ge 1 ] || fail "v2's staging canary ran no successful analysis"

say "v3 (bad: 30% of its requests fail): caught in staging, never in production"
write_app 3 0.3 "hello, broken"
git commit -qam "web 3: new checkout" && git push -q origin main 2>/dev/null
V3=$(git rev-parse HEAD)
rejected() { kubectl get gitsync staging -n "$NS" -o jsonpath='{.status.rejectedRevisions[*].revision}' | grep -q "$V3"; }
wait_until "v3 rejected in staging" rejected
reverted() { [ -n "$(kubectl get gitsync staging -n "$NS" -o jsonpath='{.status.rejectedRevisions[0].revert}')" ]; }
wait_until "staging's revert pushed" reverted
REVERT=$(kubectl get gitsync staging -n "$NS" -o jsonpath='{.status.rejectedRevisions[0].revert}')
cause=$(kubectl get gitsync staging -n "$NS" -o jsonpath='{.status.rejectedRevisions[0].reason}/{.status.rejectedRevisions[0].metric}')
[ "$cause" = AnalysisFailed/success-rate ] || fail "v3 was rejected for '$cause', not AnalysisFailed/success-rate"
# The revert is good in staging and goes to production like any good revision: what Git
# holds and what every cluster runs agree again.
wait_until "the revert good in staging" good_in staging "$REVERT"
wait_until "the revert good in production" good_in production "$REVERT"
applied=$(kubectl get gitsync production -n "$NS" -o jsonpath='{range .status.history[*]}{.revision}{"\n"}{end}')
if grep -q "$V3" <<<"$applied"; then fail "production tried v3"; fi
[ "$(prod_image)" = shop/web:2 ] || fail "production runs $(prod_image), not shop/web:2"
greeting=$(prod get configmap web-settings -n "$NS" -o jsonpath='{.data.greeting}')
[ "$greeting" = "hello again" ] || fail "production's ConfigMap says '$greeting', not v2's"
echo "production never ran v3: it runs $(prod_image), greeting '$greeting'"
kubectl weir -n "$NS" fleet
git -C "$DEMO/shop.git" log --format='  %h %an: %s' -5 main

say "done: v1 and v2 went staging -> soak -> production; v3 was caught in staging, reverted in Git, and never reached production"
cat <<EOT
Everything still runs. Look around:
  eval "\$(hack/local-cluster.sh env)"; export PATH=$BIN:\$PATH
  kubectl weir -n $NS fleet
  kubectl --kubeconfig $REMOTE_KUBECONFIG get rollout web -n $NS
Stop the demo's processes with 'hack/demo-fleet.sh stop'.
EOT
