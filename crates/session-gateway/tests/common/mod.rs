//! Helpers shared by the test files: requests to a gateway's router in
//! process, and a port and an HTTP client for the ones that run the binary.
// Each test file is its own crate and uses a part of these helpers only.
#![allow(dead_code, unreachable_pub)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod processes;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use serde_json::{Value, json};
use session_factory::{
    Conditional, Description, Error, Owner, Result, Revision, Session, SessionId, Storage,
    Topology, Ttl,
};
use std::sync::Arc;
use tokio::time::Instant;
use tower::ServiceExt;

/// The MCP protocol version of every request.
pub const PROTOCOL: &str = "2025-06-18";

/// A JSON-RPC `POST /mcp` from `localhost`, in `session` if given.
pub fn post(session: Option<&str>, body: Value) -> Request<Body> {
    let mut request = Request::post("/mcp")
        .header("host", "localhost")
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", PROTOCOL);
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    request.body(Body::from(body.to_string())).unwrap()
}

/// One request through `router`.
pub async fn send(router: &Router, request: Request<Body>) -> Response<Body> {
    router.clone().oneshot(request).await.unwrap()
}

/// The whole body, as text.
pub async fn body_text(response: Response<Body>) -> String {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The JSON-RPC messages of an SSE body (its `data:` lines that hold JSON).
pub fn sse_messages(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str(data.trim()).ok())
        .collect()
}

/// An `initialize` request without a session.
pub fn initialize() -> Request<Body> {
    post(
        None,
        json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL,
                "capabilities": {},
                "clientInfo": {"name": "gateway-test", "version": "0"},
            },
        }),
    )
}

/// The MCP handshake (`initialize`, then `notifications/initialized`);
/// returns the new session's id.
pub async fn open_session(router: &Router) -> String {
    let response = send(router, initialize()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let id = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let messages = sse_messages(&body_text(response).await);
    assert_eq!(
        messages[0]["result"]["serverInfo"]["name"], "session-gateway",
        "{messages:?}"
    );
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let response = send(router, post(Some(&id), initialized)).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    id
}

/// Calls the tool `name` (no arguments) in `session` with the JSON-RPC id
/// `request_id` and returns its text result parsed as JSON; panics on any
/// other answer.
pub async fn call_tool(router: &Router, session: &str, name: &str, request_id: u64) -> Value {
    let call = json!({
        "jsonrpc": "2.0", "id": request_id, "method": "tools/call",
        "params": {"name": name, "arguments": {}},
    });
    let response = send(router, post(Some(session), call)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let messages = sse_messages(&body_text(response).await);
    let answer = messages
        .iter()
        .find(|message| message["id"] == request_id)
        .unwrap_or_else(|| panic!("no answer to {request_id}: {messages:?}"));
    let text = answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("not a text result: {answer}"));
    serde_json::from_str(text).unwrap()
}

/// A port that was free a moment ago, for a process to listen on: the test
/// environment's, which no other test of this process is handed and which
/// no outgoing connection can take before the process binds it.
pub fn free_port() -> u16 {
    session_testenv::ports::free_port().unwrap()
}

/// An HTTP client for servers on 127.0.0.1: no proxy (a proxy variable of
/// the environment must not reroute local requests), and a timeout so that
/// a hung server fails the test instead of stalling it.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A storage whose every operation fails with one error.
#[derive(Clone, Copy)]
pub struct FailingStorage(fn() -> Error);

impl FailingStorage {
    /// A storage failing every operation with `error()`.
    pub fn new(error: fn() -> Error) -> Self {
        Self(error)
    }
}

impl Storage for FailingStorage {
    async fn create(&self, _: Arc<Session>, _: Ttl) -> Result<bool> {
        Err((self.0)())
    }
    async fn update(&self, _: Arc<Session>, _: Ttl) -> Result<Option<Arc<Session>>> {
        Err((self.0)())
    }
    async fn upsert(&self, _: Arc<Session>, _: Ttl) -> Result<Arc<Session>> {
        Err((self.0)())
    }
    async fn update_if(&self, _: Arc<Session>, _: Revision, _: Ttl) -> Result<Conditional> {
        Err((self.0)())
    }
    async fn list_owned(&self, _: &Owner) -> Result<Vec<Arc<Session>>> {
        Err((self.0)())
    }
    async fn revoke_owned(&self, _: &Owner) -> Result<Vec<SessionId>> {
        Err((self.0)())
    }
    async fn get(&self, _: &SessionId, _: Ttl) -> Result<Option<Arc<Session>>> {
        Err((self.0)())
    }
    async fn expire(&self, _: &SessionId, _: Ttl) -> Result<bool> {
        Err((self.0)())
    }
    async fn delete(&self, _: &SessionId) -> Result<bool> {
        Err((self.0)())
    }
    async fn delete_expired(&self, _: Instant) -> Result<Vec<SessionId>> {
        Ok(Vec::new())
    }
    async fn count(&self) -> Result<usize> {
        Err((self.0)())
    }
    async fn ping(&self) -> Result<()> {
        Err((self.0)())
    }
    fn describe(&self) -> Description {
        Description::new("failing", Topology::Standalone, false)
    }
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}
