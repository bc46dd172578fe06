#!/usr/bin/env bash
# The whole stack on one machine: a real control plane (etcd, kube-apiserver,
# kube-controller-manager), the Elemento simulator with examples/scenario.yaml (or a real
# Elemento endpoint), the CCM, the CSI controller and node plugin with csi-provisioner,
# csi-attacher and csi-resizer, plus sample Nodes, a LoadBalancer Service and a PVC.
# Prints a status table, then runs until Ctrl-C and tears everything down.
#
#   scripts/local-stack.sh            run until Ctrl-C
#   scripts/local-stack.sh --once     print the status table and stop (used by the tests)
# Real Elemento instead of the simulator:
#   ELEMENTO_API_URL=https://... ELEMENTO_CREDENTIALS_FILE=creds.yaml scripts/local-stack.sh
# Root is needed for the node plugin's mounts (host-device mode of the simulator).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
once=false; [ "${1:-}" = --once ] && once=true
profile=${LOCAL_STACK_PROFILE:-release}
log() { printf '[local-stack %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

export TESTENV_DIR=${LOCAL_STACK_DIR:-/tmp/elemento-local-stack}
export TESTENV_ETCD_PORT=${LOCAL_STACK_ETCD_PORT:-23891} TESTENV_ETCD_PEER_PORT=${LOCAL_STACK_ETCD_PEER_PORT:-23892} TESTENV_APISERVER_PORT=${LOCAL_STACK_APISERVER_PORT:-16543}
work=$TESTENV_DIR-run
rm -rf "$work"; mkdir -p "$work/logs"
pids=()
cleanup() {
  log "stopping"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for m in $(awk -v w="$work" '$5 ~ "^"w {print $5}' /proc/self/mountinfo | sort -r); do umount "$m" 2>/dev/null || true; done
  bash tests/env/down.sh >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building ($profile)"
flag=(); [ "$profile" = release ] && flag=(--release)
cargo build -q "${flag[@]}" -p elemento-sim -p elemento-cloud-controller-manager -p elemento-csi-driver
bin=$root/target/$profile
tools=$(bash tests/env/install.sh 2>"$work/logs/install.log" | tail -1)
bash tests/env/up.sh > "$work/env" 2>"$work/logs/up.log"
export KUBECONFIG=$TESTENV_DIR/kubeconfig
k() { "$tools/kubectl" "$@"; }

start() { # name command...
  local name=$1; shift
  "$@" > "$work/logs/$name.log" 2>&1 &
  pids+=($!)
}

# --- Elemento API: the simulator, or a real endpoint
if [ -n "${ELEMENTO_API_URL:-}" ]; then
  api_url=$ELEMENTO_API_URL
  creds=${ELEMENTO_CREDENTIALS_FILE:?ELEMENTO_CREDENTIALS_FILE must name the credentials file}
  node_vm=${ELEMENTO_NODE_VM_ID:?ELEMENTO_NODE_VM_ID must name the VM this machine is}
  nodes=${ELEMENTO_NODE_NAMES:-}
  log "using the Elemento API at $api_url"
else
  mkdir -p "$work/hostdev"
  start elemento-sim "$bin/elemento-sim" --scenario examples/scenario.yaml --listen 127.0.0.1:0 --host-devices "$work/hostdev" --state "$work/sim-state.json"
  for _ in $(seq 1 100); do grep -q listening "$work/logs/elemento-sim.log" 2>/dev/null && break; sleep 0.1; done
  api_url=http://$(grep -m1 listening "$work/logs/elemento-sim.log" | sed 's/.*\["\([^"]*\)".*/\1/')
  printf 'username: demo\npassword: demo-password\n' > "$work/creds.yaml"; creds=$work/creds.yaml
  node_vm=5b0e8f4e-0c1d-4f6a-9a51-1b2c3d4e5f02   # worker-1, "this host" in the scenario
  nodes="control-plane-1 worker-1 worker-2"
  log "simulator at $api_url"
fi

# --- RBAC from the charts, and ServiceAccount tokens for the binaries
k create namespace elemento-system --dry-run=client -o yaml | k apply -f - >/dev/null
render() { "$tools/helm" template "$1" "charts/$2" --namespace elemento-system --kube-version 1.36.1 --set credentials.existingSecret=local "${@:3}"; }
{ render ccm elemento-cloud-controller-manager --show-only templates/serviceaccount.yaml --show-only templates/rbac.yaml --set leaderElection.enabled=true
  echo "---"
  render csi elemento-csi-driver --show-only templates/serviceaccounts.yaml --show-only templates/rbac.yaml --show-only templates/csidriver.yaml
} > "$work/rbac.yaml"
k apply -f "$work/rbac.yaml" >/dev/null
kubeconfig_for() { # service-account
  local token server
  token=$(k -n elemento-system create token "$1" --duration 24h)
  server=$(awk '/server:/{print $2; exit}' "$KUBECONFIG")
  printf 'apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: %s, insecure-skip-tls-verify: true}\nusers:\n- name: u\n  user: {token: %s}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\n' "$server" "$token" > "$work/$1.kubeconfig"
  echo "$work/$1.kubeconfig"
}
ccm_kc=$(kubeconfig_for ccm-elemento-cloud-controller-manager)
csi_kc=$(kubeconfig_for csi-elemento-csi-driver-controller)

# --- the project's binaries and the CSI sidecars
printf 'clusterName: local\napi:\n  url: %s\n  credentialsFile: %s\n' "$api_url" "$creds" > "$work/cloud-config.yaml"
printf 'api:\n  url: %s\n  credentialsFile: %s\n' "$api_url" "$creds" > "$work/driver.yaml"
start ccm "$bin/elemento-cloud-controller-manager" --kubeconfig "$ccm_kc" --cloud-config "$work/cloud-config.yaml" \
  --leader-elect-resource-namespace elemento-system --metrics-bind-address 127.0.0.1:10258
start csi-controller "$bin/elemento-csi-driver" --mode controller --endpoint "unix://$work/controller.sock" --config "$work/driver.yaml" --metrics-bind-address 127.0.0.1:9810
start csi-node "$bin/elemento-csi-driver" --mode node --endpoint "unix://$work/node.sock" --node-id "$node_vm" --node-region atomos \
  --device-root "$work/hostdev" --metrics-bind-address 127.0.0.1:9811
for _ in $(seq 1 100); do [ -S "$work/controller.sock" ] && break; sleep 0.1; done
for s in csi-provisioner csi-attacher csi-resizer; do
  start "$s" "$tools/$s" --csi-address="$work/controller.sock" --kubeconfig="$csi_kc" --leader-election=false --timeout=60s
done

# --- sample objects: Nodes for the VMs (as kubelets with --cloud-provider=external register them),
# the CSINode of this host, a LoadBalancer Service and a PVC
for n in $nodes; do
  k apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Node
metadata: {name: $n, labels: {sample.elemento.cloud/local-stack: "true"}}
spec:
  taints: [{key: node.cloudprovider.kubernetes.io/uninitialized, value: "true", effect: NoSchedule}]
YAML
done
first_worker=$(echo "$nodes" | tr ' ' '\n' | grep -m1 worker || true)
k apply -f - >/dev/null <<YAML
apiVersion: storage.k8s.io/v1
kind: CSINode
metadata: {name: ${first_worker:-local-node}}
spec:
  drivers: [{name: csi.elemento.cloud, nodeID: "$node_vm", topologyKeys: [topology.kubernetes.io/region]}]
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: elemento-standard, annotations: {storageclass.kubernetes.io/is-default-class: "true"}}
provisioner: csi.elemento.cloud
parameters: {flavour: standard}
allowVolumeExpansion: true
volumeBindingMode: Immediate
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{name: http, port: 80, protocol: TCP}]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: default}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: elemento-standard
  resources: {requests: {storage: 1Gi}}
YAML

# --- status
status() {
  local total ready lb pvc
  total=$(echo $nodes | wc -w)
  ready=$(k get nodes -l sample.elemento.cloud/local-stack=true -o json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(1 for n in d["items"] if (n["spec"].get("providerID","").startswith("elemento://") and not any(t["key"]=="node.cloudprovider.kubernetes.io/uninitialized" for t in n["spec"].get("taints",[])))))')
  lb=$(k get svc web -o jsonpath='{.status.loadBalancer.ingress[0].ip}')
  pvc=$(k get pvc data -o jsonpath='{.status.phase}')
  printf '%s/%s|%s|%s\n' "$ready" "$total" "${lb:-pending}" "${pvc:-Pending}"
}
deadline=$((SECONDS + 120))
while :; do
  s=$(status)
  IFS='|' read -r nodes_ok lb pvc <<<"$s"
  [ "${nodes_ok%/*}" = "${nodes_ok#*/}" ] && [ "$lb" != pending ] && [ "$pvc" = Bound ] && break
  [ $SECONDS -ge $deadline ] && { log "not converged within 120 s; logs in $work/logs"; break; }
  sleep 0.5
done
printf '\n%-22s %s\n' "nodes initialized" "$nodes_ok"
printf '%-22s %s\n' "load balancer address" "$lb"
printf '%-22s %s\n\n' "PVC data" "$pvc"
echo "KUBECONFIG=$KUBECONFIG   logs: $work/logs   Elemento API: $api_url"
if $once; then
  [ "$lb" != pending ] && [ "$pvc" = Bound ] && [ "${nodes_ok%/*}" = "${nodes_ok#*/}" ]
  exit $?
fi
log "running; Ctrl-C to stop and tear down"
wait
