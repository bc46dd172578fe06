//! One watch of every Node, shared by all controllers. Three controllers each watching every
//! Node cost the API server three event streams and the CCM three caches; here one cache feeds
//! them all, and objects are slimmed before they are stored (managed fields and the image list
//! are most of a Node's size and no controller reads them).

use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio::sync::mpsc;
use tracing::warn;

/// What subscribers hear about Nodes.
#[derive(Debug, Clone)]
pub enum NodeEvent {
    /// Created or changed; the object as stored.
    Applied(Arc<Node>),
    Deleted(Arc<Node>),
    /// The watch listed every Node again (start, or after it lost its place): the store now
    /// holds them all, and deletions in between were not seen one by one.
    Relisted,
}

/// Events a subscriber may lag behind before the watch waits for it. Controllers drain their
/// triggers into their own de-duplicating queue at once, so this only absorbs bursts.
const SUBSCRIBER_BUFFER: usize = 1024;

pub struct NodeWatch {
    writer: Writer<Node>,
    subscribers: Vec<mpsc::Sender<NodeEvent>>,
}

impl Default for NodeWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeWatch {
    pub fn new() -> Self {
        Self {
            writer: Writer::default(),
            subscribers: vec![],
        }
    }

    /// The shared cache (filled once `run` has listed the Nodes).
    pub fn store(&self) -> Store<Node> {
        self.writer.as_reader()
    }

    /// Every Node event from the start of `run`. Subscribe only for a consumer that runs: the
    /// watch waits for a full subscriber.
    pub fn subscribe(&mut self) -> impl Stream<Item = NodeEvent> + Send + 'static {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        self.subscribers.push(tx);
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
    }

    pub fn has_subscribers(&self) -> bool {
        !self.subscribers.is_empty()
    }

    /// Watches Nodes until `shutdown`, keeping the store and telling every subscriber.
    pub async fn run(
        mut self,
        api: Api<Node>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let events = watcher(api, watcher::Config::default())
            .modify(slim)
            .default_backoff();
        let mut events = std::pin::pin!(events.take_until(shutdown));
        let store = self.writer.as_reader();
        while let Some(ev) = events.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    warn!(error = %e, "Node watch failed; retrying with backoff");
                    continue;
                }
            };
            self.writer.apply_watcher_event(&ev);
            let out = match ev {
                watcher::Event::Apply(n) => {
                    tracing::debug!(node = %n.name_any(), stage = "event", "node path");
                    store.get(&ObjectRef::from_obj(&n)).map(NodeEvent::Applied)
                }
                watcher::Event::Delete(n) => Some(NodeEvent::Deleted(Arc::new(n))),
                watcher::Event::InitDone => Some(NodeEvent::Relisted),
                watcher::Event::Init | watcher::Event::InitApply(_) => None,
            };
            if let Some(out) = out {
                // A subscriber that is gone (its controller stopped) is dropped.
                let mut alive = Vec::with_capacity(self.subscribers.len());
                for tx in self.subscribers.drain(..) {
                    if tx.send(out.clone()).await.is_ok() {
                        alive.push(tx);
                    }
                }
                self.subscribers = alive;
            }
        }
    }
}

/// The Nodes a controller reconciles for each event: the changed one, or all after a relist.
pub fn reconcile_triggers(
    events: impl Stream<Item = NodeEvent> + Send + 'static,
    store: Store<Node>,
) -> impl Stream<Item = Arc<Node>> + Send + 'static {
    events.flat_map(move |ev| {
        futures::stream::iter(match ev {
            NodeEvent::Applied(n) => vec![n],
            NodeEvent::Relisted => store.state(),
            NodeEvent::Deleted(_) => vec![],
        })
    })
}

/// Drops what no controller reads.
fn slim(n: &mut Node) {
    n.managed_fields_mut().clear();
    if let Some(s) = n.status.as_mut() {
        s.images = None;
        s.volumes_attached = None;
        s.volumes_in_use = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn slimming_keeps_what_controllers_read() {
        let mut n: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": {"a": "b"}, "annotations": {"x": "y"},
                "managedFields": [{"manager": "kubelet", "operation": "Update"}]},
            "spec": {"providerID": "elemento://vm1", "taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "images": [{"names": ["registry/image:1"], "sizeBytes": 1}]}
        }))
        .expect("node");
        let before = n.clone();
        slim(&mut n);
        assert!(
            n.metadata
                .managed_fields
                .as_ref()
                .is_none_or(|m| m.is_empty())
        );
        let st = n.status.as_ref().expect("status");
        assert!(st.images.is_none());
        assert_eq!(
            st.addresses,
            before.status.as_ref().and_then(|s| s.addresses.clone())
        );
        assert_eq!(
            st.conditions,
            before.status.as_ref().and_then(|s| s.conditions.clone())
        );
        assert_eq!(n.spec, before.spec);
        assert_eq!(n.metadata.labels, before.metadata.labels);
        assert_eq!(n.metadata.annotations, before.metadata.annotations);
    }

    #[tokio::test]
    async fn triggers_name_the_changed_node_or_all_after_a_relist() {
        let mut w: Writer<Node> = Writer::default();
        for name in ["a", "b"] {
            let n: Node =
                serde_json::from_value(json!({"metadata": {"name": name}})).expect("node");
            w.apply_watcher_event(&watcher::Event::Apply(n));
        }
        let one: Node = serde_json::from_value(json!({"metadata": {"name": "a"}})).expect("node");
        let events = futures::stream::iter([
            NodeEvent::Applied(Arc::new(one.clone())),
            NodeEvent::Deleted(Arc::new(one)),
            NodeEvent::Relisted,
        ]);
        let mut names: Vec<String> = reconcile_triggers(events, w.as_reader())
            .map(|n| n.name_any())
            .collect()
            .await;
        assert_eq!(names.remove(0), "a");
        names.sort();
        assert_eq!(names, ["a", "b"]);
    }
}
