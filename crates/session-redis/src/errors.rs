//! Mapping fred's errors into the core's kinds.

use std::time::Duration;

use fred::error::{Error as RedisError, ErrorKind};
use session_core::{BackendErrorKind, Error, Operation};

/// What the mapping needs to know besides the error itself.
#[derive(Clone, Debug)]
pub(crate) struct ErrorContext {
    /// The command timeout, reported in timeout errors.
    pub(crate) command_timeout: Duration,
    /// Secrets that must not appear in messages, should a server or the
    /// client ever echo them.
    pub(crate) secrets: Vec<String>,
}

impl ErrorContext {
    /// The context of the storage `config` describes.
    pub(crate) fn new(config: &session_config::RedisConfig) -> Self {
        Self {
            command_timeout: config.command_timeout(),
            secrets: config.secrets().into_iter().map(str::to_owned).collect(),
        }
    }
}

impl ErrorContext {
    /// Maps a fred error from `operation` into a core error, with secrets
    /// removed from its message.
    pub(crate) fn map(&self, operation: Operation, error: &RedisError) -> Error {
        let details = self.redact(error.details());
        let kind = match error.kind() {
            ErrorKind::Timeout => {
                return Error::Timeout {
                    operation,
                    after: self.command_timeout,
                };
            }
            ErrorKind::Auth => BackendErrorKind::Auth,
            // The server's ACL refuses the command (a user without
            // `+@scripting`, say): like a refused login, it ran nothing and a
            // retry is refused again.
            _ if details.starts_with("NOPERM") => BackendErrorKind::Auth,
            ErrorKind::Tls => BackendErrorKind::Tls,
            // rustls handshake and certificate failures surface as IO errors.
            ErrorKind::IO if looks_like_tls(&details) => BackendErrorKind::Tls,
            ErrorKind::IO => BackendErrorKind::Io,
            ErrorKind::Cluster | ErrorKind::Routing => BackendErrorKind::Routing,
            ErrorKind::InvalidArgument if details.starts_with("WRONGTYPE") => {
                BackendErrorKind::WrongType
            }
            ErrorKind::Canceled | ErrorKind::Backpressure | ErrorKind::Sentinel => {
                BackendErrorKind::Unavailable
            }
            ErrorKind::Protocol | ErrorKind::Parse | ErrorKind::InvalidCommand => {
                BackendErrorKind::Protocol
            }
            ErrorKind::Unknown if details.starts_with("ERR unknown command") => {
                BackendErrorKind::Protocol
            }
            ErrorKind::Unknown
                if details.starts_with("LOADING") || details.starts_with("MASTERDOWN") =>
            {
                BackendErrorKind::Unavailable
            }
            ErrorKind::Unknown if details.starts_with("READONLY") => BackendErrorKind::Routing,
            // fred's router answers this for a command it could not send
            // because the connection dropped under it: transient.
            ErrorKind::Unknown if details.starts_with("Failed to route command") => {
                BackendErrorKind::Unavailable
            }
            // With one attempt per command, fred answers this when a cluster
            // redirected the command (`MOVED`, `ASK`): the slot moved, the
            // command did not run, and it can be retried.
            ErrorKind::Unknown if is_redirect_refused(error) => BackendErrorKind::Routing,
            _ => BackendErrorKind::Other,
        };
        Error::backend(kind, format!("{operation}: {details}"))
    }

    fn redact(&self, message: &str) -> String {
        let mut message = message.to_owned();
        for secret in &self.secrets {
            if !secret.is_empty() {
                message = message.replace(secret.as_str(), "[REDACTED]");
            }
        }
        message
    }
}

/// Whether fred refused to follow a cluster redirection because the command
/// had used its one attempt.
///
/// fred counts the write after a `MOVED` or `ASK` as another attempt, and
/// the client allows one (so that a command whose reply was lost with its
/// connection is never silently re-sent; see `connect`). A command that gets
/// this answer was refused by the node it reached, so it did not run.
pub(crate) fn is_redirect_refused(error: &RedisError) -> bool {
    error.kind() == &ErrorKind::Unknown && error.details() == "Too many failed write attempts."
}

fn looks_like_tls(details: &str) -> bool {
    let lower = details.to_ascii_lowercase();
    [
        "tls",
        "certificate",
        "handshake",
        "unknownissuer",
        "badsignature",
        "alert",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> ErrorContext {
        ErrorContext {
            command_timeout: Duration::from_secs(3),
            secrets: vec!["hunter2".into()],
        }
    }

    #[test]
    fn kinds_map_to_core_kinds() {
        let cases = [
            (
                ErrorKind::Unknown,
                "Too many failed write attempts.",
                Some(BackendErrorKind::Routing),
            ),
            (
                ErrorKind::Auth,
                "WRONGPASS invalid username-password pair",
                Some(BackendErrorKind::Auth),
            ),
            (
                ErrorKind::IO,
                "invalid peer certificate: UnknownIssuer",
                Some(BackendErrorKind::Tls),
            ),
            (
                ErrorKind::IO,
                "Connection refused (os error 111)",
                Some(BackendErrorKind::Io),
            ),
            (
                ErrorKind::Cluster,
                "CLUSTERDOWN",
                Some(BackendErrorKind::Routing),
            ),
            (
                ErrorKind::InvalidArgument,
                "WRONGTYPE Operation against a key holding the wrong kind of value",
                Some(BackendErrorKind::WrongType),
            ),
            (
                ErrorKind::Canceled,
                "Canceled.",
                Some(BackendErrorKind::Unavailable),
            ),
            (
                ErrorKind::Unknown,
                "ERR unknown command 'GETEX'",
                Some(BackendErrorKind::Protocol),
            ),
            (
                ErrorKind::Unknown,
                "NOPERM User noscript has no permissions to run the 'evalsha' command",
                Some(BackendErrorKind::Auth),
            ),
            (ErrorKind::Timeout, "Request timed out.", None),
        ];
        for (kind, details, expected) in cases {
            let mapped = context().map(Operation::Get, &RedisError::new(kind, details));
            assert_eq!(mapped.backend_kind(), expected, "{details}: {mapped:?}");
        }
        assert!(matches!(
            context().map(Operation::Get, &RedisError::new(ErrorKind::Timeout, "")),
            Error::Timeout {
                operation: Operation::Get,
                ..
            }
        ));
    }

    #[test]
    fn messages_are_redacted() {
        let mapped = context().map(
            Operation::Connect,
            &RedisError::new(ErrorKind::Auth, "bad password hunter2"),
        );
        let message = mapped.to_string();
        assert!(!message.contains("hunter2"), "{message}");
        assert!(message.contains("[REDACTED]"), "{message}");
    }
}
