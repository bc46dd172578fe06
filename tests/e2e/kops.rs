//! The upstream kOps static channel (`manifests/kops/addons.yaml`) on a real kubelet with
//! containerd, as a kOps cluster gets it: the operator sets the cluster name once (ConfigMap
//! `elemento-cluster`), each addon's manifest is applied as it is (server-side apply; kOps's own
//! `channels` binary is not built here, docs/install-kops.md says why), and the CCM pod waits,
//! with a repeated event naming the Secret, until the operator creates the credentials Secret
//! from a file; then it initializes the kubelet's Node and names load balancers after the kOps
//! cluster. The manifests keep `api.host: 127.0.0.1`, the Elemento daemons on every node: the
//! simulator serves their default ports here. Finally the addons are pruned by their selectors.

use std::time::{Duration, Instant};

use elemento_e2e::cluster::{Cluster, wait_until};
use elemento_e2e::{repo_root, require_root};
use serde_json::Value;

const NS: &str = "kube-system";
const KOPS_CLUSTER: &str = "e2e.k8s.local";
const CCM_POD_PREFIX: &str = "elemento-ccm-elemento-cloud-controller-manager-";

fn step(name: &str, t0: Instant) {
    eprintln!("[kops] {name}: ok ({:.1} s)", t0.elapsed().as_secs_f64());
}

/// The channel's addons: (name, manifest path).
fn channel_addons() -> Vec<(String, std::path::PathBuf)> {
    let dir = repo_root().join("manifests/kops");
    let channel: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(dir.join("addons.yaml")).unwrap()).unwrap();
    channel["spec"]["addons"]
        .as_array()
        .expect("spec.addons")
        .iter()
        .map(|a| {
            (
                a["name"].as_str().expect("name").to_string(),
                dir.join(a["manifest"].as_str().expect("manifest")),
            )
        })
        .collect()
}

/// How many times the kubelet reported that the CCM pod cannot mount the missing Secret.
fn missing_secret_reports(c: &Cluster) -> i64 {
    let events = c.get_json(&["events", "-n", NS, "--field-selector", "reason=FailedMount"]);
    events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["involvedObject"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(CCM_POD_PREFIX))
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(r#"secret "elemento-credentials" not found"#))
        })
        .map(|e| {
            e["count"]
                .as_i64()
                .or_else(|| e["series"]["count"].as_i64())
                .unwrap_or(1)
        })
        .sum()
}

fn uninitialized(node: &Value) -> bool {
    node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| t["key"] == elemento_api::taints::UNINITIALIZED)
}

#[test]
fn kops_static_channel_runs_on_a_real_kubelet_once_the_operator_creates_the_secret() {
    assert!(
        require_root("the kOps channel tier"),
        "the kOps channel tier needs root (kubelet, containerd)"
    );
    let c = Cluster::up_with_env("kops", &[("TESTENV_SIM_DAEMON_PORTS", "1")]);
    let work = tempfile::tempdir().expect("tempdir");

    // 1. The operator sets the cluster name once; kOps applies the channel.
    let t = Instant::now();
    c.kubectl(&[
        "-n",
        NS,
        "create",
        "configmap",
        "elemento-cluster",
        &format!("--from-literal=clusterName={KOPS_CLUSTER}"),
    ]);
    let addons = channel_addons();
    assert_eq!(addons.len(), 2, "{addons:?}");
    for (_, manifest) in &addons {
        c.kubectl(&[
            "apply",
            "--server-side",
            "--field-manager=kops",
            "-f",
            manifest.to_str().unwrap(),
        ]);
    }
    step("cluster-name ConfigMap created, channel applied", t);

    // 2. No credentials yet: the kubelet says so, again and again, naming the Secret; the Node
    // stays uninitialized.
    let t = Instant::now();
    let reports = wait_until(
        "repeated FailedMount events naming the missing Secret",
        Duration::from_secs(120),
        || {
            let n = missing_secret_reports(&c);
            (n >= 2).then_some(n)
        },
    );
    let node = c.get_json(&["node", &c.node]);
    assert!(
        uninitialized(&node),
        "the Node was initialized without credentials: {}",
        node["spec"]
    );
    step(
        &format!(
            "without the Secret: {reports} FailedMount reports naming elemento-credentials, Node uninitialized"
        ),
        t,
    );

    // 3. The operator creates the Secret from a file (docs/install-kops.md); everything starts.
    let t = Instant::now();
    let env_file = work.path().join("elemento.env");
    std::fs::write(&env_file, "username=demo\npassword=demo-password\n").unwrap();
    c.kubectl(&[
        "-n",
        NS,
        "create",
        "secret",
        "generic",
        "elemento-credentials",
        &format!("--from-env-file={}", env_file.display()),
    ]);
    c.wait_pods_ready(
        NS,
        "app.kubernetes.io/instance in (elemento-ccm,elemento-csi)",
        Duration::from_secs(240),
    );
    let node = c.wait_node_initialized(Duration::from_secs(60));
    c.assert_node_is_the_vm(&node);
    let labels = &node["metadata"]["labels"];
    // kOps instance groups name their zones after the provider (docs/install-kops.md).
    assert_eq!(labels["topology.kubernetes.io/zone"], "ovh", "{labels}");
    step(
        "Secret created: CCM and CSI pods Ready, Node initialized (providerID, zone = provider)",
        t,
    );

    // 4. Load balancers carry the kOps cluster's name (folded: it has dots).
    let t = Instant::now();
    c.apply(
        r#"apiVersion: v1
kind: Service
metadata: {name: kops-web, namespace: default}
spec:
  type: LoadBalancer
  selector: {app: kops-web}
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
"#,
    );
    wait_until("the LoadBalancer ingress", Duration::from_secs(60), || {
        let s = c.get_json(&["service", "-n", "default", "kops-web"]);
        s["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .map(String::from)
    });
    let lbs = c.sim_state()["load_balancers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = lbs.iter().filter_map(|l| l["name"].as_str()).collect();
    assert!(
        names.len() == 1 && names[0].starts_with("k8s-e2e-k8s-local-"),
        "the LB is named after the kOps cluster: {names:?}"
    );
    c.kubectl(&[
        "delete",
        "service",
        "-n",
        "default",
        "kops-web",
        "--wait=true",
    ]);
    wait_until("the LB deleted", Duration::from_secs(60), || {
        c.sim_state()["load_balancers"]
            .as_array()
            .is_some_and(|l| l.is_empty())
            .then_some(())
    });
    step(&format!("LoadBalancer {} made and deleted", names[0]), t);

    // 5. kOps prunes by the selector label: deleting by it removes every object of each addon,
    // and leaves the operator's Secret and ConfigMap.
    let t = Instant::now();
    let kinds = "all,clusterroles,clusterrolebindings,roles,rolebindings,serviceaccounts,configmaps,secrets,csidrivers,storageclasses";
    for (addon, _) in &addons {
        let selector = format!("k8s-addon={addon}");
        c.kubectl(&["delete", kinds, "-A", "-l", &selector, "--wait=true"]);
        let left = c.kubectl(&["get", kinds, "-A", "-l", &selector, "-o", "name"]);
        assert!(left.trim().is_empty(), "{addon} left:\n{left}");
    }
    c.kubectl(&[
        "get",
        "-n",
        NS,
        "secret/elemento-credentials",
        "configmap/elemento-cluster",
    ]);
    step(
        "addons pruned by selector; the operator's Secret and ConfigMap kept",
        t,
    );
}
