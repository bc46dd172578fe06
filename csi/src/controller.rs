//! The Controller service: volumes and attachments through the Elemento API.
//!
//! Happy-path API cost: CreateVolume 2 calls (look up by name, create), ControllerPublish 1
//! (attach; the API answers 404 for a missing volume or VM; +1 `volume.info` for a volume made
//! before its context carried its name, +1 `vm.status` when the attach answer says nothing about
//! the disk), DeleteVolume 1.

use std::collections::HashMap;

use csi_grpc::v1::controller_server::Controller;
use csi_grpc::v1::controller_service_capability::{self, rpc::Type as Cap};
use csi_grpc::v1::*;
use elemento_api::types::{Vm, Volume as ApiVolume, VolumeAttributes};
use tonic::Request;

use crate::rpc::Grpc;

use crate::config::{DriverConfig, TOPOLOGY_REGION, TOPOLOGY_ZONE};
use crate::device::{CTX_DEVICE_PATH, CTX_SERIAL, CTX_XML_DEVICE, CTX_XML_SERIAL};
use crate::error::{CsiError, Result};
use crate::guard::InFlight;
use crate::params::{self, check_id};
use crate::rpc::Rpc;
use elemento_api::disk;

pub struct ControllerService {
    pub rpc: Rpc,
    pub api: elemento_api::Client,
    pub cfg: DriverConfig,
    pub inflight: InFlight,
}

/// Volume-context key: the Elemento volume's name (for the name-based disk serial, §8.2).
pub const CTX_VOLUME_NAME: &str = "volumeName";

/// The Elemento name of a CSI volume. A name-based disk serial keeps only the first 15 sanitized
/// characters of the name (reference §8.2), so our names must differ there. The provisioner's
/// `pvc-<uuid>` already does (`pvc` + 12 hex digits of a random uuid) and is kept as it is; any
/// other CSI name becomes `pvc<12 hex digits of its FNV-1a hash>-<name>` (cut to 128 characters):
/// deterministic, so a retried CreateVolume finds the volume it made.
pub fn elemento_volume_name(csi_name: &str) -> String {
    if is_pvc_uuid(csi_name) {
        return csi_name.to_string();
    }
    let hash = csi_name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let mut name = format!("pvc{:012x}-{csi_name}", hash >> 16);
    while name.len() > 128 {
        name.pop();
    }
    name
}

/// `pvc-` and a lower-case uuid (the external-provisioner's default volume name).
fn is_pvc_uuid(name: &str) -> bool {
    name.strip_prefix("pvc-").is_some_and(|u| {
        u.len() == 36
            && u.char_indices().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => c == '-',
                _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
            })
    })
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(CsiError::InvalidArgument("volume name is required".into()));
    }
    if name.len() > 128 || name.chars().any(char::is_control) {
        return Err(CsiError::InvalidArgument(
            "volume name must be at most 128 printable characters".into(),
        ));
    }
    Ok(())
}

fn published_nodes(vms: &[Vm], volume_id: &str) -> Vec<String> {
    vms.iter()
        .filter(|vm| vm.volume_ids.iter().any(|v| v == volume_id))
        .map(|vm| vm.id.clone())
        .collect()
}

fn context(p: &params::VolumeParams) -> HashMap<String, String> {
    let mut ctx = HashMap::from([
        ("flavour".into(), p.flavour.clone()),
        ("encrypted".into(), p.encrypted.to_string()),
        ("shareable".into(), p.attrs.shareable.to_string()),
    ]);
    if let Some(o) = &p.format_options {
        ctx.insert(params::FS_FORMAT_OPTIONS.into(), o.clone());
    }
    ctx
}

fn csi_volume(
    v: &ApiVolume,
    volume_context: HashMap<String, String>,
    topology: Vec<Topology>,
) -> csi_grpc::v1::Volume {
    csi_grpc::v1::Volume {
        capacity_bytes: v.size_bytes as i64,
        volume_id: v.id.clone(),
        volume_context,
        content_source: None,
        accessible_topology: topology,
    }
}

/// Where to make a volume: the first preferred (else requisite) topology term, restricted to
/// our keys (zone = provider, region). The zone is the provider the volume is created on; the term
/// is the volume's accessible topology.
fn placement(req: Option<&TopologyRequirement>) -> Option<HashMap<String, String>> {
    let r = req?;
    r.preferred
        .iter()
        .chain(r.requisite.iter())
        .map(|t| {
            t.segments
                .iter()
                .filter(|(k, _)| *k == TOPOLOGY_ZONE || *k == TOPOLOGY_REGION)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>()
        })
        .find(|s| !s.is_empty())
}

impl ControllerService {
    async fn create(&self, req: CreateVolumeRequest) -> Result<CreateVolumeResponse> {
        check_name(&req.name)?;
        let p = params::volume_params(
            &req.parameters,
            &self.cfg.flavours,
            &self.cfg.default_flavour,
        )?;
        params::check_capabilities(&req.volume_capabilities, p.attrs.shareable)?;
        params::check_encryption(p.encrypted, &req.volume_capabilities)?;
        if req.volume_content_source.is_some() {
            return Err(CsiError::InvalidArgument("creating a volume from a snapshot or another volume is not supported by Elemento yet".into()));
        }
        let bytes = params::capacity(req.capacity_range.as_ref())?;
        let place = placement(req.accessibility_requirements.as_ref());
        let attrs = VolumeAttributes {
            provider: place.as_ref().and_then(|p| p.get(TOPOLOGY_ZONE).cloned()),
            ..p.attrs.clone()
        };
        let _g = self.inflight.try_lock(&format!("create/{}", req.name))?;
        let name = elemento_volume_name(&req.name);
        let v = match self.api.find_volume_by_name(&name).await? {
            Some(v) if params::compatible(&v, req.capacity_range.as_ref(), &attrs) => v,
            Some(v) => {
                return Err(CsiError::AlreadyExists(format!(
                    "volume {} already exists as {} with {} bytes, {:?}/{:?}, shareable={}, which does not match this request",
                    req.name, v.id, v.size_bytes, v.bus, v.format, v.shareable
                )));
            }
            None => self.api.create_volume(&name, bytes, &attrs).await?,
        };
        let mut ctx = context(&p);
        ctx.insert(CTX_VOLUME_NAME.into(), v.name.clone());
        // Where it was made: the API's provider when it reports one, else where we asked.
        let accessible = place
            .map(|mut segments| {
                if let Some(provider) = &v.provider {
                    segments.insert(TOPOLOGY_ZONE.into(), provider.clone());
                }
                vec![Topology { segments }]
            })
            .unwrap_or_default();
        Ok(CreateVolumeResponse {
            volume: Some(csi_volume(&v, ctx, accessible)),
        })
    }

    async fn delete(&self, req: DeleteVolumeRequest) -> Result<DeleteVolumeResponse> {
        check_id("volume id", &req.volume_id)?;
        let _g = self.inflight.try_lock(&req.volume_id)?;
        self.api.destroy_volume(&req.volume_id).await?;
        Ok(DeleteVolumeResponse {})
    }

    async fn publish(
        &self,
        req: ControllerPublishVolumeRequest,
    ) -> Result<ControllerPublishVolumeResponse> {
        check_id("volume id", &req.volume_id)?;
        check_id("node id", &req.node_id)?;
        let cap = params::required_capability(req.volume_capability.as_ref())?;
        // Multi-node modes are only valid for shareable volumes, and volumes made before the
        // volume context carried their name need it for the name-based serial: both need the
        // volume.
        let known_name = req.volume_context.get(CTX_VOLUME_NAME).cloned();
        let info = if params::is_multi_node(cap) || known_name.is_none() {
            Some(self.api.volume_info(&req.volume_id).await?)
        } else {
            None
        };
        let shareable = params::is_multi_node(cap) && info.as_ref().is_some_and(|v| v.shareable);
        params::access(cap, shareable)?;
        let volume_name = known_name.or_else(|| info.map(|v| v.name));
        let _g = self.inflight.try_lock(&req.volume_id)?;
        let at = self
            .api
            .attach_volume(&req.node_id, &req.volume_id)
            .await
            .map_err(|e| match e {
                elemento_api::ApiError::BadRequest {
                    status: 409,
                    message,
                    ..
                } => CsiError::FailedPrecondition(format!(
                    "volume {} cannot be attached to node {}: {message}",
                    req.volume_id, req.node_id
                )),
                other => other.into(),
            })?;
        // The serial stays in the context for node plugins older than the device lookup, which
        // read only it.
        let mut ctx = HashMap::from([(
            CTX_SERIAL.to_string(),
            at.serial
                .clone()
                .unwrap_or_else(|| disk::id_prefix_serial(&req.volume_id)),
        )]);
        if let Some(n) = volume_name {
            ctx.insert(CTX_VOLUME_NAME.into(), n);
        }
        if let Some(d) = &at.device {
            ctx.insert(CTX_DEVICE_PATH.into(), d.clone());
        }
        // An answer that says nothing about the disk: what the VM's domain XML says of it.
        if at.serial.is_none() && at.device.is_none() {
            let vms = self.api.list_vms().await?;
            let disks = vms
                .iter()
                .find(|vm| vm.id == req.node_id)
                .map(|vm| vm.disks.as_slice())
                .unwrap_or_default();
            if let Some(d) = disk::disk_of_volume(
                disks,
                &req.volume_id,
                ctx.get(CTX_VOLUME_NAME).map(String::as_str),
            ) {
                if let Some(s) = &d.serial {
                    ctx.insert(CTX_XML_SERIAL.into(), s.clone());
                }
                if let Some(t) = &d.target_dev {
                    ctx.insert(CTX_XML_DEVICE.into(), format!("/dev/{t}"));
                }
            }
        }
        Ok(ControllerPublishVolumeResponse {
            publish_context: ctx,
        })
    }

    async fn unpublish(
        &self,
        req: ControllerUnpublishVolumeRequest,
    ) -> Result<ControllerUnpublishVolumeResponse> {
        check_id("volume id", &req.volume_id)?;
        let _g = self.inflight.try_lock(&req.volume_id)?;
        let nodes = if req.node_id.is_empty() {
            published_nodes(&self.api.list_vms().await?, &req.volume_id)
        } else {
            check_id("node id", &req.node_id)?;
            vec![req.node_id.clone()]
        };
        for n in nodes {
            self.api.detach_volume(&n, &req.volume_id).await?;
        }
        Ok(ControllerUnpublishVolumeResponse {})
    }

    async fn validate(
        &self,
        req: ValidateVolumeCapabilitiesRequest,
    ) -> Result<ValidateVolumeCapabilitiesResponse> {
        check_id("volume id", &req.volume_id)?;
        if req.volume_capabilities.is_empty() {
            return Err(CsiError::InvalidArgument(
                "volume capabilities are required".into(),
            ));
        }
        let v = self.api.volume_info(&req.volume_id).await?;
        if let Err(e) = params::check_capabilities(&req.volume_capabilities, v.shareable) {
            return Ok(ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message: e.to_string(),
            });
        }
        Ok(ValidateVolumeCapabilitiesResponse {
            confirmed: Some(validate_volume_capabilities_response::Confirmed {
                volume_context: req.volume_context,
                volume_capabilities: req.volume_capabilities,
                parameters: req.parameters,
                mutable_parameters: Default::default(),
            }),
            message: String::new(),
        })
    }

    async fn list(&self, req: ListVolumesRequest) -> Result<ListVolumesResponse> {
        if req.max_entries < 0 {
            return Err(CsiError::InvalidArgument(
                "max_entries must not be negative".into(),
            ));
        }
        let start: usize = if req.starting_token.is_empty() {
            0
        } else {
            req.starting_token.parse().map_err(|_| {
                CsiError::Aborted(format!(
                    "starting_token {:?} is not valid",
                    req.starting_token
                ))
            })?
        };
        let mut vols = self.api.list_volumes().await?;
        if start > vols.len() {
            return Err(CsiError::Aborted(format!(
                "starting_token {start} is past the end of the list"
            )));
        }
        vols.sort_by(|a, b| a.id.cmp(&b.id));
        let vms = self.api.list_vms().await?;
        let take = if req.max_entries == 0 {
            usize::MAX
        } else {
            req.max_entries as usize
        };
        let page: Vec<_> = vols.iter().skip(start).take(take).collect();
        let next = start + page.len();
        Ok(ListVolumesResponse {
            entries: page
                .into_iter()
                .map(|v| list_volumes_response::Entry {
                    volume: Some(csi_volume(v, HashMap::new(), vec![])),
                    status: Some(list_volumes_response::VolumeStatus {
                        published_node_ids: published_nodes(&vms, &v.id),
                        volume_condition: None,
                    }),
                })
                .collect(),
            next_token: if next < vols.len() {
                next.to_string()
            } else {
                String::new()
            },
        })
    }

    async fn get(&self, req: ControllerGetVolumeRequest) -> Result<ControllerGetVolumeResponse> {
        check_id("volume id", &req.volume_id)?;
        let v = self.api.volume_info(&req.volume_id).await?;
        let vms = self.api.list_vms().await?;
        Ok(ControllerGetVolumeResponse {
            volume: Some(csi_volume(&v, HashMap::new(), vec![])),
            status: Some(controller_get_volume_response::VolumeStatus {
                published_node_ids: published_nodes(&vms, &v.id),
                volume_condition: None,
            }),
        })
    }

    async fn expand(
        &self,
        req: ControllerExpandVolumeRequest,
    ) -> Result<ControllerExpandVolumeResponse> {
        check_id("volume id", &req.volume_id)?;
        let range = req
            .capacity_range
            .as_ref()
            .ok_or_else(|| CsiError::InvalidArgument("capacity range is required".into()))?;
        let bytes = params::capacity(Some(range))?;
        let _g = self.inflight.try_lock(&req.volume_id)?;
        let v = self.api.volume_info(&req.volume_id).await?;
        let size = if v.size_bytes >= range.required_bytes.max(0) as u64 {
            v.size_bytes
        } else {
            self.api.resize_volume(&req.volume_id, bytes).await?
        };
        let block = req.volume_capability.as_ref().is_some_and(|c| {
            matches!(c.access_type, Some(volume_capability::AccessType::Block(_)))
        });
        Ok(ControllerExpandVolumeResponse {
            capacity_bytes: size as i64,
            node_expansion_required: !block,
        })
    }
}

fn unsupported<T>(what: &str) -> Result<T> {
    Err(CsiError::Unimplemented(format!(
        "{what} is not supported: the Elemento API has no such operation"
    )))
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(&self, r: Request<CreateVolumeRequest>) -> Grpc<CreateVolumeResponse> {
        let req = r.into_inner();
        let name = req.name.clone();
        self.rpc
            .handle("CreateVolume", &name, self.create(req))
            .await
    }
    async fn delete_volume(&self, r: Request<DeleteVolumeRequest>) -> Grpc<DeleteVolumeResponse> {
        let req = r.into_inner();
        let id = req.volume_id.clone();
        self.rpc.handle("DeleteVolume", &id, self.delete(req)).await
    }
    async fn controller_publish_volume(
        &self,
        r: Request<ControllerPublishVolumeRequest>,
    ) -> Grpc<ControllerPublishVolumeResponse> {
        let req = r.into_inner();
        let id = req.volume_id.clone();
        self.rpc
            .handle("ControllerPublishVolume", &id, self.publish(req))
            .await
    }
    async fn controller_unpublish_volume(
        &self,
        r: Request<ControllerUnpublishVolumeRequest>,
    ) -> Grpc<ControllerUnpublishVolumeResponse> {
        let req = r.into_inner();
        let id = req.volume_id.clone();
        self.rpc
            .handle("ControllerUnpublishVolume", &id, self.unpublish(req))
            .await
    }
    async fn validate_volume_capabilities(
        &self,
        r: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Grpc<ValidateVolumeCapabilitiesResponse> {
        let req = r.into_inner();
        let id = req.volume_id.clone();
        self.rpc
            .handle("ValidateVolumeCapabilities", &id, self.validate(req))
            .await
    }
    async fn list_volumes(&self, r: Request<ListVolumesRequest>) -> Grpc<ListVolumesResponse> {
        self.rpc
            .handle("ListVolumes", "", self.list(r.into_inner()))
            .await
    }
    async fn get_capacity(&self, _r: Request<GetCapacityRequest>) -> Grpc<GetCapacityResponse> {
        self.rpc
            .handle("GetCapacity", "", async { unsupported("GetCapacity") })
            .await
    }
    async fn controller_get_capabilities(
        &self,
        _r: Request<ControllerGetCapabilitiesRequest>,
    ) -> Grpc<ControllerGetCapabilitiesResponse> {
        let caps = [
            Cap::CreateDeleteVolume,
            Cap::PublishUnpublishVolume,
            Cap::ListVolumes,
            Cap::ListVolumesPublishedNodes,
            Cap::ExpandVolume,
            Cap::GetVolume,
            // Not VOLUME_CONDITION: the Elemento API reports nothing about a volume's health that
            // the controller could turn into a real condition (the node plugin reports one).
            Cap::SingleNodeMultiWriter,
        ];
        let capabilities = caps
            .into_iter()
            .map(|c| ControllerServiceCapability {
                r#type: Some(controller_service_capability::Type::Rpc(
                    controller_service_capability::Rpc { r#type: c as i32 },
                )),
            })
            .collect();
        self.rpc
            .handle("ControllerGetCapabilities", "", async {
                Ok(ControllerGetCapabilitiesResponse { capabilities })
            })
            .await
    }
    async fn create_snapshot(
        &self,
        _r: Request<CreateSnapshotRequest>,
    ) -> Grpc<CreateSnapshotResponse> {
        self.rpc
            .handle("CreateSnapshot", "", async {
                unsupported("CreateSnapshot")
            })
            .await
    }
    async fn delete_snapshot(
        &self,
        _r: Request<DeleteSnapshotRequest>,
    ) -> Grpc<DeleteSnapshotResponse> {
        self.rpc
            .handle("DeleteSnapshot", "", async {
                unsupported("DeleteSnapshot")
            })
            .await
    }
    async fn list_snapshots(
        &self,
        _r: Request<ListSnapshotsRequest>,
    ) -> Grpc<ListSnapshotsResponse> {
        self.rpc
            .handle("ListSnapshots", "", async { unsupported("ListSnapshots") })
            .await
    }
    async fn get_snapshot(&self, _r: Request<GetSnapshotRequest>) -> Grpc<GetSnapshotResponse> {
        self.rpc
            .handle("GetSnapshot", "", async { unsupported("GetSnapshot") })
            .await
    }
    async fn controller_expand_volume(
        &self,
        r: Request<ControllerExpandVolumeRequest>,
    ) -> Grpc<ControllerExpandVolumeResponse> {
        let req = r.into_inner();
        let id = req.volume_id.clone();
        self.rpc
            .handle("ControllerExpandVolume", &id, self.expand(req))
            .await
    }
    async fn controller_get_volume(
        &self,
        r: Request<ControllerGetVolumeRequest>,
    ) -> Grpc<ControllerGetVolumeResponse> {
        let req = r.into_inner();
        let id = req.volume_id.clone();
        self.rpc
            .handle("ControllerGetVolume", &id, self.get(req))
            .await
    }
    async fn controller_modify_volume(
        &self,
        _r: Request<ControllerModifyVolumeRequest>,
    ) -> Grpc<ControllerModifyVolumeResponse> {
        self.rpc
            .handle("ControllerModifyVolume", "", async {
                unsupported("ControllerModifyVolume")
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names_differ_in_the_characters_a_disk_serial_keeps() {
        let pvc = "pvc-0123abcd-4567-89ef-aaaa-bbbbccccdddd";
        assert_eq!(
            elemento_volume_name(pvc),
            pvc,
            "the provisioner's names are kept"
        );
        let keep = |n: &str| -> String {
            disk::sanitize(&elemento_volume_name(n))
                .chars()
                .take(disk::NAME_CHARS_IN_VIRTIO_SERIAL)
                .collect()
        };
        // Names that share their first 15 sanitized characters get different prefixes.
        let (a, b) = ("sanity-create-volume-1", "sanity-create-volume-2");
        assert_ne!(keep(a), keep(b));
        assert!(keep(a).starts_with("pvc") && keep(a).len() == 15);
        assert_eq!(
            elemento_volume_name(a),
            elemento_volume_name(a),
            "deterministic"
        );
        assert!(elemento_volume_name(a).ends_with("-sanity-create-volume-1"));
        assert_eq!(elemento_volume_name(&"x".repeat(128)).len(), 128);
        for not_uuid in [
            "pvc-0123ABCD-4567-89ef-aaaa-bbbbccccdddd",
            "pvc-1234",
            "pvcx0123abcd-4567-89ef-aaaa-bbbbccccdddd",
        ] {
            assert_ne!(elemento_volume_name(not_uuid), not_uuid);
        }
    }
}
