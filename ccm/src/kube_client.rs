//! The CCM's Kubernetes client: HTTP/2 to an https API server. kube-rs's own client speaks
//! HTTP/1.1 only, so every write in flight needs a connection of its own: a burst of Node
//! initializations opened 71 connections, each with its TLS handshake on the same two cores as
//! the API server (measured, docs/benchmarks.md). client-go multiplexes one HTTP/2 connection;
//! so does this. The layers are kube's default stack: base URI, retry of 429/503 answers,
//! authentication, extra headers.

use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::ConfigExt;
use kube::client::retry::RetryPolicy;
use tower::ServiceBuilder;
use tower::retry::RetryLayer;

/// A ping on an idle connection this often, and the connection dropped when unanswered this long,
/// so a watch never hangs on a dead API server (client-go's defaults: 30 s and 15 s).
const PING_EVERY: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(15);

/// A client for `config`: HTTP/2 over TLS when the API server is https without a proxy (always,
/// in a cluster), else kube's default client.
pub fn build(config: kube::Config) -> anyhow::Result<kube::Client> {
    if config.cluster_url.scheme_str() != Some("https") || config.proxy_url.is_some() {
        return Ok(kube::Client::try_from(config)?);
    }
    // ALPN (h2) is set by the connector builder's enable_http2.
    let tls = config.rustls_client_config()?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    // HTTP/2 writes a request as several small frames: with Nagle's algorithm each waits for the
    // peer's delayed ACK (up to 40 ms). Go's net package sets TCP_NODELAY too.
    http.set_nodelay(true);
    http.set_connect_timeout(config.connect_timeout);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only();
    let https = match &config.tls_server_name {
        Some(name) => https.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
            name.clone()
                .try_into()
                .map_err(|e| anyhow::anyhow!("kubeconfig tls-server-name {name:?}: {e}"))?,
        )),
        None => https,
    };
    let https = https.enable_http2().wrap_connector(http);
    let client: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Builder::new(TokioExecutor::new())
            .http2_only(true)
            .timer(TokioTimer::new())
            .http2_keep_alive_interval(PING_EVERY)
            .http2_keep_alive_timeout(PING_TIMEOUT)
            .build(https);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(client);
    Ok(kube::Client::new(service, config.default_namespace))
}
