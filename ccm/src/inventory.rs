//! The shared VM inventory. The API has no single-VM GET, so every controller reads one cached
//! listing: callers say how old a listing they accept, and concurrent refreshes coalesce into one
//! call. Reconciling N Nodes therefore costs a handful of listings, not N.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use elemento_api::types::{Template, Vm};
use elemento_api::{ApiError, Client};

/// One listing of every VM.
#[derive(Debug)]
pub struct Snapshot {
    pub vms: Vms,
    pub taken: Instant,
    /// Increases with every listing; two snapshots with different generations are two calls.
    pub generation: u64,
}

/// The VMs of one listing, in the listing's order, indexed the three ways a Node is matched to
/// its VM (id, name, address). Every Node of a burst is matched against the same listing: a scan
/// per Node made matching quadratic (5000 Nodes × 5000 VMs), the index makes each match O(1).
#[derive(Debug, Default)]
pub struct Vms {
    list: Vec<Vm>,
    /// The first VM with each id (ids are unique; a duplicate is ignored, as a scan would).
    by_id: HashMap<String, usize>,
    by_name: HashMap<String, Vec<usize>>,
    /// Each VM once per distinct address, public or private.
    by_ip: HashMap<Ipv4Addr, Vec<usize>>,
}

impl Vms {
    pub fn by_id(&self, id: &str) -> Option<&Vm> {
        self.by_id.get(id).map(|&i| &self.list[i])
    }

    /// The VMs named `name`, in listing order.
    pub fn named(&self, name: &str) -> Vec<&Vm> {
        self.pick(self.by_name.get(name))
    }

    /// The VMs with `ip` as their public or private address, in listing order.
    pub fn with_ip(&self, ip: Ipv4Addr) -> Vec<&Vm> {
        self.pick(self.by_ip.get(&ip))
    }

    fn pick(&self, at: Option<&Vec<usize>>) -> Vec<&Vm> {
        at.map_or_else(Vec::new, |at| at.iter().map(|&i| &self.list[i]).collect())
    }
}

impl From<Vec<Vm>> for Vms {
    fn from(list: Vec<Vm>) -> Self {
        let mut by_id = HashMap::with_capacity(list.len());
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::with_capacity(list.len());
        let mut by_ip: HashMap<Ipv4Addr, Vec<usize>> = HashMap::with_capacity(list.len());
        for (i, v) in list.iter().enumerate() {
            by_id.entry(v.id.clone()).or_insert(i);
            by_name.entry(v.name.clone()).or_default().push(i);
            let private = v.private_ipv4.filter(|p| Some(*p) != v.ipv4);
            for ip in [v.ipv4, private].into_iter().flatten() {
                by_ip.entry(ip).or_default().push(i);
            }
        }
        Vms {
            list,
            by_id,
            by_name,
            by_ip,
        }
    }
}

/// Read-only access to the listing itself.
impl std::ops::Deref for Vms {
    type Target = [Vm];
    fn deref(&self) -> &[Vm] {
        &self.list
    }
}

pub struct Inventory {
    client: Client,
    current: Mutex<Option<Arc<Snapshot>>>,
    refresh: tokio::sync::Mutex<()>,
    /// The templates and until when they are used without asking again.
    templates: Mutex<Option<(Arc<Vec<Template>>, Instant)>>,
    templates_refresh: tokio::sync::Mutex<()>,
}

/// Templates change with Elemento releases, not with the cluster.
const TEMPLATE_TTL: Duration = Duration::from_secs(3600);
/// After a failed fetch, callers use the fallback this long instead of each asking in turn.
const TEMPLATE_RETRY: Duration = Duration::from_secs(30);

impl Inventory {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            current: Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
            templates: Mutex::new(None),
            templates_refresh: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self) -> Option<Arc<Snapshot>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A listing at most `max_age` old, fetching one if needed (one fetch for all waiters).
    pub async fn vms(&self, max_age: Duration) -> Result<Arc<Snapshot>, ApiError> {
        if let Some(s) = self.cached().filter(|s| s.taken.elapsed() <= max_age) {
            return Ok(s);
        }
        let _one_at_a_time = self.refresh.lock().await;
        // Someone may have refreshed while we waited.
        if let Some(s) = self.cached().filter(|s| s.taken.elapsed() <= max_age) {
            return Ok(s);
        }
        let started = Instant::now();
        let vms = self.client.list_vms().await?;
        let generation = self.cached().map_or(1, |s| s.generation + 1);
        let snap = Arc::new(Snapshot {
            vms: vms.into(),
            taken: started,
            generation,
        });
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(snap.clone());
        Ok(snap)
    }

    fn cached_templates(&self) -> Option<(Arc<Vec<Template>>, Instant)> {
        self.templates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The flavour templates; an API failure keeps the previous ones (or none: custom names)
    /// for a short while. Concurrent callers share one fetch.
    pub async fn templates(&self) -> Arc<Vec<Template>> {
        let fresh = |c: &Option<(Arc<Vec<Template>>, Instant)>| {
            c.as_ref()
                .filter(|(_, until)| Instant::now() < *until)
                .map(|(t, _)| t.clone())
        };
        if let Some(t) = fresh(&self.cached_templates()) {
            return t;
        }
        let _one_at_a_time = self.templates_refresh.lock().await;
        let cached = self.cached_templates();
        if let Some(t) = fresh(&cached) {
            return t;
        }
        let (t, keep) = match self.client.templates().await {
            Ok(t) => (Arc::new(t), TEMPLATE_TTL),
            Err(e) => {
                tracing::warn!(error = %e, "could not read VM templates; instance types fall back to custom names");
                (cached.map(|(t, _)| t).unwrap_or_default(), TEMPLATE_RETRY)
            }
        };
        *self.templates.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((t.clone(), Instant::now() + keep));
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::decide::tests::vm;

    #[test]
    fn the_index_answers_as_a_scan_of_the_listing_would() {
        let mut both = vm("id-1", "n1", "10.0.0.1");
        // The same address public and private: still one VM with that address.
        both.private_ipv4 = both.ipv4;
        let mut private = vm("id-2", "n2", "51.15.0.2");
        private.private_ipv4 = "10.0.0.2".parse().ok();
        let twin = vm("id-3", "n2", "10.0.0.3");
        let dup_id = vm("id-1", "n4", "10.0.0.4");
        let list = vec![both, private, twin, dup_id];
        let vms = Vms::from(list.clone());
        assert_eq!(vms.len(), 4);
        for v in &list {
            let scan = |f: &dyn Fn(&Vm) -> bool| list.iter().filter(|x| f(x)).collect::<Vec<_>>();
            assert_eq!(vms.by_id(&v.id), scan(&|x| x.id == v.id).first().copied());
            assert_eq!(vms.named(&v.name), scan(&|x| x.name == v.name));
            for ip in [v.ipv4, v.private_ipv4].into_iter().flatten() {
                assert_eq!(
                    vms.with_ip(ip),
                    scan(&|x| x.ipv4 == Some(ip) || x.private_ipv4 == Some(ip)),
                    "{ip}"
                );
            }
        }
        assert_eq!(vms.by_id("id-1").map(|v| v.name.as_str()), Some("n1"));
        assert_eq!(vms.named("n2").len(), 2);
        assert!(vms.by_id("gone").is_none() && vms.named("gone").is_empty());
    }
}
