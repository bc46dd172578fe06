//! The HTTP client: one per process, cheap to clone, shared by every controller.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::{debug, warn};

use crate::config::{Auth, ClientConfig, Endpoints, RetryPolicy};
use crate::error::{ApiError, from_status};
use crate::routes::{self, Route};
use crate::types::*;
use crate::units;

/// Receives one report per HTTP try: route, outcome (status code, `timeout` or `connect_error`)
/// and latency. The CCM and CSI driver feed their Prometheus metrics from it.
pub trait CallObserver: Send + Sync + 'static {
    fn observe(&self, route: &Route, outcome: &str, elapsed: Duration);
}

#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    endpoints: Endpoints,
    timeout: Duration,
    retry: RetryPolicy,
    auth: RwLock<Auth>,
    /// Bumped after each successful login, so concurrent 401s trigger one login, not many.
    login_generation: AtomicU64,
    login_lock: tokio::sync::Mutex<()>,
    observer: Option<Arc<dyn CallObserver>>,
}

/// A request body: JSON, or bytes of another content type (the cloud-init upload is multipart).
enum RequestBody {
    Json(Value),
    Raw {
        content_type: String,
        bytes: Vec<u8>,
    },
}

struct Reply {
    status: u16,
    body: Vec<u8>,
    retry_after: Option<Duration>,
}

/// One failed try, and whether the server can have acted on it.
struct TryError {
    error: ApiError,
    /// The request never reached the server (connection refused): always safe to resend.
    not_sent: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner.endpoints)
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(cfg: ClientConfig) -> Result<Self, ApiError> {
        Self::with_observer(cfg, None)
    }

    pub fn with_observer(
        cfg: ClientConfig,
        observer: Option<Arc<dyn CallObserver>>,
    ) -> Result<Self, ApiError> {
        // reqwest is built without a bundled crypto provider; ring is the one kube uses too.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = reqwest::Client::builder()
            .user_agent(cfg.user_agent.clone())
            .connect_timeout(cfg.timeout)
            .pool_idle_timeout(Duration::from_secs(30));
        if let Some(pem) = &cfg.ca_bundle_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| ApiError::Config(format!("CA bundle: {e}")))?;
            if certs.is_empty() {
                return Err(ApiError::Config(
                    "CA bundle: no PEM certificate found".into(),
                ));
            }
            for cert in certs {
                b = b.add_root_certificate(cert);
            }
        }
        let http = b
            .build()
            .map_err(|e| ApiError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                endpoints: cfg.endpoints,
                timeout: cfg.timeout,
                retry: cfg.retry,
                auth: RwLock::new(cfg.auth),
                login_generation: AtomicU64::new(0),
                login_lock: tokio::sync::Mutex::new(()),
                observer,
            }),
        })
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.inner.endpoints
    }

    /// Replaces the credentials (rotation). The next 401 logs in with the new ones.
    pub fn set_auth(&self, auth: Auth) {
        *self.inner.auth.write().unwrap_or_else(|p| p.into_inner()) = auth;
    }

    fn auth(&self) -> Auth {
        self.inner
            .auth
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    // ------------------------------------------------------------ transport

    async fn try_once(
        &self,
        route: &Route,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&RequestBody>,
    ) -> Result<Reply, TryError> {
        let base = self.inner.endpoints.get(route.service);
        let url = base
            .join(path.trim_start_matches('/'))
            .map_err(|e| TryError {
                error: ApiError::Config(format!("{}: {e}", route.name)),
                not_sent: true,
            })?;
        let mut req = self
            .inner
            .http
            .request(route.method.clone(), url)
            .timeout(self.inner.timeout);
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(token) = self.auth().bearer_token {
            req = req.bearer_auth(token.expose());
        }
        match body {
            Some(RequestBody::Json(b)) => req = req.json(b),
            Some(RequestBody::Raw {
                content_type,
                bytes,
            }) => {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, content_type.as_str())
                    .body(bytes.clone());
            }
            None => {}
        }
        let started = Instant::now();
        let observe = |outcome: &str| {
            if let Some(o) = &self.inner.observer {
                o.observe(route, outcome, started.elapsed());
            }
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let (outcome, err) = self.transport_error(route, &e);
                observe(outcome);
                return Err(err);
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = match resp.bytes().await {
            Ok(b) => b.to_vec(),
            Err(e) => {
                let (outcome, err) = self.transport_error(route, &e);
                observe(outcome);
                return Err(err);
            }
        };
        observe(&status.to_string());
        Ok(Reply {
            status,
            body,
            retry_after,
        })
    }

    fn transport_error(&self, route: &Route, e: &reqwest::Error) -> (&'static str, TryError) {
        if e.is_timeout() {
            let error = ApiError::Timeout {
                route: route.name,
                timeout: self.inner.timeout,
            };
            return (
                "timeout",
                TryError {
                    error,
                    not_sent: false,
                },
            );
        }
        let not_sent = e.is_connect();
        // reqwest's Display includes the URL, which never carries credentials here (logins
        // are POST bodies), so it is safe to keep.
        let mut message = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            message = format!("{message}: {s}");
            src = s.source();
        }
        let outcome = if not_sent { "connect_error" } else { "error" };
        let error = ApiError::Unavailable {
            route: route.name,
            message,
        };
        (outcome, TryError { error, not_sent })
    }

    /// Sends a request with re-login on 401 and retries. Non-idempotent routes are resent only
    /// when the server cannot have acted (429, connection refused): a create is never duplicated.
    async fn send(
        &self,
        route: &Route,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&RequestBody>,
    ) -> Result<Reply, ApiError> {
        let mut attempt = 0;
        let mut relogged = false;
        loop {
            attempt += 1;
            let generation = self.inner.login_generation.load(Ordering::Acquire);
            let (error, not_sent) = match self.try_once(route, path, query, body).await {
                Ok(r) if (200..300).contains(&r.status) => return Ok(r),
                Ok(r) => {
                    let creds = self.auth().credentials;
                    if let (401, false, Some(creds)) = (r.status, relogged, creds)
                        && *route != routes::AUTH_LOGIN
                    {
                        relogged = true;
                        debug!(route = route.name, "401: logging in again");
                        self.relogin(generation, &creds).await?;
                        attempt -= 1;
                        continue;
                    }
                    let text = String::from_utf8_lossy(&r.body);
                    let limit_on_404 = *route == routes::VM_REGISTER;
                    let e = from_status(route.name, r.status, &text, limit_on_404, r.retry_after);
                    let not_sent = matches!(e, ApiError::RateLimited { .. });
                    (e, not_sent)
                }
                Err(TryError { error, not_sent }) => (error, not_sent),
            };
            let resendable = route.idempotent || not_sent;
            if !(resendable && error.is_transient() && attempt < self.inner.retry.max_attempts) {
                return Err(error);
            }
            let delay = match &error {
                ApiError::RateLimited {
                    retry_after: Some(d),
                    ..
                } => (*d).min(self.inner.retry.max_retry_after),
                _ => self.inner.retry.backoff(attempt),
            };
            warn!(route = route.name, attempt, ?delay, %error, "retrying Elemento API call");
            tokio::time::sleep(delay).await;
        }
    }

    async fn relogin(
        &self,
        seen_generation: u64,
        creds: &crate::Credentials,
    ) -> Result<(), ApiError> {
        let _guard = self.inner.login_lock.lock().await;
        if self.inner.login_generation.load(Ordering::Acquire) != seen_generation {
            return Ok(()); // another task logged in meanwhile
        }
        self.login_with(creds).await?;
        self.inner.login_generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    async fn call<T: Serialize>(
        &self,
        route: &Route,
        query: &[(&str, &str)],
        body: Option<&T>,
    ) -> Result<Reply, ApiError> {
        let value = encode(route, body)?;
        self.send(route, route.path, query, value.as_ref()).await
    }

    /// A call to a route with `{param}` segments in its path.
    async fn call_at<T: Serialize>(
        &self,
        route: &Route,
        path_args: &[(&str, &str)],
        body: Option<&T>,
    ) -> Result<Reply, ApiError> {
        let value = encode(route, body)?;
        self.send(route, &route.path_with(path_args), &[], value.as_ref())
            .await
    }

    async fn get(&self, route: &Route) -> Result<Reply, ApiError> {
        self.call::<()>(route, &[], None).await
    }

    // ------------------------------------------------------------ auth [K]

    async fn login_with(&self, c: &crate::Credentials) -> Result<(), ApiError> {
        let body = LoginRequest {
            username: &c.username,
            password: c.password.expose(),
            org: c.org.as_deref(),
        };
        // One direct try, outside `send` (which calls back here on 401): a failed login is
        // reported to the caller, whose own retry policy applies.
        let value = serde_json::to_value(&body)
            .map_err(|e| ApiError::Config(format!("encoding login: {e}")))?;
        let route = &routes::AUTH_LOGIN;
        let reply = self
            .try_once(route, route.path, &[], Some(&RequestBody::Json(value)))
            .await
            .map_err(|t| t.error)?;
        if !(200..300).contains(&reply.status) {
            let text = String::from_utf8_lossy(&reply.body);
            return Err(from_status(
                route.name,
                reply.status,
                &text,
                false,
                reply.retry_after,
            ));
        }
        let status: AuthStatus = decode_one(route, &reply, None)?;
        if status.authenticated {
            Ok(())
        } else {
            Err(ApiError::Unauthorized {
                route: routes::AUTH_LOGIN.name,
                message: "the auth daemon refused the login".into(),
            })
        }
    }

    /// Logs in with the configured credentials.
    pub async fn login(&self) -> Result<(), ApiError> {
        let creds = self.auth().credentials.ok_or_else(|| {
            ApiError::Config("login requested but no credentials are configured".into())
        })?;
        self.login_with(&creds).await?;
        self.inner.login_generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    pub async fn auth_status(&self) -> Result<AuthStatus, ApiError> {
        let r = self.get(&routes::AUTH_STATUS).await?;
        decode_one(&routes::AUTH_STATUS, &r, None)
    }

    /// Logs in unless the daemon already holds a login.
    pub async fn ensure_logged_in(&self) -> Result<(), ApiError> {
        if self.auth_status().await?.authenticated {
            return Ok(());
        }
        self.login().await
    }

    pub async fn logout(&self) -> Result<(), ApiError> {
        self.call::<()>(&routes::AUTH_LOGOUT, &[], None)
            .await
            .map(drop)
    }

    // ------------------------------------------------------------ compute

    /// All VMs. There is no single-VM GET [K]: callers share one listing (see the CCM inventory).
    pub async fn list_vms(&self) -> Result<Vec<Vm>, ApiError> {
        let r = self.get(&routes::VM_STATUS).await?;
        Ok(decode_list::<VmWire>(&routes::VM_STATUS, &r)?
            .into_iter()
            .filter_map(VmWire::normalise)
            .collect())
    }

    pub async fn templates(&self) -> Result<Vec<Template>, ApiError> {
        let r = self.get(&routes::VM_TEMPLATES).await?;
        Ok(decode_list::<TemplateWire>(&routes::VM_TEMPLATES, &r)?
            .into_iter()
            .filter_map(TemplateWire::normalise)
            .collect())
    }

    /// Creates a VM. Not retried on ambiguous failures: look the name up before calling again.
    /// The response body is [I]; `None` when it does not describe the VM.
    pub async fn register_vm(&self, spec: &RegisterVmRequest) -> Result<Option<Vm>, ApiError> {
        let r = self.call(&routes::VM_REGISTER, &[], Some(spec)).await?;
        Ok(serde_json::from_slice::<VmWire>(&r.body)
            .ok()
            .and_then(VmWire::normalise))
    }

    /// How many servers can take this Spec, and the providers' offers [K]. The body is the Spec
    /// without `info` and `volumes` [K].
    /// "Nowhere" is a non-2xx answer [K]: when its body is still an allocation, it is returned
    /// (with no server able) rather than an error.
    pub async fn can_allocate(&self, spec: &RegisterVmRequest) -> Result<Allocation, ApiError> {
        let route = &routes::VM_CANALLOCATE;
        match self.call(route, &[], Some(&placement_body(spec))).await {
            Ok(r) => decode_one(route, &r, None),
            Err(ApiError::NotFound { message, .. } | ApiError::LimitReached { message, .. })
                if serde_json::from_str::<Allocation>(&message).is_ok() =>
            {
                Ok(serde_json::from_str(&message).unwrap_or_default())
            }
            Err(e) => Err(e),
        }
    }

    /// The providers' prices for this Spec (`mesos`) [K].
    pub async fn market_prices(&self, spec: &RegisterVmRequest) -> Result<Allocation, ApiError> {
        let r = self
            .call(&routes::VM_MARKETPRICES, &[], Some(&placement_body(spec)))
            .await?;
        decode_one(&routes::VM_MARKETPRICES, &r, None)
    }

    /// Deletes a VM; `Ok(false)` when it was already gone.
    pub async fn unregister_vm(&self, id: &str) -> Result<bool, ApiError> {
        let body = UnregisterRequest { local_index: id };
        gone_is_ok(self.call(&routes::VM_UNREGISTER, &[], Some(&body)).await)
    }

    pub async fn start_vm(&self, id: &str) -> Result<(), ApiError> {
        let body = PowerRequest {
            vm_uid: id,
            force: false,
        };
        self.call(&routes::VM_START, &[], Some(&body))
            .await
            .map(drop)
    }

    pub async fn stop_vm(&self, id: &str, force: bool) -> Result<(), ApiError> {
        let body = PowerRequest { vm_uid: id, force };
        self.call(&routes::VM_STOP, &[], Some(&body))
            .await
            .map(drop)
    }

    pub async fn reboot_vm(&self, id: &str) -> Result<(), ApiError> {
        let body = PowerRequest {
            vm_uid: id,
            force: false,
        };
        self.call(&routes::VM_REBOOT, &[], Some(&body))
            .await
            .map(drop)
    }

    /// Attaches a volume to a VM [I body]. Attaching twice to the same VM succeeds.
    pub async fn attach_volume(
        &self,
        vm_id: &str,
        volume_id: &str,
    ) -> Result<Attachment, ApiError> {
        let body = VolumeAttachRequest::new(vm_id, volume_id);
        let r = self
            .call(&routes::VM_VOLUME_ATTACH, &[], Some(&body))
            .await?;
        Ok(serde_json::from_slice(&r.body).unwrap_or_default())
    }

    /// Detaches a volume [I body]; `Ok(false)` when it was not attached (or is gone).
    pub async fn detach_volume(&self, vm_id: &str, volume_id: &str) -> Result<bool, ApiError> {
        let body = VolumeAttachRequest::new(vm_id, volume_id);
        gone_is_ok(self.call(&routes::VM_VOLUME_DETACH, &[], Some(&body)).await)
    }

    // ------------------------------------------------------------ storage

    pub async fn list_volumes(&self) -> Result<Vec<Volume>, ApiError> {
        let r = self.get(&routes::VOLUME_ACCESSIBLE).await?;
        Ok(decode_list::<VolumeWire>(&routes::VOLUME_ACCESSIBLE, &r)?
            .into_iter()
            .filter_map(VolumeWire::normalise)
            .collect())
    }

    /// How many storage servers can create a volume of `size_bytes` (bare integer answer [K]).
    pub async fn can_create_volume(&self, size_bytes: u64) -> Result<u32, ApiError> {
        let gb = units::round_up_to_step(size_bytes)
            .map(units::gb_for_request)
            .ok_or_else(|| ApiError::Config("volume size overflows".into()))?;
        let body = CanCreateWire {
            size: format_gb(gb),
        };
        let r = self
            .call(&routes::VOLUME_CANCREATE, &[], Some(&body))
            .await?;
        let v: Value = serde_json::from_slice(&r.body)
            .map_err(|e| decode_err(&routes::VOLUME_CANCREATE, e))?;
        match v {
            Value::Number(n) => Ok(n.as_f64().unwrap_or(0.0).max(0.0) as u32),
            Value::String(s) => Ok(s.trim().parse().unwrap_or(0)),
            other => Err(ApiError::Decode {
                route: routes::VOLUME_CANCREATE.name,
                message: format!("expected an integer, got {other}"),
            }),
        }
    }

    /// Creates a volume of `size_bytes` rounded up to the 0.125 GB step. Never retried on an
    /// ambiguous failure: callers look the name up first (see [`Client::find_volume_by_name`]).
    pub async fn create_volume(
        &self,
        name: &str,
        size_bytes: u64,
        attrs: &VolumeAttributes,
    ) -> Result<Volume, ApiError> {
        let bytes = units::round_up_to_step(size_bytes)
            .ok_or_else(|| ApiError::Config(format!("volume size {size_bytes} overflows")))?;
        let body = CreateVolumeWire {
            size: units::gb_for_request(bytes),
            name,
            bootable: false,
            readonly: false,
            shareable: attrs.shareable,
            private: attrs.private,
            clonable: true,
            bus: &attrs.bus,
            alg: "no",
            format: &attrs.format,
            provider: attrs.provider.as_deref(),
        };
        let r = self.call(&routes::VOLUME_CREATE, &[], Some(&body)).await?;
        decode_one::<VolumeWire>(&routes::VOLUME_CREATE, &r, Some("volume"))?
            .normalise()
            .ok_or_else(|| ApiError::Decode {
                route: routes::VOLUME_CREATE.name,
                message: "created volume has no id".into(),
            })
    }

    pub async fn find_volume_by_name(&self, name: &str) -> Result<Option<Volume>, ApiError> {
        Ok(self
            .list_volumes()
            .await?
            .into_iter()
            .find(|v| v.name == name))
    }

    /// One volume. The body is either the volume or `{"volume": …}` (documented conflict).
    pub async fn volume_info(&self, id: &str) -> Result<Volume, ApiError> {
        let body = VolumeIdRequest { volume_id: id };
        let r = self.call(&routes::VOLUME_INFO, &[], Some(&body)).await?;
        decode_one::<VolumeWire>(&routes::VOLUME_INFO, &r, Some("volume"))?
            .normalise()
            .ok_or_else(|| ApiError::NotFound {
                route: routes::VOLUME_INFO.name,
                message: format!("volume {id} has no id in the answer"),
            })
    }

    /// Destroys a volume; `Ok(false)` when it was already gone.
    pub async fn destroy_volume(&self, id: &str) -> Result<bool, ApiError> {
        let body = VolumeIdRequest { volume_id: id };
        gone_is_ok(self.call(&routes::VOLUME_DESTROY, &[], Some(&body)).await)
    }

    /// A bootable volume from a cloud image URL (`/volume/cloudinit/create`) [K]; its id. Not
    /// retried on ambiguous failures: look the name up before calling again.
    pub async fn create_cloud_image(&self, req: &CloudImageRequest) -> Result<String, ApiError> {
        let r = self
            .call(&routes::VOLUME_CLOUDIMAGE_CREATE, &[], Some(req))
            .await?;
        volume_id_of(&routes::VOLUME_CLOUDIMAGE_CREATE, &r)
    }

    /// A cloud-init volume holding `user-data` and `meta-data` (`/volume/cloudinit/metadata`) [K]:
    /// the first upload names the volume (206 until every file is in), the second names its id.
    /// Nothing of the files is logged: user-data may carry a short-lived join token.
    pub async fn create_cloud_init_volume(
        &self,
        req: &CloudInitVolumeRequest,
        user_data: &[u8],
        meta_data: &[u8],
    ) -> Result<String, ApiError> {
        let route = &routes::VOLUME_CLOUDINIT_METADATA;
        let first = serde_json::to_vec(req)
            .map_err(|e| ApiError::Config(format!("{}: encoding request: {e}", route.name)))?;
        let r = self.upload(route, &first, "user-data", user_data).await?;
        let vid = volume_id_of(route, &r)?;
        let next = serde_json::to_vec(&serde_json::json!({ "vid": vid }))
            .map_err(|e| ApiError::Config(format!("{}: encoding request: {e}", route.name)))?;
        self.upload(route, &next, "meta-data", meta_data).await?;
        Ok(vid)
    }

    /// One multipart upload of `file` named `name`, the path segment the base64 of `meta`.
    async fn upload(
        &self,
        route: &Route,
        meta: &[u8],
        name: &str,
        file: &[u8],
    ) -> Result<Reply, ApiError> {
        let boundary = format!("elemento-{:016x}", fastrand::u64(..));
        let mut bytes = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        bytes.extend_from_slice(file);
        bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let body = RequestBody::Raw {
            content_type: format!("multipart/form-data; boundary={boundary}"),
            bytes,
        };
        let path = route.path_with(&[("meta", &crate::units::base64(meta))]);
        self.send(route, &path, &[], Some(&body)).await
    }

    /// Grows a volume to `size_bytes` rounded up to the step [I body]. Returns the new size.
    pub async fn resize_volume(&self, id: &str, size_bytes: u64) -> Result<u64, ApiError> {
        let bytes = units::round_up_to_step(size_bytes)
            .ok_or_else(|| ApiError::Config(format!("volume size {size_bytes} overflows")))?;
        let body = ResizeVolumeWire {
            volume_id: id,
            size: units::gb_for_request(bytes),
        };
        self.call(&routes::VOLUME_RESIZE, &[], Some(&body)).await?;
        Ok(bytes)
    }

    // ------------------------------------------------------------ network [K]

    pub async fn list_networks(&self) -> Result<Vec<Network>, ApiError> {
        let r = self.get(&routes::NETWORK_LIST).await?;
        Ok(decode_list::<NetworkWire>(&routes::NETWORK_LIST, &r)?
            .into_iter()
            .filter_map(NetworkWire::normalise)
            .collect())
    }

    pub async fn network_info(&self, id: &str) -> Result<Network, ApiError> {
        let body = NetworkInfoRequest { network_uid: id };
        let r = self.call(&routes::NETWORK_INFO, &[], Some(&body)).await?;
        decode_one::<NetworkWire>(&routes::NETWORK_INFO, &r, Some("network"))?
            .normalise()
            .ok_or_else(|| ApiError::NotFound {
                route: routes::NETWORK_INFO.name,
                message: format!("network {id}"),
            })
    }

    // ------------------------------------------------------------ load balancers [K pattern, I body]

    /// Asks whether a load balancer can be created now (capacity) [K route, M answer].
    pub async fn can_create_load_balancer(
        &self,
        spec: &LoadBalancerSpec,
    ) -> Result<CanCreate, ApiError> {
        let r = self
            .call(
                &routes::LB_CANCREATE,
                &[],
                Some(&LbCreateWire { req: spec }),
            )
            .await?;
        decode_one(&routes::LB_CANCREATE, &r, None)
    }

    /// Creates a load balancer and reads it back (the create answer carries only its id,
    /// `service_uuid`). Never retried on an ambiguous failure: callers look the (deterministic)
    /// name up first.
    pub async fn create_load_balancer(
        &self,
        spec: &LoadBalancerSpec,
    ) -> Result<LoadBalancer, ApiError> {
        let r = self
            .call(&routes::LB_CREATE, &[], Some(&LbCreateWire { req: spec }))
            .await?;
        let created: LbCreatedWire = decode_one(&routes::LB_CREATE, &r, None)?;
        let id = created
            .service_uuid
            .ok_or_else(|| decode_err(&routes::LB_CREATE, "the answer has no service_uuid"))?;
        // The known answer has billing fields and the id only [M]; should it carry the record
        // (address included), the read-back is saved.
        match decode_one::<LbRecordWire>(&routes::LB_CREATE, &r, None)
            .ok()
            .and_then(LbRecordWire::normalise)
            .filter(|lb| lb.id == id && lb.ip.is_some())
        {
            Some(lb) => Ok(lb),
            None => self.load_balancer(&id).await,
        }
    }

    /// One load balancer (`GET running/{uuid}`; there is no `info` route).
    pub async fn load_balancer(&self, id: &str) -> Result<LoadBalancer, ApiError> {
        let r = self
            .call_at::<()>(&routes::LB_GET, &[("uuid", id)], None)
            .await?;
        decode_one::<LbRecordWire>(&routes::LB_GET, &r, Some("service"))?
            .normalise()
            .ok_or_else(|| {
                decode_err(
                    &routes::LB_GET,
                    format!("{id} is not a load balancer record"),
                )
            })
    }

    /// All load balancers (NDJSON or a JSON array). Records that are not load balancers of our
    /// shape are skipped.
    pub async fn list_load_balancers(&self) -> Result<Vec<LoadBalancer>, ApiError> {
        let r = self.get(&routes::LB_RUNNING).await?;
        decode_list_with(
            &routes::LB_RUNNING,
            r.status,
            &r.body,
            LbRecordWire::normalise,
        )
    }

    /// Replaces listeners, targets and settings of a load balancer, keeping its address [I]: no
    /// Elemento source has this route. A 405/501, or a 404 for an LB that a read still finds,
    /// means the endpoint has no update (see [`ApiError::is_unsupported`] and the CCM's replace
    /// strategy).
    pub async fn update_load_balancer(
        &self,
        id: &str,
        spec: &LoadBalancerSpec,
    ) -> Result<LoadBalancer, ApiError> {
        let body = LbUpdateWire {
            service_uuid: id,
            req: spec,
        };
        let r = self.call(&routes::LB_UPDATE, &[], Some(&body)).await?;
        // The answer is read as the updated record when it is one (one call); otherwise the LB is
        // read back.
        match decode_one::<LbRecordWire>(&routes::LB_UPDATE, &r, Some("service"))
            .ok()
            .and_then(LbRecordWire::normalise)
            .filter(|lb| lb.id == id)
        {
            Some(lb) => Ok(lb),
            None => self.load_balancer(id).await,
        }
    }

    /// Deletes a load balancer; `Ok(false)` when it was already gone.
    pub async fn delete_load_balancer(&self, id: &str) -> Result<bool, ApiError> {
        gone_is_ok(
            self.call(
                &routes::LB_DELETE,
                &[],
                Some(&LbIdWire { service_uuid: id }),
            )
            .await,
        )
    }
}

fn encode<T: Serialize>(route: &Route, body: Option<&T>) -> Result<Option<RequestBody>, ApiError> {
    body.map(serde_json::to_value)
        .transpose()
        .map(|v| v.map(RequestBody::Json))
        .map_err(|e| ApiError::Config(format!("{}: encoding request: {e}", route.name)))
}

/// The Spec as `canallocate` and `marketprices` take it: without `info` and `volumes` [K].
fn placement_body(spec: &RegisterVmRequest) -> Value {
    let mut v = serde_json::to_value(spec).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.remove("info");
        m.remove("volumes");
    }
    v
}

/// The new volume's id from a create answer (`vid`, or `volumeID`).
fn volume_id_of(route: &Route, r: &Reply) -> Result<String, ApiError> {
    let v: Value = decode_one(route, r, None)?;
    v.get("vid")
        .or_else(|| v.get("volumeID"))
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| ApiError::Decode {
            route: route.name,
            message: "the answer names no volume id (vid)".into(),
        })
}

fn gone_is_ok(r: Result<Reply, ApiError>) -> Result<bool, ApiError> {
    match r {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// "8" for whole numbers, "1.125" otherwise.
fn format_gb(gb: f64) -> String {
    if gb.fract() == 0.0 {
        format!("{}", gb as u64)
    } else {
        format!("{gb}")
    }
}

fn decode_err(route: &Route, e: impl std::fmt::Display) -> ApiError {
    ApiError::Decode {
        route: route.name,
        message: e.to_string(),
    }
}

/// Decodes a list: 204 or an empty body is `[]` [K]; a JSON array; an object wrapping one array
/// (`{"vms": […]}`); or NDJSON, one object per line (services' `running` routes [M]). Items that
/// do not decode are skipped with a warning rather than failing the whole list.
pub(crate) fn decode_list_bytes<W: DeserializeOwned>(
    route: &Route,
    status: u16,
    body: &[u8],
) -> Result<Vec<W>, ApiError> {
    decode_list_with(route, status, body, Some)
}

/// [`decode_list_bytes`], turning each item into `T` as soon as it is decoded (`None` skips it):
/// NDJSON lines go straight from text to `W` to `T`, so a long listing (LBs with a target per
/// Node) never exists as a whole JSON tree.
pub(crate) fn decode_list_with<W: DeserializeOwned, T>(
    route: &Route,
    status: u16,
    body: &[u8],
    mut into: impl FnMut(W) -> Option<T>,
) -> Result<Vec<T>, ApiError> {
    if status == 204 || body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let (mut total, mut out) = (0usize, Vec::new());
    let finish = |total: usize, out: Vec<T>| {
        if out.len() < total {
            warn!(
                route = route.name,
                skipped = total - out.len(),
                "skipped list items that do not decode"
            );
        }
        Ok(out)
    };
    // A JSON array (the common answer): each item is decoded from its own text, so a long
    // listing never exists as one JSON tree next to its decoded form.
    if let Ok(raw) = serde_json::from_slice::<Vec<&serde_json::value::RawValue>>(body) {
        total = raw.len();
        for item in raw {
            if let Ok(w) = serde_json::from_str::<W>(item.get()) {
                out.extend(into(w));
            }
        }
        return finish(total, out);
    }
    let items: Vec<Value> = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(a)) => a,
        // `{"vms": […]}` wraps a list; any other object is one NDJSON line, a one-item list.
        Ok(Value::Object(o)) if is_list_wrapper(&o) => o
            .into_iter()
            .find_map(|(_, v)| match v {
                Value::Array(a) => Some(a),
                _ => None,
            })
            .unwrap_or_default(),
        Ok(one @ Value::Object(_)) => vec![one],
        Ok(Value::Null) => Vec::new(),
        Ok(other) => return Err(decode_err(route, format!("expected a list, got {other}"))),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                total += 1;
                match serde_json::from_str::<W>(line) {
                    Ok(w) => out.extend(into(w)),
                    // Valid JSON of another shape: skipped like a bad array item.
                    Err(e) if e.is_data() => {}
                    Err(e) => {
                        return Err(decode_err(route, format!("neither JSON nor NDJSON: {e}")));
                    }
                }
            }
            Vec::new()
        }
    };
    total += items.len();
    for v in items {
        if let Ok(w) = serde_json::from_value::<W>(v) {
            out.extend(into(w));
        }
    }
    finish(total, out)
}

/// A wrapper holds exactly one array and nothing structured besides (a record has nested objects
/// or several arrays).
fn is_list_wrapper(o: &serde_json::Map<String, Value>) -> bool {
    o.values().filter(|v| v.is_array()).count() == 1 && !o.values().any(Value::is_object)
}

fn decode_list<W: DeserializeOwned>(route: &Route, r: &Reply) -> Result<Vec<W>, ApiError> {
    decode_list_bytes(route, r.status, &r.body)
}

/// Decodes one object, unwrapping `{"<wrapper>": {…}}` when present.
fn decode_one<W: DeserializeOwned>(
    route: &Route,
    r: &Reply,
    wrapper: Option<&str>,
) -> Result<W, ApiError> {
    let mut v: Value = serde_json::from_slice(&r.body).map_err(|e| decode_err(route, e))?;
    if let (Some(key), Value::Object(o)) = (wrapper, &mut v)
        && let Some(inner @ Value::Object(_)) = o.remove(key)
    {
        v = inner;
    }
    serde_json::from_value(v).map_err(|e| decode_err(route, e))
}
