//! Flags and the driver config file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use elemento_api::settings::ApiSettings;
use serde::Deserialize;

use crate::params::{Flavour, default_flavours};

pub const DRIVER_NAME: &str = "csi.elemento.cloud";
/// The topology keys: the zone (provider) and region labels the CCM sets on Nodes, one
/// definition in `elemento_api::topology`.
pub use elemento_api::topology::{LABEL_REGION as TOPOLOGY_REGION, LABEL_ZONE as TOPOLOGY_ZONE};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Controller,
    Node,
    /// Both services on one socket (tests, csi-sanity).
    All,
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "elemento-csi-driver",
    version,
    about = "CSI driver for Elemento volumes (csi.elemento.cloud)"
)]
pub struct Args {
    #[arg(long, value_enum, env = "CSI_MODE")]
    pub mode: Mode,
    /// `unix:///path/to/csi.sock`.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    pub endpoint: String,
    /// Driver config (YAML): `api`, `flavours`, `defaultFlavour`, `maxVolumesPerNode`. Needed by
    /// the controller; optional for the node plugin.
    #[arg(long, env = "ELEMENTO_CSI_CONFIG")]
    pub config: Option<PathBuf>,
    /// The node's Elemento VM id. Default: read from this Node's `spec.providerID` (set by the
    /// CCM), with NODE_NAME and the in-cluster API.
    #[arg(long, env = "CSI_NODE_ID")]
    pub node_id: Option<String>,
    /// This node's region (the CCM's `topology.kubernetes.io/region`); read from the Node's
    /// labels at every NodeGetInfo when unset and the Node is looked up.
    #[arg(long, env = "CSI_NODE_REGION")]
    pub node_region: Option<String>,
    /// This node's zone, i.e. its provider (the CCM's `topology.kubernetes.io/zone`); read like
    /// the region.
    #[arg(long, env = "CSI_NODE_ZONE")]
    pub node_zone: Option<String>,
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Where the node looks for `disk/by-id/virtio-<serial>`.
    #[arg(long, default_value = "/dev")]
    pub device_root: PathBuf,
    /// sysfs, for the serial-number fallback scan.
    #[arg(long, default_value = "/sys")]
    pub sys_root: PathBuf,
    /// Staging and target paths must lie inside this directory (unchecked when unset).
    #[arg(long)]
    pub kubelet_dir: Option<PathBuf>,
    /// How long NodeStage waits for an attached device to appear.
    #[arg(long, default_value = "15", value_parser = |s: &str| s.parse::<u64>().map(Duration::from_secs).map_err(|e| e.to_string()))]
    pub device_wait_seconds: Duration,
    /// Serve /metrics, /healthz and /readyz here. Loopback by default: the metrics are not
    /// authenticated, and the node plugin runs with host networking.
    #[arg(long, default_value = "127.0.0.1:9810")]
    pub metrics_bind_address: SocketAddr,
    #[arg(long, default_value = "text")]
    pub log_format: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct DriverConfig {
    pub api: ApiSettings,
    /// Named volume attribute sets, chosen by the StorageClass parameter `flavour`.
    pub flavours: BTreeMap<String, Flavour>,
    pub default_flavour: String,
    /// Volumes one node can attach (the boot disk not counted). Reported by NodeGetInfo.
    pub max_volumes_per_node: i64,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            api: ApiSettings::default(),
            flavours: default_flavours(),
            default_flavour: "standard".into(),
            max_volumes_per_node: 15,
        }
    }
}

impl DriverConfig {
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?;
        let c: DriverConfig = serde_saphyr::from_str(&text)
            .map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?;
        c.validate()
            .map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), String> {
        if !self.flavours.contains_key(&self.default_flavour) {
            return Err(format!(
                "defaultFlavour {:?} is not one of the flavours ({})",
                self.default_flavour,
                self.flavours.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        for (name, f) in &self.flavours {
            if let Some(b) = &f.bus
                && !crate::params::BUSES.contains(&b.as_str())
            {
                return Err(format!(
                    "flavours.{name}.bus {b:?}: accepted {}",
                    crate::params::BUSES.join(", ")
                ));
            }
            if let Some(x) = &f.format
                && !crate::params::FORMATS.contains(&x.as_str())
            {
                return Err(format!(
                    "flavours.{name}.format {x:?}: accepted {}",
                    crate::params::FORMATS.join(", ")
                ));
            }
        }
        if !(1..=256).contains(&self.max_volumes_per_node) {
            return Err(format!(
                "maxVolumesPerNode {}: accepted 1-256",
                self.max_volumes_per_node
            ));
        }
        Ok(())
    }
}
