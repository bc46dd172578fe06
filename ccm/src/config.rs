//! Command-line flags (familiar to operators of upstream cloud-controller-managers) and the YAML
//! cloud-config file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use elemento_api::settings::ApiSettings;
use serde::Deserialize;

use elemento_api::types::{LbAlgorithm, TargetAddress};

/// The controllers this binary runs, by their upstream names.
pub const CONTROLLERS: &[&str] = &["cloud-node", "cloud-node-lifecycle", "service"];
/// Upstream controller names this binary does not implement, with the reason. Naming one is a
/// start-up error: accepting it and doing nothing would look like a working controller.
pub const NOT_IMPLEMENTED: &[(&str, &str)] = &[(
    "route",
    "Elemento has no documented network route API; use a CNI that does not need cloud routes",
)];

#[derive(Parser, Debug, Clone)]
#[command(
    name = "elemento-cloud-controller-manager",
    version,
    about = "Kubernetes cloud controller manager for Elemento"
)]
pub struct Args {
    /// Path to a kubeconfig; in-cluster configuration when unset.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The cloud-config YAML file (API endpoints, credentials file, cluster name, LB defaults).
    #[arg(
        long,
        env = "ELEMENTO_CLOUD_CONFIG",
        default_value = "/etc/elemento/cloud-config.yaml"
    )]
    pub cloud_config: PathBuf,
    /// Controllers to run: `*` (all enabled by default), `name`, `-name`, comma-separated.
    #[arg(long, default_value = "*")]
    pub controllers: String,
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub leader_elect_lease_duration: Duration,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub leader_elect_renew_deadline: Duration,
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub leader_elect_retry_period: Duration,
    #[arg(long, default_value = "elemento-cloud-controller-manager")]
    pub leader_elect_resource_name: String,
    #[arg(long, default_value = "kube-system")]
    pub leader_elect_resource_namespace: String,
    /// Identity in the Lease (default: hostname and a random suffix).
    #[arg(long, env = "POD_NAME")]
    pub leader_elect_identity: Option<String>,
    /// Node initializations in flight. Each costs two Node writes and no cloud call of its own
    /// (the VM listing is shared), so the API server sets the pace; docs/benchmarks.md has
    /// 1000 Nodes at 10, 32 and 64.
    #[arg(long, default_value_t = 64)]
    pub concurrent_node_syncs: u16,
    #[arg(long, default_value_t = 4)]
    pub concurrent_service_syncs: u16,
    /// How often initialized Nodes' addresses are compared with the API.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub node_status_update_frequency: Duration,
    /// How often NotReady Nodes are checked against their VM.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub node_monitor_period: Duration,
    /// Add `node.kubernetes.io/out-of-service:NoExecute` once a NotReady Node's VM has been
    /// confirmed shut off this long, so stateful pods and volumes fail over. Off when unset.
    #[arg(long, value_parser = parse_duration)]
    pub out_of_service_taint_after: Option<Duration>,
    /// Serve /metrics, /healthz and /readyz here. Loopback by default: the metrics are not
    /// authenticated, and the CCM usually runs with host networking.
    #[arg(long, default_value = "127.0.0.1:10258")]
    pub metrics_bind_address: SocketAddr,
    /// Also serve /healthz and /readyz (only) here, for the kubelet's probes. Off when unset.
    #[arg(long)]
    pub health_bind_address: Option<SocketAddr>,
    /// text or json.
    #[arg(long, default_value = "text")]
    pub log_format: String,
    /// Overrides `clusterName` of the cloud-config.
    #[arg(long)]
    pub cluster_name: Option<String>,
}

/// 1-32 of a-z, 0-9, '-': usable in cloud names as it is.
fn is_short_cluster_id(n: &str) -> bool {
    (1..=32).contains(&n.len())
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A DNS name of lowercase labels (1-63 of a-z, 0-9, '-', no '-' at either end), at most 253.
fn is_dns_name(n: &str) -> bool {
    n.len() <= 253
        && n.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// Parses `500ms`, `15s`, `5m`, `1h` (and plain seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration such as 500ms, 15s, 5m, 1h"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("{s:?}: unit {unit:?} is not one of ms, s, m, h")),
    })
}

/// Which controllers `--controllers` selects; unknown names are an error naming the valid ones.
pub fn select_controllers(spec: &str) -> Result<Vec<&'static str>, String> {
    let mut on: Vec<&'static str> = vec![];
    let mut off: Vec<&str> = vec![];
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (neg, name) = match item.strip_prefix('-') {
            Some(n) => (true, n),
            None => (false, item),
        };
        if name == "*" && !neg {
            on.extend(CONTROLLERS.iter());
            continue;
        }
        if let Some((_, why)) = NOT_IMPLEMENTED.iter().find(|(n, _)| *n == name) {
            if neg {
                continue; // turning off what never runs is harmless
            }
            return Err(format!(
                "--controllers: {name:?} is not implemented ({why}); valid: *, {}",
                CONTROLLERS.join(", ")
            ));
        }
        let known = CONTROLLERS.iter().find(|c| **c == name).ok_or_else(|| {
            format!(
                "--controllers: unknown controller {name:?}; valid: *, {}",
                CONTROLLERS.join(", ")
            )
        })?;
        if neg { off.push(known) } else { on.push(known) }
    }
    on.retain(|c| !off.contains(c));
    on.sort();
    on.dedup();
    Ok(on)
}

/// Defaults from the cloud-config, overridable per Service by annotation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct LbDefaults {
    pub algorithm: LbAlgorithm,
    pub health_check_interval_seconds: u32,
    pub health_check_timeout_seconds: u32,
    pub health_check_retries: u32,
    pub proxy_protocol: bool,
    pub internal: bool,
    /// `private` (default): traffic goes to each Node's private (VPC) address when its VM has
    /// one; `public`: to its public address.
    pub target_address: TargetAddress,
}

impl Default for LbDefaults {
    fn default() -> Self {
        Self {
            algorithm: LbAlgorithm::RoundRobin,
            health_check_interval_seconds: 5,
            health_check_timeout_seconds: 3,
            health_check_retries: 3,
            proxy_protocol: false,
            internal: false,
            target_address: TargetAddress::Private,
        }
    }
}

/// Which load-balancer class this CCM serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassPolicy {
    pub class: String,
    /// Also serve Services with no `spec.loadBalancerClass`.
    pub claim_unset: bool,
}

/// The cloud-config file.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct CloudConfig {
    /// Names this cluster's load balancers (`k8s-<cluster id>-<service uid>`, see
    /// [`CloudConfig::cluster_id`]): 1-32 of a-z, 0-9, '-', or a kOps cluster's DNS name.
    pub cluster_name: String,
    /// The `topology.kubernetes.io/region` of Nodes whose VM reports no region (default
    /// `elemento`).
    pub region: Option<String>,
    pub api: ApiSettings,
    pub load_balancer: LoadBalancerConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct LoadBalancerConfig {
    /// The `spec.loadBalancerClass` this CCM serves.
    pub class: String,
    /// Also serve LoadBalancer Services without a class (set false next to MetalLB or Cilium).
    pub claim_unset_class: bool,
    pub defaults: LbDefaults,
}

impl Default for LoadBalancerConfig {
    fn default() -> Self {
        Self {
            class: "elemento.cloud/load-balancer".into(),
            claim_unset_class: true,
            defaults: LbDefaults::default(),
        }
    }
}

impl CloudConfig {
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--cloud-config {}: {e}", path.display()))?;
        let c: CloudConfig = serde_saphyr::from_str(&text)
            .map_err(|e| anyhow::anyhow!("--cloud-config {}: {e}", path.display()))?;
        Ok(c)
    }

    /// The cluster as cloud object names and ownership markers carry it. A `clusterName` of 1-32
    /// a-z, 0-9, '-' is used as it is (every name this CCM accepted before kOps names were, so
    /// existing load balancers keep their names). A kOps cluster's DNS name (`prod.example.com`)
    /// is folded to `prod-example-com`, cut to 23 characters, plus '-' and 8 hex digits of the
    /// whole name, so two names that fold alike never share load balancers.
    pub fn cluster_id(&self) -> String {
        let n = &self.cluster_name;
        if is_short_cluster_id(n) {
            return n.clone();
        }
        let folded: String = n
            .chars()
            .map(|c| if c == '.' { '-' } else { c })
            .take(23)
            .collect();
        format!(
            "{}-{:08x}",
            folded.trim_end_matches('-'),
            crate::digest::fnv1a32(n.as_bytes())
        )
    }

    /// Checks fields whose type does not say everything.
    pub fn validate(&self) -> Result<(), String> {
        let n = &self.cluster_name;
        if !is_short_cluster_id(n) && !is_dns_name(n) {
            return Err(format!(
                "clusterName {n:?}: 1-32 characters of a-z, 0-9 and '-', or a DNS name of \
                 lowercase labels (a kOps cluster name such as prod.example.com) are required"
            ));
        }
        if let Some(r) = &self.region
            && (r.is_empty() || elemento_api::topology::label_value(r) != *r)
        {
            return Err(format!(
                "region {r:?}: a label value is required (1-63 of A-Z, a-z, 0-9, '.', '_', '-', alphanumeric at both ends)"
            ));
        }
        if self.load_balancer.class.is_empty() {
            return Err("loadBalancer.class must not be empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_selection() {
        assert_eq!(
            select_controllers("*").unwrap(),
            ["cloud-node", "cloud-node-lifecycle", "service"]
        );
        assert_eq!(
            select_controllers("*,-service").unwrap(),
            ["cloud-node", "cloud-node-lifecycle"]
        );
        assert_eq!(
            select_controllers("*,-route").unwrap(),
            ["cloud-node", "cloud-node-lifecycle", "service"]
        );
        let e = select_controllers("service,route").unwrap_err();
        assert!(
            e.contains("\"route\" is not implemented")
                && e.contains("valid: *, cloud-node, cloud-node-lifecycle, service"),
            "{e}"
        );
        assert!(
            select_controllers("*,nodes")
                .unwrap_err()
                .contains("valid: *, cloud-node")
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn cloud_config_parses_and_validates() {
        let c: CloudConfig = serde_saphyr::from_str(
            "clusterName: prod\napi:\n  url: http://127.0.0.1:1\nloadBalancer:\n  claimUnsetClass: false\n  defaults:\n    algorithm: least_connections\n",
        )
        .unwrap();
        assert!(c.validate().is_ok());
        assert!(!c.load_balancer.claim_unset_class);
        assert_eq!(c.load_balancer.class, "elemento.cloud/load-balancer");
        let bad = CloudConfig {
            cluster_name: "Prod!".into(),
            ..c
        };
        assert!(bad.validate().unwrap_err().contains("clusterName"));
        assert!(serde_saphyr::from_str::<CloudConfig>("clustername: x\n").is_err());
    }

    #[test]
    fn kops_cluster_names_get_a_stable_id_and_short_names_keep_theirs() {
        let named = |n: &str| CloudConfig {
            cluster_name: n.into(),
            ..CloudConfig::default()
        };
        // Names valid before kOps names were accepted: unchanged, so existing LBs keep theirs.
        for n in ["prod", "in-cluster", "kubernetes"] {
            assert!(named(n).validate().is_ok(), "{n}");
            assert_eq!(named(n).cluster_id(), n);
        }
        let kops = named("prod.example.com");
        assert!(kops.validate().is_ok());
        let id = kops.cluster_id();
        assert!(
            id.starts_with("prod-example-com-") && id.len() == 16 + 1 + 8,
            "{id}"
        );
        assert_eq!(id, named("prod.example.com").cluster_id(), "deterministic");
        // Folding alike does not mean sharing: the digest is of the whole name.
        assert_ne!(id, named("prod-example.com").cluster_id());
        assert_ne!(id, named("prod-example-com").cluster_id());
        let long = named("a-very-long-cluster-name.with.many.labels.k8s.local").cluster_id();
        assert!(long.len() <= 32, "{long}");
        assert!(
            long.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        for bad in [
            "",
            "Prod.example.com",
            "a..b",
            "-a.b",
            "a_b.c",
            &"a".repeat(254),
        ] {
            let e = named(bad).validate().unwrap_err();
            assert!(
                e.contains("clusterName") && e.contains("DNS name"),
                "{bad}: {e}"
            );
        }
    }
}
