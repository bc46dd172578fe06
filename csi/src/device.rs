//! Finding the block device of an attached volume inside the VM.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{CsiError, Result};

/// Publish-context keys set by ControllerPublish.
pub const CTX_SERIAL: &str = "serial";
pub const CTX_DEVICE_PATH: &str = "devicePath";

/// Looks for `<device_root>/disk/by-id/virtio-<serial>`, then scans `<sys_root>/block/*/serial`
/// (udev may not have made the link yet), until `wait` runs out.
pub async fn find(
    device_root: &Path,
    sys_root: &Path,
    serial: &str,
    wait: Duration,
) -> Result<PathBuf> {
    if serial.is_empty() || serial.contains('/') || serial.contains("..") {
        return Err(CsiError::InvalidArgument(format!(
            "publish context {CTX_SERIAL} {serial:?} is not valid"
        )));
    }
    let link = device_root
        .join("disk/by-id")
        .join(format!("virtio-{serial}"));
    let deadline = Instant::now() + wait;
    loop {
        if let Ok(dev) = std::fs::canonicalize(&link) {
            return Ok(dev);
        }
        if let Ok(entries) = std::fs::read_dir(sys_root.join("block")) {
            for e in entries.flatten() {
                let found = std::fs::read_to_string(e.path().join("serial"))
                    .map(|s| s.trim() == serial)
                    .unwrap_or(false);
                if found {
                    return Ok(device_root.join(e.file_name()));
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(CsiError::FailedPrecondition(format!(
                "no device with serial {serial} appeared within {wait:?} (looked for {} and in {}/block/*/serial); is the volume attached to this VM?",
                link.display(),
                sys_root.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Size of a block device in bytes (`blockdev --getsize64`).
pub async fn size(runner: &dyn crate::cmd::Runner, device: &Path) -> Result<u64> {
    let out = runner
        .ok(
            "blockdev",
            &["--getsize64", &device.display().to_string()],
            None,
        )
        .await?;
    out.stdout.trim().parse().map_err(|_| {
        CsiError::Internal(format!(
            "blockdev --getsize64 {}: unexpected output {:?}",
            device.display(),
            out.stdout.trim()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finds_by_id_link_then_sysfs_serial() {
        let d = tempfile::tempdir().unwrap();
        let (root, sys) = (d.path().join("dev"), d.path().join("sys"));
        std::fs::create_dir_all(root.join("disk/by-id")).unwrap();
        std::fs::create_dir_all(sys.join("block/vdb")).unwrap();
        std::fs::write(root.join("vdc"), "").unwrap();
        std::os::unix::fs::symlink(root.join("vdc"), root.join("disk/by-id/virtio-abc")).unwrap();
        assert_eq!(
            find(&root, &sys, "abc", Duration::ZERO).await.unwrap(),
            std::fs::canonicalize(root.join("vdc")).unwrap()
        );
        std::fs::write(sys.join("block/vdb/serial"), "def\n").unwrap();
        assert_eq!(
            find(&root, &sys, "def", Duration::ZERO).await.unwrap(),
            root.join("vdb")
        );
        let e = find(&root, &sys, "zzz", Duration::from_millis(300))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(find(&root, &sys, "../etc", Duration::ZERO).await.is_err());
    }
}
