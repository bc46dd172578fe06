//! `elemento-cluster-autoscaler-provider`: serves the cluster-autoscaler's externalgrpc protocol.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use elemento_autoscaler::config::{Args, Settings};
use elemento_autoscaler::provider::Provider;
use elemento_autoscaler::server::{RpcMetrics, Service};
use elemento_autoscaler::tokens::Tokens;
use prometheus_client::registry::Registry;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tracing::{info, warn};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    elemento_telemetry::init_logging(&args.log_format)?;
    let settings = Settings::load(&args.config)?;
    let mut registry = Registry::default();
    let api_metrics = elemento_telemetry::ApiMetrics::register(&mut registry);
    let rpc_metrics = RpcMetrics::register(&mut registry);
    let config = settings
        .api
        .client_config(&format!(
            "elemento-cluster-autoscaler-provider/{}",
            env!("CARGO_PKG_VERSION")
        ))
        .context("api")?;
    let api = elemento_api::Client::with_observer(config, Some(Arc::new(api_metrics)))?;
    if let Some(path) = &settings.api.credentials_file {
        elemento_api::settings::watch_credentials(
            api.clone(),
            path.clone(),
            elemento_api::settings::credentials_poll_interval(),
        );
    }
    let kube = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)?;
            let c = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
            kube::Client::try_from(c)?
        }
        None => kube::Client::try_default().await?,
    };
    let tokens = Tokens::new(kube, settings.bootstrap.token_ttl);
    let health = elemento_telemetry::Health::default();
    let addr =
        elemento_telemetry::serve(args.metrics_bind_address, registry, health.clone()).await?;
    info!(%addr, "metrics");
    if let Some(h) = args.health_bind_address {
        elemento_telemetry::serve_health(h, health.clone()).await?;
    }
    // The flavours are checked against the API's templates before serving: retried while the
    // API is unreachable, fatal when a flavour does not exist.
    let grpc = settings.grpc.clone();
    let provider = loop {
        match Provider::new(settings.clone(), api.clone(), tokens.clone()).await {
            Ok(p) => break Arc::new(p),
            Err(e) if e.downcast_ref::<elemento_api::ApiError>().is_some() => {
                warn!(error = %e, "reading the Elemento templates; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
            Err(e) => return Err(e),
        }
    };
    if let Err(e) = provider.refresh().await {
        warn!(error = %e, "first VM listing failed; the autoscaler's Refresh retries it");
    }
    let service = ca_grpc::v1::cloud_provider_server::CloudProviderServer::new(Service {
        provider,
        metrics: rpc_metrics,
    });
    let mut server = Server::builder();
    if let Some(tls) = &grpc.tls {
        let read = |p: &std::path::Path| {
            std::fs::read(p).with_context(|| format!("grpc.tls: reading {}", p.display()))
        };
        server = server.tls_config(
            ServerTlsConfig::new()
                .identity(Identity::from_pem(read(&tls.cert)?, read(&tls.key)?))
                .client_ca_root(Certificate::from_pem(read(&tls.client_ca)?)),
        )?;
        info!(listen = %grpc.listen, "serving externalgrpc over mTLS");
    } else {
        warn!(listen = %grpc.listen, "serving externalgrpc WITHOUT TLS (grpc.plaintext: true)");
    }
    // SIGTERM (the kubelet stopping the pod) or Ctrl-C: stop serving. Creations in flight stop
    // with the process; the next run's sweep removes what they left.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    health.set_ready(true);
    server
        .add_service(service)
        .serve_with_shutdown(grpc.listen, async move {
            tokio::select! {
                _ = term.recv() => info!("terminated"),
                _ = tokio::signal::ctrl_c() => info!("interrupted"),
            }
        })
        .await?;
    Ok(())
}
