//! The initialization queue: Nodes waiting for their first writes, first come first served, each
//! at most once in the queue and in at most one worker (client-go's workqueue semantics).
//!
//! Why not kube's runner: with unlimited concurrency every waiting Node is a pending reconcile,
//! and the runner polls each pending future whenever any is woken, so CPU grows with the square
//! of the Nodes waiting (35 % of the CCM's samples at 5000 Nodes, docs/benchmarks.md); with a
//! limit it takes waiting Nodes in no particular order, so the first Node of a burst could be
//! initialized last.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use tokio::sync::Notify;

#[derive(Default)]
pub struct InitQueue {
    state: Mutex<State>,
    ready: Notify,
}

#[derive(Default)]
struct State {
    order: VecDeque<String>,
    queued: HashSet<String>,
    /// Taken by a worker.
    active: HashSet<String>,
    /// Pushed while active: queued again when its worker is done.
    again: HashSet<String>,
}

impl InitQueue {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `name` unless it already waits; a Node a worker holds is queued again when the
    /// worker is done.
    pub fn push(&self, name: &str) {
        let mut s = self.state();
        if s.active.contains(name) {
            s.again.insert(name.to_string());
            return;
        }
        if s.queued.insert(name.to_string()) {
            s.order.push_back(name.to_string());
            drop(s);
            self.ready.notify_one();
        }
    }

    /// The Node waiting longest, waiting for one; the caller calls [`InitQueue::done`] after.
    pub async fn pop(&self) -> String {
        loop {
            {
                let mut s = self.state();
                if let Some(name) = s.order.pop_front() {
                    s.queued.remove(&name);
                    s.active.insert(name.clone());
                    return name;
                }
            }
            // A push between the check and here stores a wake-up: none is lost.
            self.ready.notified().await;
        }
    }

    /// The worker holding `name` is done with it.
    pub fn done(&self, name: &str) {
        let mut s = self.state();
        s.active.remove(name);
        if s.again.remove(name) && s.queued.insert(name.to_string()) {
            s.order.push_back(name.to_string());
            drop(s);
            self.ready.notify_one();
        }
    }

    /// Nodes waiting (not those a worker holds).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.state().order.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::InitQueue;

    #[tokio::test]
    async fn first_come_first_served_and_each_node_once() {
        let q = InitQueue::default();
        for n in ["a", "b", "a", "c", "b"] {
            q.push(n);
        }
        assert_eq!(q.len(), 3, "a Node already waiting is not queued twice");
        assert_eq!(q.pop().await, "a");
        assert_eq!(q.pop().await, "b");
        assert_eq!(q.pop().await, "c");
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_node_pushed_while_held_waits_for_its_worker() {
        let q = InitQueue::default();
        q.push("a");
        assert_eq!(q.pop().await, "a");
        q.push("a");
        q.push("a");
        assert!(q.is_empty(), "never in two workers at once");
        q.push("b");
        q.done("a");
        assert_eq!(q.pop().await, "b");
        assert_eq!(q.pop().await, "a", "queued again, once, behind what waited");
        q.done("a");
        q.done("b");
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_waiting_worker_wakes_for_a_push() {
        let q = std::sync::Arc::new(InitQueue::default());
        let worker = tokio::spawn({
            let q = q.clone();
            async move { q.pop().await }
        });
        tokio::task::yield_now().await;
        q.push("late");
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), worker)
            .await
            .expect("woken")
            .expect("joined");
        assert_eq!(got, "late");
    }
}
