#!/usr/bin/env bash
# Builds the four images as OCI archives under target/images/ with buildah (vfs storage, no
# `buildah run`): elemento-cloud-controller-manager, elemento-csi-driver and
# elemento-cluster-autoscaler-provider FROM scratch with a statically linked binary;
# elemento-csi-driver-node on a minimal Debian rootfs made by mmdebstrap.
# Prints the archive sizes. Needs root (mmdebstrap) and the Debian package mirror.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=$root/target/images; ctx=$out/context
version=$(awk -F'"' '/^version/ {print $2; exit}' Cargo.toml)
# The repository the charts reference (their image.repository defaults): the archives carry that
# name, so a node that imports them (tests/env/node-up.sh) runs the charts unchanged.
repository=ghcr.io/elemento-modular-cloud
log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
need=()
for p in buildah mmdebstrap ca-certificates; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
rm -rf "$ctx"; mkdir -p "$ctx"
log "static release build"
RUSTFLAGS="-C target-feature=+crt-static" cargo build -q --release --target x86_64-unknown-linux-gnu \
  -p elemento-cloud-controller-manager -p elemento-csi-driver -p elemento-cluster-autoscaler-provider
bindir=target/x86_64-unknown-linux-gnu/release
scratch=(elemento-cloud-controller-manager elemento-csi-driver elemento-cluster-autoscaler-provider)
for b in "${scratch[@]}"; do
  file "$bindir/$b" | grep -q "static" || { log "$b is not statically linked"; exit 1; }
  cp "$bindir/$b" "$ctx/"
done
cp /etc/ssl/certs/ca-certificates.crt "$ctx/"
echo "nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin" > "$ctx/passwd"
rootfs=$root/target/image-rootfs/rootfs.tar   # cached apart: $out holds only image archives
mkdir -p "$(dirname "$rootfs")"
if [ ! -s "$rootfs" ]; then
  log "mmdebstrap node rootfs"
  mmdebstrap --quiet --variant=essential --mode=root \
    --include=e2fsprogs,xfsprogs,btrfs-progs,util-linux,mount,cryptsetup-bin \
    --dpkgopt='path-exclude=/usr/share/{doc,man,locale,info}/*' \
    bookworm "$rootfs"
fi
cp "$rootfs" "$ctx/rootfs.tar"
# Unchanged inputs (binaries, Containerfiles, rootfs, this script): the archives are current.
stamp=$( (cd "$ctx" && sha256sum "${scratch[@]}" rootfs.tar) | sha256sum | cut -c1-16)
stamp="$stamp-$(cat images/Containerfile.* "$0" | sha256sum | cut -c1-16)"
if [ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ] \
   && [ -s "$out/elemento-cloud-controller-manager.tar" ] && [ -s "$out/elemento-csi-driver.tar" ] \
   && [ -s "$out/elemento-cluster-autoscaler-provider.tar" ] && [ -s "$out/elemento-csi-driver-node.tar" ]; then
  log "images are current (inputs unchanged)"
  exit 0
fi
rm -f "$out/stamp"
B=(buildah --storage-driver vfs)
build() { # image containerfile [build-arg]
  local image=$1 file=$2; shift 2
  log "buildah $image"
  "${B[@]}" bud --quiet --format oci -f "images/$file" "$@" -t "localhost/$image:$version" "$ctx" >/dev/null
  rm -f "$out/$image.tar"
  "${B[@]}" push --quiet "localhost/$image:$version" "oci-archive:$out/$image.tar:$repository/$image:$version" >/dev/null
  "${B[@]}" rmi "localhost/$image:$version" >/dev/null 2>&1 || true
}
for b in "${scratch[@]}"; do build "$b" Containerfile.scratch --build-arg BINARY="$b"; done
build elemento-csi-driver-node Containerfile.node
# Check what was built: user, entrypoint, and (node) the tools the driver calls.
check() { # image expected-user files...
  local image=$1 user=$2; shift 2
  local c mnt
  c=$("${B[@]}" from --quiet "oci-archive:$out/$image.tar")
  mnt=$("${B[@]}" mount "$c")
  [ "$("${B[@]}" inspect --format '{{.OCIv1.Config.User}}' "$c")" = "$user" ] || { log "$image: user is not $user"; exit 1; }
  for f in "$@"; do [ -e "$mnt$f" ] || { log "$image: $f is missing"; exit 1; }; done
  "$mnt/usr/local/bin/${BIN_IN[$image]}" --version >/dev/null || { log "$image: binary does not run"; exit 1; }
  "${B[@]}" umount "$c" >/dev/null; "${B[@]}" rm "$c" >/dev/null
}
declare -A BIN_IN=([elemento-cloud-controller-manager]=app [elemento-csi-driver]=app [elemento-cluster-autoscaler-provider]=app [elemento-csi-driver-node]=elemento-csi-driver)
for b in "${scratch[@]}"; do check "$b" 65532:65532 /etc/ssl/certs/ca-certificates.crt /usr/local/bin/app; done
check elemento-csi-driver-node "" /usr/sbin/mkfs.ext4 /usr/sbin/mkfs.xfs /usr/sbin/mkfs.btrfs /usr/bin/btrfs /usr/sbin/blkid /usr/bin/mount /usr/sbin/resize2fs /usr/sbin/xfs_growfs /usr/sbin/blockdev /usr/sbin/cryptsetup
for i in "${scratch[@]}" elemento-csi-driver-node; do
  printf '%-42s %s\n' "$i.tar" "$(du -h "$out/$i.tar" | cut -f1)"
done
echo "$stamp" > "$out/stamp"
