//! CSI v1.12.0 protocol bindings (server and client), generated at build time.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("csi.v1");
}
