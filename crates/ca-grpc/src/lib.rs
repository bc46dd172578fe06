//! The cluster-autoscaler `externalgrpc` cloud-provider protocol (server and client), generated at
//! build time from the vendored proto of 1.36.1 with the fields older autoscalers read.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("clusterautoscaler.cloudprovider.v1.externalgrpc");
}
