//! The Service annotations the CCM reads (`load-balancer.elemento.cloud/*`): what each accepts,
//! and their parsing into per-Service LB options. Pure.

use std::collections::BTreeMap;
use std::fmt;

use elemento_api::types::*;

use crate::config::LbDefaults;

pub const ANN_PREFIX: &str = "load-balancer.elemento.cloud/";
/// Written by the CCM: the id of the LB made for a Service; deletion uses it even if the name
/// annotation changed.
pub const ANN_LB_ID: &str = "service.elemento.cloud/load-balancer-id";

/// An annotation the CCM cannot accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotationError {
    pub annotation: String,
    pub value: String,
    pub accepted: String,
}

impl fmt::Display for AnnotationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Quote at most 64 characters: the value is user input and may be huge.
        let shown: String = self.value.chars().take(64).collect();
        let more = if self.value.chars().count() > 64 {
            "…"
        } else {
            ""
        };
        write!(
            f,
            "annotation {}: {shown:?}{more} is not valid; accepted: {}",
            self.annotation, self.accepted
        )
    }
}

/// One `key=value` / `key!=value` / `key` / `!key` requirement of a node selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeSelector(pub Vec<Requirement>);

impl NodeSelector {
    pub fn parse(s: &str) -> Option<Self> {
        let mut reqs = vec![];
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let valid = |k: &str| {
                !k.is_empty()
                    && k.len() <= 317
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            };
            let r = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::NotExists(k.trim().into())
            } else {
                Requirement::Exists(part.into())
            };
            let key = match &r {
                Requirement::Equals(k, _)
                | Requirement::NotEquals(k, _)
                | Requirement::Exists(k)
                | Requirement::NotExists(k) => k,
            };
            if !valid(key) {
                return None;
            }
            reqs.push(r);
        }
        Some(Self(reqs))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        })
    }
}

/// Per-Service settings after annotations.
#[derive(Debug, Clone, PartialEq)]
pub struct LbOptions {
    pub name: Option<String>,
    pub algorithm: LbAlgorithm,
    pub health_check_protocol: Option<HealthCheckProtocol>,
    pub health_check_port: Option<u16>,
    pub health_check_path: Option<String>,
    pub health_check_interval: u32,
    pub health_check_timeout: u32,
    pub health_check_retries: u32,
    pub proxy_protocol: bool,
    pub node_selector: NodeSelector,
    pub hostname: Option<String>,
    pub internal: bool,
    pub target_address: TargetAddress,
}

/// Every annotation the CCM reads, with what it accepts (also the docs' list).
pub const ANNOTATIONS: &[(&str, &str)] = &[
    (
        "name",
        "a load-balancer name: 1-63 characters of a-z, 0-9 and '-'",
    ),
    ("algorithm", "round_robin, least_connections, source_ip"),
    ("health-check-protocol", "tcp, http"),
    ("health-check-port", "a port number 1-65535"),
    ("health-check-path", "an HTTP path starting with '/'"),
    ("health-check-interval", "seconds, 1-300"),
    ("health-check-timeout", "seconds, 1-300"),
    ("health-check-retries", "1-10"),
    ("proxy-protocol", "true, false"),
    (
        "node-selector",
        "a label selector: key=value, key!=value, key, !key, comma-separated",
    ),
    ("hostname", "a DNS name"),
    ("internal", "true, false"),
];

fn accepted(key: &str) -> &'static str {
    ANNOTATIONS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, a)| *a)
        .unwrap_or("")
}

fn is_dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn is_lb_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
}

/// Parses every `load-balancer.elemento.cloud/*` annotation; all errors are reported at once,
/// including unknown keys under the prefix (typos).
pub fn parse_annotations(
    ann: &BTreeMap<String, String>,
    d: &LbDefaults,
) -> Result<LbOptions, Vec<AnnotationError>> {
    let mut o = LbOptions {
        name: None,
        algorithm: d.algorithm,
        health_check_protocol: None,
        health_check_port: None,
        health_check_path: None,
        health_check_interval: d.health_check_interval_seconds,
        health_check_timeout: d.health_check_timeout_seconds,
        health_check_retries: d.health_check_retries,
        proxy_protocol: d.proxy_protocol,
        node_selector: NodeSelector::default(),
        hostname: None,
        internal: d.internal,
        target_address: d.target_address,
    };
    let mut errors = vec![];
    for (full, value) in ann {
        let Some(key) = full.strip_prefix(ANN_PREFIX) else {
            continue;
        };
        let v = value.trim();
        let bad = |errors: &mut Vec<AnnotationError>, accepted: String| {
            errors.push(AnnotationError {
                annotation: full.clone(),
                value: value.clone(),
                accepted,
            })
        };
        let num = |lo: u32, hi: u32| v.parse::<u32>().ok().filter(|n| (lo..=hi).contains(n));
        let boolean = || match v {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        };
        let ok = match key {
            "name" => is_lb_name(v)
                .then(|| o.name = Some(v.to_string()))
                .is_some(),
            "algorithm" => match v {
                "round_robin" => Some(LbAlgorithm::RoundRobin),
                "least_connections" => Some(LbAlgorithm::LeastConnections),
                "source_ip" => Some(LbAlgorithm::SourceIp),
                _ => None,
            }
            .map(|a| o.algorithm = a)
            .is_some(),
            "health-check-protocol" => match v {
                "tcp" => Some(HealthCheckProtocol::Tcp),
                "http" => Some(HealthCheckProtocol::Http),
                _ => None,
            }
            .map(|p| o.health_check_protocol = Some(p))
            .is_some(),
            "health-check-port" => num(1, 65535)
                .map(|p| o.health_check_port = Some(p as u16))
                .is_some(),
            "health-check-path" => {
                (v.starts_with('/') && v.len() <= 1024 && !v.chars().any(char::is_whitespace))
                    .then(|| o.health_check_path = Some(v.to_string()))
                    .is_some()
            }
            "health-check-interval" => num(1, 300).map(|n| o.health_check_interval = n).is_some(),
            "health-check-timeout" => num(1, 300).map(|n| o.health_check_timeout = n).is_some(),
            "health-check-retries" => num(1, 10).map(|n| o.health_check_retries = n).is_some(),
            "proxy-protocol" => boolean().map(|b| o.proxy_protocol = b).is_some(),
            "internal" => boolean().map(|b| o.internal = b).is_some(),
            "hostname" => is_dns_name(v)
                .then(|| o.hostname = Some(v.to_string()))
                .is_some(),
            "node-selector" => NodeSelector::parse(v)
                .map(|s| o.node_selector = s)
                .is_some(),
            _ => {
                let known: Vec<_> = ANNOTATIONS
                    .iter()
                    .map(|(k, _)| format!("{ANN_PREFIX}{k}"))
                    .collect();
                bad(
                    &mut errors,
                    format!("a known annotation: {}", known.join(", ")),
                );
                continue;
            }
        };
        if !ok {
            bad(&mut errors, accepted(key).to_string());
        }
    }
    if o.health_check_timeout > o.health_check_interval {
        errors.push(AnnotationError {
            annotation: format!("{ANN_PREFIX}health-check-timeout"),
            value: o.health_check_timeout.to_string(),
            accepted: format!("at most the interval ({} s)", o.health_check_interval),
        });
    }
    if errors.is_empty() {
        Ok(o)
    } else {
        Err(errors)
    }
}
