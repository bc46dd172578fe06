//! The Kubernetes storage e2e suite (`e2e.test`, the one every CSI driver runs) against
//! csi.elemento.cloud installed by its chart on the real single-node cluster
//! (tests/env/cluster-up.sh), with the driver definition of tests/storage-e2e/driver.yaml.
//! Every spec of the driver runs (`STORAGE_E2E_MODE=quick`: the subset named in
//! tests/storage-e2e/run.sh). Passes only with no failed spec, at least one passed spec, and
//! every skip explained by tests/storage-e2e/allowed-skips.txt (what the driver does not
//! declare, or what one node cannot run); the counts and the wall time are printed.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use elemento_e2e::cluster::Cluster;
use elemento_e2e::{repo_root, require_root};
use serde_json::Value;

/// One spec's outcome as Ginkgo's JSON report gives it.
struct Outcome {
    name: String,
    state: String,
    message: String,
}

/// The `It` specs the run selected (specs filtered out by the focus carry no message and are
/// not counted).
fn outcomes(report: &Value) -> Vec<Outcome> {
    let mut out = vec![];
    for suite in report.as_array().into_iter().flatten() {
        for spec in suite["SpecReports"].as_array().into_iter().flatten() {
            if spec["LeafNodeType"] != "It" {
                continue;
            }
            let state = spec["State"].as_str().unwrap_or("?").to_string();
            let message = spec["Failure"]["Message"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if state == "skipped" && message.is_empty() {
                continue;
            }
            let mut name: Vec<&str> = spec["ContainerHierarchyTexts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            name.push(spec["LeafNodeText"].as_str().unwrap_or_default());
            out.push(Outcome {
                name: name.join(" "),
                state,
                message,
            });
        }
    }
    out
}

/// The documented skip reasons: one message fragment per line, `#` comments.
fn allowed_skips() -> Vec<String> {
    let path = repo_root().join("tests/storage-e2e/allowed-skips.txt");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn kubernetes_storage_suite_passes_against_the_chart_install() {
    assert!(
        require_root("the storage e2e suite"),
        "the storage e2e suite needs root (kubelet, containerd, mounts)"
    );
    let mode = std::env::var("STORAGE_E2E_MODE").unwrap_or_else(|_| "full".into());
    let c = Cluster::up("storage-e2e");
    for (release, chart, values) in [
        (
            "ccm",
            "elemento-cloud-controller-manager",
            "examples/local-cluster/values-ccm.yaml",
        ),
        (
            "csi",
            "elemento-csi-driver",
            "examples/local-cluster/values-csi.yaml",
        ),
    ] {
        let chart = repo_root().join("charts").join(chart);
        c.helm_install("install", release, &chart.display().to_string(), values);
    }
    c.wait_pods_ready(
        "kube-system",
        "app.kubernetes.io/instance in (ccm,csi)",
        Duration::from_secs(180),
    );
    // The suite reads topology from the Node's labels, which the CCM sets when it initializes it.
    c.wait_node_initialized(Duration::from_secs(60));

    let report_dir = c.dir.join("storage-e2e");
    let started = Instant::now();
    let status = Command::new("bash")
        .arg(repo_root().join("tests/storage-e2e/run.sh"))
        .arg(&mode)
        .env("KUBECONFIG", &c.kubeconfig)
        .env("TESTENV_BIN", &c.bin)
        .env("REPORT_DIR", &report_dir)
        .status()
        .expect("tests/storage-e2e/run.sh");
    let wall = started.elapsed();
    let report_path = report_dir.join("report.json");
    let report: Value = serde_json::from_slice(
        &std::fs::read(&report_path)
            .unwrap_or_else(|e| panic!("{}: {e} (run.sh {status})", report_path.display())),
    )
    .expect("the suite's JSON report");

    let all = outcomes(&report);
    let count = |s: &str| all.iter().filter(|o| o.state == s).count();
    let (passed, skipped) = (count("passed"), count("skipped"));
    let failed: Vec<&Outcome> = all
        .iter()
        .filter(|o| o.state != "passed" && o.state != "skipped")
        .collect();
    let allowed = allowed_skips();
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    let mut unexplained = vec![];
    for o in all.iter().filter(|o| o.state == "skipped") {
        match allowed.iter().find(|a| o.message.contains(a.as_str())) {
            Some(a) => *reasons.entry(a.as_str()).or_default() += 1,
            None => unexplained.push(format!("{}: {}", o.name, o.message)),
        }
    }
    eprintln!(
        "[storage-e2e] {mode}: {passed} passed, {} failed, {skipped} skipped in {:.0} s (log {})",
        failed.len(),
        wall.as_secs_f64(),
        report_dir.join("e2e.log").display()
    );
    for (reason, n) in &reasons {
        eprintln!("[storage-e2e]   skipped {n:3} × {reason}");
    }
    let failures: Vec<String> = failed
        .iter()
        .map(|o| format!("{} [{}]: {}", o.name, o.state, o.message))
        .collect();
    assert!(
        failures.is_empty(),
        "{} specs failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(
        unexplained.is_empty(),
        "skips that tests/storage-e2e/allowed-skips.txt does not explain:\n{}",
        unexplained.join("\n")
    );
    assert!(passed > 0, "the suite ran no spec (focus of run.sh {mode})");
    assert!(status.success(), "e2e.test exited with {status}");
}
