//! Management-cluster mode, the Cluster API / Kamaji way: two control planes. The management
//! cluster has the real kubelet (tests/env/cluster-up.sh) and runs our pods; the tenant
//! cluster (a control plane of its own, no kubelet, its API server reachable from pods) is
//! what they work on. Both charts are installed with helm in the management cluster with
//! `tenantKubeconfig` (the tenant's kubeconfig from a Secret, no host network), the CSI chart's
//! tenant half (`controller.enabled: false`) in the tenant. Asserted: the CCM pod, in the
//! management cluster, initializes a Node of the tenant (providerID, labels, taint removed) and
//! holds its lease there, not in the management cluster; the CSI controller pod, driver and
//! sidecars in the management cluster, provisions a PVC of the tenant into an Elemento volume.
//! Each pod's metrics, scraped by its address, carry every family docs/observability.md lists
//! for it, moved by those events.

use std::process::Command;
use std::time::{Duration, Instant};

use elemento_e2e::cluster::{Cluster, wait_until};
use elemento_e2e::control_plane::ControlPlane;
use elemento_e2e::metrics;
use elemento_e2e::sim::SimProcess;
use elemento_e2e::{repo_root, require_root};
use serde_json::Value;

/// The management cluster's namespace for this tenant's controllers.
const NS: &str = "tenant-a";
const TENANT_NODE: &str = "tenant-a-worker-1";
const TENANT_VM: &str = "7d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

fn step(name: &str, t0: Instant) {
    eprintln!(
        "[management-cluster] {name}: ok ({:.1} s)",
        t0.elapsed().as_secs_f64()
    );
}

/// This machine's address that pods reach it by (the source of its default route).
fn host_address() -> String {
    let out = Command::new("ip")
        .args(["-4", "route", "get", "192.0.2.1"])
        .output()
        .expect("ip route");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "src" {
            return words.next().expect("address after src").to_string();
        }
    }
    panic!("no source address in `ip -4 route get`: {text}");
}

/// The tenant's kubeconfig as the management cluster's pods use it: the API server by this
/// machine's address (its certificate is self-signed for loopback here; a real tenant kubeconfig
/// carries its CA).
fn tenant_kubeconfig_for_pods(tenant: &ControlPlane, host: &str) -> String {
    let text = std::fs::read_to_string(&tenant.env.kubeconfig).expect("tenant kubeconfig");
    let port = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: https://127.0.0.1:"))
        .expect("tenant server line")
        .to_string();
    text.replace(
        &format!("server: https://127.0.0.1:{port}"),
        &format!("server: https://{host}:{port}"),
    )
}

/// `kubectl apply` of a manifest text in the tenant.
fn tenant_apply(tenant: &ControlPlane, name: &str, yaml: &str) {
    let file = tenant.path(&format!("{name}.yaml"));
    std::fs::write(&file, yaml).expect("manifest");
    tenant
        .env
        .kubectl(&["apply", "-f", file.to_str().expect("path")]);
}

fn tenant_json(tenant: &ControlPlane, args: &[&str]) -> Value {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&tenant.env.kubectl(&a)).expect("json")
}

fn chart(name: &str) -> String {
    repo_root().join("charts").join(name).display().to_string()
}

/// Installs `chart` as `release` in the management cluster's tenant namespace, in
/// management-cluster mode with `sets` added, and returns its (first) pod once Ready.
fn install_in_management(
    mgmt: &Cluster,
    release: &str,
    chart_name: &str,
    api_url: &str,
    sets: &[&str],
) -> Value {
    let api = format!("api.url={api_url}");
    let common = [
        "credentials.username=demo",
        "credentials.password=demo-password",
        "tenantKubeconfig.secretName=tenant-kubeconfig",
        "image.pullPolicy=Never",
        // Scraped by the pod's address (docs/observability.md is checked against it).
        "metricsBindAddress=0.0.0.0",
        &api,
    ];
    let chart_path = chart(chart_name);
    let mut args = vec!["install", release, &chart_path, "--namespace", NS];
    for v in common.iter().chain(sets) {
        args.extend(["--set", v]);
    }
    mgmt.helm(&args);
    let selector = format!("app.kubernetes.io/instance={release}");
    mgmt.wait_pods_ready(NS, &selector, Duration::from_secs(120));
    mgmt.get_json(&["pods", "-n", NS, "-l", &selector])["items"][0].clone()
}

#[test]
fn ccm_and_csi_controller_run_in_a_management_cluster() {
    assert!(
        require_root("the management-cluster tier"),
        "the management-cluster tier needs root (kubelet, containerd)"
    );
    let mgmt = Cluster::up("management");
    let host = host_address();
    let tenant = ControlPlane::up_with(&[("TESTENV_APISERVER_BIND", "0.0.0.0")]);
    // The tenant's Elemento organisation: its worker VM. The simulator listens on every address
    // too, so that pods reach it by the machine's address.
    let sim = SimProcess::start(
        &format!(
            "auth: {{username: demo, password: demo-password}}\n\
             vms:\n  - {{id: {TENANT_VM}, name: {TENANT_NODE}, template: argon, ipv4: 10.0.0.5}}\n"
        ),
        &["--listen", "0.0.0.0:0"],
    );
    let port = sim
        .listening
        .iter()
        .find_map(|a| a.strip_prefix("0.0.0.0:"))
        .expect("the simulator's 0.0.0.0 listener");
    let api_url = format!("http://{host}:{port}");

    // 1. The tenant's kubeconfig as a Secret of the management cluster; the CCM chart installed
    // there in management-cluster mode.
    let t = Instant::now();
    mgmt.kubectl(&["create", "namespace", NS]);
    let kc = mgmt.dir.join("tenant.kubeconfig");
    std::fs::write(&kc, tenant_kubeconfig_for_pods(&tenant, &host)).expect("kubeconfig");
    mgmt.kubectl(&[
        "create",
        "secret",
        "generic",
        "tenant-kubeconfig",
        "-n",
        NS,
        &format!("--from-file=kubeconfig={}", kc.display()),
    ]);
    let pod = install_in_management(
        &mgmt,
        "ccm",
        "elemento-cloud-controller-manager",
        &api_url,
        // Leader election on with one replica too, to show where the lease goes.
        &[
            "hostNetwork=false",
            "clusterName=tenant-a",
            "leaderElection.enabled=true",
        ],
    );
    assert_ne!(
        pod["spec"]["hostNetwork"], true,
        "the management-cluster CCM runs without the host network"
    );
    step(
        "CCM chart installed in the management cluster, pod Ready",
        t,
    );

    let ccm_metrics = format!(
        "http://{}:10258/metrics",
        pod["status"]["podIP"]
            .as_str()
            .expect("the CCM pod's address")
    );
    let ccm_before = metrics::scrape(&ccm_metrics);

    // 2. A Node registers in the tenant (as its kubelet would, with the uninitialized taint):
    // the CCM in the management cluster initializes it.
    let t = Instant::now();
    tenant_apply(
        &tenant,
        "node",
        &format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {TENANT_NODE}}}\nspec:\n  taints:\n    - {{key: node.cloudprovider.kubernetes.io/uninitialized, value: \"true\", effect: NoSchedule}}\n"
        ),
    );
    let node = wait_until(
        "the tenant's Node initialized",
        Duration::from_secs(60),
        || {
            let n = tenant_json(&tenant, &["node", TENANT_NODE]);
            let tainted = n["spec"]["taints"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["key"] == "node.cloudprovider.kubernetes.io/uninitialized");
            (n["spec"]["providerID"].is_string() && !tainted).then_some(n)
        },
    );
    assert_eq!(
        node["spec"]["providerID"],
        format!("elemento://{TENANT_VM}"),
        "{node}"
    );
    assert_eq!(
        node["metadata"]["labels"]["node.kubernetes.io/instance-type"], "argon",
        "{node}"
    );
    // Its lease is the tenant's; the management cluster holds none.
    let tenant_leases = tenant.env.kubectl(&["get", "leases", "-n", "kube-system"]);
    assert!(
        tenant_leases.contains("cloud-controller-manager"),
        "the CCM's lease in the tenant: {tenant_leases}"
    );
    let mgmt_leases = mgmt.kubectl(&["get", "leases", "-n", NS, "-o", "name"]);
    assert!(
        mgmt_leases.trim().is_empty(),
        "no lease in the management cluster: {mgmt_leases}"
    );
    metrics::assert_documented_families_moved("ccm", &ccm_before, &metrics::scrape(&ccm_metrics));
    step(
        "tenant Node initialized by the management cluster's CCM, its metrics as documented",
        t,
    );

    // 3. The CSI chart's two halves: node plugin, CSIDriver and classes in the tenant; the
    // controller (driver and sidecars) in the management cluster.
    let t = Instant::now();
    let tenant_helm = |a: &[&str]| {
        let out = Command::new(tenant.env.tool("helm"))
            .arg("--kubeconfig")
            .arg(&tenant.env.kubeconfig)
            .args(a)
            .output()
            .expect("helm");
        assert!(
            out.status.success(),
            "helm (tenant) {a:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    tenant_helm(&[
        "install",
        "csi",
        &chart("elemento-csi-driver"),
        "--namespace",
        "kube-system",
        "--set",
        "controller.enabled=false",
        "--set",
        "credentials.username=demo",
        "--set",
        "credentials.password=demo-password",
        "--set",
        &format!("api.url={api_url}"),
    ]);
    // The tenant grants the kubeconfig's identity the controller's rules (here it is the
    // tenant's admin; docs/management-cluster.md renders the chart's RBAC for a dedicated one).
    let csi_pod = install_in_management(
        &mgmt,
        "csi",
        "elemento-csi-driver",
        &api_url,
        &["controller.hostNetwork=false"],
    );
    let csi_metrics = format!(
        "http://{}:9810/metrics",
        csi_pod["status"]["podIP"]
            .as_str()
            .expect("the CSI controller pod's address")
    );
    let csi_before = metrics::scrape(&csi_metrics);
    let kinds = mgmt.kubectl(&[
        "get",
        "daemonset,csidriver,storageclass",
        "-A",
        "-l",
        "app.kubernetes.io/instance=csi",
        "-o",
        "name",
    ]);
    assert!(
        kinds.trim().is_empty(),
        "the management release makes no tenant-side object: {kinds}"
    );
    step(
        "CSI controller in the management cluster, node half in the tenant",
        t,
    );

    // 4. A PVC of the tenant (a class that binds at once: no kubelet there to consume it). The
    // provisioner takes the topology from the tenant's CSINodes: the one the kubelet writes when
    // our node plugin registers, written here as it would be.
    let t = Instant::now();
    tenant_apply(
        &tenant,
        "csinode",
        &format!(
            "apiVersion: storage.k8s.io/v1\nkind: CSINode\nmetadata: {{name: {TENANT_NODE}}}\n\
             spec:\n  drivers:\n    - {{name: csi.elemento.cloud, nodeID: {TENANT_VM}, \
             topologyKeys: [topology.kubernetes.io/region, topology.kubernetes.io/zone]}}\n"
        ),
    );
    tenant_apply(
        &tenant,
        "pvc",
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: now}\n\
             provisioner: csi.elemento.cloud\nvolumeBindingMode: Immediate\n---\n\
             apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data, namespace: default}\n\
             spec: {accessModes: [ReadWriteOnce], storageClassName: now, resources: {requests: {storage: 1Gi}}}\n",
    );
    let bound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until("the tenant's PVC Bound", Duration::from_secs(90), || {
            let pvc = tenant_json(&tenant, &["pvc", "-n", "default", "data"]);
            (pvc["status"]["phase"] == "Bound").then(|| pvc["spec"]["volumeName"].clone())
        })
    }));
    let pv = bound.unwrap_or_else(|e| {
        // The evidence: the PVC's events in the tenant, the controller's logs in the management cluster.
        eprintln!(
            "{}",
            tenant
                .env
                .kubectl(&["describe", "pvc", "-n", "default", "data"])
        );
        for c in ["csi-provisioner", "driver"] {
            let log = mgmt
                .try_run(
                    "kubectl",
                    &[
                        "logs",
                        "-n",
                        NS,
                        "-l",
                        "app.kubernetes.io/instance=csi",
                        "-c",
                        c,
                        "--tail",
                        "40",
                    ],
                    None,
                )
                .unwrap_or_else(|e| e);
            eprintln!("---- {c}\n{log}");
        }
        std::panic::resume_unwind(e)
    });
    let handle = tenant_json(&tenant, &["pv", pv.as_str().expect("volume name")])["spec"]["csi"]
        ["volumeHandle"]
        .as_str()
        .expect("volume handle")
        .to_string();
    let volumes = sim_volume_ids(&sim);
    assert!(
        volumes.iter().any(|v| handle.contains(v.as_str())),
        "the PV's handle {handle} names an Elemento volume of the tenant's organisation: {volumes:?}"
    );
    metrics::assert_documented_families_moved(
        "csi-controller",
        &csi_before,
        &metrics::scrape(&csi_metrics),
    );
    step(
        "tenant PVC provisioned by the management cluster's CSI controller, its metrics as documented",
        t,
    );
}

/// The ids of the simulator's volumes.
fn sim_volume_ids(sim: &SimProcess) -> Vec<String> {
    let out = Command::new("curl")
        .args(["-fsS", "--max-time", "10"])
        .arg(format!("{}/_sim/state", sim.base_url))
        .output()
        .expect("curl");
    let state: Value = serde_json::from_slice(&out.stdout).expect("sim state");
    state["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["id"].as_str().map(String::from))
        .collect()
}
