//! One implementation per filesystem: how to create it and how to grow it.

use std::path::Path;

use crate::cmd::Runner;
use crate::error::Result;

#[tonic::async_trait]
pub trait Filesystem: Send + Sync {
    fn name(&self) -> &'static str;
    async fn create(&self, runner: &dyn Runner, device: &Path) -> Result<()>;
    /// Grows the filesystem mounted at `mount_point` from `device` to the device's size.
    async fn expand(&self, runner: &dyn Runner, device: &Path, mount_point: &Path) -> Result<()>;
}

pub struct Ext4;
pub struct Xfs;
pub struct Btrfs;

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[tonic::async_trait]
impl Filesystem for Ext4 {
    fn name(&self) -> &'static str {
        "ext4"
    }
    async fn create(&self, r: &dyn Runner, device: &Path) -> Result<()> {
        // lazy init keeps formatting fast on large volumes; -F because loop devices and files
        // look like non-disks to mke2fs.
        r.ok(
            "mkfs.ext4",
            &[
                "-F",
                "-q",
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1",
                &s(device),
            ],
            None,
        )
        .await
        .map(drop)
    }
    async fn expand(&self, r: &dyn Runner, device: &Path, _mount_point: &Path) -> Result<()> {
        r.ok("resize2fs", &[&s(device)], None).await.map(drop)
    }
}

#[tonic::async_trait]
impl Filesystem for Xfs {
    fn name(&self) -> &'static str {
        "xfs"
    }
    async fn create(&self, r: &dyn Runner, device: &Path) -> Result<()> {
        // Never -f: blkid already found no filesystem, and mkfs.xfs refusing is a safety net.
        r.ok("mkfs.xfs", &["-q", &s(device)], None).await.map(drop)
    }
    async fn expand(&self, r: &dyn Runner, _device: &Path, mount_point: &Path) -> Result<()> {
        r.ok("xfs_growfs", &[&s(mount_point)], None).await.map(drop)
    }
}

#[tonic::async_trait]
impl Filesystem for Btrfs {
    fn name(&self) -> &'static str {
        "btrfs"
    }
    async fn create(&self, r: &dyn Runner, device: &Path) -> Result<()> {
        r.ok("mkfs.btrfs", &["-q", &s(device)], None)
            .await
            .map(drop)
    }
    async fn expand(&self, r: &dyn Runner, _device: &Path, mount_point: &Path) -> Result<()> {
        r.ok(
            "btrfs",
            &["filesystem", "resize", "max", &s(mount_point)],
            None,
        )
        .await
        .map(drop)
    }
}

pub fn by_name(name: &str) -> Option<&'static dyn Filesystem> {
    match name {
        "ext4" => Some(&Ext4),
        "xfs" => Some(&Xfs),
        "btrfs" => Some(&Btrfs),
        _ => None,
    }
}

/// What `blkid -p` finds on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Empty,
    Filesystem(String),
    /// A partition table or something else we must not format over.
    Other(String),
}

pub async fn probe(r: &dyn Runner, device: &Path) -> Result<Probe> {
    let out = r
        .run("blkid", &["-p", "-o", "export", &s(device)], None)
        .await?;
    match out.code {
        Some(2) => Ok(Probe::Empty), // blkid: nothing found
        Some(0) => {
            let get = |k: &str| {
                out.stdout
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{k}=")))
                    .map(String::from)
            };
            Ok(match (get("TYPE"), get("PTTYPE")) {
                (Some(t), _) if get("USAGE").as_deref() != Some("crypto") => Probe::Filesystem(t),
                (Some(t), _) => Probe::Other(t),
                (None, Some(pt)) => Probe::Other(format!("partition table {pt}")),
                (None, None) => Probe::Empty,
            })
        }
        _ => r
            .ok("blkid", &["-p", "-o", "export", &s(device)], None)
            .await
            .map(|_| Probe::Empty),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::FakeRunner;

    #[tokio::test]
    async fn probe_reads_blkid() {
        let r = FakeRunner::default();
        r.answer("blkid", 2, "");
        assert_eq!(probe(&r, Path::new("/dev/x")).await.unwrap(), Probe::Empty);
        r.answer(
            "blkid",
            0,
            "DEVNAME=/dev/x\nUUID=1\nTYPE=xfs\nUSAGE=filesystem\n",
        );
        assert_eq!(
            probe(&r, Path::new("/dev/x")).await.unwrap(),
            Probe::Filesystem("xfs".into())
        );
        r.answer("blkid", 0, "PTTYPE=gpt\n");
        assert_eq!(
            probe(&r, Path::new("/dev/x")).await.unwrap(),
            Probe::Other("partition table gpt".into())
        );
        r.answer("blkid", 4, "");
        assert!(probe(&r, Path::new("/dev/x")).await.is_err());
    }

    #[tokio::test]
    async fn each_filesystem_uses_its_tools() {
        let r = FakeRunner::default();
        for fs in ["ext4", "xfs", "btrfs"] {
            let f = by_name(fs).unwrap();
            f.create(&r, Path::new("/dev/d")).await.unwrap();
            f.expand(&r, Path::new("/dev/d"), Path::new("/mnt"))
                .await
                .unwrap();
        }
        let calls = r.programs();
        assert!(calls[0].starts_with("mkfs.ext4 -F") && calls[1] == "resize2fs /dev/d");
        assert_eq!(calls[3], "xfs_growfs /mnt");
        assert_eq!(calls[5], "btrfs filesystem resize max /mnt");
        assert!(by_name("ntfs").is_none());
    }
}
