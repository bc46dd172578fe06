//! The template node of a group (scale from zero): exactly the labels our CCM puts on a real Node
//! of that flavour and provider (one definition in `elemento_api::topology`), capacity and
//! allocatable from the flavour, the group's taints, Ready. Encoded as the protobuf `v1.Node`
//! the autoscaler decodes.

use std::collections::BTreeMap;

use elemento_api::topology::{
    self, LABEL_INSTANCE_TYPE, LABEL_INSTANCE_TYPE_BETA, LABEL_NODE_GROUP, LABEL_PROVIDER,
    LABEL_REGION, LABEL_ZONE,
};
use elemento_api::types::Template;
use k8s_pb::api::core::v1 as pb;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use prost::Message;

use crate::config::NodeGroup;

/// Pods per node, as the kubelet's default `--max-pods`.
pub const MAX_PODS: u64 = 110;
/// The resource name of NVIDIA GPUs (the device plugin's), also the autoscaler's GPU resource.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// The label the autoscaler reads for a node's GPU type (`GPULabel`).
pub const GPU_LABEL: &str = "node.elemento.cloud/gpu";

/// The template of a group, as plain data (what the tests read).
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateNode {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<(String, Option<String>, String)>,
    pub capacity: BTreeMap<String, String>,
    pub allocatable: BTreeMap<String, String>,
}

/// The labels a Node of this group gets: the CCM's (instance type, zone, region, provider), the
/// group label, the OS and architecture the kubelet sets, and the group's own.
pub fn labels(
    group: &NodeGroup,
    flavour: &Template,
    default_region: &str,
) -> BTreeMap<String, String> {
    let mut l = group.labels.clone();
    let itype = topology::instance_type_of_template(&flavour.name);
    l.insert(LABEL_INSTANCE_TYPE.into(), itype.clone());
    l.insert(LABEL_INSTANCE_TYPE_BETA.into(), itype);
    let zone = topology::zone_of(group.provider.as_deref());
    l.insert(LABEL_ZONE.into(), zone.clone());
    l.insert(LABEL_PROVIDER.into(), zone);
    l.insert(
        LABEL_REGION.into(),
        topology::region_of(group.region.as_deref(), default_region),
    );
    l.insert(LABEL_NODE_GROUP.into(), group.name.clone());
    l.insert("kubernetes.io/os".into(), "linux".into());
    l.insert("kubernetes.io/arch".into(), "amd64".into());
    if flavour.gpus > 0 {
        l.insert(GPU_LABEL.into(), "nvidia".into());
    }
    l
}

pub fn template(
    group: &NodeGroup,
    flavour: &Template,
    default_region: &str,
    cluster: &str,
) -> TemplateNode {
    let name = format!("{cluster}-{}-template", group.name);
    let mut labels = labels(group, flavour, default_region);
    labels.insert("kubernetes.io/hostname".into(), name.clone());
    let cpu_millis = u64::from(flavour.slots) * 1000;
    let mem_mib = flavour.ram_mib;
    let disk_gib = group.image.size_gib;
    let mut capacity = BTreeMap::from([
        ("cpu".to_string(), format!("{cpu_millis}m")),
        ("memory".to_string(), format!("{mem_mib}Mi")),
        ("pods".to_string(), MAX_PODS.to_string()),
        ("ephemeral-storage".to_string(), format!("{disk_gib}Gi")),
    ]);
    let r = &group.kube_reserved;
    let mut allocatable = BTreeMap::from([
        (
            "cpu".to_string(),
            format!("{}m", cpu_millis.saturating_sub(r.cpu_millis)),
        ),
        (
            "memory".to_string(),
            format!("{}Mi", mem_mib.saturating_sub(r.memory_mib)),
        ),
        ("pods".to_string(), MAX_PODS.to_string()),
        ("ephemeral-storage".to_string(), format!("{disk_gib}Gi")),
    ]);
    if flavour.gpus > 0 {
        capacity.insert(GPU_RESOURCE.into(), flavour.gpus.to_string());
        allocatable.insert(GPU_RESOURCE.into(), flavour.gpus.to_string());
    }
    TemplateNode {
        name,
        labels,
        taints: group
            .taints
            .iter()
            .map(|t| (t.key.clone(), t.value.clone(), t.effect.clone()))
            .collect(),
        capacity,
        allocatable,
    }
}

impl TemplateNode {
    /// The protobuf `v1.Node` (no providerID: the autoscaler gives template nodes its own).
    pub fn encode(&self) -> Vec<u8> {
        let q = |m: &BTreeMap<String, String>| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        Quantity {
                            string: Some(v.clone()),
                        },
                    )
                })
                .collect()
        };
        pb::Node {
            metadata: Some(ObjectMeta {
                name: Some(self.name.clone()),
                labels: self.labels.clone(),
                ..Default::default()
            }),
            spec: Some(pb::NodeSpec {
                taints: self
                    .taints
                    .iter()
                    .map(|(k, v, e)| pb::Taint {
                        key: Some(k.clone()),
                        value: v.clone(),
                        effect: Some(e.clone()),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            status: Some(pb::NodeStatus {
                capacity: q(&self.capacity),
                allocatable: q(&self.allocatable),
                conditions: vec![pb::NodeCondition {
                    r#type: Some("Ready".into()),
                    status: Some("True".into()),
                    reason: Some("KubeletReady".into()),
                    ..Default::default()
                }],
                phase: Some("Running".into()),
                ..Default::default()
            }),
        }
        .encode_to_vec()
    }
}

/// CPU cores and memory GiB a pod requests (the sum of its containers, init containers' maximum
/// when larger), from the protobuf `v1.Pod` the autoscaler sends.
pub fn pod_requests(pod_bytes: &[u8]) -> Result<(f64, f64), String> {
    let pod = pb::Pod::decode(pod_bytes).map_err(|e| format!("not a v1.Pod: {e}"))?;
    let spec = pod.spec.unwrap_or_default();
    let sum = |cs: &[pb::Container]| {
        cs.iter().fold((0.0, 0.0), |(c, m), ct| {
            let req = ct
                .resources
                .as_ref()
                .map(|r| r.requests.clone())
                .unwrap_or_default();
            let get = |k: &str| {
                req.get(k)
                    .and_then(|q| q.string.as_deref())
                    .and_then(parse_quantity)
                    .unwrap_or(0.0)
            };
            (c + get("cpu"), m + get("memory") / GIB)
        })
    };
    let (c, m) = sum(&spec.containers);
    let (ic, im) = spec
        .init_containers
        .iter()
        .map(|c| sum(std::slice::from_ref(c)))
        .fold((0.0_f64, 0.0_f64), |(a, b), (c, d)| (a.max(c), b.max(d)));
    Ok((c.max(ic), m.max(im)))
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// A Kubernetes quantity as a number (cores for CPU, bytes for memory): `500m`, `2`, `1.5`,
/// `128Mi`, `1G`, `1e3`.
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let units: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", GIB),
        ("Ti", GIB * 1024.0),
        ("Pi", GIB * 1024.0 * 1024.0),
        ("Ei", GIB * 1024.0 * 1024.0 * 1024.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (suffix, factor) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    q.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ImageConfig, ReservedConfig, TaintConfig};

    pub fn group() -> NodeGroup {
        NodeGroup {
            name: "ovh-neon".into(),
            min_size: 0,
            max_size: 3,
            flavour: "neon".into(),
            provider: Some("ovh".into()),
            region: None,
            image: ImageConfig {
                url: "https://images.example/noble.img".into(),
                size_gib: 20,
            },
            networks: vec![],
            labels: [("team".to_string(), "web".to_string())].into(),
            taints: vec![TaintConfig {
                key: "dedicated".into(),
                value: Some("web".into()),
                effect: "NoSchedule".into(),
            }],
            user_data: String::new(),
            max_node_provision_time: std::time::Duration::from_secs(600),
            kube_reserved: ReservedConfig {
                cpu_millis: 100,
                memory_mib: 256,
            },
        }
    }

    fn neon() -> Template {
        Template {
            name: "Neon".into(),
            slots: 2,
            ram_mib: 2048,
            ..Default::default()
        }
    }

    #[test]
    fn the_template_carries_the_ccm_labels_resources_and_taints() {
        let t = template(&group(), &neon(), "elemento", "c1");
        assert_eq!(t.labels[LABEL_INSTANCE_TYPE], "neon");
        assert_eq!(t.labels[LABEL_ZONE], "ovh");
        assert_eq!(t.labels[LABEL_REGION], "elemento");
        assert_eq!(t.labels[LABEL_NODE_GROUP], "ovh-neon");
        assert_eq!(t.labels["team"], "web");
        assert_eq!(t.capacity["cpu"], "2000m");
        assert_eq!(t.allocatable["cpu"], "1900m");
        assert_eq!(t.allocatable["memory"], "1792Mi");
        assert_eq!(t.capacity["ephemeral-storage"], "20Gi");
        // Through the wire form the autoscaler decodes.
        let node = pb::Node::decode(t.encode().as_slice()).unwrap();
        let meta = node.metadata.unwrap();
        assert_eq!(meta.labels, t.labels);
        let spec = node.spec.unwrap();
        assert_eq!(spec.taints[0].key.as_deref(), Some("dedicated"));
        assert_eq!(spec.provider_id, None);
        let status = node.status.unwrap();
        assert_eq!(status.allocatable["pods"].string.as_deref(), Some("110"));
        assert_eq!(status.conditions[0].status.as_deref(), Some("True"));
    }

    #[test]
    fn quantities_and_pod_requests() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1Gi"), Some(GIB));
        assert_eq!(parse_quantity("1G"), Some(1e9));
        assert_eq!(parse_quantity("lots"), None);
        let req = |cpu: &str, mem: &str| pb::Container {
            resources: Some(pb::ResourceRequirements {
                requests: [
                    (
                        "cpu".to_string(),
                        Quantity {
                            string: Some(cpu.into()),
                        },
                    ),
                    (
                        "memory".to_string(),
                        Quantity {
                            string: Some(mem.into()),
                        },
                    ),
                ]
                .into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pod = pb::Pod {
            spec: Some(pb::PodSpec {
                containers: vec![req("500m", "512Mi"), req("1", "512Mi")],
                init_containers: vec![req("2", "128Mi")],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(pod_requests(&pod.encode_to_vec()).unwrap(), (2.0, 1.0));
        assert!(pod_requests(b"\xff\xff").is_err());
    }
}
