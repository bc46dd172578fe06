//! Finding the block device of an attached volume inside the VM.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use elemento_api::disk;

use crate::error::{CsiError, Result};

/// Publish-context keys set by ControllerPublish.
pub const CTX_SERIAL: &str = "serial";
pub const CTX_DEVICE_PATH: &str = "devicePath";
/// The Elemento volume name, for the name-based serial forms (same key as the volume context's).
pub use crate::controller::CTX_VOLUME_NAME;
/// The disk's `<serial>` and `/dev/<target dev>` from the VM's domain XML, when it has them.
pub const CTX_XML_SERIAL: &str = "xmlSerial";
pub const CTX_XML_DEVICE: &str = "xmlDevice";

/// Prefixes udev gives by-id links of QEMU disks, before the serial.
const BY_ID_PREFIXES: &[&str] = &["virtio-", "scsi-0QEMU_QEMU_HARDDISK_", "ata-QEMU_HARDDISK_"];

/// Every way the guest may name an attached volume, best first (see docs/csi.md, *Finding the
/// device*):
/// 1. the serial the attach answer gave;
/// 2. the known serial forms: the volume-id prefix [I], then the name-based form of the reference
///    §8.2 (`<4 hex>x<sanitized name>`, virtio or SCSI length);
/// 3. the `<serial>` of the disk in the VM's domain XML;
/// 4. a device path (the attach answer's, then the XML's `<target dev>`): last, because the guest
///    kernel names devices itself and a wrong name would stage another disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookup {
    pub answer_serial: Option<String>,
    pub id_prefix: String,
    pub volume_name: Option<String>,
    pub xml_serial: Option<String>,
    pub device_paths: Vec<PathBuf>,
}

impl Lookup {
    pub fn new(volume_id: &str, ctx: &HashMap<String, String>) -> Result<Self> {
        let get = |k: &str| ctx.get(k).filter(|v| !v.is_empty()).cloned();
        // Our ControllerPublish always sets it: without it, ControllerPublish was not called.
        if get(CTX_SERIAL).is_none() {
            return Err(CsiError::InvalidArgument(format!(
                "publish context has no {CTX_SERIAL}: was ControllerPublishVolume called for this node?"
            )));
        }
        for key in [CTX_SERIAL, CTX_XML_SERIAL] {
            if let Some(s) = get(key)
                && (s.contains('/') || s.contains(".."))
            {
                return Err(CsiError::InvalidArgument(format!(
                    "publish context {key} {s:?} is not valid"
                )));
            }
        }
        let device_paths = [CTX_DEVICE_PATH, CTX_XML_DEVICE]
            .iter()
            .filter_map(|k| get(k))
            .map(PathBuf::from)
            .collect::<Vec<_>>();
        if let Some(p) = device_paths
            .iter()
            .find(|p| !p.starts_with("/dev/") || p.components().any(|c| c.as_os_str() == ".."))
        {
            return Err(CsiError::InvalidArgument(format!(
                "publish context device path {} is not under /dev",
                p.display()
            )));
        }
        Ok(Self {
            answer_serial: get(CTX_SERIAL),
            id_prefix: disk::id_prefix_serial(volume_id),
            volume_name: get(CTX_VOLUME_NAME),
            xml_serial: get(CTX_XML_SERIAL),
            device_paths,
        })
    }

    /// The rank of a serial seen on a device (lower is better), `None` when it is not this volume.
    fn rank(&self, serial: &str) -> Option<u8> {
        if self.answer_serial.as_deref() == Some(serial) {
            Some(0)
        } else if self.id_prefix == serial {
            Some(1)
        } else if self
            .volume_name
            .as_deref()
            .is_some_and(|n| disk::is_name_serial_of(serial, n))
        {
            Some(2)
        } else if self.xml_serial.as_deref() == Some(serial) {
            Some(3)
        } else {
            None
        }
    }

    fn describe(&self) -> String {
        let mut forms = vec![];
        if let Some(s) = &self.answer_serial {
            forms.push(format!("serial {s} (publish context)"));
        }
        forms.push(format!("serial {} (volume-id prefix)", self.id_prefix));
        if let Some(n) = &self.volume_name {
            forms.push(format!(
                "serial <4 hex>x{} (name-based)",
                disk::sanitize(n)
                    .chars()
                    .take(disk::NAME_CHARS_IN_VIRTIO_SERIAL)
                    .collect::<String>()
            ));
        }
        if let Some(s) = &self.xml_serial {
            forms.push(format!("serial {s} (domain XML)"));
        }
        for p in &self.device_paths {
            forms.push(format!("device {}", p.display()));
        }
        forms.join(", ")
    }
}

/// Every (serial, device) the guest shows: by-id links, then `/sys/block/*/serial` (udev may not
/// have made the link yet).
fn seen_serials(device_root: &Path, sys_root: &Path) -> Vec<(String, PathBuf)> {
    let mut out = vec![];
    if let Ok(entries) = std::fs::read_dir(device_root.join("disk/by-id")) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(serial) = BY_ID_PREFIXES.iter().find_map(|p| name.strip_prefix(p)) else {
                continue;
            };
            if serial.contains("-part") {
                continue; // a partition of the disk
            }
            if let Ok(dev) = std::fs::canonicalize(e.path()) {
                out.push((serial.to_string(), dev));
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(sys_root.join("block")) {
        for e in entries.flatten() {
            if let Ok(s) = std::fs::read_to_string(e.path().join("serial")) {
                out.push((s.trim().to_string(), device_root.join(e.file_name())));
            }
        }
    }
    out
}

/// The volume's device, by the best form present (see [`Lookup`]), waiting up to `wait` for it
/// to appear. Two different devices matching the same best form is an error, never a guess.
pub async fn find(
    device_root: &Path,
    sys_root: &Path,
    lookup: &Lookup,
    wait: Duration,
) -> Result<PathBuf> {
    let deadline = Instant::now() + wait;
    loop {
        let mut best: Option<(u8, PathBuf)> = None;
        for (serial, dev) in seen_serials(device_root, sys_root) {
            let Some(rank) = lookup.rank(&serial) else {
                continue;
            };
            match &best {
                Some((r, d)) if *r == rank && *d != dev && !same_device(d, &dev) => {
                    return Err(CsiError::FailedPrecondition(format!(
                        "two devices, {} and {}, match {}; refusing to guess",
                        d.display(),
                        dev.display(),
                        lookup.describe()
                    )));
                }
                Some((r, _)) if *r <= rank => {}
                _ => best = Some((rank, dev)),
            }
        }
        if let Some((_, dev)) = best {
            return Ok(dev);
        }
        if Instant::now() >= deadline {
            // Last resort: a device path, only when no serial form is present at all.
            if let Some(p) = lookup.device_paths.iter().find(|p| is_block_device(p)) {
                return Ok(p.clone());
            }
            return Err(CsiError::FailedPrecondition(format!(
                "no device of this volume appeared within {wait:?}: looked for {} in {}/disk/by-id and {}/block/*/serial; is the volume attached to this VM?",
                lookup.describe(),
                device_root.display(),
                sys_root.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn same_device(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn is_block_device(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device())
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

    /// The lookup of a publish context; `serial` defaults to the volume-id prefix, as our
    /// ControllerPublish sets it when the attach answer has none.
    fn lookup(volume_id: &str, ctx: &[(&str, &str)]) -> Lookup {
        let mut ctx: HashMap<String, String> = ctx
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ctx.entry(CTX_SERIAL.into())
            .or_insert_with(|| disk::id_prefix_serial(volume_id));
        Lookup::new(volume_id, &ctx).unwrap()
    }

    struct Guest {
        _dir: tempfile::TempDir,
        root: PathBuf,
        sys: PathBuf,
    }

    impl Guest {
        fn new() -> Self {
            let d = tempfile::tempdir().unwrap();
            let (root, sys) = (d.path().join("dev"), d.path().join("sys"));
            std::fs::create_dir_all(root.join("disk/by-id")).unwrap();
            std::fs::create_dir_all(sys.join("block")).unwrap();
            Self { _dir: d, root, sys }
        }
        /// A disk `dev` with a by-id link `<prefix><serial>`.
        fn link(&self, dev: &str, by_id: &str) -> PathBuf {
            let path = self.root.join(dev);
            std::fs::write(&path, "").unwrap();
            std::os::unix::fs::symlink(&path, self.root.join("disk/by-id").join(by_id)).unwrap();
            std::fs::canonicalize(path).unwrap()
        }
        /// A disk known only to sysfs (no link yet).
        fn sysfs(&self, dev: &str, serial: &str) -> PathBuf {
            std::fs::create_dir_all(self.sys.join("block").join(dev)).unwrap();
            std::fs::write(
                self.sys.join("block").join(dev).join("serial"),
                format!("{serial}\n"),
            )
            .unwrap();
            self.root.join(dev)
        }
        async fn find(&self, l: &Lookup) -> Result<PathBuf> {
            find(&self.root, &self.sys, l, Duration::ZERO).await
        }
    }

    const VOL: &str = "0123456789abcdefghijklmnop";

    #[tokio::test]
    async fn each_serial_form_finds_the_device() {
        // The attach answer's serial.
        let g = Guest::new();
        let vdc = g.link("vdc", "virtio-answered");
        assert_eq!(
            g.find(&lookup(VOL, &[(CTX_SERIAL, "answered")]))
                .await
                .unwrap(),
            vdc
        );
        // The volume-id prefix, by link or by sysfs only.
        let g = Guest::new();
        let vdb = g.link("vdb", "virtio-0123456789abcdefghij");
        assert_eq!(g.find(&lookup(VOL, &[])).await.unwrap(), vdb);
        let g = Guest::new();
        let vdd = g.sysfs("vdd", "0123456789abcdefghij");
        assert_eq!(g.find(&lookup(VOL, &[])).await.unwrap(), vdd);
        // The name-based form, virtio and SCSI.
        let g = Guest::new();
        let vde = g.link("vde", "virtio-00a8xpvc0123abcd4567");
        let l = lookup(
            VOL,
            &[(CTX_VOLUME_NAME, "pvc-0123abcd-4567-89ef-aaaa-bbbbccccdddd")],
        );
        assert_eq!(g.find(&l).await.unwrap(), vde);
        let g = Guest::new();
        let sda = g.link(
            "sda",
            &format!(
                "scsi-0QEMU_QEMU_HARDDISK_{}",
                disk::name_serial(7, "pvc-0123abcd-4567-89ef-aaaa-bbbbccccdddd", 36)
            ),
        );
        assert_eq!(g.find(&l).await.unwrap(), sda);
        // The domain XML's serial.
        let g = Guest::new();
        let vdf = g.link("vdf", "virtio-fromxml");
        assert_eq!(
            g.find(&lookup(VOL, &[(CTX_XML_SERIAL, "fromxml")]))
                .await
                .unwrap(),
            vdf
        );
    }

    #[tokio::test]
    async fn the_best_form_wins_and_ties_are_refused() {
        let g = Guest::new();
        let by_name = g.link("vdb", "virtio-0001xpvc0123abcd4567");
        let by_id = g.link("vdc", "virtio-0123456789abcdefghij");
        let _partition = g.link("vdc1", "virtio-0123456789abcdefghij-part1");
        let l = lookup(
            VOL,
            &[(CTX_VOLUME_NAME, "pvc-0123abcd-4567-89ef-aaaa-bbbbccccdddd")],
        );
        assert_eq!(
            g.find(&l).await.unwrap(),
            by_id,
            "the id prefix ranks before the name form"
        );
        assert_ne!(by_name, by_id);
        // Two disks with the same name form (names not unique in 15 characters): refused.
        let g = Guest::new();
        g.link("vdb", "virtio-0001xpvc0123abcd4567");
        g.link("vdc", "virtio-0002xpvc0123abcd4567");
        let e = g.find(&l).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(e.to_string().contains("refusing to guess"), "{e}");
    }

    #[tokio::test]
    async fn nothing_found_names_every_form_tried() {
        let g = Guest::new();
        g.link("vdz", "virtio-someoneelse");
        let l = lookup(
            VOL,
            &[
                (CTX_SERIAL, "answered"),
                (CTX_VOLUME_NAME, "data"),
                (CTX_DEVICE_PATH, "/dev/vdq"),
            ],
        );
        let e = find(&g.root, &g.sys, &l, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        let m = e.to_string();
        for part in [
            "answered",
            "0123456789abcdefghij",
            "<4 hex>xdata",
            "/dev/vdq",
        ] {
            assert!(m.contains(part), "{part}: {m}");
        }
    }

    #[test]
    fn hostile_publish_contexts_are_refused() {
        assert!(Lookup::new(VOL, &HashMap::new()).is_err(), "no serial");
        for (k, v) in [
            (CTX_SERIAL, "../etc"),
            (CTX_XML_SERIAL, "a/b"),
            (CTX_DEVICE_PATH, "/etc/passwd"),
            (CTX_XML_DEVICE, "/dev/../etc/shadow"),
        ] {
            let mut ctx = HashMap::from([(CTX_SERIAL.to_string(), "ok".to_string())]);
            ctx.insert(k.to_string(), v.to_string());
            assert!(Lookup::new(VOL, &ctx).is_err(), "{k}={v}");
        }
    }
}
