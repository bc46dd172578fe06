//! Pure load-balancer decisions: whether a Service is ours, its annotations, its desired LB.

use std::collections::BTreeMap;

use elemento_api::types::*;
use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Service, ServiceStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::annotations::{ANN_LB_ID, ANN_PREFIX, LbOptions, NodeSelector};
use crate::config::ClassPolicy;

pub const FINALIZER: &str = "service.kubernetes.io/load-balancer-cleanup";
/// Nodes with this label never receive load-balancer traffic (upstream convention).
pub const LABEL_EXCLUDE: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// True when the Service should have an Elemento load balancer now.
pub fn wants_lb(svc: &Service, policy: &ClassPolicy) -> bool {
    let Some(spec) = &svc.spec else { return false };
    if svc.metadata.deletion_timestamp.is_some() || spec.type_.as_deref() != Some("LoadBalancer") {
        return false;
    }
    match spec.load_balancer_class.as_deref() {
        None => policy.claim_unset,
        Some(c) => c == policy.class,
    }
}

/// Whether the Service's class is ours at all (a Service of another class is never touched,
/// even if it somehow carries our finalizer... except to remove an LB we made).
pub fn has_finalizer(svc: &Service) -> bool {
    svc.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

/// Deterministic LB name: `k8s-<cluster>-<service uid>`, so a restart finds its LBs.
pub fn lb_name(cluster: &str, svc: &Service, opts: Option<&LbOptions>) -> Option<String> {
    if let Some(n) = opts.and_then(|o| o.name.clone()) {
        return Some(n);
    }
    let uid = svc.metadata.uid.as_deref()?;
    Some(format!("k8s-{cluster}-{uid}"))
}

/// A Node as the LB target selection sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetNode {
    pub name: String,
    pub vm_id: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub initialized: bool,
    pub deleting: bool,
}

/// VM ids of the Nodes that receive traffic, sorted and unique.
pub fn targets(nodes: &[TargetNode], selector: &NodeSelector) -> Vec<String> {
    let mut t: Vec<String> = nodes
        .iter()
        .filter(|n| {
            n.initialized
                && !n.deleting
                && !n.labels.contains_key(LABEL_EXCLUDE)
                && selector.matches(&n.labels)
        })
        .filter_map(|n| n.vm_id.clone())
        .collect();
    t.sort();
    t.dedup();
    t
}

/// The LB the Service should have.
pub fn desired_spec(
    svc: &Service,
    name: String,
    opts: &LbOptions,
    targets: Vec<String>,
) -> Result<LoadBalancerSpec, String> {
    let spec = svc.spec.as_ref().ok_or("the Service has no spec")?;
    // What Elemento cannot do is refused, never dropped: a silently wrong LB is worse than none.
    let families = spec.ip_families.as_deref().unwrap_or_default();
    if !families.is_empty() && !families.iter().any(|f| f == "IPv4") {
        return Err("spec.ipFamilies has no IPv4: Elemento load balancers have IPv4 addresses only; use ipFamilies [IPv4] or ipFamilyPolicy PreferDualStack".into());
    }
    if let Some(ip) = spec.load_balancer_ip.as_deref().filter(|s| !s.is_empty()) {
        return Err(format!(
            "spec.loadBalancerIP {ip}: the Elemento API allocates load-balancer addresses and cannot reserve a given one; remove the field"
        ));
    }
    let allowed_sources = source_ranges(svc)?;
    let algorithm = match spec.session_affinity.as_deref() {
        Some("ClientIP") => {
            let asked = svc.annotations().get(&format!("{ANN_PREFIX}algorithm"));
            if asked.is_some_and(|a| a != "source_ip") {
                return Err(format!(
                    "spec.sessionAffinity ClientIP needs the source_ip algorithm, but {ANN_PREFIX}algorithm asks for {}; remove one of the two",
                    asked.map_or("", String::as_str)
                ));
            }
            LbAlgorithm::SourceIp
        }
        _ => opts.algorithm,
    };
    let mut listeners = vec![];
    for p in spec.ports.as_deref().unwrap_or_default() {
        let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
            "TCP" => LbProtocol::Tcp,
            "UDP" => LbProtocol::Udp,
            other => {
                return Err(format!(
                    "port {}: protocol {other} is not supported; accepted: TCP, UDP",
                    p.port
                ));
            }
        };
        let node_port = p.node_port.filter(|n| (1..=65535).contains(n)).ok_or_else(|| {
            format!("port {} has no nodePort (allocateLoadBalancerNodePorts is false); Elemento load balancers forward to node ports", p.port)
        })?;
        let port = u16::try_from(p.port).map_err(|_| format!("port {} is out of range", p.port))?;
        listeners.push(LbListener {
            protocol,
            port,
            target_port: node_port as u16,
        });
    }
    if listeners.is_empty() {
        return Err("the Service has no ports".into());
    }
    listeners.sort();
    // externalTrafficPolicy: Local → only Nodes with a ready endpoint answer the kube-proxy
    // health check on healthCheckNodePort; use it unless annotations say otherwise.
    let local = spec.external_traffic_policy.as_deref() == Some("Local");
    let hc_node_port = spec
        .health_check_node_port
        .filter(|_| local)
        .and_then(|p| u16::try_from(p).ok());
    let protocol = opts
        .health_check_protocol
        .unwrap_or(if hc_node_port.is_some() {
            HealthCheckProtocol::Http
        } else {
            HealthCheckProtocol::Tcp
        });
    let path = match protocol {
        HealthCheckProtocol::Http => Some(
            opts.health_check_path
                .clone()
                .unwrap_or_else(|| "/healthz".into()),
        ),
        HealthCheckProtocol::Tcp => None,
    };
    Ok(LoadBalancerSpec {
        name,
        listeners,
        targets,
        health_check: LbHealthCheck {
            protocol,
            port: opts.health_check_port.or(hc_node_port).unwrap_or(0),
            path,
            interval_seconds: opts.health_check_interval,
            timeout_seconds: opts.health_check_timeout,
            retries: opts.health_check_retries,
        },
        algorithm,
        proxy_protocol: opts.proxy_protocol,
        private: opts.internal,
        hostname: opts.hostname.clone(),
        owner: None,
        allowed_sources,
        target_address: opts.target_address,
    })
}

/// The annotation upstream cloud providers read when `spec.loadBalancerSourceRanges` is unset.
pub const ANN_SOURCE_RANGES: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";

/// `spec.loadBalancerSourceRanges` (or, when empty, the source-ranges annotation) as IPv4 CIDRs,
/// normalized and sorted. Anything else is an error naming the field and the value: a restriction
/// the LB could not enforce is never dropped.
pub fn source_ranges(svc: &Service) -> Result<Vec<String>, String> {
    let from_spec = svc
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_source_ranges.clone())
        .unwrap_or_default();
    let (field, raw): (&str, Vec<String>) = if !from_spec.is_empty() {
        ("spec.loadBalancerSourceRanges", from_spec)
    } else {
        let ann = svc
            .annotations()
            .get(ANN_SOURCE_RANGES)
            .cloned()
            .unwrap_or_default();
        (
            ANN_SOURCE_RANGES,
            ann.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        )
    };
    let mut out = vec![];
    for r in raw {
        let parsed = r.split_once('/').and_then(|(ip, len)| {
            let ip: std::net::Ipv4Addr = ip.trim().parse().ok()?;
            let len: u8 = len.trim().parse().ok().filter(|l| *l <= 32)?;
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            Some(format!(
                "{}/{len}",
                std::net::Ipv4Addr::from(u32::from(ip) & mask)
            ))
        });
        match parsed {
            Some(c) => out.push(c),
            None => {
                return Err(format!(
                    "{field}: {r:?} is not an IPv4 CIDR (a.b.c.d/n); Elemento load balancers are IPv4 only"
                ));
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// What the service controller does with the LBs it found for a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbPlan {
    /// No LB of ours: create one with the desired name.
    Create,
    /// Ours, under the desired name: update it when its spec differs.
    Keep { id: String },
    /// Ours, but under another name (the name annotation changed): create the new one, move the
    /// Service to it, delete the old one. Elemento LBs cannot be renamed in place.
    Replace { old_id: String },
    /// Like `Keep`, plus deleting the Service's previous LB, also ours (a rename interrupted after
    /// the create).
    KeepAndDelete { id: String, old_id: String },
    /// The desired name belongs to an LB that is not ours: nothing is changed.
    NameTaken { name: String },
}

/// An LB as the plan sees it: id, name and ownership marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundLb {
    pub id: String,
    pub name: String,
    pub owner: Option<LbOwner>,
}

/// Whether `lb` belongs to the Service `owner`. With a marker, only an exact match. Without one
/// (made before 0.2, which wrote no marker), only the deterministic default name, which embeds the
/// Service uid, or the id the CCM itself recorded on the Service: a name chosen by annotation is
/// never enough (another Service may choose the same).
pub fn owned(lb: &FoundLb, owner: &LbOwner, recorded_id: Option<&str>) -> bool {
    match &lb.owner {
        Some(o) => o == owner,
        None => {
            lb.name == format!("k8s-{}-{}", owner.cluster, owner.service_uid)
                || recorded_id == Some(lb.id.as_str())
        }
    }
}

/// The plan for a Service whose desired LB name is `name`, given the LB the Service records
/// (`recorded`, by the id annotation) and the LB that has the desired name (`named`).
pub fn lb_plan(
    name: &str,
    owner: &LbOwner,
    recorded: Option<&FoundLb>,
    named: Option<&FoundLb>,
) -> LbPlan {
    let recorded_id = recorded.map(|r| r.id.as_str());
    let recorded = recorded.filter(|r| owned(r, owner, recorded_id));
    // A replacement made because the endpoint has no update route is the current LB of `name`.
    let named = match recorded {
        Some(r) if is_replacement_of(name, &r.name) => Some(r),
        _ => named,
    };
    match (recorded, named) {
        (_, Some(n)) if !owned(n, owner, recorded_id) => LbPlan::NameTaken {
            name: name.to_string(),
        },
        (Some(r), Some(n)) if r.id != n.id => LbPlan::KeepAndDelete {
            id: n.id.clone(),
            old_id: r.id.clone(),
        },
        (_, Some(n)) => LbPlan::Keep { id: n.id.clone() },
        (Some(r), None) => LbPlan::Replace {
            old_id: r.id.clone(),
        },
        (None, None) => LbPlan::Create,
    }
}

/// The name of the LB that replaces a Service's LB when the endpoint cannot update one in place:
/// the base name, `-r` and 8 hex digits of the desired spec (its name excluded). Deterministic, so
/// a retry after an ambiguous create finds the LB it made instead of making another.
pub fn replacement_name(base: &str, desired: &LoadBalancerSpec) -> String {
    let spec = LoadBalancerSpec {
        name: base.to_string(),
        ..desired.clone()
    };
    let hash = crate::digest::fnv1a32(&serde_json::to_vec(&spec).unwrap_or_default());
    format!("{base}-r{hash:08x}")
}

/// Whether `name` is `base` replaced (see [`replacement_name`]).
pub fn is_replacement_of(base: &str, name: &str) -> bool {
    name.strip_prefix(base)
        .and_then(|rest| rest.strip_prefix("-r"))
        .is_some_and(|h| h.len() == 8 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// LBs of this Service other than `current`: the base name or a replacement of it, with proof of
/// ownership. They are left behind only by an interrupted replace, and deleted once the Service
/// points at `current`.
pub fn stale_lbs<'a>(
    base: &str,
    owner: &LbOwner,
    recorded_id: Option<&str>,
    current_id: &str,
    found: impl IntoIterator<Item = &'a FoundLb>,
) -> Vec<FoundLb> {
    found
        .into_iter()
        .filter(|lb| lb.id != current_id)
        .filter(|lb| lb.name == base || is_replacement_of(base, &lb.name))
        .filter(|lb| owned(lb, owner, recorded_id))
        .cloned()
        .collect()
}

/// `status.loadBalancer.ingress`: the hostname when one is set (traffic then always goes through
/// the LB, which proxy protocol needs), else the address.
pub fn ingress(hostname: Option<&str>, ip: Option<&str>) -> Vec<LoadBalancerIngress> {
    match (hostname, ip) {
        (Some(h), _) => vec![LoadBalancerIngress {
            hostname: Some(h.to_string()),
            ..Default::default()
        }],
        (None, Some(ip)) => vec![LoadBalancerIngress {
            ip: Some(ip.to_string()),
            ip_mode: Some("VIP".into()),
            ..Default::default()
        }],
        (None, None) => vec![],
    }
}

/// What happens to our LB under the desired name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecChange {
    /// Its spec is the desired one: no call.
    Keep,
    Update,
    /// Changed, and this endpoint has no update route: a successor replaces it.
    Replace,
}

pub fn spec_change(matches_desired: bool, update_supported: bool) -> SpecChange {
    match (matches_desired, update_supported) {
        (true, _) => SpecChange::Keep,
        (false, true) => SpecChange::Update,
        (false, false) => SpecChange::Replace,
    }
}

/// The Service's own writes of an ensure, each `None` when it would change nothing.
///
/// Our finalizer, added before any LB exists (guarded by resourceVersion: a concurrent change
/// of the list conflicts instead of being overwritten).
pub fn finalizer_patch(svc: &Service) -> Option<Service> {
    if has_finalizer(svc) {
        return None;
    }
    let mut finalizers = svc.finalizers().to_vec();
    finalizers.push(FINALIZER.into());
    Some(Service {
        metadata: ObjectMeta {
            finalizers: Some(finalizers),
            resource_version: svc.metadata.resource_version.clone(),
            ..Default::default()
        },
        ..Default::default()
    })
}

/// The annotation recording the LB's id.
pub fn lb_id_patch(svc: &Service, lb_id: &str) -> Option<Service> {
    (svc.annotations().get(ANN_LB_ID).map(String::as_str) != Some(lb_id)).then(|| Service {
        metadata: ObjectMeta {
            annotations: Some([(ANN_LB_ID.to_string(), lb_id.to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    })
}

/// `status.loadBalancer.ingress` (the status subresource).
pub fn ingress_patch(svc: &Service, want: Vec<LoadBalancerIngress>) -> Option<Service> {
    let have = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.clone())
        .unwrap_or_default();
    (have != want).then(|| Service {
        status: Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(want),
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The cleanup's writes, once the LB is gone: the ingress cleared (status), then our finalizer
/// and the id annotation removed. A merge patch deletes a key with `null`, which a typed object
/// cannot carry, so these two are JSON.
pub fn clear_ingress_patch(svc: &Service) -> Option<serde_json::Value> {
    let has_ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .is_some_and(|i| !i.is_empty());
    has_ingress.then(|| serde_json::json!({"status": {"loadBalancer": {"ingress": null}}}))
}

pub fn release_patch(svc: &Service) -> serde_json::Value {
    let finalizers: Vec<&String> = svc
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .collect();
    serde_json::json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": svc.metadata.resource_version,
        "annotations": {ANN_LB_ID: null},
    }})
}

#[cfg(test)]
mod tests {

    fn found(id: &str, name: &str, owner: Option<(&str, &str)>) -> FoundLb {
        FoundLb {
            id: id.into(),
            name: name.into(),
            owner: owner.map(|(c, u)| LbOwner {
                cluster: c.into(),
                service_uid: u.into(),
            }),
        }
    }

    #[test]
    fn replacements_are_deterministic_and_recognised() {
        let me = LbOwner {
            cluster: "c1".into(),
            service_uid: "u1".into(),
        };
        let spec: LoadBalancerSpec = serde_json::from_value(serde_json::json!({
            "name": "web", "listeners": [{"port": 80, "protocol": "tcp", "target_port": 30080}],
            "targets": ["vm-1"],
            "health_check": {"protocol": "tcp", "port": 0, "interval_seconds": 5, "timeout_seconds": 3, "retries": 3},
            "algorithm": "round_robin", "proxy_protocol": false, "private": false
        }))
        .expect("spec");
        let r1 = replacement_name("web", &spec);
        assert_eq!(r1, replacement_name("web", &spec), "same spec, same name");
        assert!(is_replacement_of("web", &r1), "{r1}");
        let mut more = spec.clone();
        more.targets.push("vm-2".into());
        let r2 = replacement_name("web", &more);
        assert_ne!(r1, r2);
        for not in [
            "web",
            "web-r1234",
            "web-rzzzzzzzz",
            "webx-r01234567",
            "web-r012345678",
        ] {
            assert!(!is_replacement_of("web", not), "{not}");
        }
        // The recorded replacement is the current LB of the base name.
        let replaced = found("lb-2", &r1, Some(("c1", "u1")));
        let old = found("lb-1", "web", Some(("c1", "u1")));
        assert_eq!(
            lb_plan("web", &me, Some(&replaced), None),
            LbPlan::Keep { id: "lb-2".into() }
        );
        assert_eq!(
            lb_plan("web", &me, Some(&replaced), Some(&old)),
            LbPlan::Keep { id: "lb-2".into() }
        );
        // Leftovers of an interrupted replace are stale; someone else's LB never is.
        let theirs = found("lb-3", &r2, Some(("c1", "u2")));
        let other = found("lb-4", "other", Some(("c1", "u1")));
        let stale = stale_lbs(
            "web",
            &me,
            Some("lb-2"),
            "lb-2",
            [&replaced, &old, &theirs, &other],
        );
        assert_eq!(stale, vec![old]);
    }

    #[test]
    fn lb_plan_adopts_only_what_carries_proof() {
        let me = LbOwner {
            cluster: "c1".into(),
            service_uid: "u1".into(),
        };
        let mine = found("lb-1", "web", Some(("c1", "u1")));
        let theirs = found("lb-2", "web", Some(("c1", "u2")));
        let other_cluster = found("lb-3", "web", Some(("c2", "u1")));
        assert_eq!(lb_plan("web", &me, None, None), LbPlan::Create);
        assert_eq!(
            lb_plan("web", &me, None, Some(&mine)),
            LbPlan::Keep { id: "lb-1".into() }
        );
        // Takeover: same name, another Service's or another cluster's LB.
        for other in [&theirs, &other_cluster] {
            assert_eq!(
                lb_plan("web", &me, None, Some(other)),
                LbPlan::NameTaken { name: "web".into() }
            );
        }
        // An annotation pointing at someone else's LB proves nothing.
        assert_eq!(lb_plan("web", &me, Some(&theirs), None), LbPlan::Create);
        // Rename: the recorded LB is ours under the old name.
        let old = found("lb-0", "old", Some(("c1", "u1")));
        assert_eq!(
            lb_plan("web", &me, Some(&old), None),
            LbPlan::Replace {
                old_id: "lb-0".into()
            }
        );
        assert_eq!(
            lb_plan("web", &me, Some(&old), Some(&mine)),
            LbPlan::KeepAndDelete {
                id: "lb-1".into(),
                old_id: "lb-0".into()
            }
        );
        assert_eq!(
            lb_plan("web", &me, Some(&old), Some(&theirs)),
            LbPlan::NameTaken { name: "web".into() }
        );
        // LBs made before the marker existed: the default name (it embeds the uid), or the id the
        // CCM recorded on this Service; a chosen name alone is not proof.
        let legacy_default = found("lb-4", "k8s-c1-u1", None);
        assert_eq!(
            lb_plan("k8s-c1-u1", &me, None, Some(&legacy_default)),
            LbPlan::Keep { id: "lb-4".into() }
        );
        let legacy_named = found("lb-5", "shop", None);
        assert_eq!(
            lb_plan("shop", &me, None, Some(&legacy_named)),
            LbPlan::NameTaken {
                name: "shop".into()
            }
        );
        assert_eq!(
            lb_plan("shop", &me, Some(&legacy_named), Some(&legacy_named)),
            LbPlan::Keep { id: "lb-5".into() }
        );
    }

    use super::*;
    use crate::config::LbDefaults;
    use crate::service::annotations::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn lb_svc() -> Service {
        svc(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "1234-abcd"},
            "spec": {"type": "LoadBalancer", "ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080},
                {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}]}
        }))
    }

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (format!("{ANN_PREFIX}{k}"), v.to_string()))
            .collect()
    }

    #[test]
    fn class_policy() {
        let ours = ClassPolicy {
            class: "elemento.cloud/load-balancer".into(),
            claim_unset: true,
        };
        assert!(wants_lb(&lb_svc(), &ours));
        assert!(!wants_lb(
            &lb_svc(),
            &ClassPolicy {
                claim_unset: false,
                ..ours.clone()
            }
        ));
        let mut other = lb_svc();
        other.spec.as_mut().unwrap().load_balancer_class = Some("metallb.io/l2".into());
        assert!(!wants_lb(&other, &ours));
        other.spec.as_mut().unwrap().load_balancer_class = Some(ours.class.clone());
        assert!(wants_lb(&other, &ours));
        let mut cip = lb_svc();
        cip.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        assert!(!wants_lb(&cip, &ours));
    }

    #[test]
    fn annotations_valid_and_invalid() {
        let d = LbDefaults::default();
        let o = parse_annotations(
            &ann(&[
                ("algorithm", "least_connections"),
                ("proxy-protocol", "true"),
                ("health-check-interval", "10"),
                ("node-selector", "pool=web,!gpu"),
                ("internal", "true"),
            ]),
            &d,
        )
        .unwrap();
        assert_eq!(o.algorithm, LbAlgorithm::LeastConnections);
        assert!(o.proxy_protocol && o.internal);
        assert_eq!(o.health_check_interval, 10);
        assert_eq!(o.node_selector.0.len(), 2);
        let e = parse_annotations(
            &ann(&[
                ("algorithm", "fastest"),
                ("health-check-port", "70000"),
                ("algoritm", "x"),
            ]),
            &d,
        )
        .unwrap_err();
        assert_eq!(e.len(), 3);
        let text: Vec<String> = e.iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("load-balancer.elemento.cloud/algorithm")
                    && t.contains("round_robin, least_connections, source_ip")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("algoritm") && t.contains("a known annotation")),
            "{text:?}"
        );
        assert!(
            parse_annotations(&ann(&[("health-check-timeout", "20")]), &d).is_err(),
            "timeout above interval"
        );
        assert!(parse_annotations(&ann(&[("hostname", "-bad-.example")]), &d).is_err());
        assert!(parse_annotations(&ann(&[("name", "Has Space")]), &d).is_err());
        assert!(parse_annotations(&ann(&[("node-selector", "a b=c")]), &d).is_err());
        let long = parse_annotations(&ann(&[("name", &"A".repeat(60_000))]), &d).unwrap_err()[0]
            .to_string();
        assert!(
            long.len() < 300,
            "the value is not quoted whole: {} bytes",
            long.len()
        );
    }

    #[test]
    fn desired_spec_listeners_targets_and_health_check() {
        let d = LbDefaults::default();
        let o = parse_annotations(&BTreeMap::new(), &d).unwrap();
        let s = desired_spec(&lb_svc(), "lb".into(), &o, vec!["vm-1".into()]).unwrap();
        assert_eq!(
            s.listeners,
            vec![
                LbListener {
                    protocol: LbProtocol::Tcp,
                    port: 80,
                    target_port: 30080
                },
                LbListener {
                    protocol: LbProtocol::Udp,
                    port: 53,
                    target_port: 30053
                },
            ]
        );
        assert_eq!(s.health_check.protocol, HealthCheckProtocol::Tcp);
        let mut local = lb_svc();
        let spec = local.spec.as_mut().unwrap();
        spec.external_traffic_policy = Some("Local".into());
        spec.health_check_node_port = Some(31999);
        let s = desired_spec(&local, "lb".into(), &o, vec![]).unwrap();
        assert_eq!(
            (
                s.health_check.protocol,
                s.health_check.port,
                s.health_check.path.as_deref()
            ),
            (HealthCheckProtocol::Http, 31999, Some("/healthz"))
        );
        let mut sctp = lb_svc();
        sctp.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].protocol = Some("SCTP".into());
        assert!(
            desired_spec(&sctp, "lb".into(), &o, vec![])
                .unwrap_err()
                .contains("SCTP")
        );
        let mut no_np = lb_svc();
        no_np.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = None;
        assert!(
            desired_spec(&no_np, "lb".into(), &o, vec![])
                .unwrap_err()
                .contains("nodePort")
        );
    }

    /// Service fields Elemento cannot honour are refused with the field named; the ones it can
    /// (source ranges, ClientIP affinity) reach the LB spec. Nothing is silently dropped.
    #[test]
    fn service_fields_are_honoured_or_refused_never_ignored() {
        let o = parse_annotations(&BTreeMap::new(), &LbDefaults::default()).unwrap();
        let with = |patch: serde_json::Value, ann: serde_json::Value| {
            let mut v = serde_json::to_value(lb_svc()).unwrap();
            for (k, x) in patch.as_object().unwrap() {
                v["spec"][k] = x.clone();
            }
            v["metadata"]["annotations"] = ann;
            desired_spec(&svc(v), "lb".into(), &o, vec![])
        };
        let s = with(
            json!({"loadBalancerSourceRanges": ["203.0.113.9/24", "198.51.100.0/24"]}),
            json!({}),
        )
        .unwrap();
        assert_eq!(s.allowed_sources, ["198.51.100.0/24", "203.0.113.0/24"]);
        let s = with(
            json!({}),
            json!({ANN_SOURCE_RANGES: "10.0.0.0/8, 192.0.2.1/32"}),
        )
        .unwrap();
        assert_eq!(s.allowed_sources, ["10.0.0.0/8", "192.0.2.1/32"]);
        assert!(
            with(json!({}), json!({}))
                .unwrap()
                .allowed_sources
                .is_empty()
        );
        for bad in [
            json!(["10.0.0.0"]),
            json!(["2001:db8::/32"]),
            json!(["10.0.0.0/33"]),
        ] {
            let e = with(json!({"loadBalancerSourceRanges": bad}), json!({})).unwrap_err();
            assert!(
                e.contains("spec.loadBalancerSourceRanges") && e.contains("IPv4 CIDR"),
                "{e}"
            );
        }
        let e = with(json!({}), json!({ANN_SOURCE_RANGES: "office"})).unwrap_err();
        assert!(e.contains(ANN_SOURCE_RANGES), "{e}");
        // ClientIP affinity is the source-IP algorithm; a conflicting annotation is refused.
        let s = with(json!({"sessionAffinity": "ClientIP"}), json!({})).unwrap();
        assert_eq!(s.algorithm, LbAlgorithm::SourceIp);
        let e = with(
            json!({"sessionAffinity": "ClientIP"}),
            json!({"load-balancer.elemento.cloud/algorithm": "round_robin"}),
        )
        .unwrap_err();
        assert!(
            e.contains("sessionAffinity") && e.contains("round_robin"),
            "{e}"
        );
        // A requested address, or IPv6 only: refused, naming the field.
        let e = with(json!({"loadBalancerIP": "203.0.113.50"}), json!({})).unwrap_err();
        assert!(e.contains("spec.loadBalancerIP 203.0.113.50"), "{e}");
        let e = with(json!({"ipFamilies": ["IPv6"]}), json!({})).unwrap_err();
        assert!(e.contains("spec.ipFamilies"), "{e}");
        assert!(with(json!({"ipFamilies": ["IPv6", "IPv4"]}), json!({})).is_ok());
    }

    #[test]
    fn targets_respect_selector_exclusion_and_initialization() {
        let n = |name: &str, labels: &[(&str, &str)], init: bool| TargetNode {
            name: name.into(),
            vm_id: Some(format!("vm-{name}")),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            initialized: init,
            deleting: false,
        };
        let nodes = vec![
            n("b", &[("pool", "web")], true),
            n("a", &[("pool", "web")], true),
            n("c", &[("pool", "db")], true),
            n("d", &[(LABEL_EXCLUDE, "")], true),
            n("e", &[], false),
        ];
        assert_eq!(
            targets(&nodes, &NodeSelector::default()),
            ["vm-a", "vm-b", "vm-c"]
        );
        assert_eq!(
            targets(&nodes, &NodeSelector::parse("pool=web").unwrap()),
            ["vm-a", "vm-b"]
        );
        assert_eq!(
            targets(&nodes, &NodeSelector::parse("pool!=web").unwrap()),
            ["vm-c"]
        );
    }

    #[test]
    fn names_are_deterministic() {
        let o = parse_annotations(&ann(&[("name", "my-lb")]), &LbDefaults::default()).unwrap();
        assert_eq!(
            lb_name("prod", &lb_svc(), None).as_deref(),
            Some("k8s-prod-1234-abcd")
        );
        assert_eq!(
            lb_name("prod", &lb_svc(), Some(&o)).as_deref(),
            Some("my-lb")
        );
    }

    #[test]
    fn keep_update_or_replace() {
        assert_eq!(spec_change(true, true), SpecChange::Keep);
        assert_eq!(spec_change(true, false), SpecChange::Keep);
        assert_eq!(spec_change(false, true), SpecChange::Update);
        assert_eq!(spec_change(false, false), SpecChange::Replace);
    }

    /// Each Service write only when it changes something, with the fields the API server needs.
    #[test]
    fn service_patches_are_typed_and_only_when_needed() {
        let mut s = lb_svc();
        s.metadata.resource_version = Some("9".into());
        s.metadata.finalizers = Some(vec!["other".into()]);
        let p = serde_json::to_value(finalizer_patch(&s).expect("a finalizer patch")).unwrap();
        assert_eq!(p["metadata"]["finalizers"], json!(["other", FINALIZER]));
        assert_eq!(p["metadata"]["resourceVersion"], "9");
        s.metadata.finalizers = Some(vec!["other".into(), FINALIZER.into()]);
        assert_eq!(finalizer_patch(&s), None);

        let p = serde_json::to_value(lb_id_patch(&s, "lb-1").expect("an id patch")).unwrap();
        assert_eq!(p["metadata"]["annotations"][ANN_LB_ID], "lb-1");
        s.metadata.annotations = Some([(ANN_LB_ID.to_string(), "lb-1".to_string())].into());
        assert_eq!(lb_id_patch(&s, "lb-1"), None);

        let want = ingress(None, Some("51.15.1.2"));
        let p =
            serde_json::to_value(ingress_patch(&s, want.clone()).expect("a status patch")).unwrap();
        assert_eq!(
            p["status"]["loadBalancer"]["ingress"],
            json!([{"ip": "51.15.1.2", "ipMode": "VIP"}])
        );
        s.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(want.clone()),
            }),
            ..Default::default()
        });
        assert_eq!(ingress_patch(&s, want), None);
        assert_eq!(
            ingress(Some("lb.example"), Some("51.15.1.2"))[0]
                .hostname
                .as_deref(),
            Some("lb.example"),
            "the hostname wins"
        );

        let clear = clear_ingress_patch(&s).expect("ingress to clear");
        assert!(clear["status"]["loadBalancer"]["ingress"].is_null());
        let release = release_patch(&s);
        assert_eq!(release["metadata"]["finalizers"], json!(["other"]));
        assert!(release["metadata"]["annotations"][ANN_LB_ID].is_null());
        assert_eq!(release["metadata"]["resourceVersion"], "9");
        s.status = None;
        assert_eq!(clear_ingress_patch(&s), None);
    }
}
