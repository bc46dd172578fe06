//! The shared VM inventory. The API has no single-VM GET, so every controller reads one cached
//! listing: callers say how old a listing they accept, and concurrent refreshes coalesce into one
//! call. Reconciling N Nodes therefore costs a handful of listings, not N.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use elemento_api::types::{Template, Vm};
use elemento_api::{ApiError, Client};

/// One listing of every VM.
#[derive(Debug)]
pub struct Snapshot {
    pub vms: Vec<Vm>,
    pub taken: Instant,
    /// Increases with every listing; two snapshots with different generations are two calls.
    pub generation: u64,
}

impl Snapshot {
    pub fn by_id(&self, id: &str) -> Option<&Vm> {
        self.vms.iter().find(|v| v.id == id)
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
            vms,
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
