//! The session check in front of rmcp, and the JSON-RPC error bodies of its
//! answers.
//!
//! # Why rmcp needs it
//!
//! rmcp's `StreamableHttpService` keeps live sessions in memory and consults
//! its `SessionStore` only for a session it does *not* hold: on such a
//! request it loads the saved `initialize` parameters and replays the
//! handshake (a cross-replica restore). For a session it does hold, it never
//! looks at the store again. Two things follow in a deployment of several
//! replicas:
//!
//! - A session that another replica deleted (the client's `DELETE` went
//!   there) or that expired in the store is still served by every replica
//!   that holds an in-memory copy of it, for as long as that copy lives.
//! - Redis TTLs would never slide: rmcp touches the store on `initialize`,
//!   on a restore and on `DELETE` only, so a busy session would expire in
//!   Redis after one TTL, and then be refused by every replica that does not
//!   happen to hold it.
//! - rmcp saves a new session after the `initialize` handshake but only logs
//!   a failure to save it, and answers the client as if all were well; it
//!   does the same with a failure to delete a session on `DELETE`.
//!
//! [`check_session`] therefore reads the session through the manager on every
//! request that names one (a `DELETE` deletes it from the store, before rmcp
//! closes its copy), and checks that the session an `initialize` created
//! reached the store. The read refreshes the sliding TTL, a session that
//! is gone is refused here (and this replica's in-memory copy closed), and a
//! store that cannot answer is reported as such instead of as a missing
//! session.
//!
//! # What clients see
//!
//! | situation | status | JSON-RPC error |
//! |---|---|---|
//! | `Mcp-Session-Id` not a UUID | 404 | `-32001` session not found or expired |
//! | session deleted, expired or never existed | 404 | `-32001` |
//! | store unreachable or timed out ([`Error::is_retryable`]) | 503, `Retry-After: 1` | `-32002` session store unavailable, retry |
//! | any other store error | 500 | `-32603` |
//!
//! | `initialize` whose new session did not reach the store | 503, `Retry-After: 1` | `-32002` |
//! | `DELETE` the store could not carry out | 503, `Retry-After: 1` | `-32002` |
//! | rmcp could not restore the session from the store | 503, `Retry-After: 1` | `-32002` |
//!
//! rmcp's own plain-text 404 (`Not Found: Session not found`) gets the same
//! JSON-RPC body as the first two rows. The `id` of these errors is `null`:
//! the request body is not read here.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::{
    SessionId as RmcpSessionId, SessionManager,
};
use session_factory::{Error, SessionId};

use crate::Gateway;

/// The header that names the MCP session (case-insensitive on the wire).
pub const SESSION_HEADER: &str = "mcp-session-id";

/// JSON-RPC error code for an unknown, expired or deleted session.
pub const SESSION_NOT_FOUND: i32 = -32001;
/// JSON-RPC error code for a session store that is unreachable: retry.
pub const STORE_UNAVAILABLE: i32 = -32002;
/// JSON-RPC error code for any other failure (JSON-RPC's internal error).
pub const INTERNAL_ERROR: i32 = -32603;

/// The middleware around `/mcp`; see the [module documentation](self).
pub async fn check_session(
    State(gateway): State<Gateway>,
    request: Request,
    next: Next,
) -> Response {
    let Some(raw) = request.headers().get(SESSION_HEADER).cloned() else {
        // No session yet (an `initialize`): nothing to check before, but
        // rmcp's answer must be checked after.
        let response = next.run(request).await;
        return confirm_persisted(&gateway, response).await;
    };
    let Some((raw, id)) = raw
        .to_str()
        .ok()
        .and_then(|raw| Some((raw.to_owned(), SessionId::parse(raw).ok()?)))
    else {
        return session_not_found();
    };
    // A DELETE is carried out here, before rmcp: rmcp only logs a failure
    // to delete from its store and answers 202 anyway, which would tell the
    // client its session is gone while every replica still serves it.
    //
    // Otherwise the session is read, and whether it holds rmcp's state (so
    // that rmcp can restore it) is remembered for the answer.
    let found = if request.method() == Method::DELETE {
        gateway
            .manager()
            .delete(&id)
            .await
            .map(|deleted| deleted.then_some(false))
    } else {
        gateway
            .manager()
            .get(&id)
            .await
            .map(|session| session.map(|session| session.has_data()))
    };
    match found {
        Ok(Some(restorable)) => {
            let response = next.run(request).await;
            rewrite_plain_errors(response, restorable).await
        }
        Ok(None) => {
            close_local_copy(&gateway, raw).await;
            session_not_found()
        }
        Err(error) if error.is_retryable() => {
            tracing::warn!(session = %id, %error, "session store unavailable");
            store_unavailable()
        }
        Err(error) => {
            tracing::error!(session = %id, %error, "session store failed");
            internal_error(&error)
        }
    }
}

/// Lets a new session's `initialize` answer through only if the session
/// reached the store.
///
/// rmcp saves a new session in its `SessionStore` after the handshake but
/// ignores a failure to save it (it only logs it) and answers the client as
/// if all were well. Such a session lives on this replica alone: every other
/// replica, and this one after a restart, would answer 404 to it. So the
/// answer to an `initialize` that names a new session is checked against the
/// store; if the session is not there, this replica's copy is closed and the
/// client gets a 503 to retry the `initialize`. This costs one store read per
/// `initialize`, none per other request.
async fn confirm_persisted(gateway: &Gateway, response: Response) -> Response {
    let Some(raw) = response
        .headers()
        .get(SESSION_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
    else {
        return response;
    };
    let Ok(id) = SessionId::parse(&raw) else {
        // rmcp names sessions with UUIDs; anything else could not have been
        // stored, and no replica could serve it.
        tracing::error!("rmcp created a session whose id is not a UUID");
        close_local_copy(gateway, raw).await;
        return internal_error(&Error::InvalidInput("session id".into()));
    };
    match gateway.manager().get(&id).await {
        Ok(Some(_)) => response,
        Ok(None) => {
            tracing::warn!(session = %id, "new session did not reach the store; refused");
            close_local_copy(gateway, raw).await;
            store_unavailable()
        }
        Err(error) => {
            tracing::warn!(session = %id, %error, "cannot confirm a new session; refused");
            close_local_copy(gateway, raw).await;
            store_unavailable()
        }
    }
}

/// Closes this replica's in-memory rmcp session `raw`, if it has one: the
/// session is gone from the store, so the copy must not serve it again.
async fn close_local_copy(gateway: &Gateway, raw: String) {
    let sessions = gateway.rmcp_sessions();
    let rmcp_id: RmcpSessionId = raw.into();
    // `has_session` and `close_session` of the local manager cannot fail.
    if sessions.has_session(&rmcp_id).await.unwrap_or(false) {
        match sessions.close_session(&rmcp_id).await {
            Ok(()) => tracing::info!(
                session = %rmcp_id,
                "closed the in-memory copy of a session that is gone from the store"
            ),
            Err(error) => tracing::warn!(session = %rmcp_id, %error, "cannot close session"),
        }
    }
}

/// Gives rmcp's plain-text 404 (`Not Found: Session not found`) the JSON-RPC
/// body of every other session error. JSON answers pass unchanged.
///
/// rmcp's plain-text 500s become 503s when the session is in the store: for
/// a failed restore (`Encounter an error when restore session: ...`) the
/// guard has just read the session, so rmcp's own read of the store failed,
/// transiently; and for a session with rmcp's state (`restorable`) the 500
/// says this replica's in-memory copy failed (`Session service terminated`
/// during a shutdown, for one), while a retry, here or on another replica,
/// restores the session from the store.
///
/// rmcp's 404 for a session that the guard has just read, with rmcp's state
/// in it (`restorable`), is a 503 too: rmcp answers 404 to every request
/// that waited on a restore that failed (and to one that comes just after
/// it), although the session is there.
async fn rewrite_plain_errors(response: Response, restorable: bool) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if is_json {
        return response;
    }
    match response.status() {
        StatusCode::NOT_FOUND if restorable => {
            tracing::warn!("rmcp did not restore a session that is in the store; retry");
            store_unavailable()
        }
        StatusCode::NOT_FOUND => session_not_found(),
        StatusCode::INTERNAL_SERVER_ERROR => {
            let (parts, body) = response.into_parts();
            // rmcp's error texts are short; anything longer is not one.
            let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
                return internal_error(&Error::InvalidInput("response".into()));
            };
            if restorable || bytes.starts_with(b"Encounter an error when restore session") {
                tracing::warn!(
                    error = %String::from_utf8_lossy(&bytes),
                    "rmcp failed on a session that is in the store; retry"
                );
                store_unavailable()
            } else {
                Response::from_parts(parts, Body::from(bytes))
            }
        }
        _ => response,
    }
}

/// A JSON-RPC error response with a `null` id.
pub fn jsonrpc_error(status: StatusCode, code: i32, message: &str) -> Response {
    // A struct rather than `json!`, to keep the conventional field order.
    #[derive(serde::Serialize)]
    struct ErrorBody<'a> {
        jsonrpc: &'static str,
        id: Option<()>,
        error: ErrorObject<'a>,
    }
    #[derive(serde::Serialize)]
    struct ErrorObject<'a> {
        code: i32,
        message: &'a str,
    }
    let body = ErrorBody {
        jsonrpc: "2.0",
        id: None,
        error: ErrorObject { code, message },
    };
    let body = serde_json::to_vec(&body).unwrap_or_default();
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(body),
    )
        .into_response()
}

/// 404 with JSON-RPC error `-32001`.
pub fn session_not_found() -> Response {
    jsonrpc_error(
        StatusCode::NOT_FOUND,
        SESSION_NOT_FOUND,
        "session not found or expired",
    )
}

/// 503 with `Retry-After: 1` and JSON-RPC error `-32002`.
pub fn store_unavailable() -> Response {
    let mut response = jsonrpc_error(
        StatusCode::SERVICE_UNAVAILABLE,
        STORE_UNAVAILABLE,
        "session store unavailable, retry",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// 500 with JSON-RPC error `-32603`. The message names the kind of failure
/// only: store errors carry no secrets, but they are not the client's
/// business either.
fn internal_error(error: &Error) -> Response {
    let kind = match error {
        Error::Closed => "session store closed",
        Error::Codec(_) => "stored session unreadable",
        _ => "session store error",
    };
    jsonrpc_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        INTERNAL_ERROR,
        &format!("internal error: {kind}"),
    )
}
