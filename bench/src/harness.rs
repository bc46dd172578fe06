//! What every scenario shares: the simulator with a fixed latency, the CCM and CSI controller
//! processes, bench Nodes and Services, and cleanup.

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use elemento_e2e::sim::{Method, SimProcess};
use elemento_e2e::{Process, free_port, testenv, workspace_bin};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde::Deserialize;
use serde_json::json;

pub(crate) const BENCH_LABEL: &str = "bench.elemento.cloud/run";
/// Creates in flight against the API server at once.
pub(crate) const CREATE_PARALLELISM: usize = 64;

/// Common knobs.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    pub latency_ms: u64,
    pub timeout: Duration,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            latency_ms: 50,
            timeout: Duration::from_secs(600),
        }
    }
}

/// `n` VMs of a run: (id, name), the name being the Node's.
pub(crate) fn bench_vms(run: &str, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("{run}-vm-{i}"), format!("{run}-n{i}")))
        .collect()
}

pub(crate) fn scenario_yaml(vms: &[(String, String)]) -> String {
    let mut s = String::from(
        "limits: {max_vms: 100000, max_volumes: 100000, max_load_balancers: 100000}\nlb_ip_pool: {first: 100.64.0.10, size: 60000}\nvms:\n",
    );
    for (id, name) in vms {
        s.push_str(&format!("  - {{id: {id}, name: {name}, template: neon}}\n"));
    }
    s
}

/// The simulator with `vms`, then the fixed latency on every route (counters reset after).
pub(crate) async fn sim(vms: &[(String, String)], setup: Setup, extra: &[&str]) -> SimProcess {
    let sim = SimProcess::start(&scenario_yaml(vms), extra);
    sim.admin(
        Method::PUT,
        "/_sim/faults/*",
        Some(json!({"latency_ms": setup.latency_ms})),
    )
    .await;
    sim.admin(Method::DELETE, "/_sim/counters", None).await;
    sim
}

pub(crate) struct Files {
    pub(crate) dir: tempfile::TempDir,
}

impl Files {
    pub(crate) fn new(sim: &SimProcess) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("creds.yaml"),
            "username: demo\npassword: demo-password\n",
        )
        .expect("creds");
        let api = format!(
            "api:\n  url: {}\n  credentialsFile: {}\n",
            sim.base_url,
            dir.path().join("creds.yaml").display()
        );
        std::fs::write(
            dir.path().join("cloud-config.yaml"),
            format!("clusterName: bench\n{api}"),
        )
        .expect("cloud config");
        std::fs::write(dir.path().join("driver.yaml"), api).expect("driver config");
        Self { dir }
    }
}

/// The CCM and its metrics port.
pub(crate) fn start_ccm(files: &Files) -> (Process, u16) {
    let env = testenv();
    let port = free_port();
    let p = Process::spawn(
        "bench-ccm",
        Command::new(workspace_bin("elemento-cloud-controller-manager"))
            .arg("--kubeconfig")
            .arg(&env.kubeconfig)
            .arg("--cloud-config")
            .arg(files.dir.path().join("cloud-config.yaml"))
            .args([
                "--leader-elect=false",
                "--metrics-bind-address",
                &format!("127.0.0.1:{port}"),
                "--log-format",
                "json",
            ])
            // Extra flags for experiments, e.g. BENCH_CCM_ARGS="--concurrent-node-syncs 32".
            .args(
                std::env::var("BENCH_CCM_ARGS")
                    .unwrap_or_default()
                    .split_whitespace(),
            )
            // BENCH_CCM_LOG=elemento_ccm::node=debug,elemento_ccm::nodes=debug traces each
            // Node's path (docs/benchmarks.md); the CCM's log is in the test env's proc-logs.
            .env(
                "RUST_LOG",
                std::env::var("BENCH_CCM_LOG").unwrap_or_else(|_| "warn".into()),
            ),
    );
    (p, port)
}

/// The peer CCM (tests/env/peer-ccm, built by tests/env/install.sh) with only its node
/// controllers (it has no load balancers), `args` added, its cloud answering after `latency_ms`.
pub(crate) fn start_peer(args: &[String], latency_ms: u64) -> Process {
    let env = testenv();
    Process::spawn(
        "bench-peer-ccm",
        Command::new(env.tool("peer-ccm"))
            .arg("--kubeconfig")
            .arg(&env.kubeconfig)
            .args([
                "--cloud-provider=elemento-peer",
                "--controllers=cloud-node,cloud-node-lifecycle",
                "--leader-elect=false",
                "--secure-port=0",
                "--use-service-account-credentials=false",
                "--v=0",
            ])
            .args(args)
            .env("PEER_CLOUD_LATENCY_MS", latency_ms.to_string()),
    )
}

pub fn bench_node(name: &str, run: &str, provider_id: Option<&str>, uninitialized: bool) -> Node {
    let labels = [(BENCH_LABEL.to_string(), run.to_string())].into();
    elemento_e2e::ccm::node_object(name, labels, provider_id, uninitialized)
}

/// Creates Nodes concurrently; returns when each create was sent. Ready Nodes get a Ready
/// condition, as a kubelet would report.
pub(crate) async fn create_nodes(
    client: &kube::Client,
    nodes: Vec<Node>,
    ready: bool,
) -> anyhow::Result<HashMap<String, Instant>> {
    let api: Api<Node> = Api::all(client.clone());
    let sent = Arc::new(Mutex::new(HashMap::new()));
    futures::stream::iter(nodes)
        .map(|n| {
            let (api, sent) = (api.clone(), sent.clone());
            async move {
                let name = n.metadata.name.clone().unwrap_or_default();
                sent.lock().unwrap_or_else(|p| p.into_inner()).insert(name.clone(), Instant::now());
                api.create(&PostParams::default(), &n).await?;
                if ready {
                    let st = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": null}]}});
                    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&st)).await?;
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CREATE_PARALLELISM)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(Arc::try_unwrap(sent)
        .map(|m| m.into_inner().unwrap_or_default())
        .unwrap_or_default())
}

/// Deletes every Service of `ns` while the CCM still runs (it removes their LBs and finalizers),
/// and waits until they are gone, so no namespace is left Terminating.
pub(crate) async fn delete_services(svcs: &Api<Service>) -> anyhow::Result<()> {
    svcs.delete_collection(&Default::default(), &ListParams::default())
        .await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while !svcs.list(&ListParams::default()).await?.items.is_empty() {
        if Instant::now() > deadline {
            bail!("Services were not deleted in time");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

pub(crate) fn cleanup_nodes(run: &str) {
    let _ = testenv().kubectl(&[
        "delete",
        "nodes",
        "-l",
        &format!("{BENCH_LABEL}={run}"),
        "--wait=false",
    ]);
}

/// The CCM's reconcile metrics (counts by result, and mean duration), for diagnosis.
pub(crate) async fn ccm_reconcile_metrics(port: u16) -> BTreeMap<String, f64> {
    let text = curl_get(&format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.starts_with("ccm_reconcile_total")
                || l.starts_with("ccm_reconcile_duration_seconds_sum")
                || l.starts_with("ccm_reconcile_duration_seconds_count")
        })
        .filter_map(|l| {
            l.rsplit_once(' ')
                .and_then(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        })
        .collect()
}

pub(crate) async fn curl_get(url: &str) -> Option<String> {
    let out = tokio::process::Command::new("curl")
        .args(["-fsS", url])
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn lb_service(name: &str) -> Service {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"type": "LoadBalancer", "selector": {"app": name}, "ports": [{"port": 80, "protocol": "TCP"}]}})).expect("svc")
}

pub(crate) fn start_csi_controller(files: &Files, socket: &std::path::Path) -> Process {
    let p = Process::spawn(
        "bench-csi-controller",
        Command::new(workspace_bin("elemento-csi-driver"))
            .args([
                "--mode",
                "controller",
                "--endpoint",
                &format!("unix://{}", socket.display()),
            ])
            .arg("--config")
            .arg(files.dir.path().join("driver.yaml"))
            .args([
                "--metrics-bind-address",
                &format!("127.0.0.1:{}", free_port()),
            ])
            .env("RUST_LOG", "warn"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    p
}

/// A load balancer as the simulator's state shows it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SimLb {
    #[serde(default)]
    pub targets: Vec<String>,
}

/// The simulator's load balancers.
pub(crate) async fn sim_lbs(sim: &SimProcess) -> anyhow::Result<Vec<SimLb>> {
    let state = sim.state().await;
    Ok(serde_json::from_value(state["load_balancers"].clone())?)
}
