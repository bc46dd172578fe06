//! Host-device mode: volumes attached to the VM marked `this_host` become real loop devices, with
//! a by-id style link (`<links>/virtio-<serial>`, default `<root>/disk/by-id`) like the guest's
//! udev would create. With `links = /dev/disk/by-id` a CSI node plugin running as a pod with its
//! default `--device-root=/dev` finds the devices exactly as in a VM. Needs root (losetup). Every
//! loop device is detached on shutdown; a link is only ever removed when it points at a loop
//! device backed by one of our own files (the links directory may be shared).

use std::path::{Path, PathBuf};

use tokio::process::Command;

#[derive(Debug, Clone)]
pub struct HostDevices {
    root: PathBuf,
    links: PathBuf,
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
    /// `links`: where the by-id links go (default `<root>/disk/by-id`).
    pub fn new(root: &Path, links: Option<&Path>) -> std::io::Result<Self> {
        let links = links.map_or_else(|| root.join("disk/by-id"), Path::to_path_buf);
        std::fs::create_dir_all(&links)?;
        std::fs::create_dir_all(root.join("backing"))?;
        Ok(Self {
            root: std::fs::canonicalize(root)?,
            links,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The by-id link of a disk with this guest serial.
    pub fn link(&self, serial: &str) -> PathBuf {
        self.links.join(format!("virtio-{serial}"))
    }

    /// Whether the loop device a link points at is backed by a file under our `backing/`.
    fn backed_by_us(&self, dev: &Path) -> bool {
        let Some(name) = dev.file_name() else {
            return false;
        };
        let backing_file = Path::new("/sys/block").join(name).join("loop/backing_file");
        std::fs::read_to_string(backing_file)
            .map(|f| Path::new(f.trim()).starts_with(self.root.join("backing")))
            .unwrap_or(false)
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
    pub async fn attach(&self, volume_id: &str, serial: &str, size: u64) -> Result<String, String> {
        let link = self.link(serial);
        if let Ok(dev) = std::fs::read_link(&link) {
            if dev.exists() {
                return Ok(dev.display().to_string());
            }
            let _ = std::fs::remove_file(&link);
        }
        self.grow_backing(volume_id, size)?;
        let backing = self.backing(volume_id);
        let dev = losetup(&["--find", "--show", &backing.display().to_string()]).await?;
        // The links directory may be shared and removed while empty (as udev's would be).
        let linked = std::fs::create_dir_all(&self.links)
            .and_then(|()| std::os::unix::fs::symlink(&dev, &link));
        if let Err(e) = linked {
            let _ = losetup(&["-d", &dev]).await;
            return Err(format!("{}: {e}", link.display()));
        }
        Ok(dev)
    }

    /// Removes the link and detaches the loop device; nothing attached is fine.
    pub async fn detach(&self, serial: &str) -> Result<(), String> {
        self.detach_link(&self.link(serial)).await
    }

    async fn detach_link(&self, link: &Path) -> Result<(), String> {
        let Ok(dev) = std::fs::read_link(link) else {
            return Ok(());
        };
        if dev.exists() && !self.backed_by_us(&dev) {
            // Someone else's device (a shared links directory): not ours to touch.
            return Ok(());
        }
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
    pub async fn resize(&self, volume_id: &str, serial: &str, size: u64) -> Result<(), String> {
        self.grow_backing(volume_id, size)?;
        if let Ok(dev) = std::fs::read_link(self.link(serial)) {
            losetup(&["-c", &dev.display().to_string()]).await?;
        }
        Ok(())
    }

    /// Detaches and deletes the backing file.
    pub async fn destroy(&self, volume_id: &str, serial: &str) -> Result<(), String> {
        self.detach(serial).await?;
        match std::fs::remove_file(self.backing(volume_id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
            _ => Ok(()),
        }
    }

    /// Detaches every loop device this root links to (shutdown, or stale links after a crash).
    pub async fn detach_all(&self) -> Vec<String> {
        let mut errors = vec![];
        let Ok(entries) = std::fs::read_dir(&self.links) else {
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
