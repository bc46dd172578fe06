//! Elemento's wire format, in one place: request bodies decoded into typed requests for the
//! rules in `world.rs`, and the answers' JSON shapes (with the scenario's `wire` variants).
//! Evidence tags as in `docs/meson-api.md`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use elemento_api::types::LoadBalancerSpec;

use crate::scenario::{self, DiskSerial};
use crate::world::{Placement, SimError, SimLb, SimNetwork, SimVm, SimVolume, World};

/// A request body as `T`; an empty body reads as `{}`. A body that does not decode is a 400
/// naming what is wrong.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, SimError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| SimError {
        status: 400,
        body: format!("invalid request body: {e}"),
    })
}

// ------------------------------------------------------------------ requests

/// `POST /login`.
#[derive(Debug, Deserialize)]
pub struct Login {
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub org: Option<String>,
}

/// A VM named by id: `vm_uid` (start/stop/reboot [K]) or `local_index` (unregister [K], the TUI);
/// a client may send both.
#[derive(Debug, Deserialize)]
#[serde(try_from = "VmRefWire")]
pub struct VmRef {
    pub vm_uid: String,
}

#[derive(Deserialize)]
struct VmRefWire {
    vm_uid: Option<String>,
    local_index: Option<String>,
}

impl TryFrom<VmRefWire> for VmRef {
    type Error = &'static str;
    fn try_from(w: VmRefWire) -> Result<Self, Self::Error> {
        let vm_uid = w.vm_uid.or(w.local_index).ok_or("vm_uid is required")?;
        Ok(Self { vm_uid })
    }
}

/// The register body (the Spec [K]), as far as the simulator reads it.
#[derive(Debug, Default, Deserialize)]
pub struct Register {
    #[serde(default)]
    info: Option<RegisterInfo>,
    /// The 2023 flows put the name at the top level [K].
    #[serde(default)]
    vm_name: Option<String>,
    #[serde(default)]
    pub slots: Option<u32>,
    /// MiB in the register body [K].
    #[serde(default, rename = "ramsize")]
    pub ram_mib: Option<u64>,
    #[serde(default)]
    pci: Vec<PciDevice>,
    #[serde(default)]
    volumes: Vec<VolumeSlot>,
    #[serde(default)]
    networks: Vec<NetworkSlot>,
    #[serde(default)]
    pub vm_tags: Vec<String>,
    /// Where the VM goes [I]: no source shows how `register` receives the provider chosen from
    /// `canallocate` (see docs/meson-api.md).
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RegisterInfo {
    #[serde(default)]
    vm_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PciDevice {
    #[serde(default = "one")]
    quantity: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
struct VolumeSlot {
    vid: String,
    #[serde(default)]
    priority: i64,
}

#[derive(Debug, Deserialize)]
struct NetworkSlot {
    network_uid: String,
}

impl Register {
    /// `info.vm_name`, or the top-level `vm_name` of older flows.
    pub fn name(&self) -> Option<&str> {
        self.info
            .as_ref()
            .and_then(|i| i.vm_name.as_deref())
            .or(self.vm_name.as_deref())
    }

    pub fn gpus(&self) -> Option<u32> {
        (!self.pci.is_empty()).then(|| self.pci.iter().map(|p| p.quantity).sum())
    }

    /// Volume ids in boot order (`priority`, then as listed).
    pub fn volume_ids(&self) -> Vec<String> {
        let mut v: Vec<&VolumeSlot> = self.volumes.iter().collect();
        v.sort_by_key(|s| s.priority);
        v.into_iter().map(|s| s.vid.clone()).collect()
    }

    pub fn network_ids(&self) -> Vec<String> {
        self.networks
            .iter()
            .map(|n| n.network_uid.clone())
            .collect()
    }
}

/// A size in GB: a number, or a numeric string (the CLI sends `"100"` [K]). Anything else reads
/// as absent, which the rules refuse as a missing size.
fn gb<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

/// `POST /volume/cancreate` [K].
#[derive(Debug, Deserialize)]
pub struct VolumeCanCreate {
    #[serde(default, rename = "size", deserialize_with = "gb")]
    pub size_gb: Option<f64>,
}

/// `POST /volume/create` [K] (`provider` [I]).
#[derive(Debug, Default, Deserialize)]
pub struct VolumeCreate {
    #[serde(default, rename = "size", deserialize_with = "gb")]
    pub size_gb: Option<f64>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub bus: Option<String>,
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub alg: Option<String>,
    #[serde(default)]
    pub shareable: Option<bool>,
    #[serde(default)]
    pub bootable: Option<bool>,
    #[serde(default)]
    pub private: Option<bool>,
    #[serde(default)]
    pub readonly: Option<bool>,
    #[serde(default)]
    pub clonable: Option<bool>,
    #[serde(default)]
    pub provider: Option<String>,
}

/// `{"volume_id"}`: info and destroy [K].
#[derive(Debug, Deserialize)]
pub struct VolumeRef {
    pub volume_id: String,
}

/// Resize [I body].
#[derive(Debug, Deserialize)]
pub struct VolumeResize {
    pub volume_id: String,
    #[serde(default, rename = "size", deserialize_with = "gb")]
    pub size_gb: Option<f64>,
}

/// Attach and detach [I body]: the VM (`vm_uid` or `local_index`) and the volume (`volume_id`
/// or `vid`); a client unsure of the spelling may send both.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "AttachmentWire")]
pub struct Attachment {
    pub vm_uid: String,
    pub volume_id: String,
}

#[derive(Deserialize)]
struct AttachmentWire {
    vm_uid: Option<String>,
    local_index: Option<String>,
    volume_id: Option<String>,
    vid: Option<String>,
}

impl TryFrom<AttachmentWire> for Attachment {
    type Error = &'static str;
    fn try_from(w: AttachmentWire) -> Result<Self, Self::Error> {
        Ok(Self {
            vm_uid: w.vm_uid.or(w.local_index).ok_or("vm_uid is required")?,
            volume_id: w.volume_id.or(w.vid).ok_or("volume_id is required")?,
        })
    }
}

/// `POST /volume/cloudinit/create` [K].
#[derive(Debug, Deserialize)]
pub struct CloudImage {
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "size", deserialize_with = "gb")]
    pub size_gb: Option<f64>,
    #[serde(default)]
    pub url: Option<String>,
}

/// The path JSON of a cloud-init upload [K]: the new volume's fields (first file), or its `vid`.
#[derive(Debug, Deserialize)]
pub struct CloudInitMeta {
    #[serde(default)]
    pub vid: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub private: Option<bool>,
    #[serde(default)]
    pub bootable: Option<bool>,
    #[serde(default)]
    pub clonable: Option<bool>,
    #[serde(default, rename = "expectedFiles")]
    pub expected_files: Option<u32>,
}

/// The `{meta}` path segment: base64 (standard or URL-safe, padded or not) of the JSON.
pub fn cloud_init_meta(segment: &str) -> Result<CloudInitMeta, SimError> {
    let bad = |why: String| SimError {
        status: 400,
        body: format!("the path segment is not base64 of a JSON object: {why}"),
    };
    let bytes = base64_decode(segment).ok_or_else(|| bad("invalid base64".into()))?;
    serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let digits: Vec<u32> = s
        .trim_end_matches('=')
        .bytes()
        .map(value)
        .collect::<Option<_>>()?;
    if digits.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, d)| n | (d << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    Some(out)
}

/// The one file of a `multipart/form-data` upload in field `file` [K]: its file name and text.
pub fn multipart_file(content_type: &str, body: &[u8]) -> Result<(String, String), SimError> {
    let bad = |why: &str| SimError {
        status: 400,
        body: format!("expected a multipart/form-data upload with a field named file: {why}"),
    };
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| b.trim_matches('"'))
        .ok_or_else(|| bad("no boundary"))?;
    let text = String::from_utf8_lossy(body);
    let delimiter = format!("--{boundary}");
    for part in text.split(delimiter.as_str()).skip(1) {
        let Some((headers, content)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let disposition = headers
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))
            .unwrap_or("");
        if !disposition.contains("name=\"file\"") {
            continue;
        }
        let name = disposition
            .split(';')
            .find_map(|p| p.trim().strip_prefix("filename="))
            .map(|n| n.trim_matches('"').to_string())
            .ok_or_else(|| bad("the file has no name"))?;
        let content = content.strip_suffix("\r\n").unwrap_or(content);
        return Ok((name, content.to_string()));
    }
    Err(bad("no file"))
}

/// `POST /network/info`.
#[derive(Debug, Deserialize)]
pub struct NetworkRef {
    pub network_uid: String,
}

/// The services envelope [K pattern, I body]: our spec in `req`.
#[derive(Debug, Deserialize)]
pub struct LbEnvelope {
    pub req: LoadBalancerSpec,
}

/// Update: the LB's id next to the envelope [I].
#[derive(Debug, Deserialize)]
pub struct LbUpdate {
    pub service_uuid: String,
    pub req: LoadBalancerSpec,
}

/// `{"service_uuid"}`: delete [K pattern].
#[derive(Debug, Deserialize)]
pub struct LbRef {
    pub service_uuid: String,
}

// ------------------------------------------------------------------ answers

/// One `GET /vm/status` item [K] (newer [M] fields included). The status fields go inside
/// `req_json` (the mock) or at the top level (later Meson, §8.4), as the scenario's
/// `wire.vm_status_top_level` says.
pub fn vm(w: &World, vm: &SimVm) -> Value {
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
    // A VM still booting has no address yet (`network_config: null`).
    let booted = vm.ready_at_ms <= crate::world::now_ms();
    let network = if booted {
        json!({"ipv4": vm.ipv4, "mac": vm.mac})
    } else {
        Value::Null
    };
    let mut status = json!({
        "network_config": network,
        "states": vm.power,
        "xml": domain_xml(w, vm),
    });
    if let (true, Some(p)) = (booted, &vm.private_ipv4) {
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
    let into = if w.scenario.wire.vm_status_top_level {
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

pub fn vm_list(w: &World) -> Value {
    Value::Array(w.vms.values().map(|v| vm(w, v)).collect())
}

/// `GET /vm/templates` [K shape].
pub fn templates() -> Value {
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

/// The libvirt domain XML of a VM [K shape]: `<target dev bus>` per disk, and `<serial>` only in
/// the name scheme (today's real XML has none, §8.2).
fn domain_xml(w: &World, vm: &SimVm) -> String {
    let mut disks = String::from(
        "<disk type='file' device='disk'><source file='/var/lib/atomos/boot.qcow2'/><target dev='vda' bus='virtio'/></disk>",
    );
    for vid in &vm.volumes {
        let serial = match (w.scenario.wire.disk_serial, w.volumes.get(vid)) {
            (DiskSerial::Name, Some(v)) => format!("<serial>{}</serial>", w.guest_serial(v)),
            _ => String::new(),
        };
        disks.push_str(&format!(
            "<disk type='file' device='disk'><source file='/var/lib/atomos/volumes/{vid}.img'/><target dev='{}' bus='virtio'/>{serial}</disk>",
            World::target_dev(vm, vid)
        ));
    }
    format!(
        "<domain type='kvm'><name>{}</name><uuid>{}</uuid><devices>{disks}</devices></domain>",
        vm.id, vm.id
    )
}

/// A size as the scenario's endpoint answers it: bytes, or GB (`wire.volume_size_gb`).
fn size(w: &World, bytes: u64) -> Value {
    if w.scenario.wire.volume_size_gb {
        json!(bytes as f64 / 1e9)
    } else {
        json!(bytes)
    }
}

/// The `cancreate` answer [K]: a bare integer, the number of servers able to create it.
pub fn volume_can_create(able: bool) -> Value {
    json!(u32::from(able))
}

/// The create answer uses `vid` and `img_format` (thesis schema [K]).
pub fn volume_created(w: &World, v: &SimVolume) -> Value {
    json!({
        "vid": v.id, "name": v.name, "size": size(w, v.size_bytes), "img_format": v.format,
        "bus": v.bus, "alg": "no", "clonable": v.clonable, "private": v.private,
        "shareable": v.shareable, "readonly": v.readonly, "bootable": v.bootable, "creatorID": "sim",
        "provider": v.provider,
    })
}

/// A Volume [K].
pub fn volume(w: &World, v: &SimVolume) -> Value {
    json!({
        "volumeID": v.id, "name": v.name, "size": size(w, v.size_bytes),
        "sizeOnDisk": 0, "format": v.format, "bus": v.bus, "alg": "no", "private": v.private,
        "bootable": v.bootable, "readonly": v.readonly, "shareable": v.shareable,
        "clonable": v.clonable, "cloudinit": v.cloud_init.is_some(), "ceph": false, "exported": true, "own": true,
        "creatorID": "sim", "server": "storage-1", "servers": ["storage-1"], "nservers": 1,
        "serverurl": "https://storage-1.local:7772", "lastUpdated": "2026-01-01T00:00:00Z",
        "provider": v.provider,
    })
}

/// `POST /volume/info`: the volume, or `{"volume": …}` (`wire.volume_info_wrapped`; the sources
/// conflict [K]).
pub fn volume_info(w: &World, v: &SimVolume) -> Value {
    let j = volume(w, v);
    if w.scenario.wire.volume_info_wrapped {
        json!({ "volume": j })
    } else {
        j
    }
}

pub fn volume_list(w: &World) -> Vec<Value> {
    w.volumes.values().map(|v| volume(w, v)).collect()
}

/// The attach answer [I]: device and serial in the id-prefix scheme; nothing in the name scheme
/// (no source shows what attach returns).
pub fn attach_answer(w: &World, vm: &SimVm, v: &SimVolume) -> Value {
    match w.scenario.wire.disk_serial {
        DiskSerial::IdPrefix => json!({
            "vm_uid": vm.id, "volume_id": v.id,
            "device": format!("/dev/{}", World::target_dev(vm, &v.id)),
            "serial": w.guest_serial(v),
        }),
        DiskSerial::Name => json!({"vm_uid": vm.id, "volume_id": v.id}),
    }
}

pub fn network(n: &SimNetwork) -> Value {
    json!({
        "network_uid": n.id, "network_name": n.name, "type": "libvirt", "mode": "nat",
        "private": n.private, "creator_uid": "sim", "device_name": "virbr0",
        "serverurl": "https://atomos-1.local:7776", "ip": {"address": n.cidr}, "routes": [],
    })
}

/// The `canallocate` and `marketprices` answer [K]: how many servers can take the Spec, and each
/// public provider's offer.
pub fn allocation(placements: &[Placement]) -> Value {
    let able = placements.iter().filter(|p| p.able).count();
    json!({
        "nservers": able,
        "mesos": placements.iter().filter(|p| p.able).map(|p| json!({
            "provider": p.provider, "region": p.region,
            "price": {"hour": p.price_hour, "month": p.price_hour * 720.0, "unit": "EUR"},
        })).collect::<Vec<_>>(),
    })
}

/// The answer of a cloud-init upload: the volume id (206 until every file is in) [K].
pub fn cloud_init_answer(v: &SimVolume) -> Value {
    json!({"vid": v.id, "name": v.name})
}

/// The `cancreate` answer of the services envelope [K route, M body]: one (simulated) server,
/// able or not.
pub fn lb_can_create(able: bool) -> Value {
    json!({
        "nservers": u32::from(able),
        "servers": [{"cancreate": able, "provider": "atomos", "target": "elemento-sim", "carbon_footprint": 0, "billing": []}],
    })
}

/// The create answer of the services envelope [M]: billing fields and the new service's id.
pub fn lb_created(lb: &SimLb) -> Value {
    json!({"service_uuid": lb.id, "billing_uuid": crate::world::new_id(), "payment_url": null})
}

/// A `running` record of the services envelope [I]: `service_uuid` and `status` as the services
/// list has them [K columns], the address at the top level, our spec in `req`.
pub fn lb_record(lb: &SimLb) -> Value {
    json!({
        "service_uuid": lb.id, "status": lb.status, "ip": lb.ip,
        "req": serde_json::to_value(&lb.spec).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_decode_every_known_spelling() {
        let r: Register = decode(
            br#"{"info": {"vm_name": "c1-g-1"}, "slots": 2, "ramsize": 2048,
                 "pci": [{"vendor": "10de", "model": "1401"}, {"quantity": 2}],
                 "volumes": [{"vid": "ci", "priority": 1}, {"vid": "boot", "priority": 0}],
                 "networks": [{"network_uid": "net-1"}], "vm_tags": ["k8s-cluster=c1"]}"#,
        )
        .unwrap();
        assert_eq!(r.name(), Some("c1-g-1"));
        assert_eq!(
            (r.slots, r.ram_mib, r.gpus()),
            (Some(2), Some(2048), Some(3))
        );
        assert_eq!(
            r.volume_ids(),
            ["boot", "ci"],
            "boot disk first, by priority"
        );
        assert_eq!(r.network_ids(), ["net-1"]);
        assert_eq!(r.vm_tags, ["k8s-cluster=c1"]);
        let old: Register = decode(br#"{"vm_name": "v", "netdevs": []}"#).unwrap();
        assert_eq!(old.name(), Some("v"));
        assert_eq!(old.gpus(), None);

        for body in [&br#"{"vm_uid": "a"}"#[..], br#"{"local_index": "a"}"#] {
            assert_eq!(decode::<VmRef>(body).unwrap().vm_uid, "a");
        }
        let a: Attachment = decode(br#"{"local_index": "vm", "vid": "vol"}"#).unwrap();
        assert_eq!((a.vm_uid.as_str(), a.volume_id.as_str()), ("vm", "vol"));
        let both: Attachment =
            decode(br#"{"vm_uid": "vm", "local_index": "vm", "volume_id": "v", "vid": "v"}"#)
                .unwrap();
        assert_eq!(both.volume_id, "v");
        let e = decode::<Attachment>(br#"{"vm_uid": "vm"}"#).unwrap_err();
        assert!(e.body.contains("volume_id is required"), "{}", e.body);

        let sizes = [
            (&br#"{"size": 8}"#[..], Some(8.0)),
            (br#"{"size": " 0.5 "}"#, Some(0.5)),
            (br#"{"size": "lots"}"#, None),
            (br#"{}"#, None),
        ];
        for (body, want) in sizes {
            assert_eq!(decode::<VolumeCreate>(body).unwrap().size_gb, want);
        }
        assert_eq!(decode::<VolumeCanCreate>(b"  ").unwrap().size_gb, None);

        let e = decode::<VolumeRef>(br#"{"vid": "x"}"#).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.body.contains("volume_id"), "{}", e.body);
        assert_eq!(decode::<VolumeRef>(b"{not json").unwrap_err().status, 400);
    }

    #[test]
    fn templates_carry_the_repository_cpu_fields() {
        let t = templates();
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

    #[test]
    fn cloud_init_uploads_decode() {
        let meta = cloud_init_meta("eyJuYW1lIjoiY2kiLCJleHBlY3RlZEZpbGVzIjoyfQ==").unwrap();
        assert_eq!(
            (meta.name.as_deref(), meta.expected_files),
            (Some("ci"), Some(2))
        );
        // URL-safe and unpadded spellings of {"vid":"v?"} decode the same.
        assert_eq!(
            cloud_init_meta("eyJ2aWQiOiJ2PyJ9").unwrap().vid.as_deref(),
            Some("v?")
        );
        assert_eq!(cloud_init_meta("!!").unwrap_err().status, 400);
        let body = b"--b1\r\nContent-Disposition: form-data; name=\"file\"; filename=\"user-data\"\r\n\r\n#cloud-config\nx: 1\r\n--b1--\r\n";
        let (name, text) = multipart_file("multipart/form-data; boundary=b1", body).unwrap();
        assert_eq!(
            (name.as_str(), text.as_str()),
            ("user-data", "#cloud-config\nx: 1")
        );
        assert_eq!(
            multipart_file("application/json", body).unwrap_err().status,
            400
        );
    }
}
