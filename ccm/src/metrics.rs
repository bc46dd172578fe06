//! CCM metrics: per-controller reconcile counts, errors and duration, and node initialization
//! latency (from the Node's creation to the removal of the uninitialized taint).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: String,
    pub result: String,
    /// The error's kind (`Error::kind`); empty unless `result` is `error`.
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: String,
}

#[derive(Clone)]
pub struct Metrics {
    reconciles: Family<ReconcileLabels, Counter>,
    duration: Family<ControllerLabel, Histogram>,
    pub node_init: Histogram,
}

impl Metrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Self {
            reconciles: Family::default(),
            duration: Family::new_with_constructor(elemento_telemetry::latency_histogram),
            node_init: Histogram::new(exponential_buckets(0.05, 2.0, 14)),
        };
        r.register(
            "ccm_reconcile",
            "Reconciles by controller, result (ok, error, skipped) and error kind",
            m.reconciles.clone(),
        );
        r.register(
            "ccm_reconcile_duration_seconds",
            "Reconcile duration by controller",
            m.duration.clone(),
        );
        r.register(
            "ccm_node_initialization_seconds",
            "Time from a Node's creation to the removal of its uninitialized taint",
            m.node_init.clone(),
        );
        m
    }

    /// A reconcile that found nothing to do before any work (e.g. a version we already wrote past).
    pub fn skipped(&self, controller: &str) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                controller: controller.into(),
                result: "skipped".into(),
                error: String::new(),
            })
            .inc();
    }

    /// A finished reconcile: `error` is the kind of its error, `None` when it succeeded.
    pub fn reconciled(&self, controller: &str, error: Option<&str>, took: Duration) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                controller: controller.into(),
                result: if error.is_some() { "error" } else { "ok" }.into(),
                error: error.unwrap_or_default().into(),
            })
            .inc();
        self.duration
            .get_or_create(&ControllerLabel {
                controller: controller.into(),
            })
            .observe(took.as_secs_f64());
    }
}
