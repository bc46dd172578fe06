//! The Elemento cloud controller manager: node initialization, node lifecycle and load balancers.
//! Pure decisions live in each controller's `decide` module; the modules above them do the IO.
#![forbid(unsafe_code)]

pub mod config;
pub mod context;
pub mod digest;
pub mod events;
#[cfg(test)]
pub mod fixtures;
pub mod inventory;
pub mod kube_client;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod node;
pub mod nodes;
pub mod runner;
pub mod service;
pub mod topology;

/// Re-exported: the providerID format lives with the VM id in `elemento-api`.
pub use elemento_api::provider_id;
