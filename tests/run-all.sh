#!/usr/bin/env bash
# The project's test command: builds the test control plane and node tier (cached), brings the
# control plane up, runs format and lint checks, builds the images (the in-cluster tier runs
# them), runs the unit, e2e and in-cluster tests, and always tears the environment down.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
start=$SECONDS
# Free disk, said up front: a cold run needs about 25 GB (tools 13, cargo target 8, images and the
# node's containerd 3); when it fails for lack of space, this line is where to look first.
echo "[run-all] free disk: $(df -h --output=avail "$root" | tail -1 | tr -d ' ') at $root, $(df -h --output=avail /tmp | tail -1 | tr -d ' ') at /tmp"
bash tests/env/install.sh | grep '^\[install\]'
echo "[run-all] test environment installed ($((SECONDS - start)) s)"
# An environment of its own (directory and ports), so a developer's running one is untouched.
export TESTENV_DIR=${TESTENV_DIR:-/tmp/elemento-testenv-$$}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export TESTENV_ETCD_PORT=${TESTENV_ETCD_PORT:-$(free_port)} TESTENV_ETCD_PEER_PORT=${TESTENV_ETCD_PEER_PORT:-$(free_port)} TESTENV_APISERVER_PORT=${TESTENV_APISERVER_PORT:-$(free_port)}
trap 'bash tests/env/down.sh' EXIT
bash tests/env/up.sh >/dev/null
echo "[run-all] control plane up ($((SECONDS - start)) s)"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "[run-all] fmt and clippy clean ($((SECONDS - start)) s)"
cargo build --workspace --bins --quiet
# The images: static release build, mmdebstrap rootfs, buildah, checks of the result. The
# in-cluster tier and the run command's test import them into the test node's containerd.
bash images/build.sh
echo "[run-all] images built and checked ($((SECONDS - start)) s)"
cargo test --workspace --no-fail-fast "$@"
# docs/reliability.md is generated from what the reliability tests recorded in this run.
cargo run -q -p elemento-e2e --bin reliability-report
echo "[run-all] done ($((SECONDS - start)) s)"
