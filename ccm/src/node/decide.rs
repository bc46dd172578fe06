//! Pure node-initialization logic: which VM a Node is, and what the Node must look like.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use elemento_api::types::{Template, Vm};
use k8s_openapi::api::core::v1::NodeStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::inventory::Vms;
pub use elemento_api::node::NodeView;
use elemento_api::node::{EXTERNAL_IP, HOSTNAME, INTERNAL_IP, Node, NodeAddress, Taint, address};
use elemento_api::provider_id::{self, ProviderId};

pub use elemento_api::taints::UNINITIALIZED as UNINITIALIZED_TAINT;
pub use elemento_api::topology::label_value;
use elemento_api::topology::{
    self, LABEL_HOST, LABEL_INSTANCE_TYPE, LABEL_INSTANCE_TYPE_BETA, LABEL_PROVIDER, LABEL_REGION,
    LABEL_ZONE,
};

/// How a Node was matched to a VM, or why it was not.
#[derive(Debug, Clone, PartialEq)]
pub enum VmMatch<'a> {
    ByProviderId(&'a Vm),
    ByName(&'a Vm),
    ByIp(&'a Vm),
    /// The Node belongs to another cloud: never touch it.
    Foreign(String),
    /// Nothing matched; the text says what was tried (for the Warning event).
    NotFound(String),
    /// More than one VM has the Node's name or IP: refusing to guess.
    Ambiguous(String),
}

/// providerID first, then VM name == Node name, then a Node address == one of the VM's (its
/// address or its private one).
pub fn find_vm<'a>(node: &NodeView, vms: &'a Vms) -> VmMatch<'a> {
    let mut tried = vec![];
    match node.provider() {
        ProviderId::Foreign(p) => return VmMatch::Foreign(p),
        ProviderId::Elemento(id) => {
            return match vms.by_id(&id) {
                Some(v) => VmMatch::ByProviderId(v),
                None => VmMatch::NotFound(format!(
                    "providerID {} (no VM with id {id})",
                    provider_id::format(&id)
                )),
            };
        }
        ProviderId::Unset => tried.push("providerID (unset)".to_string()),
    }
    match vms.named(&node.name).as_slice() {
        [v] => return VmMatch::ByName(v),
        [] => tried.push(format!("VM name {:?}", node.name)),
        many => {
            return VmMatch::Ambiguous(format!(
                "{} VMs are named {:?}: {}",
                many.len(),
                node.name,
                many.iter()
                    .map(|v| v.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let ips = node.ips();
    if ips.is_empty() {
        tried.push("Node address (the Node has none)".into());
    }
    for ip in &ips {
        match vms.with_ip(*ip).as_slice() {
            [v] => return VmMatch::ByIp(v),
            [] => tried.push(format!("Node address {ip}")),
            many => return VmMatch::Ambiguous(format!("{} VMs have the address {ip}", many.len())),
        }
    }
    VmMatch::NotFound(format!(
        "no Elemento VM matches: tried {}",
        tried.join(", ")
    ))
}

/// Template RAM tolerance: status RAM is reported in GB and may be decimal or binary.
const RAM_TOLERANCE: f64 = 0.06;

/// The `node.kubernetes.io/instance-type` value: the Elemento template the VM's slots, RAM and
/// GPUs match (lower case, no spaces: `helium`, `neon`, `argon`, `argon2`, `kripton`), else a
/// stable `custom-<slots>cpu-<MiB>mib[-<n>gpu]`.
pub fn instance_type(vm: &Vm, templates: &[Template]) -> String {
    let matches = |t: &Template| {
        t.slots == vm.slots
            && t.gpus == vm.gpus
            && t.ram_mib > 0
            && (vm.ram_mib as f64 - t.ram_mib as f64).abs() <= t.ram_mib as f64 * RAM_TOLERANCE
    };
    if let Some(t) = templates.iter().find(|t| matches(t)) {
        return topology::instance_type_of_template(&t.name);
    }
    let gpu = if vm.gpus > 0 {
        format!("-{}gpu", vm.gpus)
    } else {
        String::new()
    };
    format!("custom-{}cpu-{}mib{gpu}", vm.slots, vm.ram_mib)
}

fn is_public(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || (o[0] == 100 && (64..128).contains(&o[1]))) // 100.64.0.0/10 shared address space
}

/// The Node's addresses. A VM with a private (VPC) address (§8.3): InternalIP = the private
/// address, ExternalIP = its other one. A VM with one address: InternalIP = it, and ExternalIP =
/// the same when it is public. No address yet (`network_config: null`): Hostname only.
/// Hostname = the Node name.
pub fn addresses(node_name: &str, vm: &Vm) -> Vec<NodeAddress> {
    let mut out = vec![];
    match (vm.private_ipv4, vm.ipv4) {
        (Some(private), public) => {
            out.push(address(INTERNAL_IP, private.to_string()));
            if let Some(p) = public.filter(|p| *p != private) {
                out.push(address(EXTERNAL_IP, p.to_string()));
            }
        }
        (None, Some(ip)) => {
            out.push(address(INTERNAL_IP, ip.to_string()));
            if is_public(ip) {
                out.push(address(EXTERNAL_IP, ip.to_string()));
            }
        }
        (None, None) => {}
    }
    out.push(address(HOSTNAME, node_name));
    out
}

/// Where Nodes are, as the CCM labels them: the configured default region, and the region
/// values of before 0.2 that volumes still refer to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopologyPolicy {
    pub default_region: String,
    /// Legacy region values found in the node affinity of existing PVs of our driver; `None`
    /// when they could not be listed (then a Node's region is never changed, only set).
    pub legacy_regions_in_use: Option<std::collections::BTreeSet<String>>,
}

impl TopologyPolicy {
    /// The region label of a VM's Node: its pre-0.2 value while a volume still refers to it (a
    /// changed value would strand that volume), else the provider's region or the default.
    pub fn region(&self, vm: &Vm) -> String {
        let legacy = topology::legacy_region(vm);
        if self
            .legacy_regions_in_use
            .as_ref()
            .is_some_and(|s| s.contains(&legacy))
        {
            legacy
        } else {
            topology::region(vm, &self.default_region)
        }
    }
}

/// The topology labels of a VM's Node: zone (provider), region, host, provider.
pub fn topology_labels(vm: &Vm, policy: &TopologyPolicy) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert(LABEL_ZONE.into(), topology::zone(vm));
    l.insert(LABEL_REGION.into(), policy.region(vm));
    l.insert(LABEL_PROVIDER.into(), topology::zone(vm));
    if let Some(h) = topology::host(vm) {
        l.insert(LABEL_HOST.into(), h);
    }
    l
}

/// The labels a VM gives its Node.
pub fn labels(
    vm: &Vm,
    templates: &[Template],
    policy: &TopologyPolicy,
) -> BTreeMap<String, String> {
    let mut l = topology_labels(vm, policy);
    let itype = instance_type(vm, templates);
    l.insert(LABEL_INSTANCE_TYPE.into(), itype.clone());
    l.insert(LABEL_INSTANCE_TYPE_BETA.into(), itype);
    l
}

/// What the node controller does with a Node, decided once from what it read.
#[derive(Debug, Clone, PartialEq)]
pub enum NodePlan {
    /// Another cloud's Node, or an initialized one that is up to date (or whose VM the listing
    /// lacks: the lifecycle controller decides about that): nothing to write.
    Leave,
    /// Initialize it as this VM: the status patch, then the main patch.
    Initialize { vm_id: String, patch: InitPatch },
    /// An initialized Node whose addresses or topology labels are out of date: the new ones.
    Refresh {
        addresses: Option<Vec<NodeAddress>>,
        labels: Option<BTreeMap<String, String>>,
    },
    /// No VM, or several, match an uninitialized Node: it keeps its taint and is retried; the note
    /// says what was tried.
    Retry { note: String },
}

/// The plan for a Node, from the VM listing, the templates and the topology policy.
pub fn plan(
    node: &NodeView,
    vms: &Vms,
    templates: &[Template],
    policy: &TopologyPolicy,
) -> NodePlan {
    if node.is_uninitialized() {
        return match find_vm(node, vms) {
            VmMatch::ByProviderId(vm) | VmMatch::ByName(vm) | VmMatch::ByIp(vm) => {
                NodePlan::Initialize {
                    vm_id: vm.id.clone(),
                    patch: init_patch(node, vm, templates, policy),
                }
            }
            VmMatch::Foreign(_) => NodePlan::Leave,
            VmMatch::NotFound(why) | VmMatch::Ambiguous(why) => NodePlan::Retry {
                note: format!(
                    "{why}; the Node keeps the {UNINITIALIZED_TAINT} taint and is retried"
                ),
            },
        };
    }
    let ProviderId::Elemento(id) = node.provider() else {
        return NodePlan::Leave;
    };
    let Some(vm) = vms.by_id(&id) else {
        return NodePlan::Leave;
    };
    match (address_refresh(node, vm), label_refresh(node, vm, policy)) {
        (None, None) => NodePlan::Leave,
        (addresses, labels) => NodePlan::Refresh { addresses, labels },
    }
}

/// The initialization: the addresses (a status patch) and providerID, labels and the taints
/// without the uninitialized one (the main patch). Status and spec are separate writes (each
/// endpoint resets the other's half), and they are sent together: as in the Go framework, whose
/// `syncNode` removes the taint before it writes the addresses, a Node may be schedulable a few
/// milliseconds before its addresses land (the kubelet retries its pods' host IPs until they do);
/// a failed status write is repeated by the address refresh of the initialized Node.
#[derive(Debug, Clone, PartialEq)]
pub struct InitPatch {
    pub addresses: Vec<NodeAddress>,
    pub provider_id: String,
    pub labels: BTreeMap<String, String>,
    /// The taints as read, which the main patch tests before replacing them.
    pub observed_taints: Vec<Taint>,
    pub taints: Vec<Taint>,
    /// The Node has a label map: labels are added one by one, keeping the others.
    pub had_labels: bool,
}

impl InitPatch {
    pub fn status_patch(&self) -> Node {
        addresses_patch(&self.addresses)
    }

    /// A JSON patch guarded by a `test` of the taints as read: a taint added or removed by anyone
    /// else meanwhile fails it (422) and the Node is read again, while the concurrent status
    /// write (which a resourceVersion guard would trip over) does not. providerID needs no guard:
    /// the API server refuses to change one that is set.
    pub fn main_patch(&self) -> Result<json_patch::Patch, serde_json::Error> {
        use json_patch::{AddOperation, PatchOperation, ReplaceOperation, TestOperation};
        use jsonptr::PointerBuf;
        use serde_json::to_value;
        let mut ops = vec![
            PatchOperation::Test(TestOperation {
                path: PointerBuf::from_tokens(["spec", "taints"]),
                value: to_value(&self.observed_taints)?,
            }),
            PatchOperation::Replace(ReplaceOperation {
                path: PointerBuf::from_tokens(["spec", "taints"]),
                value: to_value(&self.taints)?,
            }),
            PatchOperation::Add(AddOperation {
                path: PointerBuf::from_tokens(["spec", "providerID"]),
                value: serde_json::Value::String(self.provider_id.clone()),
            }),
        ];
        if self.had_labels {
            ops.extend(self.labels.iter().map(|(k, v)| {
                PatchOperation::Add(AddOperation {
                    path: PointerBuf::from_tokens(["metadata", "labels", k.as_str()]),
                    value: serde_json::Value::String(v.clone()),
                })
            }));
        } else {
            ops.push(PatchOperation::Add(AddOperation {
                path: PointerBuf::from_tokens(["metadata", "labels"]),
                value: to_value(&self.labels)?,
            }));
        }
        Ok(json_patch::Patch(ops))
    }
}

/// A merge patch of the status subresource setting the addresses.
pub fn addresses_patch(addresses: &[NodeAddress]) -> Node {
    Node {
        status: Some(NodeStatus {
            addresses: Some(addresses.to_vec()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A merge patch setting these labels (others are kept).
pub fn labels_patch(labels: &BTreeMap<String, String>) -> Node {
    Node {
        metadata: ObjectMeta {
            labels: Some(labels.clone()),
            ..Default::default()
        },
        ..Default::default()
    }
}

pub fn init_patch(
    node: &NodeView,
    vm: &Vm,
    templates: &[Template],
    policy: &TopologyPolicy,
) -> InitPatch {
    InitPatch {
        addresses: addresses(&node.name, vm),
        provider_id: provider_id::format(&vm.id),
        labels: labels(vm, templates, policy),
        observed_taints: node.taints.clone(),
        had_labels: !node.labels.is_empty(),
        taints: node
            .taints
            .iter()
            .filter(|t| t.key != UNINITIALIZED_TAINT)
            .cloned()
            .collect(),
    }
}

/// For an initialized Node: the topology labels to write when they differ from what the VM
/// gives (a Node labelled before 0.2 had the host as its zone; a VM may move).
pub fn label_refresh(
    node: &NodeView,
    vm: &Vm,
    policy: &TopologyPolicy,
) -> Option<BTreeMap<String, String>> {
    let mut want = topology_labels(vm, policy);
    if policy.legacy_regions_in_use.is_none() && node.labels.contains_key(LABEL_REGION) {
        want.remove(LABEL_REGION);
    }
    let stale = want.iter().any(|(k, v)| node.labels.get(k) != Some(v));
    stale.then_some(want)
}

/// For an initialized Node: its addresses when they differ from the VM's.
pub fn address_refresh(node: &NodeView, vm: &Vm) -> Option<Vec<NodeAddress>> {
    let want = addresses(&node.name, vm);
    let key = |a: &NodeAddress| (a.type_.clone(), a.address.clone());
    let mut have: Vec<_> = node.addresses.iter().map(key).collect();
    let mut want_sorted: Vec<_> = want.iter().map(key).collect();
    have.sort();
    want_sorted.sort();
    (have != want_sorted).then_some(want)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use elemento_api::node::taint;
    use elemento_api::types::PowerState;

    pub fn vm(id: &str, name: &str, ip: &str) -> Vm {
        Vm {
            id: id.into(),
            name: name.into(),
            server_url: Some("https://atomos-1.local:7777".into()),
            slots: 2,
            ram_mib: 2048,
            gpus: 0,
            ipv4: ip.parse().ok(),
            mac: None,
            provider: None,
            region: None,
            power: PowerState::Running,
            volume_ids: vec![],
            private_ipv4: None,
            vm_tags: vec![],
            disks: vec![],
        }
    }

    fn templates() -> Vec<Template> {
        [
            ("Helium", 1, 512, 0),
            ("Neon", 2, 2048, 0),
            ("Argon", 4, 4096, 1),
            ("Argon 2", 4, 4096, 2),
            ("Kripton", 8, 8192, 1),
        ]
        .into_iter()
        .map(|(n, s, r, g)| Template {
            name: n.into(),
            slots: s,
            ram_mib: r,
            gpus: g,
            ..Default::default()
        })
        .collect()
    }

    fn node(name: &str, pid: Option<&str>, ips: &[&str]) -> NodeView {
        NodeView {
            name: name.into(),
            provider_id: pid.map(String::from),
            addresses: ips.iter().map(|i| address(INTERNAL_IP, *i)).collect(),
            taints: vec![
                elemento_api::node::uninitialized_taint(),
                taint("other", None, "NoExecute"),
            ],
            ..Default::default()
        }
    }

    fn addr(type_: &str, a: &str) -> NodeAddress {
        address(type_, a)
    }

    #[test]
    fn matches_by_provider_id_then_name_then_ip() {
        let vms = Vms::from(vec![
            vm("id-1", "n1", "10.0.0.1"),
            vm("id-2", "n2", "10.0.0.2"),
        ]);
        assert_eq!(
            find_vm(&node("x", Some("elemento://id-2"), &[]), &vms),
            VmMatch::ByProviderId(&vms[1])
        );
        assert_eq!(
            find_vm(&node("n1", None, &[]), &vms),
            VmMatch::ByName(&vms[0])
        );
        assert_eq!(
            find_vm(&node("x", None, &["10.0.0.2"]), &vms),
            VmMatch::ByIp(&vms[1])
        );
        assert!(matches!(
            find_vm(&node("x", Some("aws:///i-1"), &[]), &vms),
            VmMatch::Foreign(_)
        ));
        match find_vm(&node("x", None, &["10.9.9.9"]), &vms) {
            VmMatch::NotFound(why) => assert!(
                why.contains("VM name \"x\"") && why.contains("10.9.9.9"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
        // A providerID naming a missing VM does not fall back to name matching.
        assert!(matches!(
            find_vm(&node("n1", Some("elemento://gone"), &[]), &vms),
            VmMatch::NotFound(_)
        ));
        let dup = Vms::from(vec![
            vm("a", "same", "10.0.0.1"),
            vm("b", "same", "10.0.0.2"),
        ]);
        assert!(matches!(
            find_vm(&node("same", None, &[]), &dup),
            VmMatch::Ambiguous(_)
        ));
    }

    #[test]
    fn instance_types_from_templates_or_custom() {
        let t = templates();
        let mut v = vm("i", "n", "10.0.0.1");
        assert_eq!(instance_type(&v, &t), "neon");
        v.ram_mib = 2097; // 2.048 "GB" read as binary: within tolerance
        assert_eq!(instance_type(&v, &t), "neon");
        (v.slots, v.ram_mib, v.gpus) = (4, 4096, 2);
        assert_eq!(instance_type(&v, &t), "argon2");
        (v.slots, v.ram_mib, v.gpus) = (3, 6144, 0);
        assert_eq!(instance_type(&v, &t), "custom-3cpu-6144mib");
        v.gpus = 1;
        assert_eq!(instance_type(&v, &t), "custom-3cpu-6144mib-1gpu");
        assert_eq!(instance_type(&v, &[]), "custom-3cpu-6144mib-1gpu");
    }

    fn policy(legacy: &[&str]) -> TopologyPolicy {
        TopologyPolicy {
            default_region: "elemento".into(),
            legacy_regions_in_use: Some(legacy.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn zones_are_providers_as_kops_sees_them() {
        let mut v = vm("i", "n", "10.0.0.1");
        let l = topology_labels(&v, &policy(&[]));
        assert_eq!(l[LABEL_ZONE], "atomos");
        assert_eq!(l[LABEL_REGION], "elemento", "the configured default");
        assert_eq!(l[LABEL_HOST], "atomos-1.local");
        assert_eq!(l[LABEL_PROVIDER], "atomos");
        v.provider = Some("ovh".into());
        v.region = Some("eu-west-par".into());
        v.server_url = Some("https://ovh.meson.elemento.cloud:7777/api".into());
        let l = topology_labels(&v, &policy(&[]));
        assert_eq!(
            (
                l[LABEL_ZONE].as_str(),
                l[LABEL_REGION].as_str(),
                l[LABEL_HOST].as_str()
            ),
            ("ovh", "eu-west-par", "ovh.meson.elemento.cloud")
        );
        v.server_url = None;
        assert!(!topology_labels(&v, &policy(&[])).contains_key(LABEL_HOST));
        assert_eq!(label_value("--a b/c--"), "a-b-c");
        assert_eq!(label_value(&"x".repeat(100)).len(), 63);
    }

    /// Volumes provisioned before 0.2 carry `topology.kubernetes.io/region` = `<provider>-<region>`
    /// or `atomos` in their node affinity: while one exists, Nodes keep that value.
    #[test]
    fn legacy_regions_stay_while_a_volume_refers_to_them() {
        let mut v = vm("i", "n", "10.0.0.1");
        assert_eq!(policy(&["atomos"]).region(&v), "atomos");
        assert_eq!(policy(&["ovh-eu-west-par"]).region(&v), "elemento");
        v.provider = Some("ovh".into());
        v.region = Some("eu-west-par".into());
        assert_eq!(policy(&["ovh-eu-west-par"]).region(&v), "ovh-eu-west-par");
        assert_eq!(policy(&["atomos"]).region(&v), "eu-west-par");
        // A Node labelled before 0.2 (zone = host) is relabelled; one up to date is left alone.
        let mut n = node("n1", Some("elemento://i"), &[]);
        n.labels = [(LABEL_ZONE.to_string(), "atomos-1.local".to_string())].into();
        let patch = label_refresh(&n, &v, &policy(&[])).expect("a label patch");
        assert_eq!(patch[LABEL_ZONE], "ovh");
        n.labels = topology_labels(&v, &policy(&[]));
        assert_eq!(label_refresh(&n, &v, &policy(&[])), None);
        // Volumes that cannot be listed: the region is left as it is.
        n.labels
            .insert(LABEL_REGION.into(), "ovh-eu-west-par".into());
        let unknown = TopologyPolicy {
            legacy_regions_in_use: None,
            ..policy(&[])
        };
        assert_eq!(label_refresh(&n, &v, &unknown), None);
    }

    #[test]
    fn addresses_mark_public_ips_external() {
        assert_eq!(
            addresses("n", &vm("i", "n", "10.0.0.1")),
            vec![addr(INTERNAL_IP, "10.0.0.1"), addr(HOSTNAME, "n")]
        );
        let a = addresses("n", &vm("i", "n", "51.15.1.2"));
        assert!(a.contains(&addr(EXTERNAL_IP, "51.15.1.2")));
        assert_eq!(
            addresses("n", &vm("i", "n", "100.64.1.1")).len(),
            2,
            "CGNAT is not external"
        );
        // Private (VPC) and public addresses: InternalIP is the private one (§8.3).
        let mut both = vm("i", "n", "51.15.1.2");
        both.private_ipv4 = "10.1.0.7".parse().ok();
        assert_eq!(
            addresses("n", &both),
            vec![
                addr(INTERNAL_IP, "10.1.0.7"),
                addr(EXTERNAL_IP, "51.15.1.2"),
                addr(HOSTNAME, "n")
            ]
        );
        // No address yet (`network_config: null`): not an error, just the hostname.
        let mut bare = vm("i", "n", "10.0.0.1");
        bare.ipv4 = None;
        assert_eq!(addresses("n", &bare), vec![addr(HOSTNAME, "n")]);
    }

    #[test]
    fn a_node_matches_by_either_vm_address() {
        let mut v = vm("id-1", "vm-1", "51.15.1.2");
        v.private_ipv4 = "10.1.0.7".parse().ok();
        let vms = Vms::from(vec![v, vm("id-2", "vm-2", "10.0.0.2")]);
        for ip in ["10.1.0.7", "51.15.1.2"] {
            assert_eq!(
                find_vm(&node("x", None, &[ip]), &vms),
                VmMatch::ByIp(&vms[0]),
                "{ip}"
            );
        }
    }

    /// The main patch applied as the API server applies it, to `node` as JSON.
    fn apply(p: &InitPatch, node: &NodeView) -> Result<serde_json::Value, json_patch::PatchError> {
        let mut doc = serde_json::json!({
            "metadata": {"name": node.name, "labels": node.labels},
            "spec": {"taints": node.taints},
        });
        if node.labels.is_empty() {
            doc["metadata"]
                .as_object_mut()
                .expect("object")
                .remove("labels");
        }
        json_patch::patch(&mut doc, &p.main_patch().expect("patch"))?;
        Ok(doc)
    }

    #[test]
    fn init_patch_sets_everything_and_drops_only_our_taint() {
        let mut n = node("n1", None, &[]);
        n.labels
            .insert("kubernetes.io/hostname".into(), "n1".into());
        let v = vm("id-1", "n1", "10.0.0.1");
        let p = init_patch(&n, &v, &templates(), &policy(&[]));
        let main = apply(&p, &n).expect("applies to the Node as read");
        assert_eq!(main["spec"]["providerID"], "elemento://id-1");
        let labels = &main["metadata"]["labels"];
        assert_eq!(labels[LABEL_INSTANCE_TYPE], "neon");
        assert_eq!(labels[LABEL_REGION], "elemento");
        assert_eq!(labels[LABEL_ZONE], "atomos");
        assert_eq!(labels[LABEL_PROVIDER], "atomos");
        assert_eq!(
            labels["kubernetes.io/hostname"], "n1",
            "other labels are kept"
        );
        assert_eq!(
            main["spec"]["taints"],
            serde_json::json!([{"key": "other", "effect": "NoExecute"}])
        );
        let status = serde_json::to_value(p.status_patch()).expect("json");
        assert_eq!(
            status["status"]["addresses"][0],
            serde_json::json!({"type": "InternalIP", "address": "10.0.0.1"})
        );
        assert!(
            status.get("spec").is_none(),
            "the status patch is only the status"
        );
        // A taint added (or removed) by someone else since the read fails the patch whole.
        let mut changed = n.clone();
        changed.taints.push(Taint {
            key: "node.kubernetes.io/not-ready".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        });
        assert!(
            apply(&p, &changed).is_err(),
            "the taint test guards the write"
        );
        // Every taint removed; a Node without labels gets the whole map.
        let mut bare = n.clone();
        bare.taints.truncate(1);
        bare.labels.clear();
        let p = init_patch(&bare, &v, &templates(), &policy(&[]));
        let main = apply(&p, &bare).expect("applies");
        assert_eq!(main["spec"]["taints"], serde_json::json!([]));
        assert_eq!(main["metadata"]["labels"][LABEL_INSTANCE_TYPE], "neon");
    }

    #[test]
    fn one_plan_per_node_state() {
        let vms = Vms::from(vec![vm("vm-1", "n1", "10.0.0.1")]);
        let p = policy(&[]);
        let fresh = node("n1", None, &[]);
        assert!(
            matches!(plan(&fresh, &vms, &templates(), &p), NodePlan::Initialize { ref vm_id, .. } if vm_id == "vm-1")
        );
        let ghost = node("ghost", None, &[]);
        assert!(
            matches!(plan(&ghost, &vms, &templates(), &p), NodePlan::Retry { ref note } if note.contains("ghost"))
        );
        let foreign = node("x", Some("aws:///i-1"), &[]);
        assert_eq!(plan(&foreign, &vms, &templates(), &p), NodePlan::Leave);
        let mut done = node("n1", Some("elemento://vm-1"), &[]);
        done.taints.clear();
        assert!(matches!(
            plan(&done, &vms, &templates(), &p),
            NodePlan::Refresh {
                addresses: Some(_),
                labels: Some(_)
            }
        ));
        done.addresses = addresses("n1", &vms[0]);
        done.labels = topology_labels(&vms[0], &p);
        assert_eq!(plan(&done, &vms, &templates(), &p), NodePlan::Leave);
        assert_eq!(
            plan(&done, &Vms::default(), &templates(), &p),
            NodePlan::Leave,
            "VM gone: the lifecycle's call"
        );
    }

    #[test]
    fn address_refresh_only_when_different() {
        let v = vm("id-1", "n1", "10.0.0.1");
        let mut n = node("n1", Some("elemento://id-1"), &[]);
        n.addresses = addresses("n1", &v);
        assert_eq!(address_refresh(&n, &v), None);
        let moved = vm("id-1", "n1", "10.0.0.9");
        assert!(address_refresh(&n, &moved).is_some());
    }
}
