//! The Kubernetes providerID of an Elemento VM: `elemento://<uniqueID>`, the format Elemento's
//! kops fork already uses. The CSI driver's node id is the same `<uniqueID>`. Here, next to the VM
//! id it wraps, so the CCM (which writes it) and the CSI driver (which reads it) share one parser.

pub const SCHEME: &str = "elemento://";

/// The instance id the autoscaler reports for a VM it is still building (no VM id yet): never a
/// Node's providerID, so it can never be mistaken for a VM (it parses as [`ProviderId::Foreign`]).
pub const PENDING_SCHEME: &str = "elemento-pending://";

pub fn format(vm_id: &str) -> String {
    format!("{SCHEME}{vm_id}")
}

/// What a Node's `spec.providerID` says about ownership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderId {
    /// Not set yet: ours to fill in.
    Unset,
    /// An Elemento VM id. `elemento://<id>`, and also `elemento:///<id>` and
    /// `elemento://<region>/<id>` (the forms other clouds use), read as the last segment.
    Elemento(String),
    /// Another cloud's, or malformed: never touched.
    Foreign(String),
}

pub fn parse(provider_id: Option<&str>) -> ProviderId {
    let Some(p) = provider_id.map(str::trim).filter(|p| !p.is_empty()) else {
        return ProviderId::Unset;
    };
    match p.strip_prefix(SCHEME) {
        Some(rest) => match rest.rsplit('/').next().filter(|id| valid_id(id)) {
            Some(id) => ProviderId::Elemento(id.to_string()),
            None => ProviderId::Foreign(p.to_string()),
        },
        None => ProviderId::Foreign(p.to_string()),
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_our_forms_and_refuses_others() {
        assert_eq!(parse(None), ProviderId::Unset);
        assert_eq!(parse(Some("")), ProviderId::Unset);
        assert_eq!(
            parse(Some("elemento://abc-1")),
            ProviderId::Elemento("abc-1".into())
        );
        assert_eq!(
            parse(Some("elemento:///abc")),
            ProviderId::Elemento("abc".into())
        );
        assert_eq!(
            parse(Some("elemento://ovh/abc")),
            ProviderId::Elemento("abc".into())
        );
        assert!(matches!(
            parse(Some("hcloud://123")),
            ProviderId::Foreign(_)
        ));
        assert!(matches!(parse(Some("elemento://")), ProviderId::Foreign(_)));
        assert!(matches!(
            parse(Some("elemento://a b")),
            ProviderId::Foreign(_)
        ));
        assert_eq!(format("x"), "elemento://x");
    }
}
