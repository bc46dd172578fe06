//! Test support for end-to-end tests against the real control plane built by `tests/env`.
//!
//! * [`testenv`] attaches to the running environment, or brings it up with `tests/env/up.sh`.
//!   Under CI (`CI=true`) a missing component is a test failure with the reason, never a skip.
//! * [`TestNamespace`] gives each test its own namespace, deleted afterwards.
//! * [`Process`] runs the simulator and the project's binaries as children; their logs are
//!   printed into the test output when the test fails.
//! * [`wait_for`] polls a condition with a deadline (no fixed sleeps).
#![forbid(unsafe_code)]

use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};

pub mod autoscaler;
pub mod ccm;
pub mod cluster;
pub mod control_plane;
pub mod csi;
pub mod metrics;
pub mod registry;
pub mod reliability;
pub mod sim;

/// The running test control plane.
#[derive(Debug, Clone)]
pub struct TestEnv {
    pub kubeconfig: PathBuf,
    /// Where install.sh put etcd, kube-*, kubectl, helm, csi-sanity and the sidecars.
    pub bin: PathBuf,
    pub dir: PathBuf,
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn env_dir() -> PathBuf {
    std::env::var_os("TESTENV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/tmp/elemento-testenv".into())
}

/// Attaches to the environment, starting it with `tests/env/up.sh` when it is not running.
/// Panics with the reason when it cannot: e2e tests never skip silently.
pub fn testenv() -> &'static TestEnv {
    static ENV: OnceLock<TestEnv> = OnceLock::new();
    ENV.get_or_init(|| match bring_up() {
        Ok(e) => e,
        Err(e) => panic!(
            "the e2e test environment is not available: {e:#}\n\
             Build it with tests/env/install.sh (once), then run the tests again \
             (tests/env/up.sh is started automatically)."
        ),
    })
}

fn bring_up() -> anyhow::Result<TestEnv> {
    let out = Command::new("bash")
        .arg(repo_root().join("tests/env/up.sh"))
        .stderr(Stdio::inherit())
        .output()
        .context("running tests/env/up.sh")?;
    if !out.status.success() {
        bail!("tests/env/up.sh failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(PathBuf::from)
            .with_context(|| format!("up.sh printed no {k}"))
    };
    Ok(TestEnv {
        kubeconfig: get("KUBECONFIG")?,
        bin: get("TESTENV_BIN")?,
        dir: env_dir(),
    })
}

impl TestEnv {
    /// A cluster-admin client. Create one per test: a client is tied to its tokio runtime.
    pub async fn admin_client(&self) -> kube::Client {
        self.client_from(&self.kubeconfig).await
    }

    async fn client_from(&self, path: &Path) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(path).expect("kubeconfig");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("kube config");
        kube::Client::try_from(cfg).expect("kube client")
    }

    /// A client that authenticates with `token` (e.g. a ServiceAccount's), not as admin.
    pub async fn token_client(&self, token: &str) -> kube::Client {
        let path = self.token_kubeconfig(token);
        self.client_from(&path).await
    }

    /// A kubeconfig file for `token`, for the project's binaries run as a ServiceAccount.
    pub fn token_kubeconfig(&self, token: &str) -> PathBuf {
        let server = std::fs::read_to_string(&self.kubeconfig)
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.trim().strip_prefix("server: ").map(String::from))
            })
            .expect("server in kubeconfig");
        let dir = self.dir.join("kubeconfigs");
        std::fs::create_dir_all(&dir).expect("kubeconfig dir");
        let path = dir.join(format!("token-{}.yaml", unique("kc")));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\n\
             users:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: t\n  context: {{cluster: t, user: u}}\ncurrent-context: t\n"
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    pub fn tool(&self, name: &str) -> PathBuf {
        let p = self.bin.join(name);
        assert!(
            p.exists(),
            "{} is missing: run tests/env/install.sh",
            p.display()
        );
        p
    }

    /// Runs kubectl as admin for a cleanup: errors are ignored (the object may be gone).
    pub fn kubectl_quiet(&self, args: &[&str]) {
        let _ = Command::new(self.tool("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output();
    }

    /// Runs kubectl as admin and returns stdout; panics with stderr on failure.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = Command::new(self.tool("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A name unique within this machine: `<prefix>-<pid>-<counter>-<random>`.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}-{:04x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        fastrand_u16()
    )
}

fn fastrand_u16() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.subsec_nanos() ^ (t.as_secs() as u32).rotate_left(7)) as u16
}

/// A namespace for one test, deleted (without waiting) when dropped.
pub struct TestNamespace {
    pub name: String,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
}

impl TestNamespace {
    pub async fn create(client: &kube::Client, prefix: &str) -> Self {
        let env = testenv();
        let name = unique(prefix);
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("ns");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        Self {
            name,
            kubeconfig: env.kubeconfig.clone(),
            kubectl: env.tool("kubectl"),
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .output();
    }
}

/// Deletes a cluster-scoped object, ignoring "not found".
pub async fn delete_ignore_missing<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => panic!("delete {name}: {e}"),
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A child process whose output goes to a log file; killed on drop, and its log printed into
/// the test output when the test is failing.
pub struct Process {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        let dir = env_dir().join("proc-logs");
        std::fs::create_dir_all(&dir).expect("log dir");
        let log = dir.join(format!("{}.log", unique(name)));
        let file = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup log"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Self {
            name: name.into(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn terminate(&mut self, grace: Duration) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }
}

/// Credentials every e2e test uses; no log may ever contain them.
pub const TEST_SECRETS: &[&str] = &[
    "demo-password",
    "e2e-bearer-token-7f3a9c",
    "rotated-password-91b2",
];

/// The secrets found in `text`.
pub fn leaked_secrets(text: &str) -> Vec<&'static str> {
    TEST_SECRETS
        .iter()
        .copied()
        .filter(|s| text.contains(s))
        .collect()
}

impl Drop for Process {
    fn drop(&mut self) {
        let leaked = leaked_secrets(&self.logs());
        if !leaked.is_empty() && !std::thread::panicking() {
            panic!(
                "{} logged a secret ({leaked:?}); log: {}",
                self.name,
                self.log.display()
            );
        }
        if std::thread::panicking() {
            eprintln!(
                "----- {} log ({}) -----\n{}\n----- end of {} log -----",
                self.name,
                self.log.display(),
                self.logs(),
                self.name
            );
        }
        self.terminate(Duration::from_secs(5));
    }
}

/// A binary built by this workspace (`target/<profile>/<name>`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // Beside the running binary (target/<profile>/bench), or one level up from a test binary
    // (target/<profile>/deps/<test>).
    let dir = exe.parent().expect("exe dir");
    [dir.join(name), dir.parent().map(|d| d.join(name)).unwrap_or_default()]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not built next to {}: run `cargo build --workspace --bins` (with --release for the benchmarks) first", exe.display()))
}

/// A token for ServiceAccount `ns/name` (TokenRequest, one hour).
pub async fn service_account_token(client: &kube::Client, ns: &str, name: &str) -> String {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let req = serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}});
    let tr: serde_json::Value = sas
        .create_subresource("token", name, &PostParams::default(), &req)
        .await
        .expect("TokenRequest");
    tr["status"]["token"]
        .as_str()
        .expect("token in TokenRequest status")
        .to_string()
}

/// A free TCP port on 127.0.0.1 (bound and released; fine for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Asserts that the test runs as root (loop devices, mkfs, mount, the kubelet), failing with the
/// reason otherwise: tests never skip silently. Returns true, so `if !require_root(..) { return }`
/// call sites read naturally.
/// The Kubernetes version the test tools are built at, without the `v` (`K8S_VERSION` in
/// tests/env/versions.env: the one place it is written).
pub fn kube_version() -> &'static str {
    include_str!("../env/versions.env")
        .lines()
        .find_map(|l| l.trim().strip_prefix("K8S_VERSION=v"))
        .expect("K8S_VERSION=v… in tests/env/versions.env")
}

pub fn require_root(test: &str) -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    assert!(
        root,
        "{test} needs root (loop devices, mkfs, mount, kubelet): run the tests as root"
    );
    root
}

/// Renders templates of one of the project's charts with the real helm.
/// `extra` are more helm arguments (`--set k=v`), for the configuration the test runs.
pub fn helm_template(
    chart: &str,
    release: &str,
    namespace: &str,
    templates: &[&str],
    extra: &[&str],
) -> String {
    let env = testenv();
    let mut cmd = Command::new(env.tool("helm"));
    cmd.args(["template", release])
        .arg(repo_root().join("charts").join(chart))
        .args(["--namespace", namespace, "--kube-version", kube_version()])
        // The charts refuse to render without credentials; RBAC renders do not use them.
        .args(["--set", "credentials.existingSecret=unused"])
        .args(extra);
    for t in templates {
        cmd.args(["--show-only", t]);
    }
    let out = cmd.output().expect("helm template");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
