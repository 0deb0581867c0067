//! What a client is told when its session cannot be served: the one place
//! that turns a store [`Error`] or a session that is gone into an HTTP
//! answer (for the [`guard`](crate::guard)) or a JSON-RPC [`ErrorData`] (for
//! the [`tools`](crate::tools)).
//!
//! Both paths answer the same situation with the same JSON-RPC code and
//! message, so a client handles "session gone" or "retry" once, whether the
//! guard refused the request or a tool failed half-way through it. The
//! codes and messages are defined here and nowhere else.
//!
//! | [`Refusal`] | HTTP status | JSON-RPC code | message |
//! |---|---|---|---|
//! | [`SessionNotFound`](Refusal::SessionNotFound) | 404 | `-32001` | session not found or expired |
//! | [`StoreUnavailable`](Refusal::StoreUnavailable) | 503, `Retry-After: 1` | `-32002` | session store unavailable, retry |
//! | [`StoreClosed`](Refusal::StoreClosed) | 500 | `-32603` | internal error: session store closed |
//! | [`StoredSessionUnreadable`](Refusal::StoredSessionUnreadable) | 500 | `-32603` | internal error: stored session unreadable |
//! | [`StoreFailed`](Refusal::StoreFailed) | 500 | `-32603` | internal error: session store error |
//! | [`Internal`](Refusal::Internal) | 500 | `-32603` | internal error |
//!
//! The internal errors name the kind of failure only: store errors carry no
//! secrets, but their details are not the client's business either (they are
//! logged instead).

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rmcp::ErrorData;
use rmcp::model::ErrorCode;
use session_factory::{Error, SessionId};

/// JSON-RPC error code for an unknown, expired or deleted session.
pub const SESSION_NOT_FOUND: i32 = -32001;
/// JSON-RPC error code for a session store that is unreachable: retry.
pub const STORE_UNAVAILABLE: i32 = -32002;
/// JSON-RPC error code for any other failure (JSON-RPC's internal error).
pub const INTERNAL_ERROR: i32 = -32603;

/// Why a request's session cannot be served; see the
/// [module documentation](self) for what each one becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The session was deleted, expired or never existed (or its id is not
    /// a UUID, so it cannot exist).
    SessionNotFound,
    /// The store did not answer (unreachable, timed out); a retry, here or
    /// on another replica, may succeed.
    StoreUnavailable,
    /// The manager was shut down: this replica is stopping.
    StoreClosed,
    /// The stored session could not be decoded.
    StoredSessionUnreadable,
    /// Any other store failure (authentication, configuration, ...): a retry
    /// would fail the same way.
    StoreFailed,
    /// A failure of the gateway or of rmcp rather than of the store.
    Internal,
}

impl Refusal {
    /// The refusal for a store error about `session`, logged here (with the
    /// error's details, which the client does not see): a warning for an
    /// error a retry may cure, an error otherwise.
    pub fn store_error(session: &SessionId, error: &Error) -> Self {
        if error.is_retryable() {
            tracing::warn!(%session, %error, "session store unavailable");
            return Self::StoreUnavailable;
        }
        tracing::error!(%session, %error, "session store failed");
        match error {
            Error::Closed => Self::StoreClosed,
            Error::Codec(_) => Self::StoredSessionUnreadable,
            _ => Self::StoreFailed,
        }
    }

    /// The HTTP status of the guard's answer.
    pub fn status(self) -> StatusCode {
        match self {
            Self::SessionNotFound => StatusCode::NOT_FOUND,
            Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::StoreClosed
            | Self::StoredSessionUnreadable
            | Self::StoreFailed
            | Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON-RPC error code, the same in an HTTP answer and a tool's error.
    pub fn code(self) -> i32 {
        match self {
            Self::SessionNotFound => SESSION_NOT_FOUND,
            Self::StoreUnavailable => STORE_UNAVAILABLE,
            Self::StoreClosed
            | Self::StoredSessionUnreadable
            | Self::StoreFailed
            | Self::Internal => INTERNAL_ERROR,
        }
    }

    /// The JSON-RPC error message, the same in an HTTP answer and a tool's
    /// error.
    pub fn message(self) -> &'static str {
        match self {
            Self::SessionNotFound => "session not found or expired",
            Self::StoreUnavailable => "session store unavailable, retry",
            Self::StoreClosed => "internal error: session store closed",
            Self::StoredSessionUnreadable => "internal error: stored session unreadable",
            Self::StoreFailed => "internal error: session store error",
            Self::Internal => "internal error",
        }
    }
}

/// The guard's answer: the [status](Refusal::status), a JSON-RPC error body
/// with a `null` id (the guard does not read the request body, so it does
/// not know the request's id), and `Retry-After: 1` on a 503.
impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        // Structs rather than `json!`, to keep the conventional field order.
        #[derive(serde::Serialize)]
        struct ErrorBody {
            jsonrpc: &'static str,
            id: Option<()>,
            error: ErrorObject,
        }
        #[derive(serde::Serialize)]
        struct ErrorObject {
            code: i32,
            message: &'static str,
        }
        let body = ErrorBody {
            jsonrpc: "2.0",
            id: None,
            error: ErrorObject {
                code: self.code(),
                message: self.message(),
            },
        };
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (
            self.status(),
            [(header::CONTENT_TYPE, "application/json")],
            Body::from(body),
        )
            .into_response();
        if self == Self::StoreUnavailable {
            // The header tells the client that a retry is the cure: the
            // session is still there, only the store did not answer.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// A tool's error: rmcp sends it as the JSON-RPC error of the `tools/call`
/// (inside a 200 answer, since the HTTP request itself was served).
impl From<Refusal> for ErrorData {
    fn from(refusal: Refusal) -> Self {
        ErrorData::new(ErrorCode(refusal.code()), refusal.message(), None)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use session_factory::BackendErrorKind;

    use super::*;

    #[test]
    fn store_errors_map_to_their_refusal() {
        let id = SessionId::new();
        let cases = [
            (
                Error::backend(BackendErrorKind::Unavailable, "connection refused"),
                Refusal::StoreUnavailable,
            ),
            (
                Error::backend(BackendErrorKind::Auth, "WRONGPASS"),
                Refusal::StoreFailed,
            ),
            (Error::Closed, Refusal::StoreClosed),
        ];
        for (error, refusal) in cases {
            assert_eq!(Refusal::store_error(&id, &error), refusal, "{error}");
        }
    }

    #[test]
    fn a_tool_error_has_the_code_and_message_of_the_http_answer() {
        let error = ErrorData::from(Refusal::StoreUnavailable);
        assert_eq!(error.code, ErrorCode(-32002));
        assert_eq!(error.message, "session store unavailable, retry");
        assert_eq!(error.data, None);
        let error = ErrorData::from(Refusal::SessionNotFound);
        assert_eq!(error.code, ErrorCode(-32001));
        assert_eq!(error.message, "session not found or expired");
    }

    #[tokio::test]
    async fn the_http_answer_is_a_jsonrpc_error_with_a_null_id() {
        let response = Refusal::StoreUnavailable.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32002,"message":"session store unavailable, retry"}}"#
        );
        let response = Refusal::SessionNotFound.into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
    }
}
