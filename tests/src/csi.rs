//! Running the CSI driver for e2e tests: the simulator in host-device mode (real loop devices),
//! the driver's controller and node plugins on unix sockets, and the real sidecars
//! (csi-provisioner, csi-attacher, csi-resizer) using the chart's controller ServiceAccount.

use std::path::{Path, PathBuf};
use std::process::Command;

use csi_grpc::v1::node_client::NodeClient;
use serde_json::json;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::sim::SimProcess;
use crate::{
    Process, TestNamespace, free_port, helm_template, service_account_token, testenv, unique,
    workspace_bin,
};

pub const DRIVER: &str = "csi.elemento.cloud";
use elemento_api::topology::{LABEL_REGION, LABEL_ZONE};

/// A VM id that is "this host" in the simulator: its volumes become loop devices here.
pub fn scenario(vm_id: &str) -> String {
    format!("vms:\n  - {{id: {vm_id}, name: {vm_id}, template: neon, this_host: true}}\n")
}

pub struct DriverFiles {
    pub dir: tempfile::TempDir,
    pub hostdev: PathBuf,
    pub config: PathBuf,
}

impl DriverFiles {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let hostdev = dir.path().join("hostdev");
        std::fs::create_dir_all(&hostdev).expect("hostdev");
        let config = dir.path().join("driver.yaml");
        Self {
            hostdev,
            config,
            dir,
        }
    }

    /// Starts the simulator (host-device mode) and writes the driver config pointing at it.
    pub fn sim(&self, scenario: &str) -> SimProcess {
        let sim = SimProcess::start(
            scenario,
            &["--host-devices", self.hostdev.to_str().expect("utf-8")],
        );
        let creds = self.dir.path().join("creds.yaml");
        std::fs::write(
            &creds,
            "username: demo\npassword: demo-password\ntoken: e2e-bearer-token-7f3a9c\n",
        )
        .expect("creds");
        std::fs::write(
            &self.config,
            format!(
                "api:\n  url: {}\n  credentialsFile: {}\n",
                sim.base_url,
                creds.display()
            ),
        )
        .expect("config");
        sim
    }

    pub fn socket(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.sock"))
    }

    /// The driver in `mode` on socket `name`; node modes take the VM id as node id.
    pub fn driver(&self, mode: &str, name: &str, node_id: &str) -> Process {
        let p = Process::spawn(
            &format!("csi-{name}"),
            Command::new(workspace_bin("elemento-csi-driver"))
                .args([
                    "--mode",
                    mode,
                    "--endpoint",
                    &format!("unix://{}", self.socket(name).display()),
                ])
                .arg("--config")
                .arg(&self.config)
                .args([
                    "--node-id",
                    node_id,
                    "--node-zone",
                    "atomos",
                    "--node-region",
                    "elemento",
                    "--device-wait-seconds",
                    "10",
                ])
                .arg("--device-root")
                .arg(&self.hostdev)
                .args([
                    "--metrics-bind-address",
                    &format!("127.0.0.1:{}", free_port()),
                ])
                .env("RUST_LOG", "info,elemento_csi=debug"),
        );
        wait_for_socket(&self.socket(name));
        p
    }
}

impl Drop for DriverFiles {
    /// A failed test may leave mounts behind: unmount everything under this directory, deepest
    /// first, so nothing leaks into the next test.
    fn drop(&mut self) {
        let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return;
        };
        let mut points: Vec<&str> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| Path::new(p).starts_with(self.dir.path()))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = Command::new("umount").arg(p).output();
        }
    }
}

impl Default for DriverFiles {
    fn default() -> Self {
        Self::new()
    }
}

fn wait_for_socket(p: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !p.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} did not appear",
            p.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A gRPC channel over a unix socket (the URI is ignored by the connector).
pub async fn channel(socket: &Path) -> Channel {
    let path = socket.to_path_buf();
    Endpoint::try_from("http://[::]:50051")
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .expect("connect to the CSI socket")
}

pub async fn node_client(socket: &Path) -> NodeClient<Channel> {
    NodeClient::new(channel(socket).await)
}

/// The controller side on the real control plane: RBAC from the chart, a token for its
/// controller ServiceAccount, and the three sidecars.
pub struct CsiCluster {
    pub files: DriverFiles,
    pub sim: SimProcess,
    pub ns: TestNamespace,
    pub kube: kube::Client,
    pub vm: String,
    pub node_socket: PathBuf,
    /// The Node and CSINode registered for the VM (what the kubelet and node-driver-registrar
    /// would do), so csi-provisioner finds the driver's topology.
    pub node_name: String,
    /// The driver in controller mode and its sidecars: one "pod", restartable as a whole.
    pub controller: Vec<Process>,
    kubeconfig: PathBuf,
    rendered: PathBuf,
    _node: Process,
}

impl CsiCluster {
    pub async fn start() -> Self {
        let env = testenv();
        let files = DriverFiles::new();
        let vm = unique("csi-vm");
        let sim = files.sim(&scenario(&vm));
        let kube = env.admin_client().await;
        let ns = TestNamespace::create(&kube, "csi").await;
        let release = unique("ecsi");
        let rendered = files.dir.path().join("rbac.yaml");
        std::fs::write(
            &rendered,
            helm_template(
                "elemento-csi-driver",
                &release,
                &ns.name,
                &["templates/serviceaccounts.yaml", "templates/rbac.yaml"],
                &[],
            ),
        )
        .expect("rbac");
        env.kubectl(&["apply", "-f", rendered.to_str().expect("utf-8")]);
        let token = service_account_token(
            &kube,
            &ns.name,
            &format!("{release}-elemento-csi-driver-controller"),
        )
        .await;
        let kubeconfig = env.token_kubeconfig(&token);
        let node_plugin = files.driver("node", "node", &vm);
        let controller = start_controller_pod(&files, &vm, &kubeconfig);
        let node_socket = files.socket("node");
        let node_name = unique("csi-node");
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node_name, "labels": {LABEL_ZONE: "atomos", LABEL_REGION: "elemento"}}, "spec": {"providerID": format!("elemento://{vm}")}});
        let csinode = json!({"apiVersion": "storage.k8s.io/v1", "kind": "CSINode", "metadata": {"name": node_name},
            "spec": {"drivers": [{"name": DRIVER, "nodeID": vm, "topologyKeys": [LABEL_ZONE, LABEL_REGION]}]}});
        let objects = files.dir.path().join("node.yaml");
        std::fs::write(&objects, format!("{node}\n---\n{csinode}\n")).expect("node objects");
        env.kubectl(&["apply", "-f", objects.to_str().expect("utf-8")]);
        Self {
            files,
            sim,
            ns,
            kube,
            vm,
            node_socket,
            node_name,
            controller,
            kubeconfig,
            rendered,
            _node: node_plugin,
        }
    }
}

impl CsiCluster {
    /// SIGKILLs the controller "pod" (driver and sidecars), as a crash would, and starts it again.
    pub fn crash_and_restart_controller(&mut self) -> Vec<Process> {
        for p in &mut self.controller {
            p.kill();
        }
        let fresh = start_controller_pod(&self.files, &self.vm, &self.kubeconfig);
        std::mem::replace(&mut self.controller, fresh)
    }
}

/// The driver in controller mode plus csi-provisioner, csi-attacher and csi-resizer.
fn start_controller_pod(files: &DriverFiles, vm: &str, kubeconfig: &Path) -> Vec<Process> {
    let env = testenv();
    let _ = std::fs::remove_file(files.socket("controller"));
    let driver = files.driver("controller", "controller", vm);
    let ctl = files.socket("controller");
    let sidecar = |name: &str, extra: &[&str]| {
        Process::spawn(
            name,
            Command::new(env.tool(name))
                .arg(format!("--csi-address={}", ctl.display()))
                .arg(format!("--kubeconfig={}", kubeconfig.display()))
                .args(["--leader-election=false", "--timeout=30s", "--v=3"])
                .args(extra),
        )
    };
    vec![
        driver,
        sidecar(
            "csi-provisioner",
            &[
                "--extra-create-metadata",
                "--default-fstype=ext4",
                "--worker-threads=20",
            ],
        ),
        sidecar("csi-attacher", &[]),
        sidecar("csi-resizer", &["--handle-volume-inuse-error=false"]),
    ]
}

impl Drop for CsiCluster {
    fn drop(&mut self) {
        let env = testenv();
        for f in [
            self.rendered.clone(),
            self.files.dir.path().join("node.yaml"),
        ] {
            env.kubectl_quiet(&[
                "delete",
                "--ignore-not-found",
                "--wait=false",
                "-f",
                &f.display().to_string(),
            ]);
        }
    }
}
