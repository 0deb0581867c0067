//! What a handler's session call can fail with, and the HTTP answer each
//! failure gets when the handler returns it.
//!
//! | [`SessionError`] | status | body |
//! |---|---|---|
//! | [`Store`](SessionError::Store), retryable (timeout, unavailable, conflict) | 503, `Retry-After: 1` | session store unavailable, retry |
//! | [`Store`](SessionError::Store), otherwise | 500 | session store error |
//! | [`Data`](SessionError::Data) | 500 | session data unreadable |
//! | [`OwnerLimit`](SessionError::OwnerLimit) | 429 | too many sessions for this user |
//! | [`CreationRate`](SessionError::CreationRate) | 429, `Retry-After` | too many new sessions from this address, retry later |
//! | [`MissingLayer`](SessionError::MissingLayer) | 500 | session layer missing |
//!
//! The bodies name the kind of failure only; the details, which may name a
//! session id (a bearer credential), go to the log at `warn` without it.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use session_core::CodecError;

/// Why a session call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The store failed or refused the operation.
    #[error("session store: {0}")]
    Store(#[from] session_core::Error),
    /// The session's data is not of the type the handler asked for, or
    /// could not be encoded.
    #[error("session data: {0}")]
    Data(#[from] CodecError),
    /// The owner already holds as many sessions as [`Limits`](crate::Limits)
    /// allow; a login is refused until one ends.
    #[error("this owner holds {held} sessions, the most allowed")]
    OwnerLimit {
        /// The sessions the owner holds.
        held: usize,
    },
    /// The client address created anonymous sessions faster than
    /// [`Limits`](crate::Limits) allow.
    #[error("too many new sessions from this address; retry in {retry_after:?}")]
    CreationRate {
        /// When the next creation would be allowed.
        retry_after: Duration,
    },
    /// The handler's route is not under a [`SessionLayer`](crate::SessionLayer).
    #[error("the session layer is not installed on this route")]
    MissingLayer,
}

impl SessionError {
    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Store(error) if error.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
            Self::OwnerLimit { .. } | Self::CreationRate { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Store(_) | Self::Data(_) | Self::MissingLayer => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The body: the kind of failure, nothing more.
    fn body(&self) -> &'static str {
        match self {
            Self::Store(error) if error.is_retryable() => "session store unavailable, retry\n",
            Self::Store(_) => "session store error\n",
            Self::Data(_) => "session data unreadable\n",
            Self::OwnerLimit { .. } => "too many sessions for this user\n",
            Self::CreationRate { .. } => "too many new sessions from this address, retry later\n",
            Self::MissingLayer => "session layer missing\n",
        }
    }
}

impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            // A store error may quote a session id; the kind is enough.
            match &self {
                Self::Store(error) => {
                    tracing::warn!(kind = ?error.backend_kind(), retryable = error.is_retryable(), "session store call failed")
                }
                other => tracing::warn!(error = %other, "session call failed"),
            }
        }
        let mut response = (status, self.body()).into_response();
        let retry_after = match &self {
            Self::Store(_) if status == StatusCode::SERVICE_UNAVAILABLE => Some(1),
            // Whole seconds, rounded up: `Retry-After: 0` would invite an
            // immediate retry that fails again.
            Self::CreationRate { retry_after } => {
                Some(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0))
            }
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use session_core::BackendErrorKind;

    use super::*;

    fn answer(error: SessionError) -> (StatusCode, Option<String>) {
        let response = error.into_response();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|value| value.to_str().unwrap_or_default().to_owned());
        (response.status(), retry_after)
    }

    #[test]
    fn each_error_gets_the_answer_of_the_table() {
        let down =
            session_core::Error::backend(BackendErrorKind::Unavailable, "connection refused");
        assert_eq!(
            answer(SessionError::Store(down)),
            (StatusCode::SERVICE_UNAVAILABLE, Some("1".to_owned()))
        );
        assert_eq!(
            answer(SessionError::Store(session_core::Error::Closed)),
            (StatusCode::INTERNAL_SERVER_ERROR, None)
        );
        assert_eq!(
            answer(SessionError::OwnerLimit { held: 3 }),
            (StatusCode::TOO_MANY_REQUESTS, None)
        );
        // Rounded up to whole seconds, and never 0.
        for (wait, seconds) in [(1500, "2"), (2000, "2"), (1, "1")] {
            assert_eq!(
                answer(SessionError::CreationRate {
                    retry_after: Duration::from_millis(wait)
                }),
                (StatusCode::TOO_MANY_REQUESTS, Some(seconds.to_owned())),
                "{wait} ms"
            );
        }
        assert_eq!(
            answer(SessionError::MissingLayer),
            (StatusCode::INTERNAL_SERVER_ERROR, None)
        );
    }
}
