//! Serving CSI on a unix socket.

use std::path::PathBuf;
use std::sync::Arc;

use csi_grpc::v1::controller_server::ControllerServer;
use csi_grpc::v1::identity_server::IdentityServer;
use csi_grpc::v1::node_server::NodeServer;
use tokio_stream::wrappers::UnixListenerStream;

use crate::controller::ControllerService;
use crate::identity::IdentityService;
use crate::node::NodeService;

/// `unix:///path`, `unix:/path` or `/path`.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, String> {
    let p = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .unwrap_or(endpoint);
    if !p.starts_with('/') {
        return Err(format!(
            "--endpoint {endpoint:?}: expected unix:///absolute/path.sock"
        ));
    }
    Ok(PathBuf::from(p))
}

pub async fn serve(
    path: PathBuf,
    identity: Arc<IdentityService>,
    controller: Option<Arc<ControllerService>>,
    node: Option<Arc<NodeService>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(&path)?, // stale socket of a previous run
        Ok(_) => anyhow::bail!(
            "{} exists and is not a socket; refusing to remove it",
            path.display()
        ),
        Err(_) => {}
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let listener = tokio::net::UnixListener::bind(&path)
        .map_err(|e| anyhow::anyhow!("binding {}: {e}", path.display()))?;
    tracing::info!(socket = %path.display(), controller = controller.is_some(), node = node.is_some(), "serving CSI");
    let result = tonic::transport::Server::builder()
        .add_service(IdentityServer::from_arc(identity))
        .add_optional_service(controller.map(ControllerServer::from_arc))
        .add_optional_service(node.map(NodeServer::from_arc))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    let _ = std::fs::remove_file(&path);
    result.map_err(Into::into)
}
