//! steady-state: Nodes and LB Services converged, then an idle window: API calls, CPU, memory.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use elemento_api::node::NodeView;
use elemento_e2e::sim::Method;
use elemento_e2e::{testenv, unique};
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, ListParams, PostParams};
use serde::{Deserialize, Serialize};

use crate::harness::*;
use crate::measure::{ProcStats, api_calls, proc_stats};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SteadyState {
    pub nodes: usize,
    pub services: usize,
    pub idle_s: f64,
    pub api_calls_per_minute: f64,
    pub api_calls_by_route: BTreeMap<String, u64>,
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
    let vms = bench_vms(&run, nodes);
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
            .map(|(_, name)| bench_node(name, &run, None, true))
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
            .filter(|n| !NodeView::from_node(n).is_uninitialized())
            .count();
        let sim_lbs = sim_lbs(&sim).await?;
        let lbs = sim_lbs.len();
        let targets_ok = sim_lbs.iter().all(|l| l.targets.len() == nodes);
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
    sim.admin(Method::DELETE, "/_sim/counters", None).await;
    let before = proc_stats(ccm.pid());
    let t = Instant::now();
    tokio::time::sleep(idle).await;
    let elapsed = t.elapsed().as_secs_f64();
    let after = proc_stats(ccm.pid());
    let (by_route, total) = api_calls(&sim.counters().await)?;
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
