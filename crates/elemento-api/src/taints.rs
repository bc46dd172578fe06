//! The Node taints the project reads or writes: one definition for the CCM, the tests, the bench
//! (and the autoscaler's template nodes).

/// Set by the kubelet with `--cloud-provider=external`; the CCM removes it once the Node is
/// initialized.
pub const UNINITIALIZED: &str = "node.cloudprovider.kubernetes.io/uninitialized";
/// Put by the CCM on a Node whose VM is shut off.
pub const SHUTDOWN: &str = "node.cloudprovider.kubernetes.io/shutdown";
/// Put by the CCM (when enabled) on a NotReady Node whose VM has been off a while, so stateful
/// pods move (non-graceful node shutdown).
pub const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";
