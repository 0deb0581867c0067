//! The session check in front of rmcp: it reads the session of every
//! request once, refuses a session that is gone, and hands the session it
//! read to the tools.
//!
//! # Why rmcp needs it
//!
//! rmcp's `StreamableHttpService` keeps live sessions in memory and consults
//! its `SessionStore` only for a session it does *not* hold: on such a
//! request it loads the saved `initialize` parameters and replays the
//! handshake (a cross-replica restore). For a session it does hold, it never
//! looks at the store again. Three things follow in a deployment of several
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
//! # What one request costs
//!
//! The guard parses `Mcp-Session-Id` once and reads the session once; it
//! hands the session it read to the tools as a [`LoadedSession`] in the
//! request's extensions. rmcp copies the request's [`http::request::Parts`],
//! extensions included, into every message it passes to the handler (the
//! tools take them with rmcp's `Extension<Parts>`), for a session it holds
//! and for one it restores alike. So a tool needs no read of its own: a
//! `tools/call counter` costs one store read (the guard's) and one write
//! (the tool's conditional `Manager::update_if`) on a replica that holds the session.
//!
//! On a replica that does not hold the session (a cold replica: another one
//! served the session so far, or this one dropped its idle copy), rmcp's
//! restore reads the session once more: it asks its `SessionStore` for the
//! saved `initialize` parameters, and that store
//! ([`session_rmcp::ManagerSessionStore`]) reads them through the manager.
//! rmcp's `SessionStore::load` sees a session id only, not the request, so
//! the guard's read cannot be handed to it. That second read is once per
//! session and replica, not per request: the restored copy then serves every
//! request that follows. `tests/store_operations.rs` counts both cases.
//!
//! # What clients see
//!
//! The answers are [`Refusal`]s, whose HTTP status, JSON-RPC code and
//! message the [`answer`](crate::answer) module defines for the guard and
//! the tools alike.
//!
//! | situation | answer |
//! |---|---|
//! | `Mcp-Session-Id` not a UUID | [`SessionNotFound`](Refusal::SessionNotFound): 404, `-32001` |
//! | session deleted, expired or never existed | [`SessionNotFound`](Refusal::SessionNotFound) |
//! | store unreachable or timed out ([`Error::is_retryable`](session_factory::Error::is_retryable)) | [`StoreUnavailable`](Refusal::StoreUnavailable): 503, `Retry-After: 1`, `-32002` |
//! | any other store error | 500, `-32603` ([`Refusal::store_error`] names the kind) |
//! | `initialize` whose new session did not reach the store | [`StoreUnavailable`](Refusal::StoreUnavailable) |
//! | `DELETE` the store could not carry out | [`StoreUnavailable`](Refusal::StoreUnavailable) |
//! | rmcp could not restore the session from the store | [`StoreUnavailable`](Refusal::StoreUnavailable) |
//!
//! rmcp's own plain-text 404 (`Not Found: Session not found`) gets the same
//! JSON-RPC body as the first two rows. The `id` of these errors is `null`:
//! the request body is not read here.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::{
    SessionId as RmcpSessionId, SessionManager,
};
use session_factory::{Session, SessionId};

use crate::Gateway;
use crate::answer::Refusal;

/// The header that names the MCP session (case-insensitive on the wire).
pub const SESSION_HEADER: &str = "mcp-session-id";

/// The session the guard read for a request, put in the request's
/// extensions for the tools; see the [module documentation](self).
///
/// Only the guard makes one, after reading the session from the store, so a
/// tool that finds one knows the session existed when its request arrived.
/// It is `Clone` (one reference count) because rmcp clones the request's
/// [`http::request::Parts`] into the messages of a restore.
#[derive(Clone, Debug)]
pub struct LoadedSession {
    session: Arc<Session>,
}

impl LoadedSession {
    /// The session's id, as parsed from `Mcp-Session-Id`.
    pub fn id(&self) -> SessionId {
        self.session.id()
    }

    /// The session as the guard read it (its sliding TTL refreshed by that
    /// read).
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }
}

/// The middleware around `/mcp`; see the [module documentation](self).
pub async fn check_session(
    State(gateway): State<Gateway>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(raw) = request.headers().get(SESSION_HEADER) else {
        // No session yet (an `initialize`): nothing to check before, but
        // rmcp's answer must be checked after.
        let response = next.run(request).await;
        return confirm_persisted(&gateway, response).await;
    };
    // The header is parsed here and nowhere else: the tools take the id
    // from the `LoadedSession`. The raw text is kept because rmcp names its
    // in-memory copy by it.
    let Some((raw, id)) = raw
        .to_str()
        .ok()
        .and_then(|raw| Some((raw.to_owned(), SessionId::parse(raw).ok()?)))
    else {
        return Refusal::SessionNotFound.into_response();
    };
    // A DELETE is carried out here, before rmcp: rmcp only logs a failure
    // to delete from its store and answers 202 anyway, which would tell the
    // client its session is gone while every replica still serves it.
    //
    // Otherwise the session is read, once for the whole request.
    let found = if request.method() == Method::DELETE {
        gateway
            .manager()
            .delete(&id)
            .await
            .map(|deleted| deleted.then_some(None))
    } else {
        gateway
            .manager()
            .get(&id)
            .await
            .map(|found| found.map(Some))
    };
    match found {
        Ok(Some(session)) => {
            // Whether the session holds rmcp's state (so that rmcp can
            // restore it) decides how rmcp's plain errors are read.
            let restorable = session.as_ref().is_some_and(|session| session.has_data());
            if let Some(session) = session {
                request.extensions_mut().insert(LoadedSession { session });
            }
            let response = next.run(request).await;
            rewrite_plain_errors(response, restorable).await
        }
        Ok(None) => {
            close_local_copy(&gateway, raw).await;
            Refusal::SessionNotFound.into_response()
        }
        Err(error) => Refusal::store_error(&id, &error).into_response(),
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
        return Refusal::Internal.into_response();
    };
    match gateway.manager().get(&id).await {
        Ok(Some(_)) => response,
        Ok(None) => {
            tracing::warn!(session = %id, "new session did not reach the store; refused");
            close_local_copy(gateway, raw).await;
            Refusal::StoreUnavailable.into_response()
        }
        // Even an error a retry would not cure is a 503 here: the client's
        // cure is a new `initialize`, and a 500 would not tell it so.
        Err(error) => {
            tracing::warn!(session = %id, %error, "cannot confirm a new session; refused");
            close_local_copy(gateway, raw).await;
            Refusal::StoreUnavailable.into_response()
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
            Refusal::StoreUnavailable.into_response()
        }
        StatusCode::NOT_FOUND => Refusal::SessionNotFound.into_response(),
        StatusCode::INTERNAL_SERVER_ERROR => {
            let (parts, body) = response.into_parts();
            // rmcp's error texts are short; anything longer is not one.
            let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
                return Refusal::Internal.into_response();
            };
            if restorable || bytes.starts_with(b"Encounter an error when restore session") {
                tracing::warn!(
                    error = %String::from_utf8_lossy(&bytes),
                    "rmcp failed on a session that is in the store; retry"
                );
                Refusal::StoreUnavailable.into_response()
            } else {
                Response::from_parts(parts, Body::from(bytes))
            }
        }
        _ => response,
    }
}
