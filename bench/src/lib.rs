//! Benchmark scenarios (node-init, lb-converge, csi-provision, csi-node, steady-state) against
//! the real control plane and the simulator with a fixed per-call latency. Sizes are parameters,
//! so the test suite runs every scenario at tiny sizes (`tests/smoke.rs`). One module per
//! scenario; `results` is the typed record they all land in, `report` renders it.

mod csi_node;
mod csi_provision;
pub mod harness;
mod lb_converge;
pub mod measure;
mod node_init;
pub mod report;
pub mod results;
mod steady_state;

pub use csi_node::{CsiNode, csi_node};
pub use csi_provision::{CsiProvision, csi_provision};
pub use harness::Setup;
pub use lb_converge::{LbConverge, lb_converge};
pub use measure::machine;
pub use node_init::{
    Floor, NodeInit, PeerConfig, Subject, node_init, node_init_api_server_burst_floor,
    node_init_api_server_floor, node_init_of,
};
pub use steady_state::{SteadyState, steady_state};
