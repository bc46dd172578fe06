//! The simulated cloud: plain data plus the rules of each operation, over typed requests. No IO
//! and no wire format here: the HTTP layer (`server.rs`) decodes requests and encodes answers with
//! `wire.rs`, and the host-device layer (`hostdev.rs`) mirrors attachments.

use std::collections::BTreeMap;

use crate::scenario::{self, DiskSerial, Scenario, VmSeed};
use crate::wire;
use elemento_api::disk;
use elemento_api::types::LoadBalancerSpec;
use elemento_api::units;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimVm {
    pub id: String,
    pub name: String,
    pub slots: u32,
    pub ram_mib: u64,
    pub gpus: u32,
    pub ipv4: String,
    pub mac: String,
    #[serde(default)]
    pub private_ipv4: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub provider: Option<String>,
    pub region: Option<String>,
    pub server_url: String,
    pub power: String,
    pub this_host: bool,
    pub volumes: Vec<String>,
    pub created: u64,
    /// Unix milliseconds at which the VM has booted (reports its address); 0 = at once.
    #[serde(default)]
    pub ready_at_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimVolume {
    pub id: String,
    pub name: String,
    pub size_bytes: u64,
    pub format: String,
    pub bus: String,
    pub shareable: bool,
    pub private: bool,
    pub readonly: bool,
    pub bootable: bool,
    pub clonable: bool,
    pub attached_to: Vec<String>,
    /// The 4 hex digits of a name-based serial (§8.2): not derivable from the volume.
    #[serde(default)]
    pub serial_prefix: u16,
    /// The provider the volume was created on (`provider` in the create body [I]); only VMs of
    /// that provider can attach it. `None`: created without one, attachable anywhere.
    #[serde(default)]
    pub provider: Option<String>,
    /// A cloud image volume: the URL it was made from.
    #[serde(default)]
    pub image_url: Option<String>,
    /// A cloud-init volume: its files, as uploaded (kept visible in `/_sim/state`, so tests can
    /// check what user-data carries).
    #[serde(default)]
    pub cloud_init: Option<CloudInitFiles>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CloudInitFiles {
    pub expected: u32,
    pub files: BTreeMap<String, String>,
}

/// One provider's answer for a Spec: can it take it now, and at what hourly price.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub provider: String,
    pub region: Option<String>,
    pub able: bool,
    pub price_hour: f64,
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimNetwork {
    pub id: String,
    pub name: String,
    pub cidr: String,
    pub private: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimLb {
    pub id: String,
    #[serde(flatten)]
    pub spec: LoadBalancerSpec,
    pub ip: String,
    pub status: String,
}

/// Everything the simulator knows; serialised whole to the `--state` file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct World {
    pub scenario: Scenario,
    pub logged_in: bool,
    pub vms: BTreeMap<String, SimVm>,
    pub volumes: BTreeMap<String, SimVolume>,
    pub networks: BTreeMap<String, SimNetwork>,
    pub lbs: BTreeMap<String, SimLb>,
    pub clock: u64,
}

/// An HTTP error answer: status and body text (Elemento's daemons answer raw text [K]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimError {
    pub status: u16,
    pub body: String,
}

pub type SimResult<T> = Result<T, SimError>;

fn err(status: u16, body: impl Into<String>) -> SimError {
    SimError {
        status,
        body: body.into(),
    }
}

pub fn new_id() -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        fastrand::u32(..),
        fastrand::u16(..),
        fastrand::u16(..0x1000),
        fastrand::u16(0x8000..0xc000),
        fastrand::u64(..1 << 48)
    )
}

fn new_mac() -> String {
    format!(
        "52:54:00:{:02x}:{:02x}:{:02x}",
        fastrand::u8(..),
        fastrand::u8(..),
        fastrand::u8(..)
    )
}

impl World {
    pub fn from_scenario(scenario: Scenario) -> anyhow::Result<Self> {
        let mut w = World {
            logged_in: !scenario.auth.require_login,
            vms: BTreeMap::new(),
            volumes: BTreeMap::new(),
            networks: BTreeMap::new(),
            lbs: BTreeMap::new(),
            clock: 0,
            scenario: scenario.clone(),
        };
        for n in &scenario.networks {
            let id = n.id.clone().unwrap_or_else(new_id);
            w.networks.insert(
                id.clone(),
                SimNetwork {
                    id,
                    name: n.name.clone(),
                    cidr: n.cidr.clone(),
                    private: n.private,
                },
            );
        }
        for seed in &scenario.vms {
            w.add_vm(seed)
                .map_err(|e| anyhow::anyhow!("vm {}: {}", seed.name, e.body))?;
        }
        Ok(w)
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    // ------------------------------------------------------------ VMs

    /// Creates a VM (out of band, or from `register`).
    pub fn add_vm(&mut self, seed: &VmSeed) -> SimResult<SimVm> {
        if self.vms.len() >= self.scenario.limits.max_vms {
            // Elemento answers 404 on a licence or organisation limit [K].
            return Err(err(404, "VM limit reached for this organisation"));
        }
        let (mut slots, mut ram, mut gpus) = match &seed.template {
            Some(t) => scenario::template(t).ok_or_else(|| {
                err(
                    400,
                    format!("unknown template {t:?}; known: helium, neon, argon, argon2, kripton"),
                )
            })?,
            None => (2, 2048, 0),
        };
        slots = seed.slots.unwrap_or(slots);
        ram = seed.ram_mib.unwrap_or(ram);
        gpus = seed.gpus.unwrap_or(gpus);
        let id = seed.id.clone().unwrap_or_else(new_id);
        if self.vms.contains_key(&id) {
            return Err(err(400, format!("VM id {id} exists")));
        }
        let ipv4 = match seed.ipv4 {
            Some(ip) => ip.to_string(),
            None => self
                .scenario
                .vm_ip_pool
                .allocate(self.vms.values().map(|v| v.ipv4.as_str()))
                .ok_or_else(|| err(404, "VM address pool exhausted"))?
                .to_string(),
        };
        let power = seed.power.clone().unwrap_or_else(|| "running".into());
        if !matches!(power.as_str(), "running" | "shut off" | "paused") {
            return Err(err(
                400,
                format!("power {power:?}: expected running, shut off or paused"),
            ));
        }
        let created = self.tick();
        let vm = SimVm {
            id: id.clone(),
            name: seed.name.clone(),
            slots,
            ram_mib: ram,
            gpus,
            ipv4,
            mac: new_mac(),
            private_ipv4: seed.private_ipv4.map(|ip| ip.to_string()),
            tags: seed.tags.clone(),
            provider: seed.provider.clone(),
            region: seed.region.clone(),
            server_url: seed
                .server_url
                .clone()
                .unwrap_or_else(|| "https://atomos-1.local:7777".into()),
            power,
            this_host: seed.this_host,
            volumes: vec![],
            created,
            ready_at_ms: 0,
        };
        self.vms.insert(id, vm.clone());
        Ok(vm)
    }

    /// `POST /vm/register` [K]: the Spec; its volumes (boot disk first) are attached, its
    /// `vm_tags` kept, its provider [I] checked for capacity (404, Elemento's limit answer).
    pub fn register(&mut self, req: &wire::Register) -> SimResult<SimVm> {
        let name = req
            .name()
            .ok_or_else(|| err(400, "info.vm_name is required"))?;
        let provider = req
            .provider
            .clone()
            .filter(|p| p != elemento_api::topology::ATOMOS);
        let region = match &provider {
            Some(p) => {
                let seed = self.provider_seed(p).ok_or_else(|| {
                    err(
                        400,
                        format!("unknown provider {p:?}; known: {:?}", self.provider_names()),
                    )
                })?;
                if !self.provider_has_room(&seed) {
                    return Err(err(404, format!("no capacity left on provider {p}")));
                }
                if seed.register_refused {
                    return Err(err(404, format!("licence limit reached on provider {p}")));
                }
                req.region.clone().or(seed.region)
            }
            None => None,
        };
        let volume_ids = req.volume_ids();
        for vid in &volume_ids {
            let v = self.volume(vid)?;
            if !v.attached_to.is_empty() && !v.shareable {
                return Err(err(
                    409,
                    format!("[VolumeAlreadyAttached] volume {vid} is attached"),
                ));
            }
        }
        let seed = VmSeed {
            name: name.to_string(),
            slots: req.slots,
            ram_mib: req.ram_mib,
            gpus: req.gpus(),
            tags: req.vm_tags.clone(),
            region,
            server_url: provider
                .as_ref()
                .map(|p| format!("https://{p}.meson.elemento.cloud:7777")),
            provider,
            ..Default::default()
        };
        let mut vm = self.add_vm(&seed)?;
        vm.volumes = volume_ids.clone();
        if self.scenario.boot_delay_ms > 0 {
            vm.ready_at_ms = now_ms() + self.scenario.boot_delay_ms;
        }
        for vid in &volume_ids {
            if let Some(v) = self.volumes.get_mut(vid) {
                v.attached_to.push(vm.id.clone());
            }
        }
        self.vms.insert(vm.id.clone(), vm.clone());
        Ok(vm)
    }

    fn provider_seed(&self, name: &str) -> Option<scenario::ProviderSeed> {
        self.scenario
            .providers
            .iter()
            .find(|p| p.name == name)
            .cloned()
    }

    fn provider_names(&self) -> Vec<String> {
        let mut n: Vec<String> = self
            .scenario
            .providers
            .iter()
            .map(|p| p.name.clone())
            .collect();
        n.push(elemento_api::topology::ATOMOS.into());
        n
    }

    fn provider_has_room(&self, p: &scenario::ProviderSeed) -> bool {
        let on = self
            .vms
            .values()
            .filter(|v| v.provider.as_deref() == Some(p.name.as_str()))
            .count();
        p.max_vms.is_none_or(|max| on < max) && self.vms.len() < self.scenario.limits.max_vms
    }

    /// `canallocate` and `marketprices` [K]: each public provider's answer for this Spec (one
    /// provider when the request names it [I]), AtomOS when no public provider is configured.
    pub fn placements(&self, req: &wire::Register) -> Vec<Placement> {
        let slots = f64::from(req.slots.unwrap_or(1));
        let gib = req.ram_mib.unwrap_or(1024) as f64 / 1024.0;
        let wanted = |name: &str| req.provider.as_deref().is_none_or(|p| p == name);
        if self.scenario.providers.is_empty() {
            return vec![Placement {
                provider: elemento_api::topology::ATOMOS.into(),
                region: None,
                able: self.vms.len() < self.scenario.limits.max_vms,
                price_hour: 0.0,
            }]
            .into_iter()
            .filter(|p| wanted(&p.provider))
            .collect();
        }
        self.scenario
            .providers
            .iter()
            .filter(|p| wanted(&p.name))
            .map(|p| Placement {
                provider: p.name.clone(),
                region: p.region.clone(),
                able: self.provider_has_room(p),
                price_hour: p.price_per_slot_hour * slots + p.price_per_gib_hour * gib,
            })
            .collect()
    }

    pub fn remove_vm(&mut self, id: &str) -> SimResult<SimVm> {
        let vm = self
            .vms
            .remove(id)
            .ok_or_else(|| err(404, format!("VM {id} not found")))?;
        for vid in &vm.volumes {
            if let Some(v) = self.volumes.get_mut(vid) {
                v.attached_to.retain(|x| x != id);
            }
        }
        for lb in self.lbs.values_mut() {
            lb.spec.targets.retain(|t| t != id);
        }
        Ok(vm)
    }

    pub fn set_power(&mut self, id: &str, power: &str) -> SimResult<()> {
        if !matches!(power, "running" | "shut off" | "paused") {
            return Err(err(
                400,
                format!("power {power:?}: expected running, shut off or paused"),
            ));
        }
        let vm = self
            .vms
            .get_mut(id)
            .ok_or_else(|| err(404, format!("VM {id} not found")))?;
        vm.power = power.to_string();
        Ok(())
    }

    // ------------------------------------------------------------ volumes

    fn used_storage_gb(&self) -> f64 {
        self.volumes
            .values()
            .map(|v| v.size_bytes as f64 / 1e9)
            .sum()
    }

    /// A GB size as bytes on the 0.125 GB grid.
    fn size_bytes(gb: Option<f64>) -> SimResult<u64> {
        let gb = gb.ok_or_else(|| err(400, "size (GB) is required"))?;
        if !(gb > 0.0 && gb.is_finite()) {
            return Err(err(400, format!("size {gb} must be positive")));
        }
        let steps = (gb * 8.0).round();
        if (steps - gb * 8.0).abs() > 1e-6 {
            return Err(err(
                400,
                format!("size {gb} GB is not a multiple of 0.125 GB"),
            ));
        }
        Ok(steps as u64 * units::VOLUME_STEP_BYTES)
    }

    /// Whether a volume of this size fits now.
    pub fn can_create(&self, req: &wire::VolumeCanCreate) -> SimResult<bool> {
        let bytes = Self::size_bytes(req.size_gb)?;
        Ok(self.volumes.len() < self.scenario.limits.max_volumes
            && self.used_storage_gb() + bytes as f64 / 1e9 <= self.scenario.limits.max_storage_gb)
    }

    pub fn create_volume(&mut self, req: &wire::VolumeCreate) -> SimResult<SimVolume> {
        let bytes = Self::size_bytes(req.size_gb)?;
        let text = |k: &str, v: &Option<String>, d: &str, allowed: &[&str]| -> SimResult<String> {
            let v = v.as_deref().unwrap_or(d).to_string();
            if allowed.contains(&v.as_str()) {
                Ok(v)
            } else {
                Err(err(400, format!("{k} {v:?}: expected one of {allowed:?}")))
            }
        };
        let bus = text("bus", &req.bus, "virtio", &["virtio", "sata"])?;
        let format = text("format", &req.format, "raw", &["raw", "qcow2"])?;
        text("alg", &req.alg, "no", &["rsync", "cp", "no"])?;
        let (shareable, bootable) = (
            req.shareable.unwrap_or(false),
            req.bootable.unwrap_or(false),
        );
        if shareable && bootable {
            return Err(err(400, "a volume cannot be both shareable and bootable"));
        }
        if self.volumes.len() >= self.scenario.limits.max_volumes
            || self.used_storage_gb() + bytes as f64 / 1e9 > self.scenario.limits.max_storage_gb
        {
            return Err(err(
                500,
                "[VolumeNotAllocable] no storage server can allocate the volume",
            ));
        }
        let v = SimVolume {
            id: new_id(),
            name: req.name.clone(),
            size_bytes: bytes,
            format,
            bus,
            shareable,
            private: req.private.unwrap_or(true),
            readonly: req.readonly.unwrap_or(false),
            bootable,
            clonable: req.clonable.unwrap_or(true),
            attached_to: vec![],
            serial_prefix: fastrand::u16(..),
            provider: req.provider.clone(),
            image_url: None,
            cloud_init: None,
        };
        self.volumes.insert(v.id.clone(), v.clone());
        Ok(v)
    }

    /// `POST /volume/cloudinit/create` [K]: a bootable volume from a cloud image URL; 400 without
    /// `size` or `url`, or with a URL that is not http(s).
    pub fn create_cloud_image(&mut self, req: &wire::CloudImage) -> SimResult<SimVolume> {
        let url = req.url.clone().ok_or_else(|| err(400, "url is required"))?;
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(err(400, format!("url {url:?} is not an http(s) URL")));
        }
        let v = self.create_volume(&wire::VolumeCreate {
            size_gb: req.size_gb,
            name: req.name.clone(),
            format: Some("qcow2".into()),
            bootable: Some(true),
            ..Default::default()
        })?;
        let v = self.volumes.get_mut(&v.id).expect("just created");
        v.image_url = Some(url);
        Ok(v.clone())
    }

    /// One file of a cloud-init upload (`/volume/cloudinit/metadata/{meta}`) [K]. The first names
    /// the new volume and how many files it takes; later ones name its `vid`. Returns the volume
    /// and whether every expected file is in (200) or not yet (206); 500 for a file too many.
    pub fn cloud_init_upload(
        &mut self,
        meta: &wire::CloudInitMeta,
        file_name: &str,
        content: String,
    ) -> SimResult<(SimVolume, bool)> {
        let id = match &meta.vid {
            Some(vid) => vid.clone(),
            None => {
                let v = self.create_volume(&wire::VolumeCreate {
                    size_gb: Some(0.125),
                    name: meta.name.clone().unwrap_or_default(),
                    private: meta.private,
                    clonable: meta.clonable,
                    bootable: meta.bootable,
                    ..Default::default()
                })?;
                let v = self.volumes.get_mut(&v.id).expect("just created");
                v.cloud_init = Some(CloudInitFiles {
                    expected: meta.expected_files.unwrap_or(2).max(1),
                    files: BTreeMap::new(),
                });
                v.id.clone()
            }
        };
        let v = self
            .volumes
            .get_mut(&id)
            .ok_or_else(|| err(404, format!("[VolumeNotFound] volume {id} not found")))?;
        let ci = v
            .cloud_init
            .as_mut()
            .ok_or_else(|| err(400, format!("volume {id} is not a cloud-init volume")))?;
        if ci.files.len() as u32 >= ci.expected {
            return Err(err(
                500,
                format!("volume {id} already has its {} files", ci.expected),
            ));
        }
        ci.files.insert(file_name.to_string(), content);
        let complete = ci.files.len() as u32 == ci.expected;
        Ok((v.clone(), complete))
    }

    pub fn volume(&self, id: &str) -> SimResult<&SimVolume> {
        self.volumes
            .get(id)
            .ok_or_else(|| err(404, format!("[VolumeNotFound] volume {id} not found")))
    }

    pub fn destroy_volume(&mut self, id: &str) -> SimResult<SimVolume> {
        let v = self.volume(id)?;
        if !v.attached_to.is_empty() {
            return Err(err(
                409,
                format!(
                    "[VolumeInUse] volume {id} is attached to {:?}",
                    v.attached_to
                ),
            ));
        }
        Ok(self.volumes.remove(id).expect("checked above"))
    }

    /// Grow-only resize [I body]. Returns the volume and its previous size.
    pub fn resize_volume(&mut self, req: &wire::VolumeResize) -> SimResult<(SimVolume, u64)> {
        let id = req.volume_id.clone();
        let bytes = Self::size_bytes(req.size_gb)?;
        let v = self.volume(&id)?;
        let old = v.size_bytes;
        if bytes < old {
            return Err(err(
                400,
                "[VolumeDimensionNotShrinkable] volumes can only grow",
            ));
        }
        if self.used_storage_gb() + (bytes - old) as f64 / 1e9 > self.scenario.limits.max_storage_gb
        {
            return Err(err(
                500,
                "[VolumeNotAllocable] not enough space to grow the volume",
            ));
        }
        let v = self.volumes.get_mut(&id).expect("checked above");
        v.size_bytes = bytes;
        Ok((v.clone(), old))
    }

    /// Attach [I body]. Idempotent for the same VM; a volume attached elsewhere is refused unless
    /// shareable. Returns the volume, the VM and whether this call changed anything.
    pub fn attach(&mut self, req: &wire::Attachment) -> SimResult<(SimVolume, SimVm, bool)> {
        let (vm_id, vol_id) = (req.vm_uid.clone(), req.volume_id.clone());
        let vm = self
            .vms
            .get(&vm_id)
            .ok_or_else(|| err(404, format!("VM {vm_id} not found")))?
            .clone();
        let v = self.volume(&vol_id)?.clone();
        if v.attached_to.contains(&vm_id) {
            return Ok((v, vm, false));
        }
        // A volume lives on one provider: a VM elsewhere cannot reach it.
        let vm_provider = vm
            .provider
            .as_deref()
            .unwrap_or(elemento_api::topology::ATOMOS);
        if let Some(p) = v.provider.as_deref().filter(|p| *p != vm_provider) {
            return Err(err(
                409,
                format!(
                    "[VolumeNotAccessible] volume {vol_id} is on provider {p}; VM {vm_id} is on {vm_provider}"
                ),
            ));
        }
        if !v.attached_to.is_empty() && !v.shareable {
            return Err(err(
                409,
                format!(
                    "[VolumeAlreadyAttached] volume {vol_id} is attached to VM {} and is not shareable",
                    v.attached_to[0]
                ),
            ));
        }
        if vm.volumes.len() >= self.scenario.limits.max_volumes_per_vm {
            return Err(err(
                409,
                format!(
                    "[TooManyVolumes] VM {vm_id} has {} volumes attached",
                    vm.volumes.len()
                ),
            ));
        }
        let v = self.volumes.get_mut(&vol_id).expect("checked above");
        v.attached_to.push(vm_id.clone());
        let v = v.clone();
        let vm = self.vms.get_mut(&vm_id).expect("checked above");
        vm.volumes.push(vol_id);
        Ok((v, vm.clone(), true))
    }

    /// The serial the guest sees for a volume, in the scenario's scheme.
    pub fn guest_serial(&self, v: &SimVolume) -> String {
        match self.scenario.wire.disk_serial {
            DiskSerial::IdPrefix => disk::id_prefix_serial(&v.id),
            DiskSerial::Name => {
                disk::name_serial(v.serial_prefix, &v.name, disk::VIRTIO_SERIAL_LEN)
            }
        }
    }

    /// The hypervisor's name for a VM's disk: the boot disk is vda, data disks follow in attach
    /// order.
    pub fn target_dev(vm: &SimVm, volume_id: &str) -> String {
        let idx = vm.volumes.iter().position(|x| x == volume_id).unwrap_or(0) + 1;
        format!("vd{}", (b'a' + (idx % 26) as u8) as char)
    }

    pub fn detach(&mut self, req: &wire::Attachment) -> SimResult<(SimVolume, SimVm)> {
        let (vm_id, vol_id) = (req.vm_uid.clone(), req.volume_id.clone());
        let attached = self
            .vms
            .get(&vm_id)
            .is_some_and(|vm| vm.volumes.contains(&vol_id));
        if !attached {
            return Err(err(
                404,
                format!("volume {vol_id} is not attached to VM {vm_id}"),
            ));
        }
        let vm = self.vms.get_mut(&vm_id).expect("checked above");
        vm.volumes.retain(|x| *x != vol_id);
        let vm = vm.clone();
        let v = self
            .volumes
            .get_mut(&vol_id)
            .ok_or_else(|| err(404, "volume not found"))?;
        v.attached_to.retain(|x| *x != vm_id);
        Ok((v.clone(), vm))
    }

    // ------------------------------------------------------------ networks

    pub fn network(&self, id: &str) -> SimResult<&SimNetwork> {
        self.networks
            .get(id)
            .ok_or_else(|| err(404, format!("network {id} not found")))
    }

    // ------------------------------------------------------------ load balancers [I]

    fn validate_lb(&self, spec: &LoadBalancerSpec) -> SimResult<()> {
        if spec.name.trim().is_empty() {
            return Err(err(400, "name is required"));
        }
        if spec.listeners.is_empty() {
            return Err(err(400, "at least one listener is required"));
        }
        for l in &spec.listeners {
            if l.port == 0 || l.target_port == 0 {
                return Err(err(400, format!("listener {l:?}: ports must be 1-65535")));
            }
        }
        // The allow-list is enforced by the (simulated) LB: it must be one it can apply.
        if let Some(bad) = spec.allowed_sources.iter().find(|c| {
            c.split_once('/')
                .and_then(|(ip, len)| {
                    Some((
                        ip.parse::<std::net::Ipv4Addr>().ok()?,
                        len.parse::<u8>().ok()?,
                    ))
                })
                .is_none_or(|(_, len)| len > 32)
        }) {
            return Err(err(
                400,
                format!("allowed_sources: {bad:?} is not an IPv4 CIDR"),
            ));
        }
        if let Some(t) = spec.targets.iter().find(|t| !self.vms.contains_key(*t)) {
            return Err(err(
                400,
                format!("[TargetNotFound] target VM {t} does not exist"),
            ));
        }
        Ok(())
    }

    /// Why a load balancer cannot be created now, if it cannot (limit or address pool).
    fn lb_capacity(&self, spec: &LoadBalancerSpec) -> Result<std::net::Ipv4Addr, String> {
        if self.lbs.len() >= self.scenario.limits.max_load_balancers {
            return Err("load balancer limit reached for this organisation".into());
        }
        let pool = if spec.private {
            self.scenario.lb_private_ip_pool
        } else {
            self.scenario.lb_ip_pool
        };
        pool.allocate(self.lbs.values().map(|l| l.ip.as_str()))
            .ok_or_else(|| "load balancer address pool exhausted".into())
    }

    /// The `cancreate` answer of the services envelope [K route, M body]: one (simulated) server,
    /// able or not.
    /// Whether this load balancer can be created now.
    pub fn lb_can_create(&self, spec: &LoadBalancerSpec) -> SimResult<bool> {
        self.validate_lb(spec)?;
        Ok(self.lb_capacity(spec).is_ok())
    }

    pub fn create_lb(&mut self, spec: LoadBalancerSpec) -> SimResult<SimLb> {
        self.validate_lb(&spec)?;
        let ip = self.lb_capacity(&spec).map_err(|why| err(404, why))?;
        let lb = SimLb {
            id: new_id(),
            spec,
            ip: ip.to_string(),
            status: "active".into(),
        };
        self.lbs.insert(lb.id.clone(), lb.clone());
        Ok(lb)
    }

    pub fn lb(&self, id: &str) -> SimResult<&SimLb> {
        self.lbs
            .get(id)
            .ok_or_else(|| err(404, format!("load balancer {id} not found")))
    }

    pub fn update_lb(&mut self, id: &str, spec: LoadBalancerSpec) -> SimResult<SimLb> {
        self.validate_lb(&spec)?;
        let old = self.lb(id)?.clone();
        // Switching between public and private changes the address pool.
        let ip = if old.spec.private != spec.private {
            let pool = if spec.private {
                self.scenario.lb_private_ip_pool
            } else {
                self.scenario.lb_ip_pool
            };
            pool.allocate(self.lbs.values().map(|l| l.ip.as_str()))
                .ok_or_else(|| err(404, "load balancer address pool exhausted"))?
                .to_string()
        } else {
            old.ip
        };
        let lb = SimLb {
            id: id.to_string(),
            spec,
            ip,
            status: "active".into(),
        };
        self.lbs.insert(id.to_string(), lb.clone());
        Ok(lb)
    }

    pub fn delete_lb(&mut self, id: &str) -> SimResult<SimLb> {
        self.lbs
            .remove(id)
            .ok_or_else(|| err(404, format!("load balancer {id} not found")))
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use serde_json::{Value, json};

    /// A request as the HTTP layer decodes it.
    fn req<T: serde::de::DeserializeOwned>(body: Value) -> T {
        wire::decode(body.to_string().as_bytes()).expect("request")
    }

    fn world() -> World {
        let vms = vec![
            VmSeed {
                name: "a".into(),
                template: Some("neon".into()),
                ..Default::default()
            },
            VmSeed {
                name: "b".into(),
                ..Default::default()
            },
        ];
        World::from_scenario(Scenario {
            vms,
            ..Default::default()
        })
        .unwrap()
    }

    fn ids(w: &World) -> (String, String) {
        let mut it = w.vms.values();
        (it.next().unwrap().id.clone(), it.next().unwrap().id.clone())
    }

    #[test]
    fn attach_rules() {
        let mut w = world();
        let (a, b) = ids(&w);
        let v = w
            .create_volume(&req(json!({"size": 1.125, "name": "v"})))
            .unwrap();
        let vid = v.id.clone();
        let body: wire::Attachment = req(json!({"vm_uid": a, "volume_id": vid}));
        assert!(w.attach(&body).unwrap().2);
        assert!(
            !w.attach(&body).unwrap().2,
            "second attach to the same VM is a no-op"
        );
        let e = w
            .attach(&req(json!({"vm_uid": b, "volume_id": vid})))
            .unwrap_err();
        assert_eq!(e.status, 409);
        assert_eq!(w.destroy_volume(&vid).unwrap_err().status, 409);
        w.detach(&body).unwrap();
        assert_eq!(w.detach(&body).unwrap_err().status, 404);
        w.destroy_volume(&vid).unwrap();
    }

    /// A volume made on a provider attaches only to VMs of that provider (no provider = atomos).
    #[test]
    fn volumes_attach_only_within_their_provider() {
        let mut w = world();
        let (a, _) = ids(&w);
        let on = |w: &mut World, provider: &str| {
            w.create_volume(&req(
                json!({"size": 1.125, "name": provider, "provider": provider}),
            ))
            .unwrap()
            .id
        };
        let ovh = on(&mut w, "ovh");
        let e = w
            .attach(&req(json!({"vm_uid": a, "volume_id": ovh})))
            .unwrap_err();
        assert_eq!(e.status, 409);
        assert!(
            e.body.contains("VolumeNotAccessible") && e.body.contains("ovh"),
            "{}",
            e.body
        );
        let atomos = on(&mut w, "atomos");
        assert!(
            w.attach(&req(json!({"vm_uid": a, "volume_id": atomos})))
                .unwrap()
                .2
        );
        assert_eq!(
            w.volume(&atomos).unwrap().provider.as_deref(),
            Some("atomos")
        );
    }

    #[test]
    fn sizes_are_on_the_grid_and_grow_only() {
        let mut w = world();
        assert_eq!(
            w.create_volume(&req(json!({"size": 1.1})))
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            w.create_volume(&req(json!({"size": -1})))
                .unwrap_err()
                .status,
            400
        );
        let v = w.create_volume(&req(json!({"size": "2"}))).unwrap();
        assert_eq!(v.size_bytes, 2_000_000_000u64);
        let vid = v.id.as_str();
        let e = w
            .resize_volume(&req(json!({"volume_id": vid, "size": 1})))
            .unwrap_err();
        assert!(e.body.contains("NotShrinkable"));
        assert_eq!(
            w.resize_volume(&req(json!({"volume_id": vid, "size": 3})))
                .unwrap()
                .0
                .size_bytes,
            3_000_000_000
        );
    }

    #[test]
    fn limits_answer_404_for_vms_and_not_allocable_for_storage() {
        let mut s = Scenario::default();
        s.limits.max_vms = 1;
        s.limits.max_storage_gb = 2.0;
        let mut w = World::from_scenario(s).unwrap();
        w.add_vm(&VmSeed {
            name: "x".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            w.register(&req(json!({"info": {"vm_name": "y"}})))
                .unwrap_err()
                .status,
            404
        );
        assert!(!w.can_create(&req(json!({"size": "3"}))).unwrap());
        assert!(
            w.create_volume(&req(json!({"size": 3})))
                .unwrap_err()
                .body
                .contains("VolumeNotAllocable")
        );
    }

    #[test]
    fn removing_a_vm_detaches_and_untargets() {
        let mut w = world();
        let (a, _) = ids(&w);
        let v = w.create_volume(&req(json!({"size": 1}))).unwrap();
        let vid = v.id.clone();
        w.attach(&req(json!({"vm_uid": a, "volume_id": vid})))
            .unwrap();
        w.remove_vm(&a).unwrap();
        assert!(w.volumes[&vid].attached_to.is_empty());
    }
}
