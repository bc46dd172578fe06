//! The Identity service.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use csi_grpc::v1::identity_server::Identity;
use csi_grpc::v1::plugin_capability::{self, service, volume_expansion};
use csi_grpc::v1::*;
use tonic::Request;

use crate::rpc::Grpc;

use crate::config::DRIVER_NAME;
use crate::error::CsiError;
use crate::rpc::Rpc;

/// Tools the node plugin calls.
pub const NODE_TOOLS: &[&str] = &[
    "mount",
    "umount",
    "blkid",
    "blockdev",
    "mkfs.ext4",
    "resize2fs",
];

pub struct IdentityService {
    pub rpc: Rpc,
    /// Set in controller mode: Probe checks the Elemento API answers.
    pub api: Option<elemento_api::Client>,
    /// Set in node mode: Probe checks the host tools exist.
    pub node: bool,
    /// A successful API check is reused this long, so liveness probes cost at most one call a minute.
    last_ok: Mutex<Option<Instant>>,
}

const PROBE_CACHE: Duration = Duration::from_secs(60);

impl IdentityService {
    pub fn new(rpc: Rpc, api: Option<elemento_api::Client>, node: bool) -> Self {
        Self {
            rpc,
            api,
            node,
            last_ok: Mutex::new(None),
        }
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _r: Request<GetPluginInfoRequest>,
    ) -> Grpc<GetPluginInfoResponse> {
        self.rpc
            .handle("GetPluginInfo", "", async {
                Ok(GetPluginInfoResponse {
                    name: DRIVER_NAME.into(),
                    vendor_version: env!("CARGO_PKG_VERSION").into(),
                    manifest: Default::default(),
                })
            })
            .await
    }

    async fn get_plugin_capabilities(
        &self,
        _r: Request<GetPluginCapabilitiesRequest>,
    ) -> Grpc<GetPluginCapabilitiesResponse> {
        let svc = |t: service::Type| PluginCapability {
            r#type: Some(plugin_capability::Type::Service(
                plugin_capability::Service { r#type: t as i32 },
            )),
        };
        let capabilities = vec![
            svc(service::Type::ControllerService),
            svc(service::Type::VolumeAccessibilityConstraints),
            PluginCapability {
                r#type: Some(plugin_capability::Type::VolumeExpansion(
                    plugin_capability::VolumeExpansion {
                        r#type: volume_expansion::Type::Online as i32,
                    },
                )),
            },
        ];
        self.rpc
            .handle("GetPluginCapabilities", "", async {
                Ok(GetPluginCapabilitiesResponse { capabilities })
            })
            .await
    }

    async fn probe(&self, _r: Request<ProbeRequest>) -> Grpc<ProbeResponse> {
        self.rpc
            .handle("Probe", "", async {
                if self.node
                    && let Some(missing) = NODE_TOOLS.iter().find(|t| !on_path(t))
                {
                    return Err(CsiError::FailedPrecondition(format!(
                        "host tool {missing} is not installed"
                    )));
                }
                if let Some(api) = &self.api {
                    let fresh = self
                        .last_ok
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .is_some_and(|t| t.elapsed() < PROBE_CACHE);
                    if !fresh {
                        api.auth_status().await?;
                        *self.last_ok.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(Instant::now());
                    }
                }
                Ok(ProbeResponse { ready: Some(true) })
            })
            .await
    }
}
