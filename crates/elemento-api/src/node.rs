//! The typed view of a Kubernetes Node that the project's components read: one definition for
//! the CCM's controllers, the CSI node plugin, the tests and the bench (and the autoscaler's
//! template nodes), next to the taint and label names it is read with.
//!
//! Taints and addresses stay the Kubernetes types (`Taint`, `NodeAddress`), so what a decision
//! computes is what a patch writes, with no untyped JSON in between.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

pub use k8s_openapi::api::core::v1::{Node, NodeAddress, Taint};

use crate::provider_id::{self, ProviderId};
use crate::taints;

/// Node address types (`status.addresses[].type`).
pub const INTERNAL_IP: &str = "InternalIP";
pub const EXTERNAL_IP: &str = "ExternalIP";
pub const HOSTNAME: &str = "Hostname";

/// What the project reads of a Node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeView {
    pub name: String,
    pub provider_id: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub addresses: Vec<NodeAddress>,
    pub taints: Vec<Taint>,
    /// The Ready condition is True.
    pub ready: bool,
    pub resource_version: Option<String>,
    /// Has a deletion timestamp.
    pub deleting: bool,
}

impl NodeView {
    pub fn from_node(node: &Node) -> Self {
        let spec = node.spec.as_ref();
        let status = node.status.as_ref();
        Self {
            name: node.metadata.name.clone().unwrap_or_default(),
            provider_id: spec.and_then(|s| s.provider_id.clone()),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            annotations: node.metadata.annotations.clone().unwrap_or_default(),
            addresses: status.and_then(|s| s.addresses.clone()).unwrap_or_default(),
            taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
            ready: status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                .is_some_and(|c| c.status == "True"),
            resource_version: node.metadata.resource_version.clone(),
            deleting: node.metadata.deletion_timestamp.is_some(),
        }
    }

    /// The providerID, parsed: ours, another cloud's, or unset.
    pub fn provider(&self) -> ProviderId {
        provider_id::parse(self.provider_id.as_deref())
    }

    pub fn has_taint(&self, key: &str) -> bool {
        self.taints.iter().any(|t| t.key == key)
    }

    /// Still carries the kubelet's uninitialized taint (`--cloud-provider=external`).
    pub fn is_uninitialized(&self) -> bool {
        self.has_taint(taints::UNINITIALIZED)
    }

    /// The Node's IPv4 addresses, InternalIP ones then ExternalIP ones (the kubelet may report
    /// either).
    pub fn ips(&self) -> Vec<Ipv4Addr> {
        [INTERNAL_IP, EXTERNAL_IP]
            .iter()
            .flat_map(|kind| self.addresses.iter().filter(move |a| a.type_ == *kind))
            .filter_map(|a| a.address.parse().ok())
            .collect()
    }
}

/// A Node address.
pub fn address(type_: &str, address: impl Into<String>) -> NodeAddress {
    NodeAddress {
        type_: type_.into(),
        address: address.into(),
    }
}

/// A taint without a timestamp.
pub fn taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
    Taint {
        key: key.into(),
        value: value.map(String::from),
        effect: effect.into(),
        time_added: None,
    }
}

/// The taint the kubelet puts on a Node it registers with `--cloud-provider=external`.
pub fn uninitialized_taint() -> Taint {
    taint(taints::UNINITIALIZED, Some("true"), "NoSchedule")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(json: &str) -> Node {
        serde_json::from_str(json).expect("node")
    }

    #[test]
    fn reads_what_the_components_need() {
        let n = node(
            r#"{"metadata": {"name": "n1", "resourceVersion": "7", "labels": {"a": "b"}},
                "spec": {"providerID": "elemento://vm-1",
                         "taints": [{"key": "node.cloudprovider.kubernetes.io/uninitialized",
                                     "value": "true", "effect": "NoSchedule"}]},
                "status": {"addresses": [{"type": "Hostname", "address": "n1"},
                                         {"type": "ExternalIP", "address": "51.15.1.2"},
                                         {"type": "InternalIP", "address": "10.0.0.1"}],
                           "conditions": [{"type": "Ready", "status": "True"}]}}"#,
        );
        let v = NodeView::from_node(&n);
        assert_eq!(v.name, "n1");
        assert_eq!(v.provider(), ProviderId::Elemento("vm-1".into()));
        assert!(v.is_uninitialized());
        assert_eq!(v.taints, vec![uninitialized_taint()]);
        assert!(v.ready);
        assert_eq!(v.resource_version.as_deref(), Some("7"));
        assert_eq!(
            v.ips(),
            vec![
                "10.0.0.1".parse::<Ipv4Addr>().unwrap(),
                "51.15.1.2".parse().unwrap()
            ],
            "InternalIP first; the hostname is not an IP"
        );
        let bare = NodeView::from_node(&node(r#"{"metadata": {"name": "n2"}}"#));
        assert!(!bare.ready && !bare.is_uninitialized() && bare.ips().is_empty());
        assert_eq!(bare.provider(), ProviderId::Unset);
    }
}
