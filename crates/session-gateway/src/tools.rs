//! The MCP tools: `echo`, `counter` and `whoami`.
//!
//! The session comes from the HTTP request: the [guard](crate::guard) puts
//! the session it read into the request's extensions as a [`LoadedSession`],
//! and rmcp injects the request's [`http::request::Parts`] (extensions
//! included) into every request it hands to the handler, restored sessions
//! included. So the tools neither parse `Mcp-Session-Id` nor read the store
//! again.

use std::sync::Arc;

use http::request::Parts;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ErrorData, ServerHandler, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::json;
use session_factory::{Conditional, Error, Manager, Session};

use crate::answer::Refusal;
use crate::guard::LoadedSession;

/// The session metadata key of the `counter` tool.
pub const COUNTER_KEY: &str = "counter";

/// The arguments of `echo`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct EchoArgs {
    /// The text to return.
    pub text: String,
}

/// The gateway's MCP server: one instance per rmcp session, all sharing the
/// manager.
#[derive(Clone)]
pub struct GatewayTools {
    manager: Manager,
    replica: Arc<str>,
    tool_router: ToolRouter<Self>,
}

impl std::fmt::Debug for GatewayTools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayTools")
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

impl GatewayTools {
    /// The tools of replica `replica`, on `manager`.
    pub fn new(manager: Manager, replica: impl Into<Arc<str>>) -> Self {
        Self {
            manager,
            replica: replica.into(),
            tool_router: Self::tool_router(),
        }
    }
}

#[tool_router]
impl GatewayTools {
    /// `echo`: returns its `text` argument.
    #[tool(description = "Returns its `text` argument unchanged.")]
    pub async fn echo(&self, Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        text
    }

    /// `counter`: increments the session's counter and returns
    /// `{"count":N,"replica":..,"session":..}`.
    ///
    /// The counter is the session's metadata key `counter`. The increment is
    /// an atomic read-modify-write, so concurrent calls on one session, on
    /// any replicas, each count once: the tool first writes the session the
    /// guard loaded for this request back with the counter incremented, on
    /// condition that nobody wrote it since (`Manager::update_if` with the
    /// revision the guard read), which costs one store read (the guard's)
    /// and one write; only when another call came first does it fall back
    /// to `Manager::modify`, which reads again and retries until its write
    /// lands.
    #[tool(
        description = "Increments a counter kept in this MCP session (shared by every replica) and returns {\"count\":N,\"replica\":...,\"session\":...}."
    )]
    pub async fn counter(&self, Extension(parts): Extension<Parts>) -> Result<String, ErrorData> {
        let loaded = loaded_session(&parts)?;
        let id = loaded.id();
        let store_error = |error: Error| ErrorData::from(Refusal::store_error(&id, &error));
        let mut session = Session::clone(loaded.session());
        let count = increment(&mut session);
        let first = self
            .manager
            .update_if(session, loaded.session().revision())
            .await
            .map_err(store_error)?;
        let count = match first {
            Conditional::Written(_) => count,
            // Deleted or expired since the guard's read: a write never
            // resurrects a session.
            Conditional::Absent => return Err(Refusal::SessionNotFound.into()),
            Conditional::Conflict(_) => {
                let modified = self
                    .manager
                    .modify(&id, |session| Ok::<_, Error>(increment(session)))
                    .await
                    .map_err(store_error)?;
                match modified {
                    Some((_, count)) => count,
                    None => return Err(Refusal::SessionNotFound.into()),
                }
            }
        };
        Ok(json!({
            "count": count,
            "replica": &*self.replica,
            "session": id.to_string(),
        })
        .to_string())
    }

    /// `whoami`: returns `{"replica":..,"session":..}`, with a `null`
    /// session for a request that has none.
    #[tool(
        description = "Returns the replica serving this call and the MCP session id: {\"replica\":...,\"session\":...}."
    )]
    pub async fn whoami(&self, Extension(parts): Extension<Parts>) -> String {
        let session = parts
            .extensions
            .get::<LoadedSession>()
            .map(|loaded| loaded.id().to_string());
        json!({ "replica": &*self.replica, "session": session }).to_string()
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for GatewayTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "session-gateway",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "Sessions are shared by every replica: `counter` counts per session \
                 wherever the call lands, `whoami` tells which replica answered.",
            )
    }
}

/// The session the guard loaded for this request.
///
/// Only a request without `Mcp-Session-Id` lacks one (the guard refuses
/// every request whose session it could not load), and a stateful tool has
/// nothing to work on then.
fn loaded_session(parts: &Parts) -> Result<&LoadedSession, ErrorData> {
    parts.extensions.get::<LoadedSession>().ok_or_else(|| {
        ErrorData::invalid_request(
            "this tool needs an MCP session: connect with the initialize handshake",
            None,
        )
    })
}

/// Increments the `counter` metadata of `session` and returns the new count;
/// a value that is not a number counts as 0.
fn increment(session: &mut Session) -> u64 {
    let count = session
        .get_metadata(COUNTER_KEY)
        .and_then(|value| value.parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    session.set_metadata(COUNTER_KEY, count.to_string());
    count
}
