//! node-init: N Nodes created at once with the uninitialized taint; time until the CCM has
//! initialized each. And the API server's floor for the same writes, with no CCM.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use elemento_api::node::NodeView;
use elemento_e2e::{testenv, unique};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::harness::*;
use crate::measure::{Percentiles, ProcStats, api_calls, percentiles, proc_stats};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInit {
    pub nodes: usize,
    pub latency_s: Percentiles,
    pub wall_s: f64,
    pub api_calls_total: u64,
    pub api_calls_by_route: BTreeMap<String, u64>,
    pub vm_list_calls_per_node: f64,
    pub ccm: ProcStats,
    pub ccm_reconcile_metrics: BTreeMap<String, f64>,
}

/// The cloud controller manager node-init measures.
#[derive(Debug, Clone)]
pub enum Subject {
    /// Ours, against the simulator.
    Ours,
    /// The Go framework's (tests/env/peer-ccm), its cloud in-process with the same latency.
    Peer(PeerConfig),
}

/// One configuration of the peer: a name for the report and its flags.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerConfig {
    pub name: String,
    pub args: Vec<String>,
}

impl PeerConfig {
    /// The named configurations: `defaults` (the framework's: one Node sync at a time, client
    /// QPS 20, burst 30), `syncs64` (`--concurrent-node-syncs 64`, ours' default), `tuned`
    /// (64 syncs and the client limits raised to `qps`/`burst`).
    pub fn named(name: &str, qps: u32, burst: u32) -> Option<Self> {
        let args: Vec<String> = match name {
            "defaults" => vec![],
            "syncs64" => vec!["--concurrent-node-syncs=64".into()],
            "tuned" => vec![
                "--concurrent-node-syncs=64".into(),
                format!("--kube-api-qps={qps}"),
                format!("--kube-api-burst={burst}"),
            ],
            _ => return None,
        };
        Some(Self {
            name: name.into(),
            args,
        })
    }
}

/// N Nodes created at once with the uninitialized taint and matching VMs (by name): time from
/// each create to the taint's removal, seen through a watch.
pub async fn node_init(n: usize, setup: Setup) -> anyhow::Result<NodeInit> {
    node_init_of(n, setup, &Subject::Ours).await
}

/// `node_init` with either CCM, in the same harness.
pub async fn node_init_of(n: usize, setup: Setup, subject: &Subject) -> anyhow::Result<NodeInit> {
    let run = unique("ni");
    let vms = bench_vms(&run, n);
    // Ours talks to the simulator (kept alive with its files for the run); the peer's cloud is
    // in its own process.
    let (ccm, ccm_port, sim) = match subject {
        Subject::Ours => {
            let sim = sim(&vms, setup, &[]).await;
            let files = Files::new(&sim);
            let (ccm, port) = start_ccm(&files);
            (ccm, Some(port), Some((sim, files)))
        }
        Subject::Peer(cfg) => (start_peer(&cfg.args, setup.latency_ms), None, None),
    };
    let client = testenv().admin_client().await;
    // Watch first, so no initialization is missed.
    let observer = observe(&client, &run);
    tokio::time::sleep(Duration::from_millis(300)).await; // the watch's initial list
    let start = Instant::now();
    let start_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let sent = create_nodes(
        &client,
        vms.iter()
            .map(|(_, name)| bench_node(name, &run, None, true))
            .collect(),
        false,
    )
    .await?;
    if let Err(e) = observer.wait_done(n, setup.timeout).await {
        cleanup_nodes(&run);
        bail!("node-init {n}: {e}");
    }
    observer.watch.abort();
    let wall = observer.last_done(start);
    let stats = proc_stats(ccm.pid());
    let reconcile_metrics = match ccm_port {
        Some(port) => ccm_reconcile_metrics(port).await,
        None => BTreeMap::new(),
    };
    let mut lat = observer.latencies(&sent);
    if let Ok(path) = std::env::var("BENCH_NODE_TRACE") {
        // Times from the first create; the header's epoch lines them up with the CCM's log.
        let mut csv = format!(
            "# start_epoch_s={:.6}\nnode,sent_s,seen_s,done_s\n",
            start_epoch.as_secs_f64()
        );
        let seen = observer
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let done = observer
            .done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let since_start = |m: &HashMap<String, Instant>, name: &String| {
            m.get(name)
                .map_or(-1.0, |t| t.duration_since(start).as_secs_f64())
        };
        for (name, t0) in &sent {
            csv.push_str(&format!(
                "{name},{:.3},{:.3},{:.3}\n",
                t0.duration_since(start).as_secs_f64(),
                since_start(&seen, name),
                since_start(&done, name)
            ));
        }
        let _ = std::fs::write(path, csv);
    }
    let (by_route, total) = match &sim {
        Some((sim, _)) => api_calls(&sim.counters().await)?,
        None => (BTreeMap::new(), 0),
    };
    let lists = by_route.get("vm.status").copied().unwrap_or(0);
    cleanup_nodes(&run);
    Ok(NodeInit {
        nodes: n,
        latency_s: percentiles(&mut lat),
        wall_s: wall,
        api_calls_total: total,
        api_calls_by_route: by_route,
        vm_list_calls_per_node: lists as f64 / n as f64,
        ccm: stats,
        ccm_reconcile_metrics: reconcile_metrics,
    })
}

/// When the bench first saw something of each Node, by name.
type FirstSeen = Arc<Mutex<HashMap<String, Instant>>>;

/// The bench's watch of one run's Nodes: when each was first seen, and when seen initialized.
struct Observer {
    watch: tokio::task::JoinHandle<()>,
    seen: FirstSeen,
    done: FirstSeen,
}

impl Observer {
    /// Waits until the watch has seen `n` Nodes initialized; fails after `timeout`.
    async fn wait_done(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let count = self.done.lock().unwrap_or_else(|p| p.into_inner()).len();
            if count >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("only {count} of {n} seen initialized in time");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Each Node's time from the start of its clock in `sent` to the watch seeing it
    /// initialized (zero for a Node never seen, which `wait_done` rules out).
    fn latencies(&self, sent: &HashMap<String, Instant>) -> Vec<Duration> {
        let done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        sent.iter()
            .map(|(name, t0)| {
                done.get(name)
                    .map_or(Duration::ZERO, |t| t.saturating_duration_since(*t0))
            })
            .collect()
    }

    /// Seconds from `start` until the watch saw the last Node initialized.
    fn last_done(&self, start: Instant) -> f64 {
        let done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        done.values()
            .map(|t| t.saturating_duration_since(start).as_secs_f64())
            .fold(0.0, f64::max)
    }
}

fn observe(client: &kube::Client, run: &str) -> Observer {
    let (seen, done): (FirstSeen, FirstSeen) = Default::default();
    let stream = watcher(
        Api::<Node>::all(client.clone()),
        watcher::Config::default().labels(&format!("{BENCH_LABEL}={run}")),
    );
    let first = |m: &Mutex<HashMap<String, Instant>>, n: &Node| {
        m.lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(n.metadata.name.clone().unwrap_or_default())
            .or_insert_with(Instant::now);
    };
    let watch = {
        let (seen, done) = (seen.clone(), done.clone());
        tokio::spawn(async move {
            let mut s = std::pin::pin!(stream);
            while let Some(Ok(ev)) = s.next().await {
                if let watcher::Event::Apply(n) | watcher::Event::InitApply(n) = ev {
                    first(&seen, &n);
                    if !NodeView::from_node(&n).is_uninitialized() {
                        first(&done, &n);
                    }
                }
            }
        })
    };
    Observer { watch, seen, done }
}

/// One run of an API-server floor.
#[derive(Debug, Clone)]
pub struct Floor {
    /// Each Node's time from its create to the bench's watch seeing it initialized: where
    /// node-init's clock stops too.
    pub latency_s: Percentiles,
    /// Each Node's time from its create until the ideal writes returned: the floors' definition
    /// until 2026-12-03, which left out the watch's delivery that every CCM's latency includes.
    pub write_latency_s: Percentiles,
    /// From the first create until the watch saw the last Node initialized.
    pub wall_s: f64,
}

/// What an ideal CCM writes for a Node, with no cloud call: the status patch and the
/// taint-removing patch, sent together as ours sends them.
async fn ideal_ccm_writes(api: &Api<Node>, name: &str) -> anyhow::Result<()> {
    let st = Patch::Merge(
        json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}}),
    );
    let main = Patch::Merge(
        json!({"spec": {"providerID": format!("elemento://{name}"), "taints": []}, "metadata": {"labels": {"node.kubernetes.io/instance-type": "neon"}}}),
    );
    let pp = PatchParams::default();
    let (status, main) = tokio::join!(
        api.patch_status(name, &pp, &st),
        api.patch(name, &pp, &main)
    );
    status?;
    main?;
    Ok(())
}

/// A floor's clocks: each Node's start, and each Node's time until its ideal writes returned.
#[derive(Clone, Default)]
struct FloorClocks(Arc<Mutex<ClockTimes>>);

/// Clock starts by Node name, and the times until the writes returned.
type ClockTimes = (HashMap<String, Instant>, Vec<Duration>);

impl FloorClocks {
    /// Starts `name`'s clock now.
    fn start(&self, name: &str) -> Instant {
        let t0 = Instant::now();
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        c.0.insert(name.to_string(), t0);
        t0
    }

    /// Records that a Node's writes returned, its clock started at `t0`.
    fn written(&self, t0: Instant) {
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        c.1.push(t0.elapsed());
    }
}

/// Ends a floor's run whose writes ended in `writes`: waits for the bench's watch to see every
/// Node initialized, as node-init does, and measures each Node to that moment.
async fn finish_floor(
    n: usize,
    run: &str,
    start: Instant,
    observer: Observer,
    clocks: FloorClocks,
    writes: anyhow::Result<()>,
) -> anyhow::Result<Floor> {
    let waited = match writes {
        Ok(()) => observer.wait_done(n, Duration::from_secs(300)).await,
        Err(e) => Err(e),
    };
    observer.watch.abort();
    cleanup_nodes(run);
    waited?;
    let (sent, mut written) =
        std::mem::take(&mut *clocks.0.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(Floor {
        latency_s: percentiles(&mut observer.latencies(&sent)),
        write_latency_s: percentiles(&mut written),
        wall_s: observer.last_done(start),
    })
}

/// The API server's floor as the issue first defined it, *self-paced*: each of 64 slots creates
/// a Node and writes what an ideal CCM would right after, then takes the next Node. A Node's clock
/// starts when its slot is free, so the queue of Nodes not yet created is outside every
/// latency: the rate of creates adapts to the server, which node-init's does not. The bench's
/// observer watch runs and stops the clocks, as in node-init.
pub async fn node_init_api_server_floor(n: usize) -> anyhow::Result<Floor> {
    let run = unique("floor");
    let client = testenv().admin_client().await;
    let api: Api<Node> = Api::all(client.clone());
    let observer = observe(&client, &run);
    tokio::time::sleep(Duration::from_millis(300)).await; // the watch's initial list
    let clocks = FloorClocks::default();
    let start = Instant::now();
    let slots = futures::stream::iter(0..n)
        .map(|i| {
            let (api, clocks, run) = (api.clone(), clocks.clone(), run.clone());
            async move {
                let name = format!("{run}-n{i}");
                let t0 = clocks.start(&name);
                api.create(&PostParams::default(), &bench_node(&name, &run, None, true))
                    .await?;
                ideal_ccm_writes(&api, &name).await?;
                clocks.written(t0);
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CREATE_PARALLELISM)
        .try_collect::<Vec<_>>()
        .await
        .map(drop);
    finish_floor(n, &run, start, observer, clocks, slots).await
}

/// The API server's floor for node-init's own burst: the Nodes are created exactly as node-init
/// creates them (64 in flight, clocks start at each create), and 64 ideal-CCM workers take each
/// Node the moment its create returns, first come first served, with no watch of its own and no
/// cloud call; the bench's observer watch runs and stops the clocks, as in node-init.
/// No CCM doing these writes for this burst can have a lower p99 on this API server.
pub async fn node_init_api_server_burst_floor(n: usize) -> anyhow::Result<Floor> {
    let run = unique("bfloor");
    let client = testenv().admin_client().await;
    let api: Api<Node> = Api::all(client.clone());
    let observer = observe(&client, &run);
    tokio::time::sleep(Duration::from_millis(300)).await; // the watch's initial list
    let (created_tx, mut created) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let clocks = FloorClocks::default();
    let start = Instant::now();
    let creates = {
        let (api, run, clocks) = (api.clone(), run.clone(), clocks.clone());
        async move {
            futures::stream::iter(0..n)
                .map(|i| {
                    let (api, run, tx, clocks) =
                        (api.clone(), run.clone(), created_tx.clone(), clocks.clone());
                    async move {
                        let name = format!("{run}-n{i}");
                        let t0 = clocks.start(&name);
                        api.create(&PostParams::default(), &bench_node(&name, &run, None, true))
                            .await?;
                        // The receiver lives until every create is sent.
                        let _ = tx.send((name, t0));
                        anyhow::Ok(())
                    }
                })
                .buffer_unordered(CREATE_PARALLELISM)
                .try_collect::<Vec<_>>()
                .await
            // `created_tx` drops here: the workers end once the queue is empty.
        }
    };
    let workers = futures::stream::poll_fn(|cx| created.poll_recv(cx))
        .map(|(name, t0)| {
            let (api, clocks) = (api.clone(), clocks.clone());
            async move {
                ideal_ccm_writes(&api, &name).await?;
                clocks.written(t0);
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CREATE_PARALLELISM)
        .try_collect::<Vec<_>>();
    let writes = tokio::try_join!(creates, workers).map(drop);
    finish_floor(n, &run, start, observer, clocks, writes).await
}
