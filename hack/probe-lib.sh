# Shared by hack/heap-profile.sh and hack/malloc-stats.sh (sourced): the plain canary
# Rollouts they load a controller with, waiting for them by phase, the namespace's removal,
# and the tools they need. Expects NS (the namespace) and N (how many Rollouts) to be set.

need() { # command [Debian package]: installed when missing
  command -v "$1" >/dev/null && return 0
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y "${2:-$1}"
}

create_rollouts() { # N Rollouts r-00001.. in NS (one replica, by default), a 50% step and a pause
  kubectl create namespace "$NS" >/dev/null
  local i name
  for i in $(seq 1 "$N"); do
    name=$(printf 'r-%05d' "$i")
    printf -- '---\napiVersion: weir.dev/v1alpha1\nkind: Rollout\nmetadata: {name: %s}\nspec:\n  selector: {matchLabels: {app: %s}}\n  template:\n    metadata: {labels: {app: %s}}\n    spec: {containers: [{name: app, image: "bench:1"}]}\n  strategy: {canary: {steps: [{setWeight: 50}, {pause: {}}]}}\n' "$name" "$name" "$name"
  done | kubectl -n "$NS" apply -f - >/dev/null
}

count() { # Rollouts whose status.phase is $1
  kubectl -n "$NS" get rollouts.weir.dev -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | grep -cx "$1" || true
}

wait_for() { # phase: every one of the N Rollouts in it, within 20 minutes
  for _ in $(seq 1 240); do
    local n; n=$(count "$1"); echo "  $n/$N $1"
    [ "$n" = "$N" ] && return 0
    sleep 5
  done
  echo "gave up waiting for $N Rollouts $1" >&2; return 1
}

remove_namespace() { # with its finalizers lifted: no controller runs to honour them now
  kubectl -n "$NS" get rollouts.weir.dev -o name | xargs -P 8 -I{} kubectl -n "$NS" patch {} --type merge \
    -p '{"metadata":{"finalizers":null}}' >/dev/null
  kubectl delete namespace "$NS" --wait=false
}
