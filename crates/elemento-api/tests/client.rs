//! The API client against a live simulator (in the client crate; the simulator is a dev-dependency): every call in docs/meson-api.md, retries, re-login,
//! wire variants and persistence.

use std::time::{Duration, Instant};

use elemento_api::types::*;
use elemento_api::{
    ApiError, Auth, Client, ClientConfig, Credentials, Endpoints, RetryPolicy, Secret,
};
use elemento_sim::scenario::{NetworkSeed, Scenario, VmSeed};
use elemento_sim::{SimHandle, SimOptions};
use serde_json::Value;

fn scenario() -> Scenario {
    Scenario {
        networks: vec![NetworkSeed {
            id: Some("net-1".into()),
            name: "lan".into(),
            cidr: "10.0.0.0/24".into(),
            private: true,
        }],
        vms: vec![
            VmSeed {
                id: Some("vm-a".into()),
                name: "node-a".into(),
                template: Some("neon".into()),
                ipv4: Some("10.0.0.11".parse().unwrap()),
                ..Default::default()
            },
            VmSeed {
                id: Some("vm-b".into()),
                name: "node-b".into(),
                template: Some("argon2".into()),
                provider: Some("ovh".into()),
                region: Some("eu-west-par".into()),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

async fn sim_with(s: Scenario) -> SimHandle {
    elemento_sim::start(SimOptions {
        scenario: s,
        fault_seed: Some(42),
        ..Default::default()
    })
    .await
    .unwrap()
}

fn config(sim: &SimHandle) -> ClientConfig {
    let mut c = ClientConfig::new(Endpoints::single(&sim.base_url()).unwrap());
    c.auth = Auth {
        credentials: Some(Credentials {
            username: "demo".into(),
            password: Secret::new("demo-password"),
            org: None,
        }),
        bearer_token: None,
    };
    c.timeout = Duration::from_secs(5);
    c.retry = RetryPolicy {
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
        ..Default::default()
    };
    c
}

fn client(sim: &SimHandle) -> Client {
    Client::new(config(sim)).unwrap()
}

async fn admin(sim: &SimHandle, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let c = reqwest::Client::new();
    let mut r = c.request(method, format!("{}{path}", sim.base_url()));
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap_or(Value::Null)
}

async fn count(sim: &SimHandle, route: &str) -> u64 {
    let c = admin(sim, reqwest::Method::GET, "/_sim/counters", None).await;
    c.get(route).and_then(|r| r["total"].as_u64()).unwrap_or(0)
}

async fn fault(sim: &SimHandle, route: &str, rule: Value) {
    admin(
        sim,
        reqwest::Method::PUT,
        &format!("/_sim/faults/{route}"),
        Some(rule),
    )
    .await;
}

#[tokio::test]
async fn auth_login_status_logout_and_wrong_password() {
    let sim = sim_with(scenario()).await;
    let c = client(&sim);
    assert!(!c.auth_status().await.unwrap().authenticated);
    c.login().await.unwrap();
    let st = c.auth_status().await.unwrap();
    assert!(st.authenticated);
    assert_eq!(st.username.as_deref(), Some("demo"));
    c.logout().await.unwrap();
    assert!(!c.auth_status().await.unwrap().authenticated);

    let mut bad = config(&sim);
    bad.auth.credentials.as_mut().unwrap().password = Secret::new("wrong");
    let e = Client::new(bad).unwrap().list_vms().await.unwrap_err();
    assert!(matches!(e, ApiError::Unauthorized { .. }), "{e:?}");
    assert!(
        !e.to_string().contains("wrong"),
        "no password in errors: {e}"
    );
}

#[tokio::test]
async fn compute_calls() {
    let sim = sim_with(scenario()).await;
    let c = client(&sim);
    let vms = c.list_vms().await.unwrap();
    assert_eq!(vms.len(), 2);
    let a = vms.iter().find(|v| v.id == "vm-a").unwrap();
    assert_eq!(
        (a.name.as_str(), a.slots, a.ram_mib, a.gpus),
        ("node-a", 2, 2048, 0)
    );
    assert_eq!(a.ipv4, Some("10.0.0.11".parse().unwrap()));
    assert_eq!(a.power, PowerState::Running);
    let b = vms.iter().find(|v| v.id == "vm-b").unwrap();
    assert_eq!((b.slots, b.ram_mib, b.gpus), (4, 4096, 2));
    assert_eq!(
        (b.provider.as_deref(), b.region.as_deref()),
        (Some("ovh"), Some("eu-west-par"))
    );

    let t = c.templates().await.unwrap();
    let names: Vec<_> = t.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["Helium", "Neon", "Argon", "Argon 2", "Kripton"]);
    assert_eq!(
        (t[4].name.as_str(), t[4].slots, t[4].ram_mib, t[4].gpus),
        ("Kripton", 8, 8192, 1)
    );
    assert_eq!(t[4].flags, ["sse2", "avx2"], "the CPU part a Spec copies");
    assert_eq!(t[4].pci[0].quantity, 1);

    let new = c
        .register_vm(&RegisterVmRequest::new("node-c", 1, 512))
        .await
        .unwrap()
        .expect("register echoes the VM");
    assert_eq!(
        (new.name.as_str(), new.slots, new.ram_mib),
        ("node-c", 1, 512)
    );
    c.stop_vm(&new.id, false).await.unwrap();
    let power = |vms: Vec<Vm>| vms.into_iter().find(|v| v.id == new.id).map(|v| v.power);
    assert_eq!(
        power(c.list_vms().await.unwrap()),
        Some(PowerState::ShutOff)
    );
    c.start_vm(&new.id).await.unwrap();
    c.reboot_vm(&new.id).await.unwrap();
    assert_eq!(
        power(c.list_vms().await.unwrap()),
        Some(PowerState::Running)
    );
    assert!(c.unregister_vm(&new.id).await.unwrap());
    assert!(
        !c.unregister_vm(&new.id).await.unwrap(),
        "already gone is not an error"
    );
    assert!(matches!(
        c.start_vm("nope").await,
        Err(ApiError::NotFound { .. })
    ));
}

#[tokio::test]
async fn storage_calls_and_attachments() {
    let sim = sim_with(scenario()).await;
    let c = client(&sim);
    assert!(
        c.list_volumes().await.unwrap().is_empty(),
        "204 decodes as an empty list"
    );
    assert_eq!(c.can_create_volume(1 << 30).await.unwrap(), 1);
    let attrs = VolumeAttributes {
        format: "qcow2".into(),
        ..Default::default()
    };
    let v = c.create_volume("pvc-1", 1 << 30, &attrs).await.unwrap();
    assert_eq!(v.size_bytes, 1_125_000_000, "1 GiB rounds up to 1.125 GB");
    assert_eq!(v.format.as_deref(), Some("qcow2"));
    let info = c.volume_info(&v.id).await.unwrap();
    assert_eq!(
        (info.name.as_str(), info.size_bytes, info.bus.as_deref()),
        ("pvc-1", 1_125_000_000, Some("virtio"))
    );
    assert_eq!(
        c.find_volume_by_name("pvc-1").await.unwrap().map(|x| x.id),
        Some(v.id.clone())
    );

    let at = c.attach_volume("vm-a", &v.id).await.unwrap();
    assert_eq!(at.serial.as_deref(), Some(&v.id[..20]));
    assert!(at.device.is_some());
    c.attach_volume("vm-a", &v.id).await.unwrap(); // idempotent
    let e = c.attach_volume("vm-b", &v.id).await.unwrap_err();
    assert!(
        matches!(e, ApiError::BadRequest { status: 409, .. }),
        "{e:?}"
    );
    let vms = c.list_vms().await.unwrap();
    assert_eq!(
        vms.iter().find(|x| x.id == "vm-a").unwrap().volume_ids,
        vec![v.id.clone()]
    );
    assert!(matches!(
        c.destroy_volume(&v.id).await,
        Err(ApiError::BadRequest { status: 409, .. })
    ));

    assert_eq!(
        c.resize_volume(&v.id, 2_000_000_000).await.unwrap(),
        2_000_000_000
    );
    assert_eq!(
        c.volume_info(&v.id).await.unwrap().size_bytes,
        2_000_000_000
    );
    let e = c.resize_volume(&v.id, 1_000_000_000).await.unwrap_err();
    assert!(e.to_string().contains("NotShrinkable"), "{e}");

    assert!(c.detach_volume("vm-a", &v.id).await.unwrap());
    assert!(
        !c.detach_volume("vm-a", &v.id).await.unwrap(),
        "not attached is fine"
    );
    assert!(c.destroy_volume(&v.id).await.unwrap());
    assert!(
        !c.destroy_volume(&v.id).await.unwrap(),
        "already gone is fine"
    );
    assert!(matches!(
        c.volume_info(&v.id).await,
        Err(ApiError::NotFound { .. })
    ));
}

#[tokio::test]
async fn wire_variants_gb_sizes_and_wrapped_info() {
    let mut s = scenario();
    s.wire.volume_size_gb = true;
    s.wire.volume_info_wrapped = true;
    let sim = sim_with(s).await;
    let c = client(&sim);
    let v = c
        .create_volume("x", 3_000_000_000, &VolumeAttributes::default())
        .await
        .unwrap();
    assert_eq!(v.size_bytes, 3_000_000_000);
    assert_eq!(
        c.volume_info(&v.id).await.unwrap().size_bytes,
        3_000_000_000
    );
    assert_eq!(c.list_volumes().await.unwrap()[0].size_bytes, 3_000_000_000);
}

#[tokio::test]
async fn limits_are_typed() {
    let mut s = scenario();
    s.limits.max_vms = 2;
    s.limits.max_storage_gb = 1.0;
    let sim = sim_with(s).await;
    let c = client(&sim);
    let e = c
        .register_vm(&RegisterVmRequest::new("x", 1, 512))
        .await
        .unwrap_err();
    assert!(matches!(e, ApiError::LimitReached { .. }), "{e:?}");
    assert_eq!(c.can_create_volume(2_000_000_000).await.unwrap(), 0);
    let e = c
        .create_volume("big", 2_000_000_000, &VolumeAttributes::default())
        .await
        .unwrap_err();
    assert!(matches!(e, ApiError::LimitReached { .. }), "{e:?}");
}

#[tokio::test]
async fn network_calls() {
    let sim = sim_with(scenario()).await;
    let c = client(&sim);
    let n = c.list_networks().await.unwrap();
    assert_eq!(n.len(), 1);
    assert_eq!(
        (n[0].id.as_str(), n[0].cidr.as_deref()),
        ("net-1", Some("10.0.0.0/24"))
    );
    assert_eq!(c.network_info("net-1").await.unwrap().name, "lan");
    assert!(matches!(
        c.network_info("nope").await,
        Err(ApiError::NotFound { .. })
    ));
}

fn lb_spec(targets: &[&str]) -> LoadBalancerSpec {
    LoadBalancerSpec {
        name: "k8s-svc-1".into(),
        listeners: vec![LbListener {
            protocol: LbProtocol::Tcp,
            port: 80,
            target_port: 30080,
        }],
        targets: targets.iter().map(|s| s.to_string()).collect(),
        health_check: LbHealthCheck {
            protocol: HealthCheckProtocol::Tcp,
            port: 0,
            path: None,
            interval_seconds: 5,
            timeout_seconds: 3,
            retries: 3,
        },
        algorithm: LbAlgorithm::RoundRobin,
        proxy_protocol: false,
        private: false,
        hostname: None,
        owner: None,
        allowed_sources: vec![],
        target_address: Default::default(),
    }
}

#[tokio::test]
async fn load_balancer_calls() {
    let sim = sim_with(scenario()).await;
    let c = client(&sim);
    let lb = c.create_load_balancer(&lb_spec(&["vm-a"])).await.unwrap();
    let ip = lb.ip.clone().expect("an address from the pool");
    assert_eq!(
        c.load_balancer(&lb.id).await.unwrap().spec.targets,
        ["vm-a"]
    );
    let mut spec = lb_spec(&["vm-a", "vm-b"]);
    spec.listeners.push(LbListener {
        protocol: LbProtocol::Udp,
        port: 53,
        target_port: 30053,
    });
    let up = c.update_load_balancer(&lb.id, &spec).await.unwrap();
    assert_eq!(
        up.ip.as_deref(),
        Some(ip.as_str()),
        "update keeps the address"
    );
    assert_eq!(up.spec.listeners.len(), 2);
    let list = c.list_load_balancers().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].spec, spec);
    let e = c
        .create_load_balancer(&lb_spec(&["ghost"]))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ApiError::BadRequest { status: 400, .. }),
        "{e:?}"
    );
    assert!(c.delete_load_balancer(&lb.id).await.unwrap());
    assert!(!c.delete_load_balancer(&lb.id).await.unwrap());
    assert!(matches!(
        c.load_balancer(&lb.id).await,
        Err(ApiError::NotFound { .. })
    ));
}

/// The simulator without our update route (what every Elemento source shows, §8.1): the update
/// answers 404 while the LB is still there; `cancreate` says no once the limit is reached.
#[tokio::test]
async fn load_balancers_without_update_and_at_capacity() {
    let mut s = scenario();
    s.wire.lb_update = false;
    s.limits.max_load_balancers = 1;
    let sim = sim_with(s).await;
    let c = client(&sim);
    let spec = lb_spec(&["vm-a"]);
    assert!(c.can_create_load_balancer(&spec).await.unwrap().possible());
    let lb = c.create_load_balancer(&spec).await.unwrap();
    let e = c
        .update_load_balancer(&lb.id, &lb_spec(&["vm-a", "vm-b"]))
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    assert_eq!(
        c.load_balancer(&lb.id).await.unwrap().spec.targets,
        ["vm-a"]
    );
    let full = c.can_create_load_balancer(&spec).await.unwrap();
    assert!(!full.possible(), "{full:?}");
    assert_eq!(full.nservers, Some(0));
    let e = c.create_load_balancer(&spec).await.unwrap_err();
    assert!(matches!(e, ApiError::NotFound { .. }), "{e:?}");
}

#[tokio::test]
async fn idempotent_calls_retry_on_5xx_and_create_does_not() {
    let sim = sim_with(scenario()).await;
    let c = client(&sim);
    c.login().await.unwrap();
    fault(
        &sim,
        "vm.status",
        serde_json::json!({"error_rate": 1.0, "status": 503, "max_faults": 2}),
    )
    .await;
    assert_eq!(c.list_vms().await.unwrap().len(), 2);
    assert_eq!(
        count(&sim, "vm.status").await,
        3,
        "two injected 503s, then success"
    );

    fault(
        &sim,
        "volume.create",
        serde_json::json!({"error_rate": 1.0, "status": 502, "max_faults": 1}),
    )
    .await;
    let e = c
        .create_volume("v", 1_000_000_000, &VolumeAttributes::default())
        .await
        .unwrap_err();
    assert!(matches!(e, ApiError::Unavailable { .. }), "{e:?}");
    assert_eq!(
        count(&sim, "volume.create").await,
        1,
        "a create is never blindly resent"
    );

    fault(
        &sim,
        "vm.status",
        serde_json::json!({"error_rate": 1.0, "status": 500}),
    )
    .await;
    assert!(matches!(
        c.list_vms().await,
        Err(ApiError::Unavailable { .. })
    ));
    assert_eq!(
        count(&sim, "vm.status").await,
        3 + 4,
        "gives up after max_attempts"
    );
}

#[tokio::test]
async fn rate_limits_honour_retry_after_even_for_creates() {
    let sim = sim_with(scenario()).await;
    let c = client(&sim);
    c.login().await.unwrap();
    fault(&sim, "volume.create", serde_json::json!({"error_rate": 1.0, "status": 429, "retry_after_seconds": 1, "max_faults": 1})).await;
    let t = Instant::now();
    c.create_volume("v", 1_000_000_000, &VolumeAttributes::default())
        .await
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "waited for Retry-After"
    );
    assert_eq!(
        count(&sim, "volume.create").await,
        2,
        "a 429 was not processed, so it is resent"
    );
    assert_eq!(c.list_volumes().await.unwrap().len(), 1, "no duplicate");
}

#[tokio::test]
async fn dropped_answer_to_a_create_is_not_resent() {
    let sim = sim_with(scenario()).await;
    let c = client(&sim);
    c.login().await.unwrap();
    fault(
        &sim,
        "volume.create",
        serde_json::json!({"drop_rate": 1.0, "max_faults": 1}),
    )
    .await;
    let e = c
        .create_volume("lost", 1_000_000_000, &VolumeAttributes::default())
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert_eq!(count(&sim, "volume.create").await, 1);
    // The volume was made; the look-up-before-create pattern finds it.
    assert!(c.find_volume_by_name("lost").await.unwrap().is_some());
}

#[tokio::test]
async fn timeouts_are_typed_and_retried_for_idempotent_calls() {
    let sim = sim_with(scenario()).await;
    let mut cfg = config(&sim);
    cfg.timeout = Duration::from_millis(200);
    cfg.retry.max_attempts = 2;
    let c = Client::new(cfg).unwrap();
    c.login().await.unwrap();
    fault(&sim, "vm.status", serde_json::json!({"latency_ms": 1000})).await;
    let e = c.list_vms().await.unwrap_err();
    assert!(matches!(e, ApiError::Timeout { .. }), "{e:?}");
    assert_eq!(count(&sim, "vm.status").await, 2);
}

#[tokio::test]
async fn expired_session_logs_in_once_for_many_concurrent_calls() {
    let sim = sim_with(scenario()).await;
    let c = client(&sim);
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.list_vms().await })
        })
        .collect();
    for h in calls {
        assert_eq!(h.await.unwrap().unwrap().len(), 2);
    }
    assert_eq!(
        count(&sim, "auth.login").await,
        1,
        "one login for ten concurrent 401s"
    );
    admin(&sim, reqwest::Method::POST, "/_sim/session/expire", None).await;
    c.list_vms().await.unwrap();
    assert_eq!(count(&sim, "auth.login").await, 2);
}

#[tokio::test]
async fn rotated_credentials_are_used_on_next_login() {
    let sim = sim_with(scenario()).await;
    let mut cfg = config(&sim);
    cfg.auth.credentials.as_mut().unwrap().password = Secret::new("old");
    let c = Client::new(cfg).unwrap();
    assert!(matches!(
        c.list_vms().await,
        Err(ApiError::Unauthorized { .. })
    ));
    c.set_auth(config(&sim).auth);
    assert_eq!(c.list_vms().await.unwrap().len(), 2);
}

#[tokio::test]
async fn bearer_token_needs_no_login() {
    let mut s = scenario();
    s.auth.token = Some("meson-token".into());
    let sim = sim_with(s).await;
    let mut cfg = config(&sim);
    cfg.auth = Auth {
        credentials: None,
        bearer_token: Some(Secret::new("meson-token")),
    };
    assert_eq!(Client::new(cfg).unwrap().list_vms().await.unwrap().len(), 2);
    assert_eq!(count(&sim, "auth.login").await, 0);
}

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let opts = SimOptions {
        scenario: scenario(),
        state_file: Some(state.clone()),
        ..Default::default()
    };
    let sim = elemento_sim::start(opts.clone()).await.unwrap();
    let c = client(&sim);
    let vol = c
        .create_volume("keep", 1_000_000_000, &VolumeAttributes::default())
        .await
        .unwrap();
    c.attach_volume("vm-a", &vol.id).await.unwrap();
    let lb = c.create_load_balancer(&lb_spec(&["vm-a"])).await.unwrap();
    let vm = c
        .register_vm(&RegisterVmRequest::new("extra", 1, 512))
        .await
        .unwrap()
        .unwrap();
    sim.shutdown().await;

    let sim = elemento_sim::start(opts).await.unwrap();
    let c = client(&sim);
    let vms = c.list_vms().await.unwrap();
    assert!(vms.iter().any(|v| v.id == vm.id));
    assert_eq!(
        vms.iter().find(|v| v.id == "vm-a").unwrap().volume_ids,
        vec![vol.id.clone()]
    );
    assert_eq!(c.volume_info(&vol.id).await.unwrap().name, "keep");
    assert_eq!(c.load_balancer(&lb.id).await.unwrap().ip, lb.ip);
}

#[tokio::test]
async fn every_documented_route_is_served() {
    // Each route of elemento_api::routes answers something other than 404-for-unknown-path.
    let sim = sim_with(scenario()).await;
    let http = reqwest::Client::new();
    for r in elemento_api::routes::ALL {
        let resp = http
            .request(r.method.clone(), format!("{}{}", sim.base_url(), r.path))
            .send()
            .await
            .unwrap();
        let body = resp.text().await.unwrap_or_default();
        assert!(
            !body.is_empty() || r.path.ends_with("accessible"),
            "{}: empty answer",
            r.name
        );
    }
    let counters = admin(&sim, reqwest::Method::GET, "/_sim/counters", None).await;
    assert!(
        counters.get("unknown").is_none(),
        "every route was recognised: {counters}"
    );
}

/// The same VMs read the same way whether the status fields sit inside `req_json` (the mock) or
/// at the top level (later Meson, §8.4), with a private (VPC) address beside the public one.
#[tokio::test]
async fn vm_status_fields_at_either_level() {
    for top_level in [false, true] {
        let mut s = scenario();
        s.wire.vm_status_top_level = top_level;
        s.vms[1].ipv4 = Some("51.15.0.9".parse().unwrap());
        s.vms[1].private_ipv4 = Some("10.2.0.9".parse().unwrap());
        s.vms[1].tags = vec!["k8s-cluster=c1".into(), "k8s-nodegroup=g".into()];
        s.vms[1].power = Some("shut off".into());
        let sim = sim_with(s).await;
        let raw = elemento_sim::wire::vm_list(&*sim.sim.world.lock().await);
        let rec = &raw[1];
        let where_ = if top_level {
            rec.clone()
        } else {
            rec["req_json"].clone()
        };
        assert!(
            where_.get("mesos").is_some() && where_.get("states").is_some(),
            "{rec}"
        );
        let vms = client(&sim).list_vms().await.unwrap();
        let b = vms.iter().find(|v| v.id == "vm-b").unwrap();
        assert_eq!(
            (b.ipv4, b.private_ipv4),
            ("51.15.0.9".parse().ok(), "10.2.0.9".parse().ok()),
            "top level: {top_level}"
        );
        assert_eq!(b.provider.as_deref(), Some("ovh"));
        assert_eq!(b.region.as_deref(), Some("eu-west-par"));
        assert_eq!(b.power, PowerState::ShutOff);
        assert_eq!(b.vm_tags, ["k8s-cluster=c1", "k8s-nodegroup=g"]);
    }
}

/// What the autoscaler builds a VM with: placement and prices per provider, a cloud image and a
/// cloud-init volume, and a register that attaches them, keeps the tags and honours capacity.
#[tokio::test]
async fn placement_cloud_init_and_register_with_volumes() {
    use elemento_sim::scenario::ProviderSeed;
    let sim = sim_with(Scenario {
        providers: vec![
            ProviderSeed {
                name: "ovh".into(),
                region: Some("eu-west-par".into()),
                price_per_slot_hour: 0.01,
                price_per_gib_hour: 0.005,
                // One taken by the scenario's node-b.
                max_vms: Some(2),
                register_refused: false,
            },
            ProviderSeed {
                name: "scaleway".into(),
                region: None,
                price_per_slot_hour: 0.02,
                price_per_gib_hour: 0.0,
                max_vms: None,
                register_refused: false,
            },
        ],
        ..scenario()
    })
    .await;
    let c = client(&sim);
    let neon = c
        .templates()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.name == "Neon")
        .unwrap();
    let mut spec = RegisterVmRequest::of_template("c1-ovh-neon-000001", &neon);
    assert_eq!((spec.slots, spec.ramsize), (2, 2048));
    let all = c.can_allocate(&spec).await.unwrap();
    assert_eq!(all.nservers, 2);
    let prices = c.market_prices(&spec).await.unwrap();
    let ovh = prices
        .offers
        .iter()
        .find(|o| o.provider.as_deref() == Some("ovh"))
        .unwrap();
    assert_eq!(ovh.price.as_ref().and_then(|p| p.hour), Some(0.03));

    let boot = c
        .create_cloud_image(&CloudImageRequest {
            name: "c1-ovh-neon-000001-boot".into(),
            private: true,
            clonable: false,
            alg: "cp".into(),
            format: "qcow2".into(),
            bus: "virtio".into(),
            size: 8,
            url: "https://images.example/noble.img".into(),
        })
        .await
        .unwrap();
    let ci = c
        .create_cloud_init_volume(
            &CloudInitVolumeRequest {
                name: "c1-ovh-neon-000001-ci".into(),
                private: true,
                bootable: false,
                clonable: false,
                alg: "no".into(),
                expected_files: 2,
            },
            b"#cloud-config\nhostname: c1-ovh-neon-000001\n",
            b"instance-id: c1-ovh-neon-000001\n",
        )
        .await
        .unwrap();
    spec.volumes = vec![
        RegisterVmVolume {
            vid: boot.clone(),
            priority: 0,
        },
        RegisterVmVolume {
            vid: ci.clone(),
            priority: 1,
        },
    ];
    spec.vm_tags = vec!["k8s-cluster=c1".into(), "k8s-nodegroup=ovh-neon".into()];
    spec.provider = Some("ovh".into());
    let vm = c.register_vm(&spec).await.unwrap().expect("the new VM");
    assert_eq!(vm.volume_ids, [boot.as_str(), ci.as_str()]);
    assert_eq!(vm.provider.as_deref(), Some("ovh"));
    let state = admin(&sim, reqwest::Method::GET, "/_sim/state", None).await;
    let civol = state["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == ci.as_str())
        .unwrap();
    assert_eq!(
        civol["cloud_init"]["files"]["user-data"],
        "#cloud-config\nhostname: c1-ovh-neon-000001\n"
    );
    assert!(civol["cloud_init"]["files"]["meta-data"].is_string());

    // ovh is full now: it is no longer offered, and a register there is Elemento's limit 404.
    let only_ovh = c.can_allocate(&spec).await.unwrap();
    assert_eq!(
        only_ovh.nservers, 0,
        "nowhere on ovh: an answer, not an error"
    );
    spec.provider = None;
    let left = c.can_allocate(&spec).await.unwrap();
    assert_eq!(left.nservers, 1);
    spec.provider = Some("ovh".into());
    spec.info.vm_name = "c1-ovh-neon-000002".into();
    spec.volumes.clear();
    let e = c.register_vm(&spec).await.unwrap_err();
    assert!(e.is_limit(), "{e:?}");
    spec.provider = Some("scaleway".into());
    assert!(c.register_vm(&spec).await.unwrap().is_some());
}
