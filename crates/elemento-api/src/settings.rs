//! The `api:` section of the CCM's and CSI driver's config files, and the credentials file.
//!
//! Credentials live in a mounted Secret: either one YAML/JSON file (`username`, `password`,
//! `org`, `token`) or a directory with one file per key (how Kubernetes mounts a Secret's keys).
//! [`watch_credentials`] re-reads it and hands changes to the client: rotation without restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::{ApiError, Auth, Client, ClientConfig, Credentials, Endpoints, Secret, parse_url};

/// Where and how to reach the Elemento API.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiSettings {
    /// Host of the local client daemons, on their default ports (default 127.0.0.1).
    pub host: Option<String>,
    /// One base URL for every service (a gateway, or the simulator's single port).
    pub url: Option<String>,
    /// Per-service overrides.
    pub endpoints: EndpointOverrides,
    pub timeout_seconds: Option<u64>,
    /// PEM bundle of extra CAs for https endpoints.
    pub ca_bundle: Option<PathBuf>,
    /// The credentials file or directory (see module docs). Without it, no login is attempted
    /// (the daemons may already hold one).
    pub credentials_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointOverrides {
    pub auth: Option<String>,
    pub compute: Option<String>,
    pub storage: Option<String>,
    pub network: Option<String>,
    pub services: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<Secret>,
    #[serde(default)]
    org: Option<String>,
    #[serde(default)]
    token: Option<Secret>,
}

/// Reads credentials from a file or a Secret-style directory. Errors never include the values.
pub fn read_credentials(path: &Path) -> Result<Auth, ApiError> {
    let bad = |why: String| ApiError::Config(format!("credentials {}: {why}", path.display()));
    let f: CredentialsFile = if path.is_dir() {
        let key = |k: &str| -> Option<String> {
            std::fs::read_to_string(path.join(k))
                .ok()
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .filter(|s| !s.is_empty())
        };
        CredentialsFile {
            username: key("username"),
            password: key("password").map(Secret::new),
            org: key("org"),
            token: key("token").map(Secret::new),
        }
    } else {
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        // serde errors can quote input; report only the position-free kind of error.
        serde_saphyr::from_str(&text)
            .map_err(|_| bad("not a YAML/JSON mapping of username, password, org, token".into()))?
    };
    let credentials = match (f.username, f.password) {
        (Some(username), Some(password)) => Some(Credentials {
            username,
            password,
            org: f.org,
        }),
        (None, None) => None,
        _ => return Err(bad("username and password must be given together".into())),
    };
    if credentials.is_none() && f.token.is_none() {
        return Err(bad("neither username/password nor token is set".into()));
    }
    Ok(Auth {
        credentials,
        bearer_token: f.token,
    })
}

impl ApiSettings {
    pub fn endpoints(&self) -> Result<Endpoints, ApiError> {
        let mut e = match (&self.url, &self.host) {
            (Some(_), Some(_)) => {
                return Err(ApiError::Config(
                    "api.url and api.host are exclusive".into(),
                ));
            }
            (Some(u), None) => Endpoints::single(u)?,
            (None, h) => Endpoints::local(h.as_deref().unwrap_or("127.0.0.1"))?,
        };
        let o = &self.endpoints;
        for (svc, v) in [
            (crate::routes::Service::Auth, &o.auth),
            (crate::routes::Service::Compute, &o.compute),
            (crate::routes::Service::Storage, &o.storage),
            (crate::routes::Service::Network, &o.network),
            (crate::routes::Service::Services, &o.services),
        ] {
            if let Some(u) = v {
                e.set(svc, parse_url(u)?);
            }
        }
        Ok(e)
    }

    /// A client config with credentials read now.
    pub fn client_config(&self, user_agent: &str) -> Result<ClientConfig, ApiError> {
        let mut c = ClientConfig::new(self.endpoints()?);
        c.user_agent = user_agent.to_string();
        if let Some(t) = self.timeout_seconds {
            if t == 0 || t > 600 {
                return Err(ApiError::Config(format!(
                    "api.timeoutSeconds {t}: accepted 1-600"
                )));
            }
            c.timeout = Duration::from_secs(t);
        }
        if let Some(p) = &self.ca_bundle {
            c.ca_bundle_pem = Some(
                std::fs::read(p)
                    .map_err(|e| ApiError::Config(format!("api.caBundle {}: {e}", p.display())))?,
            );
        }
        if let Some(p) = &self.credentials_file {
            c.auth = read_credentials(p)?;
        }
        Ok(c)
    }
}

/// How often to re-read the credentials file: `ELEMENTO_CREDENTIALS_POLL_SECONDS`, default 10.
pub fn credentials_poll_interval() -> Duration {
    let secs = std::env::var("ELEMENTO_CREDENTIALS_POLL_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|s| *s > 0)
        .unwrap_or(10);
    Duration::from_secs(secs)
}

/// Re-reads the credentials every `every` and gives changed ones to `client`. A file that
/// cannot be read keeps the previous credentials (logged, without the values).
pub fn watch_credentials(
    client: Client,
    path: PathBuf,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = read_credentials(&path).ok();
        loop {
            tokio::time::sleep(every).await;
            match read_credentials(&path) {
                Ok(a) if Some(&a) != last.as_ref() => {
                    tracing::info!(path = %path.display(), "credentials changed; using them from the next login");
                    client.set_auth(a.clone());
                    last = Some(a);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "keeping the previous credentials"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_file_and_directory() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("c.yaml");
        std::fs::write(&f, "username: u\npassword: p4ss\norg: acme\n").unwrap();
        let a = read_credentials(&f).unwrap();
        assert_eq!(a.credentials.as_ref().unwrap().password.expose(), "p4ss");
        let dir = d.path().join("secret");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("token"), "tok\n").unwrap();
        let a = read_credentials(&dir).unwrap();
        assert_eq!(a.bearer_token.unwrap().expose(), "tok");
        std::fs::write(&f, "username: u\n").unwrap();
        assert!(
            read_credentials(&f)
                .unwrap_err()
                .to_string()
                .contains("together")
        );
        std::fs::write(&f, "password: [unclosed p4ss").unwrap();
        let e = read_credentials(&f).unwrap_err().to_string();
        assert!(!e.contains("p4ss"), "{e}");
    }

    #[test]
    fn endpoints_from_settings() {
        let s: ApiSettings = serde_saphyr::from_str(
            "url: http://127.0.0.1:9999\nendpoints:\n  storage: http://10.0.0.1:27777\n",
        )
        .unwrap();
        let e = s.endpoints().unwrap();
        assert_eq!(e.compute.as_str(), "http://127.0.0.1:9999/");
        assert_eq!(e.storage.as_str(), "http://10.0.0.1:27777/");
        let bad: ApiSettings = serde_saphyr::from_str("host: x\nurl: http://y\n").unwrap();
        assert!(bad.endpoints().is_err());
        assert!(
            serde_saphyr::from_str::<ApiSettings>("hots: x\n").is_err(),
            "typos are rejected"
        );
    }
}
