#!/usr/bin/env bash
# Builds the images the test node runs besides the project's own (images/build.sh), as OCI
# archives in $TESTENV_CACHE/images, tagged exactly as the charts and tests reference them so
# that containerd finds them without a registry: the pod sandbox (pause), the CSI sidecars, and a
# busybox for test applications. FROM scratch with buildah (vfs storage; `buildah run` does not
# work here). Cached: an archive is rebuilt only when its binary changed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/versions.env"
CACHE=${TESTENV_CACHE:-$HOME/.cache/elemento-testenv}
BIN=${TESTENV_BIN:-$CACHE/bin}
OUT=$CACHE/images
mkdir -p "$OUT" "$CACHE/buildah"
B=(buildah --root "$CACHE/buildah/root" --runroot "$CACHE/buildah/run" --storage-driver vfs)
log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# The image's stamp: the content it is made of.
fresh() { [ -s "$OUT/$1.tar" ] && [ "$(cat "$OUT/$1.stamp" 2>/dev/null)" = "$2" ]; }

# Commits working container $1 as $3 and writes it to $OUT/$2.tar with its stamp.
save() { # container archive-name image-ref stamp
  local c=$1 name=$2 ref=$3 stamp=$4
  "${B[@]}" commit --quiet --format oci "$c" "$ref" >/dev/null
  "${B[@]}" rm "$c" >/dev/null
  rm -f "$OUT/$name.tar"
  "${B[@]}" push --quiet "$ref" "oci-archive:$OUT/$name.tar:$ref"
  "${B[@]}" rmi "$ref" >/dev/null 2>&1 || true
  echo "$stamp" > "$OUT/$name.stamp"
  log "$ref"
}

scratch_image() { # archive-name image-ref binary [user]
  local name=$1 ref=$2 binary=$3 user=${4:-} stamp c
  stamp="$ref $(sha256sum "$binary" | cut -c1-16) $user"
  fresh "$name" "$stamp" && return 0
  c=$("${B[@]}" from scratch)
  "${B[@]}" add "$c" "$binary" "/$(basename "$binary")" >/dev/null
  "${B[@]}" config --entrypoint "[\"/$(basename "$binary")\"]" ${user:+--user "$user"} "$c"
  save "$c" "$name" "$ref" "$stamp"
}

busybox_image() { # archive-name image-ref
  local name=$1 ref=$2 stamp c root
  stamp="$ref $(sha256sum /bin/busybox | cut -c1-16)"
  fresh "$name" "$stamp" && return 0
  root=$(mktemp -d); trap 'rm -rf "$root"' RETURN
  mkdir -p "$root/bin" "$root/etc" "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$root/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' > "$root/etc/group"
  c=$("${B[@]}" from scratch)
  "${B[@]}" add "$c" "$root/" / >/dev/null
  "${B[@]}" config --env PATH=/bin --cmd '["/bin/sh"]' "$c"
  save "$c" "$name" "$ref" "$stamp"
}

# The charts must reference exactly these tags (one pin, in versions.env).
for ref in "$SIDECAR_REGISTRY/csi-provisioner:$CSI_PROVISIONER_VERSION" "$SIDECAR_REGISTRY/csi-attacher:$CSI_ATTACHER_VERSION" \
           "$SIDECAR_REGISTRY/csi-resizer:$CSI_RESIZER_VERSION" "$SIDECAR_REGISTRY/livenessprobe:$LIVENESSPROBE_VERSION" \
           "$SIDECAR_REGISTRY/csi-node-driver-registrar:$NODE_DRIVER_REGISTRAR_VERSION"; do
  grep -qF "image: $ref}" "$here/../../charts/elemento-csi-driver/values.yaml" \
    || { log "charts/elemento-csi-driver/values.yaml does not reference $ref (tests/env/versions.env)"; exit 1; }
done
scratch_image pause "$PAUSE_IMAGE" "$BIN/pause" 65535:65535
scratch_image csi-provisioner "$SIDECAR_REGISTRY/csi-provisioner:$CSI_PROVISIONER_VERSION" "$BIN/csi-provisioner"
scratch_image csi-attacher "$SIDECAR_REGISTRY/csi-attacher:$CSI_ATTACHER_VERSION" "$BIN/csi-attacher"
scratch_image csi-resizer "$SIDECAR_REGISTRY/csi-resizer:$CSI_RESIZER_VERSION" "$BIN/csi-resizer"
scratch_image livenessprobe "$SIDECAR_REGISTRY/livenessprobe:$LIVENESSPROBE_VERSION" "$BIN/livenessprobe"
scratch_image csi-node-driver-registrar "$SIDECAR_REGISTRY/csi-node-driver-registrar:$NODE_DRIVER_REGISTRAR_VERSION" "$BIN/csi-node-driver-registrar"
busybox_image busybox "$TEST_BUSYBOX_IMAGE"
echo "$OUT"
