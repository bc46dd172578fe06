//! Client configuration. Secrets are wrapped so that no Debug or Display prints them.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::ApiError;
use crate::routes::Service;

/// A secret string. Debug and Display print `<redacted>`; only [`Secret::expose`] gives the value.
#[derive(Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}
impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Username/password login held by the local auth daemon [K].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
    #[serde(default)]
    pub org: Option<String>,
}

/// How the client authenticates. Both may be set: the token is sent on every call (direct Meson
/// access), and the login is (re-)done when a call answers 401.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Auth {
    pub credentials: Option<Credentials>,
    pub bearer_token: Option<Secret>,
}

/// One base URL per service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub auth: Url,
    pub compute: Url,
    pub storage: Url,
    pub network: Url,
    pub services: Url,
}

impl Endpoints {
    /// The local client daemons on `host` at their default ports.
    pub fn local(host: &str) -> Result<Self, ApiError> {
        let at = |s: Service| parse_url(&format!("http://{host}:{}", s.default_port()));
        Ok(Self {
            auth: at(Service::Auth)?,
            compute: at(Service::Compute)?,
            storage: at(Service::Storage)?,
            network: at(Service::Network)?,
            services: at(Service::Services)?,
        })
    }

    /// Every service behind one base URL (the simulator's single-port mode, or a gateway).
    pub fn single(base: &str) -> Result<Self, ApiError> {
        let u = parse_url(base)?;
        Ok(Self {
            auth: u.clone(),
            compute: u.clone(),
            storage: u.clone(),
            network: u.clone(),
            services: u,
        })
    }

    pub fn get(&self, s: Service) -> &Url {
        match s {
            Service::Auth => &self.auth,
            Service::Compute => &self.compute,
            Service::Storage => &self.storage,
            Service::Network => &self.network,
            Service::Services => &self.services,
        }
    }

    pub fn set(&mut self, s: Service, url: Url) {
        match s {
            Service::Auth => self.auth = url,
            Service::Compute => self.compute = url,
            Service::Storage => self.storage = url,
            Service::Network => self.network = url,
            Service::Services => self.services = url,
        }
    }
}

pub fn parse_url(s: &str) -> Result<Url, ApiError> {
    let u = Url::parse(s).map_err(|e| ApiError::Config(format!("endpoint {s:?}: {e}")))?;
    match u.scheme() {
        "http" | "https" => Ok(u),
        other => Err(ApiError::Config(format!(
            "endpoint {s:?}: scheme {other:?} is not http or https"
        ))),
    }
}

/// Retry policy for idempotent calls: exponential backoff with full jitter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total tries, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Cap on an honoured `Retry-After`.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Delay before try number `attempt + 1` (attempt counts from 1): a uniform draw in
    /// [delay/2, delay] where delay = base·2^(attempt−1), capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let cap = exp.min(self.max_delay);
        let half = cap / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// Everything the client needs.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub endpoints: Endpoints,
    pub auth: Auth,
    /// Per-try timeout, connect included.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// Extra PEM CA bundle trusted for https endpoints (self-signed daemons).
    pub ca_bundle_pem: Option<Vec<u8>>,
    /// Sent as User-Agent; the simulator logs it per call, so tests can tell clients apart.
    pub user_agent: String,
}

impl ClientConfig {
    pub fn new(endpoints: Endpoints) -> Self {
        Self {
            endpoints,
            auth: Auth::default(),
            timeout: Duration::from_secs(15),
            retry: RetryPolicy::default(),
            ca_bundle_pem: None,
            user_agent: format!("elemento-api-rs/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let c = Credentials {
            username: "alice".into(),
            password: Secret::new("hunter2"),
            org: None,
        };
        let auth = Auth {
            credentials: Some(c),
            bearer_token: Some(Secret::new("tok-123")),
        };
        let mut cfg = ClientConfig::new(Endpoints::local("127.0.0.1").unwrap());
        cfg.auth = auth;
        let dbg = format!("{cfg:?}");
        assert!(
            !dbg.contains("hunter2") && !dbg.contains("tok-123"),
            "{dbg}"
        );
        assert!(dbg.contains("alice") && dbg.contains("<redacted>"));
        assert_eq!(Secret::new("x").to_string(), "<redacted>");
    }

    #[test]
    fn endpoints_default_ports_and_validation() {
        let e = Endpoints::local("127.0.0.1").unwrap();
        assert_eq!(e.compute.as_str(), "http://127.0.0.1:17777/");
        assert_eq!(e.services.port(), Some(6777));
        assert!(matches!(parse_url("ftp://x"), Err(ApiError::Config(_))));
        assert!(matches!(parse_url("not a url"), Err(ApiError::Config(_))));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::default();
        for _ in 0..50 {
            let d1 = p.backoff(1);
            assert!(d1 >= Duration::from_millis(100) && d1 <= Duration::from_millis(200));
            let d10 = p.backoff(10);
            assert!(d10 >= Duration::from_millis(2500) && d10 <= Duration::from_secs(5));
        }
    }
}
