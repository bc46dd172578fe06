#!/usr/bin/env bash
# Builds the images the test node runs besides the project's own (images/build.sh), as OCI
# archives in $TESTENV_CACHE/images, tagged exactly as the charts and tests reference them so
# that containerd finds them without a registry: the pod sandbox (pause), the CSI sidecars, the
# cluster-autoscaler, and a busybox for test applications, and the storage suite's images. FROM scratch with buildah (vfs storage; `buildah run` does not
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

# Debian's busybox-static as /bin/sh and the usual tools; with a binary, that binary is added as
# the entrypoint (agnhost's upstream image is also a shell plus /agnhost). GNU_TOOLS (names of
# this machine's Debian binaries) replace busybox's applets of the same name, with the glibc
# libraries they load: for tests that use GNU options (dd oflag=nocache), with dash as /bin/sh.
busybox_image() { # archive-name image-ref [binary]
  local name=$1 ref=$2 binary=${3:-} stamp c root t lib
  stamp="$ref $(sha256sum /bin/busybox | cut -c1-16)${binary:+ $(sha256sum "$binary" | cut -c1-16)} ${GNU_TOOLS:-}"
  fresh "$name" "$stamp" && return 0
  root=$(mktemp -d); trap 'rm -rf "$root"' RETURN
  mkdir -p "$root/bin" "$root/etc" "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$root/bin/$a"; done
  for t in ${GNU_TOOLS:-}; do
    rm -f "$root/bin/$t"; cp "$(command -v "$t")" "$root/bin/$t"
    for lib in $(ldd "$(command -v "$t")" | grep -o '/[^ ]*'); do
      mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"
    done
  done
  # busybox's own sh runs its applets before PATH: a GNU tool needs a shell that is not busybox.
  if [[ " ${GNU_TOOLS:-} " == *" dash "* ]]; then ln -sf dash "$root/bin/sh"; fi
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' > "$root/etc/group"
  c=$("${B[@]}" from scratch)
  "${B[@]}" add "$c" "$root/" / >/dev/null
  if [ -n "$binary" ]; then
    "${B[@]}" add "$c" "$binary" "/$(basename "$binary")" >/dev/null
    "${B[@]}" config --env PATH=/bin --entrypoint "[\"/$(basename "$binary")\"]" "$c"
  else
    "${B[@]}" config --env PATH=/bin --cmd '["/bin/sh"]' "$c"
  fi
  save "$c" "$name" "$ref" "$stamp"
}

# The charts must reference exactly these tags (one pin, in versions.env).
for ref in "$SIDECAR_REGISTRY/csi-provisioner:$CSI_PROVISIONER_VERSION" "$SIDECAR_REGISTRY/csi-attacher:$CSI_ATTACHER_VERSION" \
           "$SIDECAR_REGISTRY/csi-resizer:$CSI_RESIZER_VERSION" "$SIDECAR_REGISTRY/livenessprobe:$LIVENESSPROBE_VERSION" \
           "$SIDECAR_REGISTRY/csi-node-driver-registrar:$NODE_DRIVER_REGISTRAR_VERSION"; do
  grep -qF "image: $ref}" "$here/../../charts/elemento-csi-driver/values.yaml" \
    || { log "charts/elemento-csi-driver/values.yaml does not reference $ref (tests/env/versions.env)"; exit 1; }
done
# The autoscaler chart's upstream container, built from the cluster-autoscaler of install.sh.
ca_repo=registry.k8s.io/autoscaling/cluster-autoscaler ca_tag=v$CLUSTER_AUTOSCALER_VERSION
ca_values=$here/../../charts/elemento-cluster-autoscaler/values.yaml
grep -qF "repository: $ca_repo" "$ca_values" && grep -qF "tag: $ca_tag" "$ca_values" \
  || { log "charts/elemento-cluster-autoscaler/values.yaml does not reference $ca_repo:$ca_tag (tests/env/versions.env)"; exit 1; }
scratch_image pause "$PAUSE_IMAGE" "$BIN/pause" 65535:65535
scratch_image cluster-autoscaler "$ca_repo:$ca_tag" "$BIN/cluster-autoscaler" 65532:65532
scratch_image csi-provisioner "$SIDECAR_REGISTRY/csi-provisioner:$CSI_PROVISIONER_VERSION" "$BIN/csi-provisioner"
scratch_image csi-attacher "$SIDECAR_REGISTRY/csi-attacher:$CSI_ATTACHER_VERSION" "$BIN/csi-attacher"
scratch_image csi-resizer "$SIDECAR_REGISTRY/csi-resizer:$CSI_RESIZER_VERSION" "$BIN/csi-resizer"
scratch_image livenessprobe "$SIDECAR_REGISTRY/livenessprobe:$LIVENESSPROBE_VERSION" "$BIN/livenessprobe"
scratch_image csi-node-driver-registrar "$SIDECAR_REGISTRY/csi-node-driver-registrar:$NODE_DRIVER_REGISTRAR_VERSION" "$BIN/csi-node-driver-registrar"
busybox_image busybox "$TEST_BUSYBOX_IMAGE"
# The Kubernetes storage suite's images (tests/storage-e2e), tagged as e2e.test names them (its
# --list-images must contain each). The storage tests use busybox, nginx and glibc-dns-testing
# only as a shell running the test's own command, so those three are busybox-static; the
# glibc-dns-testing one (a Debian image upstream) has dash and GNU dd, whose oflag=nocache the
# block tests use. agnhost is built from the suite's own tag.
e2e_images=("$E2E_REGISTRY/busybox:$E2E_BUSYBOX_TAG" "$E2E_REGISTRY/nginx:$E2E_NGINX_TAG"
            "$E2E_REGISTRY/glibc-dns-testing:$E2E_GLIBC_DNS_TESTING_TAG" "$E2E_REGISTRY/agnhost:$E2E_AGNHOST_TAG")
listed=$("$BIN/e2e.test" --list-images 2>/dev/null) || { log "$BIN/e2e.test --list-images failed (tests/env/install.sh e2e-test)"; exit 1; }
for ref in "${e2e_images[@]}"; do
  grep -qxF "$ref" <<<"$listed" || { log "e2e.test does not use $ref: update the E2E_* tags in tests/env/versions.env"; exit 1; }
done
busybox_image e2e-busybox "${e2e_images[0]}"
busybox_image e2e-nginx "${e2e_images[1]}"
GNU_TOOLS="dash dd" busybox_image e2e-glibc-dns-testing "${e2e_images[2]}"
busybox_image e2e-agnhost "${e2e_images[3]}" "$BIN/agnhost"
echo "$OUT"
