#!/usr/bin/env bash
# A real single-node cluster on this machine, as users run one: the control plane (up.sh, cluster
# profile), the Elemento simulator with examples/cluster-scenario.yaml (this machine is the VM of
# the kubelet's Node; its attached volumes become loop devices with /dev/disk/by-id links, as the
# guest's udev would make them), and the node (node-up.sh: containerd, the images, a kubelet).
# The charts are not installed here: that is the caller's (or the operator's) step.
# Prints KEY=value lines (also in $TESTENV_DIR/cluster.env). cluster-down.sh undoes everything.
# Needs root. Env: TESTENV_* as up.sh; ELEMENTO_SIM_BIN (default target/debug/elemento-sim);
# TESTENV_IMAGE_DIRS (colon-separated archive folders; default the tests' images and the
# project's target/images).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
CACHE=${TESTENV_CACHE:-$HOME/.cache/elemento-testenv}
DIR=${TESTENV_DIR:-/tmp/elemento-testenv}
SIM_BIN=${ELEMENTO_SIM_BIN:-$root/target/debug/elemento-sim}
log() { printf '[cluster-up %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
[ -x "$SIM_BIN" ] || { log "missing $SIM_BIN (cargo build -p elemento-sim)"; exit 1; }
for i in elemento-cloud-controller-manager elemento-csi-driver elemento-csi-driver-node; do
  [ -s "$root/target/images/$i.tar" ] || { log "missing target/images/$i.tar: run images/build.sh first"; exit 1; }
done
t0=$SECONDS

TESTENV_PROFILE=cluster bash "$here/up.sh" >/dev/null
images=$(bash "$here/images.sh" 2>"$DIR/logs/images.log" | tail -1)
log "control plane up, test images in $images ($((SECONDS - t0)) s)"

node=$(hostname | tr '[:upper:]' '[:lower:]')
sed "s/@NODE_NAME@/$node/" "$root/examples/cluster-scenario.yaml" > "$DIR/scenario.yaml"
mkdir -p "$DIR/hostdev"
# TESTENV_SIM_DAEMON_PORTS=1: the simulator also serves the Elemento daemons' default ports, for
# manifests that keep api.host: 127.0.0.1 (the kOps channel).
setsid "$SIM_BIN" --scenario "$DIR/scenario.yaml" --listen 127.0.0.1:0 ${TESTENV_SIM_DAEMON_PORTS:+--daemon-ports} --state "$DIR/sim-state.json" \
  --host-devices "$DIR/hostdev" --host-device-links /dev/disk/by-id > "$DIR/logs/elemento-sim.out" 2> "$DIR/logs/elemento-sim.log" < /dev/null &
echo $! > "$DIR/elemento-sim.pid"
for _ in $(seq 1 100); do grep -q listening "$DIR/logs/elemento-sim.out" 2>/dev/null && break; sleep 0.1; done
api_url=http://$(grep -m1 listening "$DIR/logs/elemento-sim.out" | sed 's/.*\["\([^"]*\)".*/\1/')
[ "$api_url" != http:// ] || { log "the simulator did not start:"; tail -n 20 "$DIR/logs/elemento-sim.log" >&2; exit 1; }

TESTENV_IMAGE_DIRS="${TESTENV_IMAGE_DIRS:-$images:$root/target/images}" \
  bash "$here/node-up.sh" > "$DIR/node.env"
log "node $node up ($((SECONDS - t0)) s)"
cat > "$DIR/cluster.env" <<ENV
KUBECONFIG=$DIR/kubeconfig
TESTENV_DIR=$DIR
TESTENV_BIN=${TESTENV_BIN:-$CACHE/bin}
ELEMENTO_API_URL=$api_url
ELEMENTO_USERNAME=demo
ELEMENTO_PASSWORD=demo-password
NODE_NAME=$node
NODE_VM_ID=5b0e8f4e-0c1d-4f6a-9a51-1b2c3d4e5f10
ENV
cat "$DIR/cluster.env"
