//! The charts, plain manifests, kOps static channel and kOps fork templates against the real API
//! server: lint, server-side dry runs, a real `helm install` whose ServiceAccounts run the
//! binaries, and a clean uninstall. The kOps channel running on a real kubelet: tests/e2e/kops.rs.

use std::process::Command;
use std::time::Duration;

use elemento_e2e::ccm::{UNINITIALIZED, taint_keys};
use elemento_e2e::sim::SimProcess;
use elemento_e2e::{
    Process, TestNamespace, free_port, repo_root, service_account_token, testenv, unique, wait_for,
    workspace_bin,
};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn helm(args: &[&str]) -> String {
    let env = testenv();
    let out = Command::new(env.tool("helm"))
        .arg("--kubeconfig")
        .arg(&env.kubeconfig)
        .args(args)
        .output()
        .expect("helm");
    assert!(
        out.status.success(),
        "helm {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn chart(name: &str) -> String {
    repo_root().join("charts").join(name).display().to_string()
}

fn dry_run_server(file: &std::path::Path) {
    testenv().kubectl(&["apply", "--dry-run=server", "-f", file.to_str().unwrap()]);
}

const CREDS: &[&str] = &[
    "--set",
    "credentials.username=demo",
    "--set",
    "credentials.password=demo-password",
];

#[tokio::test]
async fn charts_lint_strict_and_pass_a_server_side_dry_run() {
    let _s = SERIAL.lock().await;
    let kube = testenv().admin_client().await;
    let ns = TestNamespace::create(&kube, "pkg-dry").await;
    let dir = tempfile::tempdir().unwrap();
    let autoscaler_values = repo_root()
        .join("examples/local-cluster/values-autoscaler.yaml")
        .display()
        .to_string();
    for c in [
        "elemento-cloud-controller-manager",
        "elemento-csi-driver",
        "elemento-cluster-autoscaler",
    ] {
        let chart_path = chart(c);
        // The autoscaler has no defaults for its groups and join endpoint: the example's.
        let mut extra = CREDS.to_vec();
        if c == "elemento-cluster-autoscaler" {
            extra.extend_from_slice(&[
                "-f",
                &autoscaler_values,
                "--set",
                "bootstrap.apiServer=10.0.0.10:6443",
            ]);
        }
        let mut lint = vec![
            "lint",
            "--strict",
            "--kube-version",
            elemento_e2e::kube_version(),
            &chart_path,
        ];
        lint.extend_from_slice(&extra);
        helm(&lint);
        let mut t = vec![
            "template",
            "dry",
            &chart_path,
            "--namespace",
            &ns.name,
            "--kube-version",
            elemento_e2e::kube_version(),
        ];
        t.extend_from_slice(&extra);
        let rendered = dir.path().join(format!("{c}.yaml"));
        std::fs::write(&rendered, helm(&t)).unwrap();
        dry_run_server(&rendered);
    }
    // The committed plain manifests and kops manifests are fresh, and the API server accepts them.
    let out = Command::new("bash")
        .arg(repo_root().join("manifests/render.sh"))
        .arg("--check")
        .env("HELM", testenv().tool("helm"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The plain autoscaler install's gRPC Secret, as its script prints it.
    let tls = Command::new("bash")
        .arg(repo_root().join("manifests/autoscaler-grpc-tls.sh"))
        .output()
        .unwrap();
    assert!(
        tls.status.success(),
        "{}",
        String::from_utf8_lossy(&tls.stderr)
    );
    let tls_file = dir.path().join("grpc-tls.yaml");
    std::fs::write(&tls_file, &tls.stdout).unwrap();
    dry_run_server(&tls_file);
    for f in [
        "elemento-cloud-controller-manager.yaml",
        "elemento-csi-driver.yaml",
        "elemento-cluster-autoscaler.yaml",
        "kops/elemento-cloud-controller.addons.elemento.cloud/k8s-1.29.yaml",
        "kops/elemento-csi-driver.addons.elemento.cloud/k8s-1.29.yaml",
        "credentials-secret.example.yaml",
    ] {
        dry_run_server(&repo_root().join("manifests").join(f));
    }
}

#[test]
fn chart_guards_refuse_bad_values() {
    let env = testenv();
    let run = |c: &str, args: &[&str]| {
        let out = Command::new(env.tool("helm"))
            .args([
                "template",
                "x",
                &chart(c),
                "--kube-version",
                elemento_e2e::kube_version(),
            ])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = run(
        "elemento-cloud-controller-manager",
        &[
            "--set",
            "credentials.existingSecret=s",
            "--set",
            "credentials.token=t",
        ],
    );
    assert!(!ok && err.contains("not both"), "{err}");
    let (ok, err) = run("elemento-cloud-controller-manager", &[]);
    assert!(!ok && err.contains("set existingSecret"), "{err}");
    let (ok, err) = run(
        "elemento-cloud-controller-manager",
        &["--set", "credentials.token=t", "--set", "clustrName=x"],
    );
    assert!(
        !ok && err.contains("clustrName"),
        "a typo is rejected by the schema: {err}"
    );
    let (ok, err) = run(
        "elemento-csi-driver",
        &[
            "--set",
            "credentials.token=t",
            "--set",
            "flavours.thin.format=vmdk",
        ],
    );
    assert!(!ok && err.contains("format"), "{err}");
    let two = repo_root().join("target/two-defaults.yaml");
    std::fs::write(&two, "credentials: {token: t}\nstorageClasses:\n  - {name: a, flavour: standard, default: true}\n  - {name: b, flavour: thin, default: true}\n").unwrap();
    let (ok, err) = run("elemento-csi-driver", &["-f", two.to_str().unwrap()]);
    assert!(!ok && err.contains("exactly one"), "{err}");

    // Management-cluster mode: refused on the host's network or without an Elemento URL.
    for (c, host_network) in [
        ("elemento-cloud-controller-manager", "hostNetwork"),
        ("elemento-csi-driver", "controller.hostNetwork"),
    ] {
        let tenant = [
            "--set",
            "credentials.token=t",
            "--set",
            "tenantKubeconfig.secretName=tk",
        ];
        let (ok, err) = run(c, &tenant);
        assert!(
            !ok && err.contains(&format!("set {host_network}: false")),
            "{c}: {err}"
        );
        let no_host = format!("{host_network}=false");
        let (ok, err) = run(c, &[&tenant[..], &["--set", &no_host]].concat());
        assert!(!ok && err.contains("set api.url"), "{c}: {err}");
        let (ok, err) = run(
            c,
            &[
                &tenant[..],
                &["--set", &no_host, "--set", "api.url=https://meson.example"],
            ]
            .concat(),
        );
        assert!(ok, "{c}: {err}");
    }
    let (ok, err) = run(
        "elemento-csi-driver",
        &[
            "--set",
            "credentials.token=t",
            "--set",
            "tenantKubeconfig.secretName=tk",
            "--set",
            "controller.enabled=false",
        ],
    );
    assert!(!ok && err.contains("controller.enabled: true"), "{err}");

    // The autoscaler: what it cannot run without, and what it must never do.
    let example = repo_root()
        .join("examples/local-cluster/values-autoscaler.yaml")
        .display()
        .to_string();
    let autoscaler = |more: &[&str]| {
        let mut a = vec![
            "-f",
            &example,
            "--set",
            "credentials.token=t",
            "--set",
            "bootstrap.apiServer=10.0.0.10:6443",
        ];
        a.extend_from_slice(more);
        run("elemento-cluster-autoscaler", &a)
    };
    let (ok, err) = autoscaler(&[]);
    assert!(ok, "the example values render: {err}");
    let (ok, err) = autoscaler(&["--set", "grpc.plaintext=true"]);
    assert!(
        !ok && err.contains("grpc.plaintext: refused with hostNetwork"),
        "plaintext on the host's network is refused: {err}"
    );
    let (ok, err) = autoscaler(&["--set", "nodeGroups=null"]);
    assert!(!ok && err.contains("nodeGroups"), "{err}");
    let (ok, err) = autoscaler(&["--set", "clusterName=a-cluster-name-too-long"]);
    assert!(
        !ok && err.contains("clusterName"),
        "a name past 15 characters: {err}"
    );
    let (ok, err) = autoscaler(&["--set", "nodeGroups[0].maxSzie=3"]);
    assert!(!ok && err.contains("maxSzie"), "a typo in a group: {err}");
    let (ok, err) = autoscaler(&["--set", "userDataTemplates.autoscaler\\.yaml=x"]);
    assert!(!ok && err.contains("a name the chart uses"), "{err}");
}

/// The upstream kOps static channel: kOps applies `spec.addons` manifests as they are, so they
/// hold no template action, no Secret (the operator creates the credentials Secret; nothing secret
/// goes through the kOps state store) and no cluster name (read from the operator's ConfigMap).
#[test]
fn kops_static_channel_is_plain_and_holds_no_secret() {
    let dir = repo_root().join("manifests/kops");
    let channel: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(dir.join("addons.yaml")).unwrap()).unwrap();
    assert_eq!(channel["kind"], "Addons");
    assert!(
        channel["metadata"]["name"]
            .as_str()
            .is_some_and(|n| !n.is_empty())
    );
    let addons = channel["spec"]["addons"].as_array().expect("spec.addons");
    let names: Vec<&str> = addons.iter().filter_map(|a| a["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "elemento-cloud-controller.addons.elemento.cloud",
            "elemento-csi-driver.addons.elemento.cloud"
        ]
    );
    for a in addons {
        let name = a["name"].as_str().expect("name");
        for field in ["version", "id", "manifest", "kubernetesVersion"] {
            assert!(
                a[field].as_str().is_some_and(|v| !v.is_empty()),
                "{name}: {field}"
            );
        }
        let selector = a["selector"].as_object().expect("selector");
        assert_eq!(
            selector.get("k8s-addon").and_then(Value::as_str),
            Some(name),
            "{name}: selector"
        );
        let file = a["manifest"].as_str().unwrap();
        assert!(
            file.ends_with(".yaml"),
            "{name}: kOps applies {file} as it is"
        );
        let manifest = std::fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("{name}: manifest: {e}"));
        assert!(
            !manifest.contains("{{"),
            "{name}: a template action in {file}"
        );
        // kops prunes by the selector: every object must carry its labels.
        let docs: Vec<&str> = manifest
            .split("\n---")
            .filter(|d| d.contains("kind:"))
            .collect();
        assert!(!docs.is_empty());
        for d in docs {
            assert!(
                d.contains(&format!("k8s-addon: {name}")),
                "{name}: an object lacks the selector label:\n{d}"
            );
            assert!(
                !d.contains("\nkind: Secret"),
                "{name}: the channel carries a Secret:\n{d}"
            );
        }
        assert!(
            manifest.contains("secretName: elemento-credentials"),
            "{name}: the operator's Secret is not the one mounted"
        );
    }
    let ccm = std::fs::read_to_string(dir.join(addons[0]["manifest"].as_str().unwrap())).unwrap();
    assert!(
        !ccm.contains("clusterName:")
            && ccm.contains("--cluster-name=$(ELEMENTO_CLUSTER_NAME)")
            && ccm.contains("configMapKeyRef: {name: \"elemento-cluster\", key: \"clusterName\"}"),
        "the cluster name must come from the operator's ConfigMap"
    );
}

/// Elemento's kOps fork renders its bootstrap addons from `manifests/kops-fork/*.yaml.template`
/// with kOps's template functions. Rendered here by the stand-in (tests/env/kops-template: Go's
/// text/template, kOps's function names and signatures, the cluster spec as data), which
/// defines only the kOps functions the templates may use, then applied with a server-side dry run.
#[tokio::test]
async fn kops_fork_templates_render_with_kops_functions_and_pass_a_server_side_dry_run() {
    // The dry run creates the cluster-scoped CSIDriver that the install test makes for real.
    let _s = SERIAL.lock().await;
    let env = testenv();
    let dir = repo_root().join("manifests/kops-fork");
    let out = tempfile::tempdir().unwrap();
    let render = |file: &std::path::Path, ha: bool| -> Result<String, String> {
        let mut cmd = Command::new(env.tool("kops-template"));
        cmd.args([
            "-cluster-name",
            "prod.example.com",
            "-region",
            "ovh-gra",
            "-ccm-image",
            "registry.example.com/elemento-cloud-controller-manager:9.9.9",
        ]);
        if ha {
            cmd.arg("-ha");
        }
        let o = cmd.arg(file).output().expect("kops-template");
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
    };
    let templates = [
        "elemento-cloud-controller.addons.k8s.io/k8s-1.29.yaml.template",
        "elemento-csi-driver.addons.k8s.io/k8s-1.29.yaml.template",
    ];
    for t in templates {
        let path = dir.join(t);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("\nkind: Secret"),
            "{t}: a Secret in a kOps addon is written into the state store"
        );
        for ha in [false, true] {
            let rendered = render(&path, ha).unwrap_or_else(|e| panic!("{t}: {e}"));
            assert!(!rendered.contains("{{"), "{t}: left unrendered");
            let replicas = if ha { "replicas: 2" } else { "replicas: 1" };
            assert!(rendered.contains(replicas), "{t}: {replicas}");
            let file = out
                .path()
                .join(format!("{}-{ha}.yaml", t.replace('/', "_")));
            std::fs::write(&file, &rendered).unwrap();
            dry_run_server(&file);
            if t.starts_with("elemento-cloud-controller") {
                for want in [
                    "clusterName: \"prod.example.com\"",
                    "region: \"ovh-gra\"",
                    "image: \"registry.example.com/elemento-cloud-controller-manager:9.9.9\"",
                    "--leader-elect=true",
                ] {
                    assert!(rendered.contains(want), "{t}: no {want}");
                }
            }
        }
    }
    // The stand-in is strict: a function kOps does not define (like the credential functions
    // the old channel used) fails the render.
    let bad = out.path().join("bad.yaml.template");
    std::fs::write(&bad, "password: {{ ELEMENTO_PASSWORD }}\n").unwrap();
    let e = render(&bad, false).expect_err("an undefined function must fail");
    assert!(
        e.contains("ELEMENTO_PASSWORD") && e.contains("not defined"),
        "{e}"
    );
}

#[tokio::test]
async fn helm_install_runs_the_binaries_with_the_charts_service_accounts_and_uninstall_cleans_up() {
    let _s = SERIAL.lock().await;
    let env = testenv();
    let kube = env.admin_client().await;
    let ns = TestNamespace::create(&kube, "pkg-install").await;
    let (ccm_rel, csi_rel) = (unique("ccm"), unique("csi"));
    let mut args = vec![
        "install",
        &ccm_rel as &str,
        "",
        "--namespace",
        &ns.name,
        "--set",
        "clusterName=pkg",
        "--set",
        "replicaCount=2",
    ];
    let ccm_chart = chart("elemento-cloud-controller-manager");
    args[2] = &ccm_chart;
    args.extend_from_slice(CREDS);
    helm(&args);
    let csi_chart = chart("elemento-csi-driver");
    let mut args = vec![
        "install",
        &csi_rel as &str,
        &csi_chart,
        "--namespace",
        &ns.name,
    ];
    args.extend_from_slice(CREDS);
    helm(&args);

    // The CCM, run on the host as the chart's ServiceAccount, initializes a Node.
    let token = service_account_token(
        &kube,
        &ns.name,
        &format!("{ccm_rel}-elemento-cloud-controller-manager"),
    )
    .await;
    ccm_with_token_initializes_a_node(
        &kube,
        &token,
        "pkg-node",
        &["--leader-elect-resource-namespace", &ns.name],
    )
    .await;

    // Everything the charts made is gone after uninstall.
    helm(&["uninstall", &ccm_rel, "--namespace", &ns.name, "--wait"]);
    helm(&["uninstall", &csi_rel, "--namespace", &ns.name, "--wait"]);
    let left = env.kubectl(&["get", "clusterroles,clusterrolebindings,csidrivers,storageclasses,deployments,daemonsets,secrets,configmaps,serviceaccounts,roles,rolebindings", "-A", "-l", &format!("app.kubernetes.io/instance in ({ccm_rel},{csi_rel})"), "-o", "name"]);
    assert!(
        left.trim().is_empty(),
        "left behind after helm uninstall:\n{left}"
    );
}

/// Runs the CCM on the host with `token` (a ServiceAccount's) against a fresh simulator, and
/// checks it initializes a Node: proof that the RBAC behind the token is enough.
async fn ccm_with_token_initializes_a_node(
    kube: &kube::Client,
    token: &str,
    node: &str,
    extra: &[&str],
) {
    let env = testenv();
    let sim = SimProcess::start(
        &format!("vms:\n  - {{id: {node}-vm, name: {node}, template: neon}}\n"),
        &[],
    );
    let tmp = tempfile::tempdir().unwrap();
    let creds = tmp.path().join("creds.yaml");
    std::fs::write(&creds, "username: demo\npassword: demo-password\n").unwrap();
    let cfg = tmp.path().join("cloud-config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "clusterName: pkg\napi:\n  url: {}\n  credentialsFile: {}\n",
            sim.base_url,
            creds.display()
        ),
    )
    .unwrap();
    let _ccm = Process::spawn(
        &format!("ccm-{node}"),
        Command::new(workspace_bin("elemento-cloud-controller-manager"))
            .arg("--kubeconfig")
            .arg(env.token_kubeconfig(token))
            .arg("--cloud-config")
            .arg(&cfg)
            .args([
                "--metrics-bind-address",
                &format!("127.0.0.1:{}", free_port()),
            ])
            .args(extra),
    );
    let nodes: Api<Node> = Api::all(kube.clone());
    let n: Node = serde_json::from_value(json!({"metadata": {"name": node},
        "spec": {"taints": [{"key": UNINITIALIZED, "value": "true", "effect": "NoSchedule"}]}}))
    .unwrap();
    nodes.create(&PostParams::default(), &n).await.unwrap();
    wait_for(
        &format!("{node} to be initialized by the CCM running with the ServiceAccount token"),
        Duration::from_secs(30),
        || async {
            nodes
                .get(node)
                .await
                .ok()
                .filter(|n| !taint_keys(n).iter().any(|k| k == UNINITIALIZED))
        },
    )
    .await;
    env.kubectl_quiet(&["delete", "node", node, "--wait=false"]);
}

/// `api.caBundle` reaches both components the same way: the chart's ConfigMap carries the PEM as
/// `ca.pem` and the config names it; each binary's own config parser accepts the rendered file.
#[test]
fn both_charts_take_a_private_ca_bundle() {
    let pem = "-----BEGIN CERTIFICATE-----\nMIIBprivateCAforTests\n-----END CERTIFICATE-----";
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, pem).unwrap();
    let set_file = format!("api.caBundle={}", ca_file.display());
    for (chart, key) in [
        ("elemento-cloud-controller-manager", "cloud-config.yaml"),
        ("elemento-csi-driver", "driver.yaml"),
    ] {
        let text = elemento_e2e::helm_template(
            chart,
            "ca",
            "kube-system",
            &["templates/configmap.yaml"],
            &["--set-file", &set_file],
        );
        let cm: Value = serde_saphyr::from_str(&text).expect("configmap yaml");
        assert_eq!(
            cm["data"]["ca.pem"].as_str().map(str::trim),
            Some(pem),
            "{chart}: {text}"
        );
        let config = dir.path().join(key);
        std::fs::write(&config, cm["data"][key].as_str().expect("config key")).unwrap();
        let ca_bundle = if key == "driver.yaml" {
            elemento_csi::config::DriverConfig::load(&config)
                .expect("driver config")
                .api
                .ca_bundle
        } else {
            elemento_ccm::config::CloudConfig::load(&config)
                .expect("cloud config")
                .api
                .ca_bundle
        };
        assert_eq!(
            ca_bundle.as_deref(),
            Some(std::path::Path::new("/etc/elemento/config/ca.pem")),
            "{chart}"
        );
    }
}

/// The autoscaler chart's ConfigMap is a configuration the provider loads as the pod would see
/// it: its groups, a user-data template from `userDataTemplates`, the CA bundle, the gRPC files.
#[test]
fn the_provider_loads_the_autoscaler_charts_config() {
    let dir = tempfile::tempdir().unwrap();
    let pem = "-----BEGIN CERTIFICATE-----\nMIIBprivateCAforTests\n-----END CERTIFICATE-----";
    let ca_file = dir.path().join("ca-in.pem");
    std::fs::write(&ca_file, pem).unwrap();
    let example = repo_root().join("examples/local-cluster/values-autoscaler.yaml");
    let template = "#cloud-config\nruncmd: [[kubeadm, join, '{{ api_server }}', --token, '{{ bootstrap_token }}']]\n";
    let template_file = dir.path().join("web-user-data.yaml");
    std::fs::write(&template_file, template).unwrap();
    let text = elemento_e2e::helm_template(
        "elemento-cluster-autoscaler",
        "x",
        "kube-system",
        &["templates/configmap.yaml"],
        &[
            "-f",
            example.to_str().unwrap(),
            "--set",
            "bootstrap.apiServer=10.0.0.10:6443",
            "--set-file",
            &format!("api.caBundle={}", ca_file.display()),
            "--set-file",
            &format!("userDataTemplates.web\\.yaml={}", template_file.display()),
            "--set",
            "nodeGroups[0].userData=web.yaml",
            "--set",
            "nodeGroups[0].name=web",
        ],
    );
    let cm: k8s_openapi::api::core::v1::ConfigMap =
        serde_saphyr::from_str(&text).expect("configmap yaml");
    for (key, value) in cm.data.unwrap_or_default() {
        std::fs::write(dir.path().join(key), value).unwrap();
    }
    let settings = elemento_autoscaler::config::Settings::load(&dir.path().join("autoscaler.yaml"))
        .expect("the provider loads the chart's configuration");
    assert_eq!(settings.cluster_name, "in-cluster");
    assert_eq!(
        settings.api.ca_bundle.as_deref(),
        Some(std::path::Path::new("/etc/elemento/config/ca.pem"))
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ca.pem"))
            .unwrap()
            .trim(),
        pem
    );
    let names: Vec<&str> = settings.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["web"]);
    assert_eq!(settings.groups[0].user_data, template);
    assert_eq!(settings.groups[0].max_size, 2, "from defaults");
    let tls = settings.grpc.tls.as_ref().expect("mTLS by default");
    assert_eq!(
        tls.client_ca,
        std::path::Path::new("/etc/elemento/tls/ca.crt")
    );
    assert_eq!(settings.grpc.listen.to_string(), "127.0.0.1:8086");
}

/// An encrypted StorageClass made by the chart carries the node-stage secret reference the node
/// plugin needs for the passphrase (the schema used to reject it, so NodeStage failed).
#[test]
fn the_chart_makes_an_encrypted_class_with_its_node_stage_secret() {
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        "storageClasses:\n  - name: elemento-encrypted\n    flavour: standard\n    default: true\n    fsType: ext4\n    reclaimPolicy: Delete\n    volumeBindingMode: WaitForFirstConsumer\n    allowVolumeExpansion: true\n    parameters:\n      encrypted: \"true\"\n      csi.storage.k8s.io/node-stage-secret-name: elemento-luks\n      csi.storage.k8s.io/node-stage-secret-namespace: kube-system\n",
    )
    .unwrap();
    let text = elemento_e2e::helm_template(
        "elemento-csi-driver",
        "enc",
        "kube-system",
        &["templates/storageclasses.yaml"],
        &["--values", values.to_str().unwrap()],
    );
    let sc: Value = serde_saphyr::from_str(text.trim_start_matches("---\n")).expect("yaml");
    let p = &sc["parameters"];
    assert_eq!(p["encrypted"], "true", "{text}");
    assert_eq!(
        p["csi.storage.k8s.io/node-stage-secret-name"], "elemento-luks",
        "{text}"
    );
    assert_eq!(
        p["csi.storage.k8s.io/node-stage-secret-namespace"], "kube-system",
        "{text}"
    );
}

/// The documents of a multi-document YAML text, as JSON values.
fn yaml_docs(text: &str) -> Vec<Value> {
    text.split("\n---")
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.starts_with('#'))
        })
        .map(|d| serde_saphyr::from_str::<Value>(d).expect("a YAML document"))
        .collect()
}

/// With every monitoring object on, each chart renders: a Service and a PodMonitor that select
/// its pods by labels they carry and ports they declare, a PrometheusRule holding exactly its
/// files/alerts.yaml, and (CCM) the Grafana dashboard ConfigMap, whose queries cover every
/// family of docs/observability.md. promtool (Prometheus's own checker) accepts the alert files
/// and every dashboard query. Without a scrapable bind address, the chart refuses.
#[test]
fn monitoring_objects_select_the_pods_and_promtool_accepts_the_rules_and_queries() {
    let dir = tempfile::tempdir().unwrap();
    let example = repo_root()
        .join("examples/local-cluster/values-autoscaler.yaml")
        .display()
        .to_string();
    let on = [
        "--set",
        "metrics.service.enabled=true",
        "--set",
        "metrics.podMonitor.enabled=true",
        "--set",
        "metrics.prometheusRule.enabled=true",
    ];
    let charts: [(&str, Vec<&str>); 3] = [
        (
            "elemento-cloud-controller-manager",
            vec![
                "--set",
                "metricsBindAddress=0.0.0.0",
                "--set",
                "metrics.dashboard.enabled=true",
            ],
        ),
        (
            "elemento-csi-driver",
            vec!["--set", "metricsBindAddress=0.0.0.0"],
        ),
        (
            "elemento-cluster-autoscaler",
            vec![
                "-f",
                &example,
                "--set",
                "bootstrap.apiServer=10.0.0.10:6443",
                "--set",
                "provider.metricsBindAddress=0.0.0.0",
            ],
        ),
    ];
    let mut dashboard_exprs: Vec<String> = vec![];
    for (chart, extra) in &charts {
        let mut args = on.to_vec();
        args.extend_from_slice(extra);
        let docs = yaml_docs(&elemento_e2e::helm_template(
            chart,
            "m",
            "monitoring",
            &[],
            &args,
        ));
        let of =
            |kind: &str| -> Vec<&Value> { docs.iter().filter(|d| d["kind"] == kind).collect() };
        let pods: Vec<&Value> = docs
            .iter()
            .filter(|d| d["kind"] == "Deployment" || d["kind"] == "DaemonSet")
            .map(|d| &d["spec"]["template"])
            .collect();
        let selects = |selector: &Value, pod: &Value| {
            selector
                .as_object()
                .is_some_and(|s| s.iter().all(|(k, v)| pod["metadata"]["labels"][k] == *v))
        };
        let declares = |pod: &Value, port: &str| {
            pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                .any(|p| p["name"] == port)
        };
        // The PodMonitor: every workload of the chart, by a port each declares.
        let pm = of("PodMonitor");
        assert_eq!(pm.len(), 1, "{chart}: one PodMonitor");
        for pod in &pods {
            assert!(
                selects(&pm[0]["spec"]["selector"]["matchLabels"], pod),
                "{chart}: the PodMonitor misses a workload: {}",
                pod["metadata"]
            );
        }
        for ep in pm[0]["spec"]["podMetricsEndpoints"]
            .as_array()
            .expect("endpoints")
        {
            let port = ep["port"].as_str().expect("port");
            assert!(
                pods.iter().any(|p| declares(p, port)),
                "{chart}: no pod declares port {port}"
            );
        }
        // The Service: pods it selects declare its target ports.
        let svc = of("Service");
        assert_eq!(svc.len(), 1, "{chart}: one metrics Service");
        let targets: Vec<&Value> = pods
            .iter()
            .copied()
            .filter(|p| selects(&svc[0]["spec"]["selector"], p))
            .collect();
        assert!(!targets.is_empty(), "{chart}: the Service selects no pod");
        for port in svc[0]["spec"]["ports"].as_array().expect("ports") {
            let name = port["targetPort"].as_str().expect("a named target port");
            assert!(
                targets.iter().all(|p| declares(p, name)),
                "{chart}: a selected pod lacks port {name}"
            );
        }
        // The PrometheusRule: exactly the chart's rule file, which promtool accepts.
        let rules_file = repo_root()
            .join("charts")
            .join(chart)
            .join("files/alerts.yaml");
        let file: Value =
            serde_saphyr::from_str(&std::fs::read_to_string(&rules_file).unwrap()).unwrap();
        let pr = of("PrometheusRule");
        assert_eq!(pr.len(), 1, "{chart}: one PrometheusRule");
        assert_eq!(pr[0]["spec"]["groups"], file["groups"], "{chart}");
        promtool(&["check", "rules", rules_file.to_str().unwrap()]);
        // The dashboard (CCM): the sidecar's label and valid JSON.
        for cm in of("ConfigMap").into_iter().filter(|c| {
            c["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("-dashboard"))
        }) {
            assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
            let json: Value = serde_json::from_str(
                cm["data"]["elemento-cloud.json"]
                    .as_str()
                    .expect("dashboard"),
            )
            .expect("the dashboard is JSON");
            for panel in json["panels"].as_array().expect("panels") {
                for t in panel["targets"].as_array().into_iter().flatten() {
                    dashboard_exprs.push(t["expr"].as_str().expect("expr").to_string());
                }
            }
        }
    }
    // Every documented family is on the dashboard, and every query parses (as recording rules,
    // with Grafana's variables given values).
    let exprs = dashboard_exprs.join("\n");
    for f in elemento_e2e::metrics::documented() {
        let base = f.name.strip_suffix("_total").unwrap_or(&f.name);
        assert!(exprs.contains(base), "the dashboard never shows {}", f.name);
    }
    let rules: Vec<Value> = dashboard_exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            json!({"record": format!("dashboard:query{i}"),
                   "expr": e.replace("$__rate_interval", "5m").replace("$namespace", ".*")})
        })
        .collect();
    let file = dir.path().join("dashboard-queries.json");
    std::fs::write(
        &file,
        serde_json::to_string(&json!({"groups": [{"name": "dashboard", "rules": rules}]})).unwrap(),
    )
    .unwrap();
    promtool(&["check", "rules", file.to_str().unwrap()]);

    // Monitoring a loopback listener is refused.
    let out = Command::new(testenv().tool("helm"))
        .args(["template", "m"])
        .arg(chart("elemento-cloud-controller-manager"))
        .args(["--kube-version", elemento_e2e::kube_version()])
        .args([
            "--set",
            "credentials.token=t",
            "--set",
            "metrics.podMonitor.enabled=true",
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("set metricsBindAddress"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn promtool(args: &[&str]) {
    let out = Command::new(testenv().tool("promtool"))
        .args(args)
        .output()
        .expect("promtool (tests/env/install.sh promtool)");
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One version pin for every component: each chart's appVersion (the image tag it pulls by
/// default) is the workspace version, the tag `images/build.sh` and `images/push.sh` give.
#[test]
fn every_chart_pulls_the_workspace_version() {
    let cargo = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    let workspace: Value = toml_version(&cargo);
    for c in [
        "elemento-cloud-controller-manager",
        "elemento-csi-driver",
        "elemento-cluster-autoscaler",
    ] {
        let chart: Value = serde_saphyr::from_str(
            &std::fs::read_to_string(repo_root().join("charts").join(c).join("Chart.yaml"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(chart["appVersion"], workspace, "{c}: appVersion");
    }
    for script in ["images/build.sh", "images/push.sh"] {
        let text = std::fs::read_to_string(repo_root().join(script)).unwrap();
        assert!(
            text.contains(r#"version=$(awk -F'"' '/^version/ {print $2; exit}'"#),
            "{script} must tag with the workspace version"
        );
    }
}

/// `version = "x"` of Cargo.toml's first `version` line (the workspace package's).
fn toml_version(cargo: &str) -> Value {
    let line = cargo
        .lines()
        .find(|l| l.starts_with("version"))
        .expect("a version line");
    Value::String(line.split('"').nth(1).expect("quoted version").to_string())
}
