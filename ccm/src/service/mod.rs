//! The service controller: an Elemento load balancer per `type: LoadBalancer` Service of our class.
//!
//! Cost on the cloud API: the LBs are listed once and kept in a cache updated from every answer,
//! so a reconcile whose desired LB equals the cached one makes no call at all. Node changes
//! re-reconcile Services only when the set of eligible Nodes changes (not on heartbeats).

pub mod annotations;
pub mod decide;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use elemento_api::types::{LbOwner, LoadBalancer, LoadBalancerSpec};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio::sync::Mutex;
use tracing::{info, instrument, warn};

use crate::context::{Ctx, Error};
use crate::events::Reason;
use crate::nodes::NodeEvent;
use crate::runner;
use decide::{FoundLb, LbPlan, SpecChange, TargetNode};
use elemento_api::node::NodeView;
use elemento_api::provider_id::ProviderId;

const NAME: &str = "service";
pub use annotations::ANN_LB_ID;
/// Full re-listing of LBs, to notice ones deleted out of band.
const LB_CACHE_TTL: Duration = Duration::from_secs(600);

/// What the cache keeps of a load balancer: enough to find it, report its address and tell
/// whether it matches a desired spec. Not the spec itself: its targets (one VM id per Node, in
/// every LB) were most of the CCM's memory at 1000 Nodes and 200 LBs.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedLb {
    pub id: String,
    pub name: String,
    pub ip: Option<String>,
    pub hostname: Option<String>,
    pub owner: Option<LbOwner>,
    spec_digest: u64,
}

impl CachedLb {
    fn new(lb: &LoadBalancer) -> Self {
        Self {
            id: lb.id.clone(),
            name: lb.spec.name.clone(),
            ip: lb.ip.clone(),
            hostname: lb.spec.hostname.clone(),
            owner: lb.spec.owner.clone(),
            spec_digest: spec_digest(&lb.spec),
        }
    }

    fn found(&self) -> FoundLb {
        FoundLb {
            id: self.id.clone(),
            name: self.name.clone(),
            owner: self.owner.clone(),
        }
    }

    fn matches(&self, spec: &LoadBalancerSpec) -> bool {
        self.spec_digest == spec_digest(spec)
    }
}

/// A digest of everything in a spec (same spec, same digest within this process).
fn spec_digest(spec: &LoadBalancerSpec) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(spec).unwrap_or_default().hash(&mut h);
    h.finish()
}

/// Load balancers by name, as last seen.
#[derive(Default)]
pub struct LbCache {
    by_name: Option<(HashMap<String, CachedLb>, Instant)>,
}

pub struct ServiceState {
    ctx: Arc<Ctx>,
    nodes: Store<Node>,
    lbs: Mutex<LbCache>,
    /// Cleared when the endpoint shows it has no update route (no Elemento source has one,
    /// reference §8.1); from then on a changed LB is replaced instead (`replace_lb`).
    update_supported: AtomicBool,
    /// Until when a "yes" from `cancreate` is trusted for further creates (a burst of new
    /// Services asks once, not once per LB); any failed create forgets it.
    can_create_until: std::sync::Mutex<Option<Instant>>,
}

/// How long a "yes" from `cancreate` stands for the next creates.
const CAN_CREATE_TTL: Duration = Duration::from_secs(10);

impl ServiceState {
    /// The cache, listed again when missing or older than the TTL.
    async fn lbs(&self) -> Result<tokio::sync::MutexGuard<'_, LbCache>, Error> {
        let mut c = self.lbs.lock().await;
        if c.by_name
            .as_ref()
            .is_none_or(|(_, at)| at.elapsed() > LB_CACHE_TTL)
        {
            let list = self.ctx.api.list_load_balancers().await?;
            c.by_name = Some((
                list.iter()
                    .map(|lb| (lb.spec.name.clone(), CachedLb::new(lb)))
                    .collect(),
                Instant::now(),
            ));
        }
        Ok(c)
    }

    /// After an ambiguous failure the cache may be wrong (a create may have happened).
    async fn invalidate(&self) {
        self.lbs.lock().await.by_name = None;
    }
}

impl ServiceState {
    /// Whether `cancreate` said yes less than [`CAN_CREATE_TTL`] ago.
    fn can_create_recently(&self) -> bool {
        self.can_create_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|until| Instant::now() < until)
    }

    /// Remembers a yes for [`CAN_CREATE_TTL`], or forgets it.
    fn remember_can_create(&self, yes: bool) {
        *self
            .can_create_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = yes.then(|| Instant::now() + CAN_CREATE_TTL);
    }
}

impl LbCache {
    fn get(&self, name: &str) -> Option<&CachedLb> {
        self.by_name.as_ref().and_then(|(m, _)| m.get(name))
    }
    fn by_id(&self, id: &str) -> Option<&CachedLb> {
        self.by_name
            .as_ref()
            .and_then(|(m, _)| m.values().find(|l| l.id == id))
    }
    /// The LB whose id the Service's annotation records, if the cache knows it.
    fn recorded_for(&self, svc: &Service) -> Option<CachedLb> {
        svc.annotations()
            .get(ANN_LB_ID)
            .and_then(|id| self.by_id(id))
            .cloned()
    }
    fn all(&self) -> impl Iterator<Item = &CachedLb> {
        self.by_name.iter().flat_map(|(m, _)| m.values())
    }
    fn put(&mut self, lb: &LoadBalancer) {
        if let Some((m, _)) = &mut self.by_name {
            m.insert(lb.spec.name.clone(), CachedLb::new(lb));
        }
    }
    fn remove_id(&mut self, id: &str) {
        if let Some((m, _)) = &mut self.by_name {
            m.retain(|_, l| l.id != id);
        }
    }
}

fn target_node(n: &Node) -> TargetNode {
    let f = NodeView::from_node(n);
    let vm_id = match f.provider() {
        ProviderId::Elemento(id) => Some(id),
        _ => None,
    };
    TargetNode {
        initialized: vm_id.is_some() && !f.is_uninitialized(),
        vm_id,
        deleting: f.deleting,
        name: f.name,
        labels: f.labels,
    }
}

/// What about a Node can change LB targets: its VM, labels, initialization, deletion.
fn target_fingerprint(n: &Node) -> String {
    let t = target_node(n);
    format!(
        "{:?}|{}|{}|{:?}",
        t.vm_id, t.initialized, t.deleting, t.labels
    )
}

/// Runs with the shared Node cache: `node_events` re-reconciles every Service when the set of
/// eligible Nodes changes (heartbeats change nothing).
pub async fn run(
    ctx: Arc<Ctx>,
    nodes: Store<Node>,
    node_events: impl futures::Stream<Item = NodeEvent> + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let store = nodes.clone();
    let node_changes = node_events.filter_map(move |ev| {
        let changed = match &ev {
            NodeEvent::Applied(n) => {
                let fp = target_fingerprint(n);
                seen.insert(n.name_any(), fp.clone()) != Some(fp)
            }
            NodeEvent::Deleted(n) => seen.remove(&n.name_any()).is_some(),
            // Deletions during the gap were not seen one by one: start over from the cache.
            NodeEvent::Relisted => {
                seen = store
                    .state()
                    .iter()
                    .map(|n| (n.name_any(), target_fingerprint(n)))
                    .collect();
                true
            }
        };
        futures::future::ready(changed.then_some(()))
    });
    let state = Arc::new(ServiceState {
        ctx: ctx.clone(),
        nodes: nodes.clone(),
        lbs: Mutex::new(LbCache::default()),
        update_supported: AtomicBool::new(true),
        can_create_until: std::sync::Mutex::new(None),
    });
    let api: Api<Service> = Api::all(ctx.kube.clone());
    Controller::new(api, watcher::Config::default())
        .with_config(
            Config::default()
                .concurrency(ctx.settings.concurrent_service_syncs)
                .debounce(Duration::from_millis(200)),
        )
        .reconcile_all_on(node_changes)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, state)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn key(svc: &Service) -> String {
    runner::object_key(NAME, svc.namespace().as_deref(), &svc.name_any())
}

fn error_policy(svc: Arc<Service>, err: &Error, state: Arc<ServiceState>) -> Action {
    runner::requeue_after_error(&state.ctx, NAME, &key(&svc), err)
}

#[instrument(skip_all, fields(service = %key(&svc)))]
async fn reconcile(svc: Arc<Service>, state: Arc<ServiceState>) -> Result<Action, Error> {
    let result = runner::observe(&state.ctx, NAME, &key(&svc), reconcile_inner(&svc, &state)).await;
    // A create or update may have happened without us seeing the answer.
    if let Err(Error::Elemento(e)) = &result
        && e.is_transient()
    {
        state.invalidate().await;
    }
    result
}

async fn reconcile_inner(svc: &Service, state: &ServiceState) -> Result<Action, Error> {
    let ctx = &state.ctx;
    if decide::wants_lb(svc, &ctx.settings.class) {
        ensure(svc, state).await
    } else if decide::has_finalizer(svc) {
        cleanup(svc, state).await
    } else {
        Ok(Action::await_change())
    }
}

async fn ensure(svc: &Service, state: &ServiceState) -> Result<Action, Error> {
    let ctx = &state.ctx;
    let oref = svc.object_ref(&());
    let opts =
        match annotations::parse_annotations(&svc.annotations().clone(), &ctx.settings.lb_defaults)
        {
            Ok(o) => o,
            Err(errors) => {
                let note = errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ");
                ctx.event(
                    &oref,
                    Reason::InvalidLoadBalancerAnnotation,
                    "EnsureLoadBalancer",
                    format!("{note}. The load balancer is left as it is."),
                )
                .await;
                return Ok(Action::await_change());
            }
        };
    let name = decide::lb_name(&ctx.settings.cluster_id, svc, Some(&opts))
        .ok_or_else(|| Error::Retry("the Service has no uid yet".into()))?;
    let owner = service_owner(&ctx.settings.cluster_id, svc)?;
    // Targets from a Node cache not filled yet would empty the LB; the first full listing
    // re-reconciles every Service.
    if state.nodes.wait_until_ready().now_or_never().is_none() {
        return Ok(Action::await_change());
    }
    let nodes: Vec<TargetNode> = state.nodes.state().iter().map(|n| target_node(n)).collect();
    let targets = decide::targets(&nodes, &opts.node_selector);
    let desired = match decide::desired_spec(svc, name.clone(), &opts, targets) {
        Ok(d) => LoadBalancerSpec {
            owner: Some(owner.clone()),
            ..d
        },
        Err(why) => {
            ctx.event(
                &oref,
                Reason::InvalidLoadBalancerService,
                "EnsureLoadBalancer",
                format!("{why}. The load balancer is left as it is."),
            )
            .await;
            return Ok(Action::await_change());
        }
    };
    let svcs: Api<Service> =
        Api::namespaced(ctx.kube.clone(), &svc.namespace().unwrap_or_default());
    if let Some(patch) = decide::finalizer_patch(svc) {
        svcs.patch(
            &svc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }
    // The cache lock is held only to read and to write it, never across an API call: LBs of
    // different Services are created concurrently (one Service is never reconciled twice at once).
    let (recorded, named) = {
        let cache = state.lbs().await?;
        (cache.recorded_for(svc), cache.get(&name).cloned())
    };
    let plan = decide::lb_plan(
        &name,
        &owner,
        recorded.as_ref().map(CachedLb::found).as_ref(),
        named.as_ref().map(CachedLb::found).as_ref(),
    );
    let (lb, retire) = match plan {
        LbPlan::NameTaken { name } => {
            ctx.event(
                &oref,
                Reason::LoadBalancerNameTaken,
                "EnsureLoadBalancer",
                format!("an Elemento load balancer named {name} exists and does not belong to this Service (no ownership marker of cluster {} and this Service's uid); nothing was changed. Choose another load-balancer.elemento.cloud/name", owner.cluster),
            )
            .await;
            return Ok(Action::await_change());
        }
        LbPlan::Create => (create_lb(state, &oref, &desired).await?, vec![]),
        LbPlan::Keep { id } => keep_lb(state, &oref, &id, &desired).await?,
        LbPlan::KeepAndDelete { id, old_id } => {
            let (lb, mut retire) = keep_lb(state, &oref, &id, &desired).await?;
            retire.extend(
                recorded
                    .filter(|r| r.id == old_id)
                    .map(|lb| Retired::new(lb, Why::Renamed)),
            );
            (lb, retire)
        }
        LbPlan::Replace { old_id } => (
            create_lb(state, &oref, &desired).await?,
            recorded
                .filter(|r| r.id == old_id)
                .map(|lb| Retired::new(lb, Why::Renamed))
                .into_iter()
                .collect(),
        ),
    };
    if let Some(patch) = decide::lb_id_patch(svc, &lb.id) {
        svcs.patch(
            &svc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }
    let ingress = decide::ingress(lb.hostname.as_deref(), lb.ip.as_deref());
    if let Some(patch) = decide::ingress_patch(svc, ingress) {
        svcs.patch_status(
            &svc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }
    // A replaced LB goes only once the Service points at its successor.
    for old in retire {
        ctx.api.delete_load_balancer(&old.lb.id).await?;
        state.lbs.lock().await.remove_id(&old.lb.id);
        info!(old = %old.lb.id, new = %lb.id, "replaced load balancer");
        let because = match old.why {
            Why::Renamed => format!(
                "the load balancer name changed from {} to {}: Elemento cannot rename one",
                old.lb.name, lb.name
            ),
            Why::NoUpdate => "its settings or targets changed and this Elemento endpoint cannot update a load balancer in place".to_string(),
        };
        ctx.event(
            &oref,
            Reason::LoadBalancerReplaced,
            "EnsureLoadBalancer",
            format!(
                "{because}, so {} replaced {} (deleted); the address changed from {} to {}",
                lb.id,
                old.lb.id,
                old.lb.ip.as_deref().unwrap_or("none"),
                lb.ip.as_deref().unwrap_or("none")
            ),
        )
        .await;
    }
    // Leftovers of an interrupted replace: ours, of this name, not the current one.
    let stale = {
        let cache = state.lbs().await?;
        let found: Vec<FoundLb> = cache.all().map(CachedLb::found).collect();
        decide::stale_lbs(&name, &owner, Some(lb.id.as_str()), &lb.id, &found)
    };
    for old in stale {
        ctx.api.delete_load_balancer(&old.id).await?;
        state.lbs.lock().await.remove_id(&old.id);
        info!(old = %old.id, current = %lb.id, "deleted a leftover of an interrupted replace");
    }
    Ok(Action::requeue(LB_CACHE_TTL))
}

/// Why an LB is retired in favour of another.
enum Why {
    Renamed,
    NoUpdate,
}

struct Retired {
    lb: CachedLb,
    why: Why,
}

impl Retired {
    fn new(lb: CachedLb, why: Why) -> Self {
        Self { lb, why }
    }
}

/// The ownership marker this CCM puts on, and requires of, a Service's LB.
fn service_owner(cluster: &str, svc: &Service) -> Result<LbOwner, Error> {
    let uid = svc
        .metadata
        .uid
        .clone()
        .ok_or_else(|| Error::Retry("the Service has no uid yet".into()))?;
    Ok(LbOwner {
        cluster: cluster.to_string(),
        service_uid: uid,
    })
}

/// Creates the desired LB, after asking `cancreate` whether the cloud can: a "no" is reported on
/// the Service with the answer, and retried with backoff. An endpoint without `cancreate`
/// (404/405) does not block the create.
async fn create_lb(
    state: &ServiceState,
    oref: &k8s_openapi::api::core::v1::ObjectReference,
    desired: &LoadBalancerSpec,
) -> Result<CachedLb, Error> {
    let ctx = &state.ctx;
    let recent_yes = state.can_create_recently();
    let asked = if recent_yes {
        Ok(elemento_api::types::CanCreate::default())
    } else {
        ctx.api.can_create_load_balancer(desired).await
    };
    match asked {
        Ok(answer) if !answer.possible() => {
            let servers = serde_json::to_string(&answer.servers).unwrap_or_default();
            ctx.event(
                oref,
                Reason::LoadBalancerCapacity,
                "EnsureLoadBalancer",
                format!(
                    "Elemento cannot create load balancer {} now: cancreate answered {} server(s) able ({servers}); retrying with backoff",
                    desired.name,
                    answer.nservers.unwrap_or(0)
                ),
            )
            .await;
            return Err(Error::Retry(format!(
                "no capacity for load balancer {}",
                desired.name
            )));
        }
        Ok(_) if recent_yes => {}
        Ok(_) => state.remember_can_create(true),
        Err(e) if e.is_unsupported() || e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    let lb = match ctx.api.create_load_balancer(desired).await {
        Ok(lb) => lb,
        Err(e) => {
            // The cloud may have filled up since it said yes: ask again next time.
            state.remember_can_create(false);
            return Err(e.into());
        }
    };
    state.lbs.lock().await.put(&lb);
    info!(lb = %lb.id, name = %desired.name, ip = ?lb.ip, "created load balancer");
    let note = format!(
        "created Elemento load balancer {} ({})",
        desired.name, lb.id
    );
    ctx.event(
        oref,
        Reason::EnsuredLoadBalancer,
        "EnsureLoadBalancer",
        note,
    )
    .await;
    Ok(CachedLb::new(&lb))
}

/// Our LB `id` under the desired name: updated when its spec differs. When the update answers
/// 404 and a read confirms the LB is gone (deleted outside Kubernetes), a new one is created at
/// once and the changed address announced, instead of retrying a dead LB until the cache expires.
/// When the endpoint has no update route, the LB is replaced (returned to be retired once the
/// Service points at its successor).
async fn keep_lb(
    state: &ServiceState,
    oref: &k8s_openapi::api::core::v1::ObjectReference,
    id: &str,
    desired: &LoadBalancerSpec,
) -> Result<(CachedLb, Vec<Retired>), Error> {
    let ctx = &state.ctx;
    let Some(existing) = state.lbs().await?.by_id(id).cloned() else {
        return Err(Error::Retry(format!("load balancer {id} left the cache")));
    };
    // A replacement keeps its own name.
    let want = LoadBalancerSpec {
        name: existing.name.clone(),
        ..desired.clone()
    };
    let change = decide::spec_change(
        existing.matches(&want),
        state.update_supported.load(Ordering::Relaxed),
    );
    if change == SpecChange::Keep {
        return Ok((existing, vec![]));
    }
    if change == SpecChange::Update {
        match ctx.api.update_load_balancer(&existing.id, &want).await {
            Ok(lb) => {
                state.lbs.lock().await.put(&lb);
                info!(lb = %lb.id, "updated load balancer");
                let note = format!("updated Elemento load balancer {}", want.name);
                ctx.event(
                    oref,
                    Reason::UpdatedLoadBalancer,
                    "EnsureLoadBalancer",
                    note,
                )
                .await;
                return Ok((CachedLb::new(&lb), vec![]));
            }
            Err(e) if e.is_not_found() && gone(ctx, &existing.id).await? => {
                state.lbs.lock().await.remove_id(&existing.id);
                let lb = create_lb(state, oref, desired).await?;
                ctx.event(
                    oref,
                    Reason::LoadBalancerRecreated,
                    "EnsureLoadBalancer",
                    format!(
                        "load balancer {} was deleted outside Kubernetes; created {} in its place: the address changed from {} to {}",
                        existing.id,
                        lb.id,
                        existing.ip.as_deref().unwrap_or("none"),
                        lb.ip.as_deref().unwrap_or("none")
                    ),
                )
                .await;
                return Ok((lb, vec![]));
            }
            // 405/501, or 404 for an LB that still exists: no update route here.
            Err(e) if e.is_unsupported() || e.is_not_found() => {
                warn!(error = %e, "the Elemento endpoint has no load-balancer update: changed load balancers are replaced from now on");
                state.update_supported.store(false, Ordering::Relaxed);
            }
            Err(e) => return Err(e.into()),
        }
    }
    let lb = replace_lb(state, oref, desired).await?;
    Ok((lb, vec![Retired::new(existing, Why::NoUpdate)]))
}

/// The successor of a Service's LB when it cannot be updated: created under a name derived from
/// the desired spec, or found under that name when an earlier attempt already made it.
async fn replace_lb(
    state: &ServiceState,
    oref: &k8s_openapi::api::core::v1::ObjectReference,
    desired: &LoadBalancerSpec,
) -> Result<CachedLb, Error> {
    let spec = LoadBalancerSpec {
        name: decide::replacement_name(&desired.name, desired),
        ..desired.clone()
    };
    let made = state.lbs().await?.get(&spec.name).cloned();
    match made {
        Some(lb) if lb.owner == spec.owner => Ok(lb),
        Some(lb) => Err(Error::Retry(format!(
            "load balancer name {} is taken by {} without this Service's ownership marker",
            spec.name, lb.id
        ))),
        None => create_lb(state, oref, &spec).await,
    }
}

/// Whether a read of the LB confirms it no longer exists (a 404 from update alone could be a
/// missing route).
async fn gone(ctx: &Ctx, id: &str) -> Result<bool, Error> {
    match ctx.api.load_balancer(id).await {
        Ok(_) => Ok(false),
        Err(e) if e.is_not_found() => Ok(true),
        Err(e) => Err(e.into()),
    }
}

async fn cleanup(svc: &Service, state: &ServiceState) -> Result<Action, Error> {
    let ctx = &state.ctx;
    let owner = service_owner(&ctx.settings.cluster_id, svc)?;
    let recorded_id = svc.annotations().get(ANN_LB_ID).map(String::as_str);
    // The recorded LB, and every LB under the Service's name or a replacement of it (left by an
    // interrupted replace).
    let mut found: Vec<CachedLb> = {
        let cache = state.lbs().await?;
        let opts =
            annotations::parse_annotations(&svc.annotations().clone(), &ctx.settings.lb_defaults)
                .ok();
        let family = decide::lb_name(&ctx.settings.cluster_id, svc, opts.as_ref())
            .map(|name| {
                let all: Vec<FoundLb> = cache.all().map(CachedLb::found).collect();
                decide::stale_lbs(&name, &owner, recorded_id, "", &all)
            })
            .unwrap_or_default();
        cache
            .recorded_for(svc)
            .into_iter()
            .chain(family.iter().filter_map(|f| cache.by_id(&f.id).cloned()))
            .collect()
    };
    found.sort_by(|a, b| a.id.cmp(&b.id));
    found.dedup_by(|a, b| a.id == b.id);
    // Only LBs that carry this Service's proof are deleted; another Service's LB that happens to
    // have the name this one asked for is left alone.
    found.retain(|lb| decide::owned(&lb.found(), &owner, recorded_id));
    for lb in found {
        ctx.api.delete_load_balancer(&lb.id).await?;
        state.lbs.lock().await.remove_id(&lb.id);
        info!(lb = %lb.id, "deleted load balancer");
        let note = format!("deleted Elemento load balancer {}", lb.name);
        ctx.event(
            &svc.object_ref(&()),
            Reason::DeletedLoadBalancer,
            "DeleteLoadBalancer",
            note,
        )
        .await;
    }
    let svcs: Api<Service> =
        Api::namespaced(ctx.kube.clone(), &svc.namespace().unwrap_or_default());
    let name = svc.name_any();
    if svc.metadata.deletion_timestamp.is_none()
        && let Some(patch) = decide::clear_ingress_patch(svc)
    {
        svcs.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    let patch = decide::release_patch(svc);
    match svcs
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

/// The executor against a scripted Kubernetes API and the simulator: create, keep (no call),
/// replace when the endpoint cannot update, and a name taken by someone else's LB.
#[cfg(test)]
mod executor_tests {
    use super::decide::FINALIZER;
    use super::*;
    use crate::fixtures::{self, ScriptedApi, step};
    use http::Method;
    use kube::runtime::reflector::store::Writer;
    use serde_json::{Value, json};

    const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";
    const SVC: &str = "/api/v1/namespaces/default/services/web";

    fn scenario(lb_update: bool) -> String {
        format!(
            "wire: {{lb_update: {lb_update}}}\nvms:\n  - {{id: vm-1, name: n1, template: neon}}\n  - {{id: vm-2, name: n2, template: neon}}\n"
        )
    }

    fn service(annotations: Value, finalizers: Value) -> Service {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default", "uid": "u1", "resourceVersion": "1",
                         "annotations": annotations, "finalizers": finalizers},
            "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]}
        }))
        .expect("service")
    }

    fn node(name: &str, vm: &str) -> Node {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name}, "spec": {"providerID": format!("elemento://{vm}")}
        }))
        .expect("node")
    }

    fn event() -> Value {
        json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"}, "eventTime": "2026-12-02T00:00:00.000000Z"})
    }

    fn nodes(vms: &[(&str, &str)]) -> (Store<Node>, Writer<Node>) {
        let (store, mut writer) = kube::runtime::reflector::store();
        writer.apply_watcher_event(&watcher::Event::Init);
        for (n, vm) in vms {
            writer.apply_watcher_event(&watcher::Event::InitApply(node(n, vm)));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        (store, writer)
    }

    fn state(ctx: Arc<Ctx>, store: Store<Node>) -> ServiceState {
        ServiceState {
            ctx,
            nodes: store,
            lbs: Mutex::new(LbCache::default()),
            update_supported: AtomicBool::new(true),
            can_create_until: std::sync::Mutex::new(None),
        }
    }

    #[tokio::test]
    async fn create_then_keep_without_a_call() {
        let sim = fixtures::simulator(&scenario(true)).await;
        let svc = service(json!({}), json!([]));
        let ok = serde_json::to_value(&svc).expect("json");
        let api = ScriptedApi::new(vec![
            step(Method::PATCH, SVC, 200, ok.clone()),
            step(Method::POST, EVENTS, 201, event()),
            step(Method::PATCH, SVC, 200, ok.clone()),
            step(Method::PATCH, &format!("{SVC}/status"), 200, ok),
        ]);
        let (store, _w) = nodes(&[("n1", "vm-1")]);
        let st = state(fixtures::ctx(api.client(), &sim), store);
        ensure(&svc, &st).await.expect("create");
        api.verify();
        let seen = api.seen();
        assert_eq!(seen[0].body["metadata"]["finalizers"], json!([FINALIZER]));
        assert_eq!(seen[1].body["reason"], "EnsuredLoadBalancer");
        let lbs = st.ctx.api.list_load_balancers().await.expect("lbs");
        assert_eq!(lbs.len(), 1);
        assert_eq!(lbs[0].spec.targets, ["vm-1"]);
        assert_eq!(
            lbs[0].spec.owner,
            Some(LbOwner {
                cluster: "test".into(),
                service_uid: "u1".into()
            })
        );
        assert_eq!(
            seen[2].body["metadata"]["annotations"][ANN_LB_ID],
            lbs[0].id.as_str()
        );
        assert_eq!(
            seen[3].body["status"]["loadBalancer"]["ingress"][0]["ip"],
            lbs[0].ip.clone().expect("ip").as_str()
        );

        // The Service as the API now has it: the same desired LB costs no call at all.
        let svc = service(json!({ANN_LB_ID: lbs[0].id}), json!([FINALIZER]));
        let mut svc = svc;
        svc.status = serde_json::from_value(
            json!({"loadBalancer": {"ingress": [{"ip": lbs[0].ip, "ipMode": "VIP"}]}}),
        )
        .expect("status");
        let again = ScriptedApi::new(vec![]);
        let st2 = ServiceState {
            ctx: fixtures::ctx(again.client(), &sim),
            ..st
        };
        ensure(&svc, &st2).await.expect("keep");
        again.verify();
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn without_an_update_route_a_changed_lb_is_replaced_and_the_old_one_deleted() {
        let sim = fixtures::simulator(&scenario(false)).await;
        let (old, st, mut writer) = created(&sim, &[("n1", "vm-1")]).await;
        let ok = serde_json::to_value(service(json!({}), json!([]))).expect("json");

        // A second Node joins; the endpoint has no update: replace.
        writer.apply_watcher_event(&watcher::Event::Apply(node("n2", "vm-2")));
        let svc = service(json!({ANN_LB_ID: old.id}), json!([FINALIZER]));
        let (st, api) = replacing(st, &sim, &ok);
        ensure(&svc, &st).await.expect("replace");
        api.verify();
        let lbs = st.ctx.api.list_load_balancers().await.expect("lbs");
        assert_eq!(lbs.len(), 1, "the old LB is deleted: {lbs:?}");
        let new = &lbs[0];
        assert_ne!(new.id, old.id);
        assert_eq!(new.spec.targets, ["vm-1", "vm-2"]);
        assert!(
            decide::is_replacement_of(&old.spec.name, &new.spec.name),
            "{}",
            new.spec.name
        );
        let seen = api.seen();
        assert_eq!(
            seen[1].body["metadata"]["annotations"][ANN_LB_ID],
            new.id.as_str()
        );
        assert_eq!(seen[3].body["reason"], "LoadBalancerReplaced");
        assert!(
            !st.update_supported.load(Ordering::Relaxed),
            "update is not tried again"
        );
        sim.shutdown().await;
    }

    /// Creates the Service's LB on Node n1 and returns it with the state (LB cache filled).
    async fn created(
        sim: &elemento_sim::SimHandle,
        nodes_now: &[(&str, &str)],
    ) -> (LoadBalancer, ServiceState, Writer<Node>) {
        let first = service(json!({}), json!([]));
        let ok = serde_json::to_value(&first).expect("json");
        let setup = ScriptedApi::new(vec![
            step(Method::PATCH, SVC, 200, ok.clone()),
            step(Method::POST, EVENTS, 201, event()),
            step(Method::PATCH, SVC, 200, ok.clone()),
            step(Method::PATCH, &format!("{SVC}/status"), 200, ok),
        ]);
        let (store, writer) = nodes(nodes_now);
        let st = state(fixtures::ctx(setup.client(), sim), store);
        ensure(&first, &st).await.expect("create");
        setup.verify();
        let lb = st
            .ctx
            .api
            .list_load_balancers()
            .await
            .expect("lbs")
            .remove(0);
        (lb, st, writer)
    }

    /// The Kubernetes side of a replace: the new LB's event, the id annotation, the ingress, and
    /// the replaced event once the old LB is deleted. Returns the state on that script.
    fn replacing(
        st: ServiceState,
        sim: &elemento_sim::SimHandle,
        ok: &Value,
    ) -> (ServiceState, ScriptedApi) {
        let api = ScriptedApi::new(vec![
            step(Method::POST, EVENTS, 201, event()),
            step(Method::PATCH, SVC, 200, ok.clone()),
            step(Method::PATCH, &format!("{SVC}/status"), 200, ok.clone()),
            step(Method::POST, EVENTS, 201, event()),
        ]);
        let st = ServiceState {
            ctx: fixtures::ctx(api.client(), sim),
            ..st
        };
        (st, api)
    }

    /// The Service as the API has it once its LB exists.
    fn with_lb(lb: &LoadBalancer, annotations: Value) -> Service {
        let mut a = annotations;
        a[ANN_LB_ID] = json!(lb.id);
        let mut svc = service(a, json!([FINALIZER]));
        svc.status = serde_json::from_value(
            json!({"loadBalancer": {"ingress": [{"ip": lb.ip, "ipMode": "VIP"}]}}),
        )
        .expect("status");
        svc
    }

    #[tokio::test]
    async fn with_an_update_route_a_changed_lb_is_updated_in_place() {
        let sim = fixtures::simulator(&scenario(true)).await;
        let (lb, st, mut writer) = created(&sim, &[("n1", "vm-1")]).await;
        writer.apply_watcher_event(&watcher::Event::Apply(node("n2", "vm-2")));
        // Same id and address: only the event, no Service write.
        let api = ScriptedApi::new(vec![step(Method::POST, EVENTS, 201, event())]);
        let st = ServiceState {
            ctx: fixtures::ctx(api.client(), &sim),
            ..st
        };
        ensure(&with_lb(&lb, json!({})), &st).await.expect("update");
        api.verify();
        assert_eq!(api.seen()[0].body["reason"], "UpdatedLoadBalancer");
        let lbs = st.ctx.api.list_load_balancers().await.expect("lbs");
        assert_eq!(lbs.len(), 1);
        assert_eq!(lbs[0].id, lb.id, "updated, not replaced");
        assert_eq!(lbs[0].spec.targets, ["vm-1", "vm-2"]);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn a_renamed_lb_is_made_under_the_new_name_before_the_old_one_goes() {
        let sim = fixtures::simulator(&scenario(true)).await;
        let (old, st, _w) = created(&sim, &[("n1", "vm-1")]).await;
        let svc = with_lb(&old, json!({"load-balancer.elemento.cloud/name": "shop"}));
        let ok = serde_json::to_value(&svc).expect("json");
        let (st, api) = replacing(st, &sim, &ok);
        ensure(&svc, &st).await.expect("rename");
        api.verify();
        let lbs = st.ctx.api.list_load_balancers().await.expect("lbs");
        assert_eq!(lbs.len(), 1, "the old LB is deleted: {lbs:?}");
        assert_eq!(lbs[0].spec.name, "shop");
        let seen = api.seen();
        assert_eq!(seen[0].body["reason"], "EnsuredLoadBalancer");
        assert_eq!(
            seen[1].body["metadata"]["annotations"][ANN_LB_ID],
            lbs[0].id.as_str(),
            "the Service points at the new LB before the old one is deleted"
        );
        assert_eq!(seen[3].body["reason"], "LoadBalancerReplaced");
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn cleanup_deletes_our_lb_then_releases_the_service() {
        let sim = fixtures::simulator(&scenario(true)).await;
        let (lb, st, _w) = created(&sim, &[("n1", "vm-1")]).await;
        // No longer a LoadBalancer Service: the LB goes, then the ingress, finalizer and id.
        let mut svc = with_lb(&lb, json!({}));
        if let Some(spec) = svc.spec.as_mut() {
            spec.type_ = Some("ClusterIP".into());
        }
        let ok = serde_json::to_value(&svc).expect("json");
        let api = ScriptedApi::new(vec![
            step(Method::POST, EVENTS, 201, event()),
            step(Method::PATCH, &format!("{SVC}/status"), 200, ok.clone()),
            step(Method::PATCH, SVC, 200, ok),
        ]);
        let st = ServiceState {
            ctx: fixtures::ctx(api.client(), &sim),
            ..st
        };
        reconcile_inner(&svc, &st).await.expect("cleanup");
        api.verify();
        assert!(
            st.ctx
                .api
                .list_load_balancers()
                .await
                .expect("lbs")
                .is_empty()
        );
        let seen = api.seen();
        assert_eq!(seen[0].body["reason"], "DeletedLoadBalancer");
        assert!(seen[1].body["status"]["loadBalancer"]["ingress"].is_null());
        assert_eq!(seen[2].body["metadata"]["finalizers"], json!([]));
        assert!(seen[2].body["metadata"]["annotations"][ANN_LB_ID].is_null());
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn a_name_taken_by_another_services_lb_changes_nothing() {
        let sim = fixtures::simulator(&scenario(true)).await;
        let (store, _w) = nodes(&[("n1", "vm-1")]);
        let svc = service(
            json!({"load-balancer.elemento.cloud/name": "shop"}),
            json!([FINALIZER]),
        );
        let api = ScriptedApi::new(vec![step(Method::POST, EVENTS, 201, event())]);
        let st = state(fixtures::ctx(api.client(), &sim), store);
        // Someone else's LB named "shop".
        let theirs = decide::desired_spec(
            &svc,
            "shop".into(),
            &annotations::parse_annotations(&Default::default(), &Default::default())
                .expect("opts"),
            vec!["vm-1".into()],
        )
        .expect("spec");
        let theirs = LoadBalancerSpec {
            owner: Some(LbOwner {
                cluster: "other".into(),
                service_uid: "x".into(),
            }),
            ..theirs
        };
        st.ctx
            .api
            .create_load_balancer(&theirs)
            .await
            .expect("their LB");
        ensure(&svc, &st).await.expect("refused, not failed");
        api.verify();
        assert_eq!(api.seen()[0].body["reason"], "LoadBalancerNameTaken");
        let lbs = st.ctx.api.list_load_balancers().await.expect("lbs");
        assert_eq!(lbs.len(), 1);
        assert_eq!(lbs[0].spec.owner, theirs.owner, "untouched");
        sim.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_tells_a_changed_spec_from_the_same_one() {
        let lb: LoadBalancer = serde_json::from_value(serde_json::json!({
            "id": "lb-1", "name": "k8s-web", "ip": "100.64.0.10",
            "listeners": [{"port": 80, "protocol": "tcp", "target_port": 30080}],
            "targets": ["vm-1", "vm-2"],
            "health_check": {"protocol": "tcp", "port": 30080, "interval_seconds": 5, "timeout_seconds": 3, "retries": 3},
            "algorithm": "round_robin", "proxy_protocol": false, "private": false
        }))
        .expect("load balancer");
        let cached = CachedLb::new(&lb);
        assert_eq!(
            (cached.id.as_str(), cached.ip.as_deref()),
            ("lb-1", Some("100.64.0.10"))
        );
        assert!(cached.matches(&lb.spec));
        let mut more = lb.spec.clone();
        more.targets.push("vm-3".into());
        assert!(!cached.matches(&more));
        let mut other_port = lb.spec.clone();
        other_port.listeners[0].port = 443;
        assert!(!cached.matches(&other_port));
    }
}
