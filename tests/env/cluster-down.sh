#!/usr/bin/env bash
# Undoes cluster-up.sh: the node (pods first), then the simulator (it detaches its loop devices),
# then the control plane. Idempotent.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
DIR=${TESTENV_DIR:-/tmp/elemento-testenv}
if [ "$(cat /run/elemento-testenv-node/owner 2>/dev/null)" = "$DIR" ]; then bash "$here/node-down.sh"; fi
if [ -f "$DIR/elemento-sim.pid" ]; then
  pid=$(cat "$DIR/elemento-sim.pid")
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null
  rm -f "$DIR/elemento-sim.pid"
fi
bash "$here/down.sh"
