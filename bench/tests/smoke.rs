//! Every scenario at tiny sizes, so the harness cannot rot. Asserts the measurements are sane,
//! never a time (these are benchmarks, not timed tests).

use std::time::Duration;

use bench::*;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn setup() -> Setup {
    Setup {
        latency_ms: 5,
        timeout: Duration::from_secs(120),
    }
}

#[tokio::test]
async fn node_init_smoke() {
    let _s = SERIAL.lock().await;
    let r = node_init(5, setup()).await.unwrap();
    assert_eq!(r.nodes, 5);
    assert!(r.latency_s.max > 0.0 && r.latency_s.p50 <= r.latency_s.p99);
    assert!(r.api_calls_by_route.contains_key("vm.status"));
    assert!(r.ccm.peak_rss_mb > 0.0);
}

/// Both API-server floors: every Node written, each latency inside the run's wall time.
#[tokio::test]
async fn node_init_floors_smoke() {
    let _s = SERIAL.lock().await;
    for f in [
        node_init_api_server_floor(5).await.unwrap(),
        node_init_api_server_burst_floor(5).await.unwrap(),
    ] {
        assert!(f.latency_s.max > 0.0 && f.latency_s.p50 <= f.latency_s.p99);
        assert!(f.latency_s.max <= f.wall_s, "{f:?}");
    }
}

/// The Go framework's CCM (tests/env/peer-ccm) in the same harness: it initializes the Nodes
/// (its taint removal is what node-init waits for) and touches no simulator.
#[tokio::test]
async fn node_init_peer_smoke() {
    let _s = SERIAL.lock().await;
    let tuned = PeerConfig::named("tuned", 500, 1000).expect("a named configuration");
    assert!(tuned.args.contains(&"--kube-api-qps=500".to_string()));
    assert!(PeerConfig::named("fastest", 1, 1).is_none());
    let r = node_init_of(5, setup(), &Subject::Peer(tuned))
        .await
        .unwrap();
    assert_eq!(r.nodes, 5);
    assert!(r.latency_s.max > 0.0 && r.latency_s.p50 <= r.latency_s.p99);
    assert_eq!(r.api_calls_total, 0, "the peer's cloud is in-process");
    assert!(r.ccm.peak_rss_mb > 0.0 && r.ccm.cpu_seconds > 0.0);
}

#[tokio::test]
async fn lb_converge_smoke() {
    let _s = SERIAL.lock().await;
    let r = lb_converge(2, 3, 1, setup()).await.unwrap();
    assert!(r.all_ingress_s > 0.0 && r.new_nodes_in_every_lb_s > 0.0);
    assert_eq!(r.api_calls_by_route.get("loadbalancer.create"), Some(&2));
}

#[tokio::test]
async fn csi_provision_smoke() {
    let _s = SERIAL.lock().await;
    let r = csi_provision(3, setup()).await.unwrap();
    assert_eq!(r.api_calls_by_route.get("volume.create"), Some(&3));
    assert!(r.api_calls_per_volume >= 2.0);
}

#[tokio::test]
async fn csi_node_smoke() {
    let _s = SERIAL.lock().await;
    if !elemento_e2e::require_root("the csi-node benchmark") {
        return;
    }
    let r = csi_node(1, setup()).await.unwrap();
    assert!(r.ratio_of_medians > 0.0);
}

#[tokio::test]
async fn steady_state_smoke() {
    let _s = SERIAL.lock().await;
    let r = steady_state(3, 1, Duration::from_secs(2), setup())
        .await
        .unwrap();
    assert!(r.idle_s >= 2.0);
    assert!(r.ccm.rss_mb > 0.0 && r.csi_controller.rss_mb > 0.0);
}

#[test]
fn report_renders() {
    let v = results::Results {
        machine: [("cores".to_string(), "2".to_string())].into(),
        node_init: vec![results::NodeInitRow {
            nodes: 100,
            p50: measure::Spread {
                median: 0.1,
                min: 0.1,
                max: 0.2,
            },
            ..Default::default()
        }],
        ..Default::default()
    };
    let md = report::markdown(&v);
    assert!(md.contains("| 100 | 0.10 (0.10–0.20)"), "{md}");
    assert!(report::svg(&[(100.0, 0.1, 0.2), (1000.0, 0.3, 0.9)]).starts_with("<svg"));
}
