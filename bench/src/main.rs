//! `cargo run --release -p bench -- all` (or one scenario): runs the benchmarks and writes
//! docs/benchmarks.{json,md,svg}. `report` re-renders the docs from the JSON alone.

use std::time::Duration;

use bench::results::{
    CsiProvisionRow, FloorRow, LbConvergeRow, NodeInitRow, PeerNodeInitRow, Results,
};
use bench::*;
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// all, node-init, lb-converge, csi-provision, csi-node, steady-state, report
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
    /// Configurations of the Go framework's CCM (tests/env/peer-ccm) that node-init runs,
    /// alternating with ours: defaults, syncs64, tuned; `none` for none.
    #[arg(long, value_delimiter = ',', default_values_t = ["defaults".to_string(), "syncs64".to_string(), "tuned".to_string()])]
    peer: Vec<String>,
    /// The peer runs up to this many Nodes (its defaults take minutes per thousand).
    #[arg(long, default_value_t = 1000)]
    peer_max_nodes: usize,
    /// Client QPS and burst of the `tuned` peer.
    #[arg(long, default_value_t = 500)]
    peer_qps: u32,
    #[arg(long, default_value_t = 1000)]
    peer_burst: u32,
    /// Where the JSON, Markdown and SVG go.
    #[arg(long, default_value = "docs")]
    out: std::path::PathBuf,
}

/// LoadBalancer Services of steady-state, at every Node count.
const STEADY_SERVICES: usize = 200;

/// Services of lb-converge: Nodes at the start, and Nodes added once every LB has its address.
const LB_NODES: usize = 100;
const LB_ADDED_NODES: usize = 20;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let setup = Setup {
        latency_ms: a.latency_ms,
        ..Default::default()
    };
    let want = |s: &str| a.scenario == "all" || a.scenario == s;
    let path = a.out.join("benchmarks.json");
    // The previous results: a scenario not run now keeps its figures.
    let mut r: Results = match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Results::default(),
        Err(e) => return Err(e.into()),
    };
    if a.scenario != "report" {
        r.machine = machine();
        r.latency_ms = a.latency_ms;
        r.runs = a.runs;
        r.kube_version = format!("v{}", elemento_e2e::kube_version());
        r.generated = k8s_openapi::jiff::Timestamp::now().to_string();
    }
    r.lb_added_nodes = LB_ADDED_NODES;
    if want("node-init") {
        let peers = a
            .peer
            .iter()
            .filter(|p| p.as_str() != "none")
            .map(|p| {
                PeerConfig::named(p, a.peer_qps, a.peer_burst).ok_or_else(|| {
                    anyhow::anyhow!("--peer {p:?}: one of defaults, syncs64, tuned, none")
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut rows = vec![];
        let mut peer_rows = vec![];
        let (mut floors, mut burst_floors) = (vec![], vec![]);
        for &n in &a.node_sizes {
            let mut runs = vec![];
            let mut peer_runs: Vec<Vec<NodeInit>> = vec![vec![]; peers.len()];
            let (mut paced, mut burst) = (vec![], vec![]);
            // Alternating ours, each peer configuration and both floors, so drift of the
            // machine hits all: the API server slows as an invocation goes on, and floors run
            // after all the CCM runs were slower than floors run beside them.
            for _ in 0..a.runs {
                let x = node_init(n, setup).await?;
                eprintln!(
                    "node-init {n}: p50 {:.3} p99 {:.3} max {:.3} s, {} calls",
                    x.latency_s.p50, x.latency_s.p99, x.latency_s.max, x.api_calls_total
                );
                runs.push(x);
                for (cfg, out) in peers.iter().zip(peer_runs.iter_mut()) {
                    if n > a.peer_max_nodes {
                        break;
                    }
                    let x = node_init_of(n, setup, &Subject::Peer(cfg.clone())).await?;
                    eprintln!(
                        "node-init {n} peer {}: p50 {:.3} p99 {:.3} max {:.3} s, RSS {:.1} MB, CPU {:.2} s",
                        cfg.name,
                        x.latency_s.p50,
                        x.latency_s.p99,
                        x.latency_s.max,
                        x.ccm.peak_rss_mb,
                        x.ccm.cpu_seconds
                    );
                    out.push(x);
                }
                let f = node_init_api_server_floor(n).await?;
                eprintln!(
                    "node-init floor (self-paced) {n}: p50 {:.3} p99 {:.3} wall {:.3} s (p99 to the writes' return {:.3} s)",
                    f.latency_s.p50, f.latency_s.p99, f.wall_s, f.write_latency_s.p99
                );
                paced.push(f);
                let f = node_init_api_server_burst_floor(n).await?;
                eprintln!(
                    "node-init floor (burst) {n}: p50 {:.3} p99 {:.3} wall {:.3} s (p99 to the writes' return {:.3} s)",
                    f.latency_s.p50, f.latency_s.p99, f.wall_s, f.write_latency_s.p99
                );
                burst.push(f);
            }
            floors.push(FloorRow::from_runs(n, &paced));
            burst_floors.push(FloorRow::from_runs(n, &burst));
            rows.push(NodeInitRow::from_runs(n, runs));
            for (cfg, out) in peers.iter().zip(peer_runs) {
                if out.is_empty() {
                    continue;
                }
                peer_rows.push(PeerNodeInitRow {
                    config: cfg.clone(),
                    row: NodeInitRow::from_runs(n, out),
                });
            }
        }
        r.node_init = rows;
        r.node_init_peer = peer_rows;
        r.node_init_api_server_floor = floors;
        r.node_init_burst_floor = burst_floors;
    }
    if want("lb-converge") {
        let mut rows = vec![];
        for s in [50, 200] {
            let mut runs = vec![];
            for _ in 0..a.runs {
                let x = lb_converge(s, LB_NODES, LB_ADDED_NODES, setup).await?;
                eprintln!(
                    "lb-converge {s}: ingress {:.2} s, new nodes {:.2} s",
                    x.all_ingress_s, x.new_nodes_in_every_lb_s
                );
                runs.push(x);
            }
            rows.push(LbConvergeRow::from_runs(s, LB_NODES, runs));
        }
        r.lb_converge = rows;
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
                runs.push(x);
            }
            rows.push(CsiProvisionRow::from_runs(p, runs));
        }
        r.csi_provision = rows;
    }
    if want("csi-node") {
        // Ten-millisecond operations on a shared machine: many runs for a stable median.
        let x = csi_node(a.runs.max(15), setup).await?;
        eprintln!("csi-node: ratio {:.2}", x.ratio_of_medians);
        r.csi_node = Some(x);
    }
    if want("steady-state") {
        let mut rows = vec![];
        for &n in &a.node_sizes {
            let x = steady_state(
                n,
                STEADY_SERVICES,
                Duration::from_secs(a.idle_seconds),
                setup,
            )
            .await?;
            eprintln!(
                "steady-state {n}: {:.1} calls/min, CCM {:.2} % CPU, {:.1} MB",
                x.api_calls_per_minute, x.ccm_cpu_percent_of_one_core, x.ccm.rss_mb
            );
            rows.push(x);
        }
        r.steady_state = rows
            .iter()
            .find(|x| x.nodes == 1000)
            .or(rows.last())
            .cloned();
        r.steady_state_by_nodes = rows;
    }
    std::fs::create_dir_all(&a.out)?;
    std::fs::write(&path, serde_json::to_vec_pretty(&r)?)?;
    let points: Vec<(f64, f64, f64)> = r
        .node_init
        .iter()
        .map(|row| (row.nodes as f64, row.p50.median, row.p99.median))
        .collect();
    std::fs::write(a.out.join("benchmarks.svg"), report::svg(&points))?;
    std::fs::write(a.out.join("benchmarks.md"), report::markdown(&r))?;
    eprintln!("wrote {}", a.out.join("benchmarks.md").display());
    Ok(())
}
