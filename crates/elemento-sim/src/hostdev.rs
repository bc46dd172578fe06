//! Host-device mode: volumes attached to the VM marked `this_host` become real loop devices, with
//! a by-id style link (`<root>/disk/by-id/virtio-<serial>`) like the guest's udev would create.
//! Needs root (losetup). Every loop device is detached on shutdown.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::world::virtio_serial;

#[derive(Debug, Clone)]
pub struct HostDevices {
    root: PathBuf,
}

async fn losetup(args: &[&str]) -> Result<String, String> {
    let out = Command::new("losetup")
        .args(args)
        .output()
        .await
        .map_err(|e| format!("losetup {args:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "losetup {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl HostDevices {
    pub fn new(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root.join("disk/by-id"))?;
        std::fs::create_dir_all(root.join("backing"))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn link(&self, volume_id: &str) -> PathBuf {
        self.root
            .join("disk/by-id")
            .join(format!("virtio-{}", virtio_serial(volume_id)))
    }

    fn backing(&self, volume_id: &str) -> PathBuf {
        self.root.join("backing").join(format!("{volume_id}.img"))
    }

    fn grow_backing(&self, volume_id: &str, size: u64) -> Result<(), String> {
        let path = self.backing(volume_id);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let len = f.metadata().map_err(|e| e.to_string())?.len();
        if len < size {
            f.set_len(size)
                .map_err(|e| format!("{}: {e}", path.display()))?; // sparse
        }
        Ok(())
    }

    /// Creates the backing file, a loop device and the by-id link. Returns the loop device.
    pub async fn attach(&self, volume_id: &str, size: u64) -> Result<String, String> {
        let link = self.link(volume_id);
        if let Ok(dev) = std::fs::read_link(&link) {
            if dev.exists() {
                return Ok(dev.display().to_string());
            }
            let _ = std::fs::remove_file(&link);
        }
        self.grow_backing(volume_id, size)?;
        let backing = self.backing(volume_id);
        let dev = losetup(&["--find", "--show", &backing.display().to_string()]).await?;
        if let Err(e) = std::os::unix::fs::symlink(&dev, &link) {
            let _ = losetup(&["-d", &dev]).await;
            return Err(format!("{}: {e}", link.display()));
        }
        Ok(dev)
    }

    /// Removes the link and detaches the loop device; nothing attached is fine.
    pub async fn detach(&self, volume_id: &str) -> Result<(), String> {
        self.detach_link(&self.link(volume_id)).await
    }

    async fn detach_link(&self, link: &Path) -> Result<(), String> {
        let Ok(dev) = std::fs::read_link(link) else {
            return Ok(());
        };
        let dev = dev.display().to_string();
        if Path::new(&dev).exists()
            && let Err(e) = losetup(&["-d", &dev]).await
        {
            // Already detached by someone else is fine; anything else is reported.
            if !e.contains("No such device") {
                return Err(e);
            }
        }
        std::fs::remove_file(link).map_err(|e| format!("{}: {e}", link.display()))
    }

    /// Grows the backing file and tells the loop device about the new size.
    pub async fn resize(&self, volume_id: &str, size: u64) -> Result<(), String> {
        self.grow_backing(volume_id, size)?;
        if let Ok(dev) = std::fs::read_link(self.link(volume_id)) {
            losetup(&["-c", &dev.display().to_string()]).await?;
        }
        Ok(())
    }

    /// Detaches and deletes the backing file.
    pub async fn destroy(&self, volume_id: &str) -> Result<(), String> {
        self.detach(volume_id).await?;
        match std::fs::remove_file(self.backing(volume_id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
            _ => Ok(()),
        }
    }

    /// Detaches every loop device this root links to (shutdown, or stale links after a crash).
    pub async fn detach_all(&self) -> Vec<String> {
        let mut errors = vec![];
        let Ok(entries) = std::fs::read_dir(self.root.join("disk/by-id")) else {
            return errors;
        };
        for e in entries.flatten() {
            if let Err(err) = self.detach_link(&e.path()).await {
                errors.push(err);
            }
        }
        errors
    }
}
