//! Benchmark scenarios (issue: node-init, lb-converge, csi-provision, csi-node, steady-state)
//! against the real control plane and the simulator with a fixed per-call latency. Sizes are
//! parameters, so the test suite runs every scenario at tiny sizes (`tests/smoke.rs`).

pub mod measure;
pub mod report;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use elemento_e2e::sim::SimProcess;
use elemento_e2e::{Process, free_port, testenv, unique, workspace_bin};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde::Serialize;
use serde_json::{Value, json};

use measure::{Percentiles, ProcStats, api_calls, percentiles, proc_stats};

pub use elemento_e2e::ccm::UNINITIALIZED;
const BENCH_LABEL: &str = "bench.elemento.cloud/run";
/// Creates in flight against the API server at once.
const CREATE_PARALLELISM: usize = 64;

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

fn scenario_yaml(vms: &[(String, String)]) -> String {
    let mut s = String::from(
        "limits: {max_vms: 100000, max_volumes: 100000, max_load_balancers: 100000}\nlb_ip_pool: {first: 100.64.0.10, size: 60000}\nvms:\n",
    );
    for (id, name) in vms {
        s.push_str(&format!("  - {{id: {id}, name: {name}, template: neon}}\n"));
    }
    s
}

/// The simulator with `vms`, then the fixed latency on every route (counters reset after).
async fn sim(vms: &[(String, String)], setup: Setup, extra: &[&str]) -> SimProcess {
    let sim = SimProcess::start(&scenario_yaml(vms), extra);
    sim.admin(
        reqwest_method("PUT"),
        "/_sim/faults/*",
        Some(json!({"latency_ms": setup.latency_ms})),
    )
    .await;
    sim.admin(reqwest_method("DELETE"), "/_sim/counters", None)
        .await;
    sim
}

fn reqwest_method(m: &str) -> elemento_e2e::sim::Method {
    m.parse().expect("method")
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(sim: &SimProcess) -> Self {
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
fn start_ccm(files: &Files) -> (Process, u16) {
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
            .env("RUST_LOG", "warn"),
    );
    (p, port)
}

fn node_json(name: &str, run: &str, provider_id: Option<&str>, uninitialized: bool) -> Node {
    let labels = [(BENCH_LABEL.to_string(), run.to_string())].into();
    elemento_e2e::ccm::node_object(name, labels, provider_id, uninitialized)
}

/// Creates Nodes concurrently; returns when each create was sent. Ready Nodes get a Ready
/// condition, as a kubelet would report.
async fn create_nodes(
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
async fn delete_services(svcs: &Api<Service>) -> anyhow::Result<()> {
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

fn cleanup_nodes(run: &str) {
    let _ = testenv().kubectl(&[
        "delete",
        "nodes",
        "-l",
        &format!("{BENCH_LABEL}={run}"),
        "--wait=false",
    ]);
}

/// The CCM's reconcile metrics (counts by result, and mean duration), for diagnosis.
async fn ccm_reconcile_metrics(port: u16) -> BTreeMap<String, f64> {
    let text = reqwest_get(&format!("http://127.0.0.1:{port}/metrics"))
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

async fn reqwest_get(url: &str) -> Option<String> {
    let out = tokio::process::Command::new("curl")
        .args(["-fsS", url])
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

// ------------------------------------------------------------------ node-init

#[derive(Debug, Clone, Serialize)]
pub struct NodeInit {
    pub nodes: usize,
    pub latency_s: Percentiles,
    pub wall_s: f64,
    pub api_calls_total: u64,
    pub api_calls_by_route: serde_json::Map<String, Value>,
    pub vm_list_calls_per_node: f64,
    pub ccm: ProcStats,
    pub ccm_reconcile_metrics: BTreeMap<String, f64>,
}

/// N Nodes created at once with the uninitialized taint and matching VMs (by name): time from
/// each create to the taint's removal, seen through a watch.
pub async fn node_init(n: usize, setup: Setup) -> anyhow::Result<NodeInit> {
    let run = unique("ni");
    let vms: Vec<(String, String)> = (0..n)
        .map(|i| (format!("{run}-vm-{i}"), format!("{run}-n{i}")))
        .collect();
    let sim = sim(&vms, setup, &[]).await;
    let files = Files::new(&sim);
    let client = testenv().admin_client().await;
    let (ccm, ccm_port) = start_ccm(&files);
    // Watch first, so no initialization is missed.
    let done: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let api: Api<Node> = Api::all(client.clone());
    let watch = {
        let done = done.clone();
        let stream = watcher(
            api,
            watcher::Config::default().labels(&format!("{BENCH_LABEL}={run}")),
        );
        tokio::spawn(async move {
            let mut s = std::pin::pin!(stream);
            while let Some(Ok(ev)) = s.next().await {
                if let watcher::Event::Apply(n) | watcher::Event::InitApply(n) = ev {
                    let tainted = n
                        .spec
                        .as_ref()
                        .and_then(|s| s.taints.as_ref())
                        .is_some_and(|t| t.iter().any(|t| t.key == UNINITIALIZED));
                    if !tainted {
                        done.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .entry(n.metadata.name.clone().unwrap_or_default())
                            .or_insert_with(Instant::now);
                    }
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await; // the watch's initial list
    let start = Instant::now();
    let sent = create_nodes(
        &client,
        vms.iter()
            .map(|(_, name)| node_json(name, &run, None, true))
            .collect(),
        false,
    )
    .await?;
    let deadline = Instant::now() + setup.timeout;
    while done.lock().unwrap_or_else(|p| p.into_inner()).len() < n {
        if Instant::now() > deadline {
            cleanup_nodes(&run);
            bail!(
                "node-init {n}: only {} of {n} initialized in time",
                done.lock().unwrap_or_else(|p| p.into_inner()).len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wall = start.elapsed();
    watch.abort();
    let stats = proc_stats(ccm.pid());
    let reconcile_metrics = ccm_reconcile_metrics(ccm_port).await;
    let done = done.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut lat: Vec<Duration> = sent
        .iter()
        .map(|(name, t0)| {
            done.get(name)
                .map_or(Duration::ZERO, |t| t.saturating_duration_since(*t0))
        })
        .collect();
    if let Ok(path) = std::env::var("BENCH_NODE_TRACE") {
        let mut csv = String::from("node,sent_s,done_s\n");
        for (name, t0) in &sent {
            let d = done
                .get(name)
                .map_or(-1.0, |t| t.duration_since(start).as_secs_f64());
            csv.push_str(&format!(
                "{name},{:.3},{d:.3}\n",
                t0.duration_since(start).as_secs_f64()
            ));
        }
        let _ = std::fs::write(path, csv);
    }
    let (by_route, total) = api_calls(&sim.counters().await);
    let lists = by_route
        .get("vm.status")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    cleanup_nodes(&run);
    Ok(NodeInit {
        nodes: n,
        latency_s: percentiles(&mut lat),
        wall_s: wall.as_secs_f64(),
        api_calls_total: total,
        api_calls_by_route: by_route,
        vm_list_calls_per_node: lists as f64 / n as f64,
        ccm: stats,
        ccm_reconcile_metrics: reconcile_metrics,
    })
}

/// The floor the API server allows: the bench itself does what an ideal CCM would (the status
/// patch and the taint-removing patch) right after each create, with no cloud call at all.
pub async fn node_init_api_server_floor(n: usize) -> anyhow::Result<Percentiles> {
    let run = unique("floor");
    let client = testenv().admin_client().await;
    let api: Api<Node> = Api::all(client.clone());
    let lat = Arc::new(Mutex::new(vec![]));
    futures::stream::iter(0..n)
        .map(|i| {
            let (api, lat, run) = (api.clone(), lat.clone(), run.clone());
            async move {
                let name = format!("{run}-n{i}");
                let t0 = Instant::now();
                api.create(&PostParams::default(), &node_json(&name, &run, None, true)).await?;
                let st = json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}});
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&st)).await?;
                let main = json!({"spec": {"providerID": format!("elemento://{name}"), "taints": []}, "metadata": {"labels": {"node.kubernetes.io/instance-type": "neon"}}});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&main)).await?;
                lat.lock().unwrap_or_else(|p| p.into_inner()).push(t0.elapsed());
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CREATE_PARALLELISM)
        .try_collect::<Vec<_>>()
        .await?;
    cleanup_nodes(&run);
    let mut l = lat.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(percentiles(&mut l))
}

// ------------------------------------------------------------------ lb-converge

#[derive(Debug, Clone, Serialize)]
pub struct LbConverge {
    pub services: usize,
    pub nodes: usize,
    pub added_nodes: usize,
    pub all_ingress_s: f64,
    pub new_nodes_in_every_lb_s: f64,
    pub api_calls_total: u64,
    pub api_calls_by_route: serde_json::Map<String, Value>,
}

fn lb_service(name: &str) -> Service {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"type": "LoadBalancer", "selector": {"app": name}, "ports": [{"port": 80, "protocol": "TCP"}]}})).expect("svc")
}

/// S LoadBalancer Services at once on `nodes` Nodes, then `added` more Nodes.
pub async fn lb_converge(
    services: usize,
    nodes: usize,
    added: usize,
    setup: Setup,
) -> anyhow::Result<LbConverge> {
    let run = unique("lb");
    let vms: Vec<(String, String)> = (0..nodes + added)
        .map(|i| (format!("{run}-vm-{i}"), format!("{run}-n{i}")))
        .collect();
    let sim = sim(&vms, setup, &[]).await;
    let files = Files::new(&sim);
    let client = testenv().admin_client().await;
    let ns = elemento_e2e::TestNamespace::create(&client, "bench-lb").await;
    let initial: Vec<Node> = vms[..nodes]
        .iter()
        .map(|(id, name)| node_json(name, &run, Some(&format!("elemento://{id}")), false))
        .collect();
    create_nodes(&client, initial, true).await?;
    let (ccm, _) = start_ccm(&files);
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let start = Instant::now();
    futures::stream::iter((0..services).map(|i| lb_service(&format!("s{i}"))))
        .map(|s| {
            let svcs = svcs.clone();
            async move { svcs.create(&PostParams::default(), &s).await }
        })
        .buffer_unordered(CREATE_PARALLELISM)
        .try_collect::<Vec<_>>()
        .await?;
    let deadline = Instant::now() + setup.timeout;
    loop {
        let list = svcs.list(&ListParams::default()).await?;
        let ready = list
            .items
            .iter()
            .filter(|s| {
                s.status
                    .as_ref()
                    .and_then(|st| st.load_balancer.as_ref())
                    .and_then(|l| l.ingress.as_ref())
                    .is_some_and(|i| !i.is_empty())
            })
            .count();
        if ready == services {
            break;
        }
        if Instant::now() > deadline {
            bail!("lb-converge: {ready}/{services} ingresses in time");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_ingress = start.elapsed();
    let extra: Vec<Node> = vms[nodes..]
        .iter()
        .map(|(id, name)| node_json(name, &run, Some(&format!("elemento://{id}")), false))
        .collect();
    let want: HashSet<String> = vms.iter().map(|(id, _)| id.clone()).collect();
    let start = Instant::now();
    create_nodes(&client, extra, true).await?;
    loop {
        let state = sim.state().await;
        let lbs = state["load_balancers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let complete = lbs.iter().filter(|l| {
            let t: HashSet<String> = l["targets"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            want.is_subset(&t)
        });
        if lbs.len() == services && complete.count() == services {
            break;
        }
        if Instant::now() > deadline {
            bail!("lb-converge: new Nodes not in every LB in time");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new_nodes = start.elapsed();
    let (by_route, total) = api_calls(&sim.counters().await);
    delete_services(&svcs).await?;
    drop(ccm);
    cleanup_nodes(&run);
    Ok(LbConverge {
        services,
        nodes,
        added_nodes: added,
        all_ingress_s: all_ingress.as_secs_f64(),
        new_nodes_in_every_lb_s: new_nodes.as_secs_f64(),
        api_calls_total: total,
        api_calls_by_route: by_route,
    })
}

// ------------------------------------------------------------------ csi-provision

#[derive(Debug, Clone, Serialize)]
pub struct CsiProvision {
    pub pvcs: usize,
    /// Until csi-provisioner has created every PV (CreateVolume done): the driver's share.
    pub all_provisioned_s: f64,
    /// Until every PVC is Bound: adds kube-controller-manager's PV binder, which paces its own
    /// API writes (client-side 20 QPS by default).
    pub all_bound_s: f64,
    pub api_calls_per_volume: f64,
    pub api_calls_by_route: serde_json::Map<String, Value>,
    pub controller: ProcStats,
}

fn start_csi_controller(files: &Files, socket: &std::path::Path) -> Process {
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

/// P PVCs at once through csi-provisioner: time until all are Bound.
pub async fn csi_provision(p: usize, setup: Setup) -> anyhow::Result<CsiProvision> {
    let run = unique("cp");
    let sim = sim(&[(format!("{run}-vm"), format!("{run}-node"))], setup, &[]).await;
    let files = Files::new(&sim);
    let env = testenv();
    let client = env.admin_client().await;
    let ns = elemento_e2e::TestNamespace::create(&client, "bench-csi").await;
    let socket = files.dir.path().join("controller.sock");
    let controller = start_csi_controller(&files, &socket);
    let _provisioner = Process::spawn(
        "bench-csi-provisioner",
        Command::new(env.tool("csi-provisioner"))
            .arg(format!("--csi-address={}", socket.display()))
            .arg("--kubeconfig")
            .arg(&env.kubeconfig)
            .args([
                "--leader-election=false",
                "--timeout=60s",
                "--worker-threads=100",
                "--kube-api-qps=200",
                "--kube-api-burst=400",
            ]),
    );
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("{run}-node"), "labels": {BENCH_LABEL: run, "topology.kubernetes.io/zone": "atomos", "topology.kubernetes.io/region": "elemento"}}});
    let csinode = json!({"apiVersion": "storage.k8s.io/v1", "kind": "CSINode", "metadata": {"name": format!("{run}-node")},
        "spec": {"drivers": [{"name": "csi.elemento.cloud", "nodeID": format!("{run}-vm"), "topologyKeys": ["topology.kubernetes.io/zone", "topology.kubernetes.io/region"]}]}});
    let sc = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": run}, "provisioner": "csi.elemento.cloud", "volumeBindingMode": "Immediate"});
    let objs = files.dir.path().join("objs.yaml");
    std::fs::write(&objs, format!("{node}\n---\n{csinode}\n---\n{sc}\n"))?;
    env.kubectl(&["apply", "-f", objs.to_str().context("path")?]);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns.name);
    let start = Instant::now();
    futures::stream::iter(0..p)
        .map(|i| {
            let pvcs = pvcs.clone();
            let claim: PersistentVolumeClaim = serde_json::from_value(json!({"metadata": {"name": format!("c{i}")},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": run, "resources": {"requests": {"storage": "1Gi"}}}})).expect("pvc");
            async move { pvcs.create(&PostParams::default(), &claim).await }
        })
        .buffer_unordered(CREATE_PARALLELISM)
        .try_collect::<Vec<_>>()
        .await?;
    let deadline = Instant::now() + setup.timeout;
    let pvs: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(client.clone());
    let ours = |v: &k8s_openapi::api::core::v1::PersistentVolume| {
        v.spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref())
            == Some(run.as_str())
    };
    let mut all_provisioned = None;
    loop {
        if all_provisioned.is_none() {
            let made = pvs
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .filter(|v| ours(v))
                .count();
            if made == p {
                all_provisioned = Some(start.elapsed());
            }
        }
        let bound = pvcs
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
            .count();
        if bound == p && all_provisioned.is_some() {
            break;
        }
        if Instant::now() > deadline {
            bail!("csi-provision: {bound}/{p} bound in time");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_bound = start.elapsed();
    let (by_route, total) = api_calls(&sim.counters().await);
    let stats = proc_stats(controller.pid());
    // Delete the volumes while the provisioner runs: a PV left behind would be deleted by the
    // next run's provisioner and counted there.
    pvcs.delete_collection(&Default::default(), &ListParams::default())
        .await?;
    let deadline = Instant::now() + setup.timeout;
    while pvs
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .any(ours)
    {
        if Instant::now() > deadline {
            bail!("csi-provision: PVs were not deleted in time");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.kubectl(&[
        "delete",
        "-f",
        objs.to_str().context("path")?,
        "--wait=false",
    ]);
    Ok(CsiProvision {
        pvcs: p,
        all_provisioned_s: all_provisioned.unwrap_or(all_bound).as_secs_f64(),
        all_bound_s: all_bound.as_secs_f64(),
        api_calls_per_volume: total as f64 / p as f64,
        api_calls_by_route: by_route,
        controller: stats,
    })
}

// ------------------------------------------------------------------ csi-node

#[derive(Debug, Clone, Serialize)]
pub struct CsiNode {
    pub runs: usize,
    pub driver_stage_publish_s: measure::Spread,
    pub bare_mkfs_mount_s: measure::Spread,
    pub ratio_of_medians: f64,
    /// One gRPC round trip to the driver (NodeGetCapabilities): stage + publish pay two.
    pub grpc_round_trip_s: measure::Spread,
}

fn run_ok(cmd: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(cmd).args(args).output()?;
    if !out.status.success() {
        bail!("{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// NodeStage + NodePublish of a fresh 1 GiB ext4 volume, against plain mkfs.ext4 + mount of a
/// fresh 1 GiB loop device. Needs root.
pub async fn csi_node(runs: usize, setup: Setup) -> anyhow::Result<CsiNode> {
    use csi_grpc::v1::volume_capability::{AccessMode, AccessType, MountVolume, access_mode::Mode};
    use csi_grpc::v1::*;
    let files = elemento_e2e::csi::DriverFiles::new();
    let vm = unique("cn-vm");
    let sim = files.sim(&elemento_e2e::csi::scenario(&vm));
    sim.admin(
        reqwest_method("PUT"),
        "/_sim/faults/*",
        Some(json!({"latency_ms": setup.latency_ms})),
    )
    .await;
    let _driver = files.driver("all", "all", &vm);
    let ch = elemento_e2e::csi::channel(&files.socket("all")).await;
    let mut ctl = csi_grpc::v1::controller_client::ControllerClient::new(ch.clone());
    let mut node = csi_grpc::v1::node_client::NodeClient::new(ch);
    let cap = VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: "ext4".into(),
            ..Default::default()
        })),
    };
    let (mut driver_t, mut bare_t, mut rtt) = (vec![], vec![], vec![]);
    for i in 0..runs {
        let v = ctl
            .create_volume(CreateVolumeRequest {
                name: format!("bench-{i}-{vm}"),
                capacity_range: Some(CapacityRange {
                    required_bytes: 1 << 30,
                    limit_bytes: 0,
                }),
                volume_capabilities: vec![cap.clone()],
                ..Default::default()
            })
            .await?
            .into_inner()
            .volume
            .context("volume")?;
        let pc = ctl
            .controller_publish_volume(ControllerPublishVolumeRequest {
                volume_id: v.volume_id.clone(),
                node_id: vm.clone(),
                volume_capability: Some(cap.clone()),
                ..Default::default()
            })
            .await?
            .into_inner()
            .publish_context;
        let serial = pc.get("serial").context("publish context has no serial")?;
        let dev = std::fs::canonicalize(
            files
                .hostdev
                .join("disk/by-id")
                .join(format!("virtio-{serial}")),
        )?;
        let dev = dev.to_str().context("device path")?.to_string();
        // Each run times both on the same loop device, in alternating order (whichever goes
        // second finds the device discarded: its loop file as sparse as when it was created).
        for driver_turn in [i % 2 == 0, i % 2 == 1] {
            if driver_turn {
                let staging = files.dir.path().join(format!("s{i}")).display().to_string();
                let target = files.dir.path().join(format!("t{i}")).display().to_string();
                let t = Instant::now();
                node.node_stage_volume(NodeStageVolumeRequest {
                    volume_id: v.volume_id.clone(),
                    publish_context: pc.clone(),
                    staging_target_path: staging.clone(),
                    volume_capability: Some(cap.clone()),
                    ..Default::default()
                })
                .await?;
                node.node_publish_volume(NodePublishVolumeRequest {
                    volume_id: v.volume_id.clone(),
                    publish_context: pc.clone(),
                    staging_target_path: staging.clone(),
                    target_path: target.clone(),
                    volume_capability: Some(cap.clone()),
                    ..Default::default()
                })
                .await?;
                driver_t.push(t.elapsed().as_secs_f64());
                node.node_unpublish_volume(NodeUnpublishVolumeRequest {
                    volume_id: v.volume_id.clone(),
                    target_path: target,
                })
                .await?;
                node.node_unstage_volume(NodeUnstageVolumeRequest {
                    volume_id: v.volume_id.clone(),
                    staging_target_path: staging,
                })
                .await?;
            } else {
                let mnt = files.dir.path().join(format!("bare{i}"));
                std::fs::create_dir_all(&mnt)?;
                let t = Instant::now();
                run_ok("mkfs.ext4", &["-F", "-q", &dev])?;
                run_ok(
                    "mount",
                    &["-t", "ext4", &dev, mnt.to_str().context("path")?],
                )?;
                bare_t.push(t.elapsed().as_secs_f64());
                run_ok("umount", &[mnt.to_str().context("path")?])?;
            }
            run_ok("blkdiscard", &["-f", &dev])?;
        }
        ctl.controller_unpublish_volume(ControllerUnpublishVolumeRequest {
            volume_id: v.volume_id.clone(),
            node_id: vm.clone(),
            ..Default::default()
        })
        .await?;
        ctl.delete_volume(DeleteVolumeRequest {
            volume_id: v.volume_id,
            ..Default::default()
        })
        .await?;
    }
    for _ in 0..20 {
        let t = Instant::now();
        node.node_get_capabilities(NodeGetCapabilitiesRequest {})
            .await?;
        rtt.push(t.elapsed().as_secs_f64());
    }
    let (d, b) = (measure::spread(&driver_t), measure::spread(&bare_t));
    Ok(CsiNode {
        runs,
        grpc_round_trip_s: measure::spread(&rtt),
        ratio_of_medians: d.median / b.median,
        driver_stage_publish_s: d,
        bare_mkfs_mount_s: b,
    })
}

// ------------------------------------------------------------------ steady-state

#[derive(Debug, Clone, Serialize)]
pub struct SteadyState {
    pub nodes: usize,
    pub services: usize,
    pub idle_s: f64,
    pub api_calls_per_minute: f64,
    pub api_calls_by_route: serde_json::Map<String, Value>,
    pub ccm_cpu_percent_of_one_core: f64,
    pub ccm: ProcStats,
    pub csi_controller: ProcStats,
}

/// `nodes` Ready Nodes initialized by the CCM and `services` LB Services, then idle.
pub async fn steady_state(
    nodes: usize,
    services: usize,
    idle: Duration,
    setup: Setup,
) -> anyhow::Result<SteadyState> {
    let run = unique("ss");
    let vms: Vec<(String, String)> = (0..nodes)
        .map(|i| (format!("{run}-vm-{i}"), format!("{run}-n{i}")))
        .collect();
    let sim = sim(&vms, setup, &[]).await;
    let files = Files::new(&sim);
    let client = testenv().admin_client().await;
    let ns = elemento_e2e::TestNamespace::create(&client, "bench-ss").await;
    let (ccm, _) = start_ccm(&files);
    let socket = files.dir.path().join("controller.sock");
    let csi = start_csi_controller(&files, &socket);
    create_nodes(
        &client,
        vms.iter()
            .map(|(_, name)| node_json(name, &run, None, true))
            .collect(),
        true,
    )
    .await?;
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    for i in 0..services {
        svcs.create(&PostParams::default(), &lb_service(&format!("s{i}")))
            .await?;
    }
    let api: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + setup.timeout;
    loop {
        let l = api
            .list(&ListParams::default().labels(&format!("{BENCH_LABEL}={run}")))
            .await?;
        let init = l
            .items
            .iter()
            .filter(|n| {
                !n.spec
                    .as_ref()
                    .and_then(|s| s.taints.as_ref())
                    .is_some_and(|t| t.iter().any(|t| t.key == UNINITIALIZED))
            })
            .count();
        let lbs = sim.state().await["load_balancers"]
            .as_array()
            .map_or(0, Vec::len);
        let targets_ok = sim.state().await["load_balancers"]
            .as_array()
            .is_some_and(|a| {
                a.iter()
                    .all(|l| l["targets"].as_array().map_or(0, Vec::len) == nodes)
            });
        if init == nodes && lbs == services && targets_ok {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "steady-state: setup did not converge ({init}/{nodes} nodes, {lbs}/{services} LBs)"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Let the last reconciles settle, then measure an idle window.
    tokio::time::sleep(Duration::from_secs(5)).await;
    sim.admin(reqwest_method("DELETE"), "/_sim/counters", None)
        .await;
    let before = proc_stats(ccm.pid());
    let t = Instant::now();
    tokio::time::sleep(idle).await;
    let elapsed = t.elapsed().as_secs_f64();
    let after = proc_stats(ccm.pid());
    let (by_route, total) = api_calls(&sim.counters().await);
    let csi_stats = proc_stats(csi.pid());
    delete_services(&svcs).await?;
    cleanup_nodes(&run);
    Ok(SteadyState {
        nodes,
        services,
        idle_s: elapsed,
        api_calls_per_minute: total as f64 * 60.0 / elapsed,
        api_calls_by_route: by_route,
        ccm_cpu_percent_of_one_core: (after.cpu_seconds - before.cpu_seconds) / elapsed * 100.0,
        ccm: after,
        csi_controller: csi_stats,
    })
}

/// Machine facts recorded with the results.
pub fn machine() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert(
        "cores".into(),
        std::thread::available_parallelism()
            .map_or(0, |n| n.get())
            .to_string(),
    );
    m.insert(
        "kernel".into(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
    );
    m.insert(
        "cpu".into(),
        std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("model name\t: ").map(String::from))
            .unwrap_or_default(),
    );
    m
}
