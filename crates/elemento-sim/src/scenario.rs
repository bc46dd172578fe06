//! The scenario file a simulator starts from (YAML or JSON).

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    pub auth: AuthConfig,
    pub limits: Limits,
    /// Public addresses handed to load balancers.
    pub lb_ip_pool: Pool,
    /// Addresses handed to internal (private) load balancers.
    pub lb_private_ip_pool: Pool,
    /// Addresses given to VMs created without one.
    pub vm_ip_pool: Pool,
    pub wire: WireVariants,
    pub networks: Vec<NetworkSeed>,
    pub vms: Vec<VmSeed>,
    /// Where registered VMs can go, with prices and capacity (`canallocate`, `marketprices`,
    /// register's `provider` [I]). Empty: AtomOS only, bounded by `limits.max_vms`.
    pub providers: Vec<ProviderSeed>,
    /// How long a registered VM boots: until then it reports no address (`network_config: null`).
    pub boot_delay_ms: u64,
}

/// A provider of the multi-cloud (AtomOS or a public one).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSeed {
    pub name: String,
    #[serde(default)]
    pub region: Option<String>,
    /// Hourly price per vCPU slot and per GiB of RAM, in EUR.
    #[serde(default)]
    pub price_per_slot_hour: f64,
    #[serde(default)]
    pub price_per_gib_hour: f64,
    /// VMs this provider takes in total; `None`: no limit of its own.
    #[serde(default)]
    pub max_vms: Option<usize>,
    /// `canallocate` says yes but `register` answers Elemento's limit 404 (a licence or quota the
    /// placement does not see): the failed-create path.
    #[serde(default)]
    pub register_refused: bool,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            auth: AuthConfig::default(),
            limits: Limits::default(),
            lb_ip_pool: Pool::new(Ipv4Addr::new(198, 51, 100, 10), 200),
            lb_private_ip_pool: Pool::new(Ipv4Addr::new(10, 250, 0, 10), 200),
            vm_ip_pool: Pool::new(Ipv4Addr::new(10, 0, 0, 10), 60000),
            wire: WireVariants::default(),
            networks: vec![],
            vms: vec![],
            providers: vec![],
            boot_delay_ms: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub username: String,
    pub password: String,
    /// When set, the login must name this organisation.
    pub org: Option<String>,
    /// A bearer token accepted without login (direct Meson access).
    pub token: Option<String>,
    /// When false, every call is accepted without login.
    pub require_login: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            username: "demo".into(),
            password: "demo-password".into(),
            org: None,
            token: None,
            require_login: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_vms: usize,
    pub max_volumes: usize,
    pub max_storage_gb: f64,
    pub max_load_balancers: usize,
    /// Volumes attachable to one VM (the boot disk not counted).
    pub max_volumes_per_vm: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_vms: 5000,
            max_volumes: 5000,
            max_storage_gb: 1_000_000.0,
            max_load_balancers: 1000,
            max_volumes_per_vm: 15,
        }
    }
}

/// A contiguous range of IPv4 addresses.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub first: Ipv4Addr,
    pub size: u32,
}

impl Pool {
    pub fn new(first: Ipv4Addr, size: u32) -> Self {
        Self { first, size }
    }
    /// The lowest address of the pool not in `used`.
    pub fn allocate<'a>(&self, used: impl Iterator<Item = &'a str>) -> Option<Ipv4Addr> {
        let used: std::collections::HashSet<&str> = used.collect();
        let base = u32::from(self.first);
        (0..self.size)
            .map(|i| Ipv4Addr::from(base.wrapping_add(i)))
            .find(|ip| !used.contains(ip.to_string().as_str()))
    }
}

/// Which side of each documented wire conflict the simulator speaks.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WireVariants {
    /// Volume `size` in GB instead of bytes.
    pub volume_size_gb: bool,
    /// `POST /volume/info` answers `{"volume": {...}}` instead of the bare volume.
    pub volume_info_wrapped: bool,
    /// Serve our load-balancer update route [I]. No Elemento source has one (§8.1): without it
    /// the route answers 404 like any unknown path, and the CCM replaces instead.
    pub lb_update: bool,
    /// Put `mesos`, `region`, `states` and `vm_tags` at the top level of VM records (later Meson,
    /// §8.4) instead of inside `req_json` (the mock), and `network_config` at the top level (the
    /// thesis SDK).
    pub vm_status_top_level: bool,
    /// The serial a guest sees for an attached volume (reference §8.2).
    pub disk_serial: DiskSerial,
}

/// How the simulated hypervisor names attached disks.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DiskSerial {
    /// The first 20 characters of the volume id [I]; the attach answer gives serial and device.
    #[default]
    IdPrefix,
    /// `<4 hex>x<sanitized volume name>` (S12, preliminary); the attach answer gives nothing, the
    /// domain XML carries the `<serial>`, so the node plugin must derive it from the name.
    Name,
}

impl Default for WireVariants {
    fn default() -> Self {
        Self {
            volume_size_gb: false,
            volume_info_wrapped: false,
            lb_update: true,
            vm_status_top_level: false,
            disk_serial: DiskSerial::IdPrefix,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSeed {
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
    pub cidr: String,
    #[serde(default = "yes")]
    pub private: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VmSeed {
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
    /// An Elemento template name (helium, neon, argon, argon2, kripton); or give slots/ram_mib.
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub slots: Option<u32>,
    #[serde(default)]
    pub ram_mib: Option<u64>,
    #[serde(default)]
    pub gpus: Option<u32>,
    #[serde(default)]
    pub ipv4: Option<Ipv4Addr>,
    /// A private (VPC) address, reported in `private_network_config` (§8.3); `ipv4` is then the
    /// public one.
    #[serde(default)]
    pub private_ipv4: Option<Ipv4Addr>,
    /// `vm_tags` the VM reports (§8.4).
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub server_url: Option<String>,
    /// "running" (default), "shut off" or "paused".
    #[serde(default)]
    pub power: Option<String>,
    /// Volumes attached to this VM appear as loop devices on this host (host-device mode).
    #[serde(default)]
    pub this_host: bool,
}

/// The Elemento flavour templates (elemento-vm-templates@983c64a): name, slots, MiB, GPUs.
pub const TEMPLATES: &[(&str, &str, u32, u64, u32)] = &[
    ("helium", "Helium", 1, 512, 0),
    ("neon", "Neon", 2, 2048, 0),
    ("argon", "Argon", 4, 4096, 1),
    ("argon2", "Argon 2", 4, 4096, 2),
    ("kripton", "Kripton", 8, 8192, 1),
];

/// CPU overprovisioning and flags of each template (elemento-vm-templates, reference §4 and §8.7).
pub const TEMPLATE_CPU: &[(&str, u32, &[&str])] = &[
    ("helium", 4, &[]),
    ("neon", 2, &["sse2"]),
    ("argon", 2, &["sse2", "avx2"]),
    ("argon2", 2, &["sse2", "avx2"]),
    ("kripton", 2, &["sse2", "avx2"]),
];

/// `(overprovision, flags)` of a template by its key.
pub fn template_cpu(key: &str) -> (u32, &'static [&'static str]) {
    TEMPLATE_CPU
        .iter()
        .find(|(k, _, _)| *k == key)
        .map_or((2, &["sse2"][..]), |(_, o, f)| (*o, *f))
}

pub fn template(name: &str) -> Option<(u32, u64, u32)> {
    let key: String = name
        .to_ascii_lowercase()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    TEMPLATES
        .iter()
        .find(|t| t.0 == key)
        .map(|t| (t.2, t.3, t.4))
}

pub fn parse(text: &str) -> anyhow::Result<Scenario> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        Ok(serde_json::from_str(text)?)
    } else {
        serde_saphyr::from_str(text).map_err(|e| anyhow::anyhow!("scenario: {e}"))
    }
}
