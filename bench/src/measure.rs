//! Process and API-cost measurements.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

/// Peak RSS (VmHWM) and CPU seconds of a process, from /proc.
#[derive(Debug, Clone, Copy, Serialize, Default)]
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

/// Calls per route from the simulator's counters, and their total.
pub fn api_calls(counters: &Value) -> (serde_json::Map<String, Value>, u64) {
    let mut by_route = serde_json::Map::new();
    let mut total = 0;
    if let Some(m) = counters.as_object() {
        for (route, c) in m {
            let n = c["total"].as_u64().unwrap_or(0);
            total += n;
            by_route.insert(route.clone(), n.into());
        }
    }
    (by_route, total)
}

/// p50, p99 and max of durations, in seconds.
#[derive(Debug, Clone, Copy, Serialize, Default)]
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
#[derive(Debug, Clone, Copy, Serialize)]
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
