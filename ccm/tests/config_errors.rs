//! Bad configuration: the binary exits non-zero with a message naming the field.

use std::process::Command;

fn run(config: &str, extra: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cloud-config.yaml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_elemento-cloud-controller-manager"))
        .arg("--cloud-config")
        .arg(&path)
        .args([
            "--kubeconfig",
            "/nonexistent",
            "--metrics-bind-address",
            "127.0.0.1:0",
        ])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn invalid_cluster_name_is_named() {
    let (code, err) = run("clusterName: Not_Valid\n", &[]);
    assert_ne!(code, 0);
    assert!(err.contains("clusterName"), "{err}");
}

#[test]
fn unknown_field_is_named() {
    let (code, err) = run("clusterName: ok\nloadBalancer:\n  clas: x\n", &[]);
    assert_ne!(code, 0);
    assert!(err.contains("clas"), "{err}");
}

#[test]
fn unknown_controller_is_named_with_the_known_ones() {
    let (code, err) = run("clusterName: ok\n", &["--controllers", "*,-nodes"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("\"nodes\"") && err.contains("cloud-node-lifecycle"),
        "{err}"
    );
}

#[test]
fn bad_endpoint_and_missing_credentials_are_named() {
    let (code, err) = run("clusterName: ok\napi:\n  url: ftp://x\n", &[]);
    assert_ne!(code, 0);
    assert!(err.contains("ftp://x"), "{err}");
    let (code, err) = run(
        "clusterName: ok\napi:\n  credentialsFile: /nonexistent/creds\n",
        &[],
    );
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/creds"), "{err}");
}

#[test]
fn bad_log_format_is_named() {
    let (code, err) = run("clusterName: ok\n", &["--log-format", "xml"]);
    assert_eq!(code, 2);
    assert!(err.contains("text, json"), "{err}");
}
