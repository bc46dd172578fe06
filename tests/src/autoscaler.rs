//! The autoscaler tier: a control plane of its own (cluster profile: kube-scheduler and the
//! workload controllers), the simulator with two public providers, our CCM, our provider over
//! mTLS, the real cluster-autoscaler, KWOK, and a joiner that stands in for cloud-init plus a
//! kubelet: for each new VM it reads the user-data the provider stored, authenticates with its
//! bootstrap token, and registers the Node the kubelet would (name, labels and taints from the
//! user-data, the uninitialized taint, no providerID). When a VM disappears, the joiner stops
//! KWOK's heartbeats and marks the Node NotReady, as a powered-off kubelet would.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

pub use crate::control_plane::ControlPlane;
use crate::sim::{Method, SimProcess};
use crate::{Process, TestEnv, free_port, repo_root, workspace_bin};

pub const CLUSTER: &str = "ca";
/// The cheaper provider, whose registers are refused while `refuse_ovh` is set.
pub const OVH_GROUP: &str = "ovh-neon";
pub const SCW_GROUP: &str = "scw-neon";
/// The label KWOK manages Nodes by. A label (not an annotation): label selectors are applied by
/// the API server, so removing it ends KWOK's watch of the Node at once (heartbeats stop).
const KWOK_LABEL: &str = "kwok.x-k8s.io/node";

/// PEM files of the gRPC link: a CA, the provider's server certificate (for `localhost`), the
/// autoscaler's client certificate, and a client certificate of another CA (must be refused).
pub struct Certs {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub rogue_cert: PathBuf,
    pub rogue_key: PathBuf,
}

/// One run of `manifests/autoscaler-grpc-tls.sh` (the plain-manifest install's Secret): its
/// files written to `dir` as `<key>` (ca.crt, server.crt, server.key, client.crt, client.key).
fn grpc_tls_secret(dir: &Path) {
    std::fs::create_dir_all(dir).expect("cert dir");
    let out = Command::new("bash")
        .arg(repo_root().join("manifests/autoscaler-grpc-tls.sh"))
        .env("DAYS", "1")
        .output()
        .expect("autoscaler-grpc-tls.sh");
    assert!(
        out.status.success(),
        "manifests/autoscaler-grpc-tls.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_saphyr::from_str(&String::from_utf8_lossy(&out.stdout)).expect("the Secret's YAML");
    for (key, pem) in secret.data.unwrap_or_default() {
        std::fs::write(dir.join(key), pem.0).expect("write");
    }
}

impl Certs {
    /// The certificates the plain-manifest install uses (manifests/autoscaler-grpc-tls.sh), and
    /// a second run's client certificate as the one of another CA.
    pub fn make(dir: &Path) -> Self {
        grpc_tls_secret(dir);
        grpc_tls_secret(&dir.join("rogue"));
        let p = |f: &str| dir.join(f);
        Self {
            ca: p("ca.crt"),
            server_cert: p("server.crt"),
            server_key: p("server.key"),
            client_cert: p("client.crt"),
            client_key: p("client.key"),
            rogue_cert: p("rogue/client.crt"),
            rogue_key: p("rogue/client.key"),
        }
    }
}

/// The simulator's scenario: ovh (cheaper; its registers refused on demand) and scaleway, and
/// the cluster's control-plane VM (a listing of the organisation's VMs is never empty: the CCM
/// rightly treats an empty one as proving nothing).
pub fn scenario(refuse_ovh: bool, boot_delay_ms: u64) -> String {
    format!(
        "boot_delay_ms: {boot_delay_ms}\n\
         vms:\n\
         \x20 - {{name: {CLUSTER}-control-plane-1, template: neon}}\n\
         providers:\n\
         \x20 - {{name: ovh, region: eu-west-par, price_per_slot_hour: 0.01, price_per_gib_hour: 0.002, register_refused: {refuse_ovh}}}\n\
         \x20 - {{name: scaleway, region: fr-par, price_per_slot_hour: 0.02, price_per_gib_hour: 0.004}}\n"
    )
}

/// The provider's configuration.
pub fn provider_config(
    sim: &SimProcess,
    creds: &Path,
    listen: u16,
    api_server: &str,
    certs: &Certs,
) -> String {
    format!(
        "api: {{url: \"{}\", credentialsFile: \"{}\"}}\n\
         clusterName: {CLUSTER}\n\
         grpc:\n  listen: \"127.0.0.1:{listen}\"\n  tls: {{cert: \"{}\", key: \"{}\", clientCA: \"{}\"}}\n\
         bootstrap: {{apiServer: \"{api_server}\", caCertHash: \"sha256:0000\", tokenTTL: 10m}}\n\
         defaults:\n  minSize: 0\n  maxSize: 3\n  flavour: neon\n  maxNodeProvisionTime: 2m\n\
         \x20 image: {{url: \"https://images.example/noble.img\", sizeGiB: 10}}\n\
         \x20 kubeReserved: {{cpuMillis: 100, memoryMib: 256}}\n\
         nodeGroups:\n\
         \x20 - {{name: {OVH_GROUP}, provider: ovh, region: eu-west-par}}\n\
         \x20 - {{name: {SCW_GROUP}, provider: scaleway, region: fr-par}}\n",
        sim.base_url,
        creds.display(),
        certs.server_cert.display(),
        certs.server_key.display(),
        certs.ca.display(),
    )
}

/// What the joiner saw and did, for the assertions.
#[derive(Debug, Default, Clone)]
pub struct Joined {
    /// VM name → the user that its bootstrap token authenticated as.
    pub authenticated_as: BTreeMap<String, String>,
    /// Every user-data text the joiner read (all must be free of Elemento credentials).
    pub user_data: BTreeMap<String, String>,
    /// Nodes marked NotReady because their VM went away.
    pub gone: BTreeSet<String>,
}

/// The quoted value of `key: "…"` or `value: "…"` after `marker` in the user-data.
fn quoted_after(text: &str, marker: &str) -> Option<String> {
    let rest = &text[text.find(marker)? + marker.len()..];
    let start = rest.find('"')? + 1;
    let end = start + rest[start..].find('"')?;
    Some(rest[start..end].to_string())
}

/// One pass of the joiner.
pub async fn join_once(
    sim_url: &str,
    admin: &kube::Client,
    env: &TestEnv,
    joined: &Arc<Mutex<Joined>>,
) -> anyhow::Result<()> {
    let state: Value = reqwest::get(format!("{sim_url}/_sim/state"))
        .await?
        .error_for_status()?
        .json()
        .await?;
    let volumes: BTreeMap<String, Value> = state["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| Some((v["id"].as_str()?.to_string(), v)))
        .collect();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let nodes: Api<Node> = Api::all(admin.clone());
    let mut live = BTreeSet::new();
    for vm in state["vms"].as_array().cloned().unwrap_or_default() {
        let name = vm["name"].as_str().unwrap_or_default().to_string();
        if !name.starts_with(&format!("{CLUSTER}-")) {
            continue;
        }
        live.insert(name.clone());
        let booted = vm["ready_at_ms"].as_u64().unwrap_or(0) <= now_ms;
        if !booted
            || joined
                .lock()
                .expect("joined")
                .authenticated_as
                .contains_key(&name)
        {
            continue;
        }
        let Some(user_data) = vm["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|id| volumes.get(id.as_str()?))
            .find_map(|v| {
                v["cloud_init"]["files"]["user-data"]
                    .as_str()
                    .map(String::from)
            })
        else {
            continue;
        };
        let token = quoted_after(&user_data, "token:").unwrap_or_default();
        // The kubelet's first call with the bootstrap token: who does the API server say it is?
        let as_token = kube::Client::try_from({
            let path = env.token_kubeconfig(&token);
            let kc = kube::config::Kubeconfig::read_from(&path)?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        })?;
        let review: Value = as_token
            .request(
                http::Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}))?)?,
            )
            .await?;
        let user = review["status"]["userInfo"]["username"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut labels: BTreeMap<String, String> = quoted_after(&user_data, "node-labels, value:")
            .unwrap_or_default()
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.insert(KWOK_LABEL.into(), "fake".into());
        let mut taints = vec![
            json!({"key": elemento_api::taints::UNINITIALIZED, "value": "true", "effect": "NoSchedule"}),
        ];
        for t in quoted_after(&user_data, "register-with-taints, value:")
            .unwrap_or_default()
            .split(',')
            .filter(|t| !t.is_empty())
        {
            let (kv, effect) = t.split_once(':').unwrap_or((t, "NoSchedule"));
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            taints.push(json!({"key": k, "value": v, "effect": effect}));
        }
        let slots = vm["slots"].as_u64().unwrap_or(1);
        let ram = vm["ram_mib"].as_u64().unwrap_or(1024);
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"taints": taints},
            "status": {
                "capacity": {"cpu": slots.to_string(), "memory": format!("{ram}Mi"), "pods": "110"},
                "allocatable": {"cpu": format!("{}m", slots * 1000 - 100), "memory": format!("{}Mi", ram - 256), "pods": "110"},
            }
        }))?;
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        let mut j = joined.lock().expect("joined");
        j.authenticated_as.insert(name.clone(), user);
        j.user_data.insert(name, user_data);
    }
    // VMs gone: the kubelet stops, KWOK no longer manages the Node, its status goes Unknown
    // (re-asserted each pass until the CCM deletes the Node).
    let gone: Vec<String> = {
        let j = joined.lock().expect("joined");
        j.authenticated_as
            .keys()
            .filter(|n| !live.contains(*n))
            .cloned()
            .collect()
    };
    for name in gone {
        let Some(node) = nodes.get_opt(&name).await? else {
            continue;
        };
        let pp = PatchParams::default();
        if node.labels().contains_key(KWOK_LABEL) {
            let drop_kwok = json!({"metadata": {"labels": {KWOK_LABEL: null}}});
            nodes.patch(&name, &pp, &Patch::Merge(&drop_kwok)).await?;
        }
        if elemento_api::node::NodeView::from_node(&node).ready {
            let unknown = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status."}]}});
            nodes
                .patch_status(&name, &pp, &Patch::Strategic(&unknown))
                .await?;
        }
        joined.lock().expect("joined").gone.insert(name);
    }
    Ok(())
}

/// The processes of the tier, each a child killed on drop.
pub fn ccm(env: &TestEnv, cloud_config: &Path) -> Process {
    Process::spawn(
        "autoscaler-ccm",
        Command::new(workspace_bin("elemento-cloud-controller-manager"))
            .arg("--kubeconfig")
            .arg(&env.kubeconfig)
            .arg("--cloud-config")
            .arg(cloud_config)
            .args([
                "--leader-elect=false",
                "--node-monitor-period=2s",
                "--metrics-bind-address",
                &format!("127.0.0.1:{}", free_port()),
            ]),
    )
}

pub fn provider(env: &TestEnv, config: &Path, metrics_port: u16) -> Process {
    Process::spawn(
        "autoscaler-provider",
        Command::new(workspace_bin("elemento-cluster-autoscaler-provider"))
            .arg("--kubeconfig")
            .arg(&env.kubeconfig)
            .arg("--config")
            .arg(config)
            .args([
                "--metrics-bind-address",
                &format!("127.0.0.1:{metrics_port}"),
            ])
            .env("RUST_LOG", "info"),
    )
}

pub fn kwok(env: &TestEnv) -> Process {
    Process::spawn(
        "kwok",
        Command::new(env.tool("kwok"))
            .arg("--kubeconfig")
            .arg(&env.kubeconfig)
            .arg("--config")
            .arg(env.tool("kwok-stages.yaml"))
            .args([
                "--manage-all-nodes=false",
                &format!("--manage-nodes-with-label-selector={KWOK_LABEL}=fake"),
                "--node-lease-duration-seconds=40",
            ]),
    )
}

/// The real cluster-autoscaler, its timers shortened so a scale-up and a scale-down take a few
/// minutes (defaults in brackets: CA/config/flags).
pub fn cluster_autoscaler(env: &TestEnv, cloud_config: &Path) -> Process {
    Process::spawn(
        "cluster-autoscaler",
        Command::new(env.tool("cluster-autoscaler"))
            .arg("--kubeconfig")
            .arg(&env.kubeconfig)
            .arg(format!("--cloud-config={}", cloud_config.display()))
            .args([
                "--cloud-provider=externalgrpc",
                "--leader-elect=false",
                "--expander=price",
                "--scan-interval=2s",                        // [10s]
                "--scale-down-unneeded-time=10s",            // [10m]
                "--scale-down-delay-after-add=10s",          // [10m]
                "--scale-down-delay-after-failure=10s",      // [3m]
                "--node-delete-delay-after-taint=0s",        // [5s]
                "--max-node-provision-time=2m",              // [15m]
                "--initial-node-group-backoff-duration=60s", // [5m]
                "--unremovable-node-recheck-timeout=10s",    // [5m]
                "--skip-nodes-with-local-storage=false",
                "--skip-nodes-with-system-pods=false",
                "--v=2",
            ]),
    )
}

/// Calls per route since the last reset, from the simulator.
pub async fn calls(sim: &SimProcess) -> BTreeMap<String, u64> {
    sim.counters()
        .await
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v["total"].as_u64().unwrap_or(0)))
        .collect()
}

pub async fn set_latency(sim: &SimProcess, route: &str, ms: u64) {
    sim.admin(
        Method::PUT,
        &format!("/_sim/faults/{route}"),
        Some(json!({"latency_ms": ms})),
    )
    .await;
}

/// Peak resident memory of a process, MB (VmHWM).
pub fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
