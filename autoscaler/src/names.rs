//! Membership by name: every VM of a group is `<cluster>-<group>-<6 hex>`, and its volumes are
//! `<vm name>-boot` and `<vm name>-ci`. The status list may not return tags (reference §3.1), so
//! the name is the proof a VM is ours; `vm_tags` are written too and checked when present.

/// Tags written on every VM (`k8s-cluster=…`, `k8s-nodegroup=…`).
pub fn tags(cluster: &str, group: &str) -> Vec<String> {
    vec![
        format!("k8s-cluster={cluster}"),
        format!("k8s-nodegroup={group}"),
    ]
}

/// A fresh VM name of the group.
pub fn new_vm_name(cluster: &str, group: &str) -> String {
    format!("{cluster}-{group}-{:06x}", fastrand::u32(..1 << 24))
}

pub fn boot_volume(vm_name: &str) -> String {
    format!("{vm_name}-boot")
}

pub fn cloud_init_volume(vm_name: &str) -> String {
    format!("{vm_name}-ci")
}

/// The group of a VM name among `groups`, when the name is ours: the cluster prefix, a known
/// group, then exactly 6 lower-case hex digits. The longest group name wins (`a` and `a-b`).
pub fn group_of<'a>(cluster: &str, groups: &[&'a str], vm_name: &str) -> Option<&'a str> {
    let rest = vm_name.strip_prefix(cluster)?.strip_prefix('-')?;
    groups
        .iter()
        .filter(|g| {
            rest.strip_prefix(**g)
                .and_then(|r| r.strip_prefix('-'))
                .is_some_and(|suffix| {
                    suffix.len() == 6
                        && suffix
                            .bytes()
                            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                })
        })
        .max_by_key(|g| g.len())
        .copied()
}

/// The VM name a volume of ours belongs to (`<vm>-boot`, `<vm>-ci`).
pub fn vm_of_volume(volume_name: &str) -> Option<&str> {
    volume_name
        .strip_suffix("-boot")
        .or_else(|| volume_name.strip_suffix("-ci"))
}

/// Whether a VM's tags, when the API returns any, agree with the name: a VM named like ours but
/// tagged for another cluster or group is not ours.
pub fn tags_agree(vm_tags: &[String], cluster: &str, group: &str) -> bool {
    let value = |key: &str| {
        vm_tags
            .iter()
            .find_map(|t| t.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
    };
    value("k8s-cluster").is_none_or(|c| c == cluster)
        && value("k8s-nodegroup").is_none_or(|g| g == group)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_back_to_their_group_and_nothing_else_does() {
        let groups = ["ovh-neon", "ovh", "atomos-argon"];
        let n = new_vm_name("c1", "ovh-neon");
        assert_eq!(n.len(), "c1-ovh-neon-".len() + 6);
        assert_eq!(group_of("c1", &groups, &n), Some("ovh-neon"));
        assert_eq!(group_of("c1", &groups, "c1-ovh-00ff0a"), Some("ovh"));
        for foreign in [
            "c2-ovh-neon-00ff0a",
            "c1-ovh-neon-00FF0A",
            "c1-ovh-neon-00ff0",
            "c1-other-00ff0a",
            "c1-ovh-neon-00ff0a-x",
            "web-1",
        ] {
            assert_eq!(group_of("c1", &groups, foreign), None, "{foreign}");
        }
        assert_eq!(vm_of_volume(&boot_volume(&n)), Some(n.as_str()));
        assert_eq!(vm_of_volume(&cloud_init_volume(&n)), Some(n.as_str()));
        assert_eq!(vm_of_volume("data"), None);
        assert!(tags_agree(&tags("c1", "ovh"), "c1", "ovh"));
        assert!(
            tags_agree(&[], "c1", "ovh"),
            "no tags returned: the name decides"
        );
        assert!(!tags_agree(&tags("c2", "ovh"), "c1", "ovh"));
    }
}
