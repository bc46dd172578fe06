//! The real single-node cluster (tests/env/cluster-up.sh): control plane, simulator, containerd and
//! a kubelet on this machine. One per machine at a time (the kubelet's state lives in fixed host
//! places); the handle takes a host-wide lock and tears everything down when dropped.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{free_port, repo_root, workspace_bin};

/// Held for as long as a test uses the machine's kubelet (`flock` on a fixed file).
const NODE_LOCK: &str = "/run/lock/elemento-testenv-node.lock";

pub struct Cluster {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub bin: PathBuf,
    /// The simulator's base URL (also the Elemento API URL the charts are given).
    pub api_url: String,
    pub node: String,
    pub node_vm_id: String,
    _lock: std::fs::File,
}

/// Blocks until no other test or local stack uses the machine's kubelet.
fn lock_node() -> std::fs::File {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(NODE_LOCK)
        .unwrap_or_else(|e| panic!("{NODE_LOCK}: {e}"));
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
        .unwrap_or_else(|e| panic!("flock {NODE_LOCK}: {e}"));
    f
}

impl Cluster {
    /// Brings the cluster up (the project's images must be built: `images/build.sh`).
    pub fn up(name: &str) -> Self {
        Self::up_with_env(name, &[])
    }

    /// `up` with extra environment for cluster-up.sh (e.g. `TESTENV_SIM_DAEMON_PORTS`).
    pub fn up_with_env(name: &str, env: &[(&str, &str)]) -> Self {
        let lock = lock_node();
        let dir = PathBuf::from(format!("/tmp/elemento-{name}-{}", std::process::id()));
        let script = |s: &str| repo_root().join("tests/env").join(s);
        // A previous run that crashed may have left its node behind: cluster-up cleans it.
        let out = Command::new("bash")
            .arg(script("cluster-up.sh"))
            .env("TESTENV_DIR", &dir)
            .env("TESTENV_ETCD_PORT", free_port().to_string())
            .env("TESTENV_ETCD_PEER_PORT", free_port().to_string())
            .env("TESTENV_APISERVER_PORT", free_port().to_string())
            .env("ELEMENTO_SIM_BIN", workspace_bin("elemento-sim"))
            .envs(env.iter().copied())
            .stderr(Stdio::inherit())
            .output()
            .expect("cluster-up.sh");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let env: BTreeMap<String, String> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let get = |k: &str| env.get(k).cloned().unwrap_or_default();
        let cluster = Self {
            kubeconfig: PathBuf::from(get("KUBECONFIG")),
            bin: PathBuf::from(get("TESTENV_BIN")),
            api_url: get("ELEMENTO_API_URL"),
            node: get("NODE_NAME"),
            node_vm_id: get("NODE_VM_ID"),
            dir,
            _lock: lock,
        };
        assert!(
            out.status.success() && !cluster.node.is_empty(),
            "tests/env/cluster-up.sh failed ({}); logs in {}",
            out.status,
            cluster.dir.display()
        );
        cluster
    }

    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// Runs a tool with this cluster's kubeconfig; panics with its output when it fails.
    pub fn run(&self, tool: &str, args: &[&str], stdin: Option<&str>) -> String {
        match self.try_run(tool, args, stdin) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    pub fn try_run(
        &self,
        tool: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, String> {
        let mut child = Command::new(self.tool(tool))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write stdin");
        }
        let out = child.wait_with_output().expect("wait");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "{tool} {args:?} failed ({}):\n{stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    pub fn kubectl(&self, args: &[&str]) -> String {
        self.run("kubectl", args, None)
    }

    pub fn apply(&self, yaml: &str) {
        self.run("kubectl", &["apply", "-f", "-"], Some(yaml));
    }

    /// `kubectl get -o json`.
    pub fn get_json(&self, args: &[&str]) -> Value {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.kubectl(&a)).expect("kubectl json")
    }

    pub fn helm(&self, args: &[&str]) -> String {
        self.run("helm", args, None)
    }

    /// `helm install|upgrade RELEASE CHART` into kube-system with a values file of this repository
    /// and the simulator as the Elemento endpoint (the demo credentials of the cluster scenario).
    pub fn helm_install(&self, verb: &str, release: &str, chart: &str, values: &str) {
        self.helm_install_with(verb, release, chart, values, &[]);
    }

    /// `helm_install` with further helm arguments (e.g. `--set image.repository=...`).
    pub fn helm_install_with(
        &self,
        verb: &str,
        release: &str,
        chart: &str,
        values: &str,
        extra: &[String],
    ) {
        let values = repo_root().join(values).display().to_string();
        let api = format!("api.url={}", self.api_url);
        let mut args = vec![
            verb,
            release,
            chart,
            "--namespace",
            "kube-system",
            "--values",
            &values,
            "--set",
            &api,
            "--set",
            "credentials.username=demo",
            "--set",
            "credentials.password=demo-password",
        ];
        args.extend(extra.iter().map(String::as_str));
        self.helm(&args);
    }

    /// Pods matching `selector` that are not Ready yet (names; a placeholder when there is none).
    pub fn pods_not_ready(&self, ns: &str, selector: &str) -> Vec<String> {
        let pods = self.get_json(&["pods", "-n", ns, "-l", selector]);
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            return vec!["(no pod yet)".into()];
        }
        items
            .iter()
            .filter(|p| {
                p["metadata"]["deletionTimestamp"].is_string()
                    || !p["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
            })
            .map(|p| p["metadata"]["name"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    /// Waits until every pod matching `selector` is Ready; panics with `kubectl describe` if not.
    pub fn wait_pods_ready(&self, ns: &str, selector: &str, timeout: Duration) {
        let mut last = vec![];
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until(&format!("pods {selector} Ready"), timeout, || {
                last = self.pods_not_ready(ns, selector);
                last.is_empty().then_some(())
            })
        }));
        if r.is_err() {
            let describe = self
                .try_run(
                    "kubectl",
                    &["describe", "pods", "-n", ns, "-l", selector],
                    None,
                )
                .unwrap_or_else(|e| e);
            // Pods Pending on a taint: say which, and whether the node is short of disk.
            let nodes = self
                .try_run(
                    "kubectl",
                    &[
                        "get",
                        "nodes",
                        "-o",
                        "custom-columns=NAME:.metadata.name,TAINTS:.spec.taints[*].key,PRESSURE:.status.conditions[?(@.status==\"True\")].type",
                    ],
                    None,
                )
                .unwrap_or_else(|e| e);
            let disk = Command::new("df")
                .args(["-h", "/", "/tmp"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            panic!(
                "pods {selector} not Ready within {timeout:?}: {last:?}\n{describe}\n{nodes}\n{disk}"
            );
        }
    }

    /// Waits until the CCM has initialized this cluster's Node (providerID set, the uninitialized
    /// taint gone) and returns the Node.
    pub fn wait_node_initialized(&self, timeout: Duration) -> Value {
        wait_until("the Node initialized by the CCM", timeout, || {
            let n = self.get_json(&["node", &self.node]);
            let view = serde_json::from_value(n.clone())
                .map(|node| elemento_api::node::NodeView::from_node(&node))
                .ok()?;
            (!view.is_uninitialized() && view.provider_id.is_some()).then_some(n)
        })
    }

    /// Asserts that an initialized `node` is this cluster's VM as the cluster scenario describes
    /// it: providerID `elemento://<vm id>` and the VM's instance type.
    pub fn assert_node_is_the_vm(&self, node: &Value) {
        assert_eq!(
            node["spec"]["providerID"],
            format!("elemento://{}", self.node_vm_id),
            "{node}"
        );
        let labels = &node["metadata"]["labels"];
        assert_eq!(
            labels["node.kubernetes.io/instance-type"], "argon",
            "{labels}"
        );
    }

    /// A GET on the simulator (its Elemento routes or its `/_sim/` admin API), blocking.
    pub fn sim(&self, path: &str) -> Value {
        let out = Command::new("curl")
            .args(["-fsS", "--max-time", "10"])
            .arg(format!("{}{path}", self.api_url))
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "simulator {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("simulator json")
    }

    pub fn sim_state(&self) -> Value {
        self.sim("/_sim/state")
    }

    /// Successful calls of one simulator route so far.
    pub fn sim_calls_ok(&self, route: &str) -> u64 {
        let c = self.sim("/_sim/counters");
        c[route]["by_status"]["200"].as_u64().unwrap_or(0)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let keep = std::env::var_os("TESTENV_KEEP_LOGS");
        let mut cmd = Command::new("bash");
        cmd.arg(repo_root().join("tests/env/cluster-down.sh"))
            .env("TESTENV_DIR", &self.dir);
        if let Some(k) = keep {
            cmd.env("TESTENV_KEEP_LOGS", k);
        }
        let _ = cmd.status();
    }
}

/// Polls `check` (every 200 ms) until it returns `Some`; panics naming `what` after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
