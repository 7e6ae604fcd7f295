#!/usr/bin/env bash
# A real Kubernetes control plane on a machine with no cluster and no Docker:
# etcd, kube-apiserver and kube-controller-manager (built from Debian's own kubernetes source),
# Prometheus scraping every second, and weir's kubelet stand-in (there is no kubelet here).
#
#   hack/local-cluster.sh up       install and build what is missing, start every part, wait until ready
#   hack/local-cluster.sh env      print the export lines to eval: eval "$(hack/local-cluster.sh env)"
#   hack/local-cluster.sh status   say which parts run; exit 1 unless all of them do
#   hack/local-cluster.sh down     stop every process it started and drop the cluster's data
#   hack/local-cluster.sh build    only install packages and build the Kubernetes binaries
#   hack/local-cluster.sh restart PART         stop one part (SIGTERM, SIGKILL after 3 s) and
#                                              start it again; returns once it is ready
#   hack/local-cluster.sh outage PART SECONDS  stop one part, keep it down for SECONDS, then
#                                              start it again; returns once it is ready
#   hack/local-cluster.sh pause PART SECONDS   freeze one part (SIGSTOP) for SECONDS, then
#                                              let it go on (SIGCONT): a stalled etcd, say
#   PART is one of: etcd kube-apiserver kube-controller-manager prometheus kubelet-stand-in
#   --name NAME    (with any command) another cluster beside the default one, state in
#                  .local-cluster-NAME/: `up --name remote`, `env --name remote`
#
# State lives in .local-cluster/ (git-ignored). The built Kubernetes binaries are cached in
# ${WEIR_CACHE_DIR:-~/.cache/weir}/k8s-1.20.2 so that a second machine-local run does not rebuild.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# `--name NAME` (anywhere among the arguments) is another cluster beside the default one:
# its own etcd, API server, controller manager, Prometheus and kubelet stand-in, on ports of
# its own, with state in .local-cluster-NAME/ (a remote cluster for a GitSync, say).
NAME=
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --name) NAME=${2:-}; shift 2 || { echo "--name takes a name" >&2; exit 2; } ;;
    --name=*) NAME=${1#--name=}; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
set -- "${args[@]+"${args[@]}"}"
if [ -n "$NAME" ] && ! [[ "$NAME" =~ ^[a-z0-9]([a-z0-9-]*[a-z0-9])?$ ]]; then
  echo "--name takes lower-case letters, digits and '-', not '$NAME'" >&2
  exit 2
fi
STATE=${WEIR_CLUSTER_DIR:-$ROOT/.local-cluster${NAME:+-$NAME}}
CACHE=${WEIR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/weir}
K8S_VERSION=1.20.2
K8S_BIN=$CACHE/k8s-$K8S_VERSION
LOGS=$STATE/logs
PARTS=(etcd kube-apiserver kube-controller-manager prometheus kubelet-stand-in)

say() { printf '[local-cluster] %s\n' "$*" >&2; }
die() { printf '[local-cluster] ERROR: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root to run '$*' (no sudo found); install it by hand and rerun"
  fi
}

# --- installing and building ------------------------------------------------------------------

apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then
    say "apt-get update"
    as_root apt-get update -qq >/dev/null
    apt_updated=1
  fi
  say "apt-get install $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

install_runtime_packages() {
  local want=()
  command -v etcd >/dev/null || want+=(etcd-server)
  command -v kubectl >/dev/null || want+=(kubernetes-client)
  command -v openssl >/dev/null || want+=(openssl)
  command -v curl >/dev/null || want+=(curl)
  command -v python3 >/dev/null || want+=(python3)
  # GitSync tests serve repositories over file:// and `git daemon` (part of Debian's git).
  command -v git >/dev/null || want+=(git)
  # ... and over ssh://, from an sshd the tests start on a loopback port with keys of their own.
  [ -x /usr/sbin/sshd ] || want+=(openssh-server)
  command -v ssh >/dev/null || want+=(openssh-client)
  # The dashboard's browser test (tests/dashboard.rs): Debian's Chromium and its ChromeDriver.
  command -v chromium >/dev/null || want+=(chromium)
  command -v chromedriver >/dev/null || want+=(chromium-driver)
  [ ${#want[@]} -eq 0 ] || apt_install "${want[@]}"
  # Recommends would pull in node exporters and other daemons nobody asked for.
  command -v prometheus >/dev/null || apt_install --no-install-recommends prometheus
}

k8s_built() { [ -x "$K8S_BIN/kube-apiserver" ] && [ -x "$K8S_BIN/kube-controller-manager" ]; }

build_k8s() {
  k8s_built && return 0
  mkdir -p "$CACHE"
  # One build at a time per machine: parallel `up`s would otherwise both spend 8 minutes.
  exec 9>"$CACHE/build.lock"
  flock 9
  if k8s_built; then flock -u 9; return 0; fi

  local want=()
  command -v go >/dev/null || want+=(golang-go)
  command -v rsync >/dev/null || want+=(rsync)
  command -v git >/dev/null || want+=(git)
  command -v dpkg-source >/dev/null || want+=(dpkg-dev)
  [ -d /usr/share/gocode/src/github.com/modern-go/reflect2 ] || want+=(golang-github-modern-go-reflect2-dev)
  [ ${#want[@]} -eq 0 ] || apt_install "${want[@]}"

  # Source packages need a deb-src entry for the archive the machine already uses; derive it
  # from the existing entry instead of naming a mirror.
  if ! grep -rqs '^Types:.*deb-src\|^deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    [ -f /etc/apt/sources.list.d/debian.sources ] \
      || die "no deb-src entry and no /etc/apt/sources.list.d/debian.sources to derive one from"
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
      | as_root tee /etc/apt/sources.list.d/debian-src.sources >/dev/null
    apt_updated=
  fi
  [ -n "$apt_updated" ] || { as_root apt-get update -qq >/dev/null; apt_updated=1; }

  local work=$CACHE/build
  rm -rf "$work" && mkdir -p "$work"
  say "fetching Debian's kubernetes source package"
  (cd "$work" && apt-get source --download-only kubernetes >"$work/source.log" 2>&1) \
    || die "apt-get source kubernetes failed; see $work/source.log"
  local orig
  orig=$(ls "$work"/kubernetes_*.orig.tar.gz | head -n1)
  tar -C "$work" -xzf "$orig"
  local src
  src=$(find "$work" -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
  [ -n "$src" ] || die "no kubernetes-* directory in $orig"
  # The vendored reflect2 v1.0.1 crashes the apiserver under Go >= 1.18 ("fatal error: fault"
  # in mapiterinit on the first pod write). Debian ships the fixed 1.0.2.
  rm -rf "$src/vendor/github.com/modern-go/reflect2"
  cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$src/vendor/github.com/modern-go/reflect2"
  rm -f "$src/vendor/github.com/modern-go/reflect2/go.mod"
  say "building kube-apiserver and kube-controller-manager (about 8 minutes on 2 cores; log: $work/build.log)"
  (cd "$src" && CGO_ENABLED=0 make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >"$work/build.log" 2>&1) \
    || die "Kubernetes build failed; see $work/build.log"
  mkdir -p "$K8S_BIN"
  cp "$src/_output/bin/kube-apiserver" "$src/_output/bin/kube-controller-manager" "$K8S_BIN/"
  rm -rf "$work"
  flock -u 9
  say "cached the binaries in $K8S_BIN"
}

build_stand_in() {
  say "building weir's kubelet stand-in"
  (cd "$ROOT" && cargo build --quiet --bin weir-sim --bin weir) \
    || die "cargo build of weir-sim failed"
}

# --- processes ---------------------------------------------------------------------------------

pid_of() { cat "$STATE/$1.pid" 2>/dev/null || true; }
# Running, not merely present: a killed part can linger as a zombie when nothing reaps it
# (a container's init often does not), and kill -0 succeeds on zombies.
pid_running() {
  local state
  state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}
alive() { local p; p=$(pid_of "$1"); [ -n "$p" ] && pid_running "$p"; }

# Starts a part in its own session so it outlives this script and holds none of its pipes.
start() {
  local name=$1; shift
  mkdir -p "$LOGS"
  setsid "$@" </dev/null >"$LOGS/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
}

wait_for() { # name, seconds, check command...
  local name=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    alive "$name" || die "$name exited during start-up; see $LOGS/$name.log"
    [ $SECONDS -lt $deadline ] || die "$name did not become ready within ${secs}s; see $LOGS/$name.log"
    sleep 0.2
  done
}

free_ports() { # prints N free loopback ports, all distinct
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

load_ports() { # shellcheck source=/dev/null
  . "$STATE/cluster.env"
}

prepare_state() {
  mkdir -p "$STATE" "$LOGS" "$STATE/certs" "$STATE/prometheus/targets"
  if [ ! -f "$STATE/cluster.env" ]; then
    local ports
    read -r -a ports <<<"$(free_ports 4)"
    local token
    token=$(openssl rand -hex 24)
    cat >"$STATE/cluster.env" <<EOF
ETCD_PORT=${ports[0]}
ETCD_PEER_PORT=${ports[1]}
API_PORT=${ports[2]}
PROM_PORT=${ports[3]}
ADMIN_TOKEN=$token
EOF
  fi
  load_ports
  [ -f "$STATE/sa.key" ] || openssl genrsa -out "$STATE/sa.key" 2048 2>/dev/null
  [ -f "$STATE/sa.pub" ] || openssl rsa -in "$STATE/sa.key" -pubout -out "$STATE/sa.pub" 2>/dev/null
  echo "$ADMIN_TOKEN,admin,admin-uid,system:masters" >"$STATE/tokens.csv"
  printf '%s' "$ADMIN_TOKEN" >"$STATE/admin.token"
  cat >"$STATE/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: weir-local
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $STATE/certs/apiserver.crt
users:
- name: weir-local-admin
  user:
    token: $ADMIN_TOKEN
contexts:
- name: weir-local
  context:
    cluster: weir-local
    user: weir-local-admin
    namespace: default
current-context: weir-local
EOF
  chmod 600 "$STATE/kubeconfig" "$STATE/tokens.csv" "$STATE/admin.token"
  cat >"$STATE/prometheus/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
  # Every query with the time Prometheus ran it: the benchmark harness (make bench) times an
  # abort from the moment the failing measurement was taken.
  query_log_file: $STATE/prometheus/query.log
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["127.0.0.1:$PROM_PORT"]
  - job_name: kube-apiserver
    scheme: https
    authorization:
      credentials_file: $STATE/admin.token
    tls_config:
      ca_file: $STATE/certs/apiserver.crt
    static_configs:
      - targets: ["127.0.0.1:$API_PORT"]
  # Tests and the demo add their own metrics endpoints by writing JSON files here.
  - job_name: file-sd
    file_sd_configs:
      - files: ["$STATE/prometheus/targets/*.json"]
        refresh_interval: 1s
EOF
}

api_ready() {
  curl -fsS --cacert "$STATE/certs/apiserver.crt" -H "Authorization: Bearer $ADMIN_TOKEN" \
    "https://127.0.0.1:$API_PORT/readyz" 2>/dev/null | grep -q '^ok$'
}
etcd_ready() { curl -fsS "http://127.0.0.1:$ETCD_PORT/health" | grep -q '"health":"true"'; }
prom_ready() { curl -fsS "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null; }
kc() { kubectl --kubeconfig "$STATE/kubeconfig" "$@"; }
# The serviceaccount controller creating "default" proves the controller-manager is working.
controllers_ready() { kc get serviceaccount default -n default -o name; }
crd_condition() { kc get crd "$1" -o jsonpath="{.status.conditions[?(@.type==\"$2\")].status}" 2>/dev/null; }
crd_established() { [ "$(crd_condition "$1" Established)" = True ]; }
stand_in_ready() { grep -q 'watching pods' "$LOGS/kubelet-stand-in.log"; }

start_etcd() {
  alive etcd && return 0
  say "starting etcd on 127.0.0.1:$ETCD_PORT"
  start etcd etcd --name weir-local --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "weir-local=http://127.0.0.1:$ETCD_PEER_PORT"
  wait_for etcd 30 etcd_ready
}

start_apiserver() {
  alive kube-apiserver && return 0
  say "starting kube-apiserver on https://127.0.0.1:$API_PORT"
  # The audit log keeps who wrote which weir object or ReplicaSet (the user agent names
  # each weir replica): the bench counts the writers of each object from it, and the
  # requests of a resync.
  cat >"$STATE/audit-policy.yaml" <<'POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [create, update, patch, delete]
  resources:
  - group: weir.dev
  - group: apps
    resources: [replicasets]
  - group: gateway.networking.k8s.io
    resources: [httproutes]
# Every read but the leader elections' Leases: what a resync reads, by client (this
# API server's own metrics count a GET of a custom resource as a LIST, and name no client).
- level: None
  resources:
  - group: coordination.k8s.io
- level: Metadata
  verbs: [get, list, watch]
- level: None
POLICY
  start kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" --bind-address 127.0.0.1 --secure-port "$API_PORT" \
    --cert-dir "$STATE/certs" --token-auth-file "$STATE/tokens.csv" --authorization-mode RBAC \
    --service-account-key-file "$STATE/sa.pub" --service-account-signing-key-file "$STATE/sa.key" \
    --service-account-issuer https://kubernetes.default.svc --service-cluster-ip-range 10.96.0.0/16 \
    --enable-admission-plugins OwnerReferencesPermissionEnforcement \
    --audit-policy-file "$STATE/audit-policy.yaml" --audit-log-path "$STATE/audit.log" \
    --audit-log-maxsize 2000 --audit-log-maxbackup 1
  # That plugin (on in OpenShift and hardened clusters) checks that whoever sets an owner
  # reference blocking deletion may update the owner's finalizers: on here, the chart's RBAC
  # test shows weir needs no such rule (its owner references do not block deletion).
  wait_for kube-apiserver 90 api_ready
}

start_controller_manager() {
  alive kube-controller-manager && return 0
  say "starting kube-controller-manager"
  start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$STATE/kubeconfig" --leader-elect=false \
    --kube-api-qps 200 --kube-api-burst 400 \
    --controllers deployment,replicaset,statefulset,daemonset,job,cronjob,garbagecollector,namespace,serviceaccount,serviceaccount-token,endpoint,clusterrole-aggregation \
    --service-account-private-key-file "$STATE/sa.key" --root-ca-file "$STATE/certs/apiserver.crt" \
    --bind-address 127.0.0.1 --secure-port 0 --port 0
  wait_for kube-controller-manager 60 controllers_ready
}

start_prometheus() {
  alive prometheus && return 0
  say "starting prometheus on http://127.0.0.1:$PROM_PORT"
  start prometheus prometheus --config.file "$STATE/prometheus/prometheus.yml" \
    --storage.tsdb.path "$STATE/prometheus/data" --web.listen-address "127.0.0.1:$PROM_PORT" \
    --web.enable-lifecycle
  wait_for prometheus 30 prom_ready
}

start_stand_in() {
  alive kubelet-stand-in && return 0
  say "starting the kubelet stand-in"
  start kubelet-stand-in env KUBECONFIG="$STATE/kubeconfig" RUST_LOG=info \
    "$ROOT/target/debug/weir-sim" kubelet-stand-in
  wait_for kubelet-stand-in 30 stand_in_ready
}

install_crds() {
  say "installing weir's CRDs, the Gateway API, SMI TrafficSplit and Istio CRDs and weir's tenant roles"
  # The tenant roles put weir's kinds into the built-in admin, edit and view roles, as the
  # chart does (clusterrole-aggregation above fills those in).
  kc apply --server-side --force-conflicts --field-manager weir-local-cluster \
    -f "$ROOT/crds/" -f "$ROOT/hack/crds/" -f "$ROOT/charts/weir/files/tenant-roles.yaml" \
    >"$LOGS/crds.log" 2>&1 \
    || die "applying the CRDs failed; see $LOGS/crds.log"
  local crd
  for crd in rollouts.weir.dev analysistemplates.weir.dev clusteranalysistemplates.weir.dev \
    analysisruns.weir.dev experiments.weir.dev gitsyncs.weir.dev httproutes.gateway.networking.k8s.io \
    trafficsplits.split.smi-spec.io virtualservices.networking.istio.io destinationrules.networking.istio.io; do
    wait_for kube-apiserver 30 crd_established "$crd" \
      || die "CRD $crd did not become Established; see: kubectl describe crd $crd"
    # A non-structural schema installs but loses pruning and defaulting: refuse it here.
    [ -z "$(crd_condition "$crd" NonStructuralSchema)" ] \
      || die "CRD $crd has a non-structural schema: $(kc get crd "$crd" -o jsonpath='{.status.conditions[?(@.type=="NonStructuralSchema")].message}')"
  done
}

cmd_build() {
  install_runtime_packages
  build_k8s
}

any_alive() {
  local part
  for part in "${PARTS[@]}"; do alive "$part" && return 0; done
  return 1
}

cmd_up() {
  cmd_build
  build_stand_in
  # State left by a cluster that died without `down` (a reboot, say) holds ports that may be
  # taken now and etcd data for them: start clean instead.
  if [ -f "$STATE/cluster.env" ] && ! any_alive; then
    say "no part of the previous cluster runs; starting a fresh one"
    cmd_down
  fi
  prepare_state
  start_etcd
  start_apiserver
  start_controller_manager
  start_prometheus
  install_crds
  start_stand_in
  say "ready. Use it with: eval \"\$(hack/local-cluster.sh env${NAME:+ --name $NAME})\""
}

cmd_env() {
  [ -f "$STATE/cluster.env" ] || die "no local cluster here; run: hack/local-cluster.sh up"
  load_ports
  echo "export KUBECONFIG=$STATE/kubeconfig"
  echo "export WEIR_PROMETHEUS_URL=http://127.0.0.1:$PROM_PORT"
}

cmd_status() {
  local ok=0 part
  for part in "${PARTS[@]}"; do
    if alive "$part"; then printf '%-24s running (pid %s)\n' "$part" "$(pid_of "$part")"
    else printf '%-24s stopped\n' "$part"; ok=1
    fi
  done
  if [ -f "$STATE/cluster.env" ]; then
    load_ports
    printf '%-24s https://127.0.0.1:%s\n%-24s http://127.0.0.1:%s\n' \
      kube-apiserver "$API_PORT" prometheus "$PROM_PORT"
  fi
  return $ok
}

cmd_down() {
  local part p i
  # Reverse order: the stand-in and controllers first, etcd last.
  for ((i = ${#PARTS[@]} - 1; i >= 0; i--)); do
    part=${PARTS[$i]}
    p=$(pid_of "$part")
    if [ -n "$p" ] && pid_running "$p"; then
      say "stopping $part (pid $p)"
      kill "$p" 2>/dev/null || true
      for _ in $(seq 50); do pid_running "$p" || break; sleep 0.1; done
      if pid_running "$p"; then kill -9 "$p" 2>/dev/null || true; fi
    fi
    rm -f "$STATE/$part.pid"
  done
  # A stopped cluster keeps its logs; its data goes so the next `up` starts clean on new ports.
  if [ -d "$STATE" ]; then
    find "$STATE" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} +
  fi
}

known_part() {
  local part
  for part in "${PARTS[@]}"; do [ "$part" = "$1" ] && return 0; done
  die "no part named '$1'; the parts are: ${PARTS[*]}"
}

# SIGTERM, and SIGKILL after 3 s: a restart is a crash as often as an upgrade, and the API
# server's graceful shutdown would otherwise hold every fault test for its request timeout.
stop_part() {
  local p
  p=$(pid_of "$1")
  [ -n "$p" ] && pid_running "$p" || return 0
  kill "$p" 2>/dev/null || true
  for _ in $(seq 30); do pid_running "$p" || break; sleep 0.1; done
  if pid_running "$p"; then kill -9 "$p" 2>/dev/null || true; fi
  rm -f "$STATE/$1.pid"
}

# Fault injection for the tests (tests/faults.rs): the part stops as it would on an upgrade
# and comes back on the same port with the same data.
cmd_restart() {
  local part=${1:-} down=${2:-0}
  known_part "$part"
  [ -f "$STATE/cluster.env" ] || die "no local cluster here; run: hack/local-cluster.sh up"
  load_ports
  say "restarting $part"
  stop_part "$part"
  if [ "$down" -gt 0 ]; then
    say "$part stays down for ${down}s"
    sleep "$down"
  fi
  # The log of the run before the restart is kept beside the new one.
  [ -f "$LOGS/$part.log" ] && mv "$LOGS/$part.log" "$LOGS/$part.log.before-restart"
  case "$part" in
    etcd) start_etcd ;;
    kube-apiserver) start_apiserver ;;
    kube-controller-manager) start_controller_manager ;;
    prometheus) start_prometheus ;;
    kubelet-stand-in) start_stand_in ;;
  esac
}

cmd_pause() {
  local part=${1:-} seconds=${2:-}
  known_part "$part"
  [[ "$seconds" =~ ^[0-9]+$ ]] || die "pause takes a whole number of seconds, not '$seconds'"
  local p
  p=$(pid_of "$part")
  [ -n "$p" ] && pid_running "$p" || die "$part is not running"
  say "freezing $part for ${seconds}s"
  kill -STOP "$p"
  # Thawed whatever happens to this script: a frozen part would outlive it.
  # shellcheck disable=SC2064 # the pid is fixed now: the trap runs after this function
  trap "kill -CONT $p 2>/dev/null || true" EXIT
  sleep "$seconds"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  env) cmd_env ;;
  status) cmd_status ;;
  build) cmd_build ;;
  restart) cmd_restart "${2:-}" ;;
  outage)
    [[ "${3:-}" =~ ^[0-9]+$ ]] || die "outage takes a whole number of seconds, not '${3:-}'"
    cmd_restart "${2:-}" "$3" ;;
  pause) cmd_pause "${2:-}" "${3:-}" ;;
  *) echo "usage: $0 up|down|env|status|build|restart PART|outage PART SECONDS|pause PART SECONDS" >&2; exit 2 ;;
esac
