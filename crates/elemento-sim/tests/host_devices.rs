//! Host-device mode: attach makes a real loop device behind a by-id link, resize grows it, detach
//! and shutdown release it. Needs root; under CI a non-root run is a failure, not a skip.

use std::path::Path;
use std::time::Duration;

use elemento_api::types::VolumeAttributes;
use elemento_api::{Auth, Client, ClientConfig, Endpoints};
use elemento_sim::SimOptions;
use elemento_sim::scenario::{Scenario, VmSeed};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn block_size_bytes(dev: &Path) -> u64 {
    let name = dev.file_name().unwrap().to_str().unwrap();
    let sectors: u64 = std::fs::read_to_string(format!("/sys/block/{name}/size"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    sectors * 512
}

fn loop_backing(dev: &Path) -> Option<String> {
    let name = dev.file_name()?.to_str()?;
    std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file"))
        .ok()
        .map(|s| s.trim().to_string())
}

#[tokio::test]
async fn attach_creates_a_loop_device_and_detach_removes_it() {
    if !is_root() {
        assert!(
            std::env::var("CI").is_err(),
            "host-device mode needs root, and CI must run it"
        );
        eprintln!("SKIPPED: host-device mode needs root (losetup); run the tests as root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut s = Scenario::default();
    s.auth.require_login = false;
    s.vms = vec![
        VmSeed {
            id: Some("me".into()),
            name: "this-host".into(),
            this_host: true,
            ..Default::default()
        },
        VmSeed {
            id: Some("other".into()),
            name: "other".into(),
            ..Default::default()
        },
    ];
    let sim = elemento_sim::start(SimOptions {
        scenario: s,
        host_devices: Some(dir.path().to_path_buf()),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut cfg = ClientConfig::new(Endpoints::single(&sim.base_url()).unwrap());
    cfg.auth = Auth::default();
    let c = Client::new(cfg).unwrap();

    let v = c
        .create_volume("disk", 1_000_000_000, &VolumeAttributes::default())
        .await
        .unwrap();
    let at = c.attach_volume("me", &v.id).await.unwrap();
    let link = dir
        .path()
        .join("disk/by-id")
        .join(format!("virtio-{}", at.serial.unwrap()));
    let dev = std::fs::read_link(&link).expect("by-id link exists");
    assert!(dev.to_str().unwrap().starts_with("/dev/loop"), "{dev:?}");
    assert_eq!(block_size_bytes(&dev), 1_000_000_000);

    c.resize_volume(&v.id, 2_000_000_000).await.unwrap();
    assert_eq!(
        block_size_bytes(&dev),
        2_000_000_000,
        "the loop device sees the new size"
    );

    // A volume on another VM makes no device here.
    let w = c
        .create_volume("elsewhere", 1_000_000_000, &VolumeAttributes::default())
        .await
        .unwrap();
    c.attach_volume("other", &w.id).await.unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path().join("disk/by-id"))
            .unwrap()
            .count(),
        1
    );

    c.detach_volume("me", &v.id).await.unwrap();
    assert!(!link.exists(), "link removed");
    assert!(
        loop_backing(&dev).is_none_or(|b| !b.contains(&v.id)),
        "loop device released"
    );

    // Shutdown releases devices still attached.
    c.attach_volume("me", &v.id).await.unwrap();
    let dev = std::fs::read_link(&link).unwrap();
    sim.shutdown().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!link.exists());
    assert!(
        loop_backing(&dev).is_none_or(|b| !b.contains(&v.id)),
        "shutdown released the loop device"
    );
}
