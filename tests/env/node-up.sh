#!/usr/bin/env bash
# Makes this machine a Kubernetes node of the control plane that up.sh started (cluster profile):
# containerd 2 with the CNI bridge, the images of tests/env/images.sh imported (never pulled), and
# a real kubelet with --cloud-provider=external on the machine's own hostname, so it registers with
# the uninitialized taint as in production. Also a one-rule stand-in for kube-proxy: the
# `kubernetes` Service address leads to the API server, as it does in a real cluster.
#
# One kubelet per machine: its state lives in fixed places (/var/lib/kubelet, /run/containerd,
# cgroups, iptables, sysctls). Everything it changes is recorded in $NODE_STATE and restored by
# node-down.sh, which this script also runs first (a crashed previous run is cleaned up).
# Needs root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/versions.env"
source "$here/node-common.sh"
CACHE=${TESTENV_CACHE:-$HOME/.cache/elemento-testenv}
BIN=${TESTENV_BIN:-$CACHE/bin}
DIR=${TESTENV_DIR:-/tmp/elemento-testenv}
IMAGE_DIRS=${TESTENV_IMAGE_DIRS:-$CACHE/images}
log() { printf '[node-up %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

[ "$(id -u)" -eq 0 ] || { log "the node tier needs root (mounts, cgroups, iptables)"; exit 1; }
for b in containerd containerd-shim-runc-v2 ctr kubelet; do
  [ -x "$BIN/$b" ] || { log "missing $BIN/$b: run tests/env/install.sh first"; exit 1; }
done
[ -f "$DIR/kubeconfig" ] || { log "no control plane in $DIR: run up.sh (TESTENV_PROFILE=cluster) first"; exit 1; }
if [ -f "$NODE_STATE/owner" ] && kill -0 "$(cat "$NODE_STATE/kubelet.pid" 2>/dev/null || echo 0)" 2>/dev/null; then
  log "a kubelet of $(cat "$NODE_STATE/owner") already runs on this machine (one per machine)"; exit 1
fi
bash "$here/node-down.sh" >/dev/null 2>&1 || true

N=$DIR/node
mkdir -p "$NODE_STATE" "$N/logs" "$N/cni/conf" "$N/cni/state" "$N/pod-logs" "$N/manifests"
echo "$DIR" > "$NODE_STATE/owner"
# Host values the kubelet and the CNI bridge change, saved once so node-down.sh can restore them.
for s in "${NODE_SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s")"; done > "$NODE_STATE/sysctl.saved"

api_port=$(awk -F: '/server:/{print $NF; exit}' "$DIR/kubeconfig")
cat > "$N/containerd.toml" <<TOML
version = 3
root = "$N/containerd/root"
state = "$NODE_CONTAINERD_STATE"
[grpc]
  address = "$NODE_CONTAINERD_STATE/containerd.sock"
[ttrpc]
  address = "$NODE_CONTAINERD_STATE/containerd.sock.ttrpc"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "$PAUSE_IMAGE"
[plugins."io.containerd.cri.v1.runtime"]
  # No CAP_SYS_RESOURCE here: the sandbox's negative oom_score_adj would make runc fail.
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$N/cni/conf"
    max_conf_num = 1
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
TOML
cat > "$N/cni/conf/10-testenv.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "testenv",
  "plugins": [
    {"type": "bridge", "bridge": "$NODE_BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$NODE_POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}],
              "dataDir": "$N/cni/state"}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
JSON

start() { # name command...
  local name=$1; shift
  PATH="$BIN:$PATH" setsid "$@" > "$N/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$NODE_STATE/$name.pid"
}
wait_for() { # what budget command...
  local what=$1 budget=$2; shift 2
  local deadline=$((SECONDS + budget))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ] || ! kill -0 "$(cat "$NODE_STATE/$what.pid")" 2>/dev/null; then
      log "$what not ready after ${budget}s; last log lines:"; tail -n 30 "$N/logs/$what.log" >&2; exit 1
    fi
    sleep 0.2
  done
}
ctr() { "$BIN/ctr" --address "$NODE_CONTAINERD_STATE/containerd.sock" -n k8s.io "$@"; }

start containerd "$BIN/containerd" --config "$N/containerd.toml"
wait_for containerd 30 ctr version

shopt -s nullglob
archives=()
IFS=: read -r -a dirs <<<"$IMAGE_DIRS"
for d in "${dirs[@]}"; do archives+=("$d"/*.tar); done
[ ${#archives[@]} -gt 0 ] || { log "no image archives in $IMAGE_DIRS: run tests/env/images.sh first"; exit 1; }
for a in "${archives[@]}"; do ctr images import "$a" >/dev/null 2>>"$N/logs/import.log"; done
log "imported ${#archives[@]} images"

# The kubelet uses the admin identity of the test control plane (no TLS bootstrap here).
cp "$DIR/kubeconfig" "$N/kubelet.kubeconfig"
cat > "$N/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$NODE_CONTAINERD_STATE/containerd.sock
cgroupDriver: cgroupfs
failCgroupV1: false          # these machines are cgroup v1 (1.36 refuses it by default)
failSwapOn: false
staticPodPath: $N/manifests
podLogsDir: $N/pod-logs
readOnlyPort: 0
port: 10250
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
imageGCHighThresholdPercent: 100   # never garbage-collect the imported images
imageGCLowThresholdPercent: 99
# Absolute thresholds: a percentage of a large shared disk (2 % of 252 GB is 5 GB) put the node
# under DiskPressure, and every test pod Pending on its taint, while gigabytes were still free.
evictionHard: {memory.available: "100Mi", nodefs.available: "512Mi", imagefs.available: "512Mi", nodefs.inodesFree: "1%"}
resolvConf: /etc/resolv.conf
registerNode: true
serializeImagePulls: false
YAML
start kubelet "$BIN/kubelet" --config "$N/kubelet.yaml" --kubeconfig "$N/kubelet.kubeconfig" \
  --cloud-provider=external --root-dir "$NODE_KUBELET_DIR" --v=1
node=$(hostname | tr '[:upper:]' '[:lower:]')
wait_for kubelet 90 "$BIN/kubectl" --kubeconfig "$DIR/kubeconfig" get node "$node"

# kube-proxy's one job this cluster needs: the `kubernetes` Service address reaches the API server
# (127.0.0.1 only). DNATed connections are exempt from the kubelet's KUBE-FIREWALL localnet drop.
svc_ip=$("$BIN/kubectl" --kubeconfig "$DIR/kubeconfig" -n default get service kubernetes -o jsonpath='{.spec.clusterIP}')
iptables -t nat -N "$NODE_NAT_CHAIN"
iptables -t nat -A "$NODE_NAT_CHAIN" -d "$svc_ip/32" -p tcp --dport 443 -j DNAT --to-destination "127.0.0.1:$api_port"
iptables -t nat -I OUTPUT 1 -j "$NODE_NAT_CHAIN"
iptables -t nat -I PREROUTING 1 -j "$NODE_NAT_CHAIN"
sysctl -qw net.ipv4.conf.all.route_localnet=1
echo "$node" > "$NODE_STATE/node-name"
log "node $node registered (kubelet pid $(cat "$NODE_STATE/kubelet.pid"))"
echo "NODE_NAME=$node"
