//! Rows of the reliability table (docs/reliability.md): each reliability test records what it
//! tried and what came out; `reliability-report` renders the table from these records.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// Fault, crash or input class.
    pub class: String,
    /// What was done.
    pub tried: String,
    pub times: u64,
    pub leaks: u64,
    pub duplicates: u64,
    pub wrong_deletions: u64,
    pub panics: u64,
    pub result: String,
}

pub fn dir() -> PathBuf {
    crate::repo_root().join("target/reliability")
}

/// Records a row (one file per class, so reruns replace it).
pub fn record(row: Row) {
    let d = dir();
    let _ = std::fs::create_dir_all(&d);
    let file: String = row
        .class
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let _ = std::fs::write(
        d.join(format!("{file}.json")),
        serde_json::to_vec_pretty(&row).unwrap_or_default(),
    );
}

pub fn rows() -> Vec<Row> {
    let mut rows: Vec<Row> = std::fs::read_dir(dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect();
    rows.sort_by(|a, b| a.class.cmp(&b.class));
    rows
}

pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "# Reliability\n\nGenerated from the reliability tests' records (`tests/e2e/reliability.rs`, written to `target/reliability/`) by \
         `cargo run -p elemento-e2e --bin reliability-report`; do not edit by hand.\n\n\
         | class | what was tried | times | leaks | duplicates | wrong deletions | panics | result |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.class, r.tried, r.times, r.leaks, r.duplicates, r.wrong_deletions, r.panics, r.result
        ));
    }
    let t = |f: fn(&Row) -> u64| rows.iter().map(f).sum::<u64>();
    s.push_str(&format!(
        "\nTotals: {} leaks, {} duplicates, {} wrong deletions, {} panics.\n",
        t(|r| r.leaks),
        t(|r| r.duplicates),
        t(|r| r.wrong_deletions),
        t(|r| r.panics)
    ));
    s
}
