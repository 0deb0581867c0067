//! An MCP streamable-HTTP server whose sessions live in a session
//! [`Manager`]: the example service of this workspace.
//!
//! Several replicas of the `session-gateway` binary run behind a load
//! balancer without session affinity and share their sessions through
//! Redis; with local storage (no `[redis]` table in the configuration file)
//! one replica serves alone. The pieces:
//!
//! - [`Gateway`] builds the axum [`Router`]: `/mcp` is rmcp's
//!   `StreamableHttpService` (stateful mode) with a
//!   [`session_rmcp::ManagerSessionStore`] on the
//!   manager, wrapped in the session check of the [`guard`] module; `/health`
//!   reports the storage's state. Every response carries an `x-served-by`
//!   header naming the replica.
//! - [`tools`]: the MCP tools `echo`, `counter` (a per-session counter kept in
//!   the session's metadata) and `whoami`.
//! - [`guard`]: the middleware that reads the session of every request
//!   naming one, once, and hands it to the tools as a
//!   [`guard::LoadedSession`]. Its documentation explains why rmcp needs it
//!   and what a request costs in store operations.
//! - [`answer`]: what a client is told when its session cannot be served,
//!   as an HTTP answer for the guard and a JSON-RPC error for the tools.
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
pub mod guard;
mod health;
pub mod tools;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::middleware;
use axum::response::Response;
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use session_factory::Manager;
use session_rmcp::ManagerSessionStore;
use tokio_util::sync::CancellationToken;

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
    /// rmcp's live sessions on this replica. The gateway holds it (instead of
    /// letting rmcp make its own) so that the [`guard`] can close a session
    /// that another replica deleted.
    sessions: Arc<LocalSessionManager>,
    /// Cancelled on shutdown: ends every rmcp session and SSE stream, so that
    /// a graceful shutdown does not wait for long-lived streams.
    cancel: CancellationToken,
    /// The `Host` header values rmcp accepts.
    allowed_hosts: AllowedHosts,
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

/// The `Host` header values a gateway accepts: rmcp's protection against DNS
/// rebinding, which refuses other hosts with a 403.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AllowedHosts {
    /// Loopback names only (`localhost`, `127.0.0.1`, `::1`, any port):
    /// rmcp's default, for a gateway that only local clients reach.
    #[default]
    Loopback,
    /// Any host: behind a balancer that checks the `Host` header itself.
    Any,
    /// These names only, each `host` (any port) or `host:port`: the public
    /// names of the service. An empty list accepts no host.
    Only(Vec<String>),
}

/// Settings of a [`Gateway`] beyond its manager and name.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GatewayOptions {
    /// The `Host` header values to accept.
    pub allowed_hosts: AllowedHosts,
    /// How long rmcp's in-memory copy of an idle session lives on this
    /// replica; see [`DEFAULT_LOCAL_IDLE_TIMEOUT`].
    pub local_idle_timeout: Duration,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            allowed_hosts: AllowedHosts::Loopback,
            local_idle_timeout: DEFAULT_LOCAL_IDLE_TIMEOUT,
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
        let mut sessions = LocalSessionManager::default();
        sessions.session_config.keep_alive = Some(options.local_idle_timeout);
        Ok(Self {
            inner: Arc::new(Inner {
                manager,
                replica,
                served_by,
                sessions: Arc::new(sessions),
                cancel: CancellationToken::new(),
                allowed_hosts: options.allowed_hosts,
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
    pub fn rmcp_sessions(&self) -> &Arc<LocalSessionManager> {
        &self.inner.sessions
    }

    /// Ends every rmcp session and SSE stream of this replica (the sessions
    /// stay in the store, so other replicas go on serving them). Called on
    /// shutdown, before waiting for in-flight requests.
    pub fn close_streams(&self) {
        self.inner.cancel.cancel();
    }

    /// The application: `/mcp` (rmcp behind the session [`guard`]) and
    /// `/health`, with `x-served-by` on every response.
    pub fn router(&self) -> Router {
        let mut config = StreamableHttpServerConfig::default()
            .with_cancellation_token(self.inner.cancel.child_token());
        // Stateful mode: rmcp keeps a session per `initialize`, saves its
        // parameters in the store and restores sessions it does not hold.
        config.legacy_session_mode = true;
        config.session_store = Some(Arc::new(ManagerSessionStore::new(
            self.inner.manager.clone(),
        )));
        config = match &self.inner.allowed_hosts {
            AllowedHosts::Loopback => config,
            AllowedHosts::Any => config.disable_allowed_hosts(),
            // rmcp reads an empty list as "any host"; a single blank entry,
            // which rmcp skips when matching, makes the list refuse every
            // host instead, as an empty `Only` says.
            AllowedHosts::Only(hosts) if hosts.is_empty() => config.with_allowed_hosts([""]),
            AllowedHosts::Only(hosts) => config.with_allowed_hosts(hosts.iter().cloned()),
        };
        let tools = GatewayTools::new(self.inner.manager.clone(), self.inner.replica.clone());
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
            .layer(middleware::map_response_with_state(
                self.clone(),
                add_served_by,
            ))
            .with_state(self.clone())
    }
}

async fn add_served_by(State(gateway): State<Gateway>, mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(SERVED_BY, gateway.inner.served_by.clone());
    response
}
