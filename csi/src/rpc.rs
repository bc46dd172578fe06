//! Every RPC goes through [`Rpc::handle`]: counted and timed by method and gRPC code, and its
//! errors logged by the driver itself (not only by the sidecar that called it).

use std::future::Future;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tonic::{Response, Status};

use crate::error::Result;

/// What every CSI handler returns.
pub type Grpc<T> = std::result::Result<Response<T>, Status>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    rpc: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcName {
    rpc: String,
}

#[derive(Clone)]
pub struct Rpc {
    calls: Family<RpcLabels, Counter>,
    duration: Family<RpcName, Histogram>,
}

impl Rpc {
    pub fn register(r: &mut Registry) -> Self {
        let m = Self {
            calls: Family::default(),
            duration: Family::new_with_constructor(elemento_telemetry::latency_histogram),
        };
        r.register(
            "csi_rpc_requests",
            "CSI calls by method and gRPC code",
            m.calls.clone(),
        );
        r.register(
            "csi_rpc_duration_seconds",
            "CSI call latency by method",
            m.duration.clone(),
        );
        m
    }

    /// For tests and tools that need no metrics.
    pub fn unregistered() -> Self {
        Self {
            calls: Family::default(),
            duration: Family::new_with_constructor(elemento_telemetry::latency_histogram),
        }
    }

    pub async fn handle<T>(
        &self,
        rpc: &'static str,
        volume: &str,
        fut: impl Future<Output = Result<T>>,
    ) -> Grpc<T> {
        let started = Instant::now();
        let result = fut.await;
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(e) => e.code(),
        };
        self.calls
            .get_or_create(&RpcLabels {
                rpc: rpc.into(),
                code: elemento_telemetry::grpc_code_name(code as i32).into(),
            })
            .inc();
        self.duration
            .get_or_create(&RpcName { rpc: rpc.into() })
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(v) => {
                tracing::debug!(rpc, volume, elapsed = ?started.elapsed(), "ok");
                Ok(Response::new(v))
            }
            Err(e) => {
                tracing::warn!(rpc, volume, code = ?code, error = %e, "failed");
                Err(e.into())
            }
        }
    }
}
