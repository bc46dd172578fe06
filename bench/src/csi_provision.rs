//! csi-provision: P PVCs at once through the real csi-provisioner and our controller.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use elemento_e2e::{Process, testenv, unique};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, ListParams, PostParams};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::harness::*;
use crate::measure::{ProcStats, api_calls, proc_stats};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CsiProvision {
    pub pvcs: usize,
    /// Until csi-provisioner has created every PV (CreateVolume done): the driver's share.
    pub all_provisioned_s: f64,
    /// Until every PVC is Bound: adds kube-controller-manager's PV binder, which paces its own
    /// API writes (client-side 20 QPS by default).
    pub all_bound_s: f64,
    pub api_calls_per_volume: f64,
    pub api_calls_by_route: BTreeMap<String, u64>,
    pub controller: ProcStats,
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
    let (by_route, total) = api_calls(&sim.counters().await)?;
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
