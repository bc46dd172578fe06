//! The cloud-init user-data of a new node, from the group's template.
//!
//! What it may carry is fixed here: public facts about the cluster and the node, and one
//! credential, the node's bootstrap token, which lives at most 15 minutes and is deleted once the
//! Node registers. Never an Elemento credential: nothing in this module can reach one.

/// Placeholders a template may use, written `{{ name }}`.
pub const PLACEHOLDERS: &[&str] = &[
    "node_name",
    "node_group",
    "cluster_name",
    "api_server",
    "ca_cert_hash",
    "bootstrap_token",
    "node_labels",
    "node_taints",
];

/// A kubeadm join, with the kubelet as `--cloud-provider=external` wants it (the CCM then
/// initializes the Node) and the group's labels and taints at registration.
pub const DEFAULT_TEMPLATE: &str = r#"#cloud-config
hostname: {{ node_name }}
write_files:
  - path: /etc/kubernetes/elemento-join.yaml
    permissions: "0600"
    content: |
      apiVersion: kubeadm.k8s.io/v1beta4
      kind: JoinConfiguration
      discovery:
        bootstrapToken:
          apiServerEndpoint: "{{ api_server }}"
          token: "{{ bootstrap_token }}"
          caCertHashes: ["{{ ca_cert_hash }}"]
      nodeRegistration:
        name: "{{ node_name }}"
        kubeletExtraArgs:
          - {name: cloud-provider, value: external}
          - {name: node-labels, value: "{{ node_labels }}"}
          - {name: register-with-taints, value: "{{ node_taints }}"}
runcmd:
  - [kubeadm, join, --config, /etc/kubernetes/elemento-join.yaml]
  - [rm, -f, /etc/kubernetes/elemento-join.yaml]
"#;

/// The values of one node.
#[derive(Debug, Clone)]
pub struct Values<'a> {
    pub node_name: &'a str,
    pub node_group: &'a str,
    pub cluster_name: &'a str,
    pub api_server: &'a str,
    pub ca_cert_hash: &'a str,
    pub bootstrap_token: &'a str,
    pub node_labels: String,
    pub node_taints: String,
}

impl Values<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        Some(match name {
            "node_name" => self.node_name,
            "node_group" => self.node_group,
            "cluster_name" => self.cluster_name,
            "api_server" => self.api_server,
            "ca_cert_hash" => self.ca_cert_hash,
            "bootstrap_token" => self.bootstrap_token,
            "node_labels" => &self.node_labels,
            "node_taints" => &self.node_taints,
            _ => return None,
        })
    }
}

/// The placeholders of a template, in order; an error names an unknown or unclosed one.
fn placeholders(template: &str) -> Result<Vec<(usize, usize, &str)>, String> {
    let mut out = vec![];
    let mut at = 0;
    while let Some(start) = template[at..].find("{{").map(|i| at + i) {
        let end = template[start..]
            .find("}}")
            .map(|i| start + i + 2)
            .ok_or_else(|| format!("an unclosed {{{{ at byte {start}"))?;
        let name = template[start + 2..end - 2].trim();
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{{ {name} }}}}; known: {PLACEHOLDERS:?}"
            ));
        }
        out.push((start, end, name));
        at = end;
    }
    Ok(out)
}

/// Checks a template at configuration time.
pub fn check(template: &str) -> Result<(), String> {
    placeholders(template).map(|_| ())
}

pub fn render(template: &str, v: &Values) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 256);
    let mut at = 0;
    for (start, end, name) in placeholders(template)? {
        out.push_str(&template[at..start]);
        out.push_str(v.get(name).unwrap_or_default());
        at = end;
    }
    out.push_str(&template[at..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values<'static> {
        Values {
            node_name: "c1-g-00aa11",
            node_group: "g",
            cluster_name: "c1",
            api_server: "10.0.0.1:6443",
            ca_cert_hash: "sha256:ab",
            bootstrap_token: "abcdef.0123456789abcdef",
            node_labels: "a=b".into(),
            node_taints: "k=v:NoSchedule".into(),
        }
    }

    #[test]
    fn renders_every_placeholder_and_refuses_unknown_ones() {
        let text = render(DEFAULT_TEMPLATE, &values()).unwrap();
        assert!(!text.contains("{{"), "{text}");
        assert!(text.contains("hostname: c1-g-00aa11"));
        assert!(text.contains(r#"token: "abcdef.0123456789abcdef""#));
        assert!(text.contains("k=v:NoSchedule"));
        assert_eq!(render("a{{node_group}}b", &values()).unwrap(), "agb");
        let e = check("x {{ elemento_password }}").unwrap_err();
        assert!(
            e.contains("elemento_password") && e.contains("known"),
            "{e}"
        );
        assert!(check("x {{ node_name").unwrap_err().contains("unclosed"));
    }
}
