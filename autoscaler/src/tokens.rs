//! Join credentials: one bootstrap token per VM (a `bootstrap.kubernetes.io/token` Secret in
//! kube-system), created just before the VM is registered, living at most 15 minutes, deleted
//! once the Node has registered or the creation failed. The token is the only credential that
//! ever reaches user-data; its text is never logged.

use std::io::Read;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

/// Labels our token Secrets: the VM they were made for.
pub const LABEL_VM_NAME: &str = "autoscaler.elemento.cloud/vm-name";
const NAMESPACE: &str = "kube-system";
/// The group kubeadm gives joining nodes (its RBAC lets them post CSRs and be approved).
const GROUPS: &str = "system:bootstrappers:kubeadm:default-node-token";

/// A token `<6>.<16>` of [a-z0-9], from the OS's random source.
fn new_token() -> std::io::Result<(String, String)> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 22];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    // 256 is not a multiple of 36: four letters come up 8/256 of the time instead of 7/256. A
    // 16-letter secret keeps about 82 bits, plenty for a token that lives 15 minutes.
    let text: String = bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    Ok((text[..6].to_string(), text[6..].to_string()))
}

#[derive(Clone)]
pub struct Tokens {
    secrets: Api<Secret>,
    nodes: Api<Node>,
    ttl: Duration,
}

/// A token Secret of ours: the VM it is for, its Secret name, and whether it has expired.
#[derive(Debug, Clone)]
pub struct TokenOf {
    pub vm_name: String,
    pub secret: String,
    pub expired: bool,
}

impl Tokens {
    pub fn new(kube: kube::Client, ttl: Duration) -> Self {
        Self {
            secrets: Api::namespaced(kube.clone(), NAMESPACE),
            nodes: Api::all(kube),
            ttl,
        }
    }

    /// Creates the token of `vm_name` and returns its text (`id.secret`).
    pub async fn create(&self, vm_name: &str) -> anyhow::Result<String> {
        let (id, secret) = new_token()?;
        let expiration = k8s_openapi::jiff::Timestamp::now()
            + k8s_openapi::jiff::SignedDuration::from_secs(self.ttl.as_secs() as i64);
        let data = [
            ("token-id", id.clone()),
            ("token-secret", secret.clone()),
            (
                "expiration",
                expiration.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            ),
            ("usage-bootstrap-authentication", "true".into()),
            ("usage-bootstrap-signing", "true".into()),
            ("auth-extra-groups", GROUPS.into()),
            (
                "description",
                format!("Elemento autoscaler: joins {vm_name}"),
            ),
        ];
        let s = Secret {
            metadata: ObjectMeta {
                name: Some(format!("bootstrap-token-{id}")),
                namespace: Some(NAMESPACE.into()),
                labels: Some([(LABEL_VM_NAME.to_string(), vm_name.to_string())].into()),
                ..Default::default()
            },
            type_: Some("bootstrap.kubernetes.io/token".into()),
            string_data: Some(data.into_iter().map(|(k, v)| (k.to_string(), v)).collect()),
            ..Default::default()
        };
        self.secrets.create(&PostParams::default(), &s).await?;
        Ok(format!("{id}.{secret}"))
    }

    /// Deletes every token made for `vm_name` (none is fine).
    pub async fn delete_for(&self, vm_name: &str) -> anyhow::Result<()> {
        for t in self.ours().await? {
            if t.vm_name == vm_name {
                self.delete(&t.secret).await?;
            }
        }
        Ok(())
    }

    pub async fn delete(&self, secret: &str) -> anyhow::Result<()> {
        match self.secrets.delete(secret, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn ours(&self) -> anyhow::Result<Vec<TokenOf>> {
        let list = self
            .secrets
            .list(&ListParams::default().labels(LABEL_VM_NAME))
            .await?;
        let now = k8s_openapi::jiff::Timestamp::now();
        Ok(list
            .items
            .into_iter()
            .filter_map(|s| {
                let vm_name = s.metadata.labels.as_ref()?.get(LABEL_VM_NAME)?.clone();
                let expired = s
                    .data
                    .as_ref()
                    .and_then(|d| d.get("expiration"))
                    .and_then(|b| std::str::from_utf8(&b.0).ok())
                    .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
                    .is_some_and(|t| t <= now);
                Some(TokenOf {
                    vm_name,
                    secret: s.metadata.name?,
                    expired,
                })
            })
            .collect())
    }

    /// Whether a Node of this name has registered.
    pub async fn node_registered(&self, name: &str) -> anyhow::Result<bool> {
        Ok(self.nodes.get_opt(name).await?.is_some())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_have_the_bootstrap_token_form() {
        let (id, secret) = super::new_token().unwrap();
        assert_eq!((id.len(), secret.len()), (6, 16));
        assert!(
            format!("{id}{secret}")
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
        assert_ne!(super::new_token().unwrap().1, secret);
    }
}
