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
/// `ARCHITECTURE.md` ("Secrets").
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller passed something invalid: a malformed session id, a
    /// session that outlived its maximum lifetime, a factory that changed
    /// the id. (A TTL out of range is a setting: [`Error::Config`].)
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
        operation: Operation,
        /// The timeout that elapsed.
        after: Duration,
    },

    /// A stored value could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),

    /// A configuration value is invalid. Raised before any network access.
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// A read-modify-write found the session changed by another writer on
    /// every one of its attempts. Nothing was written by the call; trying
    /// again later may succeed.
    #[error("session {id} kept changing: {attempts} attempts of a read-modify-write conflicted")]
    Conflict {
        /// The session.
        id: SessionId,
        /// How many attempts were made.
        attempts: u32,
    },

    /// The manager or storage was shut down; no operation runs after that.
    #[error("the session store is closed")]
    Closed,
}

impl Error {
    /// A configuration error for `field`.
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config(ConfigError::new(field, reason))
    }

    /// The configuration error, if this is one.
    pub fn as_config(&self) -> Option<&ConfigError> {
        match self {
            Self::Config(error) => Some(error),
            _ => None,
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

    /// Whether retrying the same operation later may succeed: timeouts,
    /// transient backend failures and conflicts. A server answers these
    /// with 503, not 4xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::Conflict { .. } => true,
            Self::Backend { kind, .. } => kind.is_transient(),
            _ => false,
        }
    }

    /// Whether a write that failed with this error may nevertheless have
    /// been applied: the request may have reached the backend and its reply
    /// been lost (a timeout, a connection that broke, a failover). Such a
    /// write is never re-sent by this library; the caller decides, knowing
    /// that a retry may apply it twice. Errors raised before anything was
    /// sent (invalid input, a closed store, a conflict, a refused
    /// authentication) are not.
    pub fn is_outcome_unknown(&self) -> bool {
        match self {
            Self::Timeout { .. } => true,
            Self::Backend { kind, .. } => matches!(
                kind,
                BackendErrorKind::Unavailable
                    | BackendErrorKind::Io
                    | BackendErrorKind::Routing
                    | BackendErrorKind::Other
            ),
            _ => false,
        }
    }
}

/// A configuration that cannot be used: which setting, where it came from,
/// and what is wrong with it.
///
/// `field` is the setting's path as written in a configuration file
/// (`redis.tls.client_key`), or `None` when the error concerns the file as a
/// whole (it cannot be read, or it is not TOML). `origin` names the file when
/// the setting came from one. The reason never quotes a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    origin: Option<String>,
    field: Option<String>,
    reason: String,
}

impl ConfigError {
    /// An error about the setting `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            origin: None,
            field: Some(field.into()),
            reason: reason.into(),
        }
    }

    /// An error about a configuration file as a whole, not one setting in it.
    pub fn whole(reason: impl Into<String>) -> Self {
        Self {
            origin: None,
            field: None,
            reason: reason.into(),
        }
    }

    /// Records the file the setting came from. An origin given earlier (by
    /// the code closest to the file) is kept.
    pub fn in_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin.get_or_insert_with(|| origin.into());
        self
    }

    /// The setting at fault, e.g. `redis.key_prefix`; `None` for the file as
    /// a whole.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// The file the setting came from, if any.
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// What is wrong.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid configuration")?;
        if let Some(origin) = &self.origin {
            write!(f, " in {origin}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": `{field}`")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// The operations of the storage contract, as named in errors, logs and
/// (later) metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Establishing the connection to a backend.
    Connect,
    /// Inserting a session whose id is free.
    Create,
    /// Reading a session (and sliding its TTL).
    Get,
    /// Writing a session that exists.
    Update,
    /// Writing a session whether or not it exists.
    Upsert,
    /// Writing a session on condition that its revision is unchanged.
    UpdateIf,
    /// Listing an owner's sessions.
    ListOwned,
    /// Removing every session of an owner.
    RevokeOwned,
    /// Shortening a session's remaining life.
    Expire,
    /// Removing a session.
    Delete,
    /// Removing what expired.
    DeleteExpired,
    /// Counting live sessions.
    Count,
    /// Checking that the backend answers.
    Ping,
    /// Releasing the backend's resources.
    Close,
    /// Appending to a session's event log (resumable streams).
    AppendEvent,
    /// Reading a session's event log.
    ReadEvents,
}

impl Operation {
    /// The lowercase name, as in messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Create => "create",
            Self::Get => "get",
            Self::Update => "update",
            Self::Upsert => "upsert",
            Self::UpdateIf => "update_if",
            Self::ListOwned => "list_owned",
            Self::RevokeOwned => "revoke_owned",
            Self::Expire => "expire",
            Self::Delete => "delete",
            Self::DeleteExpired => "delete_expired",
            Self::Count => "count",
            Self::Ping => "ping",
            Self::Close => "close",
            Self::AppendEvent => "append_event",
            Self::ReadEvents => "read_events",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
    /// The kind as a metric label: lowercase, `_` between words.
    pub const fn as_label(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Auth => "auth",
            Self::Tls => "tls",
            Self::Io => "io",
            Self::Routing => "routing",
            Self::WrongType => "wrong_type",
            Self::Protocol => "protocol",
            Self::Other => "other",
        }
    }

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
