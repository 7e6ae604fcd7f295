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
