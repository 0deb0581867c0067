//! What a client is told when its request cannot be served: the one place
//! that turns a store [`Error`], a session that is gone or a request that is
//! refused into an HTTP answer (for the [`guard`](crate::guard)) or a
//! JSON-RPC [`ErrorData`] (for the [`tools`](crate::tools)).
//!
//! Both paths answer the same situation with the same JSON-RPC code and
//! message, so a client handles "session gone" or "retry" once, whether the
//! guard refused the request or a tool failed half-way through it. The
//! codes and messages are defined here and nowhere else. Every HTTP answer
//! is a JSON-RPC error that echoes the request's id when the body had one
//! (clients in the field key their recovery on it), `null` otherwise.
//!
//! | [`Refusal`] | HTTP status | JSON-RPC code | message |
//! |---|---|---|---|
//! | [`SessionNotFound`](Refusal::SessionNotFound) | 404 | `-32001` | session not found or expired |
//! | [`StoreUnavailable`](Refusal::StoreUnavailable) | 503, `Retry-After: 1` | `-31000` | session store unavailable, retry |
//! | [`LimitReached`](Refusal::LimitReached) | 503 | `-31001` | too many live sessions and handles for this principal |
//! | [`ShuttingDown`](Refusal::ShuttingDown) | 503, `Retry-After: 1` | `-31003` | replica shutting down, retry |
//! | [`Unauthorized`](Refusal::Unauthorized) | 401, `WWW-Authenticate` | `-31002` | missing or invalid bearer token |
//! | [`HostNotAllowed`](Refusal::HostNotAllowed) | 403 | `-32600` | Host or Origin header not allowed |
//! | [`UnsupportedVersion`](Refusal::UnsupportedVersion) | 400 | `-32022` | unsupported protocol version (with `supported` and `requested`) |
//! | [`ParseError`](Refusal::ParseError) | 400 | `-32700` | parse error: the body is not JSON |
//! | [`NotOneMessage`](Refusal::NotOneMessage) | 400 | `-32600` | invalid request: the body must be one JSON-RPC message (no batches) |
//! | [`NotInThisEra`](Refusal::NotInThisEra) | 405, `Allow: POST` | `-32600` | protocol 2026-07-28 has no GET or DELETE |
//! | [`BodyTooLarge`](Refusal::BodyTooLarge) | 413 | `-32600` | request body too large |
//! | [`StoreClosed`](Refusal::StoreClosed) | 500 | `-32603` | internal error: session store closed |
//! | [`StoredSessionUnreadable`](Refusal::StoredSessionUnreadable) | 500 | `-32603` | internal error: stored session unreadable |
//! | [`StoreFailed`](Refusal::StoreFailed) | 500 | `-32603` | internal error: session store error |
//! | [`Internal`](Refusal::Internal) | 500 | `-32603` | internal error |
//!
//! The gateway's own codes (`-31000` to `-31003`) lie outside the range
//! JSON-RPC reserves (`-32768` to `-32000`), of which MCP claims `-32020` to
//! `-32099` and keeps `-32002` retired for good: no revision can give them
//! another meaning. `-32001` for a gone session is what handshake-era clients
//! in the field recognise, so it stays.
//!
//! The internal errors name the kind of failure only: store errors carry no
//! secrets, but their details are not the client's business either (they are
//! logged instead). A 401 says that a token was missing or invalid, never
//! why.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rmcp::ErrorData;
use rmcp::model::{ErrorCode, RequestId};
use serde_json::{Value, json};
use session_factory::{Error, SessionId};

use crate::request::SUPPORTED_VERSIONS;

/// JSON-RPC error code for an unknown, expired or deleted session.
pub const SESSION_NOT_FOUND: i32 = -32001;
/// JSON-RPC error code for a session store that is unreachable: retry.
pub const STORE_UNAVAILABLE: i32 = -31000;
/// JSON-RPC error code for a principal at its cap of sessions and handles.
pub const LIMIT_REACHED: i32 = -31001;
/// JSON-RPC error code for a missing or invalid bearer token.
pub const UNAUTHORIZED: i32 = -31002;
/// JSON-RPC error code for a request cut short by this replica's shutdown:
/// retry (on another replica).
pub const SHUTTING_DOWN: i32 = -31003;
/// MCP's `UnsupportedProtocolVersionError` (2026-07-28).
pub const UNSUPPORTED_PROTOCOL_VERSION: i32 = -32022;
/// JSON-RPC's parse error.
pub const PARSE_ERROR: i32 = -32700;
/// JSON-RPC's invalid request.
pub const INVALID_REQUEST: i32 = -32600;
/// JSON-RPC error code for any other failure (JSON-RPC's internal error).
pub const INTERNAL_ERROR: i32 = -32603;

/// Why a request cannot be served; see the [module documentation](self)
/// for what each one becomes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The session was deleted, expired, never existed or belongs to
    /// another principal (or its id is not a UUID, so it cannot exist).
    SessionNotFound,
    /// The store did not answer (unreachable, timed out); a retry, here or
    /// on another replica, may succeed.
    StoreUnavailable,
    /// The principal holds as many live sessions and handles as the limits
    /// allow.
    LimitReached,
    /// This replica is shutting down and cut the request short; another
    /// replica serves it.
    ShuttingDown,
    /// No bearer token (`missing`), or one that was refused.
    Unauthorized {
        /// Whether the request carried no token at all.
        missing: bool,
        /// The URL of the protected resource metadata, for the challenge.
        resource_metadata: String,
    },
    /// The `Host` or `Origin` header names a host this gateway does not
    /// serve: DNS rebinding protection.
    HostNotAllowed,
    /// `MCP-Protocol-Version` names a revision this gateway does not serve.
    UnsupportedVersion(String),
    /// The body is not JSON.
    ParseError,
    /// The body is JSON but not one JSON-RPC message (a batch, or no
    /// message at all).
    NotOneMessage,
    /// A `GET` or `DELETE` under protocol 2026-07-28, which has neither.
    NotInThisEra,
    /// The body is larger than the gateway reads.
    BodyTooLarge,
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
        Self::store_failure(error)
    }

    /// The refusal for a store error that concerns no one session (a
    /// listing), logged as [`store_error`](Refusal::store_error) does.
    pub fn store_error_of(what: &str, error: &Error) -> Self {
        if error.is_retryable() {
            tracing::warn!(what, %error, "session store unavailable");
            return Self::StoreUnavailable;
        }
        tracing::error!(what, %error, "session store failed");
        Self::store_failure(error)
    }

    fn store_failure(error: &Error) -> Self {
        match error {
            Error::Closed => Self::StoreClosed,
            Error::Codec(_) => Self::StoredSessionUnreadable,
            _ => Self::StoreFailed,
        }
    }

    /// The HTTP status of the guard's answer.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::SessionNotFound => StatusCode::NOT_FOUND,
            Self::StoreUnavailable | Self::LimitReached | Self::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::HostNotAllowed => StatusCode::FORBIDDEN,
            Self::UnsupportedVersion(_) | Self::ParseError | Self::NotOneMessage => {
                StatusCode::BAD_REQUEST
            }
            Self::NotInThisEra => StatusCode::METHOD_NOT_ALLOWED,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::StoreClosed
            | Self::StoredSessionUnreadable
            | Self::StoreFailed
            | Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON-RPC error code, the same in an HTTP answer and a tool's error.
    pub fn code(&self) -> i32 {
        match self {
            Self::SessionNotFound => SESSION_NOT_FOUND,
            Self::StoreUnavailable => STORE_UNAVAILABLE,
            Self::LimitReached => LIMIT_REACHED,
            Self::ShuttingDown => SHUTTING_DOWN,
            Self::Unauthorized { .. } => UNAUTHORIZED,
            Self::UnsupportedVersion(_) => UNSUPPORTED_PROTOCOL_VERSION,
            Self::ParseError => PARSE_ERROR,
            Self::HostNotAllowed
            | Self::NotOneMessage
            | Self::NotInThisEra
            | Self::BodyTooLarge => INVALID_REQUEST,
            Self::StoreClosed
            | Self::StoredSessionUnreadable
            | Self::StoreFailed
            | Self::Internal => INTERNAL_ERROR,
        }
    }

    /// The JSON-RPC error message, the same in an HTTP answer and a tool's
    /// error.
    pub fn message(&self) -> &'static str {
        match self {
            Self::SessionNotFound => "session not found or expired",
            Self::StoreUnavailable => "session store unavailable, retry",
            Self::LimitReached => "too many live sessions and handles for this principal",
            Self::ShuttingDown => "replica shutting down, retry",
            Self::Unauthorized { missing: true, .. } => "missing bearer token",
            Self::Unauthorized { missing: false, .. } => "invalid bearer token",
            Self::HostNotAllowed => "Host or Origin header not allowed",
            Self::UnsupportedVersion(_) => "unsupported protocol version",
            Self::ParseError => "parse error: the body is not JSON",
            Self::NotOneMessage => {
                "invalid request: the body must be one JSON-RPC message (no batches)"
            }
            Self::NotInThisEra => {
                "protocol 2026-07-28 has no GET or DELETE: every request is a POST"
            }
            Self::BodyTooLarge => "request body too large",
            Self::StoreClosed => "internal error: session store closed",
            Self::StoredSessionUnreadable => "internal error: stored session unreadable",
            Self::StoreFailed => "internal error: session store error",
            Self::Internal => "internal error",
        }
    }

    /// The error's `data`: the versions for an unsupported one.
    fn data(&self) -> Option<Value> {
        match self {
            Self::UnsupportedVersion(requested) => Some(json!({
                "supported": SUPPORTED_VERSIONS.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
                "requested": requested,
            })),
            _ => None,
        }
    }

    /// The guard's answer to the request whose JSON-RPC id is `id`: the
    /// [status](Refusal::status), a JSON-RPC error body echoing `id`
    /// (`null` when unknown), and the headers the status calls for.
    pub fn answer(self, id: Option<&RequestId>) -> Response {
        #[derive(serde::Serialize)]
        struct ErrorBody<'a> {
            jsonrpc: &'static str,
            id: Option<&'a RequestId>,
            error: ErrorObject,
        }
        #[derive(serde::Serialize)]
        struct ErrorObject {
            code: i32,
            message: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            data: Option<Value>,
        }
        let body = ErrorBody {
            jsonrpc: "2.0",
            id,
            error: ErrorObject {
                code: self.code(),
                message: self.message(),
                data: self.data(),
            },
        };
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (
            self.status(),
            [(header::CONTENT_TYPE, "application/json")],
            Body::from(body),
        )
            .into_response();
        let headers = response.headers_mut();
        match self {
            // The header tells the client that a retry is the cure: the
            // session is still there, only the store did not answer.
            Self::StoreUnavailable | Self::ShuttingDown => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::NotInThisEra => {
                headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            Self::Unauthorized {
                missing,
                resource_metadata,
            } => {
                // RFC 6750: no error code when no token came; RFC 9728: the
                // metadata URL, from which a client finds the authorization
                // server.
                let challenge = if missing {
                    format!("Bearer resource_metadata=\"{resource_metadata}\"")
                } else {
                    format!(
                        "Bearer error=\"invalid_token\", resource_metadata=\"{resource_metadata}\""
                    )
                };
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            _ => {}
        }
        response
    }
}

/// The guard's answer when the request's id is unknown; see
/// [`Refusal::answer`].
impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        self.answer(None)
    }
}

/// A tool's error: rmcp sends it as the JSON-RPC error of the `tools/call`
/// (inside a 200 answer, since the HTTP request itself was served).
impl From<Refusal> for ErrorData {
    fn from(refusal: Refusal) -> Self {
        ErrorData::new(ErrorCode(refusal.code()), refusal.message(), refusal.data())
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
        assert_eq!(error.code, ErrorCode(-31000));
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
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-31000,"message":"session store unavailable, retry"}}"#
        );
        let response = Refusal::SessionNotFound.into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
    }

    #[tokio::test]
    async fn an_answer_echoes_the_request_id_and_names_the_versions() {
        let id = RequestId::String("req-7".into());
        let response = Refusal::UnsupportedVersion("1999-01-01".into()).answer(Some(&id));
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["id"], "req-7");
        assert_eq!(body["error"]["code"], -32022);
        assert_eq!(body["error"]["data"]["requested"], "1999-01-01");
        assert_eq!(
            body["error"]["data"]["supported"],
            json!(["2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"])
        );
        let response = Refusal::SessionNotFound.answer(Some(&RequestId::Number(42)));
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (body["id"].clone(), body["error"]["code"].clone()),
            (json!(42), json!(-32001))
        );
    }

    #[test]
    fn the_gateway_codes_stay_out_of_the_reserved_range() {
        for refusal in [
            Refusal::StoreUnavailable,
            Refusal::LimitReached,
            Refusal::Unauthorized {
                missing: true,
                resource_metadata: String::new(),
            },
            Refusal::ShuttingDown,
        ] {
            assert!(!(-32768..=-32000).contains(&refusal.code()), "{refusal:?}");
        }
    }

    #[test]
    fn a_challenge_says_missing_or_invalid_and_nothing_more() {
        let url = "http://localhost:8080/.well-known/oauth-protected-resource/mcp".to_owned();
        let missing = Refusal::Unauthorized {
            missing: true,
            resource_metadata: url.clone(),
        }
        .answer(None);
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            missing.headers()[header::WWW_AUTHENTICATE],
            format!("Bearer resource_metadata=\"{url}\"").as_str()
        );
        let invalid = Refusal::Unauthorized {
            missing: false,
            resource_metadata: url.clone(),
        }
        .answer(None);
        assert_eq!(
            invalid.headers()[header::WWW_AUTHENTICATE],
            format!("Bearer error=\"invalid_token\", resource_metadata=\"{url}\"").as_str()
        );
    }
}
