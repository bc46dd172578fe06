//! Process and API-cost measurements.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Peak RSS (VmHWM) and CPU seconds of a process, from /proc.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default)]
pub struct ProcStats {
    pub peak_rss_mb: f64,
    pub rss_mb: f64,
    pub cpu_seconds: f64,
}

pub fn proc_stats(pid: u32) -> ProcStats {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ProcStats {
        peak_rss_mb: kb("VmHWM:") / 1024.0,
        rss_mb: kb("VmRSS:") / 1024.0,
        cpu_seconds: (ticks(11) + ticks(12)) / 100.0,
    }
}

/// One route's counter in the simulator's `/_sim/counters` answer.
#[derive(Debug, Deserialize)]
struct RouteCounter {
    #[serde(default)]
    total: u64,
}

/// Calls per route from the simulator's counters, and their total. An answer of another shape
/// is an error: a benchmark never reports zero calls it did not count.
pub fn api_calls(counters: &Value) -> anyhow::Result<(BTreeMap<String, u64>, u64)> {
    let by_route: BTreeMap<String, RouteCounter> = serde_json::from_value(counters.clone())?;
    let by_route: BTreeMap<String, u64> = by_route.into_iter().map(|(r, c)| (r, c.total)).collect();
    let total = by_route.values().sum();
    Ok((by_route, total))
}

/// p50, p99 and max of durations, in seconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

pub fn percentiles(samples: &mut [Duration]) -> Percentiles {
    if samples.is_empty() {
        return Percentiles::default();
    }
    samples.sort();
    let at = |q: f64| {
        samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1]
            .as_secs_f64()
    };
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
        max: samples[samples.len() - 1].as_secs_f64(),
    }
}

/// Median, min and max of repeated runs of one figure.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

pub fn spread(values: &[f64]) -> Spread {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return Spread {
            median: 0.0,
            min: 0.0,
            max: 0.0,
        };
    }
    Spread {
        median: v[v.len() / 2],
        min: v[0],
        max: v[v.len() - 1],
    }
}

/// Machine facts recorded with the results.
pub fn machine() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert(
        "cores".into(),
        std::thread::available_parallelism()
            .map_or(0, |n| n.get())
            .to_string(),
    );
    m.insert(
        "kernel".into(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
    );
    m.insert(
        "cpu".into(),
        std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("model name\t: ").map(String::from))
            .unwrap_or_default(),
    );
    // The 1-minute load average as the invocation starts: how quiet the machine was.
    m.insert(
        "load_at_start".into(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?")
            .to_string(),
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_spread() {
        let mut s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = percentiles(&mut s);
        assert_eq!((p.p50, p.p99, p.max), (0.05, 0.099, 0.1));
        let sp = spread(&[3.0, 1.0, 2.0]);
        assert_eq!((sp.median, sp.min, sp.max), (2.0, 1.0, 3.0));
        assert!(proc_stats(std::process::id()).peak_rss_mb > 0.0);
    }
}
