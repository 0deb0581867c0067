//! The gateway in process, for both protocol eras: 2026-07-28 requests served
//! without sessions (handles instead), bearer tokens and the binding of
//! sessions and handles to their principal, the limits, the answers to
//! malformed requests, and the rule that a refused request changes nothing
//! in the store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::num::NonZeroUsize;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use session_factory::{
    BackendErrorKind, Error, LocalStorage, Manager, SessionId, SessionType, Ttl,
};
use session_gateway::auth::{AuthSettings, JwtSettings};
use session_gateway::limits::Limits;
use session_gateway::tools::COUNTER_KEY;
use session_gateway::{Gateway, GatewayOptions};

use common::{body_text, call_tool, open_session, sse_messages};

const MODERN: &str = "2026-07-28";
const LEGACY: &str = "2025-06-18";
const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "session-gateway";
const SECRET: &[u8] = b"a test secret of at least 32 bytes!!";

fn manager() -> Manager {
    Manager::builder(LocalStorage::new(), Ttl::from_secs(60).unwrap())
        .factory(SessionType::Streamable)
        .build()
        .unwrap()
}

fn gateway_with(manager: Manager, edit: impl FnOnce(&mut GatewayOptions)) -> Gateway {
    let mut options = GatewayOptions::default();
    edit(&mut options);
    Gateway::with_options(manager, "unit", options).unwrap()
}

fn jwt_gateway(manager: Manager) -> Gateway {
    gateway_with(manager, |options| {
        options.auth = AuthSettings::Jwt(
            JwtSettings::hmac(ISSUER, AUDIENCE, Algorithm::HS256, SECRET).unwrap(),
        );
    })
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// A token for `subject`, with `claims` changed as given.
fn token_with(subject: &str, edit: impl FnOnce(&mut Value), secret: &[u8]) -> String {
    let mut claims = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "exp": now() + 300});
    edit(&mut claims);
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn token(subject: &str) -> String {
    token_with(subject, |_| {}, SECRET)
}

/// A request to `/mcp` from `localhost`; `session` and `token` when given.
struct Call {
    method: &'static str,
    version: Option<&'static str>,
    session: Option<String>,
    token: Option<String>,
    host: &'static str,
    body: Option<Vec<u8>>,
    mcp_method: Option<String>,
    mcp_name: Option<String>,
}

impl Call {
    fn post(version: &'static str, body: Value) -> Self {
        let mcp_method = body["method"].as_str().map(str::to_owned);
        // SEP-2243 mirrors the target into `Mcp-Name`: a tool's or prompt's
        // name, a resource's URI.
        let mcp_name = body["params"]["name"]
            .as_str()
            .or_else(|| body["params"]["uri"].as_str())
            .map(str::to_owned);
        Self {
            method: "POST",
            version: Some(version),
            session: None,
            token: None,
            host: "localhost",
            body: Some(body.to_string().into_bytes()),
            mcp_method,
            mcp_name,
        }
    }

    fn raw(body: &[u8]) -> Self {
        Self {
            body: Some(body.to_vec()),
            mcp_method: None,
            mcp_name: None,
            ..Self::post(LEGACY, json!({}))
        }
    }

    fn delete(version: &'static str, session: &str) -> Self {
        Self {
            method: "DELETE",
            body: None,
            mcp_method: None,
            mcp_name: None,
            ..Self::post(version, json!({})).session(session)
        }
    }

    fn get(session: &str) -> Self {
        Self {
            method: "GET",
            body: None,
            mcp_method: None,
            mcp_name: None,
            ..Self::post(LEGACY, json!({})).session(session)
        }
    }

    fn session(mut self, session: &str) -> Self {
        self.session = Some(session.to_owned());
        self
    }

    fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    fn host(mut self, host: &'static str) -> Self {
        self.host = host;
        self
    }

    fn version(mut self, version: Option<&'static str>) -> Self {
        self.version = version;
        self
    }

    fn build(self) -> Request<Body> {
        let mut request = Request::builder()
            .method(self.method)
            .uri("/mcp")
            .header("host", self.host)
            .header("accept", "application/json, text/event-stream");
        if self.body.is_some() {
            request = request.header("content-type", "application/json");
        }
        if let Some(version) = self.version {
            request = request.header("mcp-protocol-version", version);
        }
        if let Some(session) = self.session {
            request = request.header("mcp-session-id", session);
        }
        if let Some(token) = self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if self.version == Some(MODERN) {
            if let Some(method) = self.mcp_method {
                request = request.header("mcp-method", method);
            }
            if let Some(name) = self.mcp_name {
                request = request.header("mcp-name", name);
            }
        }
        request
            .body(self.body.map_or_else(Body::empty, Body::from))
            .unwrap()
    }

    async fn send(self, router: &Router) -> Response<Body> {
        use tower::ServiceExt;
        router.clone().oneshot(self.build()).await.unwrap()
    }
}

/// The `_meta` a 2026-07-28 request carries.
fn modern_meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": {"name": "eras-test", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {},
    })
}

/// A 2026-07-28 `tools/call`.
fn modern_tool(id: u64, name: &str, arguments: Value) -> Call {
    Call::post(
        MODERN,
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": name, "arguments": arguments, "_meta": modern_meta()}}),
    )
}

/// A handshake-era `tools/call` in `session`.
fn legacy_tool(id: u64, session: &str, name: &str, arguments: Value) -> Call {
    Call::post(
        LEGACY,
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": name, "arguments": arguments}}),
    )
    .session(session)
}

/// The JSON-RPC answers of a response, JSON or SSE.
async fn messages(response: Response<Body>) -> Vec<Value> {
    let json = response
        .headers()
        .get("content-type")
        .is_some_and(|value| value.to_str().unwrap().starts_with("application/json"));
    let text = body_text(response).await;
    if json {
        vec![serde_json::from_str(&text).unwrap()]
    } else {
        sse_messages(&text)
    }
}

/// The result of the answer to `id`; panics on an error.
async fn result_of(response: Response<Body>, id: u64) -> Value {
    assert_eq!(response.status(), StatusCode::OK);
    let messages = messages(response).await;
    let answer = messages
        .into_iter()
        .find(|message| message["id"] == id)
        .expect("an answer");
    assert!(answer.get("error").is_none(), "{answer}");
    answer["result"].clone()
}

/// A tool's result: its JSON text, or `Err(text)` for a tool error.
async fn tool_result(response: Response<Body>, id: u64) -> Result<Value, String> {
    let result = result_of(response, id).await;
    let text = result["content"][0]["text"].as_str().unwrap().to_owned();
    if result["isError"] == true {
        Err(text)
    } else {
        Ok(serde_json::from_str(&text).unwrap())
    }
}

/// A refusal: the status, and the JSON-RPC error body.
async fn refusal(response: Response<Body>) -> (StatusCode, Value) {
    let status = response.status();
    let body: Value = serde_json::from_str(&body_text(response).await).unwrap();
    (status, body)
}

async fn open_counter(router: &Router, call: impl FnOnce(Call) -> Call) -> String {
    let response = call(modern_tool(1, "open_counter", json!({})))
        .send(router)
        .await;
    tool_result(response, 1).await.unwrap()["handle"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn stored_counter(manager: &Manager, id: &str) -> Option<String> {
    let id = SessionId::parse(id).unwrap();
    let session = manager.get(&id).await.unwrap()?;
    session.get_metadata(COUNTER_KEY).map(str::to_owned)
}

#[tokio::test]
async fn a_modern_client_counts_behind_a_handle_without_a_session() {
    let manager = manager();
    let router = gateway_with(manager.clone(), |_| {}).router();

    let discover = Call::post(
        MODERN,
        json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": modern_meta()}}),
    )
    .send(&router)
    .await;
    assert!(discover.headers().get("mcp-session-id").is_none());
    let result = result_of(discover, 1).await;
    assert_eq!(
        result["supportedVersions"],
        json!(["2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"]),
        "{result}"
    );

    let handle = open_counter(&router, |call| call).await;
    for expected in 1..=10 {
        let response = modern_tool(expected, "increment", json!({"handle": handle}))
            .send(&router)
            .await;
        assert!(response.headers().get("mcp-session-id").is_none());
        assert_eq!(
            tool_result(response, expected).await.unwrap()["count"],
            expected
        );
    }
    assert_eq!(
        stored_counter(&manager, &handle).await.as_deref(),
        Some("10")
    );

    // A stale session id on a 2026-07-28 request is ignored, not a 404.
    let stale = SessionId::new().to_string();
    let response = modern_tool(11, "increment", json!({"handle": handle}))
        .session(&stale)
        .send(&router)
        .await;
    assert_eq!(tool_result(response, 11).await.unwrap()["count"], 11);

    // whoami has no session to report.
    let response = modern_tool(12, "whoami", json!({})).send(&router).await;
    let whoami = tool_result(response, 12).await.unwrap();
    assert_eq!(whoami["session"], Value::Null);
    assert_eq!(whoami["principal"]["subject"], "anonymous");

    let response = modern_tool(13, "close_counter", json!({"handle": handle}))
        .send(&router)
        .await;
    assert_eq!(tool_result(response, 13).await.unwrap()["closed"], true);
    assert_eq!(stored_counter(&manager, &handle).await, None);
    // Closed, unknown and malformed handles: one answer.
    for (id, handle) in [
        (14, handle.clone()),
        (15, SessionId::new().to_string()),
        (16, "nope".into()),
    ] {
        let response = modern_tool(id, "increment", json!({"handle": handle}))
            .send(&router)
            .await;
        let error = tool_result(response, id).await.unwrap_err();
        assert!(error.starts_with("unknown handle"), "{error}");
    }
}

#[tokio::test]
async fn handles_serve_the_handshake_era_too_and_are_no_sessions() {
    let manager = manager();
    let router = gateway_with(manager.clone(), |_| {}).router();
    let session = open_session(&router).await;
    let handle = call_tool(&router, &session, "open_counter", 2).await["handle"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = legacy_tool(3, &session, "increment", json!({"handle": handle}))
        .send(&router)
        .await;
    assert_eq!(tool_result(response, 3).await.unwrap()["count"], 1);
    // The session-scoped counter is another counter.
    assert_eq!(call_tool(&router, &session, "counter", 4).await["count"], 1);
    // A handle presented as a session is no session.
    let (status, body) = refusal(
        legacy_tool(5, &handle, "counter", json!({}))
            .send(&router)
            .await,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::NOT_FOUND, json!(-32001))
    );
    assert_eq!(body["id"], 5);
    // And a session presented as a handle is no handle.
    let response = legacy_tool(6, &session, "increment", json!({"handle": session}))
        .send(&router)
        .await;
    assert!(
        tool_result(response, 6)
            .await
            .unwrap_err()
            .starts_with("unknown handle")
    );
    // The session-scoped counter needs a session, which 2026-07-28 lacks:
    // a tool error that says what to use instead.
    let response = modern_tool(7, "counter", json!({})).send(&router).await;
    let error = tool_result(response, 7).await.unwrap_err();
    assert!(error.contains("open_counter"), "{error}");
}

#[tokio::test]
async fn a_modern_request_needs_no_store_but_a_handle_does() {
    let storage = common::FailingStorage::new(|| {
        Error::backend(BackendErrorKind::Unavailable, "connection refused")
    });
    let manager = Manager::builder(storage, Ttl::from_secs(60).unwrap())
        .build()
        .unwrap();
    let router = gateway_with(manager, |_| {}).router();
    let response = modern_tool(1, "echo", json!({"text": "hi"}))
        .send(&router)
        .await;
    let result = result_of(response, 1).await;
    assert_eq!(result["content"][0]["text"], "hi");
    let response = Call::post(
        MODERN,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"_meta": modern_meta()}}),
    )
    .send(&router)
    .await;
    assert!(
        result_of(response, 2).await["tools"]
            .as_array()
            .unwrap()
            .len()
            >= 6
    );
    let response = modern_tool(3, "open_counter", json!({}))
        .send(&router)
        .await;
    let answer = &messages(response).await[0];
    assert_eq!(answer["error"]["code"], -31000, "{answer}");
}

#[tokio::test]
async fn unsupported_versions_are_refused_with_the_list_and_the_request_id() {
    let router = gateway_with(manager(), |_| {}).router();
    let call = Call::post(
        "1999-01-01",
        json!({"jsonrpc": "2.0", "id": "v-1", "method": "tools/list", "params": {}}),
    );
    let (status, body) = refusal(call.send(&router).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["id"], "v-1");
    assert_eq!(body["error"]["code"], -32022);
    assert_eq!(body["error"]["data"]["requested"], "1999-01-01");
    assert_eq!(body["error"]["data"]["supported"][3], MODERN);
}

#[tokio::test]
async fn bodies_that_are_not_one_message_get_json_rpc_errors() {
    let router = gateway_with(manager(), |_| {}).router();
    let cases: [(&[u8], i64, Value); 4] = [
        (b"{this is not json", -32700, Value::Null),
        (
            br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
            -32600,
            Value::Null,
        ),
        (br#"{"id":9,"hello":"world"}"#, -32600, json!(9)),
        (b"", -32700, Value::Null),
    ];
    for (body, code, id) in cases {
        let response = Call::raw(body).send(&router).await;
        assert_eq!(response.headers()["content-type"], "application/json");
        let (status, answer) = refusal(response).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["code"], code, "{answer}");
        assert_eq!(answer["id"], id, "{answer}");
    }
}

/// Every refusal, against a `DELETE` (the session stays) and against a
/// `counter` call (the count stays): nothing refused reaches the store.
#[tokio::test]
async fn a_refused_request_changes_nothing_in_the_store() {
    let manager = manager();
    let gateway = jwt_gateway(manager.clone());
    let router = gateway.router();
    let alice = token("alice");
    let session = {
        let response = Call::post(
            LEGACY,
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": LEGACY, "capabilities": {},
                "clientInfo": {"name": "eras-test", "version": "0"}}}),
        )
        .token(&alice)
        .send(&router)
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    let response = legacy_tool(2, &session, "counter", json!({}))
        .token(&alice)
        .send(&router)
        .await;
    assert_eq!(tool_result(response, 2).await.unwrap()["count"], 1);

    let expired = token_with("alice", |claims| claims["exp"] = json!(now() - 600), SECRET);
    type Refuse = fn(Call, &str) -> Call;
    let refusals: [(&str, Refuse, StatusCode); 6] = [
        (
            "bad Host",
            |call, token| call.token(token).host("evil.example.com"),
            StatusCode::FORBIDDEN,
        ),
        (
            "bad version",
            |call, token| call.token(token).version(Some("1999-01-01")),
            StatusCode::BAD_REQUEST,
        ),
        (
            "wrong era",
            |call, token| call.token(token).version(Some(MODERN)),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        ("expired token", |call, _| call, StatusCode::UNAUTHORIZED),
        (
            "no token",
            |call, _| Call {
                token: None,
                ..call
            },
            StatusCode::UNAUTHORIZED,
        ),
        ("another principal", |call, _| call, StatusCode::NOT_FOUND),
    ];
    let bob = token("bob");
    for (name, refuse, status) in refusals {
        let token = match name {
            "expired token" => expired.as_str(),
            "another principal" => bob.as_str(),
            _ => alice.as_str(),
        };
        let base = Call::delete(LEGACY, &session).token(token);
        let response = refuse(base, token).send(&router).await;
        if name == "wrong era" {
            // Only the DELETE has no place in 2026-07-28.
            assert_eq!(response.status(), status, "{name}: DELETE");
        } else {
            assert_eq!(response.status(), status, "{name}: DELETE");
        }
        assert_eq!(
            stored_counter(&manager, &session).await.as_deref(),
            Some("1"),
            "{name}"
        );

        if name == "wrong era" {
            continue;
        }
        let call = legacy_tool(3, &session, "counter", json!({})).token(token);
        let response = refuse(call, token).send(&router).await;
        assert_eq!(response.status(), status, "{name}: counter");
        assert_eq!(
            stored_counter(&manager, &session).await.as_deref(),
            Some("1"),
            "{name}"
        );
    }
    assert_eq!(gateway.foreign_requests(), 2);
    // The owner itself deletes it.
    let response = Call::delete(LEGACY, &session)
        .token(&alice)
        .send(&router)
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(stored_counter(&manager, &session).await, None);
}

#[tokio::test]
async fn every_bad_token_is_a_401_that_names_no_reason() {
    let router = jwt_gateway(manager()).router();
    let mut none_token = token("alice");
    {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let claims = none_token.split('.').nth(1).unwrap().to_owned();
        none_token = format!(
            "{}.{claims}.",
            engine.encode(r#"{"alg":"none","typ":"JWT"}"#)
        );
    }
    let cases = [
        (
            "expired",
            token_with("alice", |c| c["exp"] = json!(now() - 600), SECRET),
        ),
        (
            "not yet valid",
            token_with("alice", |c| c["nbf"] = json!(now() + 600), SECRET),
        ),
        (
            "wrong issuer",
            token_with("alice", |c| c["iss"] = json!("https://evil.test"), SECRET),
        ),
        (
            "wrong audience",
            token_with("alice", |c| c["aud"] = json!("another-service"), SECRET),
        ),
        (
            "bad signature",
            token_with("alice", |_| {}, b"another secret of at least 32 bytes!"),
        ),
        ("alg none", none_token),
        ("garbage", "not.a.token".to_owned()),
    ];
    let call = || modern_tool(1, "whoami", json!({}));
    for (name, bad) in cases {
        let response = call().token(&bad).send(&router).await;
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        let (status, body) = refusal(response).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}");
        assert_eq!(
            challenge,
            "Bearer error=\"invalid_token\", resource_metadata=\"http://localhost/.well-known/oauth-protected-resource/mcp\"",
            "{name}"
        );
        assert_eq!(body["error"]["code"], -31002, "{name}");
        assert_eq!(body["error"]["message"], "invalid bearer token", "{name}");
        let text = body.to_string().to_lowercase();
        for word in ["expired", "issuer", "audience", "signature", "none", "nbf"] {
            assert!(
                !text.contains(word),
                "{name}: the answer says {word}: {text}"
            );
        }
    }
    let response = call().send(&router).await;
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer resource_metadata=\"http://localhost/.well-known/oauth-protected-resource/mcp\""
    );
    assert_eq!(
        refusal(response).await.1["error"]["message"],
        "missing bearer token"
    );
    // The metadata the challenge points at.
    let metadata = Request::get("/.well-known/oauth-protected-resource/mcp")
        .header("host", "localhost")
        .body(Body::empty())
        .unwrap();
    let response = common::send(&router, metadata).await;
    assert_eq!(response.status(), StatusCode::OK);
    let metadata: Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(metadata["resource"], "http://localhost/mcp");
    assert_eq!(metadata["authorization_servers"], json!([ISSUER]));
    // A good token is served, as its (issuer, subject).
    let response = call().token(&token("alice")).send(&router).await;
    let whoami = tool_result(response, 1).await.unwrap();
    assert_eq!(
        whoami["principal"],
        json!({"issuer": ISSUER, "subject": "alice"})
    );
}

#[tokio::test]
async fn another_principal_sees_nothing_of_a_handle() {
    let manager = manager();
    let gateway = jwt_gateway(manager.clone());
    let router = gateway.router();
    let (alice, bob) = (token("alice"), token("bob"));
    let handle = open_counter(&router, |call| call.token(&alice)).await;
    let response = modern_tool(2, "increment", json!({"handle": handle}))
        .token(&bob)
        .send(&router)
        .await;
    let foreign = tool_result(response, 2).await.unwrap_err();
    let response = modern_tool(
        3,
        "increment",
        json!({"handle": SessionId::new().to_string()}),
    )
    .token(&bob)
    .send(&router)
    .await;
    let unknown = tool_result(response, 3).await.unwrap_err();
    assert_eq!(
        foreign, unknown,
        "a foreign handle must look exactly like an unknown one"
    );
    let response = modern_tool(4, "close_counter", json!({"handle": handle}))
        .token(&bob)
        .send(&router)
        .await;
    assert_eq!(tool_result(response, 4).await.unwrap_err(), unknown);
    assert_eq!(gateway.foreign_requests(), 2);
    assert_eq!(
        stored_counter(&manager, &handle).await.as_deref(),
        Some("0")
    );
    // A refreshed token of alice's is still alice.
    let refreshed = token_with("alice", |c| c["exp"] = json!(now() + 900), SECRET);
    let response = modern_tool(5, "increment", json!({"handle": handle}))
        .token(&refreshed)
        .send(&router)
        .await;
    assert_eq!(tool_result(response, 5).await.unwrap()["count"], 1);
}

#[tokio::test]
async fn a_principal_at_its_cap_opens_no_more() {
    let manager = manager();
    let router = gateway_with(manager.clone(), |options| {
        options.auth = AuthSettings::Jwt(
            JwtSettings::hmac(ISSUER, AUDIENCE, Algorithm::HS256, SECRET).unwrap(),
        );
        options.limits = Limits::per_principal(NonZeroUsize::new(2).unwrap());
    })
    .router();
    let (alice, bob) = (token("alice"), token("bob"));
    open_counter(&router, |call| call.token(&alice)).await;
    open_counter(&router, |call| call.token(&alice)).await;
    let response = modern_tool(3, "open_counter", json!({}))
        .token(&alice)
        .send(&router)
        .await;
    let answer = &messages(response).await[0];
    assert_eq!(answer["error"]["code"], -31001, "{answer}");
    let initialize = Call::post(
        LEGACY,
        json!({"jsonrpc": "2.0", "id": 4, "method": "initialize", "params": {
            "protocolVersion": LEGACY, "capabilities": {},
            "clientInfo": {"name": "eras-test", "version": "0"}}}),
    );
    let (status, body) = refusal(initialize.token(&alice).send(&router).await).await;
    assert_eq!(
        (status, body["error"]["code"].clone(), body["id"].clone()),
        (StatusCode::SERVICE_UNAVAILABLE, json!(-31001), json!(4))
    );
    // Another principal has its own room.
    open_counter(&router, |call| call.token(&bob)).await;
}

/// A GET stream that stays open refreshes its session on keep-alive ticks,
/// past several TTLs without a POST; without it, the session expires.
#[tokio::test(start_paused = true)]
async fn an_open_get_stream_keeps_its_session_alive() {
    let manager = Manager::builder(LocalStorage::new(), Ttl::from_secs(2).unwrap())
        .factory(SessionType::Streamable)
        .build()
        .unwrap();
    let router = gateway_with(manager.clone(), |options| {
        options.keep_alive = Duration::from_millis(500);
    })
    .router();
    let streaming = open_session(&router).await;
    let idle = open_session(&router).await;
    let response = Call::get(&streaming).send(&router).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let until = tokio::time::Instant::now() + Duration::from_secs(7);
    while tokio::time::Instant::now() < until {
        use http_body_util::BodyExt;
        let frame = tokio::time::timeout(Duration::from_secs(1), body.frame()).await;
        assert!(frame.is_ok(), "the stream went quiet");
        // Let the spawned refresh run.
        tokio::task::yield_now().await;
    }
    let alive = SessionId::parse(&streaming).unwrap();
    let expired = SessionId::parse(&idle).unwrap();
    assert!(
        manager.get(&expired).await.unwrap().is_none(),
        "the idle session should expire"
    );
    assert!(
        manager.get(&alive).await.unwrap().is_some(),
        "the streaming session expired"
    );
    drop(body);
}

/// The one resource and the one prompt, under 2026-07-28: listed, read and
/// got; an unknown one is invalid params (-32602), not the retired -32002.
#[tokio::test]
async fn the_resource_and_the_prompt_are_served() {
    let router = gateway_with(manager(), |_| {}).router();
    let request = |id: u64, method: &str, params: Value| {
        let mut params = params;
        params["_meta"] = modern_meta();
        Call::post(
            MODERN,
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        )
    };
    let listed = result_of(
        request(1, "resources/list", json!({})).send(&router).await,
        1,
    )
    .await;
    assert_eq!(
        listed["resources"][0]["uri"], "gateway://replica",
        "{listed}"
    );
    let read = result_of(
        request(2, "resources/read", json!({"uri": "gateway://replica"}))
            .send(&router)
            .await,
        2,
    )
    .await;
    let body: Value = serde_json::from_str(read["contents"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(body["replica"], "unit");
    assert_eq!(body["storage"], "local");
    assert_eq!(body["protocol_versions"][3], MODERN);
    let response = request(3, "resources/read", json!({"uri": "gateway://nothing"}))
        .send(&router)
        .await;
    let answer = &messages(response).await[0];
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    assert_eq!(
        answer["error"]["data"]["uri"], "gateway://nothing",
        "{answer}"
    );

    let prompts = result_of(request(4, "prompts/list", json!({})).send(&router).await, 4).await;
    assert_eq!(
        prompts["prompts"][0]["name"], "count-with-a-handle",
        "{prompts}"
    );
    assert!(prompts["prompts"][0]["description"].is_string());
    let prompt = result_of(
        request(5, "prompts/get", json!({"name": "count-with-a-handle"}))
            .send(&router)
            .await,
        5,
    )
    .await;
    let text = prompt["messages"][0]["content"]["text"].as_str().unwrap();
    assert!(text.contains("open_counter"), "{prompt}");
}

/// A replica that is shutting down cuts a 2026-07-28 request short; the
/// client is told to retry (elsewhere), with the request's id, not given
/// rmcp's plain 500.
#[tokio::test]
async fn a_request_cut_short_by_a_shutdown_is_a_503_to_retry() {
    let gateway = gateway_with(manager(), |_| {});
    let router = gateway.router();
    gateway.close_streams();
    assert!(gateway.is_closing());
    let response = modern_tool(41, "echo", json!({"text": "hi"}))
        .send(&router)
        .await;
    assert_eq!(response.headers()["retry-after"], "1");
    let (status, body) = refusal(response).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], -31003, "{body}");
    assert_eq!(body["id"], 41, "{body}");
}
