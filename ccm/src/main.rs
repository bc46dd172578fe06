//! `elemento-cloud-controller-manager`: flags and config → clients → leader election → controllers.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use elemento_ccm::config::ClassPolicy;
use elemento_ccm::config::{Args, CloudConfig, select_controllers};
use elemento_ccm::context::{Ctx, Settings};
use elemento_ccm::leader::{self, LeaderConfig};
use elemento_ccm::metrics::Metrics;
use elemento_ccm::nodes::{NodeWatch, reconcile_triggers};
use elemento_ccm::{lifecycle, node, service};
use elemento_telemetry::{ApiMetrics, Health};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use prometheus_client::registry::Registry;
use tracing::{error, info};

/// One thread: the CCM's work is waiting on the two APIs plus short decodes, and on the shared
/// control-plane cores the multi-threaded runtime's parking and waking was a quarter of its CPU.
/// Measured (docs/benchmarks.md, A/B in alternating runs): node-init CPU −15 % at 1000 Nodes and
/// −16 % at 5000, peak RSS −12 % at 5000; p99 and lb-converge unchanged.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    if let Err(e) = elemento_telemetry::init_logging(&args.log_format) {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
    if let Err(e) = run(args).await {
        error!("{e:#}");
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn shutdown_signal(
    rx: &tokio::sync::watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send + Sync + 'static {
    let mut rx = rx.clone();
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let controllers = select_controllers(&args.controllers).map_err(anyhow::Error::msg)?;
    let mut cloud = CloudConfig::load(&args.cloud_config)?;
    if let Some(n) = &args.cluster_name {
        cloud.cluster_name = n.clone();
    }
    cloud
        .validate()
        .map_err(|e| anyhow::anyhow!("--cloud-config {}: {e}", args.cloud_config.display()))?;

    let mut registry = Registry::default();
    let api_metrics = ApiMetrics::register(&mut registry);
    let metrics = Metrics::register(&mut registry);
    let identity = args.leader_elect_identity.clone().unwrap_or_else(|| {
        let host =
            std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "ccm".into());
        format!(
            "{}_{:08x}",
            host.trim(),
            std::process::id()
                ^ (std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos()))
        )
    });
    let user_agent = format!(
        "elemento-cloud-controller-manager/{} ({identity})",
        env!("CARGO_PKG_VERSION")
    );
    let client_cfg = cloud.api.client_config(&user_agent).context("api")?;
    let api = elemento_api::Client::with_observer(client_cfg, Some(Arc::new(api_metrics)))?;
    if let Some(path) = &cloud.api.credentials_file {
        elemento_api::settings::watch_credentials(
            api.clone(),
            path.clone(),
            elemento_api::settings::credentials_poll_interval(),
        );
    }

    let kube_cfg = match &args.kubeconfig {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .with_context(|| format!("--kubeconfig {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer()
            .await
            .context("no --kubeconfig and no in-cluster configuration")?,
    };
    // The Node watch on a connection of its own. Sharing the writes' connection, its events
    // queued behind a burst's writes: at 1000 Nodes the CCM saw creations 0.3–0.8 s (median)
    // and up to 1.9 s after they were made, while the bench's own watch saw them in 0.1–0.14 s;
    // on its own connection, as soon as the bench's (docs/benchmarks.md).
    let node_watch_kube = elemento_ccm::kube_client::build(kube_cfg.clone())?;
    let kube = elemento_ccm::kube_client::build(kube_cfg)?;

    let health = Health::default();
    let bound =
        elemento_telemetry::serve(args.metrics_bind_address, registry, health.clone()).await?;
    if let Some(addr) = args.health_bind_address {
        elemento_telemetry::serve_health(addr, health.clone()).await?;
    }
    info!(metrics = %bound, ?controllers, cluster = %cloud.cluster_name, cluster_id = %cloud.cluster_id(), "starting");

    let settings = Settings {
        cluster_id: cloud.cluster_id(),
        class: ClassPolicy {
            class: cloud.load_balancer.class.clone(),
            claim_unset: cloud.load_balancer.claim_unset_class,
        },
        lb_defaults: cloud.load_balancer.defaults.clone(),
        node_status_update_frequency: args.node_status_update_frequency,
        node_monitor_period: args.node_monitor_period,
        out_of_service_after: args.out_of_service_taint_after,
        concurrent_node_syncs: args.concurrent_node_syncs.max(1),
        concurrent_service_syncs: args.concurrent_service_syncs.max(1),
        default_region: cloud
            .region
            .clone()
            .unwrap_or_else(|| elemento_api::topology::DEFAULT_REGION.into()),
    };
    let ctx = Arc::new(Ctx::new(
        kube.clone(),
        api,
        metrics,
        settings,
        identity.clone(),
    ));
    health.set_ready(true);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut lost_lease: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
        Box::pin(std::future::pending());
    if args.leader_elect {
        let cfg = LeaderConfig {
            name: args.leader_elect_resource_name.clone(),
            namespace: args.leader_elect_resource_namespace.clone(),
            identity: identity.clone(),
            lease_duration: args.leader_elect_lease_duration,
            renew_deadline: args.leader_elect_renew_deadline,
            retry_period: args.leader_elect_retry_period,
        };
        let leases: Api<Lease> = Api::namespaced(kube.clone(), &cfg.namespace);
        info!(identity = %identity, lease = %cfg.name, "waiting for leadership");
        tokio::select! {
            _ = leader::acquire(&leases, &cfg) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
        }
        info!(identity = %identity, "leading");
        lost_lease = Box::pin(leader::keep(leases, cfg));
    }

    if controllers.contains(&"cloud-node") {
        // Log in and read the templates and the topology policy now rather than when the first
        // Node joins: its initialization then waits for one VM listing only (a login, a refused
        // listing and a template fetch in a row held a burst's first Nodes ~100 ms), and a
        // credentials problem shows in the log at start.
        let ctx = ctx.clone();
        tokio::spawn(async move {
            tokio::join!(ctx.inventory.templates(), ctx.topology_policy());
        });
    }
    let mut tasks = tokio::task::JoinSet::new();
    // One Node watch for every controller; each subscribes only if it runs.
    let mut node_watch = NodeWatch::new();
    let node_store = node_watch.store();
    for c in &controllers {
        let (ctx, stop) = (ctx.clone(), shutdown_signal(&stop_rx));
        let store = node_store.clone();
        match *c {
            "cloud-node" => {
                let triggers = reconcile_triggers(node_watch.subscribe(), store.clone());
                tasks.spawn(node::run(ctx, triggers, store, stop))
            }
            "cloud-node-lifecycle" => {
                let triggers = reconcile_triggers(node_watch.subscribe(), store.clone());
                tasks.spawn(lifecycle::run(ctx, triggers, store, stop))
            }
            "service" => tasks.spawn(service::run(ctx, store, node_watch.subscribe(), stop)),
            other => anyhow::bail!("controller {other} has no implementation"),
        };
    }
    if node_watch.has_subscribers() {
        let api: Api<Node> = Api::all(node_watch_kube);
        tasks.spawn(node_watch.run(api, shutdown_signal(&stop_rx)));
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("interrupted"),
        _ = term.recv() => info!("terminated"),
        _ = &mut lost_lease => {
            // Exit at once: another replica may already be acting.
            error!("leadership lost; exiting");
            std::process::exit(1);
        }
        Some(r) = tasks.join_next() => error!(result = ?r.err(), "a controller stopped unexpectedly"),
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}
