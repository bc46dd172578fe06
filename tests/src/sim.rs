//! The simulator as a child process, with helpers for its admin API.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub use reqwest::Method;
use serde_json::Value;

use crate::{Process, workspace_bin};

/// A running `elemento-sim` on an ephemeral port.
pub struct SimProcess {
    pub process: Process,
    pub base_url: String,
    /// Every address it listens on (`--listen` repeated in `extra` adds some).
    pub listening: Vec<String>,
    pub scenario: PathBuf,
    _dir: tempfile::TempDir,
}

impl SimProcess {
    /// Starts the simulator with `scenario` (YAML or JSON text) and `extra` flags.
    pub fn start(scenario: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("scenario.yaml");
        std::fs::write(&path, scenario).expect("write scenario");
        let process = Process::spawn(
            "elemento-sim",
            Command::new(workspace_bin("elemento-sim"))
                .arg("--scenario")
                .arg(&path)
                .args(["--listen", "127.0.0.1:0"])
                .args(extra),
        );
        // The first stdout line is {"listening": ["127.0.0.1:PORT"]}.
        let deadline = Instant::now() + Duration::from_secs(20);
        let listening = loop {
            let log = std::fs::File::open(&process.log).expect("sim log");
            let found = BufReader::new(log)
                .lines()
                .map_while(Result::ok)
                .find_map(|l| {
                    let v: Value = serde_json::from_str(&l).ok()?;
                    let all: Vec<String> = v["listening"]
                        .as_array()?
                        .iter()
                        .filter_map(|a| a.as_str().map(String::from))
                        .collect();
                    (!all.is_empty()).then_some(all)
                });
            if let Some(all) = found {
                break all;
            }
            assert!(
                Instant::now() < deadline,
                "elemento-sim did not start:\n{}",
                process.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Self {
            process,
            base_url: format!("http://{}", listening[0]),
            listening,
            scenario: path,
            _dir: dir,
        }
    }

    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        admin_at(&self.base_url, method, path, body).await
    }

    pub async fn state(&self) -> Value {
        self.admin(reqwest::Method::GET, "/_sim/state", None).await
    }

    pub async fn counters(&self) -> Value {
        self.admin(reqwest::Method::GET, "/_sim/counters", None)
            .await
    }
}

/// A call to the admin API of the simulator at `base_url` (for tasks that do not own it).
pub async fn admin_at(
    base_url: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut r = reqwest::Client::new().request(method, format!("{base_url}{path}"));
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("sim admin call");
    let status = resp.status();
    let v = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "sim {path}: {status} {v}");
    v
}
