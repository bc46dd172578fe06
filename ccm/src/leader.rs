//! Leader election on a `coordination.k8s.io/v1` Lease. Only the leader runs controllers; a
//! leader that cannot renew within the renew deadline exits (as upstream controller managers do),
//! so two replicas never act at once for longer than the lease allows.
//!
//! Expiry uses observed time, as client-go does: a candidate never compares the holder's
//! `renewTime` with its own wall clock (the two machines' clocks may disagree by minutes). It
//! notes when, on its own monotonic clock, it last saw the lease record change, and takes the lease
//! only after the record has stayed unchanged for a whole lease duration.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use serde_json::json;
use tracing::{info, warn};

#[derive(Debug, Clone)]
pub struct LeaderConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// Pure: may `me` take or keep the lease described by (holder, renewed `age` ago, duration)?
pub fn can_acquire(
    holder: Option<&str>,
    age: Option<Duration>,
    lease_duration: Duration,
    me: &str,
) -> bool {
    match (holder, age) {
        (None | Some(""), _) => true,
        (Some(h), _) if h == me => true,
        (Some(_), Some(age)) => age > lease_duration,
        (Some(_), None) => true, // never renewed
    }
}

fn lease_body(
    cfg: &LeaderConfig,
    transitions: i32,
    acquire: Option<Timestamp>,
    rv: Option<String>,
) -> Lease {
    let now = Timestamp::now();
    serde_json::from_value(json!({
        "metadata": {"name": cfg.name, "namespace": cfg.namespace, "resourceVersion": rv},
        "spec": {
            "holderIdentity": cfg.identity,
            "leaseDurationSeconds": cfg.lease_duration.as_secs().max(1),
            "acquireTime": acquire.unwrap_or(now).to_string(),
            "renewTime": now.to_string(),
            "leaseTransitions": transitions,
        }
    }))
    .expect("lease body is valid")
}

/// What a candidate has seen of the lease: the last record, and when (on this process's
/// monotonic clock) it last changed.
#[derive(Debug, Default)]
pub struct Observed {
    record: Option<String>,
    since: Option<Instant>,
}

impl Observed {
    /// Notes the record seen at `now`; returns how long it has stayed unchanged as far as this
    /// process has seen (zero the first time: a new candidate waits a whole lease duration).
    pub fn see(&mut self, record: String, now: Instant) -> Duration {
        if self.record.as_deref() != Some(record.as_str()) {
            self.record = Some(record);
            self.since = Some(now);
        }
        self.since
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
    }
}

/// One try to take or renew the lease. `Ok(true)` = we hold it now.
pub async fn try_acquire_or_renew(
    api: &Api<Lease>,
    cfg: &LeaderConfig,
    observed: &mut Observed,
) -> Result<bool, kube::Error> {
    let existing = match api.get_opt(&cfg.name).await? {
        None => {
            return match api
                .create(&PostParams::default(), &lease_body(cfg, 0, None, None))
                .await
            {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        }
        Some(l) => l,
    };
    let spec = existing.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.as_deref();
    // The record's identity: any renewal changes renewTime (and the resourceVersion).
    let record = format!(
        "{holder:?}|{:?}|{:?}|{:?}",
        spec.renew_time.as_ref().map(|t| t.0.to_string()),
        spec.lease_transitions,
        existing.metadata.resource_version
    );
    let unchanged_for = observed.see(record, Instant::now());
    let age = spec.renew_time.as_ref().map(|_| unchanged_for);
    let duration = spec
        .lease_duration_seconds
        .map_or(cfg.lease_duration, |s| Duration::from_secs(s.max(0) as u64));
    if !can_acquire(holder, age, duration, &cfg.identity) {
        return Ok(false);
    }
    let ours = holder == Some(cfg.identity.as_str());
    let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
    let acquire = if ours {
        spec.acquire_time.map(|t| t.0)
    } else {
        None
    };
    let body = lease_body(
        cfg,
        transitions,
        acquire,
        existing.metadata.resource_version.clone(),
    );
    // replace with resourceVersion: a concurrent writer makes this fail with 409.
    match api.replace(&cfg.name, &PostParams::default(), &body).await {
        Ok(_) => {
            if !ours {
                info!(identity = %cfg.identity, previous = ?holder, "acquired leadership");
            }
            Ok(true)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Waits until this process holds the lease.
pub async fn acquire(api: &Api<Lease>, cfg: &LeaderConfig) {
    let mut observed = Observed::default();
    loop {
        match try_acquire_or_renew(api, cfg, &mut observed).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => warn!(error = %e, "leader election"),
        }
        tokio::time::sleep(cfg.retry_period).await;
    }
}

/// Renews until renewal fails for longer than the renew deadline; then returns (the caller exits).
pub async fn keep(api: Api<Lease>, cfg: LeaderConfig) {
    let mut last_ok = Instant::now();
    let mut observed = Observed::default();
    loop {
        tokio::time::sleep(cfg.retry_period).await;
        match try_acquire_or_renew(&api, &cfg, &mut observed).await {
            Ok(true) => last_ok = Instant::now(),
            Ok(false) => {
                warn!(identity = %cfg.identity, "lost the lease to another holder");
                return;
            }
            Err(e) => warn!(error = %e, "lease renewal failed"),
        }
        if last_ok.elapsed() > cfg.renew_deadline {
            warn!("could not renew the lease within the renew deadline");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A standby whose clock is a minute off either way never takes a lease that is being
    /// renewed, and takes an abandoned one one lease duration after it stopped changing.
    #[test]
    fn expiry_uses_observed_time_not_the_holders_clock() {
        let lease = Duration::from_secs(15);
        let t0 = Instant::now();
        for skew in [-60i64, 60] {
            let mut seen = Observed::default();
            // The holder renews every 2 s; its renewTime, read with our skewed clock, looks a
            // minute old (or a minute in the future): irrelevant, only changes count.
            for i in 0..30u64 {
                let renew = format!("2026-12-02T10:00:{:02}Z skew {skew}", (i * 2) % 60);
                let age = seen.see(format!("a|{renew}"), t0 + Duration::from_secs(i * 2));
                assert!(
                    !can_acquire(Some("a"), Some(age), lease, "b"),
                    "skew {skew}, t {i}"
                );
            }
            // The holder dies: the record stops changing.
            let last = "a|2026-12-02T10:00:58Z".to_string();
            let dead_at = t0 + Duration::from_secs(60);
            let age = seen.see(last.clone(), dead_at);
            assert!(!can_acquire(Some("a"), Some(age), lease, "b"));
            let age = seen.see(last.clone(), dead_at + Duration::from_secs(14));
            assert!(!can_acquire(Some("a"), Some(age), lease, "b"));
            let age = seen.see(last, dead_at + Duration::from_secs(16));
            assert!(can_acquire(Some("a"), Some(age), lease, "b"), "skew {skew}");
        }
    }

    #[test]
    fn acquisition_rules() {
        let d = Duration::from_secs(15);
        assert!(can_acquire(None, None, d, "me"));
        assert!(can_acquire(
            Some("me"),
            Some(Duration::from_secs(1)),
            d,
            "me"
        ));
        assert!(!can_acquire(
            Some("other"),
            Some(Duration::from_secs(1)),
            d,
            "me"
        ));
        assert!(can_acquire(
            Some("other"),
            Some(Duration::from_secs(16)),
            d,
            "me"
        ));
    }
}
