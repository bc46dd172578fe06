//! csi-node: NodeStage + NodePublish through our driver against plain mkfs + mount.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use elemento_e2e::sim::Method;
use elemento_e2e::unique;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::harness::Setup;
use crate::measure;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CsiNode {
    pub runs: usize,
    pub driver_stage_publish_s: measure::Spread,
    pub bare_mkfs_mount_s: measure::Spread,
    pub ratio_of_medians: f64,
    /// One gRPC round trip to the driver (NodeGetCapabilities): stage + publish pay two.
    pub grpc_round_trip_s: measure::Spread,
}

/// NodeStage + NodePublish of a fresh 1 GiB ext4 volume, against plain mkfs.ext4 + mount of a
/// fresh 1 GiB loop device. Needs root.
pub async fn csi_node(runs: usize, setup: Setup) -> anyhow::Result<CsiNode> {
    use csi_grpc::v1::volume_capability::{AccessMode, AccessType, MountVolume, access_mode::Mode};
    use csi_grpc::v1::*;
    let files = elemento_e2e::csi::DriverFiles::new();
    let vm = unique("cn-vm");
    let sim = files.sim(&elemento_e2e::csi::scenario(&vm));
    sim.admin(
        Method::PUT,
        "/_sim/faults/*",
        Some(json!({"latency_ms": setup.latency_ms})),
    )
    .await;
    let _driver = files.driver("all", "all", &vm);
    let ch = elemento_e2e::csi::channel(&files.socket("all")).await;
    let mut ctl = csi_grpc::v1::controller_client::ControllerClient::new(ch.clone());
    let mut node = csi_grpc::v1::node_client::NodeClient::new(ch);
    let cap = VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: "ext4".into(),
            ..Default::default()
        })),
    };
    let (mut driver_t, mut bare_t, mut rtt) = (vec![], vec![], vec![]);
    for i in 0..runs {
        let v = ctl
            .create_volume(CreateVolumeRequest {
                name: format!("bench-{i}-{vm}"),
                capacity_range: Some(CapacityRange {
                    required_bytes: 1 << 30,
                    limit_bytes: 0,
                }),
                volume_capabilities: vec![cap.clone()],
                ..Default::default()
            })
            .await?
            .into_inner()
            .volume
            .context("volume")?;
        let pc = ctl
            .controller_publish_volume(ControllerPublishVolumeRequest {
                volume_id: v.volume_id.clone(),
                node_id: vm.clone(),
                volume_capability: Some(cap.clone()),
                ..Default::default()
            })
            .await?
            .into_inner()
            .publish_context;
        let serial = pc.get("serial").context("publish context has no serial")?;
        let dev = std::fs::canonicalize(
            files
                .hostdev
                .join("disk/by-id")
                .join(format!("virtio-{serial}")),
        )?;
        let dev = dev.to_str().context("device path")?.to_string();
        // Each run times both on the same loop device, in alternating order (whichever goes
        // second finds the device discarded: its loop file as sparse as when it was created).
        for driver_turn in [i % 2 == 0, i % 2 == 1] {
            if driver_turn {
                let staging = files.dir.path().join(format!("s{i}")).display().to_string();
                let target = files.dir.path().join(format!("t{i}")).display().to_string();
                let t = Instant::now();
                node.node_stage_volume(NodeStageVolumeRequest {
                    volume_id: v.volume_id.clone(),
                    publish_context: pc.clone(),
                    staging_target_path: staging.clone(),
                    volume_capability: Some(cap.clone()),
                    ..Default::default()
                })
                .await?;
                node.node_publish_volume(NodePublishVolumeRequest {
                    volume_id: v.volume_id.clone(),
                    publish_context: pc.clone(),
                    staging_target_path: staging.clone(),
                    target_path: target.clone(),
                    volume_capability: Some(cap.clone()),
                    ..Default::default()
                })
                .await?;
                driver_t.push(t.elapsed().as_secs_f64());
                node.node_unpublish_volume(NodeUnpublishVolumeRequest {
                    volume_id: v.volume_id.clone(),
                    target_path: target,
                })
                .await?;
                node.node_unstage_volume(NodeUnstageVolumeRequest {
                    volume_id: v.volume_id.clone(),
                    staging_target_path: staging,
                })
                .await?;
            } else {
                let mnt = files.dir.path().join(format!("bare{i}"));
                std::fs::create_dir_all(&mnt)?;
                let t = Instant::now();
                run_ok("mkfs.ext4", &["-F", "-q", &dev])?;
                run_ok(
                    "mount",
                    &["-t", "ext4", &dev, mnt.to_str().context("path")?],
                )?;
                bare_t.push(t.elapsed().as_secs_f64());
                run_ok("umount", &[mnt.to_str().context("path")?])?;
            }
            run_ok("blkdiscard", &["-f", &dev])?;
        }
        ctl.controller_unpublish_volume(ControllerUnpublishVolumeRequest {
            volume_id: v.volume_id.clone(),
            node_id: vm.clone(),
            ..Default::default()
        })
        .await?;
        ctl.delete_volume(DeleteVolumeRequest {
            volume_id: v.volume_id,
            ..Default::default()
        })
        .await?;
    }
    for _ in 0..20 {
        let t = Instant::now();
        node.node_get_capabilities(NodeGetCapabilitiesRequest {})
            .await?;
        rtt.push(t.elapsed().as_secs_f64());
    }
    let (d, b) = (measure::spread(&driver_t), measure::spread(&bare_t));
    Ok(CsiNode {
        runs,
        grpc_round_trip_s: measure::spread(&rtt),
        ratio_of_medians: d.median / b.median,
        driver_stage_publish_s: d,
        bare_mkfs_mount_s: b,
    })
}

fn run_ok(cmd: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(cmd).args(args).output()?;
    if !out.status.success() {
        bail!("{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
