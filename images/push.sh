#!/usr/bin/env bash
# Pushes the images images/build.sh made (target/images/*.tar) to a registry of your choice, each
# as REGISTRY/<image>:<version>, the version being the workspace's (Cargo.toml), which is also every
# chart's appVersion and so the tag the charts pull by default: the one place versions are pinned.
#   images/push.sh REGISTRY [skopeo copy options...]
#   images/push.sh registry.example.com/elemento --dest-creds "$USER:$TOKEN"
#   images/push.sh 127.0.0.1:5000 --dest-tls-verify=false      # a plain-HTTP registry
# Prints, on stdout, the helm --set flags that point each chart at the pushed images.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 1 ] && [ -n "$1" ] && [[ "$1" != -* ]] || {
  echo "usage: images/push.sh REGISTRY[/PATH] [skopeo copy options...]" >&2; exit 2; }
registry=${1%/}; shift
version=$(awk -F'"' '/^version/ {print $2; exit}' "$root/Cargo.toml")
images=(elemento-cloud-controller-manager elemento-csi-driver elemento-csi-driver-node elemento-cluster-autoscaler-provider)
command -v skopeo >/dev/null || { echo "images/push.sh: skopeo is needed (apt-get install skopeo)" >&2; exit 1; }
for i in "${images[@]}"; do
  [ -s "$root/target/images/$i.tar" ] || { echo "images/push.sh: missing target/images/$i.tar: run images/build.sh first" >&2; exit 1; }
done
for i in "${images[@]}"; do
  echo "[push] $registry/$i:$version" >&2
  skopeo copy --quiet "$@" "oci-archive:$root/target/images/$i.tar" "docker://$registry/$i:$version" >&2
done
cat <<FLAGS
# elemento-cloud-controller-manager
--set image.repository=$registry/elemento-cloud-controller-manager
# elemento-csi-driver
--set image.repository=$registry/elemento-csi-driver --set nodeImage.repository=$registry/elemento-csi-driver-node
# elemento-cluster-autoscaler
--set image.repository=$registry/elemento-cluster-autoscaler-provider
FLAGS
