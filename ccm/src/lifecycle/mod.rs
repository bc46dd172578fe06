//! The node lifecycle controller: deletes NotReady Nodes whose VM is gone, taints those whose VM
//! is shut off (and, opt-in, marks them out-of-service), and clears the taints when the VM runs.

pub mod decide;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, NodeSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument};

use crate::context::{Ctx, Error};
use crate::events::Reason;
use crate::runner;
use decide::{ANN_SHUT_OFF_SINCE, Decision, GONE_CONFIRMATION, Sighting};
use elemento_api::node::NodeView;
use elemento_api::provider_id::ProviderId;

const NAME: &str = "cloud-node-lifecycle";

/// VM ids seen missing: listing generation and time of the first miss.
#[derive(Default)]
pub struct Missing(Mutex<HashMap<String, (u64, Instant)>>);

/// Runs on the shared Node cache: `triggers` names the Nodes to reconcile.
pub async fn run(
    ctx: Arc<Ctx>,
    triggers: impl Stream<Item = Arc<Node>> + Send + 'static,
    store: Store<Node>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let state = Arc::new((ctx, Missing::default()));
    Controller::for_shared_stream(triggers, store)
        .with_config(Config::default().concurrency(state.0.settings.concurrent_node_syncs))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, state)
        .for_each(|_| futures::future::ready(()))
        .await;
}

type State = Arc<(Arc<Ctx>, Missing)>;

fn error_policy(node: Arc<Node>, err: &Error, state: State) -> Action {
    let key = runner::object_key(NAME, None, &node.name_any());
    runner::requeue_after_error(&state.0, NAME, &key, err)
}

#[instrument(skip_all, fields(node = %node.name_any()))]
async fn reconcile(node: Arc<Node>, state: State) -> Result<Action, Error> {
    let (ctx, missing) = (&state.0, &state.1);
    let key = runner::object_key(NAME, None, &node.name_any());
    runner::observe(ctx, NAME, &key, reconcile_inner(&node, ctx, missing)).await
}

async fn reconcile_inner(node: &Node, ctx: &Ctx, missing: &Missing) -> Result<Action, Error> {
    let facts = NodeView::from_node(node);
    // Never touch a Node of another cloud, or one not initialized yet.
    let ProviderId::Elemento(id) = facts.provider() else {
        return Ok(Action::await_change());
    };
    let ready = facts.ready;
    let ours =
        facts.has_taint(decide::SHUTDOWN_TAINT) || facts.has_taint(decide::OUT_OF_SERVICE_TAINT);
    if ready && !ours {
        return Ok(Action::await_change()); // the common case costs no API call
    }
    let period = ctx.settings.node_monitor_period;
    let snap = ctx.inventory.vms(period).await?;
    let power = snap.by_id(&id).map(|vm| vm.power);
    // Remember the first listing without the VM; forget it once the VM is seen.
    let first_miss = {
        let mut m = missing.0.lock().unwrap_or_else(|p| p.into_inner());
        match power {
            Some(_) => {
                m.remove(&id);
                None
            }
            None if snap.vms.is_empty() => None,
            None => {
                let (g, at) = *m
                    .entry(id.clone())
                    .or_insert((snap.generation, Instant::now()));
                Some((g, at.elapsed()))
            }
        }
    };
    let vm_state = match decide::sighting(power, snap.vms.is_empty(), snap.generation, first_miss) {
        Sighting::State(s) => s,
        // Confirm with a fresh listing shortly.
        Sighting::Unconfirmed => return Ok(Action::requeue(GONE_CONFIRMATION)),
    };
    let now = jiff::Timestamp::now();
    let off_for = facts
        .annotations
        .get(ANN_SHUT_OFF_SINCE)
        .and_then(|s| decide::parse_shut_off_since(s))
        .map(|since| Duration::from_secs(now.as_second().saturating_sub(since).max(0) as u64));
    let decision = decide::decide(
        &facts,
        vm_state,
        off_for,
        ctx.settings.out_of_service_after,
        &decide::format_shut_off_since(now),
    );
    let api: Api<Node> = Api::all(ctx.kube.clone());
    match decision {
        Decision::Nothing => {}
        Decision::DeleteNode => {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: node.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            info!(vm = %id, "VM no longer exists: deleting the Node");
            ctx.event(
                &node.object_ref(&()),
                Reason::DeletingNode,
                "DeleteNode",
                format!("Elemento VM {id} no longer exists"),
            )
            .await;
            match api.delete(&facts.name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            missing
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            return Ok(Action::await_change());
        }
        Decision::SetTaints {
            taints,
            shut_off_since,
        } => {
            let mut patch = serde_json::to_value(Node {
                metadata: ObjectMeta {
                    resource_version: facts.resource_version.clone(),
                    ..Default::default()
                },
                spec: Some(NodeSpec {
                    taints: Some(taints),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .map_err(|e| Error::Retry(format!("encoding the taint patch: {e}")))?;
            // Set, or removed with a merge-patch null (which a typed map cannot hold).
            if let Some(since) = shut_off_since {
                patch["metadata"]["annotations"] = json!({ ANN_SHUT_OFF_SINCE: since });
            }
            api.patch(&facts.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            info!(vm = %id, ?vm_state, "updated node taints");
        }
    }
    Ok(if ready {
        Action::await_change()
    } else {
        Action::requeue(period)
    })
}
