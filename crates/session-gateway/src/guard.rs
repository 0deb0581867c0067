//! The gate in front of rmcp: every request to `/mcp` passes it once. It
//! checks the request (host, token, protocol version, body), reads the
//! session of a handshake-era request once, refuses a session that is gone
//! or foreign, and hands the caller's [`Principal`] and the session it read
//! to the tools.
//!
//! # Order: nothing refused reaches the store
//!
//! The checks run in this order, each before anything that could change
//! the store, so that a request refused for any reason leaves sessions and
//! handles exactly as they were:
//!
//! 1. `Host` against the [allowed hosts](crate::AllowedHosts), and `Origin`
//!    against the allowed origins (rmcp's own check is switched off: it
//!    would run after the guard).
//! 2. The bearer token ([`crate::auth`]): 401 without a valid one.
//! 3. The body of a `POST`, read once ([`crate::request`]): not JSON, a
//!    batch, or too large is refused; otherwise its era and id are known.
//! 4. `MCP-Protocol-Version` against the served revisions.
//! 5. The era: a 2026-07-28 request never touches a session (a stale
//!    `Mcp-Session-Id` on it is ignored, as that revision says, and a `GET` or
//!    `DELETE` is 405); a handshake-era one goes on to its session.
//! 6. The session: read once (a `DELETE` deletes it), refused as not found
//!    when it is gone or when another principal owns it (counted, see
//!    [`Gateway::foreign_requests`]).
//!
//! An `initialize` is checked against the principal's [limits](crate::limits)
//! first, and the session rmcp then creates is owned by the principal: rmcp
//! saves it through [`session_rmcp::ManagerSessionStore`] inside
//! [`session_rmcp::with_owner`].
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
//! handshake-era request that names one (a `DELETE` deletes it from the
//! store, before rmcp closes its copy), and checks that the session an
//! `initialize` created reached the store. The read refreshes the sliding TTL, a session that
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
//! the tools alike; each echoes the request's JSON-RPC id.
//!
//! | situation | answer |
//! |---|---|
//! | `Host` or `Origin` not allowed | [`HostNotAllowed`](Refusal::HostNotAllowed): 403 |
//! | no bearer token, or a refused one | [`Unauthorized`](Refusal::Unauthorized): 401 |
//! | body not JSON / a batch / too large | [`ParseError`](Refusal::ParseError) 400 / [`NotOneMessage`](Refusal::NotOneMessage) 400 / [`BodyTooLarge`](Refusal::BodyTooLarge) 413 |
//! | `MCP-Protocol-Version` not served | [`UnsupportedVersion`](Refusal::UnsupportedVersion): 400, `-32022` |
//! | `GET` or `DELETE` under 2026-07-28 | [`NotInThisEra`](Refusal::NotInThisEra): 405 |
//! | `Mcp-Session-Id` not a UUID | [`SessionNotFound`](Refusal::SessionNotFound): 404, `-32001` |
//! | session deleted, expired, never existed, or another principal's | [`SessionNotFound`](Refusal::SessionNotFound) |
//! | `initialize` beyond the principal's cap | [`LimitReached`](Refusal::LimitReached): 503 |
//! | store unreachable or timed out ([`Error::is_retryable`](session_factory::Error::is_retryable)) | [`StoreUnavailable`](Refusal::StoreUnavailable): 503, `Retry-After: 1` |
//! | any other store error | 500, `-32603` ([`Refusal::store_error`] names the kind) |
//! | `initialize` whose new session did not reach the store | [`StoreUnavailable`](Refusal::StoreUnavailable) |
//! | `DELETE` the store could not carry out | [`StoreUnavailable`](Refusal::StoreUnavailable) |
//! | rmcp could not restore the session from the store | [`StoreUnavailable`](Refusal::StoreUnavailable) |
//!
//! rmcp's own plain-text 404 (`Not Found: Session not found`) gets the same
//! JSON-RPC body as the session rows.
//!
//! # Open `GET` streams keep their session alive
//!
//! A client may hold a `GET` stream open for server notifications and send
//! no `POST` for longer than the TTL. The stream's keep-alive ticks (every
//! [`GatewayOptions::keep_alive`](crate::GatewayOptions::keep_alive)) each
//! refresh the session in the store, so it does not expire under an open
//! stream; when the stream ends, the TTL runs from its last tick.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use futures_util::StreamExt;
use rmcp::model::RequestId;
use rmcp::transport::streamable_http_server::session::{
    SessionId as RmcpSessionId, SessionManager,
};
use session_factory::{Session, SessionId};

use crate::Gateway;
use crate::answer::Refusal;
use crate::auth::{AuthError, Principal};
use crate::request::{BodyError, Era, Rpc, era_of_headers, unsupported_version};
use crate::tools::is_handle;

/// The header that names the MCP session (case-insensitive on the wire).
pub const SESSION_HEADER: &str = "mcp-session-id";
/// The largest `POST` body read: rmcp's own limit.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// The session the guard read for a request, put in the request's
/// extensions for the tools; see the [module documentation](self).
///
/// Only the guard makes one, after reading the session from the store and
/// checking that the caller owns it, so a tool that finds one knows the
/// session was the caller's when its request arrived. It is `Clone` (one
/// reference count) because rmcp clones the request's
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
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    if !gateway.allowed_hosts().allows_host(request.uri(), headers)
        || !gateway.allowed_origins().allows_origin(headers)
    {
        tracing::warn!(
            host = ?request.headers().get(header::HOST),
            origin = ?request.headers().get(header::ORIGIN),
            "refused a request with a Host or Origin not allowed (DNS rebinding protection)"
        );
        return Refusal::HostNotAllowed.answer(None);
    }
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
    let principal = match gateway
        .authenticator()
        .authenticate(request.headers(), address)
    {
        Ok(principal) => principal,
        Err(error) => {
            // The reason is logged for the operator, never sent to the
            // client, and never with the token.
            tracing::debug!(%error, "unauthenticated request refused");
            return Refusal::Unauthorized {
                missing: error == AuthError::Missing,
                resource_metadata: gateway.resource_metadata_url(request.headers()),
            }
            .answer(None);
        }
    };
    match request.method().clone() {
        Method::POST => post(gateway, principal, request, next).await,
        Method::GET | Method::DELETE => {
            if let Some(version) = unsupported_version(request.headers()) {
                return Refusal::UnsupportedVersion(version).answer(None);
            }
            if era_of_headers(request.headers()) == Era::Stateless {
                return Refusal::NotInThisEra.answer(None);
            }
            with_session(gateway, principal, request, next, None).await
        }
        // rmcp answers 405 with the methods it serves.
        _ => next.run(request).await,
    }
}

async fn post(gateway: Gateway, principal: Principal, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => bytes,
        // `to_bytes` fails on a body over the limit or one the client broke
        // off; neither can be answered better than as too large or bad.
        Err(_) => return Refusal::BodyTooLarge.answer(None),
    };
    let rpc = match Rpc::parse(&bytes, &parts.headers) {
        Ok(rpc) => rpc,
        Err(BodyError::NotJson) => return Refusal::ParseError.answer(None),
        Err(BodyError::Batch) => return Refusal::NotOneMessage.answer(None),
        Err(BodyError::NotJsonRpc(id)) => return Refusal::NotOneMessage.answer(id.as_ref()),
    };
    if let Some(version) = unsupported_version(&parts.headers) {
        return Refusal::UnsupportedVersion(version).answer(rpc.id.as_ref());
    }
    if rpc.era == Era::Stateless {
        // The revision has no sessions: a stale `Mcp-Session-Id` is ignored,
        // and the store is not consulted (such requests are served while it
        // is down, unless a tool itself needs it).
        parts.headers.remove(SESSION_HEADER);
        parts.extensions.insert(principal);
        let response = next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
        return shutting_down(&gateway, response, rpc.id.as_ref());
    }
    let request = Request::from_parts(parts, Body::from(bytes));
    if request.headers().contains_key(SESSION_HEADER) {
        return with_session(gateway, principal, request, next, rpc.id).await;
    }
    if !rpc.initialize {
        // rmcp answers that a session id is required.
        return next.run(request).await;
    }
    if let Err(refusal) = gateway
        .limits()
        .ensure_room(gateway.manager(), &principal)
        .await
    {
        return refusal.answer(rpc.id.as_ref());
    }
    // The session rmcp creates and saves during this request is owned by
    // the principal.
    let owner = principal.owner().clone();
    let mut request = request;
    request.extensions_mut().insert(principal);
    let response = session_rmcp::with_owner(owner, next.run(request)).await;
    confirm_persisted(&gateway, response, rpc.id.as_ref()).await
}

/// A handshake-era request that names a session (or a `GET`/`DELETE`
/// without one, which rmcp refuses itself).
async fn with_session(
    gateway: Gateway,
    principal: Principal,
    mut request: Request,
    next: Next,
    id: Option<RequestId>,
) -> Response {
    let Some(raw) = request.headers().get(SESSION_HEADER) else {
        return next.run(request).await;
    };
    // The header is parsed here and nowhere else: the tools take the id
    // from the `LoadedSession`. The raw text is kept because rmcp names its
    // in-memory copy by it.
    let Some((raw, session_id)) = raw
        .to_str()
        .ok()
        .and_then(|raw| Some((raw.to_owned(), SessionId::parse(raw).ok()?)))
    else {
        return Refusal::SessionNotFound.answer(id.as_ref());
    };
    let session = match gateway.manager().get(&session_id).await {
        Ok(Some(session)) => session,
        Ok(None) => {
            close_local_copy(&gateway, raw).await;
            return Refusal::SessionNotFound.answer(id.as_ref());
        }
        Err(error) => return Refusal::store_error(&session_id, &error).answer(id.as_ref()),
    };
    // A handle is a record of the store but not an MCP session; another
    // principal's session is answered exactly as one that does not exist.
    if is_handle(&session) {
        return Refusal::SessionNotFound.answer(id.as_ref());
    }
    if !principal.owns(session.owner()) {
        gateway.count_foreign(&principal, "session");
        return Refusal::SessionNotFound.answer(id.as_ref());
    }
    let method = request.method().clone();
    if method == Method::DELETE {
        // The DELETE is carried out here, before rmcp: rmcp only logs a
        // failure to delete from its store and answers 202 anyway, which
        // would tell the client its session is gone while every replica
        // still serves it.
        match gateway.manager().delete(&session_id).await {
            Ok(true) => {}
            Ok(false) => {
                close_local_copy(&gateway, raw).await;
                return Refusal::SessionNotFound.answer(id.as_ref());
            }
            Err(error) => return Refusal::store_error(&session_id, &error).answer(id.as_ref()),
        }
        request.extensions_mut().insert(principal);
        let mut response = next.run(request).await;
        // rmcp says 202 Accepted; the session is gone, not queued for
        // deletion, and the Python SDK logs every status but 200 and 204 as
        // a failed termination. 204: done, nothing to say.
        if response.status() == StatusCode::ACCEPTED {
            *response.status_mut() = StatusCode::NO_CONTENT;
            *response.body_mut() = Body::empty();
        }
        return response;
    }
    // Whether the session holds rmcp's state (so that rmcp can restore it)
    // decides how rmcp's plain errors are read.
    let restorable = session.has_data();
    let extensions = request.extensions_mut();
    extensions.insert(principal);
    extensions.insert(LoadedSession { session });
    let response = next.run(request).await;
    let response = shutting_down(&gateway, response, id.as_ref());
    let response = rewrite_plain_errors(response, restorable, id.as_ref()).await;
    if method == Method::GET && response.status() == StatusCode::OK {
        return keep_alive(&gateway, session_id, response);
    }
    response
}

/// Refreshes the session of an open `GET` stream on the stream's keep-alive
/// ticks (and on its messages), at most once per keep-alive interval; see
/// the [module documentation](self).
fn keep_alive(gateway: &Gateway, id: SessionId, response: Response) -> Response {
    let manager = gateway.manager().clone();
    let every = gateway.keep_alive();
    let (parts, body) = response.into_parts();
    let mut last = Instant::now();
    let stream = body.into_data_stream().map(move |frame: Result<Bytes, axum::Error>| {
        // A tenth of slack: a tick that comes a little early still counts.
        if last.elapsed() >= every.mul_f32(0.9) {
            last = Instant::now();
            let manager = manager.clone();
            // The read refreshes the sliding TTL; it runs beside the stream
            // so that a slow store never delays the stream's frames.
            tokio::spawn(async move {
                match manager.get(&id).await {
                    Ok(Some(_)) => {}
                    Ok(None) => tracing::info!(session = %id, "the session of an open GET stream is gone"),
                    Err(error) => tracing::warn!(session = %id, %error, "cannot refresh the session of a GET stream"),
                }
            });
        }
        frame
    });
    Response::from_parts(parts, Body::from_stream(stream))
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
async fn confirm_persisted(
    gateway: &Gateway,
    response: Response,
    rpc: Option<&RequestId>,
) -> Response {
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
        return Refusal::Internal.answer(rpc);
    };
    match gateway.manager().get(&id).await {
        Ok(Some(_)) => response,
        Ok(None) => {
            tracing::warn!(session = %id, "new session did not reach the store; refused");
            close_local_copy(gateway, raw).await;
            Refusal::StoreUnavailable.answer(rpc)
        }
        // Even an error a retry would not cure is a 503 here: the client's
        // cure is a new `initialize`, and a 500 would not tell it so.
        Err(error) => {
            tracing::warn!(session = %id, %error, "cannot confirm a new session; refused");
            close_local_copy(gateway, raw).await;
            Refusal::StoreUnavailable.answer(rpc)
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

/// Turns rmcp's plain-text 500 into [`Refusal::ShuttingDown`] while this
/// replica shuts down.
///
/// A graceful shutdown cancels rmcp's token, and rmcp then answers a request
/// still waiting for its handler's first message with a plain 500 (`empty
/// response`). The request did nothing wrong, and another replica serves it:
/// a 503 with `Retry-After` says so, where a 500 would tell the client to
/// give up.
fn shutting_down(gateway: &Gateway, response: Response, id: Option<&RequestId>) -> Response {
    let plain = !response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if plain && response.status() == StatusCode::INTERNAL_SERVER_ERROR && gateway.is_closing() {
        return Refusal::ShuttingDown.answer(id);
    }
    response
}

/// Gives rmcp's plain-text 404 (`Not Found: Session not found`) the JSON-RPC
/// body of every other session error, with the request's id. JSON answers
/// pass unchanged.
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
async fn rewrite_plain_errors(
    response: Response,
    restorable: bool,
    id: Option<&RequestId>,
) -> Response {
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
            Refusal::StoreUnavailable.answer(id)
        }
        StatusCode::NOT_FOUND => Refusal::SessionNotFound.answer(id),
        StatusCode::INTERNAL_SERVER_ERROR => {
            let (parts, body) = response.into_parts();
            // rmcp's error texts are short; anything longer is not one.
            let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
                return Refusal::Internal.answer(id);
            };
            if restorable || bytes.starts_with(b"Encounter an error when restore session") {
                tracing::warn!(
                    error = %String::from_utf8_lossy(&bytes),
                    "rmcp failed on a session that is in the store; retry"
                );
                Refusal::StoreUnavailable.answer(id)
            } else {
                Response::from_parts(parts, Body::from(bytes))
            }
        }
        _ => response,
    }
}
