//! The Elemento CSI driver (`csi.elemento.cloud`). Pure request logic in `params`; each CSI
//! service in its own module; host commands through `cmd`; errors mapped to gRPC in `error`.
#![forbid(unsafe_code)]

pub mod cmd;
pub mod config;
pub mod controller;
pub mod device;
pub mod error;
pub mod fs;
pub mod guard;
pub mod identity;
pub mod luks;
pub mod mount;
pub mod node;
pub mod params;
pub mod rpc;
pub mod server;
