//! The MCP tools: `echo`, `counter` and `whoami`.
//!
//! The session id comes from the HTTP request: rmcp injects the request's
//! [`http::request::Parts`] into the extensions of every request it hands to
//! the handler, restored sessions included, and the `Mcp-Session-Id` header
//! is among them.

use std::sync::Arc;

use http::request::Parts;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{ErrorCode, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ErrorData, ServerHandler, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::json;
use session_factory::{Error, Manager, SessionId};

use crate::guard::{SESSION_HEADER, SESSION_NOT_FOUND, STORE_UNAVAILABLE};

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
    /// The counter is the session's metadata key `counter`, read with
    /// `Manager::get` and written with `Manager::update`, so every replica
    /// sees the same count. Read and write are two operations: two calls on
    /// one session that run at once can both read N and both write N + 1
    /// (last write wins; there is no compare-and-set).
    #[tool(
        description = "Increments a counter kept in this MCP session (shared by every replica) and returns {\"count\":N,\"replica\":...,\"session\":...}."
    )]
    pub async fn counter(&self, Extension(parts): Extension<Parts>) -> Result<String, ErrorData> {
        let id = session_of(&parts)?;
        let session = self
            .manager
            .get(&id)
            .await
            .map_err(store_error)?
            .ok_or_else(session_gone)?;
        let mut session = Arc::unwrap_or_clone(session);
        let count = session
            .get_metadata(COUNTER_KEY)
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        session.set_metadata(COUNTER_KEY, count.to_string());
        if !self.manager.update(session).await.map_err(store_error)? {
            // Deleted or expired between the read and the write: `update`
            // never resurrects a session.
            return Err(session_gone());
        }
        Ok(json!({
            "count": count,
            "replica": &*self.replica,
            "session": id.to_string(),
        })
        .to_string())
    }

    /// `whoami`: returns `{"replica":..,"session":..}`.
    #[tool(
        description = "Returns the replica serving this call and the MCP session id: {\"replica\":...,\"session\":...}."
    )]
    pub async fn whoami(&self, Extension(parts): Extension<Parts>) -> Result<String, ErrorData> {
        let session = parts
            .headers
            .get(SESSION_HEADER)
            .and_then(|value| value.to_str().ok());
        Ok(json!({ "replica": &*self.replica, "session": session }).to_string())
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

/// The session id of the request, from its `Mcp-Session-Id` header.
fn session_of(parts: &Parts) -> Result<SessionId, ErrorData> {
    let header = parts
        .headers
        .get(SESSION_HEADER)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| {
            ErrorData::invalid_request(
                "this tool needs an MCP session: connect with the initialize handshake",
                None,
            )
        })?;
    SessionId::parse(header).map_err(|_| session_gone())
}

fn session_gone() -> ErrorData {
    ErrorData::new(
        ErrorCode(SESSION_NOT_FOUND),
        "session not found or expired",
        None,
    )
}

fn store_error(error: Error) -> ErrorData {
    if error.is_retryable() {
        ErrorData::new(
            ErrorCode(STORE_UNAVAILABLE),
            "session store unavailable, retry",
            None,
        )
    } else {
        tracing::error!(%error, "session store failed in a tool");
        ErrorData::internal_error("session store error", None)
    }
}
