//! The Node service: stage (find the device, format if empty, mount), publish (bind mount),
//! expand, stats. Every operation is idempotent and guarded per volume.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use csi_grpc::v1::node_server::Node;
use csi_grpc::v1::node_service_capability::{self, rpc::Type as Cap};
use csi_grpc::v1::*;
use tonic::Request;

use crate::rpc::Grpc;

use crate::cmd::Runner;
use crate::config::{TOPOLOGY_REGION, TOPOLOGY_ZONE};
use crate::device;
use crate::error::{CsiError, Result};
use crate::fs::{self, Probe};
use crate::guard::InFlight;
use crate::luks;
use crate::mount;
use crate::params::{self, Access, check_id, check_path};
use crate::rpc::Rpc;

/// Where this node is, for NodeGetInfo.
pub enum NodeTopology {
    /// Given by flags (`--node-zone`, `--node-region`).
    Fixed(BTreeMap<String, String>),
    /// This Node's zone and region labels, read at every NodeGetInfo: the kubelet refuses a
    /// registration whose topology differs from the Node's labels, and the CCM may relabel a Node
    /// (a 0.1 Node's zone was its host). Flags override single keys.
    FromNode {
        nodes: Box<kube::Api<k8s_openapi::api::core::v1::Node>>,
        name: String,
        overrides: BTreeMap<String, String>,
    },
}

impl NodeTopology {
    async fn segments(&self) -> Result<HashMap<String, String>> {
        let (mut segments, overrides) = match self {
            NodeTopology::Fixed(o) => (HashMap::new(), o),
            NodeTopology::FromNode {
                nodes,
                name,
                overrides,
            } => {
                let node = nodes.get(name).await.map_err(|e| {
                    CsiError::Unavailable(format!("reading Node {name} for its topology: {e}"))
                })?;
                let labels = elemento_api::node::NodeView::from_node(&node).labels;
                let segments = [TOPOLOGY_ZONE, TOPOLOGY_REGION]
                    .iter()
                    .filter_map(|k| labels.get(*k).map(|v| (k.to_string(), v.clone())))
                    .collect();
                (segments, overrides)
            }
        };
        segments.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(segments)
    }
}

pub struct NodeService {
    pub rpc: Rpc,
    pub node_id: String,
    pub topology: NodeTopology,
    pub max_volumes: i64,
    pub device_root: PathBuf,
    pub sys_root: PathBuf,
    pub kubelet_dir: Option<PathBuf>,
    pub device_wait: Duration,
    pub runner: Arc<dyn Runner>,
    pub inflight: InFlight,
}

fn io(ctx: &str, p: &Path) -> impl FnOnce(std::io::Error) -> CsiError {
    let c = format!("{ctx} {}", p.display());
    move |e| CsiError::io(c, e)
}

/// Whether the volume was created with `encrypted: "true"` (its volume context says so).
fn encrypted(ctx: &HashMap<String, String>) -> bool {
    ctx.get("encrypted").is_some_and(|v| v == "true")
}

fn shareable(ctx: &HashMap<String, String>) -> bool {
    ctx.get("shareable").is_some_and(|v| v == "true")
}

impl NodeService {
    fn path(&self, what: &str, p: &str) -> Result<PathBuf> {
        check_path(what, p, self.kubelet_dir.as_deref())?;
        Ok(PathBuf::from(p))
    }

    async fn device(
        &self,
        volume_id: &str,
        publish_context: &HashMap<String, String>,
    ) -> Result<PathBuf> {
        let lookup = device::Lookup::new(volume_id, publish_context)?;
        device::find(&self.device_root, &self.sys_root, &lookup, self.device_wait).await
    }

    async fn stage(&self, req: NodeStageVolumeRequest) -> Result<NodeStageVolumeResponse> {
        check_id("volume id", &req.volume_id)?;
        let staging = self.path("staging target path", &req.staging_target_path)?;
        let cap = params::required_capability(req.volume_capability.as_ref())?;
        let access = params::access(cap, shareable(&req.volume_context))?;
        let _g = self.inflight.try_lock(&req.volume_id)?;
        let Access::Mount { fs_type, flags } = access else {
            // Raw block: nothing to stage, but the device must be there. Never the plaintext
            // device of a volume created encrypted (CreateVolume refuses the combination; this
            // guards volumes made before it did).
            if encrypted(&req.volume_context) {
                return Err(CsiError::FailedPrecondition(format!(
                    "volume {} is encrypted and cannot be used as a raw block device",
                    req.volume_id
                )));
            }
            self.device(&req.volume_id, &req.publish_context).await?;
            return Ok(NodeStageVolumeResponse {});
        };
        if mount::mount_at(&staging)?.is_some() {
            return Ok(NodeStageVolumeResponse {}); // already staged
        }
        let mut dev = self.device(&req.volume_id, &req.publish_context).await?;
        if encrypted(&req.volume_context) {
            let pass = req
                .secrets
                .get(luks::SECRET_KEY)
                .map(String::as_str)
                .unwrap_or("");
            dev = luks::open(self.runner.as_ref(), &dev, &req.volume_id, pass).await?;
        }
        let filesystem = fs::by_name(&fs_type).ok_or_else(|| {
            CsiError::InvalidArgument(format!("fsType {fs_type:?} is not supported"))
        })?;
        // Checked again here: the volume context of a PV can be written by hand.
        let options = req
            .volume_context
            .get(params::FS_FORMAT_OPTIONS)
            .map(|o| params::format_options(o))
            .transpose()?
            .unwrap_or_default();
        match fs::probe(self.runner.as_ref(), &dev).await? {
            Probe::Empty => {
                filesystem
                    .create(self.runner.as_ref(), &dev, &options)
                    .await?
            }
            Probe::Filesystem(t) if t == fs_type => {}
            Probe::Filesystem(t) => {
                return Err(CsiError::FailedPrecondition(format!(
                    "volume {} already holds a {t} filesystem but {fs_type} was requested; it is never reformatted",
                    req.volume_id
                )));
            }
            Probe::Other(what) => {
                return Err(CsiError::FailedPrecondition(format!(
                    "volume {} holds {what}; refusing to format it",
                    req.volume_id
                )));
            }
        }
        std::fs::create_dir_all(&staging).map_err(io("creating", &staging))?;
        mount::mount(
            self.runner.as_ref(),
            &dev.display().to_string(),
            &staging,
            &fs_type,
            &flags,
        )
        .await?;
        Ok(NodeStageVolumeResponse {})
    }

    async fn unstage(&self, req: NodeUnstageVolumeRequest) -> Result<NodeUnstageVolumeResponse> {
        check_id("volume id", &req.volume_id)?;
        let staging = self.path("staging target path", &req.staging_target_path)?;
        let _g = self.inflight.try_lock(&req.volume_id)?;
        mount::unmount_if_mounted(self.runner.as_ref(), &staging).await?;
        luks::close(self.runner.as_ref(), &req.volume_id).await?;
        Ok(NodeUnstageVolumeResponse {})
    }

    async fn publish(&self, req: NodePublishVolumeRequest) -> Result<NodePublishVolumeResponse> {
        check_id("volume id", &req.volume_id)?;
        let target = self.path("target path", &req.target_path)?;
        let staging = self.path("staging target path", &req.staging_target_path)?;
        let cap = params::required_capability(req.volume_capability.as_ref())?;
        let access = params::access(cap, shareable(&req.volume_context))?;
        let read_only = req.readonly || params::is_read_only_mode(cap);
        let _g = self.inflight.try_lock(&req.volume_id)?;
        if mount::mount_at(&target)?.is_some() {
            return Ok(NodePublishVolumeResponse {});
        }
        match access {
            Access::Block if encrypted(&req.volume_context) => {
                return Err(CsiError::FailedPrecondition(format!(
                    "volume {} is encrypted and cannot be published as a raw block device",
                    req.volume_id
                )));
            }
            Access::Block => {
                let dev = self.device(&req.volume_id, &req.publish_context).await?;
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
                }
                if !target.exists() {
                    std::fs::File::create(&target).map_err(io("creating", &target))?;
                }
                mount::bind(self.runner.as_ref(), &dev, &target, read_only, &[]).await?;
            }
            Access::Mount { flags, .. } => {
                if mount::mount_at(&staging)?.is_none() {
                    return Err(CsiError::FailedPrecondition(format!(
                        "volume {} is not staged at {}",
                        req.volume_id,
                        staging.display()
                    )));
                }
                std::fs::create_dir_all(&target).map_err(io("creating", &target))?;
                mount::bind(self.runner.as_ref(), &staging, &target, read_only, &flags).await?;
            }
        }
        Ok(NodePublishVolumeResponse {})
    }

    async fn unpublish(
        &self,
        req: NodeUnpublishVolumeRequest,
    ) -> Result<NodeUnpublishVolumeResponse> {
        check_id("volume id", &req.volume_id)?;
        let target = self.path("target path", &req.target_path)?;
        let _g = self.inflight.try_lock(&req.volume_id)?;
        mount::unmount_if_mounted(self.runner.as_ref(), &target).await?;
        match std::fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => std::fs::remove_dir(&target).map_err(io("removing", &target))?,
            Ok(_) => std::fs::remove_file(&target).map_err(io("removing", &target))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(CsiError::io(format!("inspecting {}", target.display()), e)),
        }
        Ok(NodeUnpublishVolumeResponse {})
    }

    /// For stats and expand: a path that cannot hold the volume (relative, missing) is NotFound;
    /// `..`, NUL and paths outside the kubelet directory are still refused.
    fn existing_volume_path(&self, p: &str) -> Result<PathBuf> {
        if p.is_empty() {
            return Err(CsiError::InvalidArgument("volume path is required".into()));
        }
        let path = PathBuf::from(p);
        if !path.is_absolute() || !path.exists() {
            return Err(CsiError::NotFound(format!("no volume at {p:?}")));
        }
        self.path("volume path", p)
    }

    fn is_block(path: &Path) -> bool {
        std::fs::metadata(path)
            .map(|m| m.file_type().is_block_device())
            .unwrap_or(false)
    }

    async fn stats(&self, req: NodeGetVolumeStatsRequest) -> Result<NodeGetVolumeStatsResponse> {
        check_id("volume id", &req.volume_id)?;
        let path = self.existing_volume_path(&req.volume_path)?;
        let m = mount::mount_at(&path)?;
        if Self::is_block(&path) {
            let total = device::size(self.runner.as_ref(), &path).await? as i64;
            return Ok(NodeGetVolumeStatsResponse {
                usage: vec![VolumeUsage {
                    total,
                    unit: volume_usage::Unit::Bytes as i32,
                    ..Default::default()
                }],
                volume_condition: Some(VolumeCondition {
                    abnormal: m.is_none(),
                    message: if m.is_none() {
                        "the block device is not published here".into()
                    } else {
                        String::new()
                    },
                }),
            });
        }
        let s = rustix::fs::statvfs(&path)
            .map_err(|e| CsiError::io(format!("statvfs {}", path.display()), e.into()))?;
        let f = s.f_frsize as i64;
        let condition = match &m {
            None => VolumeCondition { abnormal: true, message: format!("nothing is mounted at {}", path.display()) },
            Some(m) if m.fs_read_only() => VolumeCondition { abnormal: true, message: "the filesystem is read-only (remounted after errors?); check the node's kernel log".into() },
            Some(_) => VolumeCondition { abnormal: false, message: String::new() },
        };
        Ok(NodeGetVolumeStatsResponse {
            usage: vec![
                VolumeUsage {
                    available: s.f_bavail as i64 * f,
                    total: s.f_blocks as i64 * f,
                    used: (s.f_blocks.saturating_sub(s.f_bfree)) as i64 * f,
                    unit: volume_usage::Unit::Bytes as i32,
                },
                VolumeUsage {
                    available: s.f_favail as i64,
                    total: s.f_files as i64,
                    used: s.f_files.saturating_sub(s.f_ffree) as i64,
                    unit: volume_usage::Unit::Inodes as i32,
                },
            ],
            volume_condition: Some(condition),
        })
    }

    async fn expand(&self, req: NodeExpandVolumeRequest) -> Result<NodeExpandVolumeResponse> {
        check_id("volume id", &req.volume_id)?;
        let path = self.existing_volume_path(&req.volume_path)?;
        let _g = self.inflight.try_lock(&req.volume_id)?;
        let block = req.volume_capability.as_ref().is_some_and(|c| {
            matches!(c.access_type, Some(volume_capability::AccessType::Block(_)))
        });
        if block || Self::is_block(&path) {
            let size = device::size(self.runner.as_ref(), &path).await?;
            return Ok(NodeExpandVolumeResponse {
                capacity_bytes: size as i64,
            });
        }
        let m = mount::mount_at(&path)?.ok_or_else(|| {
            CsiError::FailedPrecondition(format!("nothing is mounted at {}", path.display()))
        })?;
        let dev = PathBuf::from(&m.source);
        if m.source.starts_with("/dev/mapper/elemento-") {
            self.runner
                .ok(
                    "cryptsetup",
                    &["resize", &luks::mapper_name(&req.volume_id)],
                    None,
                )
                .await?;
        }
        let filesystem = fs::by_name(&m.fs_type).ok_or_else(|| {
            CsiError::FailedPrecondition(format!("cannot grow a {} filesystem", m.fs_type))
        })?;
        filesystem.expand(self.runner.as_ref(), &dev, &path).await?;
        let size = device::size(self.runner.as_ref(), &dev).await?;
        Ok(NodeExpandVolumeResponse {
            capacity_bytes: size as i64,
        })
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        r: Request<NodeStageVolumeRequest>,
    ) -> Grpc<NodeStageVolumeResponse> {
        let req = r.into_inner();
        let id = req.volume_id.clone();
        self.rpc
            .handle("NodeStageVolume", &id, self.stage(req))
            .await
    }
    async fn node_unstage_volume(
        &self,
        r: Request<NodeUnstageVolumeRequest>,
    ) -> Grpc<NodeUnstageVolumeResponse> {
        let req = r.into_inner();
        let id = req.volume_id.clone();
        self.rpc
            .handle("NodeUnstageVolume", &id, self.unstage(req))
            .await
    }
    async fn node_publish_volume(
        &self,
        r: Request<NodePublishVolumeRequest>,
    ) -> Grpc<NodePublishVolumeResponse> {
        let req = r.into_inner();
        let id = req.volume_id.clone();
        self.rpc
            .handle("NodePublishVolume", &id, self.publish(req))
            .await
    }
    async fn node_unpublish_volume(
        &self,
        r: Request<NodeUnpublishVolumeRequest>,
    ) -> Grpc<NodeUnpublishVolumeResponse> {
        let req = r.into_inner();
        let id = req.volume_id.clone();
        self.rpc
            .handle("NodeUnpublishVolume", &id, self.unpublish(req))
            .await
    }
    async fn node_get_volume_stats(
        &self,
        r: Request<NodeGetVolumeStatsRequest>,
    ) -> Grpc<NodeGetVolumeStatsResponse> {
        let req = r.into_inner();
        let id = req.volume_id.clone();
        self.rpc
            .handle("NodeGetVolumeStats", &id, self.stats(req))
            .await
    }
    async fn node_expand_volume(
        &self,
        r: Request<NodeExpandVolumeRequest>,
    ) -> Grpc<NodeExpandVolumeResponse> {
        let req = r.into_inner();
        let id = req.volume_id.clone();
        self.rpc
            .handle("NodeExpandVolume", &id, self.expand(req))
            .await
    }
    async fn node_get_capabilities(
        &self,
        _r: Request<NodeGetCapabilitiesRequest>,
    ) -> Grpc<NodeGetCapabilitiesResponse> {
        let caps = [
            Cap::StageUnstageVolume,
            Cap::GetVolumeStats,
            Cap::ExpandVolume,
            Cap::VolumeCondition,
            Cap::SingleNodeMultiWriter,
        ];
        let capabilities = caps
            .into_iter()
            .map(|c| NodeServiceCapability {
                r#type: Some(node_service_capability::Type::Rpc(
                    node_service_capability::Rpc { r#type: c as i32 },
                )),
            })
            .collect();
        self.rpc
            .handle("NodeGetCapabilities", "", async {
                Ok(NodeGetCapabilitiesResponse { capabilities })
            })
            .await
    }
    async fn node_get_info(&self, _r: Request<NodeGetInfoRequest>) -> Grpc<NodeGetInfoResponse> {
        // Always a topology (the plugin advertises accessibility constraints); without known
        // labels its segments are empty and volumes are not constrained.
        self.rpc
            .handle("NodeGetInfo", "", async {
                Ok(NodeGetInfoResponse {
                    node_id: self.node_id.clone(),
                    max_volumes_per_node: self.max_volumes,
                    accessible_topology: Some(Topology {
                        segments: self.topology.segments().await?,
                    }),
                })
            })
            .await
    }
}
