//! `elemento-sim`: serves the Elemento API on the default daemon ports (or `--listen`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use elemento_api::routes::Service;
use elemento_sim::{SimOptions, scenario};

#[derive(Parser, Debug)]
#[command(version, about = "Elemento API simulator")]
struct Args {
    /// Scenario file (YAML or JSON): VMs, networks, limits, address pools, credentials.
    #[arg(long, env = "ELEMENTO_SIM_SCENARIO")]
    scenario: Option<PathBuf>,
    /// Persist the state here after every change and restore it at start.
    #[arg(long, env = "ELEMENTO_SIM_STATE")]
    state: Option<PathBuf>,
    /// Host-device mode (root): volumes attached to the `this_host` VM become loop devices
    /// linked under DIR/disk/by-id.
    #[arg(long, env = "ELEMENTO_SIM_HOST_DEVICES")]
    host_devices: Option<PathBuf>,
    /// Where the by-id links go in host-device mode (default DIR/disk/by-id). `/dev/disk/by-id`
    /// makes the devices appear where a CSI node plugin pod looks for them, as in a VM.
    #[arg(
        long,
        env = "ELEMENTO_SIM_HOST_DEVICE_LINKS",
        requires = "host_devices"
    )]
    host_device_links: Option<PathBuf>,
    /// Address to listen on; repeat for several. Every listener serves every route. Default: the
    /// five Elemento daemon ports on 127.0.0.1.
    #[arg(long)]
    listen: Vec<SocketAddr>,
    /// Also listen on the five daemon ports on 127.0.0.1 when `--listen` is given (what a
    /// workload configured with `api.host: 127.0.0.1`, e.g. a kOps addon, reaches).
    #[arg(long)]
    daemon_ports: bool,
    /// Seed for fault injection.
    #[arg(long)]
    fault_seed: Option<u64>,
    /// Serve the inferred load-balancer update route (overrides the scenario's
    /// `wire.lb_update`); `false` answers 404 as every Elemento source suggests.
    #[arg(long)]
    lb_update: Option<bool>,
    /// The guest disk serial scheme (overrides the scenario's `wire.disk_serial`).
    #[arg(long, value_parser = ["id_prefix", "name"])]
    disk_serial: Option<String>,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    log_format: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match args.log_format.as_str() {
        "json" => fmt.json().init(),
        "text" => fmt.init(),
        other => anyhow::bail!("--log-format {other:?}: expected text or json"),
    }
    let mut scenario = match &args.scenario {
        Some(p) => scenario::parse(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("scenario {}", p.display()))?,
        None => scenario::Scenario::default(),
    };
    if let Some(v) = args.lb_update {
        scenario.wire.lb_update = v;
    }
    if let Some(v) = &args.disk_serial {
        scenario.wire.disk_serial = match v.as_str() {
            "name" => scenario::DiskSerial::Name,
            _ => scenario::DiskSerial::IdPrefix,
        };
    }
    if args.host_devices.is_some() && !is_root() {
        anyhow::bail!("--host-devices needs root (it runs losetup)");
    }
    let daemon_ports = Service::ALL
        .iter()
        .map(|s| SocketAddr::from(([127, 0, 0, 1], s.default_port())));
    let listen: Vec<SocketAddr> = if args.listen.is_empty() {
        daemon_ports.collect()
    } else if args.daemon_ports {
        args.listen.into_iter().chain(daemon_ports).collect()
    } else {
        args.listen
    };
    let handle = elemento_sim::start(SimOptions {
        scenario,
        state_file: args.state,
        host_devices: args.host_devices,
        host_device_links: args.host_device_links,
        listen,
        fault_seed: args.fault_seed,
    })
    .await?;
    // One machine-readable line on stdout, for harnesses that asked for port 0.
    let addrs: Vec<String> = handle.addrs.iter().map(|a| a.to_string()).collect();
    println!("{}", serde_json::json!({ "listening": addrs }));
    tracing::info!(?addrs, "elemento-sim ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
