//! Errors a caller can act on. Every variant names the route, so a log line says which call failed.

use std::time::Duration;

/// An Elemento API call failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ApiError {
    #[error("{route}: not found: {message}")]
    NotFound {
        route: &'static str,
        message: String,
    },
    /// A licence, organisation or capacity limit (the daemons answer 404 on register [K], or a
    /// storage exception such as `[VolumeNotAllocable]`).
    #[error("{route}: limit reached: {message}")]
    LimitReached {
        route: &'static str,
        message: String,
    },
    #[error("{route}: rejected by the Elemento API (HTTP {status}): {message}")]
    BadRequest {
        route: &'static str,
        status: u16,
        message: String,
    },
    #[error("{route}: not authenticated to the Elemento API: {message}")]
    Unauthorized {
        route: &'static str,
        message: String,
    },
    #[error("{route}: rate limited by the Elemento API (retry after {retry_after:?})")]
    RateLimited {
        route: &'static str,
        retry_after: Option<Duration>,
    },
    #[error("{route}: Elemento API unavailable: {message}")]
    Unavailable {
        route: &'static str,
        message: String,
    },
    #[error("{route}: no answer within {timeout:?}")]
    Timeout {
        route: &'static str,
        timeout: Duration,
    },
    #[error("{route}: unexpected response from the Elemento API: {message}")]
    Decode {
        route: &'static str,
        message: String,
    },
    #[error("invalid Elemento API configuration: {0}")]
    Config(String),
}

impl ApiError {
    /// Worth retrying later (the same request may succeed).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ApiError::RateLimited { .. } | ApiError::Unavailable { .. } | ApiError::Timeout { .. }
        )
    }

    /// A licence, organisation or capacity limit: another provider or group may still have room.
    pub fn is_limit(&self) -> bool {
        matches!(self, ApiError::LimitReached { .. })
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, ApiError::NotFound { .. })
    }

    /// The endpoint has no such route (405 Method Not Allowed, 501 Not Implemented). A 404 is
    /// ambiguous (the object or the route may be missing) and is not counted here.
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self,
            ApiError::BadRequest {
                status: 405 | 501,
                ..
            }
        )
    }

    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } => "not_found",
            ApiError::LimitReached { .. } => "limit_reached",
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::Timeout { .. } => "timeout",
            ApiError::Decode { .. } => "decode",
            ApiError::Config(_) => "config",
        }
    }
}

/// Longest server message kept in an error; bodies can be whole HTML pages.
const MAX_MESSAGE: usize = 300;

pub(crate) fn clip(body: &str) -> String {
    let body = body.trim();
    if body.len() <= MAX_MESSAGE {
        return body.to_string();
    }
    let mut end = MAX_MESSAGE;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &body[..end])
}

/// Storage exceptions arrive as `"[VolumeNotAllocable] message"` strings [K].
pub(crate) fn storage_exception(body: &str) -> Option<&str> {
    let rest = body.trim().trim_matches('"').strip_prefix('[')?;
    rest.split_once(']').map(|(name, _)| name)
}

/// Maps a non-2xx answer to an error. `limit_on_404` is set for routes where Elemento answers 404
/// for a licence/organisation limit (register [K]).
pub(crate) fn from_status(
    route: &'static str,
    status: u16,
    body: &str,
    limit_on_404: bool,
    retry_after: Option<Duration>,
) -> ApiError {
    let message = clip(body);
    match storage_exception(body) {
        Some("VolumeNotAllocable" | "StorageFull" | "QuotaExceeded" | "TooManyVolumes") => {
            return ApiError::LimitReached { route, message };
        }
        Some("VolumeNotFound") => return ApiError::NotFound { route, message },
        _ => {}
    }
    match status {
        401 | 403 => ApiError::Unauthorized { route, message },
        404 if limit_on_404 => ApiError::LimitReached { route, message },
        404 | 410 => ApiError::NotFound { route, message },
        429 => ApiError::RateLimited { route, retry_after },
        501 => ApiError::BadRequest {
            route,
            status,
            message,
        },
        500..=599 => ApiError::Unavailable {
            route,
            message: format!("HTTP {status}: {message}"),
        },
        _ => ApiError::BadRequest {
            route,
            status,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_statuses_and_storage_exceptions() {
        assert!(matches!(
            from_status("r", 404, "", false, None),
            ApiError::NotFound { .. }
        ));
        assert!(matches!(
            from_status("r", 404, "", true, None),
            ApiError::LimitReached { .. }
        ));
        assert!(matches!(
            from_status("r", 401, "", false, None),
            ApiError::Unauthorized { .. }
        ));
        assert!(matches!(
            from_status("r", 503, "", false, None),
            ApiError::Unavailable { .. }
        ));
        assert!(matches!(
            from_status("r", 500, "[VolumeNotAllocable] no space", false, None),
            ApiError::LimitReached { .. }
        ));
        assert_eq!(
            from_status("r", 400, "[VolumeDimensionNotShrinkable] no", false, None),
            ApiError::BadRequest {
                route: "r",
                status: 400,
                message: "[VolumeDimensionNotShrinkable] no".into()
            }
        );
        let e = from_status("r", 429, "", false, Some(Duration::from_secs(2)));
        assert!(e.is_transient());
    }

    #[test]
    fn clips_long_bodies_on_char_boundaries() {
        let long = "é".repeat(400);
        let c = clip(&long);
        assert!(c.len() <= MAX_MESSAGE + '…'.len_utf8());
        assert!(c.ends_with('…'));
    }
}
