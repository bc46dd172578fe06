//! The cluster-autoscaler provider with the real cluster-autoscaler (built from
//! ../shared/tools/cluster-autoscaler by tests/env/install.sh), kube-scheduler, our CCM and KWOK,
//! on a control plane of its own. One test walks the whole story, each step asserted:
//! a scale-up that fails over from a provider refusing registers to the next, Nodes initialized by
//! the CCM, pods Running, user-data free of Elemento credentials with a join token that works and
//! is then deleted; a scale-down to zero that leaves no VM, volume, Node or token; a provider
//! killed mid-creation that leaves no duplicate VM and no orphaned volume; mTLS that refuses
//! clients without the right certificate. The numbers the issue asks for are printed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ca_grpc::v1::cloud_provider_client::CloudProviderClient;
use ca_grpc::v1::{NodeGroupIncreaseSizeRequest, NodeGroupsRequest, RefreshRequest};
use elemento_e2e::autoscaler::{self as tier, CLUSTER, ControlPlane, OVH_GROUP, SCW_GROUP};
use elemento_e2e::sim::{Method, SimProcess};
use elemento_e2e::{free_port, leaked_secrets, wait_for};
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const NS: &str = "default";

async fn grpc(
    port: u16,
    ca: &std::path::Path,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<CloudProviderClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .domain_name("localhost")
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).expect("ca")));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(cert).expect("cert"),
            std::fs::read(key).expect("key"),
        ));
    }
    let channel = Channel::from_shared(format!("https://localhost:{port}"))
        .expect("uri")
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(CloudProviderClient::new(channel))
}

/// Our VMs in the simulator: name → group.
async fn our_vms(sim: &SimProcess) -> Vec<(String, String)> {
    sim.state().await["vms"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| {
            let name = v["name"].as_str()?.to_string();
            let group = [OVH_GROUP, SCW_GROUP]
                .into_iter()
                .find(|g| name.starts_with(&format!("{CLUSTER}-{g}-")))?;
            Some((name, group.to_string()))
        })
        .collect()
}

/// Volumes named after one of our VMs, and the VM names that exist.
async fn our_volumes(sim: &SimProcess) -> (Vec<String>, Vec<String>) {
    let state = sim.state().await;
    let vms: Vec<String> = state["vms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str().map(String::from))
        .collect();
    let volumes = state["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str().map(String::from))
        .filter(|n| n.starts_with(&format!("{CLUSTER}-")))
        .collect();
    (volumes, vms)
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "burst"}},
        "spec": {"containers": [{"name": "c", "image": "registry.example/none:1",
            "resources": {"requests": {"cpu": "800m", "memory": "256Mi"}}}]}
    }))
    .expect("pod")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_cluster_autoscaler_scales_elemento_node_groups() {
    let cp = ControlPlane::up();
    let env = cp.env.clone();
    let admin = env.admin_client().await;
    let certs = tier::Certs::make(&cp.path("certs"));

    // The simulator: ovh is cheaper but refuses registers (its quota, which placement does not
    // see); every call takes 50 ms.
    let sim = SimProcess::start(&tier::scenario(true, 1000), &[]);
    tier::set_latency(&sim, "*", 50).await;
    let creds = cp.path("creds.yaml");
    std::fs::write(&creds, "username: demo\npassword: demo-password\n").expect("creds");
    let cloud_config = cp.path("cloud-config.yaml");
    std::fs::write(
        &cloud_config,
        format!(
            "clusterName: {CLUSTER}\napi: {{url: \"{}\", credentialsFile: \"{}\"}}\n",
            sim.base_url,
            creds.display()
        ),
    )
    .expect("cloud-config");
    let _ccm = tier::ccm(&env, &cloud_config);
    let grpc_port = free_port();
    let provider_config = cp.path("provider.yaml");
    std::fs::write(
        &provider_config,
        tier::provider_config(&sim, &creds, grpc_port, &cp.api_server(), &certs),
    )
    .expect("provider config");
    let provider_metrics = free_port();
    let mut provider = tier::provider(&env, &provider_config, provider_metrics);
    let _kwok = tier::kwok(&env);
    let ca_config = cp.path("ca-cloud-config.yaml");
    std::fs::write(
        &ca_config,
        format!(
            "address: \"localhost:{grpc_port}\"\ncert: \"{}\"\nkey: \"{}\"\ncacert: \"{}\"\ngrpc_timeout: 5s\n",
            certs.client_cert.display(),
            certs.client_key.display(),
            certs.ca.display()
        ),
    )
    .expect("ca cloud-config");

    // mTLS: the autoscaler's certificate is accepted; none, or another CA's, is refused.
    let mut ok = wait_for(
        "the provider serving gRPC",
        Duration::from_secs(60),
        || async {
            grpc(
                grpc_port,
                &certs.ca,
                Some((&certs.client_cert, &certs.client_key)),
            )
            .await
            .ok()
        },
    )
    .await;
    let groups = ok
        .node_groups(NodeGroupsRequest {})
        .await
        .expect("NodeGroups")
        .into_inner();
    assert_eq!(groups.node_groups.len(), 2);
    for (what, identity) in [
        ("no client certificate", None),
        (
            "a certificate of another CA",
            Some((certs.rogue_cert.as_path(), certs.rogue_key.as_path())),
        ),
    ] {
        let refused = match grpc(grpc_port, &certs.ca, identity).await {
            Err(_) => true,
            Ok(mut c) => c.node_groups(NodeGroupsRequest {}).await.is_err(),
        };
        assert!(refused, "a client with {what} was served");
    }

    // Joiner: cloud-init + kubelet stand-in.
    let joined = Arc::new(Mutex::new(tier::Joined::default()));
    let joiner = {
        let (env, joined) = (env.clone(), joined.clone());
        let sim_url = sim.base_url.clone();
        let admin = admin.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = tier::join_once(&sim_url, &admin, &env, &joined).await {
                    eprintln!("joiner: {e:#}");
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let mut ca = tier::cluster_autoscaler(&env, &ca_config);

    // ---- scale-up: three pods of 800m, two fit on a neon node.
    sim.admin(Method::DELETE, "/_sim/counters", None).await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NS);
    let t0 = Instant::now();
    for i in 0..3 {
        pods.create(&PostParams::default(), &pod(&format!("burst-{i}")))
            .await
            .expect("pod");
    }
    let running = |pods: Api<Pod>| async move {
        let l = pods
            .list(&ListParams::default().labels("app=burst"))
            .await
            .ok()?;
        let n = l
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        (n == 3).then_some(l)
    };
    let list = wait_for(
        "3 pods Running on new Nodes",
        Duration::from_secs(300),
        || running(pods.clone()),
    )
    .await;
    let scale_up = t0.elapsed();
    let calls_up = tier::calls(&sim).await;

    // Failover: ovh (cheaper, chosen first by the price expander) refused its registers; the
    // failed creations were reported and cleared, and the Nodes came from scaleway.
    let vms = our_vms(&sim).await;
    assert!(!vms.is_empty());
    assert!(
        vms.iter().all(|(_, g)| g == SCW_GROUP),
        "only scaleway VMs exist: {vms:?}"
    );
    let register_404s = sim
        .admin(Method::GET, "/_sim/calls?since=0", None)
        .await
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["route"] == "vm.register" && c["status"] == 404)
        .count();
    assert!(register_404s > 0, "ovh's registers were tried and refused");
    let ca_log = ca.logs();
    assert!(
        ca_log.contains(OVH_GROUP) && ca_log.to_lowercase().contains("backoff"),
        "the autoscaler backed off {OVH_GROUP}"
    );
    let (volumes, names) = our_volumes(&sim).await;
    assert!(
        volumes
            .iter()
            .all(|v| names.iter().any(|n| v.starts_with(n.as_str()))),
        "the failed ovh builds were rolled back: {volumes:?}"
    );

    // The Nodes: initialized by our CCM (providerID, labels), scheduled on.
    let nodes: Api<Node> = Api::all(admin.clone());
    let node_names: std::collections::BTreeSet<String> = list
        .items
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    for n in &node_names {
        let node = nodes.get(n).await.expect("node");
        let view = elemento_api::node::NodeView::from_node(&node);
        assert!(!view.is_uninitialized(), "{n} initialized by the CCM");
        assert!(
            view.provider_id
                .as_deref()
                .is_some_and(|p| p.starts_with("elemento://"))
        );
        assert_eq!(
            view.labels
                .get(elemento_api::topology::LABEL_ZONE)
                .map(String::as_str),
            Some("scaleway")
        );
        assert_eq!(
            view.labels
                .get(elemento_api::topology::LABEL_NODE_GROUP)
                .map(String::as_str),
            Some(SCW_GROUP)
        );
    }

    // User-data: the join token worked (the API server knew it as a bootstrap token), nothing
    // else secret is in it, and the token is deleted once the Node has registered.
    {
        let j = joined.lock().expect("joined").clone();
        assert!(!j.user_data.is_empty());
        for (vm, text) in &j.user_data {
            assert!(
                leaked_secrets(text).is_empty(),
                "{vm}'s user-data holds a credential"
            );
            assert!(
                !text.contains("password") && !text.contains("credentials"),
                "{vm}: {text}"
            );
            let user = &j.authenticated_as[vm];
            assert!(
                user.starts_with("system:bootstrap:"),
                "{vm}'s token authenticated as {user:?}"
            );
        }
    }
    let stored: Vec<String> = sim.state().await["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            v["cloud_init"]["files"]["user-data"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert!(!stored.is_empty());
    for text in &stored {
        assert!(
            leaked_secrets(text).is_empty(),
            "a stored user-data holds a credential"
        );
    }
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "kube-system");
    wait_for(
        "join tokens deleted once the Nodes registered",
        Duration::from_secs(90),
        || {
            let secrets = secrets.clone();
            async move {
                let l = secrets
                    .list(&ListParams::default().labels("autoscaler.elemento.cloud/vm-name"))
                    .await
                    .ok()?;
                l.items.is_empty().then_some(())
            }
        },
    )
    .await;

    // ---- scale-down to zero.
    let t1 = Instant::now();
    pods.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("app=burst"),
    )
    .await
    .expect("delete pods");
    let polls = std::sync::atomic::AtomicU32::new(0);
    wait_for(
        "every VM, volume and Node gone",
        Duration::from_secs(300),
        || {
            let (sim, nodes, polls) = (&sim, nodes.clone(), &polls);
            async move {
                let (volumes, _) = our_volumes(sim).await;
                let vms = our_vms(sim).await;
                let left = nodes.list(&ListParams::default()).await.ok()?.items;
                // What is left, every 10 s, for a failure's diagnosis.
                if polls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 100 == 99 {
                    let views: Vec<_> = left
                        .iter()
                        .map(|n| {
                            let v = elemento_api::node::NodeView::from_node(n);
                            (v.name, v.ready, v.taints.len())
                        })
                        .collect();
                    eprintln!("scale-down: VMs {vms:?}, volumes {volumes:?}, Nodes {views:?}");
                }
                (vms.is_empty() && volumes.is_empty() && left.is_empty()).then_some(())
            }
        },
    )
    .await;
    let scale_down = t1.elapsed();

    // ---- the provider killed mid-creation: no duplicate VM, no orphaned volume.
    ca.kill();
    sim.admin(Method::DELETE, "/_sim/faults", None).await;
    sim.admin(
        Method::PUT,
        "/_sim/faults/volume.cloudinit.metadata",
        Some(json!({"latency_ms": 1500})),
    )
    .await;
    let mut c = grpc(
        grpc_port,
        &certs.ca,
        Some((&certs.client_cert, &certs.client_key)),
    )
    .await
    .expect("client");
    c.refresh(RefreshRequest {}).await.expect("Refresh");
    c.node_group_increase_size(NodeGroupIncreaseSizeRequest {
        delta: 2,
        id: SCW_GROUP.into(),
    })
    .await
    .expect("IncreaseSize");
    wait_for(
        "a build under way (a boot volume made)",
        Duration::from_secs(30),
        || async {
            let (volumes, _) = our_volumes(&sim).await;
            volumes.iter().any(|v| v.ends_with("-boot")).then_some(())
        },
    )
    .await;
    let provider_rss = tier::peak_rss_mb(provider.pid());
    provider.kill();
    sim.admin(Method::DELETE, "/_sim/faults", None).await;
    let _provider2 = tier::provider(&env, &provider_config, free_port());
    wait_for(
        "leftovers of the killed builds swept",
        Duration::from_secs(120),
        || async {
            let (volumes, names) = our_volumes(&sim).await;
            let orphans: Vec<&String> = volumes
                .iter()
                .filter(|v| !names.iter().any(|n| v.starts_with(&format!("{n}-"))))
                .collect();
            orphans.is_empty().then_some(())
        },
    )
    .await;
    let vms = our_vms(&sim).await;
    let mut unique: Vec<&String> = vms.iter().map(|(n, _)| n).collect();
    unique.dedup();
    assert_eq!(unique.len(), vms.len(), "no VM registered twice: {vms:?}");
    assert!(vms.len() <= 2, "at most the 2 asked for: {vms:?}");

    joiner.abort();
    let api_calls: u64 = calls_up.values().sum();
    let registers = calls_up.get("vm.register").copied().unwrap_or(0);
    eprintln!(
        "autoscaler e2e (50 ms per Elemento call): pending pods to all Running on new Nodes {:.1} s (includes the failover from ovh); scale to zero to the last VM, volume and Node gone {:.1} s; Elemento calls during the scale-up {api_calls} ({registers} registers) {calls_up:?}; provider peak RSS {provider_rss:.1} MB",
        scale_up.as_secs_f64(),
        scale_down.as_secs_f64(),
    );
}
