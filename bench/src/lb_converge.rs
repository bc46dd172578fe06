//! lb-converge: S LoadBalancer Services at once, then Nodes added to every LB.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::bail;
use elemento_e2e::{testenv, unique};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, ListParams, PostParams};
use serde::{Deserialize, Serialize};

use crate::harness::*;
use crate::measure::api_calls;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LbConverge {
    pub services: usize,
    pub nodes: usize,
    pub added_nodes: usize,
    pub all_ingress_s: f64,
    pub new_nodes_in_every_lb_s: f64,
    pub api_calls_total: u64,
    pub api_calls_by_route: BTreeMap<String, u64>,
}

/// S LoadBalancer Services at once on `nodes` Nodes, then `added` more Nodes.
pub async fn lb_converge(
    services: usize,
    nodes: usize,
    added: usize,
    setup: Setup,
) -> anyhow::Result<LbConverge> {
    let run = unique("lb");
    let vms = bench_vms(&run, nodes + added);
    let sim = sim(&vms, setup, &[]).await;
    let files = Files::new(&sim);
    let client = testenv().admin_client().await;
    let ns = elemento_e2e::TestNamespace::create(&client, "bench-lb").await;
    let initial: Vec<Node> = vms[..nodes]
        .iter()
        .map(|(id, name)| bench_node(name, &run, Some(&format!("elemento://{id}")), false))
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
        .map(|(id, name)| bench_node(name, &run, Some(&format!("elemento://{id}")), false))
        .collect();
    let want: HashSet<String> = vms.iter().map(|(id, _)| id.clone()).collect();
    let start = Instant::now();
    create_nodes(&client, extra, true).await?;
    loop {
        let lbs = sim_lbs(&sim).await?;
        let complete = lbs.iter().filter(|l| {
            let t: HashSet<&String> = l.targets.iter().collect();
            want.iter().all(|id| t.contains(id))
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
    let (by_route, total) = api_calls(&sim.counters().await)?;
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
