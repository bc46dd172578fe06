//! Which pre-0.2 region values volumes still use, so the node controller keeps them on Nodes.
//!
//! Before 0.2 the region label was `<provider>-<region>` (or `atomos`), and the CSI driver's
//! volumes carry it in their node affinity. Changing a Node's value would leave such a volume
//! without a Node it may attach to, so the value stays while any volume of our driver refers to
//! it (see `node::decide::TopologyPolicy`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use elemento_api::topology::LABEL_REGION;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, ListParams};
use tracing::warn;

/// The CSI driver whose volumes count.
pub const CSI_DRIVER: &str = "csi.elemento.cloud";
/// How long a listing of PersistentVolumes is used, at most.
const MAX_TTL: Duration = Duration::from_secs(60);

pub struct LegacyRegions {
    kube: kube::Client,
    ttl: Duration,
    cached: tokio::sync::Mutex<Option<(BTreeSet<String>, Instant)>>,
}

impl LegacyRegions {
    /// `refresh`: the Node refresh period; a listing is used for half of it (at most a minute).
    pub fn new(kube: kube::Client, refresh: Duration) -> Self {
        Self {
            kube,
            ttl: (refresh / 2).min(MAX_TTL),
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// The region values in the node affinity of our driver's PersistentVolumes, listed at most
    /// once per TTL. `None` when they cannot be listed: then no Node's region is changed.
    pub async fn in_use(&self) -> Option<BTreeSet<String>> {
        let mut c = self.cached.lock().await;
        if let Some((set, at)) = c.as_ref()
            && at.elapsed() < self.ttl
        {
            return Some(set.clone());
        }
        let api: Api<PersistentVolume> = Api::all(self.kube.clone());
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                let set = regions_in_use(&list.items);
                *c = Some((set.clone(), Instant::now()));
                Some(set)
            }
            Err(e) => {
                warn!(error = %e, "cannot list PersistentVolumes: Node regions are left as they are");
                None
            }
        }
    }
}

/// Every value of the region key in the required node affinity of our driver's volumes.
pub fn regions_in_use(pvs: &[PersistentVolume]) -> BTreeSet<String> {
    pvs.iter()
        .filter_map(|pv| pv.spec.as_ref())
        .filter(|s| s.csi.as_ref().is_some_and(|c| c.driver == CSI_DRIVER))
        .filter_map(|s| s.node_affinity.as_ref()?.required.as_ref())
        .flat_map(|r| r.node_selector_terms.iter())
        .flat_map(|t| t.match_expressions.iter().flatten())
        .filter(|e| e.key == LABEL_REGION && e.operator == "In")
        .flat_map(|e| e.values.iter().flatten().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_volumes_region_values_count() {
        let pv = |driver: &str, key: &str, values: &[&str]| -> PersistentVolume {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "pv"},
                "spec": {
                    "csi": {"driver": driver, "volumeHandle": "v"},
                    "nodeAffinity": {"required": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": key, "operator": "In", "values": values}]}
                    ]}}
                }
            }))
            .expect("pv")
        };
        let pvs = [
            pv(CSI_DRIVER, LABEL_REGION, &["atomos"]),
            pv(CSI_DRIVER, LABEL_REGION, &["ovh-eu-west-par", "atomos"]),
            pv("other.csi", LABEL_REGION, &["theirs"]),
            pv(CSI_DRIVER, "topology.kubernetes.io/zone", &["ovh"]),
        ];
        assert_eq!(
            regions_in_use(&pvs).into_iter().collect::<Vec<_>>(),
            ["atomos", "ovh-eu-west-par"]
        );
    }
}
