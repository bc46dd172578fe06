//! Cluster-autoscaler provider for Elemento: an `externalgrpc` cloud provider whose node groups
//! are Elemento VMs of one flavour on one provider.
//!
//! * [`config`]: flags and the YAML configuration (defaults and per-group overrides).
//! * [`names`]: membership by VM name (and tags when the API returns them).
//! * [`provider`]: the groups' state, creations and deletions, the sweep of leftovers.
//! * [`template`]: the template node (scale from zero) and pod requests for pricing.
//! * [`tokens`]: per-VM bootstrap tokens, the only credential user-data ever carries.
//! * [`user_data`]: the cloud-init template.
//! * [`server`]: the gRPC service.
#![forbid(unsafe_code)]

pub mod config;
pub mod names;
pub mod provider;
pub mod server;
pub mod template;
pub mod tokens;
pub mod user_data;
