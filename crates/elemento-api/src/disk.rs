//! How a guest may see an attached volume: the disk serial forms and the disks of a VM's domain
//! XML. One definition for the CSI driver (which looks for the device) and the simulator (which
//! makes it appear).
//!
//! Evidence (reference §8.2): "serial = the first 20 characters of the volume id" is our old
//! inference [I]; a preliminary Elemento change (S12) builds the libvirt `<serial>` from the
//! volume **name**: 4 hex digits, `x`, the name with everything outside `[A-Za-z0-9_]` removed,
//! cut or `0`-padded to 20 characters in total (virtio-blk, IDE, ATA) or 36 (SCSI). Today's real
//! domain XML has `<target dev='vda' bus='virtio'/>` and no `<serial>` [K].

/// Serial length of virtio-blk (also IDE and ATA).
pub const VIRTIO_SERIAL_LEN: usize = 20;
/// Serial length of SCSI disks.
pub const SCSI_SERIAL_LEN: usize = 36;
/// Characters of the volume name a virtio name-based serial keeps: our volume names must be
/// unique within this many sanitized characters.
pub const NAME_CHARS_IN_VIRTIO_SERIAL: usize = VIRTIO_SERIAL_LEN - 5;

/// The id-prefix form [I]: the first 20 characters of the volume id.
pub fn id_prefix_serial(volume_id: &str) -> String {
    volume_id.chars().take(VIRTIO_SERIAL_LEN).collect()
}

/// The volume name with everything outside `[A-Za-z0-9_]` removed.
pub fn sanitize(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The part of a name-based serial after `<4 hex>x`, for a serial of `len` characters.
fn name_part(volume_name: &str, len: usize) -> String {
    let keep = len.saturating_sub(5);
    let mut s: String = sanitize(volume_name).chars().take(keep).collect();
    while s.len() < keep {
        s.push('0');
    }
    s
}

/// The name-based serial (§8.2) for a given 4-hex prefix value.
pub fn name_serial(prefix: u16, volume_name: &str, len: usize) -> String {
    format!("{prefix:04x}x{}", name_part(volume_name, len))
}

/// Whether `serial` is a name-based serial of `volume_name` (virtio or SCSI length); the 4 hex
/// digits are not derivable, so any are accepted.
pub fn is_name_serial_of(serial: &str, volume_name: &str) -> bool {
    let b = serial.as_bytes();
    [VIRTIO_SERIAL_LEN, SCSI_SERIAL_LEN].contains(&b.len())
        && b[..4].iter().all(u8::is_ascii_hexdigit)
        && b[4] == b'x'
        && serial[5..] == name_part(volume_name, b.len())
}

/// One `<disk>` of a libvirt domain XML (the `xml` field of a `vm/status` record [K]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DomainDisk {
    /// `<target dev='vdb'>`: the name the hypervisor gives the disk (the guest kernel may name it
    /// differently).
    pub target_dev: Option<String>,
    pub bus: Option<String>,
    pub serial: Option<String>,
    /// `<source file|dev|volume|name='…'>`.
    pub source: Option<String>,
}

/// The `<disk device='disk'>` elements of a domain XML. A tolerant scan, not a full XML parser:
/// libvirt writes these elements in a fixed, simple form, and anything unexpected yields fewer
/// disks, never an error.
pub fn domain_disks(xml: &str) -> Vec<DomainDisk> {
    let mut out = vec![];
    let mut rest = xml;
    while let Some(start) = rest.find("<disk") {
        let after = &rest[start..];
        let Some(end) = after.find("</disk>") else {
            break;
        };
        let block = &after[..end];
        rest = &after[end + "</disk>".len()..];
        let open = block.split('>').next().unwrap_or_default();
        if attr(open, "device").is_some_and(|d| d != "disk") {
            continue; // cdrom, floppy, lun
        }
        let tag = |name: &str| {
            block
                .find(&format!("<{name}"))
                .map(|i| block[i..].split('>').next().unwrap_or_default())
        };
        let serial = block.find("<serial>").and_then(|i| {
            let s = &block[i + "<serial>".len()..];
            s.find("</serial>").map(|j| s[..j].trim().to_string())
        });
        out.push(DomainDisk {
            target_dev: tag("target").and_then(|t| attr(t, "dev")),
            bus: tag("target").and_then(|t| attr(t, "bus")),
            serial: serial.filter(|s| !s.is_empty()),
            source: tag("source").and_then(|t| {
                ["file", "dev", "volume", "name"]
                    .iter()
                    .find_map(|a| attr(t, a))
            }),
        });
    }
    out
}

/// The value of `name='…'` or `name="…"` in an opening tag.
fn attr(tag: &str, name: &str) -> Option<String> {
    let mut search = tag;
    while let Some(i) = search.find(name) {
        let before_ok = i == 0 || search[..i].chars().last().is_some_and(char::is_whitespace);
        let after = search[i + name.len()..].trim_start();
        if before_ok && let Some(v) = after.strip_prefix('=') {
            let v = v.trim_start();
            let quote = v.chars().next()?;
            if quote == '\'' || quote == '"' {
                return v[1..].find(quote).map(|j| v[1..1 + j].to_string());
            }
        }
        search = &search[i + name.len()..];
    }
    None
}

/// The disk of a domain that holds `volume_id`: its source path names the volume id, or its
/// serial is one of the volume's forms.
pub fn disk_of_volume<'a>(
    disks: &'a [DomainDisk],
    volume_id: &str,
    volume_name: Option<&str>,
) -> Option<&'a DomainDisk> {
    disks.iter().find(|d| {
        d.source.as_deref().is_some_and(|s| s.contains(volume_id))
            || d.serial.as_deref().is_some_and(|s| {
                s == id_prefix_serial(volume_id)
                    || volume_name.is_some_and(|n| is_name_serial_of(s, n))
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_based_form_of_the_evidence() {
        // The example of §8.2: seed 2 → 2*42 = 0x54.
        assert_eq!(
            name_serial(2 * 42, "postgres-data", 20),
            "0054xpostgresdata000"
        );
        assert!(is_name_serial_of("0054xpostgresdata000", "postgres-data"));
        assert!(is_name_serial_of("beefxpostgresdata000", "postgres-data"));
        let scsi = name_serial(0xab, "pvc-0123abcd-4567-89ef-aaaa-bbbbccccdddd", 36);
        assert_eq!(scsi.len(), 36);
        assert!(is_name_serial_of(
            &scsi,
            "pvc-0123abcd-4567-89ef-aaaa-bbbbccccdddd"
        ));
        // Cut to 15 name characters in a virtio serial.
        let v = name_serial(1, "pvc-0123abcd-4567-89ef-aaaa-bbbbccccdddd", 20);
        assert_eq!(v, "0001xpvc0123abcd4567");
        for not in [
            "0054xpostgresdata00",
            "zz54xpostgresdata000",
            "0054ypostgresdata000",
            "0054xpostgresdata001",
        ] {
            assert!(!is_name_serial_of(not, "postgres-data"), "{not}");
        }
        assert_eq!(
            id_prefix_serial("0123456789abcdefghijklmn"),
            "0123456789abcdefghij"
        );
    }

    #[test]
    fn disks_of_a_domain_xml() {
        let xml = r#"<domain type='kvm'><devices>
          <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
            <source file='/var/lib/atomos/volumes/vol-boot.qcow2'/><target dev='vda' bus='virtio'/></disk>
          <disk type="file" device="disk"><source file="/var/lib/atomos/volumes/vol-42.img"/>
            <target dev="vdb" bus="virtio"/><serial>0054xpostgresdata000</serial></disk>
          <disk type='file' device='cdrom'><source file='/iso/x.iso'/><target dev='sda' bus='sata'/></disk>
          <disk type='file' device='disk'><target dev='vdc'
        </devices></domain>"#;
        let disks = domain_disks(xml);
        assert_eq!(disks.len(), 2, "{disks:?}");
        assert_eq!(disks[0].target_dev.as_deref(), Some("vda"));
        assert_eq!(disks[0].serial, None);
        assert_eq!(disks[1].bus.as_deref(), Some("virtio"));
        assert_eq!(disks[1].serial.as_deref(), Some("0054xpostgresdata000"));
        assert_eq!(
            disk_of_volume(&disks, "vol-42", None).and_then(|d| d.target_dev.as_deref()),
            Some("vdb")
        );
        assert_eq!(
            disk_of_volume(&disks, "other-id", Some("postgres-data")).map(|d| d.target_dev.clone()),
            Some(Some("vdb".into()))
        );
        assert!(disk_of_volume(&disks, "nope", Some("nope")).is_none());
        assert!(domain_disks("").is_empty() && domain_disks("<disk").is_empty());
    }
}
