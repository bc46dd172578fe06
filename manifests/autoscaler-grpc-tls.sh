#!/usr/bin/env bash
# Prints the Secret of the autoscaler's gRPC link for a plain-manifest install: a CA made here
# (its key is not kept), the provider's server certificate for 127.0.0.1 and localhost, and the
# cluster-autoscaler's client certificate, each valid DAYS days (default 3650).
#   bash manifests/autoscaler-grpc-tls.sh | kubectl apply -f -
# The Helm chart makes the same Secret itself (grpc.tls.existingSecret empty).
set -euo pipefail
days=${DAYS:-3650} name=${SECRET_NAME:-elemento-autoscaler-grpc-tls} ns=${NAMESPACE:-kube-system}
d=$(mktemp -d); trap 'rm -rf "$d"' EXIT
cd "$d"
q() { openssl "$@" 2>/dev/null; }
q req -x509 -newkey rsa:2048 -nodes -days "$days" -subj "/CN=elemento-autoscaler-grpc-ca" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" -keyout ca.key -out ca.crt
cert() { # name subject extensions
  q req -newkey rsa:2048 -nodes -subj "/CN=$2" -keyout "$1.key" -out "$1.csr"
  printf '%s\n' "$3" > "$1.ext"
  q x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" -extfile "$1.ext" -out "$1.crt"
}
cert server localhost "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth
keyUsage=critical,digitalSignature,keyEncipherment"
cert client cluster-autoscaler "extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature,keyEncipherment"
b64() { base64 -w0 < "$1"; }
cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: $name
  namespace: $ns
type: Opaque
data:
  ca.crt: $(b64 ca.crt)
  server.crt: $(b64 server.crt)
  server.key: $(b64 server.key)
  client.crt: $(b64 client.crt)
  client.key: $(b64 client.key)
YAML
