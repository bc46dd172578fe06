//! Command-line flags and the YAML configuration: API settings as the CCM's cloud-config, the
//! cluster name, the gRPC listener, how nodes join, `defaults` and the `nodeGroups` that override
//! them (the Kamatera model). Validated strictly: every error names the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use elemento_api::settings::ApiSettings;
use serde::Deserialize;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "elemento-cluster-autoscaler-provider",
    version,
    about = "Cluster-autoscaler externalgrpc cloud provider for Elemento"
)]
pub struct Args {
    /// The provider's YAML configuration.
    #[arg(
        long,
        env = "ELEMENTO_AUTOSCALER_CONFIG",
        default_value = "/etc/elemento/autoscaler.yaml"
    )]
    pub config: PathBuf,
    /// Kubeconfig of the cluster whose nodes join (bootstrap tokens live there); in-cluster when
    /// unset.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Serve /metrics, /healthz and /readyz here (loopback: the metrics are not authenticated).
    #[arg(long, default_value = "127.0.0.1:10270")]
    pub metrics_bind_address: SocketAddr,
    /// Also serve /healthz and /readyz (only) here, for probes. Off when unset.
    #[arg(long)]
    pub health_bind_address: Option<SocketAddr>,
    /// text or json.
    #[arg(long, default_value = "text")]
    pub log_format: String,
}

/// The most a join token may live: long enough for a VM to boot and join, short enough that a
/// copy of the user-data is soon worthless.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
/// Longest cluster name: it is in every VM name, which must stay a DNS label (63 characters).
pub const MAX_CLUSTER_NAME: usize = 15;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    #[serde(default)]
    pub api: ApiSettings,
    pub cluster_name: String,
    /// The region label value when a provider has none (as the CCM's `region`).
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub grpc: GrpcConfig,
    pub bootstrap: BootstrapConfig,
    #[serde(default)]
    pub defaults: GroupSettings,
    pub node_groups: Vec<GroupSettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrpcConfig {
    pub listen: SocketAddr,
    /// mTLS, as the autoscaler's `cert`/`key`/`cacert` cloud-config expects.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Serve without TLS. Only when set explicitly: anyone reaching the port could create VMs.
    #[serde(default)]
    pub plaintext: bool,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8086)),
            tls: None,
            plaintext: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA that signs the autoscaler's client certificate: clients without one are refused.
    #[serde(rename = "clientCA")]
    pub client_ca: PathBuf,
}

/// How a new node joins: public data for the user-data template, and the join token's lifetime.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BootstrapConfig {
    /// The API server address nodes join (`host:port`).
    pub api_server: String,
    /// `sha256:<hex>` of the cluster CA's public key (kubeadm's discovery hash).
    #[serde(default)]
    pub ca_cert_hash: Option<String>,
    #[serde(
        default = "default_token_ttl",
        deserialize_with = "duration::deserialize",
        rename = "tokenTTL"
    )]
    pub token_ttl: Duration,
}

fn default_token_ttl() -> Duration {
    MAX_TOKEN_TTL
}

/// What a group may set; `defaults` gives the values a group leaves out.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GroupSettings {
    /// The group's name (in every VM name); only in `nodeGroups`.
    pub name: Option<String>,
    pub min_size: Option<u32>,
    pub max_size: Option<u32>,
    /// An Elemento template (helium, neon, argon, argon2, kripton).
    pub flavour: Option<String>,
    /// The provider (= the kOps zone): atomos, ovh, scaleway, …
    pub provider: Option<String>,
    pub region: Option<String>,
    pub image: Option<ImageConfig>,
    pub networks: Option<Vec<String>>,
    pub labels: Option<BTreeMap<String, String>>,
    pub taints: Option<Vec<TaintConfig>>,
    /// A cloud-init user-data template file (see `user_data::PLACEHOLDERS`).
    pub user_data: Option<PathBuf>,
    #[serde(default, deserialize_with = "opt_duration::deserialize")]
    pub max_node_provision_time: Option<Duration>,
    pub kube_reserved: Option<ReservedConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageConfig {
    /// The cloud image the boot volume is made from.
    pub url: String,
    #[serde(rename = "sizeGiB")]
    pub size_gib: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TaintConfig {
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
    pub effect: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReservedConfig {
    /// Millicores.
    #[serde(default)]
    pub cpu_millis: u64,
    #[serde(default)]
    pub memory_mib: u64,
}

/// A group with every setting resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeGroup {
    pub name: String,
    pub min_size: u32,
    pub max_size: u32,
    pub flavour: String,
    pub provider: Option<String>,
    pub region: Option<String>,
    pub image: ImageConfig,
    pub networks: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<TaintConfig>,
    pub user_data: String,
    pub max_node_provision_time: Duration,
    pub kube_reserved: ReservedConfig,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub api: ApiSettings,
    pub cluster_name: String,
    pub default_region: String,
    pub grpc: GrpcConfig,
    pub bootstrap: BootstrapConfig,
    pub groups: Vec<NodeGroup>,
}

const DEFAULT_PROVISION_TIME: Duration = Duration::from_secs(15 * 60);
const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

impl Settings {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        let config: Config = serde_saphyr::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::resolve(config, &|p: &Path| {
            let p = base.join(p);
            std::fs::read_to_string(&p).map_err(|e| format!("reading {}: {e}", p.display()))
        })
    }

    /// Validates and resolves every group (`read` loads a user-data file).
    pub fn resolve(
        c: Config,
        read: &dyn Fn(&Path) -> Result<String, String>,
    ) -> anyhow::Result<Self> {
        let mut errors = vec![];
        if !is_dns_label(&c.cluster_name) || c.cluster_name.len() > MAX_CLUSTER_NAME {
            errors.push(format!(
                "clusterName {:?}: 1-{MAX_CLUSTER_NAME} of a-z, 0-9 and '-', alphanumeric at both ends (it is in every VM name)",
                c.cluster_name
            ));
        }
        match (&c.grpc.tls, c.grpc.plaintext) {
            (None, false) => errors.push(
                "grpc.tls: required (cert, key, clientCA), or set grpc.plaintext: true explicitly"
                    .into(),
            ),
            (Some(_), true) => {
                errors.push("grpc.plaintext: true and grpc.tls are exclusive".into())
            }
            _ => {}
        }
        if c.bootstrap.token_ttl.is_zero() || c.bootstrap.token_ttl > MAX_TOKEN_TTL {
            errors.push(format!(
                "bootstrap.tokenTTL {:?}: between 1s and 15m",
                c.bootstrap.token_ttl
            ));
        }
        if c.node_groups.is_empty() {
            errors.push("nodeGroups: at least one group".into());
        }
        if c.defaults.name.is_some() {
            errors.push("defaults.name: a name belongs to each group, not to the defaults".into());
        }
        let mut groups = vec![];
        for (i, g) in c.node_groups.iter().enumerate() {
            let name = g.name.clone().unwrap_or_default();
            let at = format!("nodeGroups[{i}] ({name})");
            match resolve_group(&c.cluster_name, &name, g, &c.defaults, read) {
                Ok(g) => groups.push(g),
                Err(e) => errors.extend(e.into_iter().map(|e| format!("{at}.{e}"))),
            }
        }
        let mut names: Vec<&str> = c
            .node_groups
            .iter()
            .filter_map(|g| g.name.as_deref())
            .collect();
        names.sort();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            errors.push(format!("nodeGroups: the name {:?} is used twice", w[0]));
        }
        if !errors.is_empty() {
            anyhow::bail!("invalid configuration:\n  {}", errors.join("\n  "));
        }
        Ok(Self {
            api: c.api,
            cluster_name: c.cluster_name,
            default_region: c
                .region
                .unwrap_or_else(|| elemento_api::topology::DEFAULT_REGION.into()),
            grpc: c.grpc,
            bootstrap: c.bootstrap,
            groups,
        })
    }

    pub fn group(&self, name: &str) -> Option<&NodeGroup> {
        self.groups.iter().find(|g| g.name == name)
    }
}

fn resolve_group(
    cluster: &str,
    name: &str,
    s: &GroupSettings,
    d: &GroupSettings,
    read: &dyn Fn(&Path) -> Result<String, String>,
) -> Result<NodeGroup, Vec<String>> {
    let mut errors = vec![];
    // `<cluster>-<group>-<6 hex>` must be a DNS label.
    let room = 63 - cluster.len().min(63) - 8;
    if !is_dns_label(name) || name.len() > room {
        errors.push(format!(
            "name {name:?}: required, 1-{room} of a-z, 0-9 and '-', alphanumeric at both ends"
        ));
    }
    let min_size = s.min_size.or(d.min_size).unwrap_or(0);
    let max_size = s.max_size.or(d.max_size).unwrap_or(0);
    if max_size == 0 || min_size > max_size {
        errors.push(format!(
            "maxSize {max_size}: at least 1 and at least minSize ({min_size})"
        ));
    }
    let flavour = s.flavour.clone().or(d.flavour.clone());
    if flavour.is_none() {
        errors.push("flavour: required (an Elemento template: helium, neon, argon, argon2, kripton), here or in defaults".into());
    }
    let image = s.image.clone().or(d.image.clone());
    match &image {
        None => errors.push("image: required (url, sizeGiB), here or in defaults".into()),
        Some(i) if !(i.url.starts_with("https://") || i.url.starts_with("http://")) => {
            errors.push(format!("image.url {:?}: an http(s) URL", i.url))
        }
        Some(i) if i.size_gib == 0 => errors.push("image.sizeGiB: at least 1".into()),
        _ => {}
    }
    let taints = s.taints.clone().or(d.taints.clone()).unwrap_or_default();
    for (i, t) in taints.iter().enumerate() {
        if !TAINT_EFFECTS.contains(&t.effect.as_str()) {
            errors.push(format!(
                "taints[{i}].effect {:?}: one of {TAINT_EFFECTS:?}",
                t.effect
            ));
        }
        if t.key.is_empty() {
            errors.push(format!("taints[{i}].key: required"));
        }
    }
    let user_data = match s.user_data.as_ref().or(d.user_data.as_ref()) {
        Some(p) => match read(p) {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("userData: {e}"));
                String::new()
            }
        },
        None => crate::user_data::DEFAULT_TEMPLATE.to_string(),
    };
    if let Err(e) = crate::user_data::check(&user_data) {
        errors.push(format!("userData: {e}"));
    }
    let max_node_provision_time = s
        .max_node_provision_time
        .or(d.max_node_provision_time)
        .unwrap_or(DEFAULT_PROVISION_TIME);
    if max_node_provision_time.is_zero() {
        errors.push("maxNodeProvisionTime: more than 0".into());
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let (Some(flavour), Some(image)) = (flavour, image) else {
        return Err(vec!["flavour, image: required".into()]);
    };
    Ok(NodeGroup {
        name: name.to_string(),
        min_size,
        max_size,
        flavour,
        provider: s.provider.clone().or(d.provider.clone()),
        region: s.region.clone().or(d.region.clone()),
        image,
        networks: s
            .networks
            .clone()
            .or(d.networks.clone())
            .unwrap_or_default(),
        labels: s.labels.clone().or(d.labels.clone()).unwrap_or_default(),
        taints,
        user_data,
        max_node_provision_time,
        kube_reserved: s
            .kube_reserved
            .clone()
            .or(d.kube_reserved.clone())
            .unwrap_or_default(),
    })
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `90s`, `15m`, `1h` (as the CCM's flags).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: a duration such as 90s, 15m or 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?}: a duration such as 90s, 15m or 1h")),
    };
    Ok(Duration::from_secs(secs))
}

mod duration {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

mod opt_duration {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<std::time::Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| super::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
clusterName: c1
grpc: {listen: "127.0.0.1:8086", plaintext: true}
bootstrap: {apiServer: "10.0.0.1:6443", tokenTTL: 10m}
defaults:
  maxSize: 5
  flavour: neon
  image: {url: "https://images.example/noble.img", sizeGiB: 20}
  taints: [{key: dedicated, value: batch, effect: NoSchedule}]
nodeGroups:
  - {name: ovh-neon, provider: ovh, maxSize: 3}
  - {name: atomos-argon, flavour: argon, minSize: 1, maxNodeProvisionTime: 5m}
"#;

    fn parse(yaml: &str) -> anyhow::Result<Settings> {
        let c: Config = serde_saphyr::from_str(yaml).map_err(|e| anyhow::anyhow!("{e}"))?;
        Settings::resolve(c, &|p| Err(format!("no file {}", p.display())))
    }

    #[test]
    fn groups_take_the_defaults_they_do_not_override() {
        let s = parse(GOOD).unwrap();
        let ovh = s.group("ovh-neon").unwrap();
        assert_eq!((ovh.min_size, ovh.max_size), (0, 3));
        assert_eq!(ovh.flavour, "neon");
        assert_eq!(ovh.provider.as_deref(), Some("ovh"));
        assert_eq!(ovh.taints[0].key, "dedicated");
        assert_eq!(ovh.max_node_provision_time, DEFAULT_PROVISION_TIME);
        let argon = s.group("atomos-argon").unwrap();
        assert_eq!((argon.min_size, argon.max_size), (1, 5));
        assert_eq!(argon.flavour, "argon");
        assert_eq!(argon.max_node_provision_time, Duration::from_secs(300));
        assert_eq!(s.bootstrap.token_ttl, Duration::from_secs(600));
        assert_eq!(s.default_region, "elemento");
        assert!(argon.user_data.contains("{{ bootstrap_token }}"));
    }

    #[test]
    fn every_error_names_its_key() {
        let bad = GOOD
            .replace("clusterName: c1", "clusterName: a-cluster-name-too-long")
            .replace("tokenTTL: 10m", "tokenTTL: 2h")
            .replace("effect: NoSchedule", "effect: Sometimes")
            .replace("maxSize: 3", "maxSize: 3, minSize: 4");
        let e = parse(&bad).unwrap_err().to_string();
        for key in [
            "clusterName",
            "bootstrap.tokenTTL",
            "taints[0].effect",
            "nodeGroups[0] (ovh-neon).maxSize",
        ] {
            assert!(e.contains(key), "{key} missing from: {e}");
        }
        let unknown = GOOD.replace("provider: ovh", "providr: ovh");
        let e = parse(&unknown).unwrap_err().to_string();
        assert!(e.contains("providr"), "{e}");
        let open = GOOD.replace("plaintext: true", "plaintext: false");
        let e = parse(&open).unwrap_err().to_string();
        assert!(e.contains("grpc.tls: required"), "{e}");
        let dup = GOOD.replace("atomos-argon", "ovh-neon");
        assert!(parse(&dup).unwrap_err().to_string().contains("used twice"));
    }
}
