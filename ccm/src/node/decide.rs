//! Pure node-initialization logic: which VM a Node is, and what the Node must look like.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use elemento_api::types::{Template, Vm};
use serde_json::{Value, json};

use elemento_api::provider_id::{self, ProviderId};

pub const UNINITIALIZED_TAINT: &str = "node.cloudprovider.kubernetes.io/uninitialized";
pub const LABEL_INSTANCE_TYPE: &str = "node.kubernetes.io/instance-type";
pub const LABEL_INSTANCE_TYPE_BETA: &str = "beta.kubernetes.io/instance-type";
pub const LABEL_REGION: &str = "topology.kubernetes.io/region";
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
pub const LABEL_PROVIDER: &str = "node.elemento.cloud/provider";
/// Region and provider label value for VMs on Elemento's own AtomOS hypervisors.
pub const ATOMOS: &str = "atomos";

/// What the node controller needs to know about a Node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeFacts {
    pub name: String,
    pub provider_id: Option<String>,
    /// The Node's InternalIP then ExternalIP addresses (the kubelet may report either).
    pub node_ips: Vec<Ipv4Addr>,
    pub labels: BTreeMap<String, String>,
    pub addresses: Vec<(String, String)>,
    pub taints: Vec<Value>,
}

impl NodeFacts {
    pub fn from_node(node: &k8s_openapi::api::core::v1::Node) -> Self {
        let spec = node.spec.clone().unwrap_or_default();
        let addresses: Vec<(String, String)> = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|a| (a.type_, a.address))
            .collect();
        Self {
            name: node.metadata.name.clone().unwrap_or_default(),
            provider_id: spec.provider_id.clone(),
            node_ips: ["InternalIP", "ExternalIP"]
                .iter()
                .flat_map(|kind| addresses.iter().filter(move |(t, _)| t == kind))
                .filter_map(|(_, a)| a.parse().ok())
                .collect(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            addresses,
            taints: spec
                .taints
                .unwrap_or_default()
                .into_iter()
                .filter_map(|t| serde_json::to_value(t).ok())
                .collect(),
        }
    }

    pub fn has_taint(&self, key: &str) -> bool {
        self.taints.iter().any(|t| t["key"] == key)
    }
}

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
pub fn find_vm<'a>(node: &NodeFacts, vms: &'a [Vm]) -> VmMatch<'a> {
    let mut tried = vec![];
    match provider_id::parse(node.provider_id.as_deref()) {
        ProviderId::Foreign(p) => return VmMatch::Foreign(p),
        ProviderId::Elemento(id) => {
            return match vms.iter().find(|v| v.id == id) {
                Some(v) => VmMatch::ByProviderId(v),
                None => VmMatch::NotFound(format!(
                    "providerID {} (no VM with id {id})",
                    provider_id::format(&id)
                )),
            };
        }
        ProviderId::Unset => tried.push("providerID (unset)".to_string()),
    }
    let by_name: Vec<&Vm> = vms.iter().filter(|v| v.name == node.name).collect();
    match by_name.as_slice() {
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
    if node.node_ips.is_empty() {
        tried.push("Node address (the Node has none)".into());
    }
    for ip in &node.node_ips {
        let by_ip: Vec<&Vm> = vms
            .iter()
            .filter(|v| v.ipv4 == Some(*ip) || v.private_ipv4 == Some(*ip))
            .collect();
        match by_ip.as_slice() {
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
        return label_value(&t.name.to_ascii_lowercase().replace(' ', ""));
    }
    let gpu = if vm.gpus > 0 {
        format!("-{}gpu", vm.gpus)
    } else {
        String::new()
    };
    format!("custom-{}cpu-{}mib{gpu}", vm.slots, vm.ram_mib)
}

/// Region: the provider (`ovh`), with its region when the API reports one (`ovh-eu-west-par`);
/// `atomos` for Elemento's own hypervisors. Zone: the host serving the VM (`serverurl`).
pub fn topology(vm: &Vm) -> (String, Option<String>) {
    let region = match (&vm.provider, &vm.region) {
        (Some(p), Some(r)) => format!("{p}-{r}"),
        (Some(p), None) => p.clone(),
        (None, _) => ATOMOS.to_string(),
    };
    let zone = vm
        .server_url
        .as_deref()
        .and_then(|u| u.split("://").nth(1).or(Some(u)))
        .and_then(|rest| rest.split(['/', ':']).next())
        .filter(|h| !h.is_empty())
        .map(label_value);
    (label_value(&region), zone)
}

/// Makes a valid label value: [A-Za-z0-9._-], at most 63 characters, alphanumeric at both ends.
pub fn label_value(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
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
pub fn addresses(node_name: &str, vm: &Vm) -> Vec<(String, String)> {
    let mut out = vec![];
    match (vm.private_ipv4, vm.ipv4) {
        (Some(private), public) => {
            out.push(("InternalIP".into(), private.to_string()));
            if let Some(p) = public.filter(|p| *p != private) {
                out.push(("ExternalIP".into(), p.to_string()));
            }
        }
        (None, Some(ip)) => {
            out.push(("InternalIP".into(), ip.to_string()));
            if is_public(ip) {
                out.push(("ExternalIP".into(), ip.to_string()));
            }
        }
        (None, None) => {}
    }
    out.push(("Hostname".into(), node_name.to_string()));
    out
}

pub fn addresses_json(addrs: &[(String, String)]) -> Value {
    Value::Array(
        addrs
            .iter()
            .map(|(t, a)| json!({"type": t, "address": a}))
            .collect(),
    )
}

/// The labels a VM gives its Node.
pub fn labels(vm: &Vm, templates: &[Template]) -> BTreeMap<String, String> {
    let (region, zone) = topology(vm);
    let mut l = BTreeMap::new();
    let itype = instance_type(vm, templates);
    l.insert(LABEL_INSTANCE_TYPE.into(), itype.clone());
    l.insert(LABEL_INSTANCE_TYPE_BETA.into(), itype);
    l.insert(LABEL_REGION.into(), region);
    if let Some(z) = zone {
        l.insert(LABEL_ZONE.into(), z);
    }
    l.insert(
        LABEL_PROVIDER.into(),
        label_value(vm.provider.as_deref().unwrap_or(ATOMOS)),
    );
    l
}

/// The initialization: a status patch (addresses) and a main patch (providerID, labels, taints
/// without the uninitialized one, guarded by resourceVersion). The status is written first, so a
/// Node is never schedulable before it is complete.
#[derive(Debug, Clone, PartialEq)]
pub struct InitPatch {
    pub status: Value,
    pub main: Value,
}

pub fn init_patch(
    node: &NodeFacts,
    vm: &Vm,
    templates: &[Template],
    resource_version: Option<&str>,
) -> InitPatch {
    let taints: Vec<Value> = node
        .taints
        .iter()
        .filter(|t| t["key"] != UNINITIALIZED_TAINT)
        .cloned()
        .collect();
    let mut meta = json!({ "labels": labels(vm, templates) });
    if let Some(rv) = resource_version {
        meta["resourceVersion"] = json!(rv);
    }
    InitPatch {
        status: json!({ "status": { "addresses": addresses_json(&addresses(&node.name, vm)) } }),
        main: json!({
            "metadata": meta,
            "spec": { "providerID": provider_id::format(&vm.id), "taints": taints },
        }),
    }
}

/// For an initialized Node: the status patch when its addresses differ from the VM's.
pub fn address_refresh(node: &NodeFacts, vm: &Vm) -> Option<Value> {
    let want = addresses(&node.name, vm);
    let mut have = node.addresses.clone();
    let mut want_sorted = want.clone();
    have.sort();
    want_sorted.sort();
    (have != want_sorted).then(|| json!({ "status": { "addresses": addresses_json(&want) } }))
}

#[cfg(test)]
mod tests {
    use super::*;
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
        })
        .collect()
    }

    fn node(name: &str, pid: Option<&str>, ips: &[&str]) -> NodeFacts {
        NodeFacts {
            name: name.into(),
            provider_id: pid.map(String::from),
            node_ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
            taints: vec![
                json!({"key": UNINITIALIZED_TAINT, "value": "true", "effect": "NoSchedule"}),
                json!({"key": "other", "effect": "NoExecute"}),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn matches_by_provider_id_then_name_then_ip() {
        let vms = vec![vm("id-1", "n1", "10.0.0.1"), vm("id-2", "n2", "10.0.0.2")];
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
        let dup = vec![vm("a", "same", "10.0.0.1"), vm("b", "same", "10.0.0.2")];
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

    #[test]
    fn topology_from_provider_and_server() {
        let mut v = vm("i", "n", "10.0.0.1");
        assert_eq!(
            topology(&v),
            ("atomos".into(), Some("atomos-1.local".into()))
        );
        v.provider = Some("ovh".into());
        v.region = Some("eu-west-par".into());
        v.server_url = Some("https://ovh.meson.elemento.cloud:7777/api".into());
        assert_eq!(
            topology(&v),
            (
                "ovh-eu-west-par".into(),
                Some("ovh.meson.elemento.cloud".into())
            )
        );
        v.server_url = None;
        assert_eq!(topology(&v).1, None);
        assert_eq!(label_value("--a b/c--"), "a-b-c");
        assert_eq!(label_value(&"x".repeat(100)).len(), 63);
    }

    #[test]
    fn addresses_mark_public_ips_external() {
        assert_eq!(
            addresses("n", &vm("i", "n", "10.0.0.1")),
            vec![
                ("InternalIP".into(), "10.0.0.1".into()),
                ("Hostname".into(), "n".into())
            ]
        );
        let a = addresses("n", &vm("i", "n", "51.15.1.2"));
        assert!(a.contains(&("ExternalIP".into(), "51.15.1.2".into())));
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
                ("InternalIP".into(), "10.1.0.7".into()),
                ("ExternalIP".into(), "51.15.1.2".into()),
                ("Hostname".into(), "n".into())
            ]
        );
        // No address yet (`network_config: null`): not an error, just the hostname.
        let mut bare = vm("i", "n", "10.0.0.1");
        bare.ipv4 = None;
        assert_eq!(addresses("n", &bare), vec![("Hostname".into(), "n".into())]);
    }

    #[test]
    fn a_node_matches_by_either_vm_address() {
        let mut v = vm("id-1", "vm-1", "51.15.1.2");
        v.private_ipv4 = "10.1.0.7".parse().ok();
        let vms = vec![v, vm("id-2", "vm-2", "10.0.0.2")];
        for ip in ["10.1.0.7", "51.15.1.2"] {
            assert_eq!(
                find_vm(&node("x", None, &[ip]), &vms),
                VmMatch::ByIp(&vms[0]),
                "{ip}"
            );
        }
    }

    #[test]
    fn init_patch_sets_everything_and_drops_only_our_taint() {
        let n = node("n1", None, &[]);
        let v = vm("id-1", "n1", "10.0.0.1");
        let p = init_patch(&n, &v, &templates(), Some("42"));
        assert_eq!(p.main["spec"]["providerID"], "elemento://id-1");
        assert_eq!(p.main["metadata"]["resourceVersion"], "42");
        assert_eq!(p.main["metadata"]["labels"][LABEL_INSTANCE_TYPE], "neon");
        assert_eq!(p.main["metadata"]["labels"][LABEL_REGION], "atomos");
        assert_eq!(p.main["metadata"]["labels"][LABEL_PROVIDER], "atomos");
        assert_eq!(
            p.main["spec"]["taints"],
            json!([{"key": "other", "effect": "NoExecute"}])
        );
        assert_eq!(
            p.status["status"]["addresses"][0],
            json!({"type": "InternalIP", "address": "10.0.0.1"})
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
