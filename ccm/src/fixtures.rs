//! Executor tests below e2e, in the style of kube-rs's controller-rs: a scripted Kubernetes API
//! (each expected request in order, with its answer, except requests sent together, which may
//! come in any order; anything else fails the test) and the
//! simulator in process as the Elemento API. The e2e tests run the same paths against a real
//! kube-apiserver.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::Value;

use crate::context::{Ctx, Settings};
use crate::metrics::Metrics;

/// One expected request: method and path (query excluded), and the answer.
pub struct Step {
    pub method: Method,
    pub path: String,
    pub status: u16,
    pub answer: Value,
    /// Steps of one group (adjacent in the script) are requests sent together: any order.
    group: Option<usize>,
}

pub fn step(method: Method, path: &str, status: u16, answer: Value) -> Step {
    Step {
        method,
        path: path.into(),
        status,
        answer,
        group: None,
    }
}

/// Requests the executor sends concurrently: each is expected once, in any order.
pub fn together(steps: Vec<Step>) -> Vec<Step> {
    static GROUPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let g = GROUPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    steps
        .into_iter()
        .map(|s| Step {
            group: Some(g),
            ..s
        })
        .collect()
}

/// A request the scripted API received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub body: Value,
}

#[derive(Clone, Default)]
pub struct ScriptedApi {
    script: Arc<Mutex<VecDeque<Step>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    unexpected: Arc<Mutex<Vec<String>>>,
}

impl ScriptedApi {
    pub fn new(steps: Vec<Step>) -> Self {
        Self {
            script: Arc::new(Mutex::new(steps.into())),
            ..Default::default()
        }
    }

    pub fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            let api = api.clone();
            async move { Ok::<_, std::convert::Infallible>(api.answer(req).await) }
        });
        kube::Client::new(service, "default")
    }

    async fn answer(&self, req: Request<Body>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let bytes = body.collect_bytes().await.unwrap_or_default();
        let seen = Seen {
            method: parts.method.clone(),
            path: parts.uri.path().to_string(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        };
        self.seen.lock().expect("seen").push(seen.clone());
        let next = {
            let mut script = self.script.lock().expect("script");
            // The head, or within the head's group the first step this request matches.
            let group = script.front().and_then(|s| s.group);
            let at = group
                .and_then(|g| {
                    script
                        .iter()
                        .take_while(|s| s.group == Some(g))
                        .position(|s| s.method == seen.method && s.path == seen.path)
                })
                .unwrap_or(0);
            script.remove(at)
        };
        let (status, answer) = match next {
            Some(s) if s.method == seen.method && s.path == seen.path => (s.status, s.answer),
            other => {
                self.unexpected.lock().expect("unexpected").push(format!(
                    "{} {} (expected {:?})",
                    seen.method,
                    seen.path,
                    other.map(|s| format!("{} {}", s.method, s.path))
                ));
                (500, serde_json::json!({"kind": "Status", "code": 500}))
            }
        };
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(answer.to_string().into_bytes()))
            .expect("response")
    }

    /// Every request received, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }

    /// Fails unless every step was used and nothing else was asked.
    pub fn verify(&self) {
        let unexpected = self.unexpected.lock().expect("unexpected").clone();
        assert!(unexpected.is_empty(), "unexpected requests: {unexpected:?}");
        let left: Vec<String> = self
            .script
            .lock()
            .expect("script")
            .iter()
            .map(|s| format!("{} {}", s.method, s.path))
            .collect();
        assert!(left.is_empty(), "expected requests never made: {left:?}");
    }
}

/// The simulator in process, from a scenario (YAML).
pub async fn simulator(scenario: &str) -> elemento_sim::SimHandle {
    elemento_sim::start(elemento_sim::SimOptions {
        scenario: elemento_sim::scenario::parse(scenario).expect("scenario"),
        ..Default::default()
    })
    .await
    .expect("simulator")
}

/// A context on the scripted Kubernetes API and the simulator.
pub fn ctx(kube: kube::Client, sim: &elemento_sim::SimHandle) -> Arc<Ctx> {
    let mut config = elemento_api::ClientConfig::new(
        elemento_api::Endpoints::single(&sim.base_url()).expect("endpoints"),
    );
    config.auth = elemento_api::Auth {
        credentials: Some(elemento_api::Credentials {
            username: "demo".into(),
            password: elemento_api::Secret::new("demo-password"),
            org: None,
        }),
        bearer_token: None,
    };
    config.timeout = Duration::from_secs(5);
    let api = elemento_api::Client::new(config).expect("client");
    let metrics = Metrics::register(&mut prometheus_client::registry::Registry::default());
    let settings = Settings {
        cluster_id: "test".into(),
        class: crate::config::ClassPolicy {
            class: "elemento.cloud/load-balancer".into(),
            claim_unset: true,
        },
        lb_defaults: Default::default(),
        node_status_update_frequency: Duration::from_secs(300),
        node_monitor_period: Duration::from_secs(15),
        out_of_service_after: None,
        concurrent_node_syncs: 4,
        concurrent_service_syncs: 4,
        default_region: "elemento".into(),
    };
    Arc::new(Ctx::new(kube, api, metrics, settings, "test".into()))
}
