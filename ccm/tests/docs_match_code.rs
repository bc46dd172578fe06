//! docs/ccm.md cannot drift from the code: every flag in its Flags table is one the binary accepts
//! and every flag the binary accepts is in the table; every metric family it names is registered,
//! and every registered family is named; the same both ways for event reasons (with their type)
//! and for the load-balancer annotations.

use std::collections::BTreeSet;

use clap::CommandFactory;
use elemento_ccm::config::Args;
use elemento_ccm::events::Reason;
use elemento_ccm::metrics::Metrics;
use elemento_ccm::service::annotations::{ANN_PREFIX, ANNOTATIONS};
use elemento_telemetry::ApiMetrics;
use prometheus_client::registry::Registry;

fn doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/ccm.md"))
        .expect("docs/ccm.md")
}

fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text
        .find(heading)
        .unwrap_or_else(|| panic!("docs/ccm.md has no {heading}"));
    let rest = &text[start + heading.len()..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

/// Backticked tokens of `text` that start with `prefix`, up to the first character outside
/// `[a-z0-9_-]`.
fn tokens(text: &str, prefix: &str) -> BTreeSet<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| t.starts_with(prefix))
        .map(|t| {
            t.chars()
                .take_while(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'
                })
                .collect()
        })
        .collect()
}

#[test]
fn every_flag_is_documented_and_every_documented_flag_exists() {
    let documented = tokens(section(&doc(), "## Flags"), "--");
    let accepted: BTreeSet<String> = Args::command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .filter(|l| l != "--help" && l != "--version")
        .collect();
    let undocumented: Vec<_> = accepted.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&accepted).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "flags the binary accepts but docs/ccm.md does not list: {undocumented:?}; \
         flags docs/ccm.md lists that the binary does not accept: {unknown:?}"
    );
}

#[test]
fn every_metric_family_is_documented_and_registered() {
    let mut registry = Registry::default();
    let api = ApiMetrics::register(&mut registry);
    let ccm = Metrics::register(&mut registry);
    // Labelled families are only exposed once they have a sample.
    elemento_api::CallObserver::observe(
        &api,
        &elemento_api::routes::VM_STATUS,
        "200",
        std::time::Duration::from_millis(3),
    );
    ccm.reconciled("cloud-node", None, std::time::Duration::from_millis(3));
    ccm.reconciled(
        "service",
        Some("unavailable"),
        std::time::Duration::from_millis(3),
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    // `# TYPE name kind`: counters are exposed with `_total`.
    let registered: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut p = l.split_whitespace();
            let (name, kind) = (p.next()?, p.next()?);
            Some(if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_string()
            })
        })
        .collect();
    let d = doc();
    let documented: BTreeSet<String> = tokens(section(&d, "## Events and metrics"), "elemento_")
        .union(&tokens(section(&d, "## Events and metrics"), "ccm_"))
        .cloned()
        .collect();
    let undocumented: Vec<_> = registered.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&registered).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "metric families registered but not in docs/ccm.md: {undocumented:?}; \
         named in docs/ccm.md but not registered: {unknown:?}"
    );
}

#[test]
fn every_event_reason_is_documented_with_its_type() {
    let d = doc();
    let events = section(&d, "## Events and metrics");
    let events = &events[..events.find("Metrics:").unwrap_or(events.len())];
    // `Warning Reason`, `Normal Reason`, or a bare `Reason` taking the type of the one before.
    let mut documented = BTreeSet::new();
    let mut kind = "";
    for t in events.split('`').skip(1).step_by(2) {
        let (k, name) = match t.split_once(' ') {
            Some((k @ ("Warning" | "Normal"), n)) => (k, n),
            _ => (kind, t),
        };
        // Other backticked words (the reporting controller's name) are not reasons.
        if !name.starts_with(|c: char| c.is_ascii_uppercase())
            || !name.chars().all(|c| c.is_ascii_alphanumeric())
        {
            continue;
        }
        kind = k;
        documented.insert((name.to_string(), k.to_string()));
    }
    let published: BTreeSet<(String, String)> = Reason::ALL
        .iter()
        .map(|r| {
            let k = if r.is_warning() { "Warning" } else { "Normal" };
            (r.as_str().to_string(), k.to_string())
        })
        .collect();
    let undocumented: Vec<_> = published.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&published).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "event reasons the CCM publishes but docs/ccm.md does not list (or lists with another type): \
         {undocumented:?}; listed in docs/ccm.md but not published: {unknown:?}"
    );
}

#[test]
fn every_load_balancer_annotation_is_documented_and_read() {
    let d = doc();
    let table = section(&d, "## Load balancers");
    let heading = format!("| annotation (`{ANN_PREFIX}…`)");
    let start = table
        .find(&heading)
        .expect("the annotation table of docs/ccm.md");
    let documented: BTreeSet<String> = table[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.split('`').nth(1).map(str::to_string))
        .collect();
    let read: BTreeSet<String> = ANNOTATIONS.iter().map(|(k, _)| k.to_string()).collect();
    let undocumented: Vec<_> = read.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&read).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "annotations the CCM reads but docs/ccm.md does not list: {undocumented:?}; \
         listed in docs/ccm.md but not read: {unknown:?}"
    );
}
