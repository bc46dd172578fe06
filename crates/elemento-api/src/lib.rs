//! Typed async client for the Elemento API, shared by the CCM, the CSI driver and the tests.
//!
//! * [`routes`]: every route with its evidence tag ([K] known, [I] inferred) — the one place to
//!   correct a path.
//! * [`types`]: wire shapes, decoded tolerantly, and normalised results (bytes, MiB).
//! * [`Client`]: timeouts, retries with backoff for idempotent calls, one re-login on 401.
#![forbid(unsafe_code)]

mod client;
mod config;
pub mod disk;
mod error;
mod lenient;
#[cfg(feature = "k8s")]
pub mod node;
pub mod provider_id;
pub mod routes;
pub mod settings;
pub mod taints;
pub mod topology;
pub mod types;
pub mod units;

pub use client::{CallObserver, Client};
pub use config::{Auth, ClientConfig, Credentials, Endpoints, RetryPolicy, Secret, parse_url};
pub use error::ApiError;
pub use types::*;

#[doc(hidden)]
pub mod __private {
    //! Decoders exposed for property tests and fuzzing.
    pub fn decode_vm_list(status: u16, body: &[u8]) -> Result<Vec<crate::Vm>, crate::ApiError> {
        Ok(crate::client::decode_list_bytes::<crate::types::VmWire>(
            &crate::routes::VM_STATUS,
            status,
            body,
        )?
        .into_iter()
        .filter_map(crate::types::VmWire::normalise)
        .collect())
    }
    pub fn decode_volume_list(
        status: u16,
        body: &[u8],
    ) -> Result<Vec<crate::Volume>, crate::ApiError> {
        Ok(
            crate::client::decode_list_bytes::<crate::types::VolumeWire>(
                &crate::routes::VOLUME_ACCESSIBLE,
                status,
                body,
            )?
            .into_iter()
            .filter_map(crate::types::VolumeWire::normalise)
            .collect(),
        )
    }
    pub fn decode_lb_list(
        status: u16,
        body: &[u8],
    ) -> Result<Vec<crate::LoadBalancer>, crate::ApiError> {
        Ok(
            crate::client::decode_list_bytes::<crate::types::LbRecordWire>(
                &crate::routes::LB_RUNNING,
                status,
                body,
            )?
            .into_iter()
            .filter_map(crate::types::LbRecordWire::normalise)
            .collect(),
        )
    }
}
