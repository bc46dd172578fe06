//! The autoscaler chart as users run it: `helm install` of charts/elemento-cluster-autoscaler on
//! the real single-node cluster (tests/env/cluster-up.sh, with the CCM chart that initializes
//! the Node), its pod running the real cluster-autoscaler and our provider from their images.
//! Asserted: both containers Ready; the autoscaler reaches the provider over the chart's
//! generated mTLS pair (the provider counts its RPCs); its RBAC suffices (status ConfigMap
//! written, no "forbidden" in its log); a Pod that fits no Node makes it scale the group up, the
//! provider registering a VM named and tagged for the cluster with a join token beside it;
//! `helm upgrade` keeps the certificates and the pod; `helm uninstall` removes the pod and every
//! object of the release. (The whole scale-up/down story, with Nodes that join, is
//! tests/e2e/autoscaler.rs.)

use std::time::{Duration, Instant};

use elemento_e2e::cluster::{Cluster, wait_until};
use elemento_e2e::{repo_root, require_root};
use serde_json::Value;

const NS: &str = "kube-system";
const RELEASE: &str = "autoscaler";
const FULLNAME: &str = "autoscaler-elemento-cluster-autoscaler";
/// The values file's cluster name and group.
const CLUSTER: &str = "in-cluster";
const GROUP: &str = "web";
const SELECTOR: &str = "app.kubernetes.io/instance=autoscaler";

fn step(name: &str, t0: Instant) {
    eprintln!(
        "[autoscaler-chart] {name}: ok ({:.1} s)",
        t0.elapsed().as_secs_f64()
    );
}

/// `host:port` of the API server, as new nodes would be told to join it.
fn api_server(c: &Cluster) -> String {
    let text = std::fs::read_to_string(&c.kubeconfig).expect("kubeconfig");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("server: https://"))
        .expect("server in kubeconfig")
        .to_string()
}

fn install(c: &Cluster, verb: &str) {
    let chart = repo_root().join("charts/elemento-cluster-autoscaler");
    let values = repo_root().join("examples/local-cluster/values-autoscaler.yaml");
    c.helm(&[
        verb,
        RELEASE,
        &chart.display().to_string(),
        "--namespace",
        NS,
        "--values",
        &values.display().to_string(),
        "--set",
        &format!("api.url={}", c.api_url),
        "--set",
        "credentials.username=demo",
        "--set",
        "credentials.password=demo-password",
        "--set",
        &format!("bootstrap.apiServer={}", api_server(c)),
    ]);
}

/// The release's one pod (name, uid).
fn the_pod(c: &Cluster) -> (String, String) {
    let pods = c.get_json(&["pods", "-n", NS, "-l", SELECTOR]);
    let items = pods["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "one autoscaler pod: {pods}");
    (
        items[0]["metadata"]["name"].as_str().unwrap_or("").into(),
        items[0]["metadata"]["uid"].as_str().unwrap_or("").into(),
    )
}

/// The provider's counter of an RPC that succeeded (its /metrics, on the host's loopback).
fn rpcs_ok(rpc: &str) -> u64 {
    let out = std::process::Command::new("curl")
        .args(["-fsS", "--max-time", "5", "http://127.0.0.1:10270/metrics"])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| {
            l.starts_with("elemento_autoscaler_rpcs_total{")
                && l.contains(&format!("rpc=\"{rpc}\""))
                && l.contains("code=\"OK\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Runs `f`; when it panics, prints both containers' logs first (the evidence of why).
fn with_logs<T>(c: &Cluster, pod: &str, f: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(e) => {
            for container in ["cluster-autoscaler", "provider"] {
                let log = c
                    .try_run(
                        "kubectl",
                        &["logs", "-n", NS, pod, "-c", container, "--tail", "60"],
                        None,
                    )
                    .unwrap_or_else(|e| e);
                eprintln!("---- {container} log (last 60 lines)\n{log}");
            }
            std::panic::resume_unwind(e)
        }
    }
}

/// The group's VMs in the simulator (name, tags).
fn group_vms(c: &Cluster) -> Vec<(String, Vec<String>)> {
    c.sim_state()["vms"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| {
            let name = v["name"].as_str()?.to_string();
            name.starts_with(&format!("{CLUSTER}-{GROUP}-")).then(|| {
                let tags = v["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.as_str().map(String::from))
                    .collect();
                (name, tags)
            })
        })
        .collect()
}

const PENDING_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: wants-web, namespace: default}
spec:
  nodeSelector: {pool: web}
  containers:
    - name: app
      image: localhost/elemento-testenv/busybox:1
      command: [sleep, "3600"]
      resources: {requests: {cpu: 100m, memory: 64Mi}}
"#;

#[test]
fn the_autoscaler_chart_runs_and_scales_a_group_up() {
    assert!(
        require_root("the autoscaler chart tier"),
        "the autoscaler chart tier needs root (kubelet, containerd)"
    );
    let c = Cluster::up("autoscaler-chart");

    // 1. The CCM initializes the Node (the autoscaler's pod, like any, waits for that), then the
    // autoscaler chart installs and both of its containers become Ready.
    let t = Instant::now();
    c.helm_install(
        "install",
        "ccm",
        &repo_root()
            .join("charts/elemento-cloud-controller-manager")
            .display()
            .to_string(),
        "examples/local-cluster/values-ccm.yaml",
    );
    c.wait_node_initialized(Duration::from_secs(120));
    install(&c, "install");
    c.wait_pods_ready(NS, SELECTOR, Duration::from_secs(120));
    let (pod, uid) = the_pod(&c);
    step("chart installed, autoscaler and provider Ready", t);

    // 2. The autoscaler talks to the provider over the generated mTLS pair, and its RBAC lets it
    // write its status.
    let t = Instant::now();
    with_logs(&c, &pod, || {
        wait_until(
            "the autoscaler's NodeGroups and Refresh calls served",
            Duration::from_secs(60),
            || (rpcs_ok("NodeGroups") > 0 && rpcs_ok("Refresh") > 0).then_some(()),
        )
    });
    let status = wait_until(
        "the autoscaler's status ConfigMap",
        Duration::from_secs(60),
        || {
            c.try_run(
                "kubectl",
                &[
                    "get",
                    "configmap",
                    "-n",
                    NS,
                    &format!("{FULLNAME}-status"),
                    "-o",
                    "json",
                ],
                None,
            )
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        },
    );
    assert!(
        status["data"]["status"]
            .as_str()
            .unwrap_or("")
            .contains(GROUP),
        "the status names the group: {status}"
    );
    step("mTLS link served, status ConfigMap written", t);

    // 3. A Pod that fits no Node (it wants pool=web): the autoscaler scales the group up from
    // zero, the provider registers a VM of the cluster's name and tags, with its join token.
    let t = Instant::now();
    let provider_metrics = "http://127.0.0.1:10270/metrics";
    let provider_before = elemento_e2e::metrics::scrape(provider_metrics);
    c.apply(PENDING_POD);
    let vms = with_logs(&c, &pod, || {
        wait_until(
            "a VM of the group registered",
            Duration::from_secs(120),
            || {
                let vms = group_vms(&c);
                (!vms.is_empty()).then_some(vms)
            },
        )
    });
    assert_eq!(vms.len(), 1, "one VM for one pod: {vms:?}");
    let (vm, tags) = &vms[0];
    for tag in [
        format!("k8s-cluster={CLUSTER}"),
        format!("k8s-nodegroup={GROUP}"),
    ] {
        assert!(tags.contains(&tag), "{vm} lacks tag {tag}: {tags:?}");
    }
    let tokens = c.get_json(&[
        "secrets",
        "-n",
        NS,
        "-l",
        &format!("autoscaler.elemento.cloud/vm-name={vm}"),
    ]);
    let token = &tokens["items"][0];
    assert_eq!(
        token["type"], "bootstrap.kubernetes.io/token",
        "a join token for {vm}: {tokens}"
    );
    let events = c.kubectl(&[
        "get",
        "events",
        "-n",
        "default",
        "--field-selector",
        "involvedObject.name=wants-web",
    ]);
    assert!(
        events.contains("TriggeredScaleUp"),
        "the pod's events: {events}"
    );
    elemento_e2e::metrics::assert_documented_families_moved(
        "autoscaler",
        &provider_before,
        &elemento_e2e::metrics::scrape(provider_metrics),
    );
    step(
        &format!("scale-up from zero registered {vm}; provider metrics as documented"),
        t,
    );

    // Its RBAC never fell short.
    let log = c.kubectl(&["logs", "-n", NS, &pod, "-c", "cluster-autoscaler"]);
    let forbidden: Vec<&str> = log.lines().filter(|l| l.contains("forbidden")).collect();
    assert!(
        forbidden.is_empty(),
        "the autoscaler was refused:\n{}",
        forbidden.join("\n")
    );

    // 4. An upgrade with the same values keeps the generated certificates and the pod.
    let t = Instant::now();
    let tls = |c: &Cluster| {
        c.get_json(&["secret", "-n", NS, &format!("{FULLNAME}-grpc-tls")])["data"].clone()
    };
    let before = tls(&c);
    install(&c, "upgrade");
    assert_eq!(
        before,
        tls(&c),
        "helm upgrade rotated the gRPC certificates"
    );
    c.wait_pods_ready(NS, SELECTOR, Duration::from_secs(60));
    assert_eq!(
        the_pod(&c),
        (pod.clone(), uid),
        "helm upgrade with the same values restarted the pod"
    );
    step("upgrade kept the certificates and the pod", t);

    // 5. Uninstall removes the pod and every object of the release.
    let t = Instant::now();
    c.kubectl(&[
        "delete",
        "pod",
        "-n",
        "default",
        "wants-web",
        "--wait=false",
    ]);
    c.helm(&["uninstall", RELEASE, "--namespace", NS, "--wait"]);
    wait_until("the autoscaler pod gone", Duration::from_secs(60), || {
        c.get_json(&["pods", "-n", NS, "-l", SELECTOR])["items"]
            .as_array()
            .is_some_and(|a| a.is_empty())
            .then_some(())
    });
    let left = c.kubectl(&[
        "get",
        "deploy,configmap,secret,serviceaccount,role,rolebinding,clusterrole,clusterrolebinding",
        "-A",
        "-l",
        SELECTOR,
        "-o",
        "name",
    ]);
    assert!(left.trim().is_empty(), "left after uninstall: {left}");
    step("uninstalled, nothing of the release left", t);
}
