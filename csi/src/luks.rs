//! LUKS encryption of a volume (StorageClass `encrypted: "true"`, passphrase from the node-stage
//! secret `encryptionPassphrase`). The passphrase goes to cryptsetup on stdin, never in argv or
//! logs. The build machines' kernel has no device-mapper, so this is unit-tested with a fake
//! runner only (docs/csi.md says so).

use std::path::{Path, PathBuf};

use crate::cmd::Runner;
use crate::error::{CsiError, Result};

pub const SECRET_KEY: &str = "encryptionPassphrase";

pub fn mapper_name(volume_id: &str) -> String {
    format!("elemento-{volume_id}")
}

pub fn mapper_path(volume_id: &str) -> PathBuf {
    Path::new("/dev/mapper").join(mapper_name(volume_id))
}

/// Formats the device as LUKS2 if it is not LUKS yet, and opens it. Returns the mapper device.
pub async fn open(
    r: &dyn Runner,
    device: &Path,
    volume_id: &str,
    passphrase: &str,
) -> Result<PathBuf> {
    if passphrase.is_empty() {
        return Err(CsiError::InvalidArgument(format!(
            "the volume is encrypted but the node-stage secret has no {SECRET_KEY}"
        )));
    }
    let dev = device.display().to_string();
    let mapped = mapper_path(volume_id);
    if mapped.exists() {
        return Ok(mapped);
    }
    let is_luks = r.run("cryptsetup", &["isLuks", &dev], None).await?.code == Some(0);
    if !is_luks {
        r.ok(
            "cryptsetup",
            &[
                "luksFormat",
                "--type",
                "luks2",
                "--batch-mode",
                "--key-file",
                "-",
                &dev,
            ],
            Some(passphrase),
        )
        .await?;
    }
    r.ok(
        "cryptsetup",
        &["luksOpen", "--key-file", "-", &dev, &mapper_name(volume_id)],
        Some(passphrase),
    )
    .await?;
    Ok(mapped)
}

pub async fn close(r: &dyn Runner, volume_id: &str) -> Result<()> {
    if !mapper_path(volume_id).exists() {
        return Ok(());
    }
    r.ok("cryptsetup", &["luksClose", &mapper_name(volume_id)], None)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::FakeRunner;

    #[tokio::test]
    async fn formats_only_when_not_luks_and_keeps_the_passphrase_off_argv() {
        let r = FakeRunner::default();
        r.answer("cryptsetup", 1, ""); // isLuks: no
        let mapped = open(&r, Path::new("/dev/vdb"), "vol-1", "s3cret").await;
        // The fake answers exit 1 to every cryptsetup call, so luksFormat fails: that error is
        // reported with the command, without the passphrase.
        let e = mapped.unwrap_err().to_string();
        assert!(e.contains("luksFormat") && !e.contains("s3cret"), "{e}");
        let calls = r.calls.lock().unwrap().clone();
        assert_eq!(calls[1].2.as_deref(), Some("s3cret"), "passphrase on stdin");
        assert!(
            calls
                .iter()
                .all(|c| !c.1.iter().any(|a| a.contains("s3cret"))),
            "never in argv"
        );

        let r = FakeRunner::default();
        r.answer("cryptsetup", 0, ""); // isLuks: yes; open succeeds
        assert_eq!(
            open(&r, Path::new("/dev/vdb"), "vol-1", "pw")
                .await
                .unwrap(),
            PathBuf::from("/dev/mapper/elemento-vol-1")
        );
        let progs = r.programs();
        assert!(
            progs.iter().all(|p| !p.contains("luksFormat")),
            "an existing LUKS device is never reformatted: {progs:?}"
        );
        assert!(
            progs
                .last()
                .unwrap()
                .contains("luksOpen --key-file - /dev/vdb elemento-vol-1")
        );
        assert!(
            open(&r, Path::new("/dev/vdb"), "vol-1", "")
                .await
                .unwrap_err()
                .to_string()
                .contains(SECRET_KEY)
        );
    }
}
