//! What every controller's reconcile shares, in one place: timing, the result metric (with the
//! error kind), backoff per object, and the error policy. Each controller's `reconcile` is
//! `runner::observe(ctx, NAME, &key, work)`; its `error_policy` is `runner::requeue_after_error`.

use std::future::Future;
use std::time::Instant;

use kube::runtime::controller::Action;
use tracing::warn;

use crate::context::{Ctx, Error};

/// The backoff key of one object of one controller: `<controller>/<namespace>/<name>` (no
/// namespace for cluster-scoped objects).
pub fn object_key(controller: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{controller}/{ns}/{name}"),
        None => format!("{controller}/{name}"),
    }
}

/// Runs one reconcile and records it: duration, result (`ok`, or `error` with the error's kind),
/// and on success the end of the object's backoff.
pub async fn observe<F>(
    ctx: &Ctx,
    controller: &'static str,
    key: &str,
    work: F,
) -> Result<Action, Error>
where
    F: Future<Output = Result<Action, Error>>,
{
    let started = Instant::now();
    let result = work.await;
    ctx.metrics.reconciled(
        controller,
        result.as_ref().err().map(Error::kind),
        started.elapsed(),
    );
    if result.is_ok() {
        ctx.succeeded(key);
    }
    result
}

/// The error policy of every controller: logged with the error's kind, retried after the
/// object's exponential backoff (1 s, 2 s … 256 s, then every 5 min).
pub fn requeue_after_error(ctx: &Ctx, controller: &'static str, key: &str, err: &Error) -> Action {
    let wait = ctx.backoff(key);
    warn!(controller, object = key, kind = err.kind(), error = %err, ?wait, "reconcile failed");
    Action::requeue(wait)
}
