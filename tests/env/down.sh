#!/usr/bin/env bash
# Stops exactly the processes up.sh started (by PID) and removes the environment's state.
set -uo pipefail
DIR=${TESTENV_DIR:-/tmp/elemento-testenv}
[ -d "$DIR" ] || exit 0
# A node of this control plane (node-up.sh) goes first: its pods must stop before the API does.
if [ "$(cat /run/elemento-testenv-node/owner 2>/dev/null)" = "$DIR" ]; then
  bash "$(dirname "$0")/node-down.sh"
fi
for name in kube-scheduler kube-controller-manager kube-apiserver etcd; do
  f="$DIR/$name.pid"
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$f"
done
# Keep the logs of a failed run when asked to.
if [ -n "${TESTENV_KEEP_LOGS:-}" ]; then
  mkdir -p "$TESTENV_KEEP_LOGS" && cp -r "$DIR/logs/." "$TESTENV_KEEP_LOGS/" 2>/dev/null
fi
rm -rf "$DIR"
echo "[down] stopped" >&2
