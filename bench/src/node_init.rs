//! node-init: N Nodes created at once with the uninitialized taint; time until the CCM has
//! initialized each. And the API server's floor for the same writes, with no CCM.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use elemento_api::node::NodeView;
use elemento_e2e::{testenv, unique};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::harness::*;
use crate::measure::{Percentiles, ProcStats, api_calls, percentiles, proc_stats};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInit {
    pub nodes: usize,
    pub latency_s: Percentiles,
    pub wall_s: f64,
    pub api_calls_total: u64,
    pub api_calls_by_route: BTreeMap<String, u64>,
    pub vm_list_calls_per_node: f64,
    pub ccm: ProcStats,
    pub ccm_reconcile_metrics: BTreeMap<String, f64>,
}

/// N Nodes created at once with the uninitialized taint and matching VMs (by name): time from
/// each create to the taint's removal, seen through a watch.
pub async fn node_init(n: usize, setup: Setup) -> anyhow::Result<NodeInit> {
    let run = unique("ni");
    let vms = bench_vms(&run, n);
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
                if let watcher::Event::Apply(n) | watcher::Event::InitApply(n) = ev
                    && !NodeView::from_node(&n).is_uninitialized()
                {
                    done.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(n.metadata.name.clone().unwrap_or_default())
                        .or_insert_with(Instant::now);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await; // the watch's initial list
    let start = Instant::now();
    let sent = create_nodes(
        &client,
        vms.iter()
            .map(|(_, name)| bench_node(name, &run, None, true))
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
    let (by_route, total) = api_calls(&sim.counters().await)?;
    let lists = by_route.get("vm.status").copied().unwrap_or(0);
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
                api.create(&PostParams::default(), &bench_node(&name, &run, None, true)).await?;
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
