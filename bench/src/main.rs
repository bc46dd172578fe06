//! `cargo run --release -p bench -- all` (or one scenario): runs the benchmarks and writes
//! docs/benchmarks.{json,md,svg}.

use std::time::Duration;

use bench::measure::spread;
use bench::*;
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// all, node-init, lb-converge, csi-provision, csi-node, steady-state
    #[arg(default_value = "all")]
    scenario: String,
    /// Repetitions of each figure (median, min, max).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Injected latency per Elemento API call.
    #[arg(long, default_value_t = 50)]
    latency_ms: u64,
    /// Idle window of the steady-state scenario.
    #[arg(long, default_value_t = 60)]
    idle_seconds: u64,
    /// Node counts of node-init (and its API-server floor); fewer for quick experiments.
    #[arg(long, value_delimiter = ',', default_values_t = [100, 500, 1000])]
    node_sizes: Vec<usize>,
    /// Where the JSON, Markdown and SVG go.
    #[arg(long, default_value = "docs")]
    out: std::path::PathBuf,
}

fn med(rows: &[Value], f: impl Fn(&Value) -> f64) -> Value {
    serde_json::to_value(spread(&rows.iter().map(f).collect::<Vec<_>>())).unwrap_or_default()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let setup = Setup {
        latency_ms: a.latency_ms,
        ..Default::default()
    };
    let want = |s: &str| a.scenario == "all" || a.scenario == s;
    let path = a.out.join("benchmarks.json");
    let mut r: Value = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| json!({}));
    r["machine"] = serde_json::to_value(machine())?;
    r["latency_ms"] = json!(a.latency_ms);
    r["runs"] = json!(a.runs);
    r["kube_version"] = json!(format!("v{}", elemento_e2e::kube_version()));
    // `report` re-renders docs from the JSON without running anything.
    if a.scenario != "report" {
        r["generated"] = json!(k8s_openapi::jiff::Timestamp::now().to_string());
    }
    r["lb_added_nodes"] = json!(20);
    if want("node-init") {
        let mut rows = vec![];
        for &n in &a.node_sizes {
            let mut runs = vec![];
            for _ in 0..a.runs {
                let x = node_init(n, setup).await?;
                eprintln!(
                    "node-init {n}: p50 {:.3} p99 {:.3} max {:.3} s, {} calls",
                    x.latency_s.p50, x.latency_s.p99, x.latency_s.max, x.api_calls_total
                );
                runs.push(serde_json::to_value(&x)?);
            }
            rows.push(json!({
                "nodes": n, "p50": med(&runs, |v| v["latency_s"]["p50"].as_f64().unwrap_or(0.0)),
                "p99": med(&runs, |v| v["latency_s"]["p99"].as_f64().unwrap_or(0.0)), "max": med(&runs, |v| v["latency_s"]["max"].as_f64().unwrap_or(0.0)),
                "wall": med(&runs, |v| v["wall_s"].as_f64().unwrap_or(0.0)), "vm_list_per_node": med(&runs, |v| v["vm_list_calls_per_node"].as_f64().unwrap_or(0.0)),
                "api_calls": med(&runs, |v| v["api_calls_total"].as_f64().unwrap_or(0.0)), "rss": med(&runs, |v| v["ccm"]["peak_rss_mb"].as_f64().unwrap_or(0.0)),
                "cpu": med(&runs, |v| v["ccm"]["cpu_seconds"].as_f64().unwrap_or(0.0)), "samples": runs,
            }));
        }
        r["node_init"] = json!(rows);
        let mut floors = vec![];
        for &n in &a.node_sizes {
            let f = node_init_api_server_floor(n).await?;
            eprintln!(
                "node-init floor {n}: p50 {:.3} p99 {:.3} max {:.3} s",
                f.p50, f.p99, f.max
            );
            floors.push(json!({"nodes": n, "latency_s": f}));
        }
        r["node_init_api_server_floor"] = json!(floors);
    }
    if want("lb-converge") {
        let mut rows = vec![];
        for s in [50, 200] {
            let mut runs = vec![];
            for _ in 0..a.runs {
                let x = lb_converge(s, 100, 20, setup).await?;
                eprintln!(
                    "lb-converge {s}: ingress {:.2} s, new nodes {:.2} s",
                    x.all_ingress_s, x.new_nodes_in_every_lb_s
                );
                runs.push(serde_json::to_value(&x)?);
            }
            rows.push(json!({"services": s, "nodes": 100, "ingress": med(&runs, |v| v["all_ingress_s"].as_f64().unwrap_or(0.0)),
                "new_nodes": med(&runs, |v| v["new_nodes_in_every_lb_s"].as_f64().unwrap_or(0.0)), "api_calls": med(&runs, |v| v["api_calls_total"].as_f64().unwrap_or(0.0)), "samples": runs}));
        }
        r["lb_converge"] = json!(rows);
    }
    if want("csi-provision") {
        let mut rows = vec![];
        for p in [20, 100] {
            let mut runs = vec![];
            for _ in 0..a.runs {
                let x = csi_provision(p, setup).await?;
                eprintln!(
                    "csi-provision {p}: provisioned {:.2} s, bound {:.2} s, {:.2} calls/volume",
                    x.all_provisioned_s, x.all_bound_s, x.api_calls_per_volume
                );
                runs.push(serde_json::to_value(&x)?);
            }
            rows.push(json!({"pvcs": p, "provisioned": med(&runs, |v| v["all_provisioned_s"].as_f64().unwrap_or(0.0)), "bound": med(&runs, |v| v["all_bound_s"].as_f64().unwrap_or(0.0)),
                "calls_per_volume": med(&runs, |v| v["api_calls_per_volume"].as_f64().unwrap_or(0.0)), "rss": med(&runs, |v| v["controller"]["peak_rss_mb"].as_f64().unwrap_or(0.0)), "samples": runs}));
        }
        r["csi_provision"] = json!(rows);
    }
    if want("csi-node") {
        // Ten-millisecond operations on a shared machine: many runs for a stable median.
        let x = csi_node(a.runs.max(15), setup).await?;
        eprintln!("csi-node: ratio {:.2}", x.ratio_of_medians);
        r["csi_node"] = serde_json::to_value(&x)?;
    }
    if want("steady-state") {
        let x = steady_state(1000, 200, Duration::from_secs(a.idle_seconds), setup).await?;
        eprintln!(
            "steady-state: {:.1} calls/min, CCM {:.2} % CPU, {:.1} MB",
            x.api_calls_per_minute, x.ccm_cpu_percent_of_one_core, x.ccm.rss_mb
        );
        r["steady_state"] = serde_json::to_value(&x)?;
    }
    std::fs::create_dir_all(&a.out)?;
    std::fs::write(&path, serde_json::to_vec_pretty(&r)?)?;
    let points: Vec<(f64, f64, f64)> = r["node_init"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            (
                row["nodes"].as_f64().unwrap_or(0.0),
                row["p50"]["median"].as_f64().unwrap_or(0.0),
                row["p99"]["median"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    std::fs::write(a.out.join("benchmarks.svg"), report::svg(&points))?;
    std::fs::write(a.out.join("benchmarks.md"), report::markdown(&r))?;
    eprintln!("wrote {}", a.out.join("benchmarks.md").display());
    Ok(())
}
