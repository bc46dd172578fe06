//! A stateful simulator of the Elemento API: the default backend of the local stack and of every
//! test. See `docs/simulator.md`.
#![forbid(unsafe_code)]

pub mod faults;
pub mod hostdev;
pub mod scenario;
mod server;
pub mod wire;
pub mod world;

pub use server::{Sim, SimHandle, SimOptions, router, start};
