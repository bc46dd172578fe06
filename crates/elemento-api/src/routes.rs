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
    /// [K pattern, I body] a generic route is known (`/client/service/{service}/…` routes every
    /// PaaS service by name, §8.1 of the reference); that our service is one of its values and
    /// the fields of its body are inferred.
    KnownPatternInferredBody,
    /// [I] inferred: neither the route nor the body is confirmed.
    Inferred,
}

impl Evidence {
    pub fn tag(self) -> &'static str {
        match self {
            Evidence::Known => "[K]",
            Evidence::KnownRouteInferredBody => "[K route, I body]",
            Evidence::KnownPatternInferredBody => "[K pattern, I body]",
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
    VM_CANALLOCATE = "vm.canallocate", Compute, POST, "/api/v1.0/client/vm/canallocate", Known, true;
    VM_MARKETPRICES = "vm.marketprices", Compute, POST, "/api/v1.0/client/vm/marketprices", Known, true;
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
    VOLUME_CLOUDIMAGE_CREATE = "volume.cloudinit.create", Storage, POST, "/api/v1.0/client/volume/cloudinit/create", Known, false;
    VOLUME_CLOUDINIT_METADATA = "volume.cloudinit.metadata", Storage, POST, "/api/v1.0/client/volume/cloudinit/metadata/{meta}", Known, false;

    NETWORK_LIST = "network.list", Network, GET, "/api/v1.0/client/network/list", Known, true;
    NETWORK_INFO = "network.info", Network, POST, "/api/v1.0/client/network/info", Known, true;

    // Load balancers as one PaaS service of the generic services envelope (§8.1): `loadbalancer`
    // as `{service}` is inferred, so is everything inside `req`. There is no update route in any
    // Elemento source: ours is probed and, when absent, the CCM replaces instead (docs/ccm.md).
    LB_CANCREATE = "loadbalancer.cancreate", Services, POST, "/api/v1.0/client/service/loadbalancer/cancreate", KnownPatternInferredBody, true;
    LB_CREATE = "loadbalancer.create", Services, POST, "/api/v1.0/client/service/loadbalancer/create", KnownPatternInferredBody, false;
    LB_RUNNING = "loadbalancer.running", Services, GET, "/api/v1.0/client/service/loadbalancer/running", KnownPatternInferredBody, true;
    LB_GET = "loadbalancer.get", Services, GET, "/api/v1.0/client/service/loadbalancer/running/{uuid}", KnownPatternInferredBody, true;
    LB_UPDATE = "loadbalancer.update", Services, POST, "/api/v1.0/client/service/loadbalancer/update", Inferred, true;
    LB_DELETE = "loadbalancer.delete", Services, DELETE, "/api/v1.0/client/service/loadbalancer/delete", KnownPatternInferredBody, true;
}

impl Route {
    /// The path with its `{param}` segments filled from `args` (percent-encoded).
    pub fn path_with(&self, args: &[(&str, &str)]) -> String {
        self.path
            .split('/')
            .map(
                |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(param) => args
                        .iter()
                        .find(|(k, _)| *k == param)
                        .map(|(_, v)| percent_encode(v))
                        .unwrap_or_default(),
                    None => seg.to_string(),
                },
            )
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Whether a request path is this route (`{param}` segments match any one segment).
    pub fn matches(&self, method: &Method, path: &str) -> bool {
        if self.method != *method {
            return false;
        }
        let (mut want, mut got) = (self.path.split('/'), path.split('/'));
        loop {
            match (want.next(), got.next()) {
                (None, None) => return true,
                (Some(w), Some(g)) if w.starts_with('{') && !g.is_empty() => {}
                (Some(w), Some(g)) if w == g => {}
                _ => return false,
            }
        }
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986), for one path segment.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_parameters_are_filled_and_matched() {
        assert_eq!(
            LB_GET.path_with(&[("uuid", "a b/c")]),
            "/api/v1.0/client/service/loadbalancer/running/a%20b%2Fc"
        );
        assert!(LB_GET.matches(
            &Method::GET,
            "/api/v1.0/client/service/loadbalancer/running/x1"
        ));
        assert!(!LB_GET.matches(
            &Method::GET,
            "/api/v1.0/client/service/loadbalancer/running/"
        ));
        assert!(!LB_GET.matches(
            &Method::GET,
            "/api/v1.0/client/service/loadbalancer/running"
        ));
        assert!(!LB_GET.matches(
            &Method::POST,
            "/api/v1.0/client/service/loadbalancer/running/x1"
        ));
        assert!(LB_RUNNING.matches(&Method::GET, LB_RUNNING.path));
        // Every route is told apart from every other.
        for a in ALL {
            let concrete = a.path_with(&[("uuid", "u-1"), ("meta", "e30=")]);
            let hits: Vec<_> = ALL
                .iter()
                .filter(|r| r.matches(&a.method, &concrete))
                .collect();
            assert_eq!(hits.len(), 1, "{}: {hits:?}", a.name);
        }
    }
}
