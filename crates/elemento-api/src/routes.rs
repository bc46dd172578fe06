//! Every Elemento API route the project calls, with the evidence behind it.
//!
//! This is the one place where paths live. Anything tagged other than [`Evidence::Known`] is a
//! guess about Elemento's API and is mirrored in `docs/meson-api.md`; when Elemento confirms the
//! real shape, correct it here (and in the matching body type in `types.rs`).

use http::Method;

/// Which local daemon (or Meson service) serves a route; each has its own base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Auth,
    Compute,
    Storage,
    Network,
    Services,
}

impl Service {
    pub const ALL: [Service; 5] = [
        Service::Auth,
        Service::Compute,
        Service::Storage,
        Service::Network,
        Service::Services,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Service::Auth => "auth",
            Service::Compute => "compute",
            Service::Storage => "storage",
            Service::Network => "network",
            Service::Services => "services",
        }
    }

    /// Default local daemon port (`networking.json` in elemento-common-definitions).
    pub fn default_port(self) -> u16 {
        match self {
            Service::Auth => 47777,
            Service::Compute => 17777,
            Service::Storage => 27777,
            Service::Network => 37777,
            Service::Services => 6777,
        }
    }
}

/// How much we know about a route's shape (see `../shared/reference/elemento-api.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// [K] seen in Elemento's own client or server code.
    Known,
    /// [K] the route name is known, its request/response bodies are inferred.
    KnownRouteInferredBody,
    /// [I] inferred: neither the route nor the body is confirmed.
    Inferred,
}

impl Evidence {
    pub fn tag(self) -> &'static str {
        match self {
            Evidence::Known => "[K]",
            Evidence::KnownRouteInferredBody => "[K route, I body]",
            Evidence::Inferred => "[I]",
        }
    }
}

/// One API route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Stable short name, used as the metrics label and in the simulator's counters.
    pub name: &'static str,
    pub service: Service,
    pub method: Method,
    pub path: &'static str,
    pub evidence: Evidence,
    /// Safe to resend after a timeout or a 5xx: repeating it cannot create anything twice.
    pub idempotent: bool,
}

macro_rules! routes {
    ($( $ident:ident = $name:literal, $svc:ident, $method:ident, $path:literal, $ev:ident, $idem:literal; )*) => {
        $( pub const $ident: Route = Route {
            name: $name, service: Service::$svc, method: Method::$method, path: $path,
            evidence: Evidence::$ev, idempotent: $idem,
        }; )*
        /// All routes, in documentation order.
        pub const ALL: &[Route] = &[$($ident),*];
    };
}

routes! {
    AUTH_LOGIN = "auth.login", Auth, POST, "/api/v1/authenticate/login", Known, true;
    AUTH_STATUS = "auth.status", Auth, GET, "/api/v1/authenticate/status", Known, true;
    AUTH_LOGOUT = "auth.logout", Auth, POST, "/api/v1/authenticate/logout", Known, true;

    VM_STATUS = "vm.status", Compute, GET, "/api/v1.0/client/vm/status", Known, true;
    VM_TEMPLATES = "vm.templates", Compute, GET, "/api/v1.0/client/vm/templates", Known, true;
    VM_REGISTER = "vm.register", Compute, POST, "/api/v1.0/client/vm/register", Known, false;
    VM_UNREGISTER = "vm.unregister", Compute, POST, "/api/v1.0/client/vm/unregister", Known, true;
    VM_START = "vm.start", Compute, POST, "/api/v1.0/client/vm/start", Known, true;
    VM_STOP = "vm.stop", Compute, POST, "/api/v1.0/client/vm/stop", Known, true;
    VM_REBOOT = "vm.reboot", Compute, POST, "/api/v1.0/client/vm/reboot", Known, false;
    VM_VOLUME_ATTACH = "vm.volume.attach", Compute, POST, "/api/v1.0/client/vm/volume/attach", KnownRouteInferredBody, true;
    VM_VOLUME_DETACH = "vm.volume.detach", Compute, POST, "/api/v1.0/client/vm/volume/detach", KnownRouteInferredBody, true;

    VOLUME_ACCESSIBLE = "volume.accessible", Storage, GET, "/api/v1.0/client/volume/accessible", Known, true;
    VOLUME_CANCREATE = "volume.cancreate", Storage, POST, "/api/v1.0/client/volume/cancreate", Known, true;
    VOLUME_CREATE = "volume.create", Storage, POST, "/api/v1.0/client/volume/create", Known, false;
    VOLUME_INFO = "volume.info", Storage, POST, "/api/v1.0/client/volume/info", Known, true;
    VOLUME_DESTROY = "volume.destroy", Storage, POST, "/api/v1.0/client/volume/destroy", Known, true;
    VOLUME_RESIZE = "volume.resize", Storage, POST, "/api/v1.0/client/volume/update/resize", KnownRouteInferredBody, true;

    NETWORK_LIST = "network.list", Network, GET, "/api/v1.0/client/network/list", Known, true;
    NETWORK_INFO = "network.info", Network, POST, "/api/v1.0/client/network/info", Known, true;

    LB_CREATE = "loadbalancer.create", Services, POST, "/api/v1.0/loadbalancer/create", KnownRouteInferredBody, false;
    LB_INFO = "loadbalancer.info", Services, GET, "/api/v1.0/loadbalancer/info", KnownRouteInferredBody, true;
    LB_RUNNING = "loadbalancer.running", Services, GET, "/api/v1.0/loadbalancer/running", KnownRouteInferredBody, true;
    LB_UPDATE = "loadbalancer.update", Services, PUT, "/api/v1.0/loadbalancer/update", Inferred, true;
    LB_DELETE = "loadbalancer.delete", Services, DELETE, "/api/v1.0/loadbalancer/delete", KnownRouteInferredBody, true;
}
