//! A real OCI registry on loopback (CNCF Distribution, built by tests/env/install.sh) holding the
//! project's images, pushed by `images/push.sh`: the path an operator takes to ship the images,
//! which the real kubelet then pulls from (containerd reaches loopback registries over HTTP).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::cluster::wait_until;
use crate::{Process, free_port, repo_root};

pub struct Registry {
    /// `127.0.0.1:<port>`, the registry part of every image reference it serves.
    pub addr: String,
    process: Process,
    _storage: tempfile::TempDir,
}

impl Registry {
    /// Starts `registry` from `bin` (the test environment's tools) with an empty storage.
    pub fn start(bin: &Path) -> Self {
        let storage = tempfile::tempdir().expect("tempdir");
        let addr = format!("127.0.0.1:{}", free_port());
        let config = storage.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: info}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\nhttp:\n  addr: {addr}\n",
                storage.path().join("data").display()
            ),
        )
        .expect("registry config");
        let process = Process::spawn(
            "registry",
            Command::new(bin.join("registry")).arg("serve").arg(&config),
        );
        let url = format!("http://{addr}/v2/");
        wait_until(
            "the registry to answer /v2/",
            Duration::from_secs(20),
            || {
                Command::new("curl")
                    .args(["-sf", "-o", "/dev/null", &url])
                    .status()
                    .is_ok_and(|s| s.success())
                    .then_some(())
            },
        );
        Self {
            addr,
            process,
            _storage: storage,
        }
    }

    /// Pushes the four images with `images/push.sh` (plain HTTP) and returns the `--set` flags it
    /// prints, one Vec per chart, keyed by the chart's name.
    pub fn push_project_images(&self) -> Vec<(String, Vec<String>)> {
        let out = Command::new("bash")
            .arg(repo_root().join("images/push.sh"))
            .args([&self.addr as &str, "--dest-tls-verify=false"])
            .output()
            .expect("images/push.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "images/push.sh failed ({}):\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let mut charts: Vec<(String, Vec<String>)> = vec![];
        for line in stdout.lines() {
            if let Some(chart) = line.strip_prefix("# ") {
                charts.push((chart.trim().to_string(), vec![]));
            } else if let Some((_, flags)) = charts.last_mut() {
                flags.extend(line.split_whitespace().map(str::to_string));
            }
        }
        charts
    }

    /// The manifest requests the registry answered 200 (HEAD resolves a tag, GET fetches the
    /// manifest; containerd skips the GET when it already holds the content), as logged.
    pub fn manifests_served(&self) -> Vec<String> {
        self.process
            .logs()
            .lines()
            .filter(|l| {
                (l.contains("\"GET /v2/") || l.contains("\"HEAD /v2/"))
                    && l.contains("/manifests/")
                    && l.contains("\" 200 ")
            })
            .map(str::to_string)
            .collect()
    }

    pub fn logs(&self) -> String {
        self.process.logs()
    }
}
