# Shared by hack/demo.sh and hack/demo-fleet.sh (sourced): narration, failure with the
# controller's last words, waiting with a limit, and a free loopback port. Expects DEMO (the
# demo's state directory) and LIMIT (seconds) to be set.

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
fail() {
  printf '\nDEMO FAILED: %s\n' "$*" >&2
  local log
  for log in "$DEMO"/controller*.log; do
    [ -f "$log" ] && { echo "--- $log" >&2; tail -20 "$log" >&2; }
  done
  exit 1
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits until "$@" succeeds, for at most $LIMIT seconds.
wait_until() {
  local what=$1; shift
  local deadline=$((SECONDS + LIMIT))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || fail "gave up after ${LIMIT}s waiting for $what"
    sleep 1
  done
}

# Stops what the demo started (every pid file in $DEMO).
stop_pids() {
  local pidfile
  for pidfile in "$DEMO"/*.pid; do
    [ -f "$pidfile" ] || continue
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

# A bare repository $DEMO/shop.git served by `git daemon` on loopback (pushes allowed), and
# a clone of it in $DEMO/work where the demo commits as a developer; sets URL and enters the
# clone.
serve_repo() {
  git init -q --bare -b main "$DEMO/shop.git"
  touch "$DEMO/shop.git/git-daemon-export-ok"
  local port
  port=$(free_port)
  git daemon --reuseaddr --listen=127.0.0.1 --port="$port" --enable=receive-pack \
    --base-path="$DEMO" "$DEMO" >/dev/null 2>&1 &
  echo $! >"$DEMO/git-daemon.pid"
  URL=git://127.0.0.1:$port/shop.git
  wait_until "git daemon" git ls-remote "$URL"
  git clone -q "$URL" "$DEMO/work" 2>/dev/null
  cd "$DEMO/work"
  git config user.name "Dana Developer"
  git config user.email dana@example.com
}

# The team's identity in namespace $1, as the chart sets lockdown up
# (--default-service-account weir-gitsync): the ServiceAccount the GitSync acts as, bound
# to the built-in admin role in that namespace only (weir's kinds join admin through the
# chart's aggregated roles), plus the routers' kinds no built-in role covers (HTTPRoutes,
# VirtualServices, DestinationRules, TrafficSplits). Printed, for `kubectl apply -f -`.
tenant_rbac() {
  cat <<EOT
apiVersion: v1
kind: ServiceAccount
metadata: {name: weir-gitsync}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: weir-gitsync-admin}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: admin}
subjects: [{kind: ServiceAccount, name: weir-gitsync, namespace: $1}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: httproutes}
rules:
  - apiGroups: [gateway.networking.k8s.io]
    resources: [httproutes]
    verbs: [get, list, watch, create, update, patch, delete]
  - apiGroups: [networking.istio.io]
    resources: [virtualservices, destinationrules]
    verbs: [get, list, watch, create, update, patch, delete]
  - apiGroups: [split.smi-spec.io]
    resources: [trafficsplits]
    verbs: [get, list, watch, create, update, patch, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: weir-gitsync-httproutes}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: httproutes}
subjects: [{kind: ServiceAccount, name: weir-gitsync, namespace: $1}]
EOT
}
