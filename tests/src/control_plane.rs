//! A private control plane of the cluster profile (kube-scheduler and the workload controllers,
//! no kubelet), for tiers that need a cluster of their own beside the machine's one.

use std::path::PathBuf;
use std::process::Command;

use crate::{TestEnv, free_port, repo_root};

/// A private control plane (`tests/env/up.sh`, cluster profile, own directory and ports), torn
/// down on drop.
pub struct ControlPlane {
    pub env: TestEnv,
    dir: tempfile::TempDir,
    vars: Vec<(String, String)>,
}

impl ControlPlane {
    pub fn up() -> Self {
        Self::up_with(&[])
    }

    /// With more `tests/env/up.sh` settings (e.g. `TESTENV_APISERVER_BIND`).
    pub fn up_with(extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut vars: Vec<(String, String)> = vec![
            ("TESTENV_PROFILE".into(), "cluster".into()),
            (
                "TESTENV_DIR".into(),
                dir.path().join("cp").display().to_string(),
            ),
            ("TESTENV_ETCD_PORT".into(), free_port().to_string()),
            ("TESTENV_ETCD_PEER_PORT".into(), free_port().to_string()),
            ("TESTENV_APISERVER_PORT".into(), free_port().to_string()),
        ];
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let out = Command::new("bash")
            .arg(repo_root().join("tests/env/up.sh"))
            .envs(vars.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("up.sh");
        assert!(
            out.status.success(),
            "tests/env/up.sh (cluster profile) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .map(PathBuf::from)
                .unwrap_or_else(|| panic!("up.sh printed no {k}: {text}"))
        };
        let env = TestEnv {
            kubeconfig: get("KUBECONFIG"),
            bin: get("TESTENV_BIN"),
            dir: dir.path().join("cp"),
        };
        Self { env, dir, vars }
    }

    /// `host:port` of the API server.
    pub fn api_server(&self) -> String {
        let text = std::fs::read_to_string(&self.env.kubeconfig).expect("kubeconfig");
        text.lines()
            .find_map(|l| l.trim().strip_prefix("server: https://"))
            .expect("server")
            .to_string()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo_root().join("tests/env/down.sh"))
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .output();
    }
}
