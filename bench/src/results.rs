//! The typed record of one benchmark invocation (`docs/benchmarks.json`): what `main` writes,
//! what `report` renders, and what a later `report` run reads back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::measure::{Spread, spread};
use crate::{CsiNode, CsiProvision, Floor, LbConverge, NodeInit, PeerConfig, SteadyState};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Results {
    pub machine: BTreeMap<String, String>,
    pub latency_ms: u64,
    pub runs: usize,
    pub kube_version: String,
    pub generated: String,
    pub lb_added_nodes: usize,
    pub node_init: Vec<NodeInitRow>,
    /// The floor as first defined: self-paced creates (`node_init_api_server_floor`).
    pub node_init_api_server_floor: Vec<FloorRow>,
    /// The floor for node-init's own burst (`node_init_api_server_burst_floor`).
    pub node_init_burst_floor: Vec<FloorRow>,
    /// The Go framework's CCM in the same harness, one row per configuration and size.
    pub node_init_peer: Vec<PeerNodeInitRow>,
    pub lb_converge: Vec<LbConvergeRow>,
    pub csi_provision: Vec<CsiProvisionRow>,
    pub csi_node: Option<CsiNode>,
    /// At 1000 Nodes (the target's size), or the largest measured.
    pub steady_state: Option<SteadyState>,
    /// One idle window per Node count of the invocation: the steady-state cost curve.
    pub steady_state_by_nodes: Vec<SteadyState>,
    /// The comparison against the targets, written by hand and kept across runs.
    pub targets: Option<String>,
}

/// The spread of one figure over repeated runs.
fn over<T>(runs: &[T], figure: impl Fn(&T) -> f64) -> Spread {
    spread(&runs.iter().map(figure).collect::<Vec<_>>())
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeInitRow {
    pub nodes: usize,
    pub p50: Spread,
    pub p99: Spread,
    pub max: Spread,
    pub wall: Spread,
    pub vm_list_per_node: Spread,
    pub api_calls: Spread,
    pub rss: Spread,
    pub cpu: Spread,
    #[serde(default)]
    pub samples: Vec<NodeInit>,
}

impl NodeInitRow {
    pub fn from_runs(nodes: usize, runs: Vec<NodeInit>) -> Self {
        Self {
            nodes,
            p50: over(&runs, |r| r.latency_s.p50),
            p99: over(&runs, |r| r.latency_s.p99),
            max: over(&runs, |r| r.latency_s.max),
            wall: over(&runs, |r| r.wall_s),
            vm_list_per_node: over(&runs, |r| r.vm_list_calls_per_node),
            api_calls: over(&runs, |r| r.api_calls_total as f64),
            rss: over(&runs, |r| r.ccm.peak_rss_mb),
            cpu: over(&runs, |r| r.ccm.cpu_seconds),
            samples: runs,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeerNodeInitRow {
    pub config: PeerConfig,
    #[serde(flatten)]
    pub row: NodeInitRow,
}

/// One API-server floor at one size: medians of its runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FloorRow {
    pub nodes: usize,
    pub p50: Spread,
    pub p99: Spread,
    pub wall: Spread,
    /// p99 to the writes' return, the floors' definition until 2026-12-03 (absent before).
    pub write_p99: Spread,
}

impl FloorRow {
    pub fn from_runs(nodes: usize, runs: &[Floor]) -> Self {
        Self {
            nodes,
            p50: over(runs, |r| r.latency_s.p50),
            p99: over(runs, |r| r.latency_s.p99),
            wall: over(runs, |r| r.wall_s),
            write_p99: over(runs, |r| r.write_latency_s.p99),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LbConvergeRow {
    pub services: usize,
    pub nodes: usize,
    pub ingress: Spread,
    pub new_nodes: Spread,
    pub api_calls: Spread,
    #[serde(default)]
    pub samples: Vec<LbConverge>,
}

impl LbConvergeRow {
    pub fn from_runs(services: usize, nodes: usize, runs: Vec<LbConverge>) -> Self {
        Self {
            services,
            nodes,
            ingress: over(&runs, |r| r.all_ingress_s),
            new_nodes: over(&runs, |r| r.new_nodes_in_every_lb_s),
            api_calls: over(&runs, |r| r.api_calls_total as f64),
            samples: runs,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CsiProvisionRow {
    pub pvcs: usize,
    pub provisioned: Spread,
    pub bound: Spread,
    pub calls_per_volume: Spread,
    pub rss: Spread,
    #[serde(default)]
    pub samples: Vec<CsiProvision>,
}

impl CsiProvisionRow {
    pub fn from_runs(pvcs: usize, runs: Vec<CsiProvision>) -> Self {
        Self {
            pvcs,
            provisioned: over(&runs, |r| r.all_provisioned_s),
            bound: over(&runs, |r| r.all_bound_s),
            calls_per_volume: over(&runs, |r| r.api_calls_per_volume),
            rss: over(&runs, |r| r.controller.peak_rss_mb),
            samples: runs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The results file of an earlier invocation is read back whole (`report` re-renders it).
    #[test]
    fn the_committed_results_file_reads_back() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/benchmarks.json");
        let text = std::fs::read_to_string(path).expect("docs/benchmarks.json");
        let r: Results = serde_json::from_str(&text).expect("typed results");
        assert!(!r.node_init.is_empty() && !r.node_init[0].samples.is_empty());
        assert!(r.node_init[0].p99.median > 0.0);
        assert!(r.steady_state.is_some() && r.csi_node.is_some());
    }
}
