#!/usr/bin/env bash
# Starts etcd, kube-apiserver (RBAC, service-account keys, token auth) and kube-controller-manager
# on 127.0.0.1. Idempotent: when the environment is already up it only prints where it is.
# Writes $TESTENV_DIR/kubeconfig and $TESTENV_DIR/env; `down.sh` stops exactly what this started.
# TESTENV_PROFILE=cluster adds what real pods need (node-up.sh then adds a kubelet): kube-scheduler,
# and the controllers for workloads, node lifecycle, attach/detach, generic ephemeral volumes and
# the kube-root-ca.crt ConfigMap. The default profile keeps the few controllers the host-process tests expect.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/versions.env"
CACHE=${TESTENV_CACHE:-$HOME/.cache/elemento-testenv}
BIN=${TESTENV_BIN:-$CACHE/bin}
DIR=${TESTENV_DIR:-/tmp/elemento-testenv}
ETCD_PORT=${TESTENV_ETCD_PORT:-23790}
ETCD_PEER_PORT=${TESTENV_ETCD_PEER_PORT:-$((ETCD_PORT + 10))}
API_PORT=${TESTENV_APISERVER_PORT:-16443}
# 0.0.0.0 for a cluster that pods of another cluster reach (the management-cluster tier).
API_BIND=${TESTENV_APISERVER_BIND:-127.0.0.1}
PROFILE=${TESTENV_PROFILE:-default}
case "$PROFILE" in default|cluster) ;; *) echo "TESTENV_PROFILE: default or cluster, not $PROFILE" >&2; exit 1;; esac
log() { printf '[up %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

components=(etcd kube-apiserver kube-controller-manager)
[ "$PROFILE" = cluster ] && components+=(kube-scheduler)
for b in "${components[@]}" kubectl; do
  [ -x "$BIN/$b" ] || { log "missing $BIN/$b: run tests/env/install.sh first"; exit 1; }
done

alive() { [ -f "$DIR/$1.pid" ] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }
ready() { "$BIN/kubectl" --kubeconfig "$DIR/kubeconfig" get --raw=/readyz >/dev/null 2>&1; }

all_alive() { for c in "${components[@]}"; do alive "$c" || return 1; done; }
if all_alive && ready; then
  log "already up"
  cat "$DIR/env"
  exit 0
fi
# Half-up (a crash, or a previous run killed midway): start again from nothing.
[ -d "$DIR" ] && "$here/down.sh" >/dev/null 2>&1 || true
mkdir -p "$DIR/pki" "$DIR/etcd" "$DIR/logs"

wait_for() { # process-name budget-seconds command...
  local what=$1 budget=$2; shift 2
  local deadline=$((SECONDS + budget))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$what"; then
      log "$what exited; last log lines:"; tail -n 30 "$DIR/logs/$what.log" >&2 || true
      exit 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      log "$what not ready after ${budget}s; last log lines:"; tail -n 30 "$DIR/logs/$what.log" >&2 || true
      exit 1
    fi
    sleep 0.25
  done
}

start() { # name command...
  local name=$1; shift
  setsid "$@" > "$DIR/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$DIR/$name.pid"
}

openssl genrsa -out "$DIR/pki/sa.key" 2048 2>/dev/null
openssl rsa -in "$DIR/pki/sa.key" -pubout -out "$DIR/pki/sa.pub" 2>/dev/null
token=$(openssl rand -hex 16)
echo "$token,admin,admin,system:masters" > "$DIR/pki/tokens.csv"
chmod 600 "$DIR/pki/tokens.csv" "$DIR/pki/sa.key"

start etcd "$BIN/etcd" --data-dir "$DIR/etcd" --unsafe-no-fsync \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "default=http://127.0.0.1:$ETCD_PEER_PORT" --log-level warn
wait_for etcd 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/readyz"

start kube-apiserver "$BIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address "$API_BIND" --advertise-address 127.0.0.1 --secure-port "$API_PORT" --cert-dir "$DIR/pki" \
  --authorization-mode RBAC,Node --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file "$DIR/pki/sa.pub" --service-account-signing-key-file "$DIR/pki/sa.key" \
  --service-cluster-ip-range 10.96.0.0/16 --token-auth-file "$DIR/pki/tokens.csv" --allow-privileged=true --enable-bootstrap-token-auth \
  --enable-priority-and-fairness=false

cat > "$DIR/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster:
    server: https://127.0.0.1:$API_PORT
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: $token
contexts:
- name: testenv
  context: {cluster: testenv, user: admin}
current-context: testenv
KC
chmod 600 "$DIR/kubeconfig"
wait_for kube-apiserver 60 ready

controllers=persistentvolume-binder-controller,persistentvolumeclaim-protection-controller,persistentvolume-protection-controller,serviceaccount-controller,namespace-controller,garbage-collector-controller
kcm_extra=()
if [ "$PROFILE" = cluster ]; then
  controllers+=,daemonset-controller,deployment-controller,replicaset-controller,statefulset-controller
  controllers+=,node-lifecycle-controller,persistentvolume-attach-detach-controller,pod-garbage-collector-controller
  controllers+=,endpointslice-controller,root-ca-certificate-publisher-controller,ephemeral-volume-controller
  # The API server's self-signed serving certificate bundle is the cluster CA pods verify against.
  kcm_extra+=(--root-ca-file "$DIR/pki/apiserver.crt")
fi
start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig "$DIR/kubeconfig" \
  --leader-elect=false --secure-port=0 --use-service-account-credentials=false \
  --controllers="$controllers" "${kcm_extra[@]}"
# The controller manager is ready when it has created the default ServiceAccount.
wait_for kube-controller-manager 60 "$BIN/kubectl" --kubeconfig "$DIR/kubeconfig" -n default get serviceaccount default

if [ "$PROFILE" = cluster ]; then
  start kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$DIR/kubeconfig" --leader-elect=false \
    --secure-port=0
fi

cat > "$DIR/env" <<ENV
KUBECONFIG=$DIR/kubeconfig
TESTENV_DIR=$DIR
TESTENV_BIN=$BIN
ETCD_PID=$(cat "$DIR/etcd.pid")
KUBE_APISERVER_PID=$(cat "$DIR/kube-apiserver.pid")
KUBE_CONTROLLER_MANAGER_PID=$(cat "$DIR/kube-controller-manager.pid")
ENV
log "up"
cat "$DIR/env"
