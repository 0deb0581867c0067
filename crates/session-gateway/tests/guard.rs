//! The gateway in process: the session check's answers (404, 503, 500 with
//! JSON-RPC bodies), `x-served-by`, `/health`, and a session's life through
//! `initialize`, `counter` and a deletion behind rmcp's back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use rmcp::transport::streamable_http_server::session::SessionManager;
use serde_json::{Value, json};
use session_factory::{
    BackendErrorKind, Conditional, Description, Error, LocalStorage, Manager, Owner, Result,
    Revision, Session, SessionId, SessionType, Storage, Ttl,
};
use session_gateway::{AllowedHosts, Gateway, GatewayOptions};
use tokio::time::Instant;

use common::{
    FailingStorage, PROTOCOL, body_text, call_tool, initialize, open_session, post, send,
};

/// A manager on a new local storage, making streamable sessions.
fn local_manager() -> Manager {
    manager_on(LocalStorage::new())
}

/// A manager on `storage`, making streamable sessions.
fn manager_on(storage: impl Storage) -> Manager {
    Manager::builder(storage, Ttl::from_secs(60).unwrap())
        .factory(SessionType::Streamable)
        .build()
        .unwrap()
}

fn local_gateway() -> Gateway {
    let manager = local_manager();
    Gateway::new(manager, "unit").unwrap()
}

fn failing_gateway(error: fn() -> Error) -> Gateway {
    let manager = manager_on(FailingStorage::new(error));
    Gateway::new(manager, "unit").unwrap()
}

fn unavailable() -> Error {
    Error::backend(BackendErrorKind::Unavailable, "connection refused")
}

fn auth_failure() -> Error {
    Error::backend(BackendErrorKind::Auth, "WRONGPASS")
}

fn ping(session: &str) -> Request<Body> {
    post(
        Some(session),
        json!({"jsonrpc": "2.0", "id": 7, "method": "ping"}),
    )
}

/// Checks status, `x-served-by` and the JSON-RPC error body.
async fn assert_jsonrpc_error(response: Response<Body>, status: StatusCode, code: i64, id: Value) {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["x-served-by"], "unit");
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(body["jsonrpc"], "2.0");
    // The request's own id, echoed (`null` for a DELETE, which has no body).
    assert_eq!(body["id"], id, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

#[tokio::test]
async fn an_id_that_is_not_a_uuid_is_404() {
    let router = local_gateway().router();
    for id in ["not-a-uuid", "", "12345"] {
        assert_jsonrpc_error(
            send(&router, ping(id)).await,
            StatusCode::NOT_FOUND,
            -32001,
            json!(7),
        )
        .await;
    }
}

#[tokio::test]
async fn an_unknown_session_is_404() {
    let router = local_gateway().router();
    let id = SessionId::new().to_string();
    assert_jsonrpc_error(
        send(&router, ping(&id)).await,
        StatusCode::NOT_FOUND,
        -32001,
        json!(7),
    )
    .await;
}

#[tokio::test]
async fn an_unreachable_store_is_503_with_retry_after() {
    let router = failing_gateway(unavailable).router();
    let response = send(&router, ping(&SessionId::new().to_string())).await;
    assert_eq!(response.headers()["retry-after"], "1");
    assert_jsonrpc_error(response, StatusCode::SERVICE_UNAVAILABLE, -31000, json!(7)).await;
}

#[tokio::test]
async fn other_store_errors_are_500() {
    let router = failing_gateway(auth_failure).router();
    let response = send(&router, ping(&SessionId::new().to_string())).await;
    assert_jsonrpc_error(
        response,
        StatusCode::INTERNAL_SERVER_ERROR,
        -32603,
        json!(7),
    )
    .await;
}

/// A session record rmcp cannot restore (made by other code, without rmcp's
/// state) passes the check; rmcp then answers its plain-text 404, which gets
/// the JSON-RPC body too.
#[tokio::test]
async fn rmcps_own_404_gets_a_jsonrpc_body() {
    let gateway = local_gateway();
    let foreign = gateway.manager().create().await.unwrap();
    let router = gateway.router();
    let response = send(&router, ping(&foreign.id().to_string())).await;
    assert_jsonrpc_error(response, StatusCode::NOT_FOUND, -32001, json!(7)).await;
}

#[tokio::test]
async fn every_response_names_the_replica() {
    let router = local_gateway().router();
    let health = send(
        &router,
        Request::get("/health").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(health.headers()["x-served-by"], "unit");
    let missing = send(
        &router,
        Request::get("/nowhere").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.headers()["x-served-by"], "unit");
}

#[tokio::test]
async fn health_reports_local_storage_and_failures() {
    let gateway = local_gateway();
    gateway.manager().create().await.unwrap();
    let router = gateway.router();
    let response = send(
        &router,
        Request::get("/health").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(
        body,
        json!({"status": "ok", "replica": "unit", "storage": "local", "topology": "in-process", "foreign_requests": 0, "sessions": 1})
    );

    let router = failing_gateway(unavailable).router();
    let response = send(
        &router,
        Request::get("/health").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["replica"], "unit");
    assert!(
        body["error"].as_str().unwrap().contains("unavailable"),
        "{body}"
    );
}

/// initialize, `counter` twice, then the session is deleted behind rmcp's
/// back (as another replica would): the next request is a JSON-RPC 404 and
/// rmcp's in-memory copy is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_deleted_elsewhere_is_closed_here() {
    let gateway = local_gateway();
    let router = gateway.router();

    let id = open_session(&router).await;

    for expected in 1..=2 {
        assert_eq!(
            call_tool(&router, &id, "counter", 10 + expected).await,
            json!({"count": expected, "replica": "unit", "session": id})
        );
    }

    let rmcp_id = id.as_str().into();
    assert!(gateway.rmcp_sessions().has_session(&rmcp_id).await.unwrap());
    let session_id = SessionId::parse(&id).unwrap();
    assert!(gateway.manager().delete(&session_id).await.unwrap());

    assert_jsonrpc_error(
        send(&router, ping(&id)).await,
        StatusCode::NOT_FOUND,
        -32001,
        json!(7),
    )
    .await;
    // The worker task finishes the close in the background.
    let deadline = Instant::now() + Duration::from_secs(5);
    while gateway.rmcp_sessions().has_session(&rmcp_id).await.unwrap() {
        assert!(Instant::now() < deadline, "rmcp still holds the session");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// rmcp only logs a failure to save a new session and answers `initialize`
/// as if all were well; the gateway must refuse it instead, or the client
/// would hold a session that no other replica can serve.
#[tokio::test]
async fn an_initialize_whose_session_was_not_stored_is_503_and_not_kept() {
    let gateway = failing_gateway(unavailable);
    let router = gateway.router();
    let response = send(&router, initialize()).await;
    assert!(response.headers().get("mcp-session-id").is_none());
    assert_eq!(response.headers()["retry-after"], "1");
    assert_jsonrpc_error(response, StatusCode::SERVICE_UNAVAILABLE, -31000, json!(1)).await;
    // The in-memory copy rmcp made is closed (in the background).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gateway.rmcp_sessions().sessions.read().await.is_empty() {
        assert!(Instant::now() < deadline, "rmcp still holds the session");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An idle session's in-memory copy is dropped after the local idle timeout
/// and restored from the store by the next request: memory follows the
/// sessions in use, and nothing is lost.
#[tokio::test]
async fn an_idle_copy_is_dropped_and_restored_from_the_store() {
    let manager = local_manager();
    let mut options = GatewayOptions::default();
    options.local_idle_timeout = Duration::from_millis(300);
    let gateway = Gateway::with_options(manager, "unit", options).unwrap();
    let router = gateway.router();
    let id = open_session(&router).await;
    let rmcp_id = id.as_str().into();
    let deadline = Instant::now() + Duration::from_secs(5);
    while gateway.rmcp_sessions().has_session(&rmcp_id).await.unwrap() {
        assert!(Instant::now() < deadline, "the idle copy was not dropped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        call_tool(&router, &id, "counter", 2).await,
        json!({"count": 1, "replica": "unit", "session": id})
    );
    assert!(gateway.rmcp_sessions().has_session(&rmcp_id).await.unwrap());
}

/// Local storage with chosen failures, as an unreachable Redis would give.
#[derive(Clone)]
struct Faulty {
    inner: LocalStorage,
    deletes_fail: bool,
    /// Whether the load with this index (from 0) fails.
    load_fails: fn(usize) -> bool,
    loads: Arc<std::sync::atomic::AtomicUsize>,
}

impl Faulty {
    fn new(inner: LocalStorage) -> Self {
        Self {
            inner,
            deletes_fail: false,
            load_fails: |_| false,
            loads: Arc::default(),
        }
    }
}

impl Storage for Faulty {
    async fn create(&self, session: Arc<Session>, ttl: Ttl) -> Result<bool> {
        self.inner.create(session, ttl).await
    }
    async fn update(&self, session: Arc<Session>, ttl: Ttl) -> Result<Option<Arc<Session>>> {
        self.inner.update(session, ttl).await
    }
    async fn upsert(&self, session: Arc<Session>, ttl: Ttl) -> Result<Arc<Session>> {
        self.inner.upsert(session, ttl).await
    }
    async fn update_if(
        &self,
        session: Arc<Session>,
        expected: Revision,
        ttl: Ttl,
    ) -> Result<Conditional> {
        self.inner.update_if(session, expected, ttl).await
    }
    async fn list_owned(&self, owner: &Owner) -> Result<Vec<Arc<Session>>> {
        self.inner.list_owned(owner).await
    }
    async fn revoke_owned(&self, owner: &Owner) -> Result<Vec<SessionId>> {
        self.inner.revoke_owned(owner).await
    }
    async fn get(&self, id: &SessionId, ttl: Ttl) -> Result<Option<Arc<Session>>> {
        let index = self.loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if (self.load_fails)(index) {
            return Err(Error::backend(
                BackendErrorKind::Io,
                "load: Connection closed.",
            ));
        }
        self.inner.get(id, ttl).await
    }
    async fn expire(&self, id: &SessionId, ttl: Ttl) -> Result<bool> {
        self.inner.expire(id, ttl).await
    }
    async fn delete(&self, id: &SessionId) -> Result<bool> {
        if self.deletes_fail {
            return Err(unavailable());
        }
        self.inner.delete(id).await
    }
    async fn delete_expired(&self, before: Instant) -> Result<Vec<SessionId>> {
        self.inner.delete_expired(before).await
    }
    async fn count(&self) -> Result<usize> {
        self.inner.count().await
    }
    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
    fn describe(&self) -> Description {
        self.inner.describe()
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

fn faulty_gateway(storage: Faulty) -> Gateway {
    let manager = manager_on(storage);
    Gateway::new(manager, "unit").unwrap()
}

fn delete_request(session: &str) -> Request<Body> {
    Request::delete("/mcp")
        .header("host", "localhost")
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", PROTOCOL)
        .body(Body::empty())
        .unwrap()
}

/// rmcp answers 202 to a `DELETE` even when deleting from its store failed;
/// the gateway must say 503 instead, and the session must go on working.
#[tokio::test]
async fn a_delete_the_store_cannot_carry_out_is_503_and_the_session_stays() {
    let mut storage = Faulty::new(LocalStorage::default());
    storage.deletes_fail = true;
    let gateway = faulty_gateway(storage);
    let router = gateway.router();
    let id = open_session(&router).await;
    let response = send(&router, delete_request(&id)).await;
    assert_eq!(response.headers()["retry-after"], "1");
    assert_jsonrpc_error(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        -31000,
        Value::Null,
    )
    .await;
    let session_id = SessionId::parse(&id).unwrap();
    assert!(gateway.manager().get(&session_id).await.unwrap().is_some());
    let response = send(&router, ping(&id)).await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// A `DELETE` that works: 204 (rmcp's 202 made final), then the session is gone for every request,
/// and a second `DELETE` is a 404.
#[tokio::test]
async fn a_delete_removes_the_session_from_the_store() {
    let gateway = local_gateway();
    let router = gateway.router();
    let id = open_session(&router).await;
    let response = send(&router, delete_request(&id)).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let session_id = SessionId::parse(&id).unwrap();
    assert!(gateway.manager().get(&session_id).await.unwrap().is_none());
    assert_jsonrpc_error(
        send(&router, ping(&id)).await,
        StatusCode::NOT_FOUND,
        -32001,
        json!(7),
    )
    .await;
    assert_jsonrpc_error(
        send(&router, delete_request(&id)).await,
        StatusCode::NOT_FOUND,
        -32001,
        Value::Null,
    )
    .await;
}

/// A replica restoring a session it does not hold reads the store twice
/// (the guard, then rmcp); when rmcp's read fails, rmcp answers a plain 500,
/// which the gateway turns into a 503 to retry.
#[tokio::test]
async fn a_restore_that_cannot_read_the_store_is_503() {
    let store = LocalStorage::default();
    let home = Gateway::new(manager_on(store.clone()), "unit").unwrap();
    let id = open_session(&home.router()).await;
    // The other replica: its first read (the guard's) works, the second
    // (rmcp's restore) fails.
    let mut storage = Faulty::new(store);
    storage.load_fails = |index| index == 1;
    let other = faulty_gateway(storage).router();
    let response = send(&other, ping(&id)).await;
    assert_eq!(response.headers()["retry-after"], "1");
    assert_jsonrpc_error(response, StatusCode::SERVICE_UNAVAILABLE, -31000, json!(7)).await;
    // A retry at once races rmcp's clean-up of the failed restore (rmcp
    // then answers 404 to it): still a 503, never a 404.
    let response = send(&other, ping(&id)).await;
    assert_ne!(response.status(), StatusCode::NOT_FOUND);
    // A retry after the `Retry-After` pause restores the session.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(send(&other, ping(&id)).await.status(), StatusCode::OK);
}

/// Which `Host` headers each `AllowedHosts` lets through to rmcp, which
/// answers 403 to the others (its protection against DNS rebinding).
#[tokio::test]
async fn allowed_hosts_decide_which_host_headers_reach_rmcp() {
    let only = AllowedHosts::Only(vec![
        "mcp.example.com".into(),
        "api.example.com:8443".into(),
    ]);
    let cases = [
        (
            AllowedHosts::Loopback,
            [
                ("localhost", 200),
                ("127.0.0.1:8080", 200),
                ("mcp.example.com", 403),
            ],
        ),
        (
            AllowedHosts::Any,
            [
                ("localhost", 200),
                ("mcp.example.com", 200),
                ("evil.example", 200),
            ],
        ),
        (
            only,
            [
                ("mcp.example.com:80", 200),
                ("api.example.com:8443", 200),
                ("localhost", 403),
            ],
        ),
        // An empty list accepts no host, although rmcp's own empty list
        // would accept any.
        (
            AllowedHosts::Only(Vec::new()),
            [
                ("localhost", 403),
                ("mcp.example.com", 403),
                ("evil.example", 403),
            ],
        ),
    ];
    for (allowed_hosts, hosts) in cases {
        let mut options = GatewayOptions::default();
        options.allowed_hosts = allowed_hosts.clone();
        let manager = local_manager();
        let router = Gateway::with_options(manager, "unit", options)
            .unwrap()
            .router();
        for (host, status) in hosts {
            let mut request = initialize();
            request.headers_mut().insert("host", host.parse().unwrap());
            let response = send(&router, request).await;
            assert_eq!(
                response.status().as_u16(),
                status,
                "{allowed_hosts:?}, Host: {host}"
            );
        }
    }
}
