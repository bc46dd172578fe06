//! Pure decisions about requests: StorageClass parameters and flavours, volume capabilities and
//! access modes, capacity ranges, ids and paths. No IO, fully unit-tested.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path};

use csi_grpc::v1::volume_capability::access_mode::Mode;
use csi_grpc::v1::volume_capability::{AccessType, MountVolume};
use csi_grpc::v1::{CapacityRange, VolumeCapability};
use elemento_api::types::{Volume, VolumeAttributes};
use elemento_api::units;
use serde::Deserialize;

use crate::error::{CsiError, Result};

/// Volume attributes a flavour sets; unset fields take the defaults of [`VolumeAttributes`].
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Flavour {
    pub bus: Option<String>,
    pub format: Option<String>,
    pub shareable: Option<bool>,
    pub private: Option<bool>,
}

/// The flavours shipped by default: `standard` (virtio, raw, private), `thin` (qcow2),
/// `shared` (shareable, for multi-node raw block volumes).
pub fn default_flavours() -> BTreeMap<String, Flavour> {
    BTreeMap::from([
        ("standard".into(), Flavour::default()),
        (
            "thin".into(),
            Flavour {
                format: Some("qcow2".into()),
                ..Default::default()
            },
        ),
        (
            "shared".into(),
            Flavour {
                shareable: Some(true),
                ..Default::default()
            },
        ),
    ])
}

pub const PARAMETERS: &[&str] = &[
    "flavour",
    "bus",
    "format",
    "shareable",
    "encrypted",
    FS_FORMAT_OPTIONS,
];
/// StorageClass parameter (and volume-context key): extra mkfs arguments, whitespace-separated.
pub const FS_FORMAT_OPTIONS: &str = "fsFormatOptions";
const FORMAT_OPTIONS_MAX_LEN: usize = 512;
pub const BUSES: &[&str] = &["virtio", "sata"];
pub const FORMATS: &[&str] = &["raw", "qcow2"];
pub const FS_TYPES: &[&str] = &["ext4", "xfs", "btrfs"];
pub const DEFAULT_FS: &str = "ext4";
/// Size of a volume requested without a capacity range.
pub const DEFAULT_SIZE: u64 = 1 << 30;

/// What a CreateVolume's parameters resolve to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeParams {
    pub flavour: String,
    pub attrs: VolumeAttributes,
    pub encrypted: bool,
    /// `fsFormatOptions` as given (validated by [`format_options`]).
    pub format_options: Option<String>,
}

fn one_of(param: &str, value: &str, accepted: &[&str]) -> Result<String> {
    if accepted.contains(&value) {
        Ok(value.to_string())
    } else {
        Err(CsiError::InvalidArgument(format!(
            "StorageClass parameter {param}: {:?} is not accepted; accepted values: {}",
            truncate(value),
            accepted.join(", ")
        )))
    }
}

fn boolean(param: &str, value: &str) -> Result<bool> {
    one_of(param, value, &["true", "false"]).map(|v| v == "true")
}

/// Resolves StorageClass parameters: the flavour's attributes, then explicit overrides.
/// Parameters under `csi.storage.k8s.io/` belong to the sidecars and are ignored.
pub fn volume_params(
    params: &HashMap<String, String>,
    flavours: &BTreeMap<String, Flavour>,
    default_flavour: &str,
) -> Result<VolumeParams> {
    for k in params.keys() {
        if !PARAMETERS.contains(&k.as_str()) && !k.starts_with("csi.storage.k8s.io/") {
            return Err(CsiError::InvalidArgument(format!(
                "StorageClass parameter {:?} is not known; accepted parameters: {}",
                truncate(k),
                PARAMETERS.join(", ")
            )));
        }
    }
    let name = params
        .get("flavour")
        .map(String::as_str)
        .unwrap_or(default_flavour);
    let names: Vec<&str> = flavours.keys().map(String::as_str).collect();
    let f = flavours.get(name).ok_or_else(|| {
        CsiError::InvalidArgument(format!(
            "StorageClass parameter flavour: {:?} is not accepted; accepted values: {}",
            truncate(name),
            names.join(", ")
        ))
    })?;
    let d = VolumeAttributes::default();
    let mut attrs = VolumeAttributes {
        bus: f.bus.clone().unwrap_or(d.bus),
        format: f.format.clone().unwrap_or(d.format),
        shareable: f.shareable.unwrap_or(d.shareable),
        private: f.private.unwrap_or(d.private),
        provider: None,
    };
    if let Some(v) = params.get("bus") {
        attrs.bus = one_of("bus", v, BUSES)?;
    }
    if let Some(v) = params.get("format") {
        attrs.format = one_of("format", v, FORMATS)?;
    }
    if let Some(v) = params.get("shareable") {
        attrs.shareable = boolean("shareable", v)?;
    }
    let encrypted = params
        .get("encrypted")
        .map(|v| boolean("encrypted", v))
        .transpose()?
        .unwrap_or(false);
    let mkfs_options = params.get(FS_FORMAT_OPTIONS).cloned();
    if let Some(v) = &mkfs_options {
        format_options(v)?;
    }
    Ok(VolumeParams {
        flavour: name.to_string(),
        attrs,
        encrypted,
        format_options: mkfs_options,
    })
}

/// The mkfs arguments of `fsFormatOptions`. They are passed as separate arguments, never through
/// a shell, before the device path. Refused: a value that does not start with an option, and any
/// character outside `[A-Za-z0-9=,._:^+-]` — in particular `/`, so no argument can name another
/// device for mkfs to format.
pub fn format_options(value: &str) -> Result<Vec<String>> {
    let refuse = |why: String| {
        CsiError::InvalidArgument(format!(
            "StorageClass parameter {FS_FORMAT_OPTIONS}: {why}; accepted: mkfs options separated by spaces, \
             starting with an option such as -i or -O, made of letters, digits and = , . _ : ^ + -"
        ))
    };
    if value.len() > FORMAT_OPTIONS_MAX_LEN {
        return Err(refuse(format!(
            "longer than {FORMAT_OPTIONS_MAX_LEN} characters"
        )));
    }
    let args: Vec<String> = value.split_whitespace().map(str::to_string).collect();
    match args.first() {
        None => return Err(refuse("empty".into())),
        Some(first) if !first.starts_with('-') => {
            return Err(refuse(format!(
                "{:?} is not an option (it must start with -)",
                truncate(first)
            )));
        }
        Some(_) => {}
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "=,._:^+-".contains(c);
    if let Some(bad) = args.iter().find(|a| !a.chars().all(allowed)) {
        return Err(refuse(format!(
            "{:?} holds a character that is not accepted",
            truncate(bad)
        )));
    }
    Ok(args)
}

/// How a volume is consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Mount { fs_type: String, flags: Vec<String> },
    Block,
}

fn mode(cap: &VolumeCapability) -> Mode {
    cap.access_mode
        .as_ref()
        .and_then(|m| Mode::try_from(m.mode).ok())
        .unwrap_or(Mode::Unknown)
}

pub fn is_multi_node(cap: &VolumeCapability) -> bool {
    matches!(
        mode(cap),
        Mode::MultiNodeReaderOnly | Mode::MultiNodeSingleWriter | Mode::MultiNodeMultiWriter
    )
}

pub fn is_read_only_mode(cap: &VolumeCapability) -> bool {
    matches!(
        mode(cap),
        Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly
    )
}

/// The capability a request must carry (stage, publish, attach).
pub fn required_capability(cap: Option<&VolumeCapability>) -> Result<&VolumeCapability> {
    cap.ok_or_else(|| CsiError::InvalidArgument("volume capability is required".into()))
}

/// Checks one capability against what Elemento volumes can do: any single-node mode; multi-node
/// modes only for shareable volumes used as raw block devices (a filesystem mounted by two VMs at
/// once is corrupted).
pub fn access(cap: &VolumeCapability, shareable: bool) -> Result<Access> {
    let m = mode(cap);
    if m == Mode::Unknown {
        return Err(CsiError::InvalidArgument(
            "volume capability: access mode is missing or unknown".into(),
        ));
    }
    let access = match &cap.access_type {
        Some(AccessType::Mount(MountVolume {
            fs_type,
            mount_flags,
            ..
        })) => {
            let fs = if fs_type.is_empty() {
                DEFAULT_FS.to_string()
            } else {
                fs_type.clone()
            };
            if !FS_TYPES.contains(&fs.as_str()) {
                return Err(CsiError::InvalidArgument(format!(
                    "fsType {fs:?} is not supported; accepted: {}",
                    FS_TYPES.join(", ")
                )));
            }
            for f in mount_flags {
                if f.is_empty() || f.contains(',') && f.contains(' ') || f.contains('\0') {
                    return Err(CsiError::InvalidArgument(format!(
                        "mount flag {f:?} is not valid"
                    )));
                }
            }
            Access::Mount {
                fs_type: fs,
                flags: mount_flags.clone(),
            }
        }
        Some(AccessType::Block(_)) => Access::Block,
        None => {
            return Err(CsiError::InvalidArgument(
                "volume capability: access type (mount or block) is missing".into(),
            ));
        }
    };
    if is_multi_node(cap) {
        match (&access, shareable) {
            (Access::Block, true) => {}
            (Access::Block, false) => {
                return Err(CsiError::InvalidArgument(format!(
                    "access mode {m:?} needs a shareable volume; use a StorageClass with flavour: shared (or shareable: \"true\")"
                )));
            }
            (Access::Mount { .. }, _) => {
                return Err(CsiError::InvalidArgument(format!(
                    "access mode {m:?} is only supported with volumeMode: Block: a filesystem cannot be mounted on two VMs safely"
                )));
            }
        }
    }
    Ok(access)
}

/// All capabilities, or the first problem.
pub fn check_capabilities(caps: &[VolumeCapability], shareable: bool) -> Result<()> {
    if caps.is_empty() {
        return Err(CsiError::InvalidArgument(
            "volume capabilities are required".into(),
        ));
    }
    caps.iter().try_for_each(|c| access(c, shareable).map(drop))
}

/// LUKS is opened by NodeStage under a filesystem; a raw block volume would reach the pod as the
/// plaintext device. Encryption asked for on block access is refused, never silently dropped.
pub fn check_encryption(encrypted: bool, caps: &[VolumeCapability]) -> Result<()> {
    let block = caps
        .iter()
        .any(|c| matches!(c.access_type, Some(AccessType::Block(_))));
    if encrypted && block {
        return Err(CsiError::InvalidArgument(
            "encrypted: \"true\" cannot be combined with volumeMode: Block (the pod would get the \
             unencrypted device); use volumeMode: Filesystem, or a StorageClass without encrypted"
                .into(),
        ));
    }
    Ok(())
}

/// Bytes to create: the required size rounded up to Elemento's 0.125 GB step, within the limit.
pub fn capacity(range: Option<&CapacityRange>) -> Result<u64> {
    let (required, limit) = range.map_or((0, 0), |r| (r.required_bytes, r.limit_bytes));
    if required < 0 || limit < 0 {
        return Err(CsiError::InvalidArgument(
            "capacity range: sizes must not be negative".into(),
        ));
    }
    let (required, limit) = (required as u64, limit as u64);
    if limit > 0 && required > limit {
        return Err(CsiError::OutOfRange(format!(
            "required_bytes {required} exceeds limit_bytes {limit}"
        )));
    }
    let want = if required == 0 {
        DEFAULT_SIZE.min(if limit > 0 { limit } else { u64::MAX })
    } else {
        required
    };
    let bytes = units::round_up_to_step(want)
        .filter(|b| i64::try_from(*b).is_ok()) // capacity_bytes is an int64
        .ok_or_else(|| CsiError::OutOfRange(format!("{want} bytes is too large")))?;
    if limit > 0 && bytes > limit {
        // Round down instead when that still satisfies the request.
        let down = bytes - units::VOLUME_STEP_BYTES;
        if down >= required.max(1) && down > 0 {
            return Ok(down);
        }
        return Err(CsiError::OutOfRange(format!(
            "no size on Elemento's 0.125 GB grid lies between required_bytes {required} and limit_bytes {limit}"
        )));
    }
    Ok(bytes)
}

/// Whether an existing volume satisfies a repeated CreateVolume.
pub fn compatible(v: &Volume, range: Option<&CapacityRange>, attrs: &VolumeAttributes) -> bool {
    let (required, limit) = range.map_or((0, 0), |r| {
        (r.required_bytes.max(0) as u64, r.limit_bytes.max(0) as u64)
    });
    v.size_bytes >= required
        && (limit == 0 || v.size_bytes <= limit)
        && v.shareable == attrs.shareable
        && v.format.as_deref().is_none_or(|f| f == attrs.format)
        && v.bus.as_deref().is_none_or(|b| b == attrs.bus)
        && match (&v.provider, &attrs.provider) {
            (Some(have), Some(want)) => have == want,
            _ => true,
        }
}

/// Volume and node ids: what Elemento uses (uuids), never paths.
pub fn check_id(what: &str, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(CsiError::InvalidArgument(format!("{what} is required")));
    }
    if id.len() > 128
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || id.starts_with('.')
    {
        return Err(CsiError::InvalidArgument(format!(
            "{what} {:?} is not a valid Elemento id",
            truncate(id)
        )));
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Paths from the CO: absolute, no `..`, no NUL, and inside `root` when one is configured.
pub fn check_path(what: &str, path: &str, root: Option<&Path>) -> Result<()> {
    if path.is_empty() {
        return Err(CsiError::InvalidArgument(format!("{what} is required")));
    }
    let p = Path::new(path);
    if path.contains('\0')
        || path.len() > 4096
        || !p.is_absolute()
        || p.components().any(|c| matches!(c, Component::ParentDir))
    {
        return Err(CsiError::InvalidArgument(format!(
            "{what} {:?} must be an absolute path without '..'",
            truncate(path)
        )));
    }
    if let Some(r) = root
        && !p.starts_with(r)
    {
        return Err(CsiError::InvalidArgument(format!(
            "{what} {:?} is outside the kubelet directory {}",
            truncate(path),
            r.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi_grpc::v1::volume_capability::{AccessMode, BlockVolume};

    fn cap(mode: Mode, block: bool, fs: &str) -> VolumeCapability {
        VolumeCapability {
            access_mode: Some(AccessMode { mode: mode as i32 }),
            access_type: Some(if block {
                AccessType::Block(BlockVolume {})
            } else {
                AccessType::Mount(MountVolume {
                    fs_type: fs.into(),
                    ..Default::default()
                })
            }),
        }
    }

    fn p(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn format_options_are_arguments_never_paths_or_shell() {
        let ok = format_options("-i 65536  -O ^has_journal -E root_owner=1000:1000").unwrap();
        assert_eq!(
            ok,
            [
                "-i",
                "65536",
                "-O",
                "^has_journal",
                "-E",
                "root_owner=1000:1000"
            ]
        );
        for bad in [
            "",
            "   ",
            "65536",       // not an option first
            "-q /dev/sda", // would name another device
            "-L x;reboot", // shell syntax is just refused
            "-L $(id)",
            "-L `id`",
            "-E a|b",
            "-L 'quoted'",
        ] {
            let e = format_options(bad).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}");
            assert!(e.to_string().contains(FS_FORMAT_OPTIONS), "{e}");
        }
        assert!(format_options(&format!("-L {}", "a".repeat(600))).is_err());
        // As a StorageClass parameter: refused before any volume exists.
        let flavours = default_flavours();
        let e = volume_params(
            &p(&[(FS_FORMAT_OPTIONS, "-q /dev/sda")]),
            &flavours,
            "standard",
        )
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let v = volume_params(
            &p(&[(FS_FORMAT_OPTIONS, "-i 65536")]),
            &flavours,
            "standard",
        )
        .unwrap();
        assert_eq!(v.format_options.as_deref(), Some("-i 65536"));
    }

    #[test]
    fn encryption_is_refused_on_block_access_never_dropped() {
        let block = cap(Mode::SingleNodeWriter, true, "");
        let fs = cap(Mode::SingleNodeWriter, false, "ext4");
        let e = check_encryption(true, std::slice::from_ref(&block)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.to_string().contains("volumeMode: Block"), "{e}");
        assert!(check_encryption(true, &[fs.clone(), block.clone()]).is_err());
        assert!(check_encryption(true, &[fs]).is_ok());
        assert!(check_encryption(false, &[block]).is_ok());
    }

    #[test]
    fn flavours_and_overrides() {
        let f = default_flavours();
        let std = volume_params(&p(&[]), &f, "standard").unwrap();
        assert_eq!(
            (
                std.attrs.bus.as_str(),
                std.attrs.format.as_str(),
                std.attrs.shareable
            ),
            ("virtio", "raw", false)
        );
        let thin =
            volume_params(&p(&[("flavour", "thin"), ("bus", "sata")]), &f, "standard").unwrap();
        assert_eq!(
            (thin.attrs.bus.as_str(), thin.attrs.format.as_str()),
            ("sata", "qcow2")
        );
        assert!(
            volume_params(&p(&[("flavour", "shared")]), &f, "standard")
                .unwrap()
                .attrs
                .shareable
        );
        assert!(
            volume_params(
                &p(&[("csi.storage.k8s.io/pvc/name", "x"), ("encrypted", "true")]),
                &f,
                "standard"
            )
            .unwrap()
            .encrypted
        );
        let e = volume_params(&p(&[("flavour", "gold")]), &f, "standard")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("flavour") && e.contains("shared, standard, thin"),
            "{e}"
        );
        let e = volume_params(&p(&[("format", "vmdk")]), &f, "standard")
            .unwrap_err()
            .to_string();
        assert!(e.contains("format") && e.contains("raw, qcow2"), "{e}");
        let e = volume_params(&p(&[("iops", "5000")]), &f, "standard")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"iops\"") && e.contains("flavour, bus, format, shareable, encrypted"),
            "{e}"
        );
        assert!(volume_params(&p(&[("shareable", "yes")]), &f, "standard").is_err());
    }

    #[test]
    fn access_modes() {
        assert_eq!(
            access(&cap(Mode::SingleNodeWriter, false, ""), false).unwrap(),
            Access::Mount {
                fs_type: "ext4".into(),
                flags: vec![]
            }
        );
        assert!(access(&cap(Mode::SingleNodeMultiWriter, false, "xfs"), false).is_ok());
        assert!(access(&cap(Mode::MultiNodeMultiWriter, true, ""), true).is_ok());
        assert!(
            access(&cap(Mode::MultiNodeMultiWriter, true, ""), false)
                .unwrap_err()
                .to_string()
                .contains("shareable")
        );
        assert!(
            access(&cap(Mode::MultiNodeMultiWriter, false, ""), true)
                .unwrap_err()
                .to_string()
                .contains("Block")
        );
        assert!(
            access(&cap(Mode::SingleNodeWriter, false, "ntfs"), false)
                .unwrap_err()
                .to_string()
                .contains("ext4, xfs, btrfs")
        );
        assert!(access(&cap(Mode::Unknown, false, ""), false).is_err());
        assert!(
            access(
                &VolumeCapability {
                    access_mode: Some(AccessMode { mode: 1 }),
                    access_type: None
                },
                false
            )
            .is_err()
        );
        assert!(check_capabilities(&[], false).is_err());
    }

    #[test]
    fn capacities() {
        let r = |req, lim| {
            Some(CapacityRange {
                required_bytes: req,
                limit_bytes: lim,
            })
        };
        assert_eq!(capacity(None).unwrap(), 1_125_000_000);
        assert_eq!(capacity(r(1 << 30, 0).as_ref()).unwrap(), 1_125_000_000);
        assert_eq!(
            capacity(r(1 << 30, 1_100_000_000).as_ref())
                .unwrap_err()
                .code(),
            tonic::Code::OutOfRange
        );
        assert_eq!(
            capacity(r(1_000_000_000, 1_100_000_000).as_ref()).unwrap(),
            1_000_000_000
        );
        assert_eq!(
            capacity(r(-1, 0).as_ref()).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            capacity(r(10, 5).as_ref()).unwrap_err().code(),
            tonic::Code::OutOfRange
        );
        assert_eq!(
            capacity(r(i64::MAX, 0).as_ref()).unwrap_err().code(),
            tonic::Code::OutOfRange
        );
        assert_eq!(capacity(r(0, 500_000_000).as_ref()).unwrap(), 500_000_000);
    }

    #[test]
    fn ids_and_paths() {
        assert!(check_id("volume id", "3f2a-09_x.1").is_ok());
        for bad in [
            "",
            "a/b",
            "../x",
            &"x".repeat(200),
            "with space",
            "\u{1F600}",
        ] {
            assert!(check_id("volume id", bad).is_err(), "{bad:?}");
        }
        assert!(
            check_path(
                "target",
                "/var/lib/kubelet/pods/x",
                Some(Path::new("/var/lib/kubelet"))
            )
            .is_ok()
        );
        assert!(check_path("target", "/var/lib/kubelet/../../etc", None).is_err());
        assert!(check_path("target", "relative/path", None).is_err());
        assert!(check_path("target", "/etc/passwd", Some(Path::new("/var/lib/kubelet"))).is_err());
        assert!(check_path("target", "", None).is_err());
    }
}
