//! The node controller: initializes Nodes carrying the uninitialized taint, and keeps the
//! addresses of initialized ones in line with the API.

pub mod decide;
mod queue;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tracing::{debug, info, instrument};

use crate::context::{Ctx, Error};
use crate::events::Reason;
use crate::runner;
use decide::{NodePlan, NodeView, VmMatch};
use elemento_api::provider_id::{self, ProviderId};

const NAME: &str = "cloud-node";
/// An uninitialized Node accepts a listing this old…
const INIT_MAX_AGE: Duration = Duration::from_secs(5);
/// …and one this recent when its VM is not in the older one (it may have just been created).
const INIT_FRESH: Duration = Duration::from_secs(1);

/// What this controller knows of a Node's versions from its own initialization writes.
///
/// Each initialization writes twice at once (status, and the taint), and each write's watch
/// event queues a reconcile. An event that arrives while the writes are in flight shows the Node
/// half-written (e.g. untainted but without addresses): reconciled then, it would write the
/// addresses a second time (60 needless status patches in a 1000-Node burst, docs/benchmarks.md).
/// So those reconciles are deferred until the writes end, and run then only if one of them saw
/// a version the writes did not supersede (the complete one, or someone else's change). After
/// the writes, the versions they moved past are skipped without an API call: the newer
/// version's event is on its way and queues its own reconcile.
#[derive(Default)]
pub struct Superseded(Mutex<HashMap<String, OwnWrites>>);

enum OwnWrites {
    /// Writes in flight; the versions whose reconciles were deferred.
    InFlight { deferred: Vec<Option<String>> },
    /// Versions we wrote past, until another version is seen.
    WrotePast(Vec<String>, Instant),
}

/// A record older than this is dropped (its Node was deleted before its next event).
const SUPERSEDED_KEEP: Duration = Duration::from_secs(300);

impl Superseded {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, OwnWrites>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Our writes to `node` start: its reconciles wait for [`Self::end`].
    fn begin(&self, node: &str) {
        self.lock().insert(
            node.to_string(),
            OwnWrites::InFlight {
                deferred: Vec::new(),
            },
        );
    }

    /// Our writes to `node` ended, moving past `versions` (none when they failed). True when a
    /// reconcile deferred meanwhile saw a version not among them: it must run again now.
    fn end(&self, node: &str, versions: Vec<String>) -> bool {
        let mut m = self.lock();
        m.retain(
            |_, r| !matches!(r, OwnWrites::WrotePast(_, at) if at.elapsed() >= SUPERSEDED_KEEP),
        );
        let rerun = match m.get(node) {
            Some(OwnWrites::InFlight { deferred }) => deferred
                .iter()
                .any(|d| d.as_ref().is_none_or(|d| !versions.contains(d))),
            _ => false,
        };
        m.insert(
            node.to_string(),
            OwnWrites::WrotePast(versions, Instant::now()),
        );
        rerun
    }

    /// Whether a reconcile of `version` of `node` is to be skipped: our writes to it are in
    /// flight (the reconcile is deferred), or it is a version we already wrote past. Any other
    /// version ends the record (the cache has caught up, or someone else changed the Node).
    fn is_stale(&self, node: &str, version: Option<&str>) -> bool {
        let mut m = self.lock();
        let stale = match (m.get_mut(node), version) {
            (Some(OwnWrites::InFlight { deferred }), v) => {
                deferred.push(v.map(str::to_string));
                true
            }
            (Some(OwnWrites::WrotePast(old, _)), Some(v)) => old.iter().any(|o| o == v),
            _ => false,
        };
        if !stale {
            m.remove(node);
        }
        stale
    }
}

pub struct NodeController {
    ctx: Arc<Ctx>,
    store: Store<Node>,
    superseded: Superseded,
    /// Nodes waiting for their initialization; `--concurrent-node-syncs` workers take them in
    /// the order they came.
    init_queue: queue::InitQueue,
    /// Nodes whose reconcile was deferred during our writes and must run again (see
    /// [`Superseded`]).
    rerun: futures::channel::mpsc::UnboundedSender<ObjectRef<Node>>,
}

/// Runs on the shared Node cache: `triggers` names the Nodes to reconcile.
pub async fn run(
    ctx: Arc<Ctx>,
    triggers: impl Stream<Item = Arc<Node>> + Send + 'static,
    store: Store<Node>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let workers = usize::from(ctx.settings.concurrent_node_syncs.max(1));
    let (rerun, reruns) = futures::channel::mpsc::unbounded();
    let state = Arc::new(NodeController {
        ctx,
        store: store.clone(),
        superseded: Superseded::default(),
        init_queue: queue::InitQueue::default(),
        rerun,
    });
    // Dropped, and so stopped, when the controller stops.
    let mut init_workers = tokio::task::JoinSet::new();
    for _ in 0..workers {
        init_workers.spawn(init_worker(state.clone()));
    }
    // No limit here: an uninitialized Node's reconcile only queues it, and the others (addresses
    // from the cached listing) never wait.
    Controller::for_shared_stream(triggers, store)
        .with_config(Config::default().concurrency(0))
        .reconcile_on(reruns)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, state)
        .for_each(|_| futures::future::ready(()))
        .await;
}

impl NodeController {
    /// Our writes to `node` ended: records what they superseded, and reruns a reconcile
    /// deferred meanwhile that saw something newer.
    fn end_writes(&self, node: &str, superseded: Vec<String>) {
        if self.superseded.end(node, superseded) {
            // Closed only when the controller stops, when there is nothing left to rerun.
            let _ = self.rerun.unbounded_send(ObjectRef::new(node));
        }
    }
}

/// Takes Nodes off the initialization queue, one at a time, until stopped.
async fn init_worker(state: Arc<NodeController>) {
    loop {
        let name = state.init_queue.pop().await;
        initialize_queued(&state, &name).await;
        state.init_queue.done(&name);
    }
}

/// Initializes `name` as the cache has it now (it may have changed, been initialized or deleted
/// while it waited); a failure queues it again after the Node's backoff.
#[instrument(skip_all, fields(node = %name))]
async fn initialize_queued(state: &Arc<NodeController>, name: &str) {
    let ctx = &state.ctx;
    debug!(stage = "permit", "node path");
    let Some(node) = state.store.get(&ObjectRef::new(name)) else {
        return;
    };
    if state
        .superseded
        .is_stale(name, node.metadata.resource_version.as_deref())
    {
        ctx.metrics.skipped(NAME);
        return;
    }
    if !NodeView::from_node(&node).is_uninitialized() {
        return;
    }
    let key = runner::object_key(NAME, None, name);
    if let Err(err) = runner::observe(ctx, NAME, &key, reconcile_inner(&node, state)).await {
        let wait = ctx.backoff(&key);
        tracing::warn!(controller = NAME, object = %key, kind = err.kind(), error = %err, ?wait, "initialization failed; queued again after the backoff");
        let state = state.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            state.init_queue.push(&name);
        });
    }
}

fn error_policy(node: Arc<Node>, err: &Error, state: Arc<NodeController>) -> Action {
    let key = runner::object_key(NAME, None, &node.name_any());
    runner::requeue_after_error(&state.ctx, NAME, &key, err)
}

#[instrument(skip_all, fields(node = %node.name_any()))]
async fn reconcile(node: Arc<Node>, state: Arc<NodeController>) -> Result<Action, Error> {
    let ctx = &state.ctx;
    let skip = |n: &Node| {
        state
            .superseded
            .is_stale(&n.name_any(), n.metadata.resource_version.as_deref())
    };
    if skip(&node) {
        ctx.metrics.skipped(NAME);
        return Ok(Action::await_change());
    }
    if NodeView::from_node(&node).is_uninitialized() {
        // Trace points of one Node's path (RUST_LOG=elemento_ccm::node=debug; docs/benchmarks.md
        // reads them): queued, taken by a worker, listed, written.
        debug!(stage = "reconcile", "node path");
        state.init_queue.push(&node.name_any());
        return Ok(Action::await_change());
    }
    let key = runner::object_key(NAME, None, &node.name_any());
    runner::observe(ctx, NAME, &key, reconcile_inner(&node, &state)).await
}

/// Gathers what the Node's plan needs (a VM listing; for an initialization also the templates;
/// the topology policy), decides once, and executes the plan.
async fn reconcile_inner(node: &Node, state: &NodeController) -> Result<Action, Error> {
    let ctx = &state.ctx;
    let facts = NodeView::from_node(node);
    let initializing = facts.is_uninitialized();
    let every = ctx.settings.node_status_update_frequency;
    // Another cloud's Node, or an initialized one without our providerID: nothing to read.
    match facts.provider() {
        ProviderId::Foreign(p) => {
            debug!(provider_id = %p, "Node belongs to another cloud; leaving it alone");
            return Ok(Action::await_change());
        }
        ProviderId::Unset if !initializing => return Ok(Action::await_change()),
        _ => {}
    }
    let (snap, templates, policy) = if initializing {
        // The three reads are independent: in a burst after a start, done one after the other
        // they held the first Nodes ~180 ms (trace: permit -> listed, docs/benchmarks.md).
        let (snap, templates, policy) = tokio::join!(
            ctx.inventory.vms(INIT_MAX_AGE),
            ctx.inventory.templates(),
            ctx.topology_policy()
        );
        let mut snap = snap?;
        // A VM created a moment ago may be missing from a listing a few seconds old.
        if !matches!(
            decide::find_vm(&facts, &snap.vms),
            VmMatch::ByProviderId(_) | VmMatch::ByName(_) | VmMatch::ByIp(_) | VmMatch::Foreign(_)
        ) && snap.taken.elapsed() > INIT_FRESH
        {
            snap = ctx.inventory.vms(INIT_FRESH).await?;
        }
        (snap, templates, policy)
    } else {
        // Half the period: all Nodes refreshing in one period share about two listings.
        let (snap, policy) = tokio::join!(ctx.inventory.vms(every / 2), ctx.topology_policy());
        (snap?, Default::default(), policy)
    };
    if initializing {
        debug!(stage = "listed", generation = snap.generation, "node path");
    }
    let plan = decide::plan(&facts, &snap.vms, &templates, &policy);
    let api: Api<Node> = Api::all(ctx.kube.clone());
    let pp = PatchParams::default();
    match plan {
        NodePlan::Leave => Ok(Action::requeue(every)),
        NodePlan::Retry { note } => {
            ctx.event(
                &node.object_ref(&()),
                Reason::ElementoVmNotFound,
                "InitializeNode",
                note.clone(),
            )
            .await;
            Err(Error::Retry(note))
        }
        NodePlan::Refresh { addresses, labels } => {
            if let Some(addresses) = addresses {
                let patch = decide::addresses_patch(&addresses);
                api.patch_status(&facts.name, &pp, &Patch::Merge(&patch))
                    .await?;
                info!("updated node addresses");
            }
            if let Some(labels) = labels {
                let patch = decide::labels_patch(&labels);
                api.patch(&facts.name, &pp, &Patch::Merge(&patch)).await?;
                info!("updated node topology labels");
            }
            Ok(Action::requeue(every))
        }
        NodePlan::Initialize { vm_id, patch } => {
            initialize(node, &facts, state, &vm_id, patch).await
        }
    }
}

/// The status patch and the main patch, sent together (see [`decide::InitPatch`]).
async fn initialize(
    node: &Node,
    facts: &NodeView,
    state: &NodeController,
    vm_id: &str,
    patch: decide::InitPatch,
) -> Result<Action, Error> {
    let ctx = &state.ctx;
    let api: Api<Node> = Api::all(ctx.kube.clone());
    let pp = PatchParams::default();
    let main = Patch::<()>::Json(patch.main_patch().map_err(kube::Error::SerdeError)?);
    let status = Patch::Merge(patch.status_patch());
    state.superseded.begin(&facts.name);
    let (after_status, after_main) = tokio::join!(
        api.patch_status(&facts.name, &pp, &status),
        api.patch(&facts.name, &pp, &main),
    );
    debug!(stage = "written", "node path");
    let (after_status, after_main) = match after_status.and_then(|s| after_main.map(|m| (s, m))) {
        Ok(written) => written,
        Err(e) => {
            state.end_writes(&facts.name, Vec::new());
            return Err(e.into());
        }
    };
    // Our two writes land in either order, and the earlier one's version lacks the other's
    // half: it and the version read are superseded, and their watch events' reconciles are
    // skipped without a request (see `Superseded`). Versions are opaque, so the later write is
    // told by its content, not by comparing them.
    let complete = |n: &Node| {
        let v = NodeView::from_node(n);
        !v.is_uninitialized() && v.addresses == patch.addresses
    };
    let mut superseded: Vec<String> = std::iter::once(node)
        .chain(
            [&after_status, &after_main]
                .into_iter()
                .filter(|n| !complete(n)),
        )
        .filter_map(|n| n.metadata.resource_version.clone())
        .collect();
    superseded.dedup();
    state.end_writes(&facts.name, superseded);
    if let Some(created) = &node.metadata.creation_timestamp {
        let age = k8s_openapi::jiff::Timestamp::now().duration_since(created.0);
        if let Ok(d) = Duration::try_from(age) {
            ctx.metrics.node_init.observe(d.as_secs_f64());
        }
    }
    info!(vm = %vm_id, provider_id = %provider_id::format(vm_id), "initialized node");
    Ok(Action::requeue(ctx.settings.node_status_update_frequency))
}

#[cfg(test)]
mod tests {
    use super::Superseded;

    #[test]
    fn versions_we_wrote_past_are_stale_until_a_newer_one_is_seen() {
        let s = Superseded::default();
        assert!(!s.is_stale("n1", Some("10")), "nothing recorded");
        assert!(
            !s.end("n1", vec!["10".into(), "11".into()]),
            "nothing deferred"
        );
        assert!(s.is_stale("n1", Some("10")));
        assert!(s.is_stale("n1", Some("11")));
        assert!(
            !s.is_stale("n2", Some("11")),
            "other Nodes are not affected"
        );
        // The newer version ended the record: an old one is no longer recognised.
        assert!(!s.is_stale("n1", Some("12")));
        assert!(!s.is_stale("n1", Some("10")));
        s.end("n1", vec!["20".into()]);
        assert!(
            !s.is_stale("n1", None),
            "a version-less object is never skipped"
        );
    }

    #[test]
    fn reconciles_during_our_writes_wait_and_rerun_only_for_a_version_we_did_not_supersede() {
        let s = Superseded::default();
        s.begin("n1");
        assert!(s.is_stale("n1", Some("11")), "deferred while writing");
        assert!(
            !s.is_stale("n2", Some("11")),
            "other Nodes are not affected"
        );
        assert!(
            !s.end("n1", vec!["10".into(), "11".into()]),
            "the deferred version was one we wrote past: nothing to rerun"
        );
        assert!(s.is_stale("n1", Some("10")), "and the record holds after");

        s.begin("n1");
        assert!(s.is_stale("n1", Some("11")));
        assert!(
            s.is_stale("n1", Some("12")),
            "the complete version, seen early"
        );
        assert!(
            s.end("n1", vec!["10".into(), "11".into()]),
            "12 was deferred and is not superseded: rerun"
        );

        s.begin("n1");
        assert!(s.is_stale("n1", Some("13")));
        assert!(
            s.end("n1", Vec::new()),
            "failed writes rerun what was deferred"
        );
        assert!(!s.is_stale("n1", Some("13")), "and supersede nothing");
    }
}

/// The executor against a scripted Kubernetes API and the simulator: one scenario per outcome
/// (initialize, retry with an event, refresh, leave alone, another cloud's Node).
#[cfg(test)]
mod executor_tests {
    use super::*;
    use crate::fixtures::{self, ScriptedApi, step, together};
    use http::Method;
    use serde_json::{Value, json};

    const SCENARIO: &str = "vms:\n  - {id: vm-1, name: n1, template: neon, ipv4: 10.0.0.5, server_url: 'https://atomos-1.local:7777'}\n";

    fn node(name: &str, pid: Option<&str>, tainted: bool, addresses: Value, labels: Value) -> Node {
        let taints = if tainted {
            json!([{"key": decide::UNINITIALIZED_TAINT, "value": "true", "effect": "NoSchedule"}])
        } else {
            json!([])
        };
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "resourceVersion": "1", "labels": labels},
            "spec": {"providerID": pid, "taints": taints},
            "status": {"addresses": addresses}
        }))
        .expect("node")
    }

    /// A Node as the kubelet registers it: tainted, no providerID, no addresses, its hostname.
    fn joining(name: &str) -> Node {
        node(
            name,
            None,
            true,
            json!([]),
            json!({"kubernetes.io/hostname": name}),
        )
    }

    /// The topology policy's PersistentVolume listing (none), the first request of a reconcile.
    fn pv_listing() -> fixtures::Step {
        step(
            Method::GET,
            "/api/v1/persistentvolumes",
            200,
            json!({"apiVersion": "v1", "kind": "PersistentVolumeList", "metadata": {}, "items": []}),
        )
    }

    async fn run(
        scenario: &str,
        steps: Vec<fixtures::Step>,
        n: &Node,
    ) -> (Result<Action, Error>, ScriptedApi, NodeController) {
        let sim = fixtures::simulator(scenario).await;
        let api = ScriptedApi::new(steps);
        let ctx = fixtures::ctx(api.client(), &sim);
        let (store, _writer) = kube::runtime::reflector::store();
        let controller = NodeController {
            ctx,
            store,
            superseded: Superseded::default(),
            init_queue: Default::default(),
            rerun: futures::channel::mpsc::unbounded().0,
        };
        let result = reconcile_inner(n, &controller).await;
        sim.shutdown().await;
        (result, api, controller)
    }

    #[tokio::test]
    async fn initialize_writes_status_and_identity_labels_and_taints_together() {
        let n = joining("n1");
        let mut after_status = serde_json::to_value(&n).expect("json");
        after_status["metadata"]["resourceVersion"] = json!("2");
        after_status["status"]["addresses"] = json!([
            {"type": "InternalIP", "address": "10.0.0.5"},
            {"type": "Hostname", "address": "n1"}
        ]);
        let mut after_main = serde_json::to_value(&n).expect("json");
        after_main["metadata"]["resourceVersion"] = json!("3");
        after_main["spec"]["taints"] = json!([]);
        after_main["status"]["addresses"] = after_status["status"]["addresses"].clone();
        let steps = [
            vec![pv_listing()],
            together(vec![
                step(Method::PATCH, "/api/v1/nodes/n1/status", 200, after_status),
                step(Method::PATCH, "/api/v1/nodes/n1", 200, after_main),
            ]),
        ];
        let (result, api, controller) =
            run(SCENARIO, steps.into_iter().flatten().collect(), &n).await;
        assert!(result.is_ok(), "{result:?}");
        api.verify();
        let seen = api.seen();
        let body = |path: &str| {
            seen.iter()
                .find(|s| s.path == path)
                .map(|s| s.body.clone())
                .expect(path)
        };
        assert_eq!(
            body("/api/v1/nodes/n1/status")["status"]["addresses"][0],
            json!({"type": "InternalIP", "address": "10.0.0.5"})
        );
        let main = body("/api/v1/nodes/n1");
        let uninitialized =
            json!([{"key": decide::UNINITIALIZED_TAINT, "value": "true", "effect": "NoSchedule"}]);
        assert_eq!(
            main[0],
            json!({"op": "test", "path": "/spec/taints", "value": uninitialized}),
            "guarded by the taints as read, not by a version the status write changes"
        );
        assert_eq!(
            main[1],
            json!({"op": "replace", "path": "/spec/taints", "value": []})
        );
        assert_eq!(
            main[2],
            json!({"op": "add", "path": "/spec/providerID", "value": "elemento://vm-1"})
        );
        let label = |k: &str| {
            let path = format!(
                "/metadata/labels/{}",
                k.replace('~', "~0").replace('/', "~1")
            );
            main.as_array()
                .and_then(|ops| ops.iter().find(|o| o["path"] == path.as_str()))
                .map(|o| o["value"].clone())
        };
        assert_eq!(label("topology.kubernetes.io/zone"), Some(json!("atomos")));
        assert_eq!(
            label("node.kubernetes.io/instance-type"),
            Some(json!("neon"))
        );
        // The version read and the earlier write's (it lacks the taint removal) are superseded;
        // the later write's is the Node's current state.
        assert!(controller.superseded.is_stale("n1", Some("1")));
        assert!(controller.superseded.is_stale("n1", Some("2")));
        assert!(!controller.superseded.is_stale("n1", Some("3")));
    }

    #[tokio::test]
    async fn a_taint_changed_meanwhile_fails_the_write_and_is_retried() {
        let n = joining("n1");
        let invalid = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 422,
            "reason": "Invalid", "message": "the server rejected our request: testing value /spec/taints failed"});
        let (result, api, _) = run(
            SCENARIO,
            [
                vec![pv_listing()],
                together(vec![
                    step(
                        Method::PATCH,
                        "/api/v1/nodes/n1/status",
                        200,
                        serde_json::to_value(&n).expect("json"),
                    ),
                    step(Method::PATCH, "/api/v1/nodes/n1", 422, invalid),
                ]),
            ]
            .into_iter()
            .flatten()
            .collect(),
            &n,
        )
        .await;
        api.verify();
        assert!(
            matches!(&result, Err(Error::Kube(kube::Error::Api(s))) if s.code == 422),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn no_vm_means_an_event_and_a_retry_and_no_write() {
        let n = node("ghost", None, true, json!([]), json!({}));
        let (result, api, _) = run(
            SCENARIO,
            vec![
                pv_listing(),
                step(
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/default/events",
                201,
                json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"}, "eventTime": "2026-12-02T00:00:00.000000Z"}),
            ),
            ],
            &n,
        )
        .await;
        assert!(
            matches!(result, Err(Error::Retry(ref why)) if why.contains("ghost")),
            "{result:?}"
        );
        api.verify();
        let event = &api.seen()[1].body;
        assert_eq!(event["reason"], "ElementoVMNotFound");
        assert_eq!(event["type"], "Warning");
    }

    #[tokio::test]
    async fn an_initialized_node_gets_its_addresses_and_labels_refreshed() {
        let n = node(
            "n1",
            Some("elemento://vm-1"),
            false,
            json!([{"type": "InternalIP", "address": "10.9.9.9"}]),
            json!({"topology.kubernetes.io/zone": "atomos-1.local"}),
        );
        let ok = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}});
        let (result, api, _) = run(
            SCENARIO,
            vec![
                pv_listing(),
                step(Method::PATCH, "/api/v1/nodes/n1/status", 200, ok.clone()),
                step(Method::PATCH, "/api/v1/nodes/n1", 200, ok),
            ],
            &n,
        )
        .await;
        assert!(result.is_ok(), "{result:?}");
        api.verify();
        let seen = api.seen();
        assert_eq!(
            seen[1].body["status"]["addresses"][0]["address"],
            "10.0.0.5"
        );
        let labels = &seen[2].body["metadata"]["labels"];
        assert_eq!(labels["topology.kubernetes.io/zone"], "atomos");
        assert_eq!(labels["node.elemento.cloud/host"], "atomos-1.local");
    }

    #[tokio::test]
    async fn an_up_to_date_node_is_left_alone() {
        let labels = json!({
            "topology.kubernetes.io/zone": "atomos", "topology.kubernetes.io/region": "elemento",
            "node.elemento.cloud/provider": "atomos", "node.elemento.cloud/host": "atomos-1.local"
        });
        let n = node(
            "n1",
            Some("elemento://vm-1"),
            false,
            json!([{"type": "InternalIP", "address": "10.0.0.5"}, {"type": "Hostname", "address": "n1"}]),
            labels,
        );
        let (result, api, _) = run(SCENARIO, vec![pv_listing()], &n).await;
        assert!(result.is_ok(), "{result:?}");
        api.verify();
    }

    #[tokio::test]
    async fn another_clouds_node_is_never_touched() {
        let n = node(
            "n1",
            Some("aws:///eu-west-1a/i-1"),
            true,
            json!([]),
            json!({}),
        );
        let (result, api, _) = run(SCENARIO, vec![], &n).await;
        assert!(result.is_ok(), "{result:?}");
        api.verify();
        assert!(api.seen().is_empty());
    }
}
