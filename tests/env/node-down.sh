#!/usr/bin/env bash
# Undoes everything node-up.sh and the kubelet did to this machine, in an order that works after
# a crash too: pods' processes, kubelet, containerd and its shims stopped; mounts under the
# kubelet and containerd directories unmounted; loop devices of the simulator's files detached;
# the pod cgroups, the CNI bridge and the iptables chains removed; sysctls restored; the fixed
# paths deleted. Idempotent; safe to run when nothing is there.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/node-common.sh"
log() { printf '[node-down %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
[ "$(id -u)" -eq 0 ] || { log "needs root"; exit 1; }

stop_pid_file() {
  local f=$1 pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$f"
}
# Every process in a pod cgroup (the kubelet leaves them running), then the kubelet and containerd.
kill_pods() {
  local procs
  procs=$(find /sys/fs/cgroup/*/kubepods -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
  [ -n "$procs" ] && kill -KILL $procs 2>/dev/null
  return 0
}
stop_pid_file "$NODE_STATE/kubelet.pid"
kill_pods
stop_pid_file "$NODE_STATE/containerd.pid"
pkill -KILL -f 'containerd-shim-runc-v2' 2>/dev/null
kill_pods

# Mounts (deepest first): the kubelet's pod volumes and its self bind mount, containerd's rootfs
# and shm mounts, the network namespaces.
for _ in 1 2 3; do
  mounts=$(awk '{print $5}' /proc/self/mountinfo | grep -E "^($NODE_KUBELET_DIR|$NODE_CONTAINERD_STATE|/run/netns|/var/run/netns|/tmp/elemento-[^/]*/node)(/|$)" | sort -r)
  [ -z "$mounts" ] && break
  for m in $mounts; do umount -l "$m" 2>/dev/null; done
done

# Loop devices whose backing files belong to a test simulator (host-device mode) and the by-id
# links pointing at them.
owner=$(cat "$NODE_STATE/owner" 2>/dev/null || true)
if [ -n "$owner" ]; then
  losetup -l -n -O NAME,BACK-FILE 2>/dev/null | while read -r dev file; do
    case "$file" in "$owner"/*) losetup -d "$dev" 2>/dev/null;; esac
  done
fi
for l in /dev/disk/by-id/virtio-*; do
  [ -L "$l" ] || continue
  t=$(readlink "$l")
  case "$t" in /dev/loop*) [ -e "/sys/block/$(basename "$t")/loop/backing_file" ] || rm -f "$l";; esac
done
rmdir /dev/disk/by-id /dev/disk 2>/dev/null

# Pod cgroups in every hierarchy (leaves first).
for h in /sys/fs/cgroup/*/; do
  [ -d "$h/kubepods" ] && find "$h/kubepods" -depth -type d -exec rmdir {} \; 2>/dev/null
done

ip link del "$NODE_BRIDGE" 2>/dev/null
for table in filter nat mangle; do
  for chain in OUTPUT PREROUTING INPUT FORWARD POSTROUTING; do
    while iptables -t "$table" -S "$chain" 2>/dev/null | grep -qE -- "-j (KUBE-|CNI-|$NODE_NAT_CHAIN)"; do
      rule=$(iptables -t "$table" -S "$chain" | grep -m1 -E -- "-j (KUBE-|CNI-|$NODE_NAT_CHAIN)" | sed "s/^-A $chain //")
      eval iptables -t "$table" -D "$chain" $rule 2>/dev/null || break
    done
  done
  for chain in $(iptables -t "$table" -S 2>/dev/null | awk '$1=="-N" && ($2 ~ /^(KUBE-|CNI-)/ || $2=="'"$NODE_NAT_CHAIN"'") {print $2}'); do
    iptables -t "$table" -F "$chain" 2>/dev/null
  done
  for chain in $(iptables -t "$table" -S 2>/dev/null | awk '$1=="-N" && ($2 ~ /^(KUBE-|CNI-)/ || $2=="'"$NODE_NAT_CHAIN"'") {print $2}'); do
    iptables -t "$table" -X "$chain" 2>/dev/null
  done
done

if [ -f "$NODE_STATE/sysctl.saved" ]; then
  while IFS='=' read -r k v; do sysctl -qw "$k=$v" 2>/dev/null; done < "$NODE_STATE/sysctl.saved"
fi
# --one-file-system: a mount that would not go away is never descended into.
for p in "${NODE_FIXED_PATHS[@]}"; do rm -rf --one-file-system "$p" 2>/dev/null; done
rmdir /run/netns 2>/dev/null
rm -rf "$NODE_STATE"
log "node state removed, host restored"
