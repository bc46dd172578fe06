//! Running the CCM for e2e tests: the simulator, the chart's RBAC applied for a fresh release,
//! a ServiceAccount token for it, and the CCM binary as a child process using that token.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::core::v1::{Node, NodeSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::sim::SimProcess;
use crate::{
    Process, TestNamespace, free_port, helm_template, service_account_token, testenv, unique,
    workspace_bin,
};

pub use elemento_api::taints::UNINITIALIZED;
/// Every Node a test creates carries this label with the test's id, for cleanup.
pub const OWNER_LABEL: &str = "e2e.elemento.cloud/owner";

pub struct CcmEnv {
    pub sim: SimProcess,
    pub ns: TestNamespace,
    pub kube: kube::Client,
    pub owner: String,
    kubeconfig: PathBuf,
    cloud_config: PathBuf,
    /// The credentials file the CCM reads (rewrite it to rotate).
    pub credentials: PathBuf,
    rendered: PathBuf,
    _dir: tempfile::TempDir,
}

impl CcmEnv {
    pub async fn new(scenario: &str) -> Self {
        let env = testenv();
        let sim = SimProcess::start(scenario, &[]);
        let kube = env.admin_client().await;
        let ns = TestNamespace::create(&kube, "ccm").await;
        let dir = tempfile::tempdir().expect("tempdir");
        let release = unique("eccm");
        let rendered = dir.path().join("rbac.yaml");
        std::fs::write(
            &rendered,
            helm_template(
                "elemento-cloud-controller-manager",
                &release,
                &ns.name,
                &["templates/serviceaccount.yaml", "templates/rbac.yaml"],
                &["--set", "leaderElection.enabled=true"],
            ),
        )
        .expect("write rbac");
        env.kubectl(&["apply", "-f", rendered.to_str().expect("utf-8 path")]);
        let sa = format!("{release}-elemento-cloud-controller-manager");
        let token = service_account_token(&kube, &ns.name, &sa).await;
        let kubeconfig = env.token_kubeconfig(&token);
        let creds = dir.path().join("credentials.yaml");
        std::fs::write(
            &creds,
            "username: demo\npassword: demo-password\ntoken: e2e-bearer-token-7f3a9c\n",
        )
        .expect("creds");
        let cloud_config = dir.path().join("cloud-config.yaml");
        std::fs::write(
            &cloud_config,
            format!(
                "clusterName: e2e\napi:\n  url: {}\n  credentialsFile: {}\n",
                sim.base_url,
                creds.display()
            ),
        )
        .expect("cloud config");
        Self {
            sim,
            owner: ns.name.clone(),
            ns,
            kube,
            kubeconfig,
            cloud_config,
            credentials: creds,
            rendered,
            _dir: dir,
        }
    }

    /// Starts a CCM replica; `extra` flags come last. Returns it and its metrics port.
    pub fn start_ccm(&self, identity: &str, extra: &[&str]) -> (Process, u16) {
        let port = free_port();
        let p = Process::spawn(
            &format!("ccm-{identity}"),
            Command::new(workspace_bin("elemento-cloud-controller-manager"))
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .arg("--cloud-config")
                .arg(&self.cloud_config)
                .args([
                    "--leader-elect-resource-namespace",
                    &self.ns.name,
                    "--leader-elect-identity",
                    identity,
                ])
                .args(["--metrics-bind-address", &format!("127.0.0.1:{port}")])
                .args(["--node-monitor-period", "1s", "--log-format", "json"])
                .args(extra)
                .env("RUST_LOG", "info,elemento_ccm=debug")
                .env("ELEMENTO_CREDENTIALS_POLL_SECONDS", "1"),
        );
        (p, port)
    }

    /// Creates a Node owned by this test: optional providerID, InternalIP, taint, Ready status.
    pub async fn node(
        &self,
        name: &str,
        provider_id: Option<&str>,
        ip: Option<&str>,
        uninitialized: bool,
        labels: &[(&str, &str)],
    ) -> Node {
        let nodes: Api<Node> = Api::all(self.kube.clone());
        let mut l: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.insert(OWNER_LABEL.into(), self.owner.clone());
        let n = node_object(name, l, provider_id, uninitialized);
        let created = nodes
            .create(&PostParams::default(), &n)
            .await
            .expect("create node");
        if let Some(ip) = ip {
            let st = json!({"status": {"addresses": [{"type": "InternalIP", "address": ip}]}});
            return nodes
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&st))
                .await
                .expect("node status");
        }
        created
    }

    pub async fn metrics(&self, port: u16) -> String {
        reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// Warning/Normal events (events.k8s.io) about `name` in `namespace`.
    pub async fn events_for(&self, namespace: &str, name: &str) -> Vec<Value> {
        let api: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.kube.clone(), namespace);
        api.list(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .filter_map(|e| serde_json::to_value(e).ok())
            .collect()
    }
}

impl Drop for CcmEnv {
    fn drop(&mut self) {
        let env = testenv();
        env.kubectl_quiet(&[
            "delete",
            "nodes",
            "-l",
            &format!("{OWNER_LABEL}={}", self.owner),
            "--wait=false",
        ]);
        env.kubectl_quiet(&[
            "delete",
            "--ignore-not-found",
            "--wait=false",
            "-f",
            &self.rendered.display().to_string(),
        ]);
    }
}

/// The Node's taint keys.
pub fn taint_keys(n: &Node) -> Vec<String> {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|t| t.key)
        .collect()
}

pub fn label<'a>(n: &'a Node, k: &str) -> Option<&'a str> {
    n.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(k))
        .map(String::as_str)
}

/// A Node as a kubelet started with `--cloud-provider=external` registers it: optionally with
/// a providerID, optionally carrying the uninitialized taint.
pub fn node_object(
    name: &str,
    labels: BTreeMap<String, String>,
    provider_id: Option<&str>,
    uninitialized: bool,
) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            provider_id: provider_id.map(String::from),
            taints: Some(if uninitialized {
                vec![elemento_api::node::uninitialized_taint()]
            } else {
                vec![]
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
