#!/usr/bin/env bash
# The whole product on one machine, run the way users run it: a real single-node cluster
# (control plane, containerd and a kubelet on this machine, tests/env/cluster-up.sh) on the
# Elemento simulator, both Helm charts installed with helm (their own pods: the CCM, the CSI
# controller and node plugin with the real sidecars), and a demo application: a pod that serves
# a file from its Elemento volume, behind a LoadBalancer Service. Prints a status table and the
# KUBECONFIG to use with kubectl, then runs until Ctrl-C and tears everything down (the host is
# restored: tests/env/node-down.sh).
#
#   scripts/local-stack.sh            run until Ctrl-C
#   scripts/local-stack.sh --once     print the status table and stop (used by the tests)
# Needs root (kubelet, containerd, loop devices). The first run builds the tools and images.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
once=false; [ "${1:-}" = --once ] && once=true
profile=${LOCAL_STACK_PROFILE:-release}
log() { printf '[local-stack %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
[ "$(id -u)" -eq 0 ] || { log "run as root: the local cluster runs a kubelet, containerd and loop devices"; exit 1; }

export TESTENV_DIR=${LOCAL_STACK_DIR:-/tmp/elemento-local-stack}
export TESTENV_ETCD_PORT=${LOCAL_STACK_ETCD_PORT:-23891} TESTENV_ETCD_PEER_PORT=${LOCAL_STACK_ETCD_PEER_PORT:-23892} TESTENV_APISERVER_PORT=${LOCAL_STACK_APISERVER_PORT:-16543}
logs=$TESTENV_DIR-logs
rm -rf "$logs"; mkdir -p "$logs"

log "building ($profile) and the images"
flag=(); [ "$profile" = release ] && flag=(--release)
cargo build -q "${flag[@]}" -p elemento-sim
tools=$(bash tests/env/install.sh 2>"$logs/install.log" | tail -1)
bash images/build.sh >"$logs/images.log" 2>&1 || { log "images/build.sh failed:"; tail -n 20 "$logs/images.log" >&2; exit 1; }

# One kubelet per machine: wait for any test or other local stack using it.
exec 9>/run/lock/elemento-testenv-node.lock
flock 9
cleanup() {
  log "stopping and restoring the host"
  TESTENV_KEEP_LOGS=$logs/cluster bash tests/env/cluster-down.sh >"$logs/down.log" 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ELEMENTO_SIM_BIN=$root/target/$profile/elemento-sim bash tests/env/cluster-up.sh >"$logs/cluster.env" 2>"$logs/cluster-up.log" \
  || { log "cluster-up failed:"; tail -n 30 "$logs/cluster-up.log" >&2; exit 1; }
# shellcheck disable=SC1091
source "$logs/cluster.env"
export KUBECONFIG
k() { "$tools/kubectl" "$@"; }
helm_install() { # release chart values
  "$tools/helm" upgrade --install "$1" "charts/$2" --namespace kube-system --values "examples/local-cluster/$3" \
    --set "api.url=$ELEMENTO_API_URL" --set "credentials.username=$ELEMENTO_USERNAME" \
    --set "credentials.password=$ELEMENTO_PASSWORD" >/dev/null
}
log "cluster up; installing the charts"
helm_install ccm elemento-cloud-controller-manager values-ccm.yaml
helm_install csi elemento-csi-driver values-csi.yaml

# The demo: busybox httpd serves /data (an Elemento volume) on 8080, behind a LoadBalancer.
k apply -f - >/dev/null <<YAML
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: demo, namespace: default}
spec:
  serviceName: demo
  replicas: 1
  selector: {matchLabels: {app: demo}}
  template:
    metadata: {labels: {app: demo}}
    spec:
      containers:
        - name: httpd
          image: localhost/elemento-testenv/busybox:1
          imagePullPolicy: Never
          command: [sh, -c, "[ -f /data/index.html ] || echo 'hello from an Elemento volume' > /data/index.html; exec httpd -f -p 8080 -h /data"]
          ports: [{containerPort: 8080, name: http}]
          readinessProbe: {httpGet: {path: /index.html, port: http}}
          volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
    - metadata: {name: data}
      spec:
        accessModes: [ReadWriteOnce]
        storageClassName: elemento-standard
        resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Service
metadata: {name: demo, namespace: default}
spec:
  type: LoadBalancer
  selector: {app: demo}
  ports: [{name: http, port: 80, targetPort: http, protocol: TCP}]
YAML

node_ready() {
  k get node "$NODE_NAME" -o json | python3 -c '
import json, sys
n = json.load(sys.stdin)
tainted = any(t["key"] == "node.cloudprovider.kubernetes.io/uninitialized" for t in n["spec"].get("taints", []))
ready = any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
print("initialized" if n["spec"].get("providerID", "").startswith("elemento://") and not tainted and ready else "pending")'
}
pods_ready() { # all pods Ready: "n/n"
  k get pods -A -o json | python3 -c '
import json, sys
items = json.load(sys.stdin)["items"]
ok = sum(1 for p in items if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", [])))
print(f"{ok}/{len(items)}")'
}
deadline=$((SECONDS + 300))
while :; do
  node=$(node_ready); pods=$(pods_ready)
  pvc=$(k get pvc data-demo-0 -o jsonpath='{.status.phase}' 2>/dev/null || true)
  lb=$(k get svc demo -o jsonpath='{.status.loadBalancer.ingress[0].ip}')
  [ "$node" = initialized ] && [ "${pods%/*}" = "${pods#*/}" ] && [ "$pvc" = Bound ] && [ -n "$lb" ] && break
  [ $SECONDS -ge $deadline ] && { log "not converged within 300 s; logs in $TESTENV_DIR/logs and $TESTENV_DIR/node/logs"; break; }
  sleep 1
done
page=$(k exec demo-0 -- wget -qO- http://127.0.0.1:8080/index.html 2>/dev/null || true)
echo
k get pods -A -o wide
echo
printf '%-22s %s (%s)\n' "node" "$NODE_NAME" "$node"
printf '%-22s %s\n' "node taints" "$(k get node "$NODE_NAME" -o jsonpath='{.spec.taints[*].key}')"
printf '%-22s %s\n' "pods ready" "$pods"
printf '%-22s %s\n' "PVC data-demo-0" "${pvc:-Pending}"
printf '%-22s %s\n' "load balancer address" "${lb:-pending}"
printf '%-22s %s\n\n' "demo page" "${page:-unavailable}"
echo "export KUBECONFIG=$KUBECONFIG    # then: $tools/kubectl get pods -A"
echo "Elemento API (simulator): $ELEMENTO_API_URL    logs: $TESTENV_DIR/logs $TESTENV_DIR/node/logs"
if $once; then
  [ "$node" = initialized ] && [ "${pods%/*}" = "${pods#*/}" ] && [ "$pvc" = Bound ] && [ -n "$lb" ] && [ -n "$page" ]
  exit $?
fi
log "running; Ctrl-C to stop, tear down and restore the host"
while sleep 3600; do :; done
