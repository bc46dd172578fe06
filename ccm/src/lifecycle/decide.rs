//! Pure node-lifecycle decisions for Nodes whose VM is ours.

use std::time::Duration;

use elemento_api::node::{NodeView, Taint, taint};

pub use elemento_api::taints::{
    OUT_OF_SERVICE as OUT_OF_SERVICE_TAINT, SHUTDOWN as SHUTDOWN_TAINT,
};
/// The value marking an out-of-service taint as ours: we never remove one an operator added.
pub const OUT_OF_SERVICE_VALUE: &str = "elemento-vm-shut-off";
/// When the CCM first saw the VM shut off (RFC 3339), for the out-of-service delay.
pub const ANN_SHUT_OFF_SINCE: &str = "node.elemento.cloud/shut-off-since";

/// The annotation's value: RFC 3339 in UTC, to the second (`2026-12-02T10:36:49Z`).
pub fn format_shut_off_since(t: jiff::Timestamp) -> String {
    t.round(jiff::Unit::Second)
        .unwrap_or(t)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Seconds since the Unix epoch from the annotation: RFC 3339, or the bare Unix seconds that
/// versions before 0.2 wrote (a Node annotated by them keeps its shut-off clock across the upgrade).
/// Anything else is ignored (the clock restarts), never an error.
pub fn parse_shut_off_since(s: &str) -> Option<i64> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Some(t.as_second());
    }
    s.parse::<u64>().ok().and_then(|n| i64::try_from(n).ok())
}

/// What the inventory says about the Node's VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    Running,
    ShutOff,
    /// Paused or unreported: no action either way.
    Other,
    /// Absent from two listings in a row.
    Gone,
}

/// A VM counts as gone only when absent from two listings taken at least this far apart.
pub const GONE_CONFIRMATION: std::time::Duration = std::time::Duration::from_secs(2);

/// What the listings tell of a Node's VM: its state, or an absence not confirmed yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sighting {
    State(VmState),
    /// Missing from the latest listing only: look again after [`GONE_CONFIRMATION`].
    Unconfirmed,
}

/// The gone-confirmation, from what was seen and when: the VM's power state when the listing has
/// it; an empty listing proves nothing (more likely a broken answer than a cloud without VMs);
/// otherwise gone only when it was already missing from an older listing (`first_miss`: that
/// listing's generation and the time since) at least [`GONE_CONFIRMATION`] ago.
pub fn sighting(
    power: Option<elemento_api::types::PowerState>,
    listing_empty: bool,
    generation: u64,
    first_miss: Option<(u64, std::time::Duration)>,
) -> Sighting {
    use elemento_api::types::PowerState;
    match power {
        Some(PowerState::Running) => Sighting::State(VmState::Running),
        Some(PowerState::ShutOff) => Sighting::State(VmState::ShutOff),
        Some(_) => Sighting::State(VmState::Other),
        None if listing_empty => Sighting::State(VmState::Other),
        None => match first_miss {
            Some((g, since)) if generation > g && since >= GONE_CONFIRMATION => {
                Sighting::State(VmState::Gone)
            }
            _ => Sighting::Unconfirmed,
        },
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Nothing,
    DeleteNode,
    /// Replace the taints (and set or clear the shut-off-since annotation).
    SetTaints {
        taints: Vec<Taint>,
        shut_off_since: Option<Option<String>>,
    },
}

fn shutdown_taint() -> Taint {
    taint(SHUTDOWN_TAINT, None, "NoSchedule")
}

fn oos_taint() -> Taint {
    taint(
        OUT_OF_SERVICE_TAINT,
        Some(OUT_OF_SERVICE_VALUE),
        "NoExecute",
    )
}

/// Our out-of-service taint (never one an operator added: its value differs).
fn is_our_oos(t: &Taint) -> bool {
    t.key == OUT_OF_SERVICE_TAINT && t.value.as_deref() == Some(OUT_OF_SERVICE_VALUE)
}

fn ours(t: &Taint) -> bool {
    t.key == SHUTDOWN_TAINT || is_our_oos(t)
}

/// `off_for`: how long the VM has been seen shut off (from the annotation); `now` formats a new
/// annotation. `out_of_service_after`: None = feature off.
pub fn decide(
    node: &NodeView,
    vm: VmState,
    off_for: Option<Duration>,
    out_of_service_after: Option<Duration>,
    now: &str,
) -> Decision {
    let has_shutdown = node.has_taint(SHUTDOWN_TAINT);
    let has_oos = node.taints.iter().any(is_our_oos);
    let others: Vec<Taint> = node.taints.iter().filter(|t| !ours(t)).cloned().collect();
    let clear = |has: bool| {
        if has || has_oos {
            Decision::SetTaints {
                taints: others.clone(),
                shut_off_since: Some(None),
            }
        } else {
            Decision::Nothing
        }
    };
    if node.ready {
        return clear(has_shutdown);
    }
    match vm {
        VmState::Gone => Decision::DeleteNode,
        VmState::Running => clear(has_shutdown),
        VmState::Other => Decision::Nothing,
        VmState::ShutOff => {
            let want_oos =
                matches!((out_of_service_after, off_for), (Some(after), Some(off)) if off >= after);
            if has_shutdown && want_oos == has_oos {
                return Decision::Nothing;
            }
            let mut taints = others;
            taints.push(shutdown_taint());
            if want_oos {
                taints.push(oos_taint());
            }
            let since = if off_for.is_none() {
                Some(Some(now.to_string()))
            } else {
                None
            };
            Decision::SetTaints {
                taints,
                shut_off_since: since,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_vm_is_gone_only_after_two_listings_apart() {
        use super::{GONE_CONFIRMATION, Sighting, VmState, sighting};
        use elemento_api::types::PowerState;
        use std::time::Duration;
        let later = GONE_CONFIRMATION + Duration::from_millis(1);
        assert_eq!(
            sighting(Some(PowerState::ShutOff), false, 5, None),
            Sighting::State(VmState::ShutOff)
        );
        assert_eq!(
            sighting(None, true, 5, Some((1, later))),
            Sighting::State(VmState::Other),
            "an empty listing proves nothing"
        );
        assert_eq!(
            sighting(None, false, 5, None),
            Sighting::Unconfirmed,
            "first miss"
        );
        assert_eq!(
            sighting(None, false, 5, Some((5, later))),
            Sighting::Unconfirmed,
            "the same listing twice"
        );
        assert_eq!(
            sighting(None, false, 6, Some((5, Duration::from_millis(500)))),
            Sighting::Unconfirmed,
            "too soon"
        );
        assert_eq!(
            sighting(None, false, 6, Some((5, later))),
            Sighting::State(VmState::Gone)
        );
    }

    #[test]
    fn shut_off_since_is_rfc3339_and_reads_the_old_unix_form() {
        let t: jiff::Timestamp = "2026-12-02T10:36:49.700Z".parse().unwrap();
        let text = super::format_shut_off_since(t);
        assert_eq!(text, "2026-12-02T10:36:50Z");
        assert_eq!(super::parse_shut_off_since(&text), Some(t.as_second() + 1));
        assert_eq!(
            super::parse_shut_off_since("1796207809"),
            Some(1_796_207_809),
            "Unix seconds written by 0.1"
        );
        assert_eq!(super::parse_shut_off_since("yesterday"), None);
        assert_eq!(super::parse_shut_off_since("-5"), None);
    }

    use super::*;

    fn node(taints: Vec<Taint>) -> NodeView {
        NodeView {
            name: "n".into(),
            taints,
            ..Default::default()
        }
    }

    /// The Node with its Ready condition as given.
    fn ready(n: &NodeView, ready: bool) -> NodeView {
        NodeView { ready, ..n.clone() }
    }
    const NOW: &str = "2026-01-01T00:00:00Z";

    #[test]
    fn gone_deletes_only_when_not_ready() {
        assert_eq!(
            decide(&ready(&node(vec![]), false), VmState::Gone, None, None, NOW),
            Decision::DeleteNode
        );
        assert_eq!(
            decide(&ready(&node(vec![]), true), VmState::Gone, None, None, NOW),
            Decision::Nothing
        );
    }

    #[test]
    fn shut_off_taints_and_running_untaints() {
        let keep = taint("user", None, "NoSchedule");
        let d = decide(
            &ready(&node(vec![keep.clone()]), false),
            VmState::ShutOff,
            None,
            None,
            NOW,
        );
        assert_eq!(
            d,
            Decision::SetTaints {
                taints: vec![keep.clone(), shutdown_taint()],
                shut_off_since: Some(Some(NOW.into()))
            }
        );
        let tainted = node(vec![keep.clone(), shutdown_taint()]);
        assert_eq!(
            decide(
                &ready(&tainted, false),
                VmState::ShutOff,
                Some(Duration::from_secs(5)),
                None,
                NOW
            ),
            Decision::Nothing
        );
        assert_eq!(
            decide(&ready(&tainted, false), VmState::Running, None, None, NOW),
            Decision::SetTaints {
                taints: vec![keep.clone()],
                shut_off_since: Some(None)
            }
        );
        assert_eq!(
            decide(&ready(&tainted, true), VmState::Other, None, None, NOW),
            Decision::SetTaints {
                taints: vec![keep],
                shut_off_since: Some(None)
            }
        );
        assert_eq!(
            decide(&ready(&tainted, false), VmState::Other, None, None, NOW),
            Decision::Nothing
        );
    }

    #[test]
    fn out_of_service_after_the_delay_and_never_removes_an_operators_taint() {
        let after = Some(Duration::from_secs(60));
        let tainted = node(vec![shutdown_taint()]);
        assert_eq!(
            decide(
                &ready(&tainted, false),
                VmState::ShutOff,
                Some(Duration::from_secs(30)),
                after,
                NOW
            ),
            Decision::Nothing
        );
        assert_eq!(
            decide(
                &ready(&tainted, false),
                VmState::ShutOff,
                Some(Duration::from_secs(61)),
                after,
                NOW
            ),
            Decision::SetTaints {
                taints: vec![shutdown_taint(), oos_taint()],
                shut_off_since: None
            }
        );
        let operators = taint(OUT_OF_SERVICE_TAINT, Some("nodeshutdown"), "NoExecute");
        let n = node(vec![operators.clone(), shutdown_taint(), oos_taint()]);
        assert_eq!(
            decide(&ready(&n, false), VmState::Running, None, after, NOW),
            Decision::SetTaints {
                taints: vec![operators],
                shut_off_since: Some(None)
            }
        );
    }
}
