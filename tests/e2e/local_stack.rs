//! The README's run command (`scripts/local-stack.sh`) brings up the real single-node cluster with
//! both charts and the demo application, and converges: run here with `--once`, which prints the
//! status table and exits (tearing everything down and restoring the host).

use elemento_e2e::{repo_root, require_root, testenv};

#[test]
fn the_readme_run_command_converges_and_tears_down() {
    assert!(
        require_root("the local stack"),
        "the local stack needs root (kubelet, containerd, loop devices)"
    );
    let env = testenv(); // the tools are built and cached
    let dir = env
        .dir
        .with_file_name(format!("elemento-local-stack-test-{}", std::process::id()));
    let out = std::process::Command::new("bash")
        .arg(repo_root().join("scripts/local-stack.sh"))
        .arg("--once")
        .env("LOCAL_STACK_PROFILE", "debug")
        .env("TESTENV_CACHE", env.bin.parent().unwrap())
        .env("LOCAL_STACK_DIR", &dir)
        .env(
            "LOCAL_STACK_ETCD_PORT",
            elemento_e2e::free_port().to_string(),
        )
        .env(
            "LOCAL_STACK_ETCD_PEER_PORT",
            elemento_e2e::free_port().to_string(),
        )
        .env(
            "LOCAL_STACK_APISERVER_PORT",
            elemento_e2e::free_port().to_string(),
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "local-stack.sh --once failed:\n{text}\n{err}"
    );
    let row = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {k:?} row in:\n{text}"))
    };
    assert!(row("node ").ends_with("(initialized)"), "{text}");
    let pods = row("pods ready");
    let (ready, total) = pods.split_once('/').expect("n/m");
    assert_eq!(ready, total, "{text}");
    assert!(
        total.parse::<u32>().unwrap() >= 4,
        "CCM, CSI controller, node, demo: {text}"
    );
    assert_eq!(row("PVC data-demo-0"), "Bound", "{text}");
    assert!(
        row("load balancer address").starts_with("198.51.100."),
        "{text}"
    );
    assert_eq!(row("demo page"), "hello from an Elemento volume", "{text}");
    assert!(text.contains("export KUBECONFIG="), "{text}");
    // Torn down: the host is restored (no kubelet state, no node state).
    assert!(!std::path::Path::new("/run/elemento-testenv-node").exists());
    assert!(!std::path::Path::new("/var/lib/kubelet").exists());
}
