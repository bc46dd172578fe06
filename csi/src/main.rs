//! `elemento-csi-driver --mode controller|node|all --endpoint unix:///csi/csi.sock`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use elemento_api::provider_id::{self, ProviderId};
use elemento_csi::cmd::HostRunner;
use std::collections::BTreeMap;

use elemento_csi::config::{Args, DriverConfig, Mode, TOPOLOGY_REGION, TOPOLOGY_ZONE};
use elemento_csi::controller::ControllerService;
use elemento_csi::guard::InFlight;
use elemento_csi::identity::IdentityService;
use elemento_csi::node::NodeService;
use elemento_csi::node::NodeTopology;
use elemento_csi::rpc::Rpc;
use elemento_telemetry::{ApiMetrics, Health};
use prometheus_client::registry::Registry;

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(e) = elemento_telemetry::init_logging(&args.log_format) {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
    if let Err(e) = run(args).await {
        tracing::error!("{e:#}");
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// The node's VM id (from `--node-id`, else its Node's providerID set by the CCM) and where its
/// topology comes from.
async fn node_identity(args: &Args) -> anyhow::Result<(String, NodeTopology)> {
    let overrides: BTreeMap<String, String> = [
        (TOPOLOGY_ZONE, &args.node_zone),
        (TOPOLOGY_REGION, &args.node_region),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v)))
    .collect();
    if let Some(id) = &args.node_id {
        return Ok((id.clone(), NodeTopology::Fixed(overrides)));
    }
    let name = args
        .node_name
        .clone()
        .context("neither --node-id nor NODE_NAME is set")?;
    let cfg = match &args.kubeconfig {
        Some(p) => {
            kube::Config::from_custom_kubeconfig(
                kube::config::Kubeconfig::read_from(p)?,
                &Default::default(),
            )
            .await?
        }
        None => kube::Config::infer().await?,
    };
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> =
        kube::Api::all(kube::Client::try_from(cfg)?);
    loop {
        match nodes.get(&name).await {
            Ok(n) => {
                let pid = n
                    .spec
                    .as_ref()
                    .and_then(|s| s.provider_id.clone())
                    .unwrap_or_default();
                if let ProviderId::Elemento(id) = provider_id::parse(Some(&pid)) {
                    return Ok((
                        id,
                        NodeTopology::FromNode {
                            nodes: Box::new(nodes),
                            name,
                            overrides,
                        },
                    ));
                }
                tracing::warn!(node = %name, provider_id = %pid, "waiting for the cloud controller manager to set an elemento:// providerID");
            }
            Err(e) => tracing::warn!(node = %name, error = %e, "reading this Node"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let path = elemento_csi::server::socket_path(&args.endpoint).map_err(anyhow::Error::msg)?;
    let mut registry = Registry::default();
    let rpc = Rpc::register(&mut registry);
    let controller_mode = matches!(args.mode, Mode::Controller | Mode::All);
    let node_mode = matches!(args.mode, Mode::Node | Mode::All);
    let cfg = match &args.config {
        Some(p) => DriverConfig::load(p)?,
        None if controller_mode => anyhow::bail!(
            "--config is required in controller mode (Elemento API endpoints and credentials)"
        ),
        None => DriverConfig::default(),
    };
    let (controller, api) = if controller_mode {
        // Only the controller calls the Elemento API: only it exposes the API's metrics.
        let api_metrics = ApiMetrics::register(&mut registry);
        let ua = format!("elemento-csi-driver/{}", env!("CARGO_PKG_VERSION"));
        let api = elemento_api::Client::with_observer(
            cfg.api.client_config(&ua).context("api")?,
            Some(Arc::new(api_metrics)),
        )?;
        if let Some(p) = &cfg.api.credentials_file {
            elemento_api::settings::watch_credentials(
                api.clone(),
                p.clone(),
                elemento_api::settings::credentials_poll_interval(),
            );
        }
        let c = ControllerService {
            rpc: rpc.clone(),
            api: api.clone(),
            cfg: cfg.clone(),
            inflight: InFlight::default(),
        };
        (Some(Arc::new(c)), Some(api))
    } else {
        (None, None)
    };
    let node = if node_mode {
        let (node_id, topology) = node_identity(&args).await?;
        tracing::info!(node_id = %node_id, "node identity");
        Some(Arc::new(NodeService {
            rpc: rpc.clone(),
            node_id,
            topology,
            max_volumes: cfg.max_volumes_per_node,
            device_root: args.device_root.clone(),
            sys_root: args.sys_root.clone(),
            kubelet_dir: args.kubelet_dir.clone(),
            device_wait: args.device_wait_seconds,
            runner: Arc::new(HostRunner),
            inflight: InFlight::default(),
        }))
    } else {
        None
    };
    let identity = Arc::new(IdentityService::new(rpc, api, node_mode));
    let health = Health::default();
    elemento_telemetry::serve(args.metrics_bind_address, registry, health.clone()).await?;
    health.set_ready(true);
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
    };
    elemento_csi::server::serve(path, identity, controller, node, shutdown).await
}
