//! Reliability on the real control plane: the CCM and the CSI controller keep converging while
//! the simulator injects faults on every route and both are SIGKILLed again and again; no leak,
//! no duplicate, no wrong deletion, no panic, no secret in any log or event. Sizes and the seed
//! come from RELIABILITY_NODES / _SERVICES / _PVCS / _CRASHES / _SEED (smaller defaults in CI).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use elemento_e2e::ccm::{CcmEnv, UNINITIALIZED, taint_keys};
use elemento_e2e::csi::{CsiCluster, DRIVER};
use elemento_e2e::reliability::{Row, record};
use elemento_e2e::sim::Method;
use elemento_e2e::{Process, leaked_secrets, require_root, testenv, unique, wait_for};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Service};
use k8s_openapi::api::storage::v1::{StorageClass, VolumeAttachment};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const FAULTS: &str = "20% 503, 10% 429 with Retry-After 1 s, 5% latency spikes of 1-3 s, 5% answers dropped after the operation ran";

fn fault_rule() -> Value {
    json!({"error_rate": 0.2, "status": 503, "rate_limit_rate": 0.1, "retry_after_seconds": 1,
           "spike_rate": 0.05, "spike_min_ms": 1000, "spike_max_ms": 3000, "drop_rate": 0.05})
}

/// A small deterministic generator for the chaos schedule.
struct Lcg(u64);
impl Lcg {
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        Duration::from_millis(lo + (self.0 >> 33) % (hi - lo))
    }
}

fn panics(procs: &[&Process]) -> u64 {
    procs
        .iter()
        .filter(|p| p.logs().contains("panicked at"))
        .count() as u64
}

#[tokio::test]
async fn faults_and_crashes_converge_without_leaks_duplicates_or_wrong_deletions() {
    let _s = SERIAL.lock().await;
    if !require_root("the fault and crash test") {
        return;
    }
    let (n_nodes, n_svcs, n_pvcs, crashes) = (
        size("RELIABILITY_NODES", 60),
        size("RELIABILITY_SERVICES", 16),
        size("RELIABILITY_PVCS", 12),
        size("RELIABILITY_CRASHES", 10),
    );
    let mut rng = Lcg(size("RELIABILITY_SEED", 42) as u64);
    let prefix = unique("rl");
    let mut scenario =
        String::from("limits: {max_vms: 100000, max_load_balancers: 100000}\nvms:\n");
    for i in 0..n_nodes {
        scenario.push_str(&format!(
            "  - {{id: {prefix}-vm-{i}, name: {prefix}-n{i}, template: neon}}\n"
        ));
    }
    let ccm_env = CcmEnv::new(&scenario).await;
    let mut csi = CsiCluster::start().await;
    ccm_env
        .sim
        .admin(Method::PUT, "/_sim/faults/*", Some(fault_rule()))
        .await;
    csi.sim
        .admin(Method::PUT, "/_sim/faults/*", Some(fault_rule()))
        .await;
    let mut graveyard: Vec<Process> = vec![];
    let (mut ccm, _) = ccm_env.start_ccm("ccm-chaos", &[]);
    let kube = ccm_env.kube.clone();
    let started = Instant::now();

    let crash = |ccm: &mut Process, csi: &mut CsiCluster, graveyard: &mut Vec<Process>| {
        ccm.kill();
        let (fresh, _) = ccm_env.start_ccm("ccm-chaos", &[]);
        graveyard.push(std::mem::replace(ccm, fresh));
        graveyard.extend(csi.crash_and_restart_controller());
    };
    let mut crashed = 0;

    // Phase 1: Nodes, LB Services, PVCs, all at once.
    let nodes: Api<Node> = Api::all(kube.clone());
    futures::stream::iter(0..n_nodes)
        .map(|i| {
            let nodes = nodes.clone();
            let n: Node = serde_json::from_value(json!({"metadata": {"name": format!("{prefix}-n{i}"), "labels": {"e2e.elemento.cloud/owner": ccm_env.owner}},
                "spec": {"taints": [{"key": UNINITIALIZED, "value": "true", "effect": "NoSchedule"}]}})).unwrap();
            async move { nodes.create(&PostParams::default(), &n).await }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let svcs: Api<Service> = Api::namespaced(kube.clone(), &ccm_env.ns.name);
    for i in 0..n_svcs {
        let s: Service = serde_json::from_value(json!({"metadata": {"name": format!("s{i}")}, "spec": {"type": "LoadBalancer", "selector": {"app": "x"}, "ports": [{"name": "http", "port": 80}]}})).unwrap();
        svcs.create(&PostParams::default(), &s).await.unwrap();
    }
    let scs: Api<StorageClass> = Api::all(csi.kube.clone());
    let sc_name = unique("rl-sc");
    let sc: StorageClass = serde_json::from_value(json!({"metadata": {"name": sc_name}, "provisioner": DRIVER, "allowVolumeExpansion": true, "volumeBindingMode": "Immediate"})).unwrap();
    scs.create(&PostParams::default(), &sc).await.unwrap();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(csi.kube.clone(), &csi.ns.name);
    for i in 0..n_pvcs {
        let c: PersistentVolumeClaim = serde_json::from_value(json!({"metadata": {"name": format!("c{i}")},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": sc_name, "resources": {"requests": {"storage": "1Gi"}}}})).unwrap();
        pvcs.create(&PostParams::default(), &c).await.unwrap();
    }
    while crashed < crashes / 2 {
        tokio::time::sleep(rng.ms(300, 2000)).await;
        crash(&mut ccm, &mut csi, &mut graveyard);
        crashed += 1;
    }

    // Phase 2: update half the Services (a second port), delete a quarter.
    let pp = PatchParams::default();
    for i in 0..n_svcs / 2 {
        svcs.patch(&format!("s{i}"), &pp, &Patch::Merge(json!({"spec": {"ports": [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]}}))).await.unwrap();
    }
    let deleted: Vec<usize> = (n_svcs * 3 / 4..n_svcs).collect();
    for i in &deleted {
        svcs.delete(&format!("s{i}"), &DeleteParams::default())
            .await
            .unwrap();
    }

    // Phase 3: PVCs: attach the first ones, grow half, then detach and delete half.
    let bound = |name: String| {
        let pvcs = pvcs.clone();
        async move {
            wait_for(
                &format!("{name} Bound"),
                Duration::from_secs(240),
                || async {
                    pvcs.get(&name).await.ok().filter(|c| {
                        c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
                    })
                },
            )
            .await
        }
    };
    let mut pv_of = BTreeMap::new();
    for i in 0..n_pvcs {
        let c = bound(format!("c{i}")).await;
        pv_of.insert(i, c.spec.unwrap().volume_name.unwrap());
    }
    let vas: Api<VolumeAttachment> = Api::all(csi.kube.clone());
    let attached: Vec<usize> = (0..n_pvcs.min(8)).collect();
    for i in &attached {
        let va: VolumeAttachment = serde_json::from_value(json!({"metadata": {"name": format!("{prefix}-va{i}")}, "spec": {"attacher": DRIVER, "nodeName": csi.node_name, "source": {"persistentVolumeName": pv_of[i]}}})).unwrap();
        vas.create(&PostParams::default(), &va).await.unwrap();
    }
    let grown: Vec<usize> = (0..n_pvcs / 2).collect();
    for i in &grown {
        pvcs.patch(
            &format!("c{i}"),
            &pp,
            &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}})),
        )
        .await
        .unwrap();
    }
    while crashed < crashes {
        tokio::time::sleep(rng.ms(300, 2000)).await;
        crash(&mut ccm, &mut csi, &mut graveyard);
        crashed += 1;
    }
    for i in &attached {
        wait_for("attached", Duration::from_secs(240), || async {
            vas.get(&format!("{prefix}-va{i}"))
                .await
                .ok()
                .filter(|v| v.status.as_ref().is_some_and(|s| s.attached))
        })
        .await;
        vas.delete(&format!("{prefix}-va{i}"), &DeleteParams::default())
            .await
            .unwrap();
    }
    let removed: Vec<usize> = (n_pvcs / 2..n_pvcs).collect();
    for i in &removed {
        pvcs.delete(&format!("c{i}"), &DeleteParams::default())
            .await
            .unwrap();
    }

    // Convergence, with the faults still on.
    let expected_svcs: Vec<usize> = (0..n_svcs).filter(|i| !deleted.contains(i)).collect();
    let expected_pvs: HashSet<String> = (0..n_pvcs)
        .filter(|i| !removed.contains(i))
        .map(|i| pv_of[&i].clone())
        .collect();
    let sim_ccm = &ccm_env.sim;
    wait_for("the end state", Duration::from_secs(300), || async {
        let ns = nodes
            .list(
                &ListParams::default()
                    .labels(&format!("e2e.elemento.cloud/owner={}", ccm_env.owner)),
            )
            .await
            .ok()?;
        let all_init = ns.items.len() == n_nodes
            && ns
                .items
                .iter()
                .all(|n| !taint_keys(n).iter().any(|k| k == UNINITIALIZED));
        let lbs = sim_ccm.state().await["load_balancers"]
            .as_array()
            .cloned()?;
        let lbs_ok = lbs.len() == expected_svcs.len()
            && lbs
                .iter()
                .all(|l| l["targets"].as_array().map_or(0, Vec::len) == n_nodes);
        let vols = csi.sim.state().await["volumes"].as_array().cloned()?;
        let grown_ok = vols
            .iter()
            .filter(|v| v["size_bytes"].as_u64() >= Some(2 << 30))
            .count()
            == grown.iter().filter(|i| !removed.contains(i)).count();
        let detached = vols
            .iter()
            .all(|v| v["attached_to"].as_array().is_none_or(Vec::is_empty));
        (all_init && lbs_ok && vols.len() == expected_pvs.len() && grown_ok && detached)
            .then_some(())
    })
    .await;
    let took = started.elapsed();

    // The end state, precisely.
    let ns = nodes
        .list(&ListParams::default().labels(&format!("e2e.elemento.cloud/owner={}", ccm_env.owner)))
        .await
        .unwrap();
    let wrong_deletions = (n_nodes - ns.items.len()) as u64
        + ns.items
            .iter()
            .filter(|n| {
                taint_keys(n)
                    .iter()
                    .any(|k| k.contains("shutdown") || k.contains("out-of-service"))
            })
            .count() as u64;
    let lbs = sim_ccm.state().await["load_balancers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut names: Vec<String> = lbs
        .iter()
        .filter_map(|l| l["name"].as_str().map(String::from))
        .collect();
    names.sort();
    let lb_dups = (names.len() - {
        let mut d = names.clone();
        d.dedup();
        d.len()
    }) as u64;
    let mut want_names = HashSet::new();
    for i in &expected_svcs {
        let s = svcs.get(&format!("s{i}")).await.unwrap();
        let name = format!("k8s-e2e-{}", s.metadata.uid.unwrap_or_default());
        let lb = lbs
            .iter()
            .find(|l| l["name"] == name.as_str())
            .cloned()
            .unwrap_or_default();
        want_names.insert(name);
        let want_listeners = if *i < n_svcs / 2 { 2 } else { 1 };
        assert_eq!(
            lb["listeners"].as_array().map_or(0, Vec::len),
            want_listeners,
            "service s{i}"
        );
    }
    let lb_leaks = names.iter().filter(|n| !want_names.contains(*n)).count() as u64;
    let vols = csi.sim.state().await["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut vnames: Vec<String> = vols
        .iter()
        .filter_map(|v| v["name"].as_str().map(String::from))
        .collect();
    vnames.sort();
    let vol_dups = (vnames.len() - {
        let mut d = vnames.clone();
        d.dedup();
        d.len()
    }) as u64;
    let vol_leaks = vnames.iter().filter(|n| !expected_pvs.contains(*n)).count() as u64;
    let all: Vec<&Process> = graveyard
        .iter()
        .chain(std::iter::once(&ccm))
        .chain(csi.controller.iter())
        .collect();
    let panics = panics(&all);
    let injected =
        sum_injected(&ccm_env.sim.counters().await) + sum_injected(&csi.sim.counters().await);

    // Secrets: no process log and no event holds a credential.
    let mut leaked: Vec<&str> = all.iter().flat_map(|p| leaked_secrets(&p.logs())).collect();
    let events = testenv().kubectl(&["get", "events", "-A", "-o", "json"]);
    leaked.extend(leaked_secrets(&events));

    let totals = format!("converged in {:.0} s", took.as_secs_f64());
    record(Row {
        class: "API faults on every route".into(),
        tried: format!(
            "{FAULTS}; {n_nodes} Nodes, {n_svcs} LB Services (created, {} updated, {} deleted), {n_pvcs} PVCs (created, {} attached, {} grown, {} deleted)",
            n_svcs / 2,
            deleted.len(),
            attached.len(),
            grown.len(),
            removed.len()
        ),
        times: injected,
        leaks: lb_leaks + vol_leaks,
        duplicates: lb_dups + vol_dups,
        wrong_deletions,
        panics,
        result: totals.clone(),
    });
    record(Row {
        class: "crash: CCM SIGKILL".into(),
        tried: "killed at random points of the workload above and restarted".into(),
        times: crashed as u64,
        leaks: lb_leaks,
        duplicates: lb_dups,
        wrong_deletions,
        panics,
        result: totals.clone(),
    });
    record(Row { class: "crash: CSI controller SIGKILL".into(), tried: "driver and sidecars killed together (a pod crash) and restarted, during the same workload".into(), times: crashed as u64, leaks: vol_leaks, duplicates: vol_dups, wrong_deletions: 0, panics, result: totals });
    record(Row {
        class: "secrets".into(),
        tried: format!(
            "the test password and bearer token searched in {} process logs and every Kubernetes event",
            all.len()
        ),
        times: all.len() as u64,
        leaks: leaked.len() as u64,
        duplicates: 0,
        wrong_deletions: 0,
        panics: 0,
        result: if leaked.is_empty() {
            "none found".into()
        } else {
            format!("FOUND {leaked:?}")
        },
    });
    assert_eq!(
        (
            lb_leaks,
            vol_leaks,
            lb_dups,
            vol_dups,
            wrong_deletions,
            panics
        ),
        (0, 0, 0, 0, 0, 0)
    );
    assert!(leaked.is_empty(), "secrets leaked: {leaked:?}");
    assert!(injected > 0, "faults were injected");
    for i in 0..n_pvcs / 2 {
        let _ = pvcs
            .delete(&format!("c{i}"), &DeleteParams::default())
            .await;
    }
    let _ = scs.delete(&sc_name, &DeleteParams::default()).await;
    drop(graveyard);
}

fn sum_injected(counters: &Value) -> u64 {
    counters.as_object().map_or(0, |m| {
        m.values().filter_map(|c| c["injected"].as_u64()).sum()
    })
}

#[tokio::test]
async fn rotated_credentials_are_picked_up_without_restart() {
    let _s = SERIAL.lock().await;
    let env = CcmEnv::new("vms:\n  - {id: rot-1, name: rot-1, template: neon}\n").await;
    let nodes: Api<Node> = Api::all(env.kube.clone());
    let (_ccm, _) = env.start_ccm("ccm-rot", &[]);
    let init = |name: &'static str| {
        let nodes = nodes.clone();
        async move {
            wait_for(
                &format!("{name} initialized"),
                Duration::from_secs(45),
                || async {
                    nodes
                        .get(name)
                        .await
                        .ok()
                        .filter(|n| !taint_keys(n).iter().any(|k| k == UNINITIALIZED))
                },
            )
            .await
        }
    };
    env.node("rot-1", None, None, true, &[]).await;
    init("rot-1").await;
    // The operator rotates the password: the daemon forgets the login; the Secret is updated.
    env.sim
        .admin(
            Method::PUT,
            "/_sim/auth/password",
            Some(json!({"password": "rotated-password-91b2"})),
        )
        .await;
    std::fs::write(
        &env.credentials,
        "username: demo\npassword: rotated-password-91b2\n",
    )
    .unwrap();
    // A VM the CCM has not seen: it must call the API again, get a 401, and log in anew.
    env.sim
        .admin(
            Method::POST,
            "/_sim/vms",
            Some(json!({"id": "rot-2", "name": "rot-2", "template": "neon"})),
        )
        .await;
    env.node("rot-2", None, None, true, &[]).await;
    init("rot-2").await;
    let logins = env.sim.counters().await["auth.login"]["by_status"].clone();
    assert!(
        logins["200"].as_u64() >= Some(2),
        "logged in again with the new password: {logins}"
    );
    record(Row {
        class: "credential rotation".into(),
        tried: "password changed at the API and in the mounted credentials file while the CCM runs"
            .into(),
        times: 1,
        leaks: 0,
        duplicates: 0,
        wrong_deletions: 0,
        panics: 0,
        result: "next login used the new password, no restart".into(),
    });
}
