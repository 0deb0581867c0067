//! The MCP tools: `echo`, `whoami`, the session-scoped `counter`, and the
//! counter behind a handle: `open_counter`, `increment`, `close_counter`;
//! and what else the server offers because it is cheap and shows the shape:
//! one resource ([`REPLICA_RESOURCE`]) and one prompt ([`COUNT_PROMPT`]).
//! Logging is not offered: 2026-07-28 deprecates it (SEP-2577).
//!
//! # Sessions and handles
//!
//! A handshake-era client has a session, and `counter` counts in it. Under
//! protocol 2026-07-28 there are no sessions: state that lives across calls
//! is a *handle* that a tool mints and later calls pass back. Here a handle
//! is a record of the same store, owned by the caller's [`Principal`], with
//! the store's sliding TTL and atomic updates: `open_counter` creates it,
//! `increment` counts in it (on any replica, without lost updates), and
//! `close_counter` deletes it. Handles serve both eras alike.
//!
//! A handle that is unknown, expired, closed or another principal's gets one
//! and the same answer, a tool error starting with [`UNKNOWN_HANDLE`], so
//! that a caller cannot tell another principal's handle from one that never
//! existed (a foreign one is counted, see
//! [`Gateway::foreign_requests`](crate::Gateway::foreign_requests)).
//!
//! # Where the tools find their context
//!
//! The [guard](crate::guard) puts the caller's [`Principal`] and, for a
//! handshake-era session, the session it read ([`LoadedSession`]) into the
//! request's extensions, and rmcp injects the request's
//! [`http::request::Parts`] (extensions included) into every request it
//! hands to the handler, restored sessions and stateless requests included.
//! So the tools neither parse headers nor read the session again.

use std::borrow::Cow;
use std::sync::Arc;

use http::request::Parts;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, GetPromptRequestParams, GetPromptResponse, GetPromptResult,
    Implementation, ListPromptsResult, ListResourcesResult, PaginatedRequestParams,
    ProgressNotificationParam, Prompt, PromptMessage, ProtocolVersion, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, Resource, ResourceContents, Role, ServerCapabilities,
    ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::json;
use session_factory::{Conditional, Error, Manager, Session, SessionId, SessionType};

use crate::Foreign;
use crate::answer::Refusal;
use crate::auth::Principal;
use crate::guard::LoadedSession;
use crate::limits::Limits;
use crate::request::SUPPORTED_VERSIONS;

/// The session metadata key of the `counter` tool, and of a counter handle's
/// count.
pub const COUNTER_KEY: &str = "counter";
/// The metadata key that marks a record as a handle, and its value for a
/// counter handle.
pub const HANDLE_KIND_KEY: &str = "gateway.handle";
/// [`HANDLE_KIND_KEY`]'s value on a counter handle.
pub const COUNTER_HANDLE: &str = "counter";
/// The tool error of `counter` on a request without a session.
pub const NO_SESSION: &str = "`counter` counts per MCP session, which this request has none of \
     (protocol 2026-07-28 has no sessions): use `open_counter` and `increment`";
/// The one resource: the replica, its storage and its protocol revisions.
pub const REPLICA_RESOURCE: &str = "gateway://replica";
/// The one prompt.
pub const COUNT_PROMPT: &str = "count-with-a-handle";
/// The start of the tool error for a handle that cannot be used.
pub const UNKNOWN_HANDLE: &str = "unknown handle";

/// Whether a stored record is a handle rather than an MCP session.
pub fn is_handle(record: &Session) -> bool {
    record.get_metadata(HANDLE_KIND_KEY).is_some()
}

/// The arguments of `echo`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct EchoArgs {
    /// The text to return.
    pub text: String,
}

/// The arguments of `progress`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ProgressArgs {
    /// How many progress notifications to send, 1 to [`MAX_PROGRESS_STEPS`].
    pub steps: u32,
    /// The pause before each notification, in milliseconds, at most
    /// [`MAX_PROGRESS_INTERVAL_MS`].
    pub interval_ms: u64,
}

/// The most notifications one `progress` call sends.
pub const MAX_PROGRESS_STEPS: u32 = 1_000;
/// The longest pause `progress` makes between notifications.
pub const MAX_PROGRESS_INTERVAL_MS: u64 = 10_000;

/// The arguments of `increment` and `close_counter`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct HandleArgs {
    /// The handle `open_counter` returned.
    pub handle: String,
}

/// The gateway's MCP server: one instance per rmcp session (and per
/// stateless request), all sharing the manager.
#[derive(Clone)]
pub struct GatewayTools {
    manager: Manager,
    replica: Arc<str>,
    limits: Limits,
    foreign: Foreign,
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
    pub(crate) fn new(
        manager: Manager,
        replica: impl Into<Arc<str>>,
        limits: Limits,
        foreign: Foreign,
    ) -> Self {
        Self {
            manager,
            replica: replica.into(),
            limits,
            foreign,
            tool_router: Self::tool_router(),
        }
    }
}

/// Why a handle's read-modify-write stopped.
enum HandleFault {
    /// Not a handle, or not the caller's.
    Unusable,
    /// The store failed.
    Store(Error),
}

impl From<Error> for HandleFault {
    fn from(error: Error) -> Self {
        Self::Store(error)
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
        description = "Increments a counter kept in this MCP session (shared by every replica) and returns {\"count\":N,\"replica\":...,\"session\":...}. Needs a session (protocol revisions before 2026-07-28); under 2026-07-28 use `open_counter` and `increment`."
    )]
    pub async fn counter(
        &self,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, ErrorData> {
        let Some(loaded) = parts.extensions.get::<LoadedSession>() else {
            // Only a request without `Mcp-Session-Id` lacks one (the guard
            // refuses every request whose session it could not load), which
            // under protocol 2026-07-28 is every request. A tool error, not a
            // protocol error: the call was fine, the tool has nothing to
            // count in, and the text says what to use instead.
            return Ok(CallToolResult::error(vec![ContentBlock::text(NO_SESSION)]));
        };
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
        Ok(text(json!({
            "count": count,
            "replica": &*self.replica,
            "session": id.to_string(),
        })))
    }

    /// `progress`: sends `steps` progress notifications, `interval_ms`
    /// apart, then returns `{"steps":N,"replica":..}`: a long call whose
    /// stream a client may lose and resume (see `session_rmcp::resumable`).
    /// Without a progress token in the request it just waits as long.
    #[tool(
        description = "Sends `steps` progress notifications (1 to 1000), `interval_ms` apart (at most 10000), then returns {\"steps\":N,\"replica\":...}: a long-running call, for trying resumable streams."
    )]
    pub async fn progress(
        &self,
        context: RequestContext<RoleServer>,
        Parameters(ProgressArgs { steps, interval_ms }): Parameters<ProgressArgs>,
    ) -> Result<String, ErrorData> {
        if !(1..=MAX_PROGRESS_STEPS).contains(&steps) || interval_ms > MAX_PROGRESS_INTERVAL_MS {
            return Err(ErrorData::invalid_params(
                format!(
                    "`steps` must be 1 to {MAX_PROGRESS_STEPS} and `interval_ms` at most \
                     {MAX_PROGRESS_INTERVAL_MS}"
                ),
                None,
            ));
        }
        let token = context.meta.get_progress_token();
        for step in 1..=steps {
            // No timer at all for no pause: a zero sleep still waits for the
            // timer's next tick (1 ms), which would swamp what a benchmark
            // of the notifications measures.
            if interval_ms > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(interval_ms)).await;
            }
            if let Some(token) = &token {
                let update = ProgressNotificationParam::new(token.clone(), f64::from(step))
                    .with_total(f64::from(steps))
                    .with_message(format!("step {step} of {steps}"));
                // A client that went away cannot be told; the call goes on,
                // and a resumed stream still gets what it missed.
                if let Err(error) = context.peer.notify_progress(update).await {
                    tracing::debug!(%error, "cannot send a progress notification");
                }
            }
        }
        Ok(json!({ "steps": steps, "replica": &*self.replica }).to_string())
    }

    /// `whoami`: returns `{"replica":..,"session":..,"principal":{"issuer":..,"subject":..}}`,
    /// with a `null` session for a request that has none.
    #[tool(
        description = "Returns the replica serving this call, the MCP session id (null without a session) and the caller: {\"replica\":...,\"session\":...,\"principal\":{\"issuer\":...,\"subject\":...}}."
    )]
    pub async fn whoami(&self, Extension(parts): Extension<Parts>) -> Result<String, ErrorData> {
        let principal = principal(&parts)?;
        let (issuer, subject) = principal.identity();
        let session = parts
            .extensions
            .get::<LoadedSession>()
            .map(|loaded| loaded.id().to_string());
        Ok(json!({
            "replica": &*self.replica,
            "session": session,
            "principal": {"issuer": issuer, "subject": subject},
        })
        .to_string())
    }

    /// `open_counter`: creates a counter handle owned by the caller and
    /// returns `{"handle":..,"replica":..}`.
    ///
    /// One owner listing (the [limits](crate::limits)) and one create: the
    /// record is written whole, with its owner, kind and count, at once.
    #[tool(
        description = "Opens a counter that lives across calls and replicas, owned by the caller; returns {\"handle\":...,\"replica\":...}. Pass the handle to `increment` and `close_counter`."
    )]
    pub async fn open_counter(
        &self,
        Extension(parts): Extension<Parts>,
    ) -> Result<String, ErrorData> {
        let principal = principal(&parts)?;
        self.limits.ensure_room(&self.manager, principal).await?;
        let mut record = Session::new_owned(
            SessionId::new(),
            SessionType::Mcp,
            principal.owner().clone(),
        );
        record.set_metadata(HANDLE_KIND_KEY, COUNTER_HANDLE);
        record.set_metadata(COUNTER_KEY, "0");
        let id = record.id();
        self.manager
            .create_from(record)
            .await
            .map_err(|error| ErrorData::from(Refusal::store_error(&id, &error)))?;
        Ok(json!({ "handle": id.to_string(), "replica": &*self.replica }).to_string())
    }

    /// `increment`: adds one to the counter behind `handle` and returns
    /// `{"count":N,"replica":..}`.
    ///
    /// An atomic read-modify-write ([`Manager::modify`]): concurrent calls on
    /// one handle, on any replicas, each count once. It also refreshes the
    /// handle's sliding TTL.
    #[tool(
        description = "Increments the counter behind a handle from `open_counter` and returns {\"count\":N,\"replica\":...}."
    )]
    pub async fn increment(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(HandleArgs { handle }): Parameters<HandleArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let principal = principal(&parts)?;
        let Ok(id) = SessionId::parse(&handle) else {
            return Ok(unknown_handle());
        };
        let mut foreign = false;
        let modified = self
            .manager
            .modify(&id, |record| {
                if !is_counter_handle(record) {
                    return Err(HandleFault::Unusable);
                }
                if !principal.owns(record.owner()) {
                    foreign = true;
                    return Err(HandleFault::Unusable);
                }
                Ok(increment(record))
            })
            .await;
        match modified {
            Ok(Some((_, count))) => Ok(text(json!({ "count": count, "replica": &*self.replica }))),
            Ok(None) | Err(HandleFault::Unusable) => {
                if foreign {
                    self.foreign.record(principal, "handle");
                }
                Ok(unknown_handle())
            }
            Err(HandleFault::Store(error)) => Err(Refusal::store_error(&id, &error).into()),
        }
    }

    /// `close_counter`: deletes the handle and returns
    /// `{"closed":true,"replica":..}`.
    #[tool(
        description = "Closes a counter handle from `open_counter`; returns {\"closed\":true,\"replica\":...}."
    )]
    pub async fn close_counter(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(HandleArgs { handle }): Parameters<HandleArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let principal = principal(&parts)?;
        let Ok(id) = SessionId::parse(&handle) else {
            return Ok(unknown_handle());
        };
        let store_error = |error: Error| ErrorData::from(Refusal::store_error(&id, &error));
        let Some(record) = self.manager.get(&id).await.map_err(store_error)? else {
            return Ok(unknown_handle());
        };
        if !is_counter_handle(&record) {
            return Ok(unknown_handle());
        }
        if !principal.owns(record.owner()) {
            self.foreign.record(principal, "handle");
            return Ok(unknown_handle());
        }
        if !self.manager.delete(&id).await.map_err(store_error)? {
            return Ok(unknown_handle());
        }
        Ok(text(json!({ "closed": true, "replica": &*self.replica })))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for GatewayTools {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .enable_prompts()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new(
                "session-gateway",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "Sessions and handles are shared by every replica: `counter` counts per \
                 session (protocol revisions with the initialize handshake), \
                 `open_counter`/`increment`/`close_counter` count behind a handle (every \
                 revision), `whoami` tells which replica answered and who called.",
            )
    }

    /// Exactly the revisions the gateway serves, not rmcp's list of every
    /// revision it knows.
    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(SUPPORTED_VERSIONS)
    }

    /// One resource, [`REPLICA_RESOURCE`]: which replica answered and what
    /// it serves.
    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(vec![
            Resource::new(REPLICA_RESOURCE, "replica")
                .with_description(
                    "The replica that answers this read, its storage, and the protocol \
                     revisions it serves",
                )
                .with_mime_type("application/json"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        if request.uri != REPLICA_RESOURCE {
            // -32602, as 2026-07-28 answers an unknown resource (the
            // handshake era's -32002 is retired).
            return Err(ErrorData::invalid_params(
                format!(
                    "no resource {:?}: the one resource is {REPLICA_RESOURCE}",
                    request.uri
                ),
                // SEP-2164: the unknown URI, for the client to match.
                Some(json!({ "uri": request.uri })),
            ));
        }
        let description = self.manager.describe();
        let body = json!({
            "replica": &*self.replica,
            "storage": description.backend,
            "topology": description.topology.as_str(),
            "protocol_versions": SUPPORTED_VERSIONS.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
        });
        let mut contents = ResourceContents::text(body.to_string(), REPLICA_RESOURCE);
        if let ResourceContents::TextResourceContents { mime_type, .. } = &mut contents {
            *mime_type = Some("application/json".into());
        }
        Ok(ReadResourceResult::new(vec![contents]).into())
    }

    /// One prompt, [`COUNT_PROMPT`]: how to keep a count across calls.
    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(vec![Prompt::new(
            COUNT_PROMPT,
            Some("Asks the model to count to three with a counter handle, across replicas"),
            None,
        )]))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        if request.name != COUNT_PROMPT {
            return Err(ErrorData::invalid_params(
                format!(
                    "no prompt {:?}: the one prompt is {COUNT_PROMPT}",
                    request.name
                ),
                None,
            ));
        }
        Ok(GetPromptResult::new(vec![PromptMessage::new_text(
            Role::User,
            "Open a counter with `open_counter`, call `increment` with its handle three \
             times, report each count and the replica that answered, then close it with \
             `close_counter`.",
        )])
        .with_description("Count to three behind a handle")
        .into())
    }
}

/// The caller, as the guard authenticated it. The guard puts it on every
/// request it lets through; its absence is a bug, answered as an internal
/// error rather than served unauthenticated.
fn principal(parts: &Parts) -> Result<&Principal, ErrorData> {
    parts.extensions.get::<Principal>().ok_or_else(|| {
        tracing::error!("a tool call without the guard's principal");
        ErrorData::from(Refusal::Internal)
    })
}

fn is_counter_handle(record: &Session) -> bool {
    record.get_metadata(HANDLE_KIND_KEY) == Some(COUNTER_HANDLE)
}

/// A successful tool result of one JSON text.
fn text(value: serde_json::Value) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(value.to_string())])
}

/// The one answer for every handle that cannot be used.
fn unknown_handle() -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(format!(
        "{UNKNOWN_HANDLE}: it expired, was closed or never existed; open a new one with `open_counter`"
    ))])
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
