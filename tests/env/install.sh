#!/usr/bin/env bash
# Builds the real Kubernetes test control plane, the node tier (containerd, kubelet) and the CSI
# tools from the Go module proxy (etcd, runc and the CNI plugins from Debian, the two CSI node
# sidecars from the sources in ../shared/tools), once per pinned version, into $TESTENV_CACHE/bin.
# Each build logs to $TESTENV_CACHE/logs/<tool>.log; stdout gets one line per tool with its time.
# Re-running with everything cached takes seconds. No binary is ever committed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

CACHE=${TESTENV_CACHE:-$HOME/.cache/elemento-testenv}
BIN=$CACHE/bin
LOGS=$CACHE/logs
SHARED=${ELEMENTO_SHARED_DIR:-$(cd "$here/../../.." && pwd)/shared}
mkdir -p "$BIN" "$CACHE/wrap" "$LOGS"
export GOMODCACHE=$CACHE/gomod GOCACHE=$CACHE/gobuild CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
log() { printf '[install %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
# One line per tool on stdout; the build's own output goes to its log file (shown on failure).
step() { # name function args...
  local name=$1 t0=$SECONDS rc; shift
  # A subshell with errexit of its own: inside an `if`, bash would ignore `set -e`.
  set +e; ( set -e; "$@" ) > "$LOGS/$name.log" 2>&1; rc=$?; set -e
  if [ $rc -eq 0 ]; then
    printf '[install] %-28s %4d s\n' "$name" $((SECONDS - t0))
  else
    printf '[install] %-28s FAILED after %d s; last lines of %s:\n' "$name" $((SECONDS - t0)) "$LOGS/$name.log"
    tail -n 40 "$LOGS/$name.log"
    return 1
  fi
}

# A binary is up to date when its stamp file holds the wanted version.
fresh() { [ -x "$BIN/$1" ] && [ "$(cat "$BIN/$1.version" 2>/dev/null)" = "$2" ]; }
stamp() { echo "$2" > "$BIN/$1.version"; }

install_apt_packages() {
  local want=(e2fsprogs xfsprogs btrfs-progs util-linux openssl jq curl mount
              runc containernetworking-plugins iptables busybox-static buildah mmdebstrap ca-certificates skopeo)
  local missing=()
  for p in "${want[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then log "not root: install ${missing[*]} yourself"; return 1; fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# etcd >= 3.5.13 is needed by kube-apiserver 1.36; Debian bookworm has only 3.4, so the trixie
# package is downloaded through a private apt state (the system's apt state is not touched).
install_etcd() {
  local want="debian-$ETCD_DEBIAN_SUITE-$ETCD_DEBIAN_VERSION_PREFIX"
  fresh etcd "$want" && return 0
  log "etcd from Debian $ETCD_DEBIAN_SUITE"
  local d=$CACHE/apt-$ETCD_DEBIAN_SUITE uri
  uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  uri=${uri:-http://deb.debian.org/debian}
  mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/out"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $ETCD_DEBIAN_SUITE main" > "$d/sources.list"
  local opts=(-o "Dir::Etc::SourceList=$d/sources.list" -o Dir::Etc::SourceParts=/dev/null
              -o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache" -qq)
  apt-get "${opts[@]}" update
  (cd "$d" && rm -f etcd-server_*.deb && apt-get "${opts[@]}" download etcd-server)
  local deb; deb=$(ls "$d"/etcd-server_*.deb)
  case "$(basename "$deb")" in etcd-server_"$ETCD_DEBIAN_VERSION_PREFIX"*) ;; *) log "unexpected etcd package $deb"; return 1;; esac
  dpkg-deb -x "$deb" "$d/out"
  install -m 0755 "$d/out/usr/bin/etcd" "$BIN/etcd"
  stamp etcd "$want"
}

# Builds packages of a module whose go.mod uses replace directives (which `go install` rejects):
# a throw-away wrapper module reproduces the module's pinned replaces, and maps every
# k8s.io/* staging requirement at v0.0.0 to the staging tag v0.<minor>.<patch> of $K8S_VERSION.
wrap_module() { # module version: leaves the shell in the wrapper module's directory
  local module=$1 version=$2
  local name=${module//\//_} dir gomod staging
  dir=$CACHE/wrap/$name
  rm -rf "$dir"; mkdir -p "$dir"; cd "$dir"
  go mod init "wrap.local/$name" >/dev/null 2>&1
  gomod=$(cd / && go mod download -json "$module@$version" | jq -r .GoMod)
  staging="v0.${K8S_VERSION#v1.}"
  {
    go mod edit -json "$gomod" | jq -r '.Replace[]? | select(.New.Version != null)
      | "\(.Old.Path)\(if .Old.Version then "@" + .Old.Version else "" end)=\(.New.Path)@\(.New.Version)"'
    go mod edit -json "$gomod" | jq -r --arg v "$staging" '.Require[]?
      | select((.Path | startswith("k8s.io/")) and .Version == "v0.0.0") | "\(.Path)=\(.Path)@\($v)"'
  } | sort -u | while read -r r; do go mod edit "-replace=$r"; done
  go mod edit -godebug default=go1.24 2>/dev/null || true
}

# The version variables the Kubernetes binaries (and e2e.test) report.
k8s_ldflags() {
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  echo "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
}

build_wrapped() {
  local module=$1 version=$2; shift 2
  wrap_module "$module" "$version"
  local pkgs=()
  for p in "$@"; do pkgs+=("$module/$p@$version"); done
  go get "${pkgs[@]}" >/dev/null
  local ldflags="-s -w"
  [ "$module" != k8s.io/kubernetes ] || ldflags=$(k8s_ldflags)
  for p in "$@"; do
    log "go build $(basename "$p") ($module@$version)"
    go build -trimpath -ldflags "$ldflags" -o "$BIN/$(basename "$p")" "$module/$p"
    stamp "$(basename "$p")" "$version"
  done
  cd - >/dev/null
}

install_go_tool() { # module version package-path
  local module=$1 version=$2 pkg=$3 name; name=$(basename "$pkg")
  fresh "$name" "$version" && return 0
  log "go install $name ($module@$version)"
  GOBIN=$BIN go install -trimpath -ldflags "-s -w" "$module/$pkg@$version"
  stamp "$name" "$version"
}

install_kubernetes() {
  local need=()
  for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do fresh "$b" "$K8S_VERSION" || need+=("cmd/$b"); done
  [ ${#need[@]} -eq 0 ] || build_wrapped k8s.io/kubernetes "$K8S_VERSION" "${need[@]}"
}

# The Kubernetes end-to-end suite (storage tests against our driver, tests/storage-e2e) and
# agnhost, the suite's multi-purpose test image binary; both from the same tag as the cluster.
install_e2e_test() {
  fresh e2e.test "$K8S_VERSION" && fresh agnhost "$K8S_VERSION" && return 0
  wrap_module k8s.io/kubernetes "$K8S_VERSION"
  go get "k8s.io/kubernetes/test/e2e@$K8S_VERSION" "k8s.io/kubernetes/test/images/agnhost@$K8S_VERSION" >/dev/null
  log "go test -c test/e2e (k8s.io/kubernetes@$K8S_VERSION)"
  go test -c -trimpath -ldflags "$(k8s_ldflags)" -o "$BIN/e2e.test" k8s.io/kubernetes/test/e2e
  stamp e2e.test "$K8S_VERSION"
  log "go build agnhost"
  go build -trimpath -ldflags "-s -w" -o "$BIN/agnhost" k8s.io/kubernetes/test/images/agnhost
  stamp agnhost "$K8S_VERSION"
  cd - >/dev/null
}

install_sidecar() { # module version cmd-name
  fresh "$3" "$2" || build_wrapped "$1" "$2" "cmd/$3"
}

# containerd 2 and its runc shim (Debian has containerd 1.x only, which Kubernetes 1.37 drops).
install_containerd() {
  local b
  for b in containerd containerd-shim-runc-v2 ctr; do
    install_go_tool "$CONTAINERD_MODULE" "$CONTAINERD_VERSION" "cmd/$b"
  done
}

# A source tarball from ../shared/tools, checked against its SHA256SUMS, built with `go build`.
install_from_shared() { # dir tarball-prefix version cmd-name
  local dir=$1 prefix=$2 version=$3 name=$4 tarball src
  fresh "$name" "$version" && return 0
  tarball="$SHARED/tools/$dir/$prefix-$version-src.tar.gz"
  [ -f "$tarball" ] || { log "missing $tarball (the shared tools folder next to the project)"; return 1; }
  (cd "$SHARED/tools/$dir" && grep " $(basename "$tarball")\$" SHA256SUMS | sha256sum -c --quiet -)
  src=$CACHE/src; rm -rf "${src:?}/$prefix-$version"; mkdir -p "$src"
  tar xzf "$tarball" -C "$src"
  (cd "$src/$prefix-$version" && go build -trimpath -ldflags "-s -w" -o "$BIN/$name" "./cmd/$name")
  stamp "$name" "$version"
}

# The real cluster-autoscaler, from the trimmed source snapshot in ../shared/tools (its module is
# not served by the Go proxy; its dependencies are), with only the externalgrpc provider.
install_cluster_autoscaler() {
  local version=$CLUSTER_AUTOSCALER_VERSION tarball src
  fresh cluster-autoscaler "$version" && return 0
  tarball="$SHARED/tools/cluster-autoscaler/cluster-autoscaler-$version-src.tar.gz"
  [ -f "$tarball" ] || { log "missing $tarball (the shared tools folder next to the project)"; return 1; }
  (cd "$SHARED/tools/cluster-autoscaler" && grep " $(basename "$tarball")\$" SHA256SUMS | sha256sum -c --quiet -)
  src=$CACHE/src/cluster-autoscaler-$version; rm -rf "${src:?}"; mkdir -p "$src"
  tar xzf "$tarball" -C "$src"
  (cd "$src/cluster-autoscaler" && nice -n 10 go build -tags externalgrpc -trimpath -ldflags "-s -w" -o "$BIN/cluster-autoscaler" .)
  stamp cluster-autoscaler "$version"
}

# KWOK, and its stages (how fake Nodes become Ready and keep a Lease, how their pods start and
# finish), taken from the module's own kustomize/stage at the same version: the binary has none.
install_kwok() {
  install_go_tool "$KWOK_MODULE" "$KWOK_VERSION" cmd/kwok
  local stages=$GOMODCACHE/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage out=$BIN/kwok-stages.yaml f
  [ -s "$out" ] && [ "$(cat "$out.version" 2>/dev/null)" = "$KWOK_VERSION" ] && return 0
  [ -d "$stages" ] || go mod download "$KWOK_MODULE@$KWOK_VERSION"
  : > "$out.tmp"
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    { echo "---"; cat "$stages/$f"; } >> "$out.tmp"
  done
  mv "$out.tmp" "$out"
  echo "$KWOK_VERSION" > "$out.version"
}

# promtool without Prometheus's service discoveries (-tags remove_all_sd): only `check rules` is
# used, and the cloud SDKs the discoveries pull in would multiply the build time.
install_promtool() {
  fresh promtool "$PROMETHEUS_VERSION" && return 0
  log "go install promtool ($PROMETHEUS_MODULE@$PROMETHEUS_VERSION, -tags remove_all_sd)"
  GOBIN=$BIN go install -tags remove_all_sd -trimpath -ldflags "-s -w" "$PROMETHEUS_MODULE/cmd/promtool@$PROMETHEUS_VERSION"
  stamp promtool "$PROMETHEUS_VERSION"
}

# The pod sandbox's PID 1 (tests/env/pause), built as a static binary for the pause image.
install_pause() {
  local version; version=$(sha256sum "$here/pause/main.go" | cut -c1-16)
  fresh pause "$version" && return 0
  (cd "$here/pause" && GOFLAGS= go build -trimpath -ldflags "-s -w" -o "$BIN/pause" main.go)
  stamp pause "$version"
}

# The stand-in of kOps's addon-template rendering (tests/env/kops-template): renders the kOps
# fork's templates (manifests/kops-fork) with functions of kOps's names and signatures.
install_kops_template() {
  local version; version=$(cat "$here/kops-template/main.go" "$here/kops-template/go.mod" | sha256sum | cut -c1-16)
  fresh kops-template "$version" && return 0
  (cd "$here/kops-template" && GOFLAGS= go build -trimpath -ldflags "-s -w" -o "$BIN/kops-template" .)
  stamp kops-template "$version"
}

# The benchmark's peer (tests/env/peer-ccm): a minimal CCM on k8s.io/cloud-provider at the
# staging version of K8S_VERSION, so bench node-init compares ours with the Go framework.
install_peer_ccm() {
  local version; version=$(cat "$here/peer-ccm/main.go" "$here/peer-ccm/go.mod" "$here/peer-ccm/go.sum" | sha256sum | cut -c1-16)
  fresh peer-ccm "$version" && return 0
  grep -q "k8s.io/cloud-provider v0.${K8S_VERSION#v1.}\$" "$here/peer-ccm/go.mod" \
    || { log "tests/env/peer-ccm/go.mod must require k8s.io/cloud-provider v0.${K8S_VERSION#v1.}"; return 1; }
  (cd "$here/peer-ccm" && GOFLAGS=-mod=readonly go build -trimpath -ldflags "-s -w" -o "$BIN/peer-ccm" .)
  stamp peer-ccm "$version"
}

# Every step, in order: name and command. `install.sh NAME...` runs only the named steps.
STEPS=(
  "apt-packages install_apt_packages"
  "etcd install_etcd"
  "kubernetes install_kubernetes"
  "csi-sanity install_go_tool $CSI_SANITY_MODULE $CSI_SANITY_VERSION cmd/csi-sanity"
  "csi-resizer install_go_tool $CSI_RESIZER_MODULE $CSI_RESIZER_VERSION cmd/csi-resizer"
  "csi-provisioner install_sidecar $CSI_PROVISIONER_MODULE $CSI_PROVISIONER_VERSION csi-provisioner"
  "csi-attacher install_sidecar $CSI_ATTACHER_MODULE $CSI_ATTACHER_VERSION csi-attacher"
  "helm install_go_tool $HELM_MODULE $HELM_VERSION cmd/helm"
  "containerd install_containerd"
  "csi-node-driver-registrar install_from_shared csi-sidecars node-driver-registrar $NODE_DRIVER_REGISTRAR_VERSION csi-node-driver-registrar"
  "livenessprobe install_from_shared csi-sidecars livenessprobe $LIVENESSPROBE_VERSION livenessprobe"
  "pause install_pause"
  "e2e-test install_e2e_test"
  "ginkgo install_go_tool $GINKGO_MODULE $GINKGO_VERSION ginkgo"
  "cluster-autoscaler install_cluster_autoscaler"
  "kwok install_kwok"
  "promtool install_promtool"
  "registry install_go_tool $DISTRIBUTION_MODULE $DISTRIBUTION_VERSION cmd/registry"
  "kops-template install_kops_template"
  "peer-ccm install_peer_ccm"
)

main() {
  local start=$SECONDS entry name
  for entry in "${STEPS[@]}"; do
    read -r -a cmd <<<"$entry"
    name=${cmd[0]}
    if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then continue; fi
    step "${cmd[@]}"
  done
  log "all components in $BIN ($((SECONDS - start)) s)"
  echo "$BIN"
}
main "$@"
