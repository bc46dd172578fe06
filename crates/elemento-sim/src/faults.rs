//! Fault injection and call accounting, per route name (`vm.status`, `volume.create`, …, or `*`).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What to do to calls of one route. Probabilities are in [0, 1].
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FaultRule {
    /// Share of calls answered with `status` instead of being served.
    pub error_rate: f64,
    /// Status of injected errors (default 503). 429 adds `Retry-After: retry_after_seconds`.
    pub status: Option<u16>,
    pub retry_after_seconds: Option<u64>,
    /// Fixed delay added before serving.
    pub latency_ms: u64,
    /// Extra uniformly random delay in [0, latency_jitter_ms].
    pub latency_jitter_ms: u64,
    /// Share of calls served, then their answer dropped mid-response (the client cannot tell
    /// whether the operation happened).
    pub drop_rate: f64,
    /// Share of calls answered 429 with `Retry-After: retry_after_seconds` (default 1), on top
    /// of `error_rate`.
    pub rate_limit_rate: f64,
    /// Share of calls delayed by a spike uniformly drawn from [spike_min_ms, spike_max_ms].
    pub spike_rate: f64,
    pub spike_min_ms: u64,
    pub spike_max_ms: u64,
    /// Stop injecting errors/drops after this many (latency keeps applying).
    pub max_faults: Option<u64>,
}

/// What the middleware should do to one call.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Serve {
        delay: Duration,
        drop: bool,
    },
    Fail {
        delay: Duration,
        status: u16,
        retry_after: Option<u64>,
    },
}

#[derive(Debug, Default)]
pub struct Faults {
    rules: BTreeMap<String, (FaultRule, u64)>,
    rng: Option<fastrand::Rng>,
}

impl Faults {
    pub fn set(&mut self, route: &str, rule: FaultRule) {
        self.rules.insert(route.to_string(), (rule, 0));
    }

    pub fn clear(&mut self) {
        self.rules.clear();
    }

    pub fn seed(&mut self, seed: u64) {
        self.rng = Some(fastrand::Rng::with_seed(seed));
    }

    pub fn rules(&self) -> BTreeMap<String, FaultRule> {
        self.rules
            .iter()
            .map(|(k, (r, _))| (k.clone(), r.clone()))
            .collect()
    }

    /// Decides the fate of one call of `route`. A route's own rule wins over `*`.
    pub fn verdict(&mut self, route: &str) -> Verdict {
        let key = if self.rules.contains_key(route) {
            route
        } else {
            "*"
        };
        let rng = self.rng.get_or_insert_with(fastrand::Rng::new);
        let Some((rule, used)) = self.rules.get_mut(key) else {
            return Verdict::Serve {
                delay: Duration::ZERO,
                drop: false,
            };
        };
        let jitter = if rule.latency_jitter_ms > 0 {
            rng.u64(0..=rule.latency_jitter_ms)
        } else {
            0
        };
        let spike = if rule.spike_rate > 0.0 && rng.f64() < rule.spike_rate {
            let (lo, hi) = (
                rule.spike_min_ms.min(rule.spike_max_ms),
                rule.spike_max_ms.max(rule.spike_min_ms),
            );
            rng.u64(lo..=hi)
        } else {
            0
        };
        let delay = Duration::from_millis(rule.latency_ms + jitter + spike);
        let budget_left = rule.max_faults.is_none_or(|m| *used < m);
        if budget_left && rule.rate_limit_rate > 0.0 && rng.f64() < rule.rate_limit_rate {
            *used += 1;
            let retry_after = Some(rule.retry_after_seconds.unwrap_or(1));
            return Verdict::Fail {
                delay,
                status: 429,
                retry_after,
            };
        }
        if budget_left && rule.error_rate > 0.0 && rng.f64() < rule.error_rate {
            *used += 1;
            return Verdict::Fail {
                delay,
                status: rule.status.unwrap_or(503),
                retry_after: rule.retry_after_seconds,
            };
        }
        let drop = budget_left && rule.drop_rate > 0.0 && rng.f64() < rule.drop_rate;
        if drop {
            *used += 1;
        }
        Verdict::Serve { delay, drop }
    }
}

/// One served call, for per-client audits (e.g. proving only the leader acted).
#[derive(Debug, Clone, Serialize)]
pub struct CallRecord {
    pub seq: u64,
    pub route: String,
    pub client: String,
    pub status: u16,
    pub injected: bool,
}

/// Per-route counters and a bounded call log.
#[derive(Debug, Default)]
pub struct Counters {
    pub by_route: BTreeMap<String, RouteCount>,
    pub log: VecDeque<CallRecord>,
    seq: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct RouteCount {
    pub total: u64,
    pub injected: u64,
    pub by_status: BTreeMap<u16, u64>,
}

const LOG_CAPACITY: usize = 200_000;

impl Counters {
    /// Counts a call when it arrives, so calls whose client gave up (timeout) still count.
    pub fn arrive(&mut self, route: &str) {
        self.by_route.entry(route.to_string()).or_default().total += 1;
    }

    /// Records how a call ended.
    pub fn record(&mut self, route: &str, client: &str, status: u16, injected: bool) {
        let c = self.by_route.entry(route.to_string()).or_default();
        c.injected += u64::from(injected);
        *c.by_status.entry(status).or_default() += 1;
        self.seq += 1;
        if self.log.len() == LOG_CAPACITY {
            self.log.pop_front();
        }
        self.log.push_back(CallRecord {
            seq: self.seq,
            route: route.to_string(),
            client: client.to_string(),
            status,
            injected,
        });
    }

    pub fn reset(&mut self) {
        self.by_route.clear();
        self.log.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_rule_overrides_star_and_budget_is_respected() {
        let mut f = Faults::default();
        f.seed(7);
        f.set(
            "*",
            FaultRule {
                latency_ms: 5,
                ..Default::default()
            },
        );
        f.set(
            "vm.status",
            FaultRule {
                error_rate: 1.0,
                status: Some(429),
                retry_after_seconds: Some(1),
                max_faults: Some(2),
                ..Default::default()
            },
        );
        assert!(matches!(
            f.verdict("vm.status"),
            Verdict::Fail {
                status: 429,
                retry_after: Some(1),
                ..
            }
        ));
        assert!(matches!(f.verdict("vm.status"), Verdict::Fail { .. }));
        assert!(matches!(
            f.verdict("vm.status"),
            Verdict::Serve { drop: false, .. }
        ));
        assert_eq!(
            f.verdict("volume.create"),
            Verdict::Serve {
                delay: Duration::from_millis(5),
                drop: false
            }
        );
    }

    #[test]
    fn combined_rule_mixes_5xx_429_spikes_and_drops() {
        let mut f = Faults::default();
        f.seed(3);
        f.set(
            "*",
            FaultRule {
                error_rate: 0.2,
                status: Some(503),
                rate_limit_rate: 0.1,
                spike_rate: 0.1,
                spike_min_ms: 1000,
                spike_max_ms: 3000,
                drop_rate: 0.05,
                ..Default::default()
            },
        );
        let (mut e5, mut e429, mut spikes, mut drops) = (0, 0, 0, 0);
        for _ in 0..10_000 {
            let v = f.verdict("x");
            let delay = match &v {
                Verdict::Fail {
                    delay,
                    status: 429,
                    retry_after: Some(1),
                } => {
                    e429 += 1;
                    *delay
                }
                Verdict::Fail {
                    delay, status: 503, ..
                } => {
                    e5 += 1;
                    *delay
                }
                Verdict::Serve { delay, drop } => {
                    drops += usize::from(*drop);
                    *delay
                }
                other => panic!("{other:?}"),
            };
            if delay >= Duration::from_millis(1000) {
                assert!(delay <= Duration::from_millis(3000));
                spikes += 1;
            }
        }
        assert!((800..1200).contains(&e429), "{e429}");
        assert!((1600..2000).contains(&e5), "{e5}");
        assert!((800..1200).contains(&spikes), "{spikes}");
        assert!((250..450).contains(&drops), "{drops}");
    }

    #[test]
    fn error_rate_is_roughly_honoured() {
        let mut f = Faults::default();
        f.seed(1);
        f.set(
            "*",
            FaultRule {
                error_rate: 0.2,
                ..Default::default()
            },
        );
        let fails = (0..10_000)
            .filter(|_| matches!(f.verdict("x"), Verdict::Fail { .. }))
            .count();
        assert!((1700..2300).contains(&fails), "{fails}");
    }
}
