//! The README's run command (`scripts/local-stack.sh`) brings the whole stack up and converges:
//! run here with `--once`, which prints the status table and exits.

use elemento_e2e::{repo_root, require_root, testenv};

#[test]
fn the_readme_run_command_converges_and_tears_down() {
    if !require_root("the local stack") {
        return;
    }
    let env = testenv(); // the tools are built and cached
    let out = std::process::Command::new("bash")
        .arg(repo_root().join("scripts/local-stack.sh"))
        .arg("--once")
        .env("LOCAL_STACK_PROFILE", "debug")
        .env("TESTENV_CACHE", env.bin.parent().unwrap())
        .env(
            "LOCAL_STACK_DIR",
            env.dir
                .with_file_name(format!("elemento-local-stack-test-{}", std::process::id())),
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "local-stack.sh --once failed:\n{text}\n{err}"
    );
    assert!(text.contains("nodes initialized      3/3"), "{text}");
    assert!(
        text.contains("load balancer address  198.51.100."),
        "{text}"
    );
    assert!(text.contains("PVC data               Bound"), "{text}");
}
