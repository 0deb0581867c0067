//! Span export over OTLP/HTTP (`--otlp-endpoint`): a gateway process sends
//! its request spans, carrying the replica, and the store's operation spans
//! to a collector (a plain HTTP endpoint of the test's own, which keeps the
//! protobuf bodies it is sent), and no full session id is among them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use reqwest::StatusCode;
use serde_json::json;

use common::processes::{Children, GATEWAY, HTTP_PROTOCOL as PROTOCOL, post_to, wait_health};
use common::{free_port, http};

const REPLICA: &str = "otlp-test-replica";

/// A collector that keeps every body posted to `/v1/traces`.
async fn collector() -> (u16, Arc<Mutex<Vec<Bytes>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let kept = kept.clone();
            async move {
                kept.lock().unwrap().push(body);
                // An empty protobuf message is a valid, empty export reply.
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, bodies)
}

/// Every byte the collector received, as lossy text: span names, attribute
/// keys and string values are plain UTF-8 in the protobuf encoding.
fn received(bodies: &Mutex<Vec<Bytes>>) -> String {
    bodies
        .lock()
        .unwrap()
        .iter()
        .map(|body| String::from_utf8_lossy(body).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_with_the_replica_and_no_session_id() {
    let (collector_port, bodies) = collector().await;
    let mut children = Children::new();
    let port = free_port();
    let mut command = Command::new(GATEWAY);
    command
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--replica", REPLICA])
        .args([
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{collector_port}"),
        ])
        .env(
            "RUST_LOG",
            format!("{},session_core=debug", session_gateway::DEFAULT_LOG_FILTER),
        )
        // The batch goes out every 100 ms instead of every 5 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    children.spawn("gateway", &mut command);
    wait_health(&mut children, &http(), "gateway", port, StatusCode::OK).await;

    let post = |session: Option<&str>, body| post_to(port, session, body);
    let opened = post(
        None,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": PROTOCOL, "capabilities": {},
                "clientInfo": {"name": "otlp-test", "version": "0"}}}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(opened.status(), StatusCode::OK);
    let session = opened.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let _ = opened.text().await.unwrap();
    let initialized = post(
        Some(&session),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .send()
    .await
    .unwrap();
    assert!(initialized.status().is_success());
    let called = post(
        Some(&session),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "counter", "arguments": {}}}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(called.status(), StatusCode::OK);
    let _ = called.text().await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let text = loop {
        let text = received(&bodies);
        if ["session_operation", "request", REPLICA, "session-gateway"]
            .iter()
            .all(|needle| text.contains(needle))
        {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the collector got {} bodies without every expected span: {text:?}",
            bodies.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(text.contains("/mcp"), "the request span's path");
    assert!(
        !text.contains(&session),
        "a full session id reached the collector"
    );
    children.stop("gateway");
}

#[test]
fn an_endpoint_that_is_not_plain_http_is_refused_at_start() {
    for endpoint in [
        "https://127.0.0.1:4318",
        "127.0.0.1:4318",
        "http://h:1/?q=1",
    ] {
        let output = Command::new(GATEWAY)
            .args(["--listen", "127.0.0.1:0", "--otlp-endpoint", endpoint])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{endpoint}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--otlp-endpoint"), "{endpoint}: {stderr}");
    }
}
