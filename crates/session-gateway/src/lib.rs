//! An MCP streamable-HTTP server whose sessions live in a session
//! [`Manager`]: the example service of this workspace.
//!
//! Several replicas of the `session-gateway` binary run behind a load
//! balancer without session affinity and share their sessions through
//! Redis; with local storage (no `[redis]` table in the configuration file)
//! one replica serves alone. The pieces:
//!
//! It serves both protocol eras on one `/mcp` endpoint: the handshake-era
//! revisions (2025-03-26 to 2025-11-25) with sessions, and 2026-07-28
//! statelessly, its cross-call state in handles that tools mint. Both are
//! bound to the caller's principal. The pieces:
//!
//! - [`Gateway`] builds the axum [`Router`]: `/mcp` is rmcp's
//!   `StreamableHttpService` with a [`session_rmcp::ManagerSessionStore`] on
//!   the manager, behind the [`guard`]; `/health` reports the storage's
//!   state; `/.well-known/oauth-protected-resource` describes the resource
//!   for clients that need a token. Every response carries an
//!   `x-served-by` header naming the replica.
//! - [`guard`]: the middleware that checks every request before anything
//!   touches the store (host, token, body, version, era), reads the session
//!   of a handshake-era request once, and hands it and the caller to the
//!   tools. Its documentation explains why rmcp needs it and what a request
//!   costs in store operations.
//! - [`request`]: what the guard knows of a request: its era and JSON-RPC id.
//! - [`auth`]: bearer JWTs or anonymous mode, and the [`auth::Principal`].
//! - [`limits`]: the cap on live sessions and handles per principal.
//! - [`tools`]: the MCP tools `echo`, `whoami`, `counter` (per session) and
//!   `open_counter`/`increment`/`close_counter` (behind a handle).
//! - [`answer`]: what a client is told when its request cannot be served,
//!   as an HTTP answer for the guard and a JSON-RPC error for the tools.
//! - [`settings`]: the configuration file, parsed once into typed settings.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use session_factory::{SessionConfig, SessionType, Ttl, new_manager};
//! use axum::serve::ListenerExt;
//! use session_gateway::Gateway;
//!
//! let config = SessionConfig::new(Ttl::from_secs(30 * 60)?);
//! let manager = new_manager(&config, SessionType::Streamable).await?;
//! let gateway = Gateway::new(manager, "gateway@127.0.0.1:8080")?;
//! // TCP_NODELAY: small responses must not wait for the client's delayed ACK.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080")
//!     .await?
//!     .tap_io(|stream| drop(stream.set_nodelay(true)));
//! axum::serve(listener, gateway.router()).await?;
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod answer;
pub mod auth;
pub mod guard;
mod health;
mod hosts;
pub mod limits;
pub mod request;
pub mod settings;
pub mod streams;
pub mod tools;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware;
use axum::response::Response;
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use session_factory::Manager;
use session_factory::session_redis::EventLog;
use session_rmcp::{ManagerSessionStore, ResumableSessions, ResumeSettings};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::auth::{AuthSettings, Authenticator, Principal};
pub use crate::hosts::AllowedHosts;
use crate::limits::Limits;
use crate::tools::GatewayTools;

/// The header naming the replica that answered, on every response.
pub const SERVED_BY: &str = "x-served-by";

/// One replica of the gateway: the manager, the replica's name, and rmcp's
/// in-memory sessions. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    manager: Manager,
    replica: String,
    served_by: HeaderValue,
    /// rmcp's live sessions on this replica, with their streams' events in
    /// the shared event log on Redis. The gateway holds it (instead of
    /// letting rmcp make its own) so that the [`guard`] can close a session
    /// that another replica deleted.
    sessions: Arc<ResumableSessions>,
    /// Cancelled on shutdown: ends every rmcp session and SSE stream, so that
    /// a graceful shutdown does not wait for long-lived streams.
    cancel: CancellationToken,
    /// The `Host` header values the guard accepts.
    allowed_hosts: AllowedHosts,
    /// The hosts an `Origin` header may name.
    allowed_origins: AllowedHosts,
    /// Who may call.
    authenticator: Authenticator,
    /// What one principal may hold.
    limits: Limits,
    /// The keep-alive interval of SSE streams.
    keep_alive: Duration,
    /// Requests that named another principal's session or handle.
    foreign: Foreign,
}

/// The count of requests that named another principal's session or handle,
/// shared by the guard and the tools of a replica.
#[derive(Clone, Debug, Default)]
pub(crate) struct Foreign(Arc<AtomicU64>);

impl Foreign {
    /// Counts (and logs) one request by `principal` for another's `what`.
    pub(crate) fn record(&self, principal: &Principal, what: &'static str) {
        self.0.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            caller = %principal.owner(),
            what,
            "a request named another principal's {what}; answered as unknown"
        );
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("replica", &self.inner.replica)
            .field("manager", &self.inner.manager)
            .finish_non_exhaustive()
    }
}

/// The replica name is not a valid HTTP header value.
#[derive(Debug, thiserror::Error)]
#[error("the replica name {0:?} must be visible ASCII, usable as an HTTP header value")]
pub struct InvalidReplicaName(String);

/// How long a replica keeps rmcp's in-memory copy of a session that gets no
/// requests, by default.
///
/// The copy is only a cache: the store holds the session, and a replica
/// without a copy restores one from it on the next request (rmcp replays the
/// `initialize` handshake from the stored parameters, in about a
/// millisecond). A copy is not closed when another replica deletes the
/// session, so a replica holds one copy for every session it served within
/// this time, deleted or not: memory is the session churn times this
/// duration (rmcp's own default, 5 minutes, let a soak grow each replica by
/// 400 MB). A minute keeps the cache for active sessions and bounds that.
pub const DEFAULT_LOCAL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings of a [`Gateway`] beyond its manager and name.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GatewayOptions {
    /// The `Host` header values to accept.
    pub allowed_hosts: AllowedHosts,
    /// The hosts an `Origin` header (a browser's) may name; `None`: the
    /// accepted `Host` values.
    pub allowed_origins: Option<AllowedHosts>,
    /// How long rmcp's in-memory copy of an idle session lives on this
    /// replica; see [`DEFAULT_LOCAL_IDLE_TIMEOUT`].
    pub local_idle_timeout: Duration,
    /// Who may call: anonymous mode by default.
    pub auth: AuthSettings,
    /// What one principal may hold in the store.
    pub limits: Limits,
    /// The interval of SSE keep-alive comments, on whose ticks an open `GET`
    /// stream also refreshes its session ([`DEFAULT_KEEP_ALIVE`]).
    pub keep_alive: Duration,
    /// Where the events of SSE streams go, so that a client resumes a
    /// broken stream on any replica (`Last-Event-ID`): the event log on the
    /// Redis the sessions live in. `None` (local storage): in this
    /// replica's memory, as rmcp keeps them.
    pub events: Option<EventLog>,
    /// How a resumed stream waits for events still to come.
    pub resume: ResumeSettings,
}

/// The SSE keep-alive interval by default: rmcp's.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(15);

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            allowed_hosts: AllowedHosts::Loopback,
            allowed_origins: None,
            local_idle_timeout: DEFAULT_LOCAL_IDLE_TIMEOUT,
            auth: AuthSettings::Anonymous,
            limits: Limits::default(),
            keep_alive: DEFAULT_KEEP_ALIVE,
            events: None,
            resume: ResumeSettings::default(),
        }
    }
}

impl Gateway {
    /// A gateway serving the sessions of `manager` under the name `replica`,
    /// accepting only loopback `Host` headers (rmcp's default).
    pub fn new(manager: Manager, replica: impl Into<String>) -> Result<Self, InvalidReplicaName> {
        Self::with_options(manager, replica, GatewayOptions::default())
    }

    /// A gateway with every setting of [`GatewayOptions`].
    pub fn with_options(
        manager: Manager,
        replica: impl Into<String>,
        options: GatewayOptions,
    ) -> Result<Self, InvalidReplicaName> {
        let replica = replica.into();
        let served_by =
            HeaderValue::from_str(&replica).map_err(|_| InvalidReplicaName(replica.clone()))?;
        let mut local = LocalSessionManager::default();
        local.session_config.keep_alive = Some(options.local_idle_timeout);
        let sessions = match options.events {
            Some(log) => ResumableSessions::with_log(local, log, manager.clone(), options.resume),
            None => ResumableSessions::local(local),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                manager,
                replica,
                served_by,
                sessions: Arc::new(sessions),
                cancel: CancellationToken::new(),
                allowed_origins: options
                    .allowed_origins
                    .unwrap_or_else(|| options.allowed_hosts.clone()),
                allowed_hosts: options.allowed_hosts,
                authenticator: Authenticator::new(options.auth),
                limits: options.limits,
                keep_alive: options.keep_alive,
                foreign: Foreign::default(),
            }),
        })
    }

    /// The session manager.
    pub fn manager(&self) -> &Manager {
        &self.inner.manager
    }

    /// The replica's name, as reported by `/health`, the tools and the
    /// `x-served-by` header.
    pub fn replica(&self) -> &str {
        &self.inner.replica
    }

    /// rmcp's in-memory sessions on this replica.
    pub fn rmcp_sessions(&self) -> &LocalSessionManager {
        self.inner.sessions.local_manager()
    }

    /// The event log of this replica's streams, when they resume across
    /// replicas.
    pub fn event_log(&self) -> Option<&EventLog> {
        self.inner.sessions.event_log()
    }

    /// The `Host` values this gateway accepts.
    pub fn allowed_hosts(&self) -> &AllowedHosts {
        &self.inner.allowed_hosts
    }

    /// The hosts an `Origin` header may name.
    pub fn allowed_origins(&self) -> &AllowedHosts {
        &self.inner.allowed_origins
    }

    /// Who may call.
    pub fn authenticator(&self) -> &Authenticator {
        &self.inner.authenticator
    }

    /// What one principal may hold.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The SSE keep-alive interval.
    pub fn keep_alive(&self) -> Duration {
        self.inner.keep_alive
    }

    /// How many requests named another principal's session or handle since
    /// the replica started (each answered exactly as an unknown one): a
    /// figure to alert on, reported by `/health`.
    pub fn foreign_requests(&self) -> u64 {
        self.inner.foreign.get()
    }

    pub(crate) fn count_foreign(&self, principal: &Principal, what: &'static str) {
        self.inner.foreign.record(principal, what);
    }

    /// The URL of this gateway's protected resource metadata (RFC 9728),
    /// which a 401's challenge names.
    pub fn resource_metadata_url(&self, headers: &HeaderMap) -> String {
        let resource = self.resource(headers);
        // RFC 9728 section 3.1: the well-known path goes between the host
        // and the resource's path.
        match resource.split_once("://") {
            Some((scheme, rest)) => {
                let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
                let path = if path.is_empty() {
                    String::new()
                } else {
                    format!("/{path}")
                };
                format!("{scheme}://{authority}/.well-known/oauth-protected-resource{path}")
            }
            None => format!("{resource}/.well-known/oauth-protected-resource"),
        }
    }

    /// The resource URL tokens are for: the configured one, or `/mcp` on
    /// the request's `Host` (which the guard has checked).
    fn resource(&self, headers: &HeaderMap) -> String {
        if let AuthSettings::Jwt(jwt) = self.inner.authenticator.settings()
            && let Some(resource) = jwt.resource()
        {
            return resource.to_owned();
        }
        let host = headers
            .get(header::HOST)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("localhost");
        format!("http://{host}/mcp")
    }

    /// Ends every rmcp session and SSE stream of this replica (the sessions
    /// stay in the store, so other replicas go on serving them). Called on
    /// shutdown, before waiting for in-flight requests.
    pub fn close_streams(&self) {
        self.inner.cancel.cancel();
    }

    /// Whether [`close_streams`](Gateway::close_streams) was called: the
    /// replica is shutting down.
    pub fn is_closing(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// The application: `/mcp` (rmcp behind the session [`guard`]) and
    /// `/health`, with `x-served-by` on every response.
    pub fn router(&self) -> Router {
        let mut config = StreamableHttpServerConfig::default()
            .with_cancellation_token(self.inner.cancel.child_token());
        // Handshake-era requests get rmcp's sessions: one per `initialize`,
        // its parameters saved in the store, restored where rmcp does not
        // hold it. 2026-07-28 requests are served statelessly either way.
        config.legacy_session_mode = true;
        config.session_store = Some(Arc::new(ManagerSessionStore::new(
            self.inner.manager.clone(),
        )));
        config = config.with_sse_keep_alive(Some(self.inner.keep_alive));
        // The guard checks `Host` and `Origin` before anything touches the
        // store; rmcp's check would come after the guard's read or delete.
        config = config.disable_allowed_hosts();
        let tools = GatewayTools::new(
            self.inner.manager.clone(),
            self.inner.replica.clone(),
            self.inner.limits,
            self.inner.foreign.clone(),
        );
        let mcp = StreamableHttpService::new(
            move || Ok(tools.clone()),
            self.inner.sessions.clone(),
            config,
        );

        Router::new()
            .route_service("/mcp", mcp)
            .route_layer(middleware::from_fn_with_state(
                self.clone(),
                guard::check_session,
            ))
            .route("/health", get(health::health))
            .route(
                "/.well-known/oauth-protected-resource",
                get(protected_resource),
            )
            .route(
                "/.well-known/oauth-protected-resource/mcp",
                get(protected_resource),
            )
            .layer(middleware::map_response_with_state(
                self.clone(),
                add_served_by,
            ))
            .layer(middleware::from_fn_with_state(self.clone(), request_span))
            .with_state(self.clone())
    }
}

/// Runs each request inside a `request` span naming this replica, the
/// method and the path (never a header, a session id or a token), so that
/// what is logged or traced while serving it says where it ran.
async fn request_span(
    State(gateway): State<Gateway>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let span = tracing::info_span!(
        "request",
        replica = gateway.replica(),
        method = %request.method(),
        path = request.uri().path(),
    );
    next.run(request).instrument(span).await
}

async fn add_served_by(State(gateway): State<Gateway>, mut response: Response) -> Response {
    metrics::counter!(RESPONSES, "status" => response.status().as_str().to_owned()).increment(1);
    response
        .headers_mut()
        .insert(SERVED_BY, gateway.inner.served_by.clone());
    response
}

/// The log filter without `RUST_LOG`: `info`, except two parts of rmcp.
///
/// - rmcp logs the start and end of every server instance at info, and a
///   2026-07-28 request is one instance: two lines per request.
/// - rmcp runs each session's worker inside an info span whose field is the
///   full session id, a bearer credential: every line logged inside it
///   would carry the id. Its warnings and errors still pass; the span does
///   not (`tests/request_spans.rs`).
pub const DEFAULT_LOG_FILTER: &str =
    "info,rmcp::service=warn,rmcp::transport::streamable_http_server::session=warn";

/// The gateway's HTTP responses by `status` (every route): a count of 404s
/// for sessions clients believe live, and of 503s while the store is down,
/// beside the manager's metrics (docs/metrics.md).
pub const RESPONSES: &str = "gateway_http_responses_total";

/// The protected resource metadata (RFC 9728): the resource, and in JWT
/// mode the authorization server that issues its tokens.
async fn protected_resource(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
) -> Json<serde_json::Value> {
    let mut body = serde_json::json!({
        "resource": gateway.resource(&headers),
        "bearer_methods_supported": ["header"],
    });
    if let AuthSettings::Jwt(jwt) = gateway.authenticator().settings() {
        body["authorization_servers"] = serde_json::json!([jwt.issuer()]);
    }
    Json(body)
}
