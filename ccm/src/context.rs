//! What every controller shares: clients, the VM inventory, the event recorder, metrics, settings.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tracing::warn;

use crate::config::{ClassPolicy, LbDefaults};
use crate::events::Reason;
use crate::inventory::Inventory;
use crate::metrics::Metrics;
use crate::node::decide::TopologyPolicy;
use crate::topology::LegacyRegions;

pub const REPORTER: &str = "elemento-cloud-controller-manager";

#[derive(Debug, Clone)]
pub struct Settings {
    /// The cluster in load balancer names and ownership markers (`CloudConfig::cluster_id`).
    pub cluster_id: String,
    pub class: ClassPolicy,
    pub lb_defaults: LbDefaults,
    pub node_status_update_frequency: Duration,
    pub node_monitor_period: Duration,
    pub out_of_service_after: Option<Duration>,
    pub concurrent_node_syncs: u16,
    pub concurrent_service_syncs: u16,
    /// The region label of Nodes whose VM has none (cloud-config `region`).
    pub default_region: String,
}

pub struct Ctx {
    pub kube: kube::Client,
    pub api: elemento_api::Client,
    pub inventory: Inventory,
    pub legacy_regions: LegacyRegions,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub settings: Settings,
    /// Consecutive failures per object, for exponential requeue backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Ctx {
    pub fn new(
        kube: kube::Client,
        api: elemento_api::Client,
        metrics: Metrics,
        settings: Settings,
        instance: String,
    ) -> Self {
        let recorder = Recorder::new(
            kube.clone(),
            Reporter {
                controller: REPORTER.into(),
                instance: Some(instance),
            },
        );
        Self {
            inventory: Inventory::new(api.clone()),
            legacy_regions: LegacyRegions::new(kube.clone(), settings.node_status_update_frequency),
            kube,
            api,
            recorder,
            metrics,
            settings,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// How Nodes are labelled now: the default region and the legacy region values in use.
    pub async fn topology_policy(&self) -> TopologyPolicy {
        TopologyPolicy {
            default_region: self.settings.default_region.clone(),
            legacy_regions_in_use: self.legacy_regions.in_use().await,
        }
    }

    /// Publishes an event; failing to do so is logged, never fatal.
    pub async fn event(
        &self,
        obj: &k8s_openapi::api::core::v1::ObjectReference,
        reason: Reason,
        action: &str,
        note: String,
    ) {
        let ev = Event {
            type_: if reason.is_warning() {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.as_str().into(),
            note: Some(clip_note(note)),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, obj).await {
            warn!(error = %e, reason = reason.as_str(), "could not publish event");
        }
    }

    /// Records a failure of `key` and returns how long to wait ([`backoff_delay`]).
    pub fn backoff(&self, key: &str) -> Duration {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = f.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        backoff_delay(*n)
    }

    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// events.k8s.io rejects notes over 1 kB: clip on a character boundary.
pub fn clip_note(mut note: String) -> String {
    const MAX: usize = 1000;
    if note.len() > MAX {
        let mut end = MAX - '…'.len_utf8();
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push('…');
    }
    note
}

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Elemento(#[from] elemento_api::ApiError),
    /// Reported with an event already; retried with backoff.
    #[error("{0}")]
    Retry(String),
}

impl Error {
    /// A short label for metrics and logs: `kubernetes`, `kubernetes_conflict`, the Elemento
    /// API error's kind (`unavailable`, `not_found`, …), or `retry`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "kubernetes_conflict",
            Error::Kube(_) => "kubernetes",
            Error::Elemento(e) => e.kind(),
            Error::Retry(_) => "retry",
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn errors_have_a_kind_for_the_metric() {
        use super::Error;
        let conflict = kube::Error::Api(
            kube::core::Status::failure("conflict", "Conflict")
                .with_code(409)
                .boxed(),
        );
        assert_eq!(Error::Kube(conflict).kind(), "kubernetes_conflict");
        let unavailable = elemento_api::ApiError::Unavailable {
            route: "vm.status",
            message: "down".into(),
        };
        assert_eq!(Error::Elemento(unavailable).kind(), "unavailable");
        assert_eq!(Error::Retry("later".into()).kind(), "retry");
    }

    #[test]
    fn notes_fit_the_event_limit() {
        assert_eq!(super::clip_note("short".into()), "short");
        let n = super::clip_note("é".repeat(2000));
        assert!(n.len() <= 1000 && n.ends_with('…'));
    }
}

/// The wait after the `failures`-th consecutive failure: 1 s, 2 s, 4 s … 256 s, then 5 min.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

pub fn backoff_delay(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(9);
    Duration::from_secs(1u64 << exp).min(MAX_BACKOFF)
}

#[cfg(test)]
mod backoff_tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_five_minutes() {
        let secs: Vec<u64> = (1..=12).map(|n| backoff_delay(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(backoff_delay(u32::MAX), MAX_BACKOFF);
    }
}
