//! The node groups' state and every change to it: which VMs are ours (from one VM listing per
//! Refresh), creations in flight (built by workers, rolled back when they fail), deletions, and
//! the sweep of leftovers (volumes and join tokens of VMs that do not exist).
//!
//! Nothing here is a counter that could drift: a group's target size is derived from the listing
//! and the creations in flight.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use elemento_api::types::{
    CloudImageRequest, CloudInitVolumeRequest, RegisterVmNetwork, RegisterVmRequest,
    RegisterVmVolume, Template, Vm,
};
use elemento_api::{ApiError, Client};
use tracing::{info, warn};

use crate::config::{NodeGroup, Settings};
use crate::names;
use crate::tokens::Tokens;
use crate::user_data;

/// Why a creation failed, as the autoscaler classes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// A limit or no capacity: the autoscaler backs the group off and tries another.
    OutOfResources = 1,
    Other = 99,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    Queued,
    Building,
    /// Registered as this VM; dropped once a listing shows it.
    Registered(String),
    Failed {
        class: ErrorClass,
        code: String,
        message: String,
    },
}

#[derive(Debug, Clone)]
pub struct Creation {
    pub name: String,
    pub group: String,
    pub phase: Phase,
    /// DeleteNodes or DecreaseTargetSize asked for it while it was being built.
    pub cancelled: bool,
}

/// What a group looks like now (for the RPCs).
#[derive(Debug, Clone, PartialEq)]
pub enum InstanceState {
    Running,
    Creating,
    Deleting,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// `elemento://<vm id>`, or `elemento-pending://<vm name>` while it has no VM id.
    pub id: String,
    pub state: InstanceState,
    pub error: Option<(ErrorClass, String, String)>,
}

#[derive(Default)]
struct State {
    /// The last listing of our VMs, by id.
    vms: BTreeMap<String, Vm>,
    listed_at: Option<Instant>,
    /// Every VM name of the listing (ours or not): a name taken is never registered twice.
    all_names: BTreeSet<String>,
    creations: BTreeMap<String, Creation>,
    /// VM ids being deleted, with their name.
    deleting: BTreeMap<String, String>,
}

pub struct Provider {
    pub settings: Settings,
    api: Client,
    tokens: Tokens,
    templates: BTreeMap<String, Template>,
    state: Mutex<State>,
    /// Builds at once (each is a few API calls in sequence).
    builders: tokio::sync::Semaphore,
    last_sweep: Mutex<Option<Instant>>,
    /// Hourly prices by group, as `marketprices` quoted them, and when.
    prices: Mutex<BTreeMap<String, (Option<f64>, Instant)>>,
}

/// How long a quoted price is reused (the `price` expander asks for every option of every loop).
const PRICE_TTL: Duration = Duration::from_secs(600);

/// How often leftovers are looked for (at most; on Refresh).
const SWEEP_EVERY: Duration = Duration::from_secs(30);
const BUILDERS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    Exhausted(String),
    #[error("{0}")]
    Unavailable(String),
}

impl Provider {
    /// The provider, with the flavour of every group found among the API's templates.
    pub async fn new(settings: Settings, api: Client, tokens: Tokens) -> anyhow::Result<Self> {
        let all = api.templates().await?;
        let mut templates = BTreeMap::new();
        let mut unknown = vec![];
        for g in &settings.groups {
            match all
                .iter()
                .find(|t| elemento_api::topology::instance_type_of_template(&t.name) == g.flavour)
            {
                Some(t) => {
                    templates.insert(g.name.clone(), t.clone());
                }
                None => unknown.push(format!(
                    "nodeGroups ({}).flavour {:?}: not an Elemento template; known: {:?}",
                    g.name,
                    g.flavour,
                    all.iter()
                        .map(|t| elemento_api::topology::instance_type_of_template(&t.name))
                        .collect::<Vec<_>>()
                )),
            }
        }
        if !unknown.is_empty() {
            anyhow::bail!("invalid configuration:\n  {}", unknown.join("\n  "));
        }
        Ok(Self {
            settings,
            api,
            tokens,
            templates,
            state: Mutex::new(State::default()),
            builders: tokio::sync::Semaphore::new(BUILDERS),
            last_sweep: Mutex::new(None),
            prices: Mutex::new(BTreeMap::new()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn group_names(&self) -> Vec<&str> {
        self.settings
            .groups
            .iter()
            .map(|g| g.name.as_str())
            .collect()
    }

    pub fn group(&self, id: &str) -> Result<&NodeGroup, RpcError> {
        self.settings
            .group(id)
            .ok_or_else(|| RpcError::NotFound(format!("no node group {id:?}")))
    }

    pub fn flavour(&self, group: &str) -> Option<&Template> {
        self.templates.get(group)
    }

    /// The group of one of our VMs (name and tags agree), or None.
    fn group_of_vm(&self, vm: &Vm) -> Option<String> {
        let g = names::group_of(&self.settings.cluster_name, &self.group_names(), &vm.name)?;
        names::tags_agree(&vm.vm_tags, &self.settings.cluster_name, g).then(|| g.to_string())
    }

    // ------------------------------------------------------------ Refresh

    /// One VM listing: our VMs, and registered creations that now show up; then, at most every
    /// 30 s, the sweep of leftovers.
    pub async fn refresh(self: &Arc<Self>) -> Result<(), RpcError> {
        let vms = self
            .api
            .list_vms()
            .await
            .map_err(|e| RpcError::Unavailable(format!("listing VMs: {e}")))?;
        {
            let mut st = self.state();
            st.all_names = vms.iter().map(|v| v.name.clone()).collect();
            st.vms = vms
                .into_iter()
                .filter(|v| self.group_of_vm(v).is_some())
                .map(|v| (v.id.clone(), v))
                .collect();
            st.listed_at = Some(Instant::now());
            let listed: BTreeSet<String> = st.vms.keys().cloned().collect();
            st.creations
                .retain(|_, c| !matches!(&c.phase, Phase::Registered(id) if listed.contains(id)));
            st.deleting.retain(|id, _| listed.contains(id));
        }
        let due = {
            let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= SWEEP_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            let me = self.clone();
            tokio::spawn(async move { me.sweep().await });
        }
        Ok(())
    }

    /// Leftovers of interrupted work, each with proof it is ours (our naming) and no owner alive:
    /// volumes of VMs that neither exist nor are being built, join tokens of Nodes that have
    /// registered, of VMs that do not exist, or expired.
    pub async fn sweep(&self) {
        let (live, building): (BTreeSet<String>, BTreeSet<String>) = {
            let st = self.state();
            (st.all_names.clone(), st.creations.keys().cloned().collect())
        };
        let ours = |vm_name: &str| {
            names::group_of(&self.settings.cluster_name, &self.group_names(), vm_name).is_some()
        };
        match self.api.list_volumes().await {
            Ok(volumes) => {
                for v in volumes {
                    let Some(vm) = names::vm_of_volume(&v.name) else {
                        continue;
                    };
                    // An attached one is refused by the API (409) and found again next time.
                    if ours(vm) && !live.contains(vm) && !building.contains(vm) {
                        match self.api.destroy_volume(&v.id).await {
                            Ok(_) => {
                                info!(volume = %v.name, "destroyed a volume left by an interrupted build")
                            }
                            Err(e) => {
                                warn!(volume = %v.name, error = %e, "could not destroy a leftover volume")
                            }
                        }
                    }
                }
            }
            Err(e) => warn!(error = %e, "listing volumes for leftovers"),
        }
        match self.tokens.ours().await {
            Ok(tokens) => {
                for t in tokens {
                    let stale = t.expired
                        || (!live.contains(&t.vm_name) && !building.contains(&t.vm_name))
                        || self
                            .tokens
                            .node_registered(&t.vm_name)
                            .await
                            .unwrap_or(false);
                    if stale && let Err(e) = self.tokens.delete(&t.secret).await {
                        warn!(vm = %t.vm_name, error = %e, "could not delete a join token");
                    }
                }
            }
            Err(e) => warn!(error = %e, "listing join tokens"),
        }
    }

    // ------------------------------------------------------------ reading

    /// The group's instances: its VMs (Deleting while being deleted) and its creations not in
    /// the listing yet (Creating, with the error of a failed one).
    pub fn instances(&self, group: &str) -> Vec<Instance> {
        let st = self.state();
        let mut out: Vec<Instance> = st
            .vms
            .values()
            .filter(|v| self.group_of_vm(v).as_deref() == Some(group))
            .map(|v| Instance {
                id: elemento_api::provider_id::format(&v.id),
                state: if st.deleting.contains_key(&v.id) {
                    InstanceState::Deleting
                } else {
                    InstanceState::Running
                },
                error: None,
            })
            .collect();
        for c in st.creations.values().filter(|c| c.group == group) {
            let (id, error) = match &c.phase {
                Phase::Registered(id) => (elemento_api::provider_id::format(id), None),
                Phase::Failed {
                    class,
                    code,
                    message,
                } => (
                    pending_id(&c.name),
                    Some((*class, code.clone(), message.clone())),
                ),
                Phase::Queued | Phase::Building => (pending_id(&c.name), None),
            };
            out.push(Instance {
                id,
                state: InstanceState::Creating,
                error,
            });
        }
        out
    }

    /// VMs of the group not being deleted, plus its creations not listed yet.
    pub fn target_size(&self, group: &str) -> u32 {
        self.instances(group)
            .iter()
            .filter(|i| i.state != InstanceState::Deleting)
            .count() as u32
    }

    /// The group of a Node: by providerID (our VM, or a creation), else by name (before the CCM
    /// has set the providerID). Anything else is not ours: `None`, never an error.
    pub fn group_for_node(&self, provider_id: &str, name: &str) -> Option<String> {
        let st = self.state();
        match elemento_api::provider_id::parse(Some(provider_id)) {
            elemento_api::provider_id::ProviderId::Elemento(id) => {
                if let Some(vm) = st.vms.get(&id) {
                    return self.group_of_vm(vm);
                }
                return st
                    .creations
                    .values()
                    .find(|c| c.phase == Phase::Registered(id.clone()))
                    .map(|c| c.group.clone());
            }
            elemento_api::provider_id::ProviderId::Foreign(p) => {
                return p
                    .strip_prefix(elemento_api::provider_id::PENDING_SCHEME)
                    .and_then(|n| st.creations.get(n))
                    .map(|c| c.group.clone());
            }
            elemento_api::provider_id::ProviderId::Unset => {}
        }
        names::group_of(&self.settings.cluster_name, &self.group_names(), name)
            .filter(|_| st.all_names.contains(name) || st.creations.contains_key(name))
            .map(String::from)
    }

    // ------------------------------------------------------------ changes

    /// Queues `delta` creations after checking the group's maximum and that its provider can take
    /// the flavour now; returns at once (workers build the VMs).
    pub async fn increase(self: &Arc<Self>, group: &str, delta: i32) -> Result<(), RpcError> {
        let g = self.group(group)?.clone();
        if delta <= 0 {
            return Err(RpcError::Invalid(format!(
                "delta {delta}: must be positive"
            )));
        }
        let target = self.target_size(group);
        if target + delta as u32 > g.max_size {
            return Err(RpcError::Invalid(format!(
                "size {target} + {delta} exceeds maxSize {} of group {group}",
                g.max_size
            )));
        }
        let spec = self.spec(&g, "capacity-check");
        match self.api.can_allocate(&spec).await {
            Ok(a) if a.nservers == 0 => {
                return Err(RpcError::Exhausted(format!(
                    "no capacity for {} on provider {}",
                    g.flavour,
                    g.provider
                        .as_deref()
                        .unwrap_or(elemento_api::topology::ATOMOS)
                )));
            }
            Ok(_) => {}
            // An endpoint without canallocate does not block the create.
            Err(e) if e.is_unsupported() => {}
            Err(e) => return Err(RpcError::Unavailable(format!("canallocate: {e}"))),
        }
        for _ in 0..delta {
            let name = loop {
                let n = names::new_vm_name(&self.settings.cluster_name, group);
                let st = self.state();
                if !st.all_names.contains(&n) && !st.creations.contains_key(&n) {
                    break n;
                }
            };
            self.state().creations.insert(
                name.clone(),
                Creation {
                    name: name.clone(),
                    group: group.to_string(),
                    phase: Phase::Queued,
                    cancelled: false,
                },
            );
            let me = self.clone();
            tokio::spawn(async move { me.build(name).await });
        }
        info!(group, delta, "scale-up queued");
        Ok(())
    }

    /// The register Spec of a VM of this group.
    fn spec(&self, g: &NodeGroup, vm_name: &str) -> RegisterVmRequest {
        let flavour = self.templates.get(&g.name).cloned().unwrap_or_default();
        let mut spec = RegisterVmRequest::of_template(vm_name, &flavour);
        spec.networks = g
            .networks
            .iter()
            .map(|n| RegisterVmNetwork {
                network_uid: n.clone(),
            })
            .collect();
        spec.vm_tags = names::tags(&self.settings.cluster_name, &g.name);
        spec.provider = g.provider.clone();
        spec.region = g.region.clone();
        spec
    }

    fn set_phase(&self, name: &str, phase: Phase) {
        if let Some(c) = self.state().creations.get_mut(name) {
            c.phase = phase;
        }
    }

    fn cancelled(&self, name: &str) -> bool {
        self.state().creations.get(name).is_none_or(|c| c.cancelled)
    }

    /// Builds one VM: its join token, boot and cloud-init volumes, then the register. Any failure
    /// rolls back what was made (no billed half-VM) and leaves the creation Failed for the
    /// autoscaler to see.
    async fn build(self: Arc<Self>, name: String) {
        let _permit = self.builders.acquire().await.ok();
        let Some(group) = self.state().creations.get(&name).map(|c| c.group.clone()) else {
            return;
        };
        self.set_phase(&name, Phase::Building);
        match self.try_build(&name, &group).await {
            Ok(Some(id)) => {
                info!(vm = %name, id = %id, group = %group, "VM registered");
                self.set_phase(&name, Phase::Registered(id));
            }
            Ok(None) => {
                info!(vm = %name, "creation cancelled");
                self.rollback(&name).await;
                self.state().creations.remove(&name);
            }
            Err(e) => {
                let class = if e.is_limit() {
                    ErrorClass::OutOfResources
                } else {
                    ErrorClass::Other
                };
                warn!(vm = %name, group = %group, error = %e, "VM creation failed; rolling back");
                self.rollback(&name).await;
                let cancelled = self.cancelled(&name);
                let mut st = self.state();
                if cancelled {
                    st.creations.remove(&name);
                } else if let Some(c) = st.creations.get_mut(&name) {
                    c.phase = Phase::Failed {
                        class,
                        code: e.kind().to_string(),
                        message: e.to_string(),
                    };
                }
            }
        }
    }

    /// `Ok(None)`: cancelled before the register.
    async fn try_build(&self, name: &str, group: &str) -> Result<Option<String>, BuildError> {
        let g = self
            .group(group)
            .map_err(|e| BuildError::Other(e.to_string()))?;
        // Registered by an earlier attempt (an answer lost on the way): that VM is the one.
        if let Some(vm) = self
            .api
            .list_vms()
            .await?
            .into_iter()
            .find(|v| v.name == name)
        {
            return Ok(Some(vm.id));
        }
        let token = self
            .tokens
            .create(name)
            .await
            .map_err(|e| BuildError::Other(format!("creating the join token: {e}")))?;
        let flavour = self.templates.get(group).cloned().unwrap_or_default();
        let labels = crate::template::labels(g, &flavour, &self.settings.default_region);
        let values = user_data::Values {
            node_name: name,
            node_group: group,
            cluster_name: &self.settings.cluster_name,
            api_server: &self.settings.bootstrap.api_server,
            ca_cert_hash: self
                .settings
                .bootstrap
                .ca_cert_hash
                .as_deref()
                .unwrap_or(""),
            bootstrap_token: &token,
            node_labels: labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
            node_taints: g
                .taints
                .iter()
                .map(|t| match &t.value {
                    Some(v) => format!("{}={v}:{}", t.key, t.effect),
                    None => format!("{}:{}", t.key, t.effect),
                })
                .collect::<Vec<_>>()
                .join(","),
        };
        let text = user_data::render(&g.user_data, &values).map_err(BuildError::Other)?;
        let boot = match self
            .api
            .find_volume_by_name(&names::boot_volume(name))
            .await?
        {
            Some(v) => v.id,
            None => {
                self.api
                    .create_cloud_image(&CloudImageRequest {
                        name: names::boot_volume(name),
                        private: true,
                        clonable: false,
                        alg: "cp".into(),
                        format: "qcow2".into(),
                        bus: "virtio".into(),
                        size: g.image.size_gib,
                        url: g.image.url.clone(),
                    })
                    .await?
            }
        };
        let cloud_init = match self
            .api
            .find_volume_by_name(&names::cloud_init_volume(name))
            .await?
        {
            Some(v) => v.id,
            None => {
                let meta = format!("instance-id: {name}\nlocal-hostname: {name}\n");
                self.api
                    .create_cloud_init_volume(
                        &CloudInitVolumeRequest {
                            name: names::cloud_init_volume(name),
                            private: true,
                            bootable: false,
                            clonable: false,
                            alg: "no".into(),
                            expected_files: 2,
                        },
                        text.as_bytes(),
                        meta.as_bytes(),
                    )
                    .await?
            }
        };
        if self.cancelled(name) {
            return Ok(None);
        }
        let mut spec = self.spec(g, name);
        spec.volumes = vec![
            RegisterVmVolume {
                vid: boot,
                priority: 0,
            },
            RegisterVmVolume {
                vid: cloud_init,
                priority: 1,
            },
        ];
        match self.api.register_vm(&spec).await? {
            Some(vm) => Ok(Some(vm.id)),
            // An answer that does not describe the VM [I]: find it by its name.
            None => self
                .api
                .list_vms()
                .await?
                .into_iter()
                .find(|v| v.name == name)
                .map(|v| Some(v.id))
                .ok_or_else(|| BuildError::Other("registered, but the VM is not listed".into())),
        }
    }

    /// Removes what a build of `name` made: its volumes (by their names) and its join token.
    async fn rollback(&self, name: &str) {
        for volume in [names::boot_volume(name), names::cloud_init_volume(name)] {
            match self.api.find_volume_by_name(&volume).await {
                Ok(Some(v)) => {
                    if let Err(e) = self.api.destroy_volume(&v.id).await {
                        warn!(volume = %volume, error = %e, "rollback: volume left for the sweep");
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(volume = %volume, error = %e, "rollback: volume left for the sweep")
                }
            }
        }
        if let Err(e) = self.tokens.delete_for(name).await {
            warn!(vm = %name, error = %e, "rollback: join token left for the sweep");
        }
    }

    /// Deletes these instances of the group. Idempotent: an id of a VM that never existed, or is
    /// already gone, is fine. Refused when the group's VMs would fall below its minimum.
    pub async fn delete(
        self: &Arc<Self>,
        group: &str,
        nodes: &[(String, String)],
    ) -> Result<(), RpcError> {
        let g = self.group(group)?.clone();
        let mut vms = vec![];
        let mut creations = vec![];
        {
            let st = self.state();
            for (provider_id, node_name) in nodes {
                match elemento_api::provider_id::parse(Some(provider_id)) {
                    elemento_api::provider_id::ProviderId::Elemento(id) => {
                        if let Some(vm) = st.vms.get(&id) {
                            if self.group_of_vm(vm).as_deref() != Some(group) {
                                return Err(RpcError::Invalid(format!(
                                    "{provider_id} ({}) is not in node group {group}",
                                    vm.name
                                )));
                            }
                            vms.push((id, vm.name.clone()));
                        } else if let Some(c) = st
                            .creations
                            .values()
                            .find(|c| c.phase == Phase::Registered(id.clone()))
                        {
                            vms.push((id, c.name.clone()));
                        }
                        // Otherwise: never existed, or already gone.
                    }
                    elemento_api::provider_id::ProviderId::Foreign(p) => {
                        match p.strip_prefix(elemento_api::provider_id::PENDING_SCHEME) {
                            Some(name) => creations.push(name.to_string()),
                            None => {
                                return Err(RpcError::Invalid(format!(
                                    "{provider_id}: not an Elemento instance"
                                )));
                            }
                        }
                    }
                    elemento_api::provider_id::ProviderId::Unset => {
                        if let Some(vm) = st.vms.values().find(|v| &v.name == node_name) {
                            vms.push((vm.id.clone(), vm.name.clone()));
                        }
                    }
                }
            }
            let running = st
                .vms
                .values()
                .filter(|v| self.group_of_vm(v).as_deref() == Some(group))
                .filter(|v| !st.deleting.contains_key(&v.id))
                .count();
            let going = vms
                .iter()
                .filter(|(id, _)| !st.deleting.contains_key(id))
                .count();
            if running.saturating_sub(going) < g.min_size as usize && going > 0 {
                return Err(RpcError::Precondition(format!(
                    "deleting {going} of {running} VMs would take node group {group} below its minSize {}",
                    g.min_size
                )));
            }
        }
        {
            let mut st = self.state();
            for name in &creations {
                match st.creations.get(name).map(|c| c.phase.clone()) {
                    Some(Phase::Failed { .. }) | Some(Phase::Queued) => {
                        // Failed: already rolled back. Queued: its builder finds it gone.
                        st.creations.remove(name);
                    }
                    Some(_) => {
                        if let Some(c) = st.creations.get_mut(name) {
                            c.cancelled = true;
                        }
                    }
                    None => {}
                }
            }
            for (id, name) in &vms {
                st.deleting.insert(id.clone(), name.clone());
                st.creations.remove(name);
            }
        }
        for (id, name) in vms {
            let me = self.clone();
            tokio::spawn(async move { me.destroy_vm(&id, &name).await });
        }
        Ok(())
    }

    /// Unregisters the VM, then destroys its volumes and its join token. Anything already gone
    /// is fine; a failure leaves the VM marked for the next attempt (the sweep finishes volumes).
    async fn destroy_vm(&self, id: &str, name: &str) {
        match self.api.unregister_vm(id).await {
            Ok(_) => info!(vm = %name, id = %id, "VM unregistered"),
            Err(e) => {
                warn!(vm = %name, error = %e, "unregister failed; the deletion is retried");
                self.state().deleting.remove(id);
                return;
            }
        }
        self.rollback(name).await;
    }

    /// Cancels up to `delta` creations not registered yet (the autoscaler asks when Nodes never
    /// came); refuses to go below the VMs that exist.
    pub fn decrease(&self, group: &str, delta: i32) -> Result<(), RpcError> {
        self.group(group)?;
        if delta >= 0 {
            return Err(RpcError::Invalid(format!(
                "delta {delta}: must be negative"
            )));
        }
        let mut st = self.state();
        let pending: Vec<String> = st
            .creations
            .values()
            .filter(|c| c.group == group)
            .filter(|c| {
                matches!(
                    c.phase,
                    Phase::Queued | Phase::Building | Phase::Failed { .. }
                )
            })
            .map(|c| c.name.clone())
            .collect();
        let want = delta.unsigned_abs() as usize;
        if want > pending.len() {
            return Err(RpcError::Precondition(format!(
                "node group {group} has {} creations in flight; cannot decrease by {want} (delete nodes instead)",
                pending.len()
            )));
        }
        for name in pending.into_iter().take(want) {
            if let Some(c) = st.creations.get_mut(&name) {
                match c.phase {
                    Phase::Building => c.cancelled = true,
                    _ => {
                        st.creations.remove(&name);
                    }
                }
            }
        }
        Ok(())
    }

    /// The hourly price of a VM of the group on its provider, from `marketprices` (`None` when
    /// the API quotes none, as for AtomOS).
    pub async fn hourly_price(&self, group: &str) -> Result<Option<f64>, ApiError> {
        let g = self
            .group(group)
            .map_err(|e| ApiError::Config(e.to_string()))?;
        let prices = self.api.market_prices(&self.spec(g, "price")).await?;
        let provider = g.provider.as_deref();
        Ok(prices
            .offers
            .iter()
            .filter(|o| provider.is_none_or(|p| o.provider.as_deref() == Some(p)))
            .filter_map(|o| o.price.as_ref().and_then(|p| p.hour))
            .reduce(f64::min))
    }
}

impl Provider {
    /// [`Provider::hourly_price`], reused for 10 minutes.
    pub async fn cached_price(&self, group: &str) -> Result<Option<f64>, ApiError> {
        let hit = self
            .prices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(group)
            .filter(|(_, at)| at.elapsed() < PRICE_TTL)
            .map(|(p, _)| *p);
        if let Some(p) = hit {
            return Ok(p);
        }
        let p = self.hourly_price(group).await?;
        self.prices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(group.to_string(), (p, Instant::now()));
        Ok(p)
    }

    /// The cheapest hourly price of one core and of one GiB among the groups (a node's price
    /// split evenly between its cores and its memory), for pod prices.
    pub async fn cheapest_rates(&self) -> Result<Option<(f64, f64)>, ApiError> {
        let mut best: Option<(f64, f64)> = None;
        for g in &self.settings.groups {
            let (Some(price), Some(f)) = (self.cached_price(&g.name).await?, self.flavour(&g.name))
            else {
                continue;
            };
            let per_core = price / 2.0 / f64::from(f.slots.max(1));
            let per_gib = price / 2.0 / (f.ram_mib.max(1) as f64 / 1024.0);
            best = Some(match best {
                Some((c, m)) => (c.min(per_core), m.min(per_gib)),
                None => (per_core, per_gib),
            });
        }
        Ok(best)
    }
}

pub fn pending_id(name: &str) -> String {
    format!("{}{name}", elemento_api::provider_id::PENDING_SCHEME)
}

/// A build step's failure.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("{0}")]
    Other(String),
}

impl BuildError {
    fn is_limit(&self) -> bool {
        matches!(self, BuildError::Api(e) if e.is_limit())
    }

    fn kind(&self) -> &'static str {
        match self {
            BuildError::Api(e) => e.kind(),
            BuildError::Other(_) => "other",
        }
    }
}
