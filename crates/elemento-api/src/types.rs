//! Request and response types. Wire structs (`*Wire`) mirror what Elemento sends and decode
//! tolerantly (unknown fields ignored, missing fields defaulted); public structs are normalised
//! (sizes in bytes, RAM in MiB). Shapes not seen in Elemento's code are marked [I].

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::lenient;
use crate::units;

// ---------------------------------------------------------------- auth [K]

#[derive(Serialize)]
pub(crate) struct LoginRequest<'a> {
    pub username: &'a str,
    pub password: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org: Option<&'a str>,
}

/// `GET /authenticate/status` [K]; the newer daemon adds org and limits [M], which we ignore.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct AuthStatus {
    #[serde(default, deserialize_with = "lenient::bool_loose")]
    pub authenticated: bool,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub username: Option<String>,
}

// ---------------------------------------------------------------- compute

/// Power state, from the newer daemon's `states` field [M]; `Unknown` when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    Running,
    ShutOff,
    Paused,
    Unknown,
}

impl PowerState {
    fn parse(s: Option<&str>) -> Self {
        match s.map(|s| s.trim().to_ascii_lowercase()) {
            Some(s) if s == "running" => PowerState::Running,
            Some(s) if s == "shut off" || s == "shutoff" || s == "stopped" => PowerState::ShutOff,
            Some(s) if s == "paused" => PowerState::Paused,
            _ => PowerState::Unknown,
        }
    }
}

/// A VM, normalised from one item of `GET /vm/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vm {
    /// `uniqueID`; the Kubernetes providerID is `elemento://<id>`.
    pub id: String,
    pub name: String,
    /// The hypervisor or Meson host serving the VM (`serverurl`).
    pub server_url: Option<String>,
    pub slots: u32,
    pub ram_mib: u64,
    /// Number of PCI (GPU) devices.
    pub gpus: u32,
    pub ipv4: Option<Ipv4Addr>,
    pub mac: Option<String>,
    /// Cloud provider (`provider` [M] or `mesos.provider` [K]); `None` on AtomOS hypervisors.
    pub provider: Option<String>,
    /// Provider region (`region` or `mesos.region`, top level or in `req_json`) [K, §8.4].
    pub region: Option<String>,
    pub power: PowerState,
    /// Volume ids attached to the VM (`req_json.volumes[].vid|volumeID`).
    pub volume_ids: Vec<String>,
    /// The private (VPC) address (`private_network_config[0].ipv4`, in `req_json` or at the top
    /// level) [K, §8.3].
    pub private_ipv4: Option<Ipv4Addr>,
    /// Tags the VM was registered with (`vm_tags`, top level or in `req_json`) [K, §8.4].
    pub vm_tags: Vec<String>,
    /// The disks of the VM's libvirt domain (`xml`, top level or in `req_json`) [K, §8.2]; empty
    /// when the record has no XML.
    #[serde(default)]
    pub disks: Vec<crate::disk::DomainDisk>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct VmWire {
    #[serde(rename = "uniqueID", default, deserialize_with = "lenient::opt_string")]
    unique_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    serverurl: Option<String>,
    #[serde(default)]
    req_json: ReqJsonWire,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    provider: Option<String>,
    /// Status fields seen at the top level (later Meson, §8.4) or in `req_json` (the mock): the
    /// shared ones are read at both levels, the top level first.
    #[serde(flatten)]
    status: StatusFieldsWire,
}

/// The fields Elemento puts either at the top level of a VM record or inside `req_json`.
#[derive(Debug, Default, Deserialize)]
struct StatusFieldsWire {
    #[serde(default)]
    states: Option<serde_json::Value>,
    #[serde(default)]
    mesos: Option<MesosWire>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    region: Option<String>,
    #[serde(default)]
    vm_tags: Option<serde_json::Value>,
    /// `null` on a VM without an address yet (an AtomOS sample, §8.3): not an error.
    #[serde(default)]
    network_config: Option<NetworkConfigWire>,
    #[serde(default, deserialize_with = "lenient::vec_skip_bad")]
    private_network_config: Vec<NetworkConfigWire>,
    /// The libvirt domain XML.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    xml: Option<String>,
}

impl StatusFieldsWire {
    fn state(&self) -> Option<String> {
        // `states` is a string in the TUI fixtures; tolerate a list of strings too.
        match &self.states {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Array(a)) => {
                a.iter().find_map(|v| v.as_str().map(String::from))
            }
            _ => None,
        }
    }

    /// Tags as a list of strings, or a `{key: value}` map as `key=value`.
    fn tags(&self) -> Option<Vec<String>> {
        match self.vm_tags.as_ref()? {
            serde_json::Value::Array(a) => Some(
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect(),
            ),
            serde_json::Value::Object(m) => Some(
                m.iter()
                    .map(|(k, v)| match v.as_str() {
                        Some(v) => format!("{k}={v}"),
                        None => k.clone(),
                    })
                    .collect(),
            ),
            _ => None,
        }
    }
}

fn parse_ipv4(s: Option<&str>) -> Option<Ipv4Addr> {
    s.and_then(|s| s.split('/').next()?.trim().parse().ok())
}

#[derive(Debug, Default, Deserialize)]
struct ReqJsonWire {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    vm_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_f64")]
    slots: Option<f64>,
    #[serde(default, deserialize_with = "lenient::opt_f64")]
    ramsize: Option<f64>,
    #[serde(default, deserialize_with = "lenient::vec_skip_bad")]
    volumes: Vec<VmVolumeRefWire>,
    #[serde(default, deserialize_with = "lenient::vec_skip_bad")]
    pcidevs: Vec<PciWire>,
    #[serde(flatten)]
    status: StatusFieldsWire,
}

#[derive(Debug, Default, Deserialize)]
struct VmVolumeRefWire {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    vid: Option<String>,
    #[serde(rename = "volumeID", default, deserialize_with = "lenient::opt_string")]
    volume_id: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize, Clone)]
pub(crate) struct PciWire {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub vendor: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub model: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_f64")]
    pub quantity: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
struct NetworkConfigWire {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    ipv4: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    mac: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct MesosWire {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    provider: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    region: Option<String>,
}

fn pci_count(pci: &[PciWire]) -> u32 {
    pci.iter()
        .map(|p| p.quantity.unwrap_or(1.0).max(0.0) as u32)
        .sum()
}

impl VmWire {
    /// `None` when the item has no id: such an entry cannot be matched to anything.
    pub(crate) fn normalise(self) -> Option<Vm> {
        let id = self.unique_id?;
        let r = self.req_json;
        let (top, inner) = (&self.status, &r.status);
        let mesos = |f: fn(&MesosWire) -> Option<String>| {
            top.mesos
                .as_ref()
                .and_then(f)
                .or_else(|| inner.mesos.as_ref().and_then(f))
        };
        let net = top
            .network_config
            .as_ref()
            .or(inner.network_config.as_ref());
        let private = top
            .private_network_config
            .first()
            .or(inner.private_network_config.first());
        Some(Vm {
            name: r.vm_name.unwrap_or_default(),
            server_url: self.serverurl,
            slots: r.slots.unwrap_or(0.0).max(0.0) as u32,
            ram_mib: units::status_ram_to_mib(r.ramsize.unwrap_or(0.0)),
            gpus: pci_count(&r.pcidevs),
            ipv4: parse_ipv4(net.and_then(|n| n.ipv4.as_deref())),
            mac: net.and_then(|n| n.mac.clone()),
            provider: self.provider.or_else(|| mesos(|m| m.provider.clone())),
            region: top
                .region
                .clone()
                .or_else(|| mesos(|m| m.region.clone()))
                .or_else(|| inner.region.clone()),
            power: PowerState::parse(top.state().or_else(|| inner.state()).as_deref()),
            volume_ids: r
                .volumes
                .into_iter()
                .filter_map(|v| v.vid.or(v.volume_id))
                .collect(),
            private_ipv4: parse_ipv4(private.and_then(|n| n.ipv4.as_deref())),
            vm_tags: top.tags().or_else(|| inner.tags()).unwrap_or_default(),
            disks: top
                .xml
                .as_deref()
                .or(inner.xml.as_deref())
                .map(crate::disk::domain_disks)
                .unwrap_or_default(),
            id,
        })
    }
}

/// A VM flavour template (`GET /vm/templates`) [K].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Template {
    pub name: String,
    pub slots: u32,
    pub ram_mib: u64,
    pub gpus: u32,
    /// The rest of the CPU and PCI part, copied into a register Spec of this flavour (the
    /// flavour is chosen by values, not by name [K]).
    #[serde(default)]
    pub overprovision: u32,
    #[serde(default)]
    pub allow_smt: bool,
    #[serde(default)]
    pub archs: Vec<String>,
    #[serde(default)]
    pub flags: Vec<String>,
    #[serde(default)]
    pub pci: Vec<PciDevice>,
}

/// A PCI device of a Spec or template (`{vendor, model, quantity}`) [K].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PciDevice {
    pub vendor: String,
    pub model: String,
    pub quantity: u32,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct TemplateWire {
    #[serde(default)]
    info: TemplateInfoWire,
    #[serde(default)]
    cpu: TemplateCpuWire,
    #[serde(default)]
    ram: TemplateRamWire,
    #[serde(default, deserialize_with = "lenient::vec_skip_bad")]
    pci: Vec<PciWire>,
}
#[derive(Debug, Default, Deserialize)]
struct TemplateInfoWire {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    name: Option<String>,
}
#[derive(Debug, Default, Deserialize)]
struct TemplateCpuWire {
    #[serde(default, deserialize_with = "lenient::opt_f64")]
    slots: Option<f64>,
    #[serde(default, deserialize_with = "lenient::opt_f64")]
    overprovision: Option<f64>,
    #[serde(default, rename = "allowSMT")]
    allow_smt: Option<bool>,
    #[serde(default, deserialize_with = "lenient::vec_skip_bad")]
    archs: Vec<String>,
    #[serde(default, deserialize_with = "lenient::vec_skip_bad")]
    flags: Vec<String>,
}
#[derive(Debug, Default, Deserialize)]
struct TemplateRamWire {
    /// MiB in templates [K].
    #[serde(default, deserialize_with = "lenient::opt_f64")]
    ramsize: Option<f64>,
}

impl TemplateWire {
    pub(crate) fn normalise(self) -> Option<Template> {
        Some(Template {
            name: self.info.name?,
            slots: self.cpu.slots.unwrap_or(0.0).max(0.0) as u32,
            ram_mib: self.ram.ramsize.unwrap_or(0.0).max(0.0) as u64,
            gpus: pci_count(&self.pci),
            overprovision: self.cpu.overprovision.unwrap_or(1.0).max(1.0) as u32,
            allow_smt: self.cpu.allow_smt.unwrap_or(false),
            archs: self.cpu.archs,
            flags: self.cpu.flags,
            pci: self
                .pci
                .iter()
                .map(|p| PciDevice {
                    vendor: p.vendor.clone().unwrap_or_default(),
                    model: p.model.clone().unwrap_or_default(),
                    quantity: p.quantity.unwrap_or(1.0).max(0.0) as u32,
                })
                .collect(),
        })
    }
}

/// Body of `POST /vm/register` (the "Spec") [K]. `ramsize` is MiB here.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RegisterVmRequest {
    pub info: RegisterVmInfo,
    pub slots: u32,
    pub overprovision: u32,
    #[serde(rename = "allowSMT")]
    pub allow_smt: bool,
    pub archs: Vec<String>,
    pub flags: Vec<String>,
    pub ramsize: u64,
    #[serde(rename = "reqECC")]
    pub req_ecc: bool,
    pub volumes: Vec<RegisterVmVolume>,
    #[serde(rename = "has_network")]
    pub has_network: bool,
    pub networks: Vec<RegisterVmNetwork>,
    #[serde(rename = "vm_tags")]
    pub vm_tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pci: Vec<PciDevice>,
    /// Where the VM goes [I]: no source shows how `register` receives the provider and region
    /// picked from `canallocate` (docs/meson-api.md). Sent only when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RegisterVmInfo {
    pub vm_name: String,
    pub autostart: bool,
}
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RegisterVmVolume {
    pub vid: String,
    pub priority: u32,
}
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RegisterVmNetwork {
    pub network_uid: String,
}

impl RegisterVmRequest {
    /// A minimal x86_64 spec with `slots` and `ram_mib`, as the Elemento templates define them.
    pub fn new(name: &str, slots: u32, ram_mib: u64) -> Self {
        Self {
            info: RegisterVmInfo {
                vm_name: name.to_string(),
                autostart: true,
            },
            slots,
            overprovision: 2,
            allow_smt: false,
            archs: vec!["X86_64".into()],
            flags: vec![],
            ramsize: ram_mib,
            req_ecc: false,
            volumes: vec![],
            has_network: true,
            networks: vec![],
            vm_tags: vec![],
            pci: vec![],
            provider: None,
            region: None,
        }
    }

    /// A spec of this flavour: its CPU, RAM and PCI values.
    pub fn of_template(name: &str, t: &Template) -> Self {
        Self {
            overprovision: t.overprovision.max(1),
            allow_smt: t.allow_smt,
            archs: if t.archs.is_empty() {
                vec!["X86_64".into()]
            } else {
                t.archs.clone()
            },
            flags: t.flags.clone(),
            pci: t.pci.clone(),
            ..Self::new(name, t.slots, t.ram_mib)
        }
    }
}

/// Where a Spec can run, from `canallocate` and `marketprices` [K]: how many servers can take it,
/// and the offers of the public providers (`mesos`) with their price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Allocation {
    #[serde(default)]
    pub nservers: u32,
    #[serde(default, rename = "mesos", deserialize_with = "lenient::vec_skip_bad")]
    pub offers: Vec<Offer>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Offer {
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub price: Option<Price>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Price {
    #[serde(default, deserialize_with = "lenient::opt_f64")]
    pub hour: Option<f64>,
    #[serde(default, deserialize_with = "lenient::opt_f64")]
    pub month: Option<f64>,
    #[serde(default)]
    pub unit: Option<String>,
}

/// A cloud image volume from a URL (`POST /volume/cloudinit/create`) [K].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CloudImageRequest {
    pub name: String,
    pub private: bool,
    pub clonable: bool,
    pub alg: String,
    pub format: String,
    pub bus: String,
    /// GB.
    pub size: u64,
    pub url: String,
}

/// The path JSON of the first cloud-init upload (`/volume/cloudinit/metadata/{base64}`) [K].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CloudInitVolumeRequest {
    pub name: String,
    pub private: bool,
    pub bootable: bool,
    pub clonable: bool,
    pub alg: String,
    #[serde(rename = "expectedFiles")]
    pub expected_files: u32,
}

#[derive(Serialize)]
pub(crate) struct UnregisterRequest<'a> {
    pub local_index: &'a str,
}

#[derive(Serialize)]
pub(crate) struct PowerRequest<'a> {
    pub vm_uid: &'a str,
    pub force: bool,
}

/// Body of `POST /vm/volume/attach|detach` [I], by analogy with reboot (`vm_uid`) and destroy
/// (`volume_id`). The compute daemon names VM ids three ways (§8.5: `local_index`, `vm_uid`,
/// `vm_uuid`) and volumes `vid` in VM records, so the same values also go as `vm_uuid` and `vid`:
/// harmless extras until Elemento confirms the shape. Built only by [`VolumeAttachRequest::new`].
#[derive(Serialize)]
pub(crate) struct VolumeAttachRequest<'a> {
    pub vm_uid: &'a str,
    pub vm_uuid: &'a str,
    pub volume_id: &'a str,
    pub vid: &'a str,
}

impl<'a> VolumeAttachRequest<'a> {
    pub fn new(vm_id: &'a str, volume_id: &'a str) -> Self {
        Self {
            vm_uid: vm_id,
            vm_uuid: vm_id,
            volume_id,
            vid: volume_id,
        }
    }
}

/// What attach returns [I]: how the guest will see the disk. Both fields are optional, and the CSI
/// node plugin falls back to the virtio serial derived from the volume id.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Attachment {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub device: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub serial: Option<String>,
}

// ---------------------------------------------------------------- storage

/// A volume, normalised from the storage daemon's Volume object [K].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub id: String,
    pub name: String,
    pub size_bytes: u64,
    pub format: Option<String>,
    pub bus: Option<String>,
    pub shareable: bool,
    pub private: bool,
    pub readonly: bool,
    pub bootable: bool,
    pub clonable: bool,
    pub server_url: Option<String>,
    /// The provider the volume lives on (`provider` [I]); `None` when the API does not say.
    #[serde(default)]
    pub provider: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct VolumeWire {
    #[serde(rename = "volumeID", default, deserialize_with = "lenient::opt_string")]
    volume_id: Option<String>,
    /// The create response names the id `vid` (thesis schema).
    #[serde(default, deserialize_with = "lenient::opt_string")]
    vid: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_f64")]
    size: Option<f64>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    format: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    img_format: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    bus: Option<String>,
    #[serde(default, deserialize_with = "lenient::bool_loose")]
    shareable: bool,
    #[serde(default, deserialize_with = "lenient::bool_loose")]
    private: bool,
    #[serde(default, deserialize_with = "lenient::bool_loose")]
    readonly: bool,
    #[serde(default, deserialize_with = "lenient::bool_loose")]
    bootable: bool,
    #[serde(default, deserialize_with = "lenient::bool_loose")]
    clonable: bool,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    serverurl: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    provider: Option<String>,
}

impl VolumeWire {
    pub(crate) fn normalise(self) -> Option<Volume> {
        Some(Volume {
            id: self.volume_id.or(self.vid)?,
            name: self.name.unwrap_or_default(),
            size_bytes: units::volume_size_to_bytes(self.size.unwrap_or(0.0)),
            format: self.format.or(self.img_format),
            bus: self.bus,
            shareable: self.shareable,
            private: self.private,
            readonly: self.readonly,
            bootable: self.bootable,
            clonable: self.clonable,
            server_url: self.serverurl,
            provider: self.provider,
        })
    }
}

/// Volume attributes chosen at creation [K].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeAttributes {
    /// `virtio` or `sata`.
    pub bus: String,
    /// `raw` or `qcow2`.
    pub format: String,
    pub shareable: bool,
    pub private: bool,
    /// The provider to create the volume on (`provider` in the create body [I]): the zone a
    /// topology requirement asks for. `None` lets the cloud choose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

impl Default for VolumeAttributes {
    fn default() -> Self {
        Self {
            bus: "virtio".into(),
            format: "raw".into(),
            shareable: false,
            private: true,
            provider: None,
        }
    }
}

#[derive(Serialize)]
pub(crate) struct CreateVolumeWire<'a> {
    pub size: f64,
    pub name: &'a str,
    pub bootable: bool,
    pub readonly: bool,
    pub shareable: bool,
    pub private: bool,
    pub clonable: bool,
    pub bus: &'a str,
    pub alg: &'a str,
    pub format: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<&'a str>,
}

#[derive(Serialize)]
pub(crate) struct CanCreateWire {
    /// GB as a string, as the CLI sends it [K].
    pub size: String,
}

#[derive(Serialize)]
pub(crate) struct VolumeIdRequest<'a> {
    pub volume_id: &'a str,
}

/// `POST /volume/update/resize` body [I]; grow only.
#[derive(Serialize)]
pub(crate) struct ResizeVolumeWire<'a> {
    pub volume_id: &'a str,
    pub size: f64,
}

// ---------------------------------------------------------------- network [K]

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub kind: Option<String>,
    pub mode: Option<String>,
    pub private: bool,
    /// CIDR of the network (`ip.address`).
    pub cidr: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct NetworkWire {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    network_uid: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    network_name: Option<String>,
    #[serde(rename = "type", default, deserialize_with = "lenient::opt_string")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    mode: Option<String>,
    #[serde(default, deserialize_with = "lenient::bool_loose")]
    private: bool,
    #[serde(default)]
    ip: Option<NetworkIpWire>,
}
#[derive(Debug, Default, Deserialize)]
struct NetworkIpWire {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    address: Option<String>,
}

impl NetworkWire {
    pub(crate) fn normalise(self) -> Option<Network> {
        Some(Network {
            id: self.network_uid?,
            name: self.network_name.unwrap_or_default(),
            kind: self.kind,
            mode: self.mode,
            private: self.private,
            cidr: self.ip.and_then(|i| i.address),
        })
    }
}

#[derive(Serialize)]
pub(crate) struct NetworkInfoRequest<'a> {
    pub network_uid: &'a str,
}

// ---------------------------------------------------------------- load balancers [I]
// Only the route names exist (C4 protocol); every body below is our definition.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum LbProtocol {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LbAlgorithm {
    #[default]
    RoundRobin,
    LeastConnections,
    SourceIp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckProtocol {
    #[default]
    Tcp,
    Http,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
pub struct LbListener {
    pub protocol: LbProtocol,
    pub port: u16,
    /// The NodePort the targets listen on.
    pub target_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbHealthCheck {
    pub protocol: HealthCheckProtocol,
    /// 0 = each listener's own target port.
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub interval_seconds: u32,
    pub timeout_seconds: u32,
    pub retries: u32,
}

/// Which of a target VM's addresses a load balancer sends traffic to [I].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TargetAddress {
    /// The private (VPC) address when the VM has one (§8.3), else its only address.
    #[default]
    Private,
    /// The public address.
    Public,
}

impl TargetAddress {
    pub fn is_private(&self) -> bool {
        *self == TargetAddress::Private
    }
}

/// Desired state of a load balancer [I].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadBalancerSpec {
    pub name: String,
    pub listeners: Vec<LbListener>,
    /// VM `uniqueID`s that receive traffic.
    pub targets: Vec<String>,
    pub health_check: LbHealthCheck,
    pub algorithm: LbAlgorithm,
    pub proxy_protocol: bool,
    /// Internal LB: the address is allocated from the private pool.
    pub private: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Proof of ownership [I: a field of ours, not Elemento's]: the cluster and the Kubernetes
    /// object the LB was made for. A CCM adopts, changes or deletes only an LB that carries its
    /// own marker (see docs/ccm.md, *Ownership*). Absent on LBs made before 0.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<LbOwner>,
    /// Client networks allowed to connect (IPv4 CIDRs); empty = everyone [I]. From the Service's
    /// `loadBalancerSourceRanges`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_sources: Vec<String>,
    /// Which address of each target receives traffic [I]. Sent only when not the default, so
    /// LBs made before this field existed keep an unchanged spec (no update, no replacement).
    #[serde(default, skip_serializing_if = "TargetAddress::is_private")]
    pub target_address: TargetAddress,
}

/// Who a load balancer belongs to [I]: `{"cluster": "<clusterName>", "service_uid": "<uid>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LbOwner {
    pub cluster: String,
    pub service_uid: String,
}

/// A load balancer as the API reports it [I].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadBalancer {
    pub id: String,
    #[serde(flatten)]
    pub spec: LoadBalancerSpec,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
}

// Wire shapes of the services envelope (§8.1): the body of a create is `{"req": {…}}` [K
// envelope], what goes inside `req` is our `LoadBalancerSpec` [I]; the create answer carries
// `service_uuid` [M]; a `running` record is read tolerantly below [I].

/// `{"req": spec}`: the body of create and cancreate.
#[derive(Serialize)]
pub(crate) struct LbCreateWire<'a> {
    pub req: &'a LoadBalancerSpec,
}

/// `{"service_uuid": …, "req": spec}`: our update [I].
#[derive(Serialize)]
pub(crate) struct LbUpdateWire<'a> {
    pub service_uuid: &'a str,
    pub req: &'a LoadBalancerSpec,
}

/// `{"service_uuid": …}`: the client daemon's delete [M].
#[derive(Serialize)]
pub(crate) struct LbIdWire<'a> {
    pub service_uuid: &'a str,
}

/// The create answer `{billing_uuid, payment_url, service_uuid, …}` [M]: the LB id is
/// `service_uuid`.
#[derive(Deserialize)]
pub(crate) struct LbCreatedWire {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub service_uuid: Option<String>,
}

/// One load balancer as `running` and `running/{uuid}` return it [I]. The id is `service_uuid`
/// (the services list column [K]), else `uuid` or `id`; the spec is inside `req`, else at the top
/// level; `ip` and `status` at the top level, else inside `req`.
#[derive(Deserialize)]
pub(crate) struct LbRecordWire {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    service_uuid: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    uuid: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    id: Option<String>,
    #[serde(default)]
    req: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    ip: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    status: Option<String>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

impl LbRecordWire {
    /// `None` for a record without an id or whose spec is not one of ours (another service's
    /// shape, or an LB made outside this project): nothing here can match it.
    pub(crate) fn normalise(self) -> Option<LoadBalancer> {
        let id = self.service_uuid.or(self.uuid).or(self.id)?;
        let spec_json = match self.req {
            Some(r @ serde_json::Value::Object(_)) => r,
            _ => serde_json::Value::Object(self.rest),
        };
        let inner = |k: &str| spec_json.get(k).and_then(|v| v.as_str()).map(String::from);
        let ip = self.ip.or_else(|| inner("ip"));
        let status = self.status.or_else(|| inner("status"));
        let spec: LoadBalancerSpec = serde_json::from_value(spec_json).ok()?;
        Some(LoadBalancer {
            id,
            spec,
            ip,
            status,
        })
    }
}

/// What `cancreate` answers (`{"nservers", "servers": [{"cancreate", "provider", …}]}`) [K route,
/// M body].
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct CanCreate {
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub nservers: Option<u64>,
    #[serde(default, deserialize_with = "lenient::vec_skip_bad")]
    pub servers: Vec<CanCreateServer>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct CanCreateServer {
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub cancreate: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub provider: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub target: Option<String>,
}

impl CanCreate {
    /// `false` only when the answer says no server can create it; an answer that says nothing
    /// either way does not block a create.
    pub fn possible(&self) -> bool {
        match (self.nservers, self.servers.is_empty()) {
            (Some(0), _) => false,
            (_, false) => self.servers.iter().any(|s| s.cancreate != Some(false)),
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    fn vm(record: serde_json::Value) -> super::Vm {
        serde_json::from_value::<super::VmWire>(record)
            .unwrap()
            .normalise()
            .unwrap()
    }

    #[test]
    fn status_fields_are_read_at_either_level() {
        // Later Meson (§8.4): at the top level.
        let top = vm(serde_json::json!({
            "uniqueID": "vm-1", "states": "running", "region": "gra",
            "mesos": {"provider": "ovh", "price": 0.01},
            "vm_tags": ["k8s-cluster=c1", "k8s-nodegroup=g1"],
            "network_config": {"ipv4": "203.0.113.7"},
            "req_json": {"vm_name": "n1", "private_network_config": [{"ipv4": "10.1.0.7/24"}]}
        }));
        // The mock: inside req_json.
        let inner = vm(serde_json::json!({
            "uniqueID": "vm-1",
            "req_json": {"vm_name": "n1", "states": ["running"], "mesos": {"provider": "ovh", "region": "gra"},
                         "vm_tags": {"k8s-cluster": "c1", "k8s-nodegroup": "g1"},
                         "network_config": {"ipv4": "203.0.113.7"},
                         "private_network_config": [{"ipv4": "10.1.0.7"}]}
        }));
        for v in [&top, &inner] {
            assert_eq!(v.power, super::PowerState::Running, "{v:?}");
            assert_eq!(v.provider.as_deref(), Some("ovh"), "{v:?}");
            assert_eq!(v.region.as_deref(), Some("gra"), "{v:?}");
            assert_eq!(v.vm_tags, ["k8s-cluster=c1", "k8s-nodegroup=g1"], "{v:?}");
            assert_eq!(v.ipv4, "203.0.113.7".parse().ok(), "{v:?}");
            assert_eq!(v.private_ipv4, "10.1.0.7".parse().ok(), "{v:?}");
        }
        // A VM without an address yet: `network_config: null` is not an error.
        let bare = vm(
            serde_json::json!({"uniqueID": "vm-2", "network_config": null, "req_json": {"network_config": null}}),
        );
        assert_eq!((bare.ipv4, bare.private_ipv4), (None, None));
        assert!(bare.vm_tags.is_empty());
    }

    #[test]
    fn attach_body_names_the_ids_every_known_way() {
        let body = serde_json::to_value(super::VolumeAttachRequest::new("vm-1", "vol-1")).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"vm_uid": "vm-1", "vm_uuid": "vm-1", "volume_id": "vol-1", "vid": "vol-1"})
        );
    }
}
