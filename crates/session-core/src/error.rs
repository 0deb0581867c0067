//! The error type shared by every layer.
//!
//! Each backend maps its client's errors into these kinds, so a caller can
//! decide what to do without knowing which backend it runs on: not-found is
//! not an error at all (`Ok(None)`), [`Error::is_retryable`] errors are worth
//! retrying, and codec and configuration errors are not.

use std::fmt;
use std::time::Duration;

use crate::SessionId;
use crate::codec::CodecError;

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a session operation.
///
/// Messages never contain passwords, key material or session data; see
/// `ARCHITECTURE.md` ("Secrets never reach Debug, Display, logs or error
/// messages").
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller passed something invalid: a malformed session id, a zero
    /// TTL, a session that outlived its maximum lifetime.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A create found a live session with the same id. Creates never
    /// overwrite.
    #[error("session {0} already exists")]
    AlreadyExists(SessionId),

    /// The storage backend failed or could not be reached.
    #[error("storage backend error ({kind}): {message}")]
    Backend {
        /// What kind of failure it was.
        kind: BackendErrorKind,
        /// A description with secrets removed.
        message: String,
    },

    /// An operation did not finish within its timeout.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// The operation that timed out.
        operation: &'static str,
        /// The timeout that elapsed.
        after: Duration,
    },

    /// A stored value could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),

    /// A configuration value is invalid. Raised before any network access.
    #[error("invalid configuration: `{field}`: {reason}")]
    Config {
        /// The configuration key at fault, e.g. `redis.key_prefix`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The manager or storage was shut down; no operation runs after that.
    #[error("the session store is closed")]
    Closed,
}

impl Error {
    /// A configuration error for `field`.
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// A backend error of the given kind.
    pub fn backend(kind: BackendErrorKind, message: impl Into<String>) -> Self {
        Self::Backend {
            kind,
            message: message.into(),
        }
    }

    /// The backend error kind, if this is a backend error.
    pub fn backend_kind(&self) -> Option<BackendErrorKind> {
        match self {
            Self::Backend { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// Whether retrying the same operation later may succeed: timeouts and
    /// transient backend failures. A server answers these with 503, not 4xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Timeout { .. } => true,
            Self::Backend { kind, .. } => kind.is_transient(),
            _ => false,
        }
    }
}

/// The kinds of backend failure, common to every backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// The backend cannot be reached or refused the connection.
    Unavailable,
    /// The backend rejected the credentials.
    Auth,
    /// A TLS handshake or certificate check failed.
    Tls,
    /// A network read or write failed.
    Io,
    /// A clustered backend could not route the request (moved slots, a
    /// cluster that is down or reconfiguring).
    Routing,
    /// A key under the session prefix holds a value of another type.
    WrongType,
    /// The backend answered something this client does not understand.
    Protocol,
    /// Any other backend failure.
    Other,
}

impl BackendErrorKind {
    /// Whether this kind of failure usually goes away by itself.
    pub fn is_transient(self) -> bool {
        matches!(self, Self::Unavailable | Self::Io | Self::Routing)
    }
}

impl fmt::Display for BackendErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unavailable => "unavailable",
            Self::Auth => "authentication",
            Self::Tls => "tls",
            Self::Io => "io",
            Self::Routing => "cluster routing",
            Self::WrongType => "wrong type",
            Self::Protocol => "protocol",
            Self::Other => "other",
        })
    }
}
