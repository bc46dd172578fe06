//! The node controller: initializes Nodes carrying the uninitialized taint, and keeps the
//! addresses of initialized ones in line with the API.

pub mod decide;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tracing::{debug, info, instrument};

use crate::context::{Ctx, Error};
use crate::provider_id::{self, ProviderId};
use decide::{NodeFacts, UNINITIALIZED_TAINT, VmMatch};

const NAME: &str = "cloud-node";
/// An uninitialized Node accepts a listing this old…
const INIT_MAX_AGE: Duration = Duration::from_secs(5);
/// …and one this recent when its VM is not in the older one (it may have just been created).
const INIT_FRESH: Duration = Duration::from_secs(1);

pub async fn run(
    ctx: Arc<Ctx>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<Node> = Api::all(ctx.kube.clone());
    Controller::new(api, watcher::Config::default())
        .with_config(Config::default().concurrency(ctx.settings.concurrent_node_syncs))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn error_policy(node: Arc<Node>, err: &Error, ctx: Arc<Ctx>) -> Action {
    let wait = ctx.backoff(&format!("{NAME}/{}", node.name_any()));
    debug!(node = %node.name_any(), error = %err, ?wait, "node reconcile failed");
    Action::requeue(wait)
}

#[instrument(skip_all, fields(node = %node.name_any()))]
async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&node, &ctx).await;
    ctx.metrics
        .reconciled(NAME, result.is_ok(), started.elapsed());
    if result.is_ok() {
        ctx.succeeded(&format!("{NAME}/{}", node.name_any()));
    }
    result
}

async fn reconcile_inner(node: &Node, ctx: &Ctx) -> Result<Action, Error> {
    let facts = NodeFacts::from_node(node);
    if !facts.has_taint(UNINITIALIZED_TAINT) {
        return refresh_addresses(node, &facts, ctx).await;
    }
    let mut snap = ctx.inventory.vms(INIT_MAX_AGE).await?;
    if !matches!(
        decide::find_vm(&facts, &snap.vms),
        VmMatch::ByProviderId(_)
            | VmMatch::ByName(_)
            | VmMatch::ByInternalIp(_)
            | VmMatch::Foreign(_)
    ) && snap.taken.elapsed() > INIT_FRESH
    {
        snap = ctx.inventory.vms(INIT_FRESH).await?;
    }
    let vm = match decide::find_vm(&facts, &snap.vms) {
        VmMatch::ByProviderId(v) | VmMatch::ByName(v) | VmMatch::ByInternalIp(v) => v.clone(),
        VmMatch::Foreign(p) => {
            debug!(provider_id = %p, "Node belongs to another cloud; leaving it alone");
            return Ok(Action::await_change());
        }
        VmMatch::NotFound(why) | VmMatch::Ambiguous(why) => {
            let note =
                format!("{why}; the Node keeps the {UNINITIALIZED_TAINT} taint and is retried");
            ctx.event(
                &node.object_ref(&()),
                true,
                "ElementoVMNotFound",
                "InitializeNode",
                note.clone(),
            )
            .await;
            return Err(Error::Retry(note));
        }
    };
    let templates = ctx.inventory.templates().await;
    let patch = decide::init_patch(
        &facts,
        &vm,
        &templates,
        node.metadata.resource_version.as_deref(),
    );
    let api: Api<Node> = Api::all(ctx.kube.clone());
    let pp = PatchParams::default();
    let after_status = api
        .patch_status(&facts.name, &pp, &Patch::Merge(&patch.status))
        .await?;
    // A reconcile queued by our own status patch can find the taint already removed by the
    // previous one: then the Node is done (no second patch, no second latency sample).
    let still_tainted = after_status
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == UNINITIALIZED_TAINT));
    if !still_tainted {
        return Ok(Action::requeue(ctx.settings.node_status_update_frequency));
    }
    // Guard the main patch with the version our own status patch produced: a change by anyone
    // else in between still conflicts, ours does not (that cost every Node a retry).
    let mut main = patch.main;
    main["metadata"]["resourceVersion"] = serde_json::json!(after_status.metadata.resource_version);
    api.patch(&facts.name, &pp, &Patch::Merge(&main)).await?;
    if let Some(created) = &node.metadata.creation_timestamp {
        let age = k8s_openapi::jiff::Timestamp::now().duration_since(created.0);
        if let Ok(d) = Duration::try_from(age) {
            ctx.metrics.node_init.observe(d.as_secs_f64());
        }
    }
    info!(vm = %vm.id, provider_id = %provider_id::format(&vm.id), "initialized node");
    Ok(Action::requeue(ctx.settings.node_status_update_frequency))
}

async fn refresh_addresses(node: &Node, facts: &NodeFacts, ctx: &Ctx) -> Result<Action, Error> {
    let ProviderId::Elemento(id) = provider_id::parse(facts.provider_id.as_deref()) else {
        return Ok(Action::await_change());
    };
    let every = ctx.settings.node_status_update_frequency;
    // Half the period: all Nodes refreshing in one period share about two listings.
    let snap = ctx.inventory.vms(every / 2).await?;
    if let Some(vm) = snap.by_id(&id)
        && let Some(status) = decide::address_refresh(facts, vm)
    {
        let api: Api<Node> = Api::all(ctx.kube.clone());
        api.patch_status(
            &node.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await?;
        info!(vm = %id, "updated node addresses");
    }
    Ok(Action::requeue(every))
}
