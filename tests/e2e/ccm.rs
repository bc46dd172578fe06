//! The CCM against the real control plane and the simulator, with the chart's RBAC.
//! Tests run one at a time: every CCM watches every Node of the cluster.

use std::time::{Duration, Instant};

use elemento_e2e::ccm::{CcmEnv, UNINITIALIZED, label, taint_keys};
use elemento_e2e::{unique, wait_for};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use reqwest::Method;
use serde_json::{Value, json};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const T: Duration = Duration::from_secs(30);

fn vm(id: &str, name: &str, extra: &str) -> String {
    format!("  - {{id: {id}, name: {name}, {extra}}}\n")
}

async fn node_when<F: Fn(&Node) -> bool>(api: &Api<Node>, name: &str, what: &str, f: F) -> Node {
    wait_for(&format!("node {name}: {what}"), T, || async {
        api.get_opt(name).await.ok().flatten().filter(|n| f(n))
    })
    .await
}

/// The API server's admission adds `node.kubernetes.io/not-ready` to new Nodes; only ours count.
fn has_lifecycle_taint(n: &Node) -> bool {
    taint_keys(n)
        .iter()
        .any(|k| k == elemento_api::taints::SHUTDOWN || k == elemento_api::taints::OUT_OF_SERVICE)
}

fn initialized(n: &Node) -> bool {
    !taint_keys(n).iter().any(|k| k == UNINITIALIZED)
}

#[tokio::test]
async fn nodes_are_initialized_by_provider_id_name_and_ip() {
    let _serial = SERIAL.lock().await;
    let (a, b, c, d) = (
        unique("by-pid"),
        unique("by-name"),
        unique("by-ip"),
        unique("ghost"),
    );
    let scenario = format!(
        "vms:\n{}{}{}",
        vm(
            "vm-pid",
            "not-the-node-name",
            "template: neon, ipv4: 10.1.0.1, server_url: 'https://atomos-1.local:7777'"
        ),
        vm(
            "vm-name",
            &b,
            "template: argon2, ipv4: 10.1.0.2, provider: ovh, region: eu-west-par, server_url: 'https://ovh.meson.elemento.cloud:7777'"
        ),
        vm(
            "vm-ip",
            "unrelated",
            "slots: 3, ram_mib: 6144, ipv4: 51.15.0.3"
        ),
    );
    let env = CcmEnv::new(&scenario).await;
    let nodes: Api<Node> = Api::all(env.kube.clone());
    env.node(&a, Some("elemento://vm-pid"), None, true, &[])
        .await;
    env.node(&b, None, None, true, &[]).await;
    env.node(&c, None, Some("51.15.0.3"), true, &[]).await;
    env.node(&d, None, Some("10.1.0.99"), true, &[]).await;
    let (_ccm, port) = env.start_ccm("ccm-a", &[]);

    let na = node_when(&nodes, &a, "initialized", initialized).await;
    assert_eq!(
        na.spec.as_ref().unwrap().provider_id.as_deref(),
        Some("elemento://vm-pid")
    );
    assert_eq!(label(&na, "node.kubernetes.io/instance-type"), Some("neon"));
    // Zones are providers (kOps), the region the configured default (unless a volume of before
    // 0.2 in this shared control plane still uses the old value), the host a label of its own.
    assert_eq!(label(&na, "topology.kubernetes.io/zone"), Some("atomos"));
    let legacy = elemento_ccm::topology::regions_in_use(
        &Api::<k8s_openapi::api::core::v1::PersistentVolume>::all(env.kube.clone())
            .list(&Default::default())
            .await
            .unwrap()
            .items,
    );
    let want = if legacy.contains("atomos") {
        "atomos"
    } else {
        "elemento"
    };
    assert_eq!(label(&na, "topology.kubernetes.io/region"), Some(want));
    assert_eq!(
        label(&na, "node.elemento.cloud/host"),
        Some("atomos-1.local")
    );
    assert_eq!(label(&na, "node.elemento.cloud/provider"), Some("atomos"));
    let addrs: Vec<(String, String)> = na
        .status
        .unwrap()
        .addresses
        .unwrap()
        .into_iter()
        .map(|x| (x.type_, x.address))
        .collect();
    assert_eq!(
        addrs,
        vec![
            ("InternalIP".into(), "10.1.0.1".into()),
            ("Hostname".into(), a.clone())
        ]
    );

    let nb = node_when(&nodes, &b, "initialized", initialized).await;
    assert_eq!(
        nb.spec.as_ref().unwrap().provider_id.as_deref(),
        Some("elemento://vm-name")
    );
    assert_eq!(
        label(&nb, "node.kubernetes.io/instance-type"),
        Some("argon2")
    );
    assert_eq!(label(&nb, "topology.kubernetes.io/zone"), Some("ovh"));
    assert_eq!(
        label(&nb, "topology.kubernetes.io/region"),
        Some("eu-west-par")
    );
    assert_eq!(label(&nb, "node.elemento.cloud/provider"), Some("ovh"));

    let nc = node_when(&nodes, &c, "initialized", initialized).await;
    assert_eq!(
        nc.spec.as_ref().unwrap().provider_id.as_deref(),
        Some("elemento://vm-ip")
    );
    assert_eq!(
        label(&nc, "node.kubernetes.io/instance-type"),
        Some("custom-3cpu-6144mib")
    );
    let types: Vec<String> = nc
        .status
        .unwrap()
        .addresses
        .unwrap()
        .into_iter()
        .map(|x| x.type_)
        .collect();
    assert_eq!(
        types,
        ["InternalIP", "ExternalIP", "Hostname"],
        "a public address is also the ExternalIP"
    );

    // No VM: the taint stays and a Warning event says what was tried…
    let ev = wait_for("a VMNotFound event on the ghost node", T, || async {
        env.events_for("default", &d)
            .await
            .into_iter()
            .find(|e| e["reason"] == "ElementoVMNotFound")
    })
    .await;
    assert_eq!(ev["type"], "Warning");
    let note = ev["note"].as_str().unwrap();
    assert!(
        note.contains(&format!("VM name \"{d}\"")) && note.contains("10.1.0.99"),
        "{note}"
    );
    assert!(!initialized(&nodes.get(&d).await.unwrap()));
    // …until the VM appears.
    env.sim
        .admin(
            Method::POST,
            "/_sim/vms",
            Some(json!({"id": "vm-late", "name": d, "template": "helium"})),
        )
        .await;
    let nd = node_when(&nodes, &d, "initialized after its VM appeared", initialized).await;
    assert_eq!(
        label(&nd, "node.kubernetes.io/instance-type"),
        Some("helium")
    );

    let m = env.metrics(port).await;
    assert!(m.contains("ccm_node_initialization_seconds_count 4"), "{m}");
    let lists = env.sim.counters().await["vm.status"]["total"]
        .as_u64()
        .unwrap();
    assert!(
        lists <= 15,
        "{lists} VM listings for 4 nodes and a few retries"
    );
}

/// Later Meson's record shape (§8.3, §8.4): status fields at the top level, a private (VPC)
/// address next to the public one. The Node is found by its private address, which becomes its
/// InternalIP; the public one its ExternalIP; the region comes from the top-level `mesos`.
#[tokio::test]
async fn vpc_addresses_and_top_level_status_fields() {
    let _serial = SERIAL.lock().await;
    let n = unique("vpc");
    let scenario = format!(
        "wire: {{vm_status_top_level: true}}\nvms:\n{}",
        vm(
            "vm-vpc",
            "not-the-node",
            "template: neon, ipv4: 51.15.0.8, private_ipv4: 10.2.0.8, provider: ovh, region: eu-west-par, tags: ['k8s-cluster=e2e']"
        )
    );
    let env = CcmEnv::new(&scenario).await;
    let nodes: Api<Node> = Api::all(env.kube.clone());
    env.node(&n, None, Some("10.2.0.8"), true, &[]).await;
    let (_ccm, _) = env.start_ccm("ccm-vpc", &[]);
    let node = node_when(&nodes, &n, "initialized", initialized).await;
    assert_eq!(
        node.spec.as_ref().unwrap().provider_id.as_deref(),
        Some("elemento://vm-vpc")
    );
    let addrs: Vec<(String, String)> = node
        .status
        .clone()
        .unwrap()
        .addresses
        .unwrap()
        .into_iter()
        .map(|a| (a.type_, a.address))
        .collect();
    assert_eq!(
        addrs,
        [
            ("InternalIP".to_string(), "10.2.0.8".to_string()),
            ("ExternalIP".to_string(), "51.15.0.8".to_string()),
            ("Hostname".to_string(), n.clone())
        ]
    );
    assert_eq!(label(&node, "node.elemento.cloud/provider"), Some("ovh"));
    assert_eq!(label(&node, "topology.kubernetes.io/zone"), Some("ovh"));
    assert_eq!(
        label(&node, "topology.kubernetes.io/region"),
        Some("eu-west-par")
    );
}

/// A volume provisioned before 0.2 has `topology.kubernetes.io/region: <provider>` (the old value) in
/// its node affinity: Nodes keep that value while it exists, so the volume is never stranded,
/// and take the new one once it is gone.
#[tokio::test]
async fn legacy_region_values_stay_while_a_volume_uses_them() {
    use k8s_openapi::api::core::v1::PersistentVolume;
    let _serial = SERIAL.lock().await;
    let n = unique("legacy");
    // A provider of this test's own: no other test's volumes use its values.
    let provider = unique("prov");
    let scenario = format!(
        "vms:\n{}",
        vm(
            "vm-legacy",
            "x",
            &format!("template: neon, provider: {provider}")
        )
    );
    let env = CcmEnv::new(&scenario).await;
    let pvs: Api<PersistentVolume> = Api::all(env.kube.clone());
    let pv_name = unique("pv-legacy");
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": pv_name},
        "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "csi": {"driver": "csi.elemento.cloud", "volumeHandle": pv_name},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "topology.kubernetes.io/region", "operator": "In", "values": [provider]}
            ]}]}}
        }
    }))
    .unwrap();
    pvs.create(&PostParams::default(), &pv).await.unwrap();
    let nodes: Api<Node> = Api::all(env.kube.clone());
    env.node(&n, Some("elemento://vm-legacy"), None, true, &[])
        .await;
    let (_ccm, _) = env.start_ccm("ccm-legacy", &["--node-status-update-frequency", "1s"]);
    let node = node_when(&nodes, &n, "initialized", initialized).await;
    assert_eq!(
        label(&node, "topology.kubernetes.io/zone"),
        Some(provider.as_str())
    );
    assert_eq!(
        label(&node, "topology.kubernetes.io/region"),
        Some(provider.as_str()),
        "the value the volume's node affinity needs (before 0.2: the provider)"
    );
    pvs.delete(&pv_name, &DeleteParams::default())
        .await
        .unwrap();
    node_when(
        &nodes,
        &n,
        "the new region once no volume uses the old one",
        |n| label(n, "topology.kubernetes.io/region") == Some("elemento"),
    )
    .await;
}

#[tokio::test]
async fn lifecycle_deletes_gone_taints_off_and_ignores_foreign_nodes() {
    let _serial = SERIAL.lock().await;
    let scenario = format!(
        "vms:\n{}{}",
        vm("vm-gone", "l1", "template: neon"),
        vm("vm-off", "l2", "template: neon")
    );
    let env = CcmEnv::new(&scenario).await;
    let nodes: Api<Node> = Api::all(env.kube.clone());
    let (gone, off, foreign) = (unique("gone"), unique("off"), unique("foreign"));
    // Initialized Nodes without a kubelet: no Ready condition, so they count as NotReady.
    env.node(&gone, Some("elemento://vm-gone"), None, false, &[])
        .await;
    env.node(&off, Some("elemento://vm-off"), None, false, &[])
        .await;
    env.node(&foreign, Some("hcloud://12345"), None, false, &[])
        .await;
    let (_ccm, _) = env.start_ccm("ccm-l", &["--out-of-service-taint-after", "2s"]);

    env.sim
        .admin(
            Method::POST,
            "/_sim/vms/vm-off/power",
            Some(json!({"power": "shut off"})),
        )
        .await;
    node_when(&nodes, &off, "shutdown taint", |n| {
        taint_keys(n).contains(&elemento_api::taints::SHUTDOWN.into())
    })
    .await;
    let n = node_when(&nodes, &off, "out-of-service taint after 2 s", |n| {
        taint_keys(n).contains(&elemento_api::taints::OUT_OF_SERVICE.into())
    })
    .await;
    let oos = n
        .spec
        .unwrap()
        .taints
        .unwrap()
        .into_iter()
        .find(|t| t.key == elemento_api::taints::OUT_OF_SERVICE)
        .unwrap();
    assert_eq!(oos.effect, "NoExecute");
    env.sim
        .admin(
            Method::POST,
            "/_sim/vms/vm-off/power",
            Some(json!({"power": "running"})),
        )
        .await;
    node_when(&nodes, &off, "our taints removed when running", |n| {
        !has_lifecycle_taint(n)
    })
    .await;

    env.sim
        .admin(Method::DELETE, "/_sim/vms/vm-gone", None)
        .await;
    wait_for("the node of a deleted VM to be deleted", T, || async {
        nodes
            .get_opt(&gone)
            .await
            .ok()
            .and_then(|n| n.is_none().then_some(()))
    })
    .await;

    let f = nodes.get(&foreign).await.unwrap();
    assert!(
        !has_lifecycle_taint(&f),
        "a foreign node is never tainted: {:?}",
        taint_keys(&f)
    );
    assert_eq!(
        f.spec.unwrap().provider_id.as_deref(),
        Some("hcloud://12345")
    );
    assert!(
        nodes.get(&off).await.is_ok(),
        "the powered-off node was not deleted"
    );
}

async fn lbs(env: &CcmEnv) -> Vec<Value> {
    env.sim.state().await["load_balancers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn svc(name: &str, ports: Value, annotations: Value, class: Option<&str>) -> Service {
    let mut spec = json!({"type": "LoadBalancer", "ports": ports, "selector": {"app": name}});
    if let Some(c) = class {
        spec["loadBalancerClass"] = json!(c);
    }
    serde_json::from_value(
        json!({"metadata": {"name": name, "annotations": annotations}, "spec": spec}),
    )
    .unwrap()
}

/// Deletes a Service and waits until the CCM has removed its finalizer and the Service is gone.
async fn delete_service(svcs: &Api<Service>, name: &str) {
    svcs.delete(name, &DeleteParams::default()).await.unwrap();
    wait_for(&format!("Service {name} to be gone"), T, || async {
        svcs.get_opt(name)
            .await
            .ok()
            .and_then(|s| s.is_none().then_some(()))
    })
    .await;
}

fn ingress_ip(s: &Service) -> Option<String> {
    s.status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?
        .ip
        .clone()
}

#[tokio::test]
async fn load_balancer_services_follow_ports_annotations_and_nodes() {
    let _serial = SERIAL.lock().await;
    let scenario = format!(
        "vms:\n{}{}{}",
        vm("w1", "w1", "template: neon"),
        vm("w2", "w2", "template: neon"),
        vm("w3", "w3", "template: neon")
    );
    let env = CcmEnv::new(&scenario).await;
    let (n1, n2, n3) = (unique("w1"), unique("w2"), unique("w3"));
    env.node(&n1, Some("elemento://w1"), None, false, &[]).await;
    env.node(&n2, Some("elemento://w2"), None, false, &[]).await;
    let svcs: Api<Service> = Api::namespaced(env.kube.clone(), &env.ns.name);
    let (_ccm, _) = env.start_ccm("ccm-s", &[]);

    svcs.create(
        &PostParams::default(),
        &svc(
            "web",
            json!([{"name": "http", "port": 80, "protocol": "TCP"}]),
            json!({}),
            None,
        ),
    )
    .await
    .unwrap();
    let s = wait_for("an ingress IP", T, || async {
        svcs.get("web")
            .await
            .ok()
            .filter(|s| ingress_ip(s).is_some())
    })
    .await;
    let node_port = s.spec.as_ref().unwrap().ports.as_ref().unwrap()[0]
        .node_port
        .unwrap();
    assert!(
        s.metadata
            .finalizers
            .clone()
            .unwrap()
            .contains(&"service.kubernetes.io/load-balancer-cleanup".into())
    );
    let all = lbs(&env).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["ip"].as_str(), ingress_ip(&s).as_deref());
    assert_eq!(
        all[0]["listeners"],
        json!([{"protocol": "tcp", "port": 80, "target_port": node_port}])
    );
    assert_eq!(all[0]["targets"], json!(["w1", "w2"]));
    assert_eq!(
        all[0]["name"],
        format!("k8s-e2e-{}", s.metadata.uid.unwrap())
    );

    // A Service of another class is never touched.
    svcs.create(
        &PostParams::default(),
        &svc(
            "metal",
            json!([{"port": 81}]),
            json!({}),
            Some("metallb.io/l2"),
        ),
    )
    .await
    .unwrap();

    // Ports change → listeners follow.
    let pp = PatchParams::default();
    svcs.patch("web", &pp, &Patch::Merge(json!({"spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}]}}))).await.unwrap();
    wait_for("two listeners", T, || async {
        lbs(&env)
            .await
            .first()
            .filter(|l| l["listeners"].as_array().map(Vec::len) == Some(2))
            .cloned()
    })
    .await;

    // Annotation change → LB settings follow.
    svcs.patch("web", &pp, &Patch::Merge(json!({"metadata": {"annotations": {"load-balancer.elemento.cloud/algorithm": "least_connections"}}}))).await.unwrap();
    wait_for("algorithm least_connections", T, || async {
        lbs(&env)
            .await
            .first()
            .filter(|l| l["algorithm"] == "least_connections")
            .cloned()
    })
    .await;

    // A new Node → it becomes a target.
    env.node(&n3, Some("elemento://w3"), None, false, &[]).await;
    wait_for("w3 among the targets", T, || async {
        lbs(&env)
            .await
            .first()
            .filter(|l| l["targets"] == json!(["w1", "w2", "w3"]))
            .cloned()
    })
    .await;

    // An invalid annotation → a Warning naming it and the accepted values; the LB is unchanged.
    let updates_before = env.sim.counters().await["loadbalancer.update"]["total"]
        .as_u64()
        .unwrap_or(0);
    svcs.patch("web", &pp, &Patch::Merge(json!({"metadata": {"annotations": {"load-balancer.elemento.cloud/algorithm": "fastest"}}}))).await.unwrap();
    let ev = wait_for("an InvalidLoadBalancerAnnotation event", T, || async {
        env.events_for(&env.ns.name, "web")
            .await
            .into_iter()
            .find(|e| e["reason"] == "InvalidLoadBalancerAnnotation")
    })
    .await;
    let note = ev["note"].as_str().unwrap();
    assert!(
        note.contains("load-balancer.elemento.cloud/algorithm")
            && note.contains("round_robin, least_connections, source_ip"),
        "{note}"
    );
    assert_eq!(lbs(&env).await[0]["algorithm"], "least_connections");
    assert_eq!(
        env.sim.counters().await["loadbalancer.update"]["total"]
            .as_u64()
            .unwrap_or(0),
        updates_before
    );

    let metal = svcs.get("metal").await.unwrap();
    assert!(
        metal
            .metadata
            .finalizers
            .clone()
            .unwrap_or_default()
            .is_empty(),
        "other class: no finalizer"
    );
    assert!(ingress_ip(&metal).is_none());
    assert_eq!(lbs(&env).await.len(), 1);

    // Deleting the Service deletes the LB, then the finalizer goes and the Service with it.
    delete_service(&svcs, "web").await;
    assert!(lbs(&env).await.is_empty(), "no LB left behind");
}

#[tokio::test]
async fn a_ccm_killed_during_lb_creation_makes_exactly_one_lb() {
    let _serial = SERIAL.lock().await;
    let env = CcmEnv::new(&format!("vms:\n{}", vm("k1", "k1", "template: neon"))).await;
    env.node(&unique("k1"), Some("elemento://k1"), None, false, &[])
        .await;
    // The LB is made, but its answer is lost: the CCM cannot know it exists.
    env.sim
        .admin(
            Method::PUT,
            "/_sim/faults/loadbalancer.create",
            Some(json!({"drop_rate": 1.0, "max_faults": 1})),
        )
        .await;
    let svcs: Api<Service> = Api::namespaced(env.kube.clone(), &env.ns.name);
    let (mut ccm, _) = env.start_ccm("ccm-k", &[]);
    svcs.create(
        &PostParams::default(),
        &svc("crash", json!([{"port": 80}]), json!({}), None),
    )
    .await
    .unwrap();
    wait_for("the first create call", T, || async {
        (env.sim.counters().await["loadbalancer.create"]["total"].as_u64() >= Some(1)).then_some(())
    })
    .await;
    ccm.kill();
    assert_eq!(lbs(&env).await.len(), 1);
    let (_ccm2, _) = env.start_ccm("ccm-k2", &[]);
    wait_for("an ingress IP after the restart", T, || async {
        svcs.get("crash")
            .await
            .ok()
            .filter(|s| ingress_ip(s).is_some())
    })
    .await;
    assert_eq!(lbs(&env).await.len(), 1, "exactly one LB");
    assert_eq!(
        env.sim.counters().await["loadbalancer.create"]["total"].as_u64(),
        Some(1),
        "found by name, not created again"
    );
    svcs.delete("crash", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the LB to be deleted", T, || async {
        lbs(&env).await.is_empty().then_some(())
    })
    .await;
}

async fn holder(env: &CcmEnv) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(env.kube.clone(), &env.ns.name);
    leases
        .get_opt("elemento-cloud-controller-manager")
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

async fn callers_since(env: &CcmEnv, since: u64) -> (Vec<String>, u64) {
    let calls = env
        .sim
        .admin(Method::GET, &format!("/_sim/calls?since={since}"), None)
        .await;
    let calls = calls.as_array().cloned().unwrap_or_default();
    let last = calls
        .last()
        .and_then(|c| c["seq"].as_u64())
        .unwrap_or(since);
    let mut who: Vec<String> = calls
        .iter()
        .filter_map(|c| c["client"].as_str().map(String::from))
        .collect();
    who.sort();
    who.dedup();
    (who, last)
}

#[tokio::test]
async fn only_the_leader_acts_and_the_standby_takes_over() {
    let _serial = SERIAL.lock().await;
    let env = CcmEnv::new(&format!(
        "vms:\n{}{}",
        vm("e1", "e1", "template: neon"),
        vm("e2", "e2", "template: neon")
    ))
    .await;
    let nodes: Api<Node> = Api::all(env.kube.clone());
    let lease = [
        "--leader-elect-lease-duration",
        "4s",
        "--leader-elect-renew-deadline",
        "3s",
        "--leader-elect-retry-period",
        "500ms",
    ];
    let (mut a, _) = env.start_ccm("ccm-leader-a", &lease);
    wait_for("ccm-leader-a to lead", T, || async {
        (holder(&env).await.as_deref() == Some("ccm-leader-a")).then_some(())
    })
    .await;
    let (_b, _) = env.start_ccm("ccm-leader-b", &lease);
    let (n1, n2) = (unique("e1"), unique("e2"));
    env.node(&n1, Some("elemento://e1"), None, true, &[]).await;
    node_when(&nodes, &n1, "initialized by the leader", initialized).await;
    let (who, seq) = callers_since(&env, 0).await;
    assert!(
        !who.is_empty() && who.iter().all(|c| c.contains("ccm-leader-a")),
        "only the leader called the API: {who:?}"
    );

    a.kill();
    let killed = Instant::now();
    env.node(&n2, Some("elemento://e2"), None, true, &[]).await;
    node_when(&nodes, &n2, "initialized by the new leader", initialized).await;
    let took = killed.elapsed();
    assert_eq!(holder(&env).await.as_deref(), Some("ccm-leader-b"));
    assert!(
        took < Duration::from_secs(4 + 6),
        "took over in {took:?}: lease 4 s + margin"
    );
    let (who, _) = callers_since(&env, seq).await;
    assert!(
        !who.is_empty() && who.iter().all(|c| c.contains("ccm-leader-b")),
        "after the kill only b called: {who:?}"
    );
}

async fn event_with(env: &CcmEnv, svc: &str, reason: &str) -> Value {
    wait_for(&format!("a {reason} event on {svc}"), T, || async {
        env.events_for(&env.ns.name, svc)
            .await
            .into_iter()
            .find(|e| e["reason"] == reason)
    })
    .await
}

/// Creates the LoadBalancer Service `web` with `ports` and waits for its first ingress address.
async fn create_web(svcs: &Api<Service>, ports: &Value) -> String {
    svcs.create(
        &PostParams::default(),
        &svc("web", ports.clone(), json!({}), None),
    )
    .await
    .unwrap();
    wait_for("web's ingress", T, || async {
        svcs.get("web").await.ok().and_then(|s| ingress_ip(&s))
    })
    .await
}

async fn lb_named(env: &CcmEnv, name: &str) -> Option<Value> {
    lbs(env).await.into_iter().find(|l| l["name"] == name)
}

/// Renaming never leaks, a chosen name never takes over another Service's LB, and an LB deleted
/// outside Kubernetes is replaced at once: each change of address is announced.
#[tokio::test]
async fn load_balancers_are_never_leaked_taken_over_or_left_dead() {
    let _serial = SERIAL.lock().await;
    let scenario = format!("vms:\n{}", vm("w1", "w1", "template: neon"));
    let env = CcmEnv::new(&scenario).await;
    env.node(&unique("w1"), Some("elemento://w1"), None, false, &[])
        .await;
    let svcs: Api<Service> = Api::namespaced(env.kube.clone(), &env.ns.name);
    let (_ccm, _) = env.start_ccm("ccm-own", &[]);
    let pp = PatchParams::default();
    let port = json!([{"name": "http", "port": 80, "protocol": "TCP"}]);
    let first = create_web(&svcs, &port).await;
    let uid = svcs.get("web").await.unwrap().metadata.uid.unwrap();
    let marker = json!({"cluster": "e2e", "service_uid": uid});
    assert_eq!(lbs(&env).await[0]["owner"], marker, "the ownership marker");

    // 1. Rename: the new LB replaces the old one, which is deleted; the new address is announced.
    svcs.patch(
        "web",
        &pp,
        &Patch::Merge(
            json!({"metadata": {"annotations": {"load-balancer.elemento.cloud/name": "shop"}}}),
        ),
    )
    .await
    .unwrap();
    let ev = event_with(&env, "web", "LoadBalancerReplaced").await;
    let second = wait_for("web's new ingress", T, || async {
        svcs.get("web")
            .await
            .ok()
            .and_then(|s| ingress_ip(&s))
            .filter(|ip| *ip != first)
    })
    .await;
    let all = lbs(&env).await;
    assert_eq!(all.len(), 1, "the old LB is deleted, not leaked: {all:?}");
    assert_eq!(all[0]["name"], "shop");
    assert_eq!(all[0]["ip"].as_str(), Some(second.as_str()));
    let note = ev["note"].as_str().unwrap();
    assert!(note.contains(&first) && note.contains(&second), "{note}");

    // 2. Takeover: another Service asking for the same name changes nothing and is told why.
    svcs.create(
        &PostParams::default(),
        &svc(
            "intruder",
            json!([{"name": "x", "port": 8443, "protocol": "TCP"}]),
            json!({"load-balancer.elemento.cloud/name": "shop"}),
            None,
        ),
    )
    .await
    .unwrap();
    let ev = event_with(&env, "intruder", "LoadBalancerNameTaken").await;
    assert!(ev["note"].as_str().unwrap().contains("shop"), "{ev}");
    let shop = lb_named(&env, "shop").await.expect("shop LB");
    assert_eq!(shop["owner"], marker, "the LB still belongs to web");
    assert_eq!(
        shop["listeners"][0]["port"], 80,
        "web's ports, not the intruder's"
    );
    assert!(ingress_ip(&svcs.get("intruder").await.unwrap()).is_none());
    delete_service(&svcs, "intruder").await;
    assert!(
        lb_named(&env, "shop").await.is_some(),
        "deleting the intruder kept web's LB"
    );

    // 3. Deleted outside Kubernetes: the next update finds it gone and re-creates it at once.
    let dead = shop["id"].as_str().unwrap().to_string();
    env.sim
        .admin(
            Method::DELETE,
            &format!("/_sim/load-balancers/{dead}"),
            None,
        )
        .await;
    svcs.patch("web", &pp, &Patch::Merge(json!({"metadata": {"annotations": {"load-balancer.elemento.cloud/algorithm": "least_connections"}}})))
        .await
        .unwrap();
    let ev = event_with(&env, "web", "LoadBalancerRecreated").await;
    assert!(ev["note"].as_str().unwrap().contains(&dead), "{ev}");
    let third = wait_for("a new LB named shop", Duration::from_secs(20), || async {
        lb_named(&env, "shop")
            .await
            .filter(|l| l["id"] != dead.as_str())
    })
    .await;
    assert_eq!(third["algorithm"], "least_connections");
    wait_for("web's ingress on the new LB", T, || async {
        svcs.get("web")
            .await
            .ok()
            .filter(|s| ingress_ip(s).as_deref() == third["ip"].as_str())
    })
    .await;

    // 4. A source-IP restriction reaches the LB as its allow-list; one it cannot express is
    // refused with the field named, and the LB keeps what it had.
    svcs.patch(
        "web",
        &pp,
        &Patch::Merge(json!({"spec": {"loadBalancerSourceRanges": ["203.0.113.0/24"]}})),
    )
    .await
    .unwrap();
    wait_for("the allow-list on the LB", T, || async {
        lb_named(&env, "shop")
            .await
            .filter(|l| l["allowed_sources"] == json!(["203.0.113.0/24"]))
    })
    .await;
    svcs.patch(
        "web",
        &pp,
        &Patch::Merge(json!({"spec": {"loadBalancerSourceRanges": ["2001:db8::/32"]}})),
    )
    .await
    .unwrap();
    let ev = event_with(&env, "web", "InvalidLoadBalancerService").await;
    assert!(
        ev["note"]
            .as_str()
            .unwrap()
            .contains("spec.loadBalancerSourceRanges"),
        "{ev}"
    );
    assert_eq!(
        lb_named(&env, "shop").await.unwrap()["allowed_sources"],
        json!(["203.0.113.0/24"]),
        "never opened up"
    );

    delete_service(&svcs, "web").await;
    assert!(lbs(&env).await.is_empty(), "nothing left");
}

/// Against an endpoint without the update route (what every Elemento source shows, §8.1): the
/// CCM probes update once, then replaces a changed LB (new address announced, old one deleted, no
/// leak even when the delete fails midway), and `cancreate` saying no is reported, then retried.
#[tokio::test]
async fn load_balancers_are_replaced_when_the_endpoint_cannot_update() {
    let _serial = SERIAL.lock().await;
    let scenario = format!(
        "wire: {{lb_update: false}}\nlimits: {{max_load_balancers: 2}}\nvms:\n{}{}",
        vm("w1", "w1", "template: neon"),
        vm("w2", "w2", "template: neon")
    );
    let env = CcmEnv::new(&scenario).await;
    env.node(&unique("w1"), Some("elemento://w1"), None, false, &[])
        .await;
    let svcs: Api<Service> = Api::namespaced(env.kube.clone(), &env.ns.name);
    let (_ccm, _) = env.start_ccm("ccm-noupd", &[]);
    let port = json!([{"name": "http", "port": 80, "protocol": "TCP"}]);
    let first = create_web(&svcs, &port).await;
    let base = lbs(&env).await[0]["name"].as_str().unwrap().to_string();

    // A Node joins: the targets change, the update probe answers 404, the LB is replaced.
    env.node(&unique("w2"), Some("elemento://w2"), None, false, &[])
        .await;
    let ev = event_with(&env, "web", "LoadBalancerReplaced").await;
    let second = wait_for("web's replacement ingress", T, || async {
        svcs.get("web")
            .await
            .ok()
            .and_then(|s| ingress_ip(&s))
            .filter(|ip| *ip != first)
    })
    .await;
    let note = ev["note"].as_str().unwrap();
    assert!(
        note.contains(&first) && note.contains(&second) && note.contains("cannot update"),
        "{note}"
    );
    let all = wait_for("the old LB deleted", T, || async {
        Some(lbs(&env).await).filter(|l| l.len() == 1)
    })
    .await;
    assert_eq!(all[0]["targets"], json!(["w1", "w2"]));
    let replacement = all[0]["name"].as_str().unwrap().to_string();
    assert!(
        replacement.starts_with(&format!("{base}-r")),
        "{replacement} is a replacement of {base}"
    );
    let recorded = svcs.get("web").await.unwrap().metadata.annotations.unwrap()
        ["service.elemento.cloud/load-balancer-id"]
        .clone();
    assert_eq!(all[0]["id"].as_str(), Some(recorded.as_str()));

    // The next change, with the old LB's delete failing once: the Service still moves to the new
    // LB and the leftover is deleted by the next reconcile.
    env.sim
        .admin(
            Method::PUT,
            "/_sim/faults/loadbalancer.delete",
            Some(json!({"error_rate": 1.0, "status": 400, "max_faults": 1})),
        )
        .await;
    svcs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "alt", "port": 8080, "protocol": "TCP"}]}})),
    )
    .await
    .unwrap();
    let third = wait_for("one LB with both ports, recorded on web", T, || async {
        let all = lbs(&env).await;
        let svc = svcs.get("web").await.ok()?;
        let id = svc
            .metadata
            .annotations?
            .get("service.elemento.cloud/load-balancer-id")?
            .clone();
        (all.len() == 1
            && all[0]["id"] == id.as_str()
            && all[0]["listeners"].as_array()?.len() == 2)
            .then(|| all[0].clone())
    })
    .await;
    assert_ne!(third["name"].as_str(), Some(replacement.as_str()));
    assert_eq!(
        env.sim.counters().await["loadbalancer.update"]["total"].as_u64(),
        Some(1),
        "update probed once, then never called again"
    );

    // Capacity: with 2 LBs (the limit) a third Service is told why, then served once one goes.
    svcs.create(
        &PostParams::default(),
        &svc("other", port.clone(), json!({}), None),
    )
    .await
    .unwrap();
    wait_for("other's ingress", T, || async {
        svcs.get("other").await.ok().and_then(|s| ingress_ip(&s))
    })
    .await;
    svcs.create(
        &PostParams::default(),
        &svc("third", port.clone(), json!({}), None),
    )
    .await
    .unwrap();
    let ev = event_with(&env, "third", "LoadBalancerCapacity").await;
    assert!(ev["note"].as_str().unwrap().contains("cancreate"), "{ev}");
    assert_eq!(lbs(&env).await.len(), 2, "nothing created past the limit");
    delete_service(&svcs, "other").await;
    wait_for(
        "third's ingress once capacity is back",
        Duration::from_secs(60),
        || async { svcs.get("third").await.ok().and_then(|s| ingress_ip(&s)) },
    )
    .await;

    delete_service(&svcs, "web").await;
    delete_service(&svcs, "third").await;
    assert!(lbs(&env).await.is_empty(), "nothing left");
}

/// A holder whose clock is a minute behind writes a renewTime that looks a minute old to us; as
/// long as it keeps renewing, a standby never takes the lease (no double leader). Once it stops,
/// the standby takes over one lease duration later.
#[tokio::test]
async fn a_holder_with_a_skewed_clock_keeps_the_lease_while_it_renews() {
    let _serial = SERIAL.lock().await;
    let env = CcmEnv::new(&format!("vms:\n{}", vm("s1", "s1", "template: neon"))).await;
    let leases: Api<Lease> = Api::namespaced(env.kube.clone(), &env.ns.name);
    let skewed = |n: i64| {
        let t =
            k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(60);
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "elemento-cloud-controller-manager", "namespace": env.ns.name},
            "spec": {"holderIdentity": "skewed-holder", "leaseDurationSeconds": 4,
                     "renewTime": t.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string(), "leaseTransitions": n}
        })
    };
    let pp = PatchParams::apply("skewed-holder").force();
    leases
        .patch(
            "elemento-cloud-controller-manager",
            &pp,
            &Patch::Apply(skewed(0)),
        )
        .await
        .unwrap();
    let (_c, _) = env.start_ccm(
        "ccm-standby",
        &[
            "--leader-elect-lease-duration",
            "4s",
            "--leader-elect-renew-deadline",
            "3s",
            "--leader-elect-retry-period",
            "500ms",
        ],
    );
    // The holder renews every second for 10 s (two and a half lease durations).
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        leases
            .patch(
                "elemento-cloud-controller-manager",
                &pp,
                &Patch::Apply(skewed(0)),
            )
            .await
            .unwrap();
        assert_eq!(
            holder(&env).await.as_deref(),
            Some("skewed-holder"),
            "the standby took a live lease"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // The holder stops: the standby takes over after one lease duration of silence.
    let stopped = Instant::now();
    wait_for("the standby to take the abandoned lease", T, || async {
        (holder(&env).await.as_deref() == Some("ccm-standby")).then_some(())
    })
    .await;
    assert!(
        stopped.elapsed() >= Duration::from_secs(3),
        "taken over too early: {:?}",
        stopped.elapsed()
    );
}
