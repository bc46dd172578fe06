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
    let power = snap.vms.by_id(&id).map(|vm| vm.power);
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

/// The executor against a scripted Kubernetes API and the simulator: one scenario per decision
/// (nothing, taint a shut-off VM's Node, untaint when it runs, delete once the VM is confirmed
/// gone).
#[cfg(test)]
mod executor_tests {
    use super::*;
    use crate::fixtures::{self, ScriptedApi, step};
    use http::Method;
    use serde_json::{Value, json};

    const SCENARIO: &str = "vms:\n  - {id: vm-on, name: on, template: neon}\n  - {id: vm-off, name: off, template: neon, power: shut off}\n";

    fn node(name: &str, vm: &str, ready: bool, taints: Value) -> Node {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": "7"},
            "spec": {"providerID": format!("elemento://{vm}"), "taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .expect("node")
    }

    fn patched(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
    }

    /// The one patch a taint change makes, as the API received it.
    async fn one_patch(n: &Node) -> Value {
        let name = n.metadata.name.clone().expect("name");
        let path = format!("/api/v1/nodes/{name}");
        let (result, api) = run(
            vec![step(Method::PATCH, &path, 200, patched(&name))],
            n,
            &Missing::default(),
        )
        .await;
        assert!(result.is_ok(), "{result:?}");
        api.verify();
        api.seen().remove(0).body
    }

    async fn run(
        steps: Vec<fixtures::Step>,
        n: &Node,
        missing: &Missing,
    ) -> (Result<Action, Error>, ScriptedApi) {
        let sim = fixtures::simulator(SCENARIO).await;
        let api = ScriptedApi::new(steps);
        let ctx = fixtures::ctx(api.client(), &sim);
        let result = reconcile_inner(n, &ctx, missing).await;
        sim.shutdown().await;
        (result, api)
    }

    #[tokio::test]
    async fn a_ready_node_without_our_taints_costs_no_call() {
        let (result, api) = run(
            vec![],
            &node("on", "vm-on", true, json!([])),
            &Missing::default(),
        )
        .await;
        assert!(result.is_ok(), "{result:?}");
        api.verify();
        assert!(api.seen().is_empty());
    }

    #[tokio::test]
    async fn a_shut_off_vm_taints_its_node_and_starts_the_clock() {
        let user = json!({"key": "user", "effect": "NoSchedule"});
        let n = node("off", "vm-off", false, json!([user]));
        let patch = one_patch(&n).await;
        assert_eq!(
            patch["spec"]["taints"],
            json!([user, {"key": decide::SHUTDOWN_TAINT, "effect": "NoSchedule"}]),
            "the operator's taint is kept"
        );
        assert_eq!(patch["metadata"]["resourceVersion"], "7");
        let since = patch["metadata"]["annotations"][ANN_SHUT_OFF_SINCE]
            .as_str()
            .expect("shut-off-since");
        assert!(decide::parse_shut_off_since(since).is_some(), "{since}");
    }

    #[tokio::test]
    async fn a_running_vm_clears_our_taint_and_the_clock() {
        let n = node(
            "on",
            "vm-on",
            false,
            json!([{"key": decide::SHUTDOWN_TAINT, "effect": "NoSchedule"}]),
        );
        let patch = one_patch(&n).await;
        assert_eq!(patch["spec"]["taints"], json!([]));
        assert!(
            patch["metadata"]["annotations"]
                .as_object()
                .is_some_and(
                    |a| a.contains_key(ANN_SHUT_OFF_SINCE) && a[ANN_SHUT_OFF_SINCE].is_null()
                ),
            "the annotation is removed: {patch}"
        );
    }

    #[tokio::test]
    async fn a_vm_missing_once_waits_and_missing_twice_deletes_the_node() {
        let n = node("gone", "vm-gone", false, json!([]));
        let missing = Missing::default();
        // First miss: no write, a look again after the confirmation window.
        let (result, api) = run(vec![], &n, &missing).await;
        assert_eq!(result.ok(), Some(Action::requeue(GONE_CONFIRMATION)));
        api.verify();
        // Missing from an older listing, long enough ago: the Node goes, with an event.
        missing.0.lock().expect("missing").insert(
            "vm-gone".into(),
            (
                0,
                Instant::now() - GONE_CONFIRMATION - Duration::from_millis(100),
            ),
        );
        let (result, api) = run(
            vec![
                step(
                    Method::POST,
                    "/apis/events.k8s.io/v1/namespaces/default/events",
                    201,
                    json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"}, "eventTime": "2026-12-02T00:00:00.000000Z"}),
                ),
                step(Method::DELETE, "/api/v1/nodes/gone", 200, patched("gone")),
            ],
            &n,
            &missing,
        )
        .await;
        assert!(result.is_ok(), "{result:?}");
        api.verify();
        let seen = api.seen();
        assert_eq!(seen[0].body["reason"], "DeletingNode");
        assert_eq!(
            seen[1].body["preconditions"]["uid"], "uid-gone",
            "only this Node, not a re-registered one of the same name"
        );
        assert!(missing.0.lock().expect("missing").is_empty());
    }
}
