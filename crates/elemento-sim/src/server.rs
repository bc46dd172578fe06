//! HTTP layer: Elemento's routes (paths from `elemento_api::routes`), the `/_sim/` admin API, the
//! fault/accounting middleware and persistence.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use elemento_api::routes;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex as AsyncMutex;
use tracing::{info, warn};

use crate::faults::{Counters, FaultRule, Faults, Verdict};
use crate::hostdev::HostDevices;
use crate::scenario::VmSeed;
use crate::wire;
use crate::world::{SimError, World};

/// The running simulator's shared state.
pub struct Sim {
    pub world: AsyncMutex<World>,
    pub faults: Mutex<Faults>,
    pub counters: Mutex<Counters>,
    state_file: Option<PathBuf>,
    pub hostdev: Option<HostDevices>,
}

type Shared = Arc<Sim>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sim {
    pub fn new(world: World, state_file: Option<PathBuf>, hostdev: Option<HostDevices>) -> Self {
        Self {
            world: AsyncMutex::new(world),
            faults: Mutex::new(Faults::default()),
            counters: Mutex::new(Counters::default()),
            state_file,
            hostdev,
        }
    }

    /// Writes the whole world to the state file (write to a temp file, then rename).
    fn save(&self, w: &World) {
        let Some(path) = &self.state_file else { return };
        let tmp = path.with_extension("tmp");
        let result = serde_json::to_vec_pretty(w)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = result {
            warn!(path = %path.display(), error = %e, "could not persist simulator state");
        }
    }
}

impl IntoResponse for SimError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, self.body).into_response()
    }
}

type Answer = Result<Response, SimError>;

fn ok(v: Value) -> Answer {
    Ok(Json(v).into_response())
}

fn sim_err(status: u16, body: impl Into<String>) -> SimError {
    SimError {
        status,
        body: body.into(),
    }
}

// ---------------------------------------------------------------- auth

async fn login(State(s): State<Shared>, body: Bytes) -> Answer {
    let b: wire::Login = wire::decode(&body)?;
    let mut w = s.world.lock().await;
    let a = &w.scenario.auth;
    let good = b.username.as_deref() == Some(a.username.as_str())
        && b.password.as_deref() == Some(a.password.as_str())
        && (a.org.is_none() || b.org.as_deref() == a.org.as_deref());
    if !good {
        return Ok((
            StatusCode::UNAUTHORIZED,
            Json(json!({"authenticated": false})),
        )
            .into_response());
    }
    w.logged_in = true;
    s.save(&w);
    ok(json!({"authenticated": true}))
}

async fn auth_status(State(s): State<Shared>) -> Answer {
    let w = s.world.lock().await;
    let user = w.logged_in.then(|| w.scenario.auth.username.clone());
    ok(json!({"authenticated": w.logged_in, "username": user}))
}

async fn logout(State(s): State<Shared>) -> Answer {
    let mut w = s.world.lock().await;
    w.logged_in = !w.scenario.auth.require_login;
    s.save(&w);
    ok(json!({}))
}

// ---------------------------------------------------------------- compute

async fn vm_status(State(s): State<Shared>) -> Answer {
    ok(wire::vm_list(&*s.world.lock().await))
}

async fn vm_templates() -> Answer {
    ok(wire::templates())
}

async fn vm_register(State(s): State<Shared>, body: Bytes) -> Answer {
    let req: wire::Register = wire::decode(&body)?;
    let mut w = s.world.lock().await;
    let vm = w.register(&req)?;
    s.save(&w);
    ok(wire::vm(&w, &vm))
}

async fn vm_canallocate(State(s): State<Shared>, body: Bytes) -> Answer {
    let req: wire::Register = wire::decode(&body)?;
    let w = s.world.lock().await;
    let placements = w.placements(&req);
    if !placements.iter().any(|p| p.able) {
        // Non-2xx when nothing can take it [K].
        return Ok((StatusCode::NOT_FOUND, Json(wire::allocation(&placements))).into_response());
    }
    ok(wire::allocation(&placements))
}

async fn vm_marketprices(State(s): State<Shared>, body: Bytes) -> Answer {
    let req: wire::Register = wire::decode(&body)?;
    ok(wire::allocation(&s.world.lock().await.placements(&req)))
}

async fn vm_unregister(State(s): State<Shared>, body: Bytes) -> Answer {
    let vm: wire::VmRef = wire::decode(&body)?;
    let mut w = s.world.lock().await;
    remove_vm(&s, &mut w, &vm.vm_uid).await?;
    ok(json!({}))
}

async fn remove_vm(s: &Sim, w: &mut World, id: &str) -> Result<(), SimError> {
    let serials: Vec<(String, String)> = w
        .vms
        .get(id)
        .map(|vm| {
            vm.volumes
                .iter()
                .filter_map(|v| w.volumes.get(v))
                .map(|v| (v.id.clone(), w.guest_serial(v)))
                .collect()
        })
        .unwrap_or_default();
    let vm = w.remove_vm(id)?;
    if let (true, Some(h)) = (vm.this_host, &s.hostdev) {
        for (v, serial) in &serials {
            if let Err(e) = h.detach(serial).await {
                warn!(volume = %v, error = %e, "host device detach failed");
            }
        }
    }
    s.save(w);
    Ok(())
}

async fn vm_power(s: Shared, body: Bytes, power: &str) -> Answer {
    let vm: wire::VmRef = wire::decode(&body)?;
    let mut w = s.world.lock().await;
    w.set_power(&vm.vm_uid, power)?;
    s.save(&w);
    ok(json!({}))
}

async fn vm_start(State(s): State<Shared>, body: Bytes) -> Answer {
    vm_power(s, body, "running").await
}
async fn vm_stop(State(s): State<Shared>, body: Bytes) -> Answer {
    vm_power(s, body, "shut off").await
}
async fn vm_reboot(State(s): State<Shared>, body: Bytes) -> Answer {
    vm_power(s, body, "running").await
}

async fn vm_volume_attach(State(s): State<Shared>, body: Bytes) -> Answer {
    let req: wire::Attachment = wire::decode(&body)?;
    let mut w = s.world.lock().await;
    let (vol, vm, changed) = w.attach(&req)?;
    if let (true, true, Some(h)) = (changed, vm.this_host, &s.hostdev)
        && let Err(e) = h
            .attach(&vol.id, &w.guest_serial(&vol), vol.size_bytes)
            .await
    {
        // Undo, so the world never claims an attachment the host does not have.
        let _ = w.detach(&req);
        return Err(sim_err(500, format!("host device attach failed: {e}")));
    }
    s.save(&w);
    ok(wire::attach_answer(&w, &vm, &vol))
}

async fn vm_volume_detach(State(s): State<Shared>, body: Bytes) -> Answer {
    let req: wire::Attachment = wire::decode(&body)?;
    let mut w = s.world.lock().await;
    let (vol, vm) = w.detach(&req)?;
    if let (true, Some(h)) = (vm.this_host, &s.hostdev)
        && let Err(e) = h.detach(&w.guest_serial(&vol)).await
    {
        warn!(volume = %vol.id, error = %e, "host device detach failed");
    }
    s.save(&w);
    ok(json!({}))
}

// ---------------------------------------------------------------- storage

async fn volume_accessible(State(s): State<Shared>) -> Answer {
    let list = wire::volume_list(&*s.world.lock().await);
    if list.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response()); // [K] 204 when empty
    }
    ok(Value::Array(list))
}

async fn volume_cancreate(State(s): State<Shared>, body: Bytes) -> Answer {
    let req: wire::VolumeCanCreate = wire::decode(&body)?;
    let able = s.world.lock().await.can_create(&req)?;
    ok(wire::volume_can_create(able))
}

async fn volume_create(State(s): State<Shared>, body: Bytes) -> Answer {
    let req: wire::VolumeCreate = wire::decode(&body)?;
    let mut w = s.world.lock().await;
    let v = w.create_volume(&req)?;
    s.save(&w);
    ok(wire::volume_created(&w, &v))
}

async fn volume_info(State(s): State<Shared>, body: Bytes) -> Answer {
    let req: wire::VolumeRef = wire::decode(&body)?;
    let w = s.world.lock().await;
    ok(wire::volume_info(&w, w.volume(&req.volume_id)?))
}

async fn volume_destroy(State(s): State<Shared>, body: Bytes) -> Answer {
    let req: wire::VolumeRef = wire::decode(&body)?;
    let mut w = s.world.lock().await;
    let v = w.destroy_volume(&req.volume_id)?;
    if let Some(h) = &s.hostdev
        && let Err(e) = h.destroy(&v.id, &w.guest_serial(&v)).await
    {
        warn!(volume = %v.id, error = %e, "removing backing file failed");
    }
    s.save(&w);
    ok(json!({}))
}

async fn volume_resize(State(s): State<Shared>, body: Bytes) -> Answer {
    let req: wire::VolumeResize = wire::decode(&body)?;
    let mut w = s.world.lock().await;
    let (v, old) = w.resize_volume(&req)?;
    if let (Some(h), true) = (&s.hostdev, v.size_bytes > old) {
        let on_host = v
            .attached_to
            .iter()
            .any(|vm| w.vms.get(vm).is_some_and(|x| x.this_host));
        if on_host && let Err(e) = h.resize(&v.id, &w.guest_serial(&v), v.size_bytes).await {
            return Err(sim_err(500, format!("host device resize failed: {e}")));
        }
    }
    s.save(&w);
    ok(wire::volume(&w, &v))
}

async fn volume_cloud_image(State(s): State<Shared>, body: Bytes) -> Answer {
    let req: wire::CloudImage = wire::decode(&body)?;
    let mut w = s.world.lock().await;
    let v = w.create_cloud_image(&req)?;
    s.save(&w);
    ok(wire::volume_created(&w, &v))
}

async fn volume_cloud_init(
    State(s): State<Shared>,
    Path(meta): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let meta = wire::cloud_init_meta(&meta)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (name, content) = wire::multipart_file(content_type, &body)?;
    let mut w = s.world.lock().await;
    let (v, complete) = w.cloud_init_upload(&meta, &name, content)?;
    s.save(&w);
    let status = if complete {
        StatusCode::OK
    } else {
        StatusCode::PARTIAL_CONTENT
    };
    Ok((status, Json(wire::cloud_init_answer(&v))).into_response())
}

// ---------------------------------------------------------------- network

async fn network_list(State(s): State<Shared>) -> Answer {
    let w = s.world.lock().await;
    ok(Value::Array(
        w.networks.values().map(wire::network).collect(),
    ))
}

async fn network_info(State(s): State<Shared>, body: Bytes) -> Answer {
    let req: wire::NetworkRef = wire::decode(&body)?;
    ok(wire::network(
        s.world.lock().await.network(&req.network_uid)?,
    ))
}

// ---------------------------------------------------------------- load balancers [K pattern, I body]

async fn lb_cancreate(State(s): State<Shared>, body: Bytes) -> Answer {
    let req: wire::LbEnvelope = wire::decode(&body)?;
    let able = s.world.lock().await.lb_can_create(&req.req)?;
    ok(wire::lb_can_create(able))
}

async fn lb_create(State(s): State<Shared>, body: Bytes) -> Answer {
    let req: wire::LbEnvelope = wire::decode(&body)?;
    let mut w = s.world.lock().await;
    let lb = w.create_lb(req.req)?;
    s.save(&w);
    ok(wire::lb_created(&lb))
}

async fn lb_get(State(s): State<Shared>, Path(id): Path<String>) -> Answer {
    let w = s.world.lock().await;
    ok(wire::lb_record(w.lb(&id)?))
}

/// NDJSON, one record per line, as the services' `running` routes answer [M].
async fn lb_running(State(s): State<Shared>) -> Result<Response, SimError> {
    let w = s.world.lock().await;
    let mut text = String::new();
    for lb in w.lbs.values() {
        text.push_str(&wire::lb_record(lb).to_string());
        text.push('\n');
    }
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], text).into_response())
}

async fn lb_update(State(s): State<Shared>, body: Bytes) -> Answer {
    let mut w = s.world.lock().await;
    if !w.scenario.wire.lb_update {
        return Err(sim_err(404, "Not Found"));
    }
    let req: wire::LbUpdate = wire::decode(&body)?;
    let lb = w.update_lb(&req.service_uuid, req.req)?;
    s.save(&w);
    ok(wire::lb_record(&lb))
}

async fn lb_delete(State(s): State<Shared>, body: Bytes) -> Answer {
    let req: wire::LbRef = wire::decode(&body)?;
    let mut w = s.world.lock().await;
    w.delete_lb(&req.service_uuid)?;
    s.save(&w);
    ok(json!({}))
}

// ---------------------------------------------------------------- admin API (/_sim/)

async fn admin_state(State(s): State<Shared>) -> Answer {
    let w = s.world.lock().await;
    ok(json!({
        "logged_in": w.logged_in,
        "vms": w.vms.values().collect::<Vec<_>>(),
        "volumes": w.volumes.values().collect::<Vec<_>>(),
        "networks": w.networks.values().collect::<Vec<_>>(),
        "load_balancers": w.lbs.values().collect::<Vec<_>>(),
    }))
}

/// An LB deleted outside Kubernetes (as from Elemento's console), without the client API.
async fn admin_delete_lb(State(s): State<Shared>, Path(id): Path<String>) -> Answer {
    let mut w = s.world.lock().await;
    w.delete_lb(&id)?;
    s.save(&w);
    ok(json!({}))
}

async fn admin_create_vm(State(s): State<Shared>, body: Bytes) -> Answer {
    let seed: VmSeed =
        serde_json::from_slice(&body).map_err(|e| sim_err(400, format!("invalid VM: {e}")))?;
    let mut w = s.world.lock().await;
    let vm = w.add_vm(&seed)?;
    s.save(&w);
    ok(serde_json::to_value(vm).unwrap_or_default())
}

async fn admin_delete_vm(State(s): State<Shared>, Path(id): Path<String>) -> Answer {
    let mut w = s.world.lock().await;
    remove_vm(&s, &mut w, &id).await?;
    ok(json!({}))
}

#[derive(Deserialize)]
struct PowerBody {
    power: String,
}

async fn admin_power(
    State(s): State<Shared>,
    Path(id): Path<String>,
    Json(p): Json<PowerBody>,
) -> Answer {
    let mut w = s.world.lock().await;
    w.set_power(&id, &p.power)?;
    s.save(&w);
    ok(json!({}))
}

async fn admin_set_fault(
    State(s): State<Shared>,
    Path(route): Path<String>,
    Json(rule): Json<FaultRule>,
) -> Answer {
    if !(0.0..=1.0).contains(&rule.error_rate) || !(0.0..=1.0).contains(&rule.drop_rate) {
        return Err(sim_err(
            400,
            "error_rate and drop_rate must be within [0, 1]",
        ));
    }
    lock(&s.faults).set(&route, rule);
    ok(json!({}))
}

async fn admin_faults(State(s): State<Shared>) -> Answer {
    ok(serde_json::to_value(lock(&s.faults).rules()).unwrap_or_default())
}

async fn admin_clear_faults(State(s): State<Shared>) -> Answer {
    lock(&s.faults).clear();
    ok(json!({}))
}

async fn admin_counters(State(s): State<Shared>) -> Answer {
    ok(serde_json::to_value(&lock(&s.counters).by_route).unwrap_or_default())
}

async fn admin_reset_counters(State(s): State<Shared>) -> Answer {
    lock(&s.counters).reset();
    ok(json!({}))
}

#[derive(Deserialize)]
struct SinceQuery {
    since: Option<u64>,
}

async fn admin_calls(State(s): State<Shared>, Query(q): Query<SinceQuery>) -> Answer {
    let since = q.since.unwrap_or(0);
    let c = lock(&s.counters);
    let calls: Vec<_> = c.log.iter().filter(|r| r.seq > since).collect();
    ok(serde_json::to_value(calls).unwrap_or_default())
}

#[derive(Deserialize)]
struct PasswordBody {
    password: String,
}

/// Rotates the account's password (and forgets the login), as an operator would.
async fn admin_set_password(State(s): State<Shared>, Json(b): Json<PasswordBody>) -> Answer {
    let mut w = s.world.lock().await;
    w.scenario.auth.password = b.password;
    w.logged_in = !w.scenario.auth.require_login;
    s.save(&w);
    ok(json!({}))
}

async fn admin_expire_session(State(s): State<Shared>) -> Answer {
    let mut w = s.world.lock().await;
    w.logged_in = false;
    ok(json!({}))
}

// ---------------------------------------------------------------- middleware

/// Maps a request to its route name; `None` for the admin API and unknown paths.
fn route_name(method: &Method, path: &str) -> Option<&'static str> {
    routes::ALL
        .iter()
        .find(|r| r.matches(method, path))
        .map(|r| r.name)
}

/// Login check, fault injection, accounting. Admin routes pass straight through.
async fn elemento_layer(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path.starts_with("/_sim/") {
        return next.run(req).await;
    }
    let name = route_name(req.method(), &path).unwrap_or("unknown");
    let client = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    lock(&s.counters).arrive(name);
    let verdict = lock(&s.faults).verdict(name);
    let (delay, injected) = match &verdict {
        Verdict::Serve { delay, drop } => (*delay, *drop),
        Verdict::Fail { delay, .. } => (*delay, true),
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let response = match verdict {
        Verdict::Fail {
            status,
            retry_after,
            ..
        } => injected_error(status, retry_after),
        Verdict::Serve { drop, .. } => {
            let response = match authorised(&s, req.headers(), name).await {
                true => next.run(req).await,
                false => (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({"error": "unauthorized", "message": "No active session"})),
                )
                    .into_response(),
            };
            if drop { dropped(response) } else { response }
        }
    };
    lock(&s.counters).record(name, &client, response.status().as_u16(), injected);
    response
}

async fn authorised(s: &Sim, headers: &HeaderMap, route: &str) -> bool {
    if route.starts_with("auth.") {
        return true;
    }
    let w = s.world.lock().await;
    if w.logged_in || !w.scenario.auth.require_login {
        return true;
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    matches!((bearer, &w.scenario.auth.token), (Some(b), Some(t)) if b == t)
}

fn injected_error(status: u16, retry_after: Option<u64>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut r = (code, format!("injected fault: HTTP {status}")).into_response();
    if let Some(secs) = retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

/// The operation happened, but the answer breaks off: the body stream fails after the headers.
fn dropped(r: Response) -> Response {
    let (mut parts, _) = r.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let stream = futures_util::stream::iter([
        Ok(Bytes::from_static(b"{")),
        Err(std::io::Error::other("injected: connection dropped")),
    ]);
    Response::from_parts(parts, Body::from_stream(stream))
}

pub fn router(sim: Shared) -> Router {
    use routes::*;
    Router::new()
        .route(AUTH_LOGIN.path, post(login))
        .route(AUTH_STATUS.path, get(auth_status))
        .route(AUTH_LOGOUT.path, post(logout))
        .route(VM_STATUS.path, get(vm_status))
        .route(VM_TEMPLATES.path, get(vm_templates))
        .route(VM_CANALLOCATE.path, post(vm_canallocate))
        .route(VM_MARKETPRICES.path, post(vm_marketprices))
        .route(VM_REGISTER.path, post(vm_register))
        .route(VM_UNREGISTER.path, post(vm_unregister))
        .route(VM_START.path, post(vm_start))
        .route(VM_STOP.path, post(vm_stop))
        .route(VM_REBOOT.path, post(vm_reboot))
        .route(VM_VOLUME_ATTACH.path, post(vm_volume_attach))
        .route(VM_VOLUME_DETACH.path, post(vm_volume_detach))
        .route(VOLUME_ACCESSIBLE.path, get(volume_accessible))
        .route(VOLUME_CANCREATE.path, post(volume_cancreate))
        .route(VOLUME_CREATE.path, post(volume_create))
        .route(VOLUME_INFO.path, post(volume_info))
        .route(VOLUME_DESTROY.path, post(volume_destroy))
        .route(VOLUME_RESIZE.path, post(volume_resize))
        .route(VOLUME_CLOUDIMAGE_CREATE.path, post(volume_cloud_image))
        .route(VOLUME_CLOUDINIT_METADATA.path, post(volume_cloud_init))
        .route(NETWORK_LIST.path, get(network_list))
        .route(NETWORK_INFO.path, post(network_info))
        .route(LB_CANCREATE.path, post(lb_cancreate))
        .route(LB_CREATE.path, post(lb_create))
        .route(LB_GET.path, get(lb_get))
        .route(LB_RUNNING.path, get(lb_running))
        .route(LB_UPDATE.path, post(lb_update))
        .route(LB_DELETE.path, delete(lb_delete))
        .route("/_sim/state", get(admin_state))
        .route("/_sim/vms", post(admin_create_vm))
        .route("/_sim/vms/{id}", delete(admin_delete_vm))
        .route("/_sim/load-balancers/{id}", delete(admin_delete_lb))
        .route("/_sim/vms/{id}/power", post(admin_power))
        .route("/_sim/faults", get(admin_faults).delete(admin_clear_faults))
        .route("/_sim/faults/{route}", put(admin_set_fault))
        .route(
            "/_sim/counters",
            get(admin_counters).delete(admin_reset_counters),
        )
        .route("/_sim/calls", get(admin_calls))
        .route("/_sim/session/expire", post(admin_expire_session))
        .route("/_sim/auth/password", put(admin_set_password))
        .route("/", get(|| async { "This is an Elemento Simulator!" }))
        .layer(middleware::from_fn_with_state(sim.clone(), elemento_layer))
        .with_state(sim)
}

/// Options for [`start`].
#[derive(Debug, Clone, Default)]
pub struct SimOptions {
    pub scenario: crate::scenario::Scenario,
    /// Persist here after every change; load from here at start when it exists.
    pub state_file: Option<PathBuf>,
    pub host_devices: Option<PathBuf>,
    /// Where host-device mode puts its by-id links (default `<host_devices>/disk/by-id`).
    pub host_device_links: Option<PathBuf>,
    /// Every listener serves every route. Empty: one ephemeral port on 127.0.0.1.
    pub listen: Vec<SocketAddr>,
    /// Seed for fault injection (reproducible runs).
    pub fault_seed: Option<u64>,
}

/// A running simulator.
pub struct SimHandle {
    pub addrs: Vec<SocketAddr>,
    pub sim: Shared,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SimHandle {
    /// Base URL of the first listener.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addrs[0])
    }

    /// Stops the listeners and detaches every host loop device.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        if let Some(h) = &self.sim.hostdev {
            for e in h.detach_all().await {
                warn!(error = %e, "loop device cleanup");
            }
        }
    }
}

pub async fn start(opts: SimOptions) -> anyhow::Result<SimHandle> {
    let world = match &opts.state_file {
        Some(p) if p.exists() => {
            info!(path = %p.display(), "restoring simulator state");
            serde_json::from_slice(&std::fs::read(p)?)
                .map_err(|e| anyhow::anyhow!("state file {}: {e}", p.display()))?
        }
        _ => World::from_scenario(opts.scenario.clone())?,
    };
    let hostdev = opts
        .host_devices
        .as_deref()
        .map(|root| HostDevices::new(root, opts.host_device_links.as_deref()))
        .transpose()?;
    if let Some(h) = &hostdev {
        // Links left by a crash point at stale loop devices: drop them, then re-create what the
        // (restored) world says is attached to this host.
        for e in h.detach_all().await {
            warn!(error = %e, "stale loop device cleanup");
        }
        for vm in world.vms.values().filter(|v| v.this_host) {
            for vid in &vm.volumes {
                if let Some(v) = world.volumes.get(vid) {
                    h.attach(vid, &world.guest_serial(v), v.size_bytes)
                        .await
                        .map_err(anyhow::Error::msg)?;
                }
            }
        }
    }
    let sim = Arc::new(Sim::new(world, opts.state_file.clone(), hostdev));
    if let Some(seed) = opts.fault_seed {
        lock(&sim.faults).seed(seed);
    }
    {
        let w = sim.world.lock().await;
        sim.save(&w);
    }
    let listen = if opts.listen.is_empty() {
        vec![SocketAddr::from(([127, 0, 0, 1], 0))]
    } else {
        opts.listen.clone()
    };
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut addrs = vec![];
    let mut tasks = vec![];
    for addr in listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("listen on {addr}: {e}"))?;
        addrs.push(listener.local_addr()?);
        let app = router(sim.clone());
        let mut rx = rx.clone();
        tasks.push(tokio::spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|v| *v).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
            {
                warn!(error = %e, "simulator listener stopped");
            }
        }));
    }
    Ok(SimHandle {
        addrs,
        sim,
        shutdown: tx,
        tasks,
    })
}
