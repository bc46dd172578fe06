//! Where a VM is, as Kubernetes labels: one definition for the CCM (which labels Nodes), the CSI
//! driver (whose topology uses the same keys) and the autoscaler (whose template nodes carry the
//! same labels).
//!
//! kOps for Elemento uses providers as zones (`--zones ovh,ionos,…,atomos`), so: zone = the
//! provider (`atomos` for Elemento's own hypervisors); region = the provider's region when the API
//! gives one, else a configured default; the hypervisor host has a label of its own.

use crate::types::Vm;

pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
pub const LABEL_REGION: &str = "topology.kubernetes.io/region";
/// The host serving the VM (`serverurl`); was the zone before 0.2.
pub const LABEL_HOST: &str = "node.elemento.cloud/host";
/// The provider, as since 0.1 (same value as the zone).
pub const LABEL_PROVIDER: &str = "node.elemento.cloud/provider";
pub const LABEL_INSTANCE_TYPE: &str = "node.kubernetes.io/instance-type";
pub const LABEL_INSTANCE_TYPE_BETA: &str = "beta.kubernetes.io/instance-type";
/// The autoscaler node group a Node belongs to (set on its template and by its join config).
pub const LABEL_NODE_GROUP: &str = "node.elemento.cloud/node-group";
/// The provider of VMs on Elemento's own AtomOS hypervisors.
pub const ATOMOS: &str = "atomos";
/// The region when the API gives none and the configuration sets none.
pub const DEFAULT_REGION: &str = "elemento";

/// The zone label value: the VM's provider, `atomos` when it has none.
pub fn zone(vm: &Vm) -> String {
    zone_of(vm.provider.as_deref())
}

/// The zone label value of a provider (`atomos` for none): also what a template node of a group
/// on that provider carries.
pub fn zone_of(provider: Option<&str>) -> String {
    label_value(provider.unwrap_or(ATOMOS))
}

/// The region label value: the provider's region, else `default_region`.
pub fn region(vm: &Vm, default_region: &str) -> String {
    region_of(vm.region.as_deref(), default_region)
}

pub fn region_of(region: Option<&str>, default_region: &str) -> String {
    label_value(region.unwrap_or(default_region))
}

/// The instance-type label value of an Elemento template: its name in lower case without spaces
/// (`helium`, `neon`, `argon`, `argon2`, `kripton`).
pub fn instance_type_of_template(name: &str) -> String {
    label_value(&name.to_ascii_lowercase().replace(' ', ""))
}

/// The region label value before 0.2: `<provider>-<region>`, `<provider>`, or `atomos`. Volumes
/// provisioned then carry it in their node affinity, so it stays on Nodes while such a volume
/// exists (see the CCM's node controller).
pub fn legacy_region(vm: &Vm) -> String {
    let region = match (&vm.provider, &vm.region) {
        (Some(p), Some(r)) => format!("{p}-{r}"),
        (Some(p), None) => p.clone(),
        (None, _) => ATOMOS.to_string(),
    };
    label_value(&region)
}

/// The host label value: the host name of the VM's `serverurl`.
pub fn host(vm: &Vm) -> Option<String> {
    vm.server_url
        .as_deref()
        .and_then(|u| u.split("://").nth(1).or(Some(u)))
        .and_then(|rest| rest.split(['/', ':']).next())
        .filter(|h| !h.is_empty())
        .map(label_value)
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
