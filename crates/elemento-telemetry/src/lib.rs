//! Logging setup, Prometheus metrics shared by the CCM and the CSI driver, and the HTTP server
//! for `/metrics`, `/healthz` and `/readyz`.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use elemento_api::CallObserver;
use elemento_api::routes::Route;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Initialises tracing to stderr. `format` is `text` or `json`.
pub fn init_logging(format: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        "json" => b.json().init(),
        "text" => b.init(),
        other => anyhow::bail!("--log-format {other:?}: accepted values are text, json"),
    }
    Ok(())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    route: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

/// Elemento API call metrics (same names in every binary):
/// `elemento_api_requests_total{route,outcome}` and
/// `elemento_api_request_duration_seconds{route}`.
#[derive(Clone)]
pub struct ApiMetrics {
    requests: Family<ApiLabels, Counter>,
    duration: Family<RouteLabel, Histogram>,
}

pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl ApiMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
        };
        registry.register(
            "elemento_api_requests",
            "Elemento API calls by route and outcome (HTTP status, timeout, connect_error)",
            m.requests.clone(),
        );
        registry.register(
            "elemento_api_request_duration_seconds",
            "Elemento API call latency by route",
            m.duration.clone(),
        );
        m
    }
}

impl CallObserver for ApiMetrics {
    fn observe(&self, route: &Route, outcome: &str, elapsed: Duration) {
        self.requests
            .get_or_create(&ApiLabels {
                route: route.name.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.duration
            .get_or_create(&RouteLabel {
                route: route.name.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }
}

/// Readiness shared between the binary and the HTTP server.
#[derive(Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct ServerState {
    registry: Arc<Mutex<Registry>>,
    health: Health,
}

async fn metrics(State(s): State<ServerState>) -> impl IntoResponse {
    let mut out = String::new();
    let reg = s.registry.lock().unwrap_or_else(|p| p.into_inner());
    match prometheus_client::encoding::text::encode(&mut out, &reg) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn readyz(State(s): State<ServerState>) -> impl IntoResponse {
    if s.health.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Serves `/metrics`, `/healthz` (process alive) and `/readyz` on `addr` until the process ends.
/// Returns the bound address (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    registry: Registry,
    health: Health,
) -> anyhow::Result<SocketAddr> {
    let state = ServerState {
        registry: Arc::new(Mutex::new(registry)),
        health,
    };
    let app = probes(Router::new().route("/metrics", get(metrics))).with_state(state);
    listen("metrics", addr, app).await
}

/// Serves only `/healthz` and `/readyz` on `addr`: what the kubelet's probes need, and nothing an
/// unauthenticated reader of the node's network could learn from. The metrics listener can then
/// stay on loopback.
pub async fn serve_health(addr: SocketAddr, health: Health) -> anyhow::Result<SocketAddr> {
    let state = ServerState {
        registry: Arc::new(Mutex::new(Registry::default())),
        health,
    };
    listen("health", addr, probes(Router::new()).with_state(state)).await
}

fn probes(r: Router<ServerState>) -> Router<ServerState> {
    r.route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
}

async fn listen(what: &'static str, addr: SocketAddr, app: Router) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("{what} bind address {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "{what} server stopped");
        }
    });
    Ok(bound)
}

/// The `code` label of a gRPC call: the canonical code names (grpc-go's, which dashboards and
/// alerts written for other gRPC servers use), `OK` for success.
pub fn grpc_code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("Unknown")
}

#[cfg(test)]
mod grpc_code_tests {
    #[test]
    fn canonical_names() {
        assert_eq!(super::grpc_code_name(0), "OK");
        assert_eq!(super::grpc_code_name(5), "NotFound");
        assert_eq!(super::grpc_code_name(16), "Unauthenticated");
        assert_eq!(super::grpc_code_name(99), "Unknown");
    }
}
