//! The in-cluster tier: the product run the way users run it. A real kubelet with containerd on
//! this machine (tests/env/cluster-up.sh), both charts installed with helm (the previous release
//! first, then upgraded), their own pods running, and applications writing to Elemento volumes
//! through Kubernetes. One test function, because the steps share one kubelet (one per machine)
//! and build on each other; each step prints its name and time and panics with the evidence when
//! its behaviour breaks. Measurements (install to Ready, PVC to Running, idle memory) are printed.

use std::time::{Duration, Instant};

use elemento_e2e::cluster::{Cluster, wait_until};
use elemento_e2e::registry::Registry;
use elemento_e2e::{repo_root, require_root};
use serde_json::Value;

const NS: &str = "kube-system";
const APP_NS: &str = "default";
const DRIVER: &str = "csi.elemento.cloud";
/// The CSI values file sets it (the chart default is 15).
const MAX_VOLUMES: i64 = 7;

fn step(name: &str, t0: Instant) {
    eprintln!(
        "[in-cluster] {name}: ok ({:.1} s)",
        t0.elapsed().as_secs_f64()
    );
}

fn path(p: &str) -> String {
    repo_root().join(p).display().to_string()
}

fn exec(c: &Cluster, ns: &str, pod: &str, cmd: &str) -> String {
    c.kubectl(&["exec", "-n", ns, pod, "--", "sh", "-c", cmd])
}

fn pod(c: &Cluster, ns: &str, name: &str) -> Value {
    c.get_json(&["pod", "-n", ns, name])
}

fn restart_count(p: &Value) -> i64 {
    p["status"]["containerStatuses"]
        .as_array()
        .map(|cs| cs.iter().filter_map(|c| c["restartCount"].as_i64()).sum())
        .unwrap_or(0)
}

/// The IPv4 addresses with a TCP socket listening on `port` in a network namespace's TCP table
/// (`/proc/net/tcp`, or `/proc/<pid>/net/tcp` for a process's own namespace).
fn tcp_listeners(table: &str, port: u16) -> Vec<String> {
    let table = std::fs::read_to_string(table).unwrap_or_else(|e| panic!("{table}: {e}"));
    let mut out: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (addr, p) = f.get(1)?.split_once(':')?;
            // State 0A is LISTEN; addresses are little-endian hex.
            (f.get(3) == Some(&"0A") && u16::from_str_radix(p, 16).ok()? == port).then(|| {
                let a = u32::from_str_radix(addr, 16).unwrap_or(0).to_le_bytes();
                std::net::Ipv4Addr::from(a).to_string()
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The PID of the one process on this machine whose command line contains `arg`.
fn pid_of(arg: &str) -> u32 {
    let pids: Vec<u32> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
                .unwrap_or(false)
        })
        .collect();
    assert_eq!(pids.len(), 1, "processes with {arg}: {pids:?}");
    pids[0]
}

/// Extracts the chart of the previous release (a packaged .tgz, as a chart repository holds it).
fn previous_chart(name: &str, into: &std::path::Path) -> String {
    let dir = repo_root().join("tests/in-cluster/previous-charts");
    let tgz = std::fs::read_dir(&dir)
        .expect("tests/in-cluster/previous-charts")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{name}-")) && n.ends_with(".tgz"))
        })
        .unwrap_or_else(|| panic!("no previous {name} chart in {}", dir.display()));
    let st = std::process::Command::new("tar")
        .arg("xzf")
        .arg(&tgz)
        .arg("-C")
        .arg(into)
        .status()
        .expect("tar");
    assert!(st.success());
    into.join(name).display().to_string()
}

/// Every container of this release's pods runs an image resolved in `registry` (its imageID is the
/// registry's digest reference), the kubelet said it pulled them, and the registry served their
/// manifests to containerd.
fn assert_pulled_from_registry(c: &Cluster, registry: &Registry) {
    let mut images = vec![];
    for selector in [
        "app.kubernetes.io/instance=ccm",
        "app.kubernetes.io/instance=csi",
    ] {
        let pods = c.get_json(&["pods", "-n", NS, "-l", selector]);
        for p in pods["items"].as_array().into_iter().flatten() {
            let name = p["metadata"]["name"].as_str().unwrap_or("?");
            for cs in p["status"]["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let image = cs["image"].as_str().unwrap_or_default();
                if !image.contains("/elemento-") {
                    continue; // the CSI sidecars stay on their upstream images
                }
                let id = cs["imageID"].as_str().unwrap_or_default();
                assert!(
                    image.starts_with(&format!("{}/", registry.addr))
                        && id.starts_with(&format!("{}/", registry.addr)),
                    "{name}/{}: image {image:?}, imageID {id:?}: not from the registry {}",
                    cs["name"],
                    registry.addr
                );
                let events = c.kubectl(&[
                    "get",
                    "events",
                    "-n",
                    NS,
                    "--field-selector",
                    &format!("involvedObject.name={name},reason=Pulled"),
                    "-o",
                    "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
                ]);
                assert!(
                    events
                        .lines()
                        .any(|m| m.contains("Successfully pulled image") && m.contains(image)),
                    "{name}: no Pulled event for {image}:\n{events}"
                );
                images.push(image.to_string());
            }
        }
    }
    for want in [
        "elemento-cloud-controller-manager",
        "elemento-csi-driver:",
        "elemento-csi-driver-node",
    ] {
        assert!(
            images.iter().any(|i| i.contains(want)),
            "no running container of {want} among {images:?}"
        );
    }
    let served = registry.manifests_served();
    for i in &images {
        let repo = i
            .trim_start_matches(&format!("{}/", registry.addr))
            .split(':')
            .next()
            .unwrap_or_default();
        assert!(
            served
                .iter()
                .any(|l| l.contains(&format!("/v2/{repo}/manifests/")) && l.contains("containerd")),
            "the registry resolved no manifest of {repo} for containerd:\n{}",
            registry.logs()
        );
    }
}

fn chart_version(chart_dir: &str) -> String {
    let text = std::fs::read_to_string(format!("{chart_dir}/Chart.yaml")).expect("Chart.yaml");
    text.lines()
        .find_map(|l| l.strip_prefix("version: "))
        .expect("version")
        .trim()
        .to_string()
}

/// One collection of the simulator's state (`vms`, `volumes`, `load_balancers`).
fn sim_list(c: &Cluster, what: &str) -> Vec<Value> {
    c.sim_state()[what].as_array().cloned().unwrap_or_default()
}

/// The volume ids attached to the node's VM, as the simulator sees it.
fn attached_to_node(c: &Cluster) -> Vec<Value> {
    sim_list(c, "vms")
        .into_iter()
        .find(|v| v["id"] == c.node_vm_id.as_str())
        .map(|v| v["volumes"].as_array().cloned().unwrap_or_default())
        .unwrap_or_else(|| panic!("no VM {} in the simulator", c.node_vm_id))
}

/// A busybox container that idles (and stops at once on SIGTERM), with the given volume field.
fn idle_container(volumes: &str) -> String {
    format!(
        r#"{{name: app, image: localhost/elemento-testenv/busybox:1, imagePullPolicy: Never, command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"], {volumes}}}"#
    )
}

fn statefulset(name: &str, class: &str) -> String {
    let container = idle_container("volumeMounts: [{name: data, mountPath: /data}]");
    format!(
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: {name}, namespace: {APP_NS}}}
spec:
  serviceName: {name}
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{container}]
  volumeClaimTemplates:
    - metadata: {{name: data}}
      spec:
        accessModes: [ReadWriteOnce]
        storageClassName: {class}
        resources: {{requests: {{storage: 1Gi}}}}
"#
    )
}

#[test]
fn charts_run_as_pods_on_a_real_kubelet() {
    assert!(
        require_root("the in-cluster tier"),
        "the in-cluster tier needs root (kubelet, containerd, mounts)"
    );
    let c = Cluster::up("in-cluster");
    let started = Instant::now();
    eprintln!(
        "[in-cluster] cluster up: node {} ({} s)",
        c.node,
        started.elapsed().as_secs()
    );
    let work = tempfile::tempdir().expect("tempdir");

    // 1. The previous release of both charts, as an operator installed it before this version.
    let t = Instant::now();
    let prev_ccm = previous_chart("elemento-cloud-controller-manager", work.path());
    let prev_csi = previous_chart("elemento-csi-driver", work.path());
    let current_csi = path("charts/elemento-csi-driver");
    assert_ne!(
        chart_version(&prev_csi),
        chart_version(&current_csi),
        "the previous chart must be an older version than charts/"
    );
    c.helm_install(
        "install",
        "ccm",
        &prev_ccm,
        "examples/local-cluster/values-ccm.yaml",
    );
    c.helm_install(
        "install",
        "csi",
        &prev_csi,
        "examples/local-cluster/values-csi.yaml",
    );
    c.wait_pods_ready(
        NS,
        "app.kubernetes.io/instance in (ccm,csi)",
        Duration::from_secs(180),
    );
    let install_to_ready = t.elapsed();
    step("previous charts installed, every pod Ready", t);

    // 2. The CCM pod initialized the kubelet's Node.
    let t = Instant::now();
    let node = c.wait_node_initialized(Duration::from_secs(60));
    c.assert_node_is_the_vm(&node);
    let labels = &node["metadata"]["labels"];
    assert!(
        labels["topology.kubernetes.io/region"].is_string(),
        "{labels}"
    );
    let addresses = node["status"]["addresses"].to_string();
    assert!(addresses.contains("127.0.0.1"), "{addresses}");
    step(
        "Node initialized by the CCM pod (providerID, labels, addresses, taint removed)",
        t,
    );

    // 3. A StatefulSet writes through the previous release's pods.
    let t = Instant::now();
    let attaches_before = c.sim_calls_ok("vm.volume.attach");
    c.apply(&statefulset("web", "elemento-standard"));
    c.wait_pods_ready(APP_NS, "app=web", Duration::from_secs(120));
    let pvc_to_running = t.elapsed();
    let written = exec(
        &c,
        APP_NS,
        "web-0",
        "head -c 1048576 /dev/urandom > /data/blob && sync && md5sum /data/blob | cut -d' ' -f1",
    );
    let written = written.trim().to_string();
    assert_eq!(written.len(), 32, "md5 of the written file: {written:?}");
    let uid_before = pod(&c, APP_NS, "web-0")["metadata"]["uid"].clone();
    step("StatefulSet pod Running with its volume, 1 MiB written", t);

    // 4. helm upgrade to this version while the application runs, shipped the way an operator
    // ships it: images/push.sh into an OCI registry, the charts' image.repository pointed there,
    // and the kubelet pulling (until now the node ran images imported from archives).
    let t = Instant::now();
    let registry = Registry::start(&c.bin);
    let flags = registry.push_project_images();
    let flags_of = |chart: &str| -> Vec<String> {
        let mut f = flags
            .iter()
            .find(|(name, _)| name == chart)
            .unwrap_or_else(|| panic!("images/push.sh printed no flags for {chart}: {flags:?}"))
            .1
            .clone();
        // The local values pin `Never` (imported archives); a pushed image is pulled.
        f.extend(["--set".into(), "image.pullPolicy=IfNotPresent".into()]);
        f
    };
    c.helm_install_with(
        "upgrade",
        "ccm",
        &path("charts/elemento-cloud-controller-manager"),
        "examples/local-cluster/values-ccm.yaml",
        &flags_of("elemento-cloud-controller-manager"),
    );
    c.helm_install_with(
        "upgrade",
        "csi",
        &current_csi,
        "examples/local-cluster/values-csi.yaml",
        &flags_of("elemento-csi-driver"),
    );
    for workload in [
        "deployment/ccm-elemento-cloud-controller-manager",
        "deployment/csi-elemento-csi-driver-controller",
        "daemonset/csi-elemento-csi-driver-node",
    ] {
        c.kubectl(&["rollout", "status", "-n", NS, workload, "--timeout=180s"]);
    }
    assert_pulled_from_registry(&c, &registry);
    step(
        "images pushed with images/push.sh to a local OCI registry and pulled from it by the kubelet",
        t,
    );
    let t = Instant::now();
    let p = pod(&c, APP_NS, "web-0");
    assert_eq!(
        p["metadata"]["uid"], uid_before,
        "the application pod was replaced"
    );
    assert_eq!(
        restart_count(&p),
        0,
        "the application restarted: {}",
        p["status"]
    );
    let read = exec(
        &c,
        APP_NS,
        "web-0",
        "md5sum /data/blob | cut -d' ' -f1 && echo more >> /data/blob",
    );
    assert_eq!(read.trim(), written, "the volume changed under the upgrade");
    // Topology after the upgrade: the zone becomes the provider (kOps), the host gets a label of
    // its own, and the region keeps the 0.1 value the running volume's node affinity needs.
    let pv_region = {
        let claim = c.get_json(&["pvc", "-n", APP_NS, "data-web-0"]);
        let pv_name = claim["spec"]["volumeName"]
            .as_str()
            .expect("bound")
            .to_string();
        let pv = c.get_json(&["pv", &pv_name]);
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"]
            .as_array()
            .and_then(|m| {
                m.iter()
                    .find(|e| e["key"] == "topology.kubernetes.io/region")
            })
            .and_then(|e| e["values"][0].as_str())
            .expect("a 0.1 volume's region affinity")
            .to_string()
    };
    let relabelled = wait_until(
        "the Node relabelled by the new CCM",
        Duration::from_secs(60),
        || {
            let n = c.get_json(&["node", &c.node]);
            let l = &n["metadata"]["labels"];
            (l["topology.kubernetes.io/zone"] == "ovh" && l["node.elemento.cloud/host"].is_string())
                .then(|| l.clone())
        },
    );
    assert_eq!(
        relabelled["topology.kubernetes.io/region"].as_str(),
        Some(pv_region.as_str()),
        "the region a 0.1 volume needs stays: {relabelled}"
    );
    step(
        "helm upgrade: application untouched, volume readable and writable, topology relabelled with the old region kept",
        t,
    );

    // 4b. Unauthenticated metrics stay off the network: the host-network pods listen for
    // /metrics on loopback only; the CCM's probes have a listener of their own without /metrics.
    let t = Instant::now();
    // The CCM and the CSI controller share the host's network; the node plugin has a network
    // namespace of its own, read through its process.
    let host = "/proc/net/tcp".to_string();
    let node_pid = pid_of("--mode=node");
    let node_plugin = format!("/proc/{node_pid}/net/tcp");
    // The node plugin's metrics now, and again after the raw block volume (step 8) made it stage
    // and publish: every family docs/observability.md lists for it must have moved.
    let node_metrics_before = elemento_e2e::metrics::scrape_in_netns(node_pid, 9811);
    for (table, port) in [(&host, 10258), (&host, 9810), (&node_plugin, 9811)] {
        assert_eq!(
            tcp_listeners(table, port),
            ["127.0.0.1"],
            "/metrics on port {port} must listen on loopback only ({table})"
        );
    }
    assert_eq!(
        tcp_listeners(&host, 10268),
        ["0.0.0.0"],
        "the CCM's health port"
    );
    let health = |path: &str| {
        std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("http://127.0.0.1:10268{path}"))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    assert_eq!(health("/healthz"), "200");
    assert_eq!(health("/metrics"), "404", "no metrics on the health port");
    step("metrics on loopback, probes on their own port", t);

    // 5. The node plugin registered through node-driver-registrar with the chart's limit.
    let t = Instant::now();
    let csinode = wait_until("CSINode with our driver", Duration::from_secs(60), || {
        let n = c.get_json(&["csinode", &c.node]);
        let d = n["spec"]["drivers"]
            .as_array()
            .and_then(|ds| ds.iter().find(|d| d["name"] == DRIVER).cloned())?;
        (d["allocatable"]["count"] == MAX_VOLUMES).then_some(d)
    });
    assert_eq!(csinode["nodeID"], c.node_vm_id, "{csinode}");
    step(
        "CSINode lists csi.elemento.cloud with allocatable.count = maxVolumesPerNode",
        t,
    );

    // 6. The pod is deleted; its replacement reads the same bytes. One attach per pod lifetime.
    let t = Instant::now();
    c.kubectl(&["delete", "pod", "-n", APP_NS, "web-0", "--wait=true"]);
    wait_until("web-0 re-created", Duration::from_secs(120), || {
        let p = c
            .try_run(
                "kubectl",
                &["get", "pod", "-n", APP_NS, "web-0", "-o", "json"],
                None,
            )
            .ok()?;
        let p: Value = serde_json::from_str(&p).ok()?;
        (p["metadata"]["uid"] != uid_before).then_some(())
    });
    c.wait_pods_ready(APP_NS, "app=web", Duration::from_secs(120));
    let again = exec(
        &c,
        APP_NS,
        "web-0",
        "head -c 1048576 /data/blob | md5sum | cut -d' ' -f1",
    );
    assert_eq!(
        again.trim(),
        written,
        "the new pod does not read the bytes the first one wrote"
    );
    // The attach/detach controller keeps the volume attached when the next pod on the same node
    // needs it before the detach (timing): one or two attaches, never more than one per pod.
    let attaches = c.sim_calls_ok("vm.volume.attach") - attaches_before;
    assert!(
        (1..=2).contains(&attaches),
        "two pod lifetimes must cost at most two attaches, not {attaches}"
    );
    let attached = attached_to_node(&c);
    assert_eq!(
        attached.len(),
        1,
        "exactly the one volume attached to the node's VM: {attached:?}"
    );
    step(
        &format!("re-created pod reads the same bytes; {attaches} attach(es) for 2 pod lifetimes"),
        t,
    );

    // 7. Online expansion on xfs: the running pod sees the new size, no restart.
    let t = Instant::now();
    c.apply(&statefulset("grow", "elemento-xfs"));
    c.wait_pods_ready(APP_NS, "app=grow", Duration::from_secs(120));
    let grow_uid = pod(&c, APP_NS, "grow-0")["metadata"]["uid"].clone();
    let df = |c: &Cluster| -> u64 {
        exec(c, APP_NS, "grow-0", "df -k /data | awk 'NR==2 {print $2}'")
            .trim()
            .parse()
            .unwrap_or(0)
    };
    let before = df(&c);
    assert!(
        before > 900_000 && before < 1_100_000,
        "a 1 GiB xfs reports {before} KiB"
    );
    c.kubectl(&[
        "patch",
        "pvc",
        "-n",
        APP_NS,
        "data-grow-0",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}"#,
    ]);
    let after = wait_until(
        "the grown filesystem in the pod",
        Duration::from_secs(120),
        || {
            let kib = df(&c);
            (kib > 1_900_000).then_some(kib)
        },
    );
    let p = pod(&c, APP_NS, "grow-0");
    assert_eq!(p["metadata"]["uid"], grow_uid);
    assert_eq!(restart_count(&p), 0);
    step(
        &format!("online xfs expansion: {before} KiB -> {after} KiB, no restart"),
        t,
    );

    // 8. A raw block volume: a pattern written with dd reads back the same.
    let t = Instant::now();
    let container = idle_container("volumeDevices: [{name: raw, devicePath: /dev/xvda}]");
    c.apply(&format!(
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: raw, namespace: {APP_NS}}}
spec:
  accessModes: [ReadWriteOnce]
  volumeMode: Block
  storageClassName: elemento-standard
  resources: {{requests: {{storage: 1Gi}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: raw, namespace: {APP_NS}, labels: {{app: raw}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{container}]
  volumes: [{{name: raw, persistentVolumeClaim: {{claimName: raw}}}}]
"#
    ));
    c.wait_pods_ready(APP_NS, "app=raw", Duration::from_secs(120));
    let out = exec(
        &c,
        APP_NS,
        "raw",
        "head -c 4194304 /dev/urandom > /tmp/p && dd if=/tmp/p of=/dev/xvda bs=1M seek=3 conv=fsync 2>/dev/null \
         && dd if=/dev/xvda bs=1M skip=3 count=4 2>/dev/null | md5sum | cut -d' ' -f1 && md5sum /tmp/p | cut -d' ' -f1",
    );
    let sums: Vec<&str> = out.split_whitespace().collect();
    assert!(
        sums.len() == 2 && sums[0] == sums[1],
        "block pattern read back differs: {out}"
    );
    elemento_e2e::metrics::assert_documented_families_moved(
        "csi-node",
        &node_metrics_before,
        &elemento_e2e::metrics::scrape_in_netns(node_pid, 9811),
    );
    step(
        "raw block volume: 4 MiB pattern written and read back with dd; node plugin metrics as documented",
        t,
    );

    // 9. A LoadBalancer Service gets its address from the CCM pod.
    let t = Instant::now();
    c.apply(&format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {APP_NS}}}
spec:
  type: LoadBalancer
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}]
"#
    ));
    let ip = wait_until("the LoadBalancer ingress", Duration::from_secs(60), || {
        let s = c.get_json(&["service", "-n", APP_NS, "web"]);
        s["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .map(String::from)
    });
    let lbs = sim_list(&c, "load_balancers").len();
    assert_eq!(lbs, 1, "one load balancer in the simulator");
    step(
        &format!("LoadBalancer Service got {ip} from the CCM pod"),
        t,
    );

    // 10. Idle memory of our pods, as the kubelet reports it (cgroup working set).
    // From the kubelet itself: the API server's node proxy refuses the loopback address the
    // Node has on this machine.
    let out = std::process::Command::new("curl")
        .args([
            "-fsSk",
            "--max-time",
            "10",
            "https://127.0.0.1:10250/stats/summary",
        ])
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "kubelet /stats/summary: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).expect("stats summary");
    let mut memory = vec![];
    for p in summary["pods"].as_array().cloned().unwrap_or_default() {
        let name = p["podRef"]["name"].as_str().unwrap_or("").to_string();
        if p["podRef"]["namespace"] != NS {
            continue;
        }
        for ctr in p["containers"].as_array().cloned().unwrap_or_default() {
            if ctr["name"] == "driver" || ctr["name"] == "cloud-controller-manager" {
                let ws = ctr["memory"]["workingSetBytes"].as_u64().unwrap_or(0);
                let rss = ctr["memory"]["rssBytes"].as_u64().unwrap_or(0);
                memory.push(format!(
                    "{name}/{}: working set {:.1} MiB, RSS {:.1} MiB",
                    ctr["name"].as_str().unwrap_or(""),
                    ws as f64 / 1048576.0,
                    rss as f64 / 1048576.0
                ));
                assert!(ws > 0, "no memory figure for {name}");
            }
        }
    }
    assert_eq!(
        memory.len(),
        3,
        "CCM, CSI controller and CSI node containers: {memory:?}"
    );

    // 11. Everything deleted: no volume, attachment, LB, loop device or mount is left.
    let t = Instant::now();
    c.kubectl(&["delete", "service", "-n", APP_NS, "web", "--wait=true"]);
    c.kubectl(&[
        "delete",
        "statefulset,pod",
        "-n",
        APP_NS,
        "--all",
        "--wait=true",
    ]);
    c.kubectl(&["delete", "pvc", "-n", APP_NS, "--all", "--wait=true"]);
    wait_until("every PV deleted", Duration::from_secs(120), || {
        let pvs = c.get_json(&["pv"]);
        pvs["items"]
            .as_array()
            .is_some_and(|a| a.is_empty())
            .then_some(())
    });
    wait_until(
        "no volume left in the simulator",
        Duration::from_secs(60),
        || sim_list(&c, "volumes").is_empty().then_some(()),
    );
    wait_until("no load balancer left", Duration::from_secs(60), || {
        sim_list(&c, "load_balancers").is_empty().then_some(())
    });
    c.helm(&["uninstall", "csi", "--namespace", NS, "--wait"]);
    c.helm(&["uninstall", "ccm", "--namespace", NS, "--wait"]);
    let attached = attached_to_node(&c);
    assert!(attached.is_empty(), "attachments left: {attached:?}");
    let loops = std::process::Command::new("losetup")
        .args(["-l", "-n", "-O", "BACK-FILE"])
        .output()
        .expect("losetup");
    let loops = String::from_utf8_lossy(&loops.stdout);
    assert!(
        !loops.contains(&c.dir.display().to_string()),
        "loop devices left: {loops}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let ours: Vec<&str> = mounts
        .lines()
        .filter(|l| {
            l.contains("/var/lib/kubelet/plugins/kubernetes.io/csi")
                || l.contains("kubernetes.io~csi")
        })
        .collect();
    assert!(ours.is_empty(), "CSI mounts left: {ours:#?}");
    step(
        "deleted and uninstalled: nothing left in the cloud or on the host",
        t,
    );

    eprintln!(
        "[in-cluster] measured: helm install -> all pods Ready {:.1} s; StatefulSet (PVC) created -> pod Running {:.1} s; idle memory {}",
        install_to_ready.as_secs_f64(),
        pvc_to_running.as_secs_f64(),
        memory.join(", ")
    );
}
