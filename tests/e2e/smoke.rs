//! Proves the test environment is a real control plane: RBAC, admission of tainted Nodes, the
//! controller manager's PV binder, and the CSI tools.

use std::time::Duration;

use elemento_e2e::{TestNamespace, delete_ignore_missing, testenv, unique, wait_for};
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, ServiceAccount};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, PostParams};
use serde_json::json;

async fn sa_token(client: &kube::Client, ns: &str, name: &str) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    sas.create(&PostParams::default(), &sa).await.unwrap();
    elemento_e2e::service_account_token(client, ns, name).await
}

#[tokio::test]
async fn rbac_denies_an_unprivileged_service_account() {
    let env = testenv();
    let admin = env.admin_client().await;
    let ns = TestNamespace::create(&admin, "smoke-rbac").await;
    let token = sa_token(&admin, &ns.name, "nobody").await;
    let client = env.token_client(&token).await;
    let err = Api::<Node>::all(client)
        .list(&Default::default())
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("expected 403 Forbidden, got {other}"),
    }
    // The same list works as admin, so the 403 is RBAC, not a broken server.
    Api::<Node>::all(admin)
        .list(&Default::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_node_with_the_uninitialized_taint_is_accepted() {
    let admin = testenv().admin_client().await;
    let nodes: Api<Node> = Api::all(admin);
    let name = unique("smoke-node");
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"taints": [{"key": elemento_api::taints::UNINITIALIZED, "value": "true", "effect": "NoSchedule"}]}
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let got = nodes.get(&name).await.unwrap();
    let taints = got.spec.and_then(|s| s.taints).unwrap_or_default();
    assert!(
        taints
            .iter()
            .any(|t| t.key == elemento_api::taints::UNINITIALIZED)
    );
    delete_ignore_missing(&nodes, &name).await;
}

#[tokio::test]
async fn pvc_of_an_unknown_provisioner_stays_pending_with_the_provisioner_annotation() {
    let admin = testenv().admin_client().await;
    let ns = TestNamespace::create(&admin, "smoke-pvc").await;
    let scs: Api<StorageClass> = Api::all(admin.clone());
    let sc_name = unique("smoke-sc");
    let sc: StorageClass = serde_json::from_value(json!({
        "metadata": {"name": sc_name}, "provisioner": "nobody.example.com", "volumeBindingMode": "Immediate"
    }))
    .unwrap();
    scs.create(&PostParams::default(), &sc).await.unwrap();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), &ns.name);
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": sc_name, "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .unwrap();
    pvcs.create(&PostParams::default(), &pvc).await.unwrap();
    let got = wait_for(
        "the PV controller to annotate the PVC",
        Duration::from_secs(60),
        || async {
            let p = pvcs.get("data").await.ok()?;
            let ann = p.metadata.annotations.clone().unwrap_or_default();
            (ann.get("volume.kubernetes.io/storage-provisioner")
                .map(String::as_str)
                == Some("nobody.example.com"))
            .then_some(p)
        },
    )
    .await;
    assert_eq!(got.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
    delete_ignore_missing(&scs, &sc_name).await;
}

#[test]
fn csi_tools_run() {
    let env = testenv();
    for tool in [
        "csi-sanity",
        "csi-provisioner",
        "csi-attacher",
        "csi-resizer",
        "helm",
    ] {
        let out = std::process::Command::new(env.tool(tool))
            .arg("--help")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.len() > 100, "{tool} --help printed too little: {text}");
        assert!(!text.contains("exec format error"), "{tool}: {text}");
    }
}
