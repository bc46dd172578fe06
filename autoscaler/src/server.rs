//! The externalgrpc CloudProvider service: each RPC reads or changes `Provider` and answers
//! within the autoscaler's 5 s (nothing here waits for a VM to be built). Errors map to gRPC codes
//! in one place (`status`).

use std::sync::Arc;
use std::time::Duration;

use ca_grpc::v1::cloud_provider_server::CloudProvider;
use ca_grpc::v1::*;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tonic::{Request, Response, Status};

use crate::provider::{InstanceState, Provider, RpcError};
use crate::template;

/// `elemento_autoscaler_rpcs_total{rpc,code}`.
#[derive(Clone, Default)]
pub struct RpcMetrics {
    calls: Family<Vec<(String, String)>, Counter>,
}

impl RpcMetrics {
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> Self {
        let m = Self::default();
        registry.register(
            "elemento_autoscaler_rpcs",
            "externalgrpc calls from the cluster-autoscaler, by RPC and gRPC code",
            m.calls.clone(),
        );
        m
    }

    fn observe<T>(&self, rpc: &str, r: &Result<T, Status>) {
        let code = match r {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        };
        let code = elemento_telemetry::grpc_code_name(code as i32).to_string();
        self.calls
            .get_or_create(&vec![("rpc".into(), rpc.into()), ("code".into(), code)])
            .inc();
    }
}

pub struct Service {
    pub provider: Arc<Provider>,
    pub metrics: RpcMetrics,
}

fn status(e: RpcError) -> Status {
    match e {
        RpcError::NotFound(m) => Status::not_found(m),
        RpcError::Invalid(m) => Status::invalid_argument(m),
        RpcError::Precondition(m) => Status::failed_precondition(m),
        RpcError::Exhausted(m) => Status::resource_exhausted(m),
        RpcError::Unavailable(m) => Status::unavailable(m),
    }
}

impl Service {
    fn group_message(&self, id: &str) -> Result<NodeGroup, Status> {
        let g = self.provider.group(id).map_err(status)?;
        Ok(NodeGroup {
            id: g.name.clone(),
            min_size: g.min_size as i32,
            max_size: g.max_size as i32,
            debug: format!(
                "{} × {} on {}",
                g.flavour,
                g.max_size,
                g.provider
                    .as_deref()
                    .unwrap_or(elemento_api::topology::ATOMOS)
            ),
        })
    }

    fn answer<T>(&self, rpc: &str, r: Result<T, Status>) -> Result<Response<T>, Status> {
        self.metrics.observe(rpc, &r);
        r.map(Response::new)
    }
}

/// A duration in both forms: `google.protobuf.Duration` (1.35+) and meta.v1 nanoseconds (before).
fn duration(d: Duration) -> (prost_types::Duration, MetaV1Duration) {
    (
        prost_types::Duration {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        },
        MetaV1Duration {
            duration: d.as_nanos().min(i64::MAX as u128) as i64,
        },
    )
}

#[tonic::async_trait]
impl CloudProvider for Service {
    async fn node_groups(
        &self,
        _: Request<NodeGroupsRequest>,
    ) -> Result<Response<NodeGroupsResponse>, Status> {
        let r = self
            .provider
            .settings
            .groups
            .iter()
            .map(|g| self.group_message(&g.name))
            .collect::<Result<Vec<_>, _>>()
            .map(|node_groups| NodeGroupsResponse { node_groups });
        self.answer("NodeGroups", r)
    }

    async fn node_group_for_node(
        &self,
        req: Request<NodeGroupForNodeRequest>,
    ) -> Result<Response<NodeGroupForNodeResponse>, Status> {
        let node = req.into_inner().node.unwrap_or_default();
        let r = match self.provider.group_for_node(&node.provider_id, &node.name) {
            Some(g) => self.group_message(&g).map(|g| NodeGroupForNodeResponse {
                node_group: Some(g),
            }),
            // Not ours: an empty id, never an error.
            None => Ok(NodeGroupForNodeResponse {
                node_group: Some(NodeGroup::default()),
            }),
        };
        self.answer("NodeGroupForNode", r)
    }

    async fn pricing_node_price(
        &self,
        req: Request<PricingNodePriceRequest>,
    ) -> Result<Response<PricingNodePriceResponse>, Status> {
        let req = req.into_inner();
        let node = req.node.unwrap_or_default();
        let hours = hours_between(req.start_timestamp, req.end_timestamp);
        let group = node
            .labels
            .get(elemento_api::topology::LABEL_NODE_GROUP)
            .cloned()
            .or_else(|| self.provider.group_for_node(&node.provider_id, &node.name));
        let r = match group {
            None => Err(Status::not_found(format!(
                "node {} is in no Elemento node group",
                node.name
            ))),
            Some(g) => match self.provider.cached_price(&g).await {
                Ok(Some(p)) => Ok(PricingNodePriceResponse { price: p * hours }),
                Ok(None) => Err(Status::unimplemented(format!(
                    "no market price for node group {g} (its provider quotes none)"
                ))),
                Err(e) => Err(Status::unavailable(format!("marketprices: {e}"))),
            },
        };
        self.answer("PricingNodePrice", r)
    }

    async fn pricing_pod_price(
        &self,
        req: Request<PricingPodPriceRequest>,
    ) -> Result<Response<PricingPodPriceResponse>, Status> {
        let req = req.into_inner();
        let hours = hours_between(req.start_timestamp, req.end_timestamp);
        let r = match template::pod_requests(&req.pod_bytes) {
            Err(e) => Err(Status::invalid_argument(e)),
            Ok((cores, gib)) => match self.provider.cheapest_rates().await {
                Ok(Some((per_core, per_gib))) => Ok(PricingPodPriceResponse {
                    price: (cores * per_core + gib * per_gib) * hours,
                }),
                Ok(None) => Err(Status::unimplemented("no market price for any node group")),
                Err(e) => Err(Status::unavailable(format!("marketprices: {e}"))),
            },
        };
        self.answer("PricingPodPrice", r)
    }

    async fn gpu_label(
        &self,
        _: Request<GpuLabelRequest>,
    ) -> Result<Response<GpuLabelResponse>, Status> {
        self.answer(
            "GPULabel",
            Ok(GpuLabelResponse {
                label: template::GPU_LABEL.into(),
            }),
        )
    }

    async fn get_available_gpu_types(
        &self,
        _: Request<GetAvailableGpuTypesRequest>,
    ) -> Result<Response<GetAvailableGpuTypesResponse>, Status> {
        let gpu_types = self
            .provider
            .settings
            .groups
            .iter()
            .filter(|g| self.provider.flavour(&g.name).is_some_and(|f| f.gpus > 0))
            .map(|_| ("nvidia".to_string(), prost_types::Any::default()))
            .collect();
        self.answer(
            "GetAvailableGPUTypes",
            Ok(GetAvailableGpuTypesResponse { gpu_types }),
        )
    }

    async fn cleanup(
        &self,
        _: Request<CleanupRequest>,
    ) -> Result<Response<CleanupResponse>, Status> {
        self.answer("Cleanup", Ok(CleanupResponse {}))
    }

    async fn refresh(
        &self,
        _: Request<RefreshRequest>,
    ) -> Result<Response<RefreshResponse>, Status> {
        let r = self
            .provider
            .refresh()
            .await
            .map(|()| RefreshResponse {})
            .map_err(status);
        self.answer("Refresh", r)
    }

    async fn node_group_target_size(
        &self,
        req: Request<NodeGroupTargetSizeRequest>,
    ) -> Result<Response<NodeGroupTargetSizeResponse>, Status> {
        let id = req.into_inner().id;
        let r = self
            .provider
            .group(&id)
            .map_err(status)
            .map(|_| NodeGroupTargetSizeResponse {
                target_size: self.provider.target_size(&id) as i32,
            });
        self.answer("NodeGroupTargetSize", r)
    }

    async fn node_group_increase_size(
        &self,
        req: Request<NodeGroupIncreaseSizeRequest>,
    ) -> Result<Response<NodeGroupIncreaseSizeResponse>, Status> {
        let req = req.into_inner();
        let r = self
            .provider
            .increase(&req.id, req.delta)
            .await
            .map(|()| NodeGroupIncreaseSizeResponse {})
            .map_err(status);
        self.answer("NodeGroupIncreaseSize", r)
    }

    async fn node_group_delete_nodes(
        &self,
        req: Request<NodeGroupDeleteNodesRequest>,
    ) -> Result<Response<NodeGroupDeleteNodesResponse>, Status> {
        let req = req.into_inner();
        let nodes: Vec<(String, String)> = req
            .nodes
            .into_iter()
            .map(|n| (n.provider_id, n.name))
            .collect();
        let r = self
            .provider
            .delete(&req.id, &nodes)
            .await
            .map(|()| NodeGroupDeleteNodesResponse {})
            .map_err(status);
        self.answer("NodeGroupDeleteNodes", r)
    }

    async fn node_group_decrease_target_size(
        &self,
        req: Request<NodeGroupDecreaseTargetSizeRequest>,
    ) -> Result<Response<NodeGroupDecreaseTargetSizeResponse>, Status> {
        let req = req.into_inner();
        let r = self
            .provider
            .decrease(&req.id, req.delta)
            .map(|()| NodeGroupDecreaseTargetSizeResponse {})
            .map_err(status);
        self.answer("NodeGroupDecreaseTargetSize", r)
    }

    async fn node_group_nodes(
        &self,
        req: Request<NodeGroupNodesRequest>,
    ) -> Result<Response<NodeGroupNodesResponse>, Status> {
        let id = req.into_inner().id;
        let r = self.provider.group(&id).map_err(status).map(|_| {
            let instances = self
                .provider
                .instances(&id)
                .into_iter()
                .map(|i| Instance {
                    id: i.id,
                    status: Some(InstanceStatus {
                        instance_state: match i.state {
                            InstanceState::Running => {
                                instance_status::InstanceState::InstanceRunning
                            }
                            InstanceState::Creating => {
                                instance_status::InstanceState::InstanceCreating
                            }
                            InstanceState::Deleting => {
                                instance_status::InstanceState::InstanceDeleting
                            }
                        } as i32,
                        error_info: i.error.map(|(class, code, message)| InstanceErrorInfo {
                            error_code: code,
                            error_message: message,
                            instance_error_class: class as i32,
                        }),
                    }),
                })
                .collect();
            NodeGroupNodesResponse { instances }
        });
        self.answer("NodeGroupNodes", r)
    }

    async fn node_group_template_node_info(
        &self,
        req: Request<NodeGroupTemplateNodeInfoRequest>,
    ) -> Result<Response<NodeGroupTemplateNodeInfoResponse>, Status> {
        let id = req.into_inner().id;
        let r = self.provider.group(&id).map_err(status).and_then(|g| {
            let flavour = self
                .provider
                .flavour(&id)
                .ok_or_else(|| Status::internal(format!("no flavour for {id}")))?;
            let bytes = template::template(
                g,
                flavour,
                &self.provider.settings.default_region,
                &self.provider.settings.cluster_name,
            )
            .encode();
            // Field 1 for cluster-autoscaler 1.33, field 2 since: the same bytes.
            Ok(NodeGroupTemplateNodeInfoResponse {
                node_info: bytes.clone(),
                node_bytes: bytes,
            })
        });
        self.answer("NodeGroupTemplateNodeInfo", r)
    }

    async fn node_group_get_options(
        &self,
        req: Request<NodeGroupAutoscalingOptionsRequest>,
    ) -> Result<Response<NodeGroupAutoscalingOptionsResponse>, Status> {
        let req = req.into_inner();
        let r = self.provider.group(&req.id).map_err(status).map(|g| {
            let mut o = req.defaults.unwrap_or_default();
            let (new, old) = duration(g.max_node_provision_time);
            o.max_node_provision_duration = Some(new);
            o.max_node_provision_time = Some(old);
            NodeGroupAutoscalingOptionsResponse {
                node_group_autoscaling_options: Some(o),
            }
        });
        self.answer("NodeGroupGetOptions", r)
    }
}

/// Hours between two timestamps (at least 0; 1 when either is missing).
fn hours_between(
    start: Option<prost_types::Timestamp>,
    end: Option<prost_types::Timestamp>,
) -> f64 {
    match (start, end) {
        (Some(s), Some(e)) => {
            let secs = (e.seconds - s.seconds) as f64 + f64::from(e.nanos - s.nanos) / 1e9;
            (secs / 3600.0).max(0.0)
        }
        _ => 1.0,
    }
}
