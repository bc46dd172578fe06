//! The simulated cloud: plain data plus the rules of each operation. No IO here; the HTTP layer
//! (`api.rs`) calls these methods and the host-device layer (`hostdev.rs`) mirrors attachments.

use std::collections::BTreeMap;

use elemento_api::types::LoadBalancerSpec;
use elemento_api::units;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::scenario::{self, DiskSerial, Scenario, VmSeed};
use elemento_api::disk;

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
        };
        self.vms.insert(id, vm.clone());
        Ok(vm)
    }

    /// `POST /vm/register` [K]: the Spec body.
    pub fn register(&mut self, body: &Value) -> SimResult<Value> {
        let name = body
            .pointer("/info/vm_name")
            .or_else(|| body.get("vm_name"))
            .and_then(Value::as_str)
            .ok_or_else(|| err(400, "info.vm_name is required"))?;
        let seed = VmSeed {
            name: name.to_string(),
            slots: body.get("slots").and_then(Value::as_u64).map(|v| v as u32),
            ram_mib: body.get("ramsize").and_then(Value::as_u64),
            gpus: body.get("pci").and_then(Value::as_array).map(|a| {
                a.iter()
                    .map(|p| p.get("quantity").and_then(Value::as_u64).unwrap_or(1) as u32)
                    .sum()
            }),
            ..Default::default()
        };
        let vm = self.add_vm(&seed)?;
        Ok(self.vm_json(&vm))
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

    /// The wire shape of one `GET /vm/status` item [K] (newer [M] fields included). The status
    /// fields go inside `req_json` (the mock) or at the top level (later Meson, §8.4), as the
    /// scenario's `wire.vm_status_top_level` says.
    pub fn vm_json(&self, vm: &SimVm) -> Value {
        let mut req = json!({
            "vm_name": vm.name, "slots": vm.slots, "overprovision": 2, "allowSMT": false,
            "arch": "X86_64", "flags": ["sse2"],
            // GB in the status list [K].
            "ramsize": vm.ram_mib as f64 / 1024.0,
            "reqECC": false, "os_family": "linux", "os_flavour": "ubuntu",
            "volumes": vm.volumes.iter().map(|v| json!({"vid": v})).collect::<Vec<_>>(),
            "pcidevs": if vm.gpus > 0 { json!([{"vendor": "10de", "model": "1bb1", "quantity": vm.gpus}]) } else { json!([]) },
            "netdevs": [],
            "creation_date": format!("2026-01-01T00:00:{:02}Z", vm.created % 60),
        });
        let mut status = json!({
            "network_config": {"ipv4": vm.ipv4, "mac": vm.mac},
            "states": vm.power,
            "xml": self.domain_xml(vm),
        });
        if let Some(p) = &vm.private_ipv4 {
            status["private_network_config"] = json!([{"ipv4": p, "mac": vm.mac}]);
        }
        if !vm.tags.is_empty() {
            status["vm_tags"] = json!(vm.tags);
        }
        if let Some(p) = &vm.provider {
            status["mesos"] = json!({"provider": p, "region": vm.region, "price": {"hour": 0.01, "month": 7.2, "unit": "EUR"}});
        }
        let mut record = json!({
            "uniqueID": vm.id, "serverurl": vm.server_url,
            "provider": vm.provider,
            "target_type": if vm.provider.is_some() { "meson_public" } else { "atomos_local_ip" },
        });
        let into = if self.scenario.wire.vm_status_top_level {
            &mut record
        } else {
            &mut req
        };
        if let (Value::Object(dst), Value::Object(src)) = (into, status) {
            dst.extend(src);
        }
        record["req_json"] = req;
        record
    }

    pub fn vm_list_json(&self) -> Value {
        Value::Array(self.vms.values().map(|v| self.vm_json(v)).collect())
    }

    pub fn templates_json() -> Value {
        Value::Array(
            scenario::TEMPLATES
                .iter()
                .map(|(key, name, slots, ram, gpus)| {
                    let (overprovision, flags) = scenario::template_cpu(key);
                    json!({
                        "info": {"name": name, "description": format!("{name} flavour")},
                        "cpu": {"slots": slots, "overprovision": overprovision, "allowSMT": false, "archs": ["X86_64"], "flags": flags},
                        "ram": {"ramsize": ram, "reqECC": false},
                        "pci": if *gpus > 0 { json!([{"vendor": "10de", "model": "1bb1", "quantity": gpus}]) } else { json!([]) },
                    })
                })
                .collect(),
        )
    }

    // ------------------------------------------------------------ volumes

    fn used_storage_gb(&self) -> f64 {
        self.volumes
            .values()
            .map(|v| v.size_bytes as f64 / 1e9)
            .sum()
    }

    /// Parses a GB size (number or numeric string) into bytes on the 0.125 GB grid.
    fn size_field(body: &Value) -> SimResult<u64> {
        let gb = match body.get("size") {
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
        .ok_or_else(|| err(400, "size (GB) is required"))?;
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

    pub fn can_create(&self, body: &Value) -> SimResult<Value> {
        let bytes = Self::size_field(body)?;
        let fits = self.volumes.len() < self.scenario.limits.max_volumes
            && self.used_storage_gb() + bytes as f64 / 1e9 <= self.scenario.limits.max_storage_gb;
        Ok(json!(if fits { 1 } else { 0 }))
    }

    pub fn create_volume(&mut self, body: &Value) -> SimResult<Value> {
        let bytes = Self::size_field(body)?;
        let name = body
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let text = |k: &str, d: &str, allowed: &[&str]| -> SimResult<String> {
            let v = body.get(k).and_then(Value::as_str).unwrap_or(d).to_string();
            if allowed.contains(&v.as_str()) {
                Ok(v)
            } else {
                Err(err(400, format!("{k} {v:?}: expected one of {allowed:?}")))
            }
        };
        let flag = |k: &str, d: bool| body.get(k).and_then(Value::as_bool).unwrap_or(d);
        let bus = text("bus", "virtio", &["virtio", "sata"])?;
        let format = text("format", "raw", &["raw", "qcow2"])?;
        text("alg", "no", &["rsync", "cp", "no"])?;
        let (shareable, bootable) = (flag("shareable", false), flag("bootable", false));
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
            name,
            size_bytes: bytes,
            format,
            bus,
            shareable,
            private: flag("private", true),
            readonly: flag("readonly", false),
            bootable,
            clonable: flag("clonable", true),
            attached_to: vec![],
            serial_prefix: fastrand::u16(..),
            provider: body
                .get("provider")
                .and_then(Value::as_str)
                .map(String::from),
        };
        self.volumes.insert(v.id.clone(), v.clone());
        // The create answer uses `vid` and `img_format` (thesis schema [K]).
        Ok(json!({
            "vid": v.id, "name": v.name, "size": self.size_out(v.size_bytes), "img_format": v.format,
            "bus": v.bus, "alg": "no", "clonable": v.clonable, "private": v.private,
            "shareable": v.shareable, "readonly": v.readonly, "bootable": v.bootable, "creatorID": "sim",
            "provider": v.provider,
        }))
    }

    fn size_out(&self, bytes: u64) -> Value {
        if self.scenario.wire.volume_size_gb {
            json!(bytes as f64 / 1e9)
        } else {
            json!(bytes)
        }
    }

    pub fn volume_json(&self, v: &SimVolume) -> Value {
        json!({
            "volumeID": v.id, "name": v.name, "size": self.size_out(v.size_bytes),
            "sizeOnDisk": 0, "format": v.format, "bus": v.bus, "alg": "no", "private": v.private,
            "bootable": v.bootable, "readonly": v.readonly, "shareable": v.shareable,
            "clonable": v.clonable, "cloudinit": false, "ceph": false, "exported": true, "own": true,
            "creatorID": "sim", "server": "storage-1", "servers": ["storage-1"], "nservers": 1,
            "serverurl": "https://storage-1.local:7772", "lastUpdated": "2026-01-01T00:00:00Z",
            "provider": v.provider,
        })
    }

    fn volume_id_field(body: &Value) -> SimResult<&str> {
        body.get("volume_id")
            .and_then(Value::as_str)
            .ok_or_else(|| err(400, "volume_id is required"))
    }

    pub fn volume(&self, id: &str) -> SimResult<&SimVolume> {
        self.volumes
            .get(id)
            .ok_or_else(|| err(404, format!("[VolumeNotFound] volume {id} not found")))
    }

    pub fn volume_info(&self, body: &Value) -> SimResult<Value> {
        let v = self.volume(Self::volume_id_field(body)?)?;
        let j = self.volume_json(v);
        Ok(if self.scenario.wire.volume_info_wrapped {
            json!({ "volume": j })
        } else {
            j
        })
    }

    pub fn destroy_volume(&mut self, body: &Value) -> SimResult<SimVolume> {
        let id = Self::volume_id_field(body)?.to_string();
        let v = self.volume(&id)?;
        if !v.attached_to.is_empty() {
            return Err(err(
                409,
                format!(
                    "[VolumeInUse] volume {id} is attached to {:?}",
                    v.attached_to
                ),
            ));
        }
        Ok(self.volumes.remove(&id).expect("checked above"))
    }

    /// Grow-only resize [I body]. Returns the volume and its previous size.
    pub fn resize_volume(&mut self, body: &Value) -> SimResult<(SimVolume, u64)> {
        let id = Self::volume_id_field(body)?.to_string();
        let bytes = Self::size_field(body)?;
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
    pub fn attach(&mut self, body: &Value) -> SimResult<(SimVolume, SimVm, bool)> {
        let (vm_id, vol_id) = Self::attach_fields(body)?;
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
    fn target_dev(vm: &SimVm, volume_id: &str) -> String {
        let idx = vm.volumes.iter().position(|x| x == volume_id).unwrap_or(0) + 1;
        format!("vd{}", (b'a' + (idx % 26) as u8) as char)
    }

    /// The attach answer [I]: device and serial in the id-prefix scheme; nothing in the name
    /// scheme (no source shows what attach returns).
    pub fn attach_answer(&self, vm: &SimVm, v: &SimVolume) -> Value {
        match self.scenario.wire.disk_serial {
            DiskSerial::IdPrefix => json!({
                "vm_uid": vm.id, "volume_id": v.id,
                "device": format!("/dev/{}", Self::target_dev(vm, &v.id)),
                "serial": self.guest_serial(v),
            }),
            DiskSerial::Name => json!({"vm_uid": vm.id, "volume_id": v.id}),
        }
    }

    /// The libvirt domain XML of a VM [K shape]: `<target dev bus>` per disk, and `<serial>` only
    /// in the name scheme (today's real XML has none, §8.2).
    fn domain_xml(&self, vm: &SimVm) -> String {
        let mut disks = String::from(
            "<disk type='file' device='disk'><source file='/var/lib/atomos/boot.qcow2'/><target dev='vda' bus='virtio'/></disk>",
        );
        for vid in &vm.volumes {
            let serial = match (self.scenario.wire.disk_serial, self.volumes.get(vid)) {
                (DiskSerial::Name, Some(v)) => format!("<serial>{}</serial>", self.guest_serial(v)),
                _ => String::new(),
            };
            disks.push_str(&format!(
                "<disk type='file' device='disk'><source file='/var/lib/atomos/volumes/{vid}.img'/><target dev='{}' bus='virtio'/>{serial}</disk>",
                Self::target_dev(vm, vid)
            ));
        }
        format!(
            "<domain type='kvm'><name>{}</name><uuid>{}</uuid><devices>{disks}</devices></domain>",
            vm.id, vm.id
        )
    }

    pub fn detach(&mut self, body: &Value) -> SimResult<(SimVolume, SimVm)> {
        let (vm_id, vol_id) = Self::attach_fields(body)?;
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

    fn attach_fields(body: &Value) -> SimResult<(String, String)> {
        let vm = body
            .get("vm_uid")
            .or_else(|| body.get("local_index"))
            .and_then(Value::as_str)
            .ok_or_else(|| err(400, "vm_uid is required"))?;
        let vol = body
            .get("volume_id")
            .or_else(|| body.get("vid"))
            .and_then(Value::as_str)
            .ok_or_else(|| err(400, "volume_id is required"))?;
        Ok((vm.to_string(), vol.to_string()))
    }

    pub fn volume_list_json(&self) -> Vec<Value> {
        self.volumes.values().map(|v| self.volume_json(v)).collect()
    }

    // ------------------------------------------------------------ networks

    pub fn network_json(n: &SimNetwork) -> Value {
        json!({
            "network_uid": n.id, "network_name": n.name, "type": "libvirt", "mode": "nat",
            "private": n.private, "creator_uid": "sim", "device_name": "virbr0",
            "serverurl": "https://atomos-1.local:7776", "ip": {"address": n.cidr}, "routes": [],
        })
    }

    pub fn network_info(&self, body: &Value) -> SimResult<Value> {
        let id = body
            .get("network_uid")
            .and_then(Value::as_str)
            .ok_or_else(|| err(400, "network_uid is required"))?;
        self.networks
            .get(id)
            .map(Self::network_json)
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
    pub fn lb_can_create(&self, spec: &LoadBalancerSpec) -> SimResult<Value> {
        self.validate_lb(spec)?;
        let able = self.lb_capacity(spec).is_ok();
        Ok(json!({
            "nservers": u32::from(able),
            "servers": [{"cancreate": able, "provider": "atomos", "target": "elemento-sim", "carbon_footprint": 0, "billing": []}],
        }))
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

    /// A `running` record of the services envelope [I]: `service_uuid` and `status` as the
    /// services list has them [K columns], the address at the top level, our spec in `req`.
    pub fn lb_record(lb: &SimLb) -> Value {
        json!({
            "service_uuid": lb.id, "status": lb.status, "ip": lb.ip,
            "req": serde_json::to_value(&lb.spec).unwrap_or_default(),
        })
    }

    pub fn delete_lb(&mut self, id: &str) -> SimResult<SimLb> {
        self.lbs
            .remove(id)
            .ok_or_else(|| err(404, format!("load balancer {id} not found")))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn templates_carry_the_repository_cpu_fields() {
        let t = World::templates_json();
        let cpu = |name: &str| {
            t.as_array()
                .unwrap()
                .iter()
                .find(|x| x["info"]["name"] == name)
                .map(|x| x["cpu"].clone())
                .unwrap()
        };
        assert_eq!(cpu("Helium")["overprovision"], 4);
        assert_eq!(cpu("Helium")["flags"], serde_json::json!([]));
        assert_eq!(cpu("Neon")["flags"], serde_json::json!(["sse2"]));
        for n in ["Argon", "Argon 2", "Kripton"] {
            assert_eq!(cpu(n)["flags"], serde_json::json!(["sse2", "avx2"]), "{n}");
            assert_eq!(cpu(n)["overprovision"], 2, "{n}");
        }
    }

    use super::*;

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
            .create_volume(&json!({"size": 1.125, "name": "v"}))
            .unwrap();
        let vid = v["vid"].as_str().unwrap().to_string();
        let body = json!({"vm_uid": a, "volume_id": vid});
        assert!(w.attach(&body).unwrap().2);
        assert!(
            !w.attach(&body).unwrap().2,
            "second attach to the same VM is a no-op"
        );
        let e = w
            .attach(&json!({"vm_uid": b, "volume_id": vid}))
            .unwrap_err();
        assert_eq!(e.status, 409);
        assert_eq!(
            w.destroy_volume(&json!({"volume_id": vid}))
                .unwrap_err()
                .status,
            409
        );
        w.detach(&body).unwrap();
        assert_eq!(w.detach(&body).unwrap_err().status, 404);
        w.destroy_volume(&json!({"volume_id": vid})).unwrap();
    }

    /// A volume made on a provider attaches only to VMs of that provider (no provider = atomos).
    #[test]
    fn volumes_attach_only_within_their_provider() {
        let mut w = world();
        let (a, _) = ids(&w);
        let on = |w: &mut World, provider: &str| {
            w.create_volume(&json!({"size": 1.125, "name": provider, "provider": provider}))
                .unwrap()["vid"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let ovh = on(&mut w, "ovh");
        let e = w
            .attach(&json!({"vm_uid": a, "volume_id": ovh}))
            .unwrap_err();
        assert_eq!(e.status, 409);
        assert!(
            e.body.contains("VolumeNotAccessible") && e.body.contains("ovh"),
            "{}",
            e.body
        );
        let atomos = on(&mut w, "atomos");
        assert!(
            w.attach(&json!({"vm_uid": a, "volume_id": atomos}))
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
            w.create_volume(&json!({"size": 1.1})).unwrap_err().status,
            400
        );
        assert_eq!(
            w.create_volume(&json!({"size": -1})).unwrap_err().status,
            400
        );
        let v = w.create_volume(&json!({"size": "2"})).unwrap();
        assert_eq!(v["size"], json!(2_000_000_000u64));
        let vid = v["vid"].as_str().unwrap();
        let e = w
            .resize_volume(&json!({"volume_id": vid, "size": 1}))
            .unwrap_err();
        assert!(e.body.contains("NotShrinkable"));
        assert_eq!(
            w.resize_volume(&json!({"volume_id": vid, "size": 3}))
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
            w.register(&json!({"info": {"vm_name": "y"}}))
                .unwrap_err()
                .status,
            404
        );
        assert_eq!(w.can_create(&json!({"size": "3"})).unwrap(), json!(0));
        assert!(
            w.create_volume(&json!({"size": 3}))
                .unwrap_err()
                .body
                .contains("VolumeNotAllocable")
        );
    }

    #[test]
    fn removing_a_vm_detaches_and_untargets() {
        let mut w = world();
        let (a, _) = ids(&w);
        let v = w.create_volume(&json!({"size": 1})).unwrap();
        let vid = v["vid"].as_str().unwrap().to_string();
        w.attach(&json!({"vm_uid": a, "volume_id": vid})).unwrap();
        w.remove_vm(&a).unwrap();
        assert!(w.volumes[&vid].attached_to.is_empty());
    }
}
