//! One error type for every CSI operation, mapped to a gRPC code in exactly one place.

use elemento_api::ApiError;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum CsiError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    OutOfRange(String),
    #[error("{0}")]
    ResourceExhausted(String),
    /// Another operation on the same volume is in flight.
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    Unimplemented(String),
    /// A dependency (the Kubernetes API) cannot be reached now; the caller retries.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A host command failed; stderr is kept for the message.
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl CsiError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        CsiError::Io {
            context: context.into(),
            source,
        }
    }

    pub fn code(&self) -> Code {
        match self {
            CsiError::InvalidArgument(_) => Code::InvalidArgument,
            CsiError::NotFound(_) => Code::NotFound,
            CsiError::AlreadyExists(_) => Code::AlreadyExists,
            CsiError::FailedPrecondition(_) => Code::FailedPrecondition,
            CsiError::OutOfRange(_) => Code::OutOfRange,
            CsiError::ResourceExhausted(_) => Code::ResourceExhausted,
            CsiError::Aborted(_) => Code::Aborted,
            CsiError::Unavailable(_) => Code::Unavailable,
            CsiError::Unimplemented(_) => Code::Unimplemented,
            CsiError::Internal(_) | CsiError::Command { .. } => Code::Internal,
            CsiError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Code::NotFound
            }
            CsiError::Io { .. } => Code::Internal,
            CsiError::Api(e) => match e {
                ApiError::NotFound { .. } => Code::NotFound,
                ApiError::LimitReached { .. } => Code::ResourceExhausted,
                // 409: attached elsewhere, in use: the caller must change something first.
                ApiError::BadRequest { status: 409, .. } => Code::FailedPrecondition,
                ApiError::BadRequest { .. } => Code::InvalidArgument,
                ApiError::Unauthorized { .. } => Code::Unauthenticated,
                ApiError::RateLimited { .. } | ApiError::Unavailable { .. } => Code::Unavailable,
                ApiError::Timeout { .. } => Code::DeadlineExceeded,
                ApiError::Decode { .. } | ApiError::Config(_) => Code::Internal,
            },
        }
    }
}

impl From<CsiError> for Status {
    fn from(e: CsiError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, CsiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let api = |e| CsiError::Api(e).code();
        assert_eq!(
            api(ApiError::NotFound {
                route: "r",
                message: String::new()
            }),
            Code::NotFound
        );
        assert_eq!(
            api(ApiError::LimitReached {
                route: "r",
                message: String::new()
            }),
            Code::ResourceExhausted
        );
        assert_eq!(
            api(ApiError::BadRequest {
                route: "r",
                status: 409,
                message: String::new()
            }),
            Code::FailedPrecondition
        );
        assert_eq!(
            api(ApiError::Timeout {
                route: "r",
                timeout: Default::default()
            }),
            Code::DeadlineExceeded
        );
        assert_eq!(
            CsiError::io("x", std::io::Error::from(std::io::ErrorKind::NotFound)).code(),
            Code::NotFound
        );
    }
}
