# Shared names of the node tier (node-up.sh, node-down.sh): the fixed places one kubelet per
# machine uses, and the host settings it changes.
NODE_STATE=/run/elemento-testenv-node           # owner, pids, saved sysctls
NODE_KUBELET_DIR=/var/lib/kubelet               # the charts' default kubeletDir
NODE_CONTAINERD_STATE=/run/containerd           # the shim and runc use fixed paths under it anyway
NODE_BRIDGE=etvbr0
NODE_POD_CIDR=10.244.0.0/24
NODE_NAT_CHAIN=ELEMENTO-TESTENV-SVC
# Changed by the kubelet (overcommit, panic), the CNI bridge (ip_forward) and our kube-proxy
# stand-in (route_localnet, so pod-network traffic may be DNATed to the loopback API server).
NODE_SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.ip_forward net.ipv4.conf.all.route_localnet)
# Paths the kubelet and containerd write whatever their flags say.
NODE_FIXED_PATHS=(/var/lib/kubelet /var/log/containers /var/log/pods /run/containerd /var/lib/cni /run/nri)
