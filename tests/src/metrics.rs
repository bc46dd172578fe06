//! The metrics contract of docs/observability.md: its table of families is read here, each
//! component's `/metrics` scraped, and a test asserts that every family documented for a
//! component is exposed and moved between two scrapes around the event that moves it.

use std::collections::BTreeMap;
use std::process::Command;

use crate::repo_root;

/// A documented family: its full name (`…_total` for counters), its type, its components.
#[derive(Debug, Clone)]
pub struct Family {
    pub name: String,
    pub kind: String,
    pub components: Vec<String>,
}

/// The table of docs/observability.md.
pub fn documented() -> Vec<Family> {
    let path = repo_root().join("docs/observability.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let cell = |s: &str| s.trim().trim_matches('`').to_string();
    text.lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| {
            let cols: Vec<&str> = l.trim_matches('|').split('|').collect();
            (cols.len() == 5).then(|| Family {
                name: cell(cols[0]),
                kind: cell(cols[1]),
                components: cols[3].split(',').map(cell).collect(),
            })
        })
        .collect()
}

/// The families documented for one component (`ccm`, `csi-controller`, `csi-node`, `autoscaler`).
pub fn documented_for(component: &str) -> Vec<Family> {
    let all = documented();
    assert!(!all.is_empty(), "docs/observability.md lists no family");
    let mine: Vec<Family> = all
        .into_iter()
        .filter(|f| f.components.iter().any(|c| c == component))
        .collect();
    assert!(
        !mine.is_empty(),
        "docs/observability.md lists no family for {component}"
    );
    mine
}

/// One scrape: the families it declares (`# TYPE` names) and, per family, the sum of its
/// samples (counters: their values; histograms: their `_count`).
#[derive(Debug, Default)]
pub struct Scrape {
    pub declared: BTreeMap<String, String>,
    pub samples: BTreeMap<String, f64>,
}

impl Scrape {
    pub fn parse(text: &str) -> Self {
        let mut s = Scrape::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut w = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (w.next(), w.next()) {
                    s.declared.insert(name.to_string(), kind.to_string());
                }
            } else if !line.starts_with('#') && !line.is_empty() {
                let name_end = line.find(['{', ' ']).unwrap_or(line.len());
                let name = &line[..name_end];
                let value = line
                    .rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0);
                *s.samples.entry(name.to_string()).or_default() += value;
            }
        }
        s
    }

    /// Whether `f` is declared (OpenMetrics declares a counter without its `_total`).
    pub fn has(&self, f: &Family) -> bool {
        let base = f.name.strip_suffix("_total").unwrap_or(&f.name);
        self.declared
            .get(base)
            .or_else(|| self.declared.get(&f.name))
            == Some(&f.kind)
    }

    /// The family's movement measure.
    pub fn total(&self, f: &Family) -> f64 {
        let sample = if f.kind == "histogram" {
            format!("{}_count", f.name)
        } else {
            f.name.clone()
        };
        self.samples.get(&sample).copied().unwrap_or(0.0)
    }
}

/// `GET url` (curl), the body.
pub fn scrape(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-fsS", "--max-time", "10", url])
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "scraping {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `GET http://127.0.0.1:port/metrics` inside the network namespace of process `pid` (a pod
/// whose metrics listen on its own loopback).
pub fn scrape_in_netns(pid: u32, port: u16) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["curl", "-fsS", "--max-time", "10"])
        .arg(format!("http://127.0.0.1:{port}/metrics"))
        .output()
        .expect("nsenter curl");
    assert!(
        out.status.success(),
        "scraping port {port} of process {pid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts that every family documented for `component` is exposed after, and moved between,
/// the two scrapes (the event that moves each happened in between).
pub fn assert_documented_families_moved(component: &str, before: &str, after: &str) {
    let (before, after) = (Scrape::parse(before), Scrape::parse(after));
    let mut problems = vec![];
    for f in documented_for(component) {
        if !after.has(&f) {
            problems.push(format!("{} ({}) is not exposed", f.name, f.kind));
        } else if after.total(&f) <= before.total(&f) {
            problems.push(format!(
                "{} did not move ({} then {})",
                f.name,
                before.total(&f),
                after.total(&f)
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{component} metrics against docs/observability.md:\n{}",
        problems.join("\n")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_read() {
        let all = documented();
        let reconcile = all
            .iter()
            .find(|f| f.name == "ccm_reconcile_total")
            .expect("ccm_reconcile_total");
        assert_eq!(reconcile.kind, "counter");
        assert_eq!(reconcile.components, ["ccm"]);
        assert!(
            documented_for("csi-node")
                .iter()
                .all(|f| f.name.starts_with("csi_rpc_"))
        );
    }

    #[test]
    fn counters_and_histograms_are_measured() {
        let text = "# TYPE x counter\nx_total{a=\"1\"} 2\nx_total{a=\"2\"} 3\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_count 4\nh_sum 0.5\n";
        let s = Scrape::parse(text);
        let x = Family {
            name: "x_total".into(),
            kind: "counter".into(),
            components: vec![],
        };
        let h = Family {
            name: "h".into(),
            kind: "histogram".into(),
            components: vec![],
        };
        assert!(s.has(&x) && s.has(&h));
        assert_eq!(s.total(&x), 5.0);
        assert_eq!(s.total(&h), 4.0);
    }
}
