//! End to end: `session-gateway` processes behind nginx (round robin, no
//! affinity), driven by an unmodified rmcp client.
//!
//! - On Redis, one MCP session is served by both replicas: `counter` counts
//!   1..=10 across them, and after a `DELETE` through nginx both replicas,
//!   asked directly, refuse the session with a JSON-RPC 404. 100 `counter`
//!   calls at once on one new session, spread over both replicas, are told
//!   each count from 1 to 100 exactly once: no increment is lost (a call
//!   answered `-31000` "retry" under that contention is retried, as the
//!   answer asks).
//! - On local storage, what users would see without Redis: a session is
//!   unknown to the other replica, and the rmcp client fails through nginx.
//! - With `connect = "lazy"`, a replica starts while Redis is down, reports
//!   503 on `/health`, and serves sessions once Redis comes up.
//!
//! Needs `SESSION_TEST_REDIS` (a Redis server; `redis-server` on PATH) and
//! `SESSION_TEST_NGINX` (the nginx binary), as `cargo xtask test` provides;
//! without them the cases print SKIPPED, unless `SESSION_TEST_REQUIRE_REDIS`
//! is set, which makes them fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::service::{RoleClient, RunningService, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};
use session_gateway::answer::STORE_UNAVAILABLE;
use session_testkit::env::var as test_env;

use common::processes::{
    Children, STARTUP, health, print_access_log, redis_config, start_nginx, wait_health, write,
};
use common::{free_port, http};

/// POSTs a JSON-RPC message with the headers MCP requires.
async fn post_mcp(
    http: &reqwest::Client,
    port: u16,
    session: Option<&str>,
    protocol: &str,
    body: &Value,
) -> (StatusCode, String, Option<String>, String) {
    let mut request = http
        .post(format!("http://127.0.0.1:{port}/mcp"))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", protocol)
        .body(body.to_string());
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    let served_by = header("x-served-by").unwrap_or_default();
    let session = header("mcp-session-id");
    (status, served_by, session, response.text().await.unwrap())
}

/// Asserts a 404 with the gateway's JSON-RPC error body, which echoes the
/// request's id.
fn assert_session_not_found(status: StatusCode, body: &str, id: u64) {
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        body,
        json!({"jsonrpc": "2.0", "id": id,
               "error": {"code": -32001, "message": "session not found or expired"}})
    );
}

fn text_of(result: &rmcp::model::CallToolResult) -> Value {
    let text = &result.content[0].as_text().unwrap().text;
    serde_json::from_str(text).unwrap()
}

async fn connect(port: u16) -> RunningService<RoleClient, ()> {
    let transport = StreamableHttpClientTransport::from_uri(format!("http://127.0.0.1:{port}/mcp"));
    ().serve(transport).await.unwrap()
}

async fn counter(client: &RunningService<RoleClient, ()>) -> Value {
    text_of(
        &client
            .call_tool(CallToolRequestParams::new("counter"))
            .await
            .unwrap(),
    )
}

fn protocol_of(client: &RunningService<RoleClient, ()>) -> String {
    client
        .peer_info()
        .unwrap()
        .protocol_version
        .as_str()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_shares_sessions_across_replicas_behind_nginx() {
    shares_sessions_across_replicas("").await;
}

/// The same with each replica keeping a local cache of the sessions it
/// serves: another replica's writes and deletes reach it as invalidations,
/// and the counter's read-modify-write, decided by Redis, loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_the_cache_shares_sessions_across_replicas_behind_nginx() {
    shares_sessions_across_replicas("\n[redis.cache]\nmax_staleness = \"1s\"\n").await;
}

async fn shares_sessions_across_replicas(extra: &str) {
    let (Some(redis), Some(nginx)) = (
        test_env(session_testkit::env::REDIS),
        test_env(session_testkit::env::NGINX),
    ) else {
        return;
    };
    let started = Instant::now();
    let http = http();
    let mut children = Children::new();
    let config = redis_config(children.dir(), &redis, extra);
    let (port_a, port_b) = (free_port(), free_port());
    children.gateway("a", port_a, &config);
    children.gateway("b", port_b, &config);
    for (name, port) in [("a", port_a), ("b", port_b)] {
        let body = wait_health(&mut children, &http, name, port, StatusCode::OK).await;
        assert_eq!(
            body,
            json!({"status": "ok", "replica": name, "storage": "redis", "topology": "standalone", "foreign_requests": 0})
        );
    }
    let nginx_port = start_nginx(&mut children, &http, &nginx, &[port_a, port_b]).await;
    eprintln!("redis e2e: replicas a=:{port_a} b=:{port_b} behind nginx :{nginx_port}");

    let client = connect(nginx_port).await;
    let protocol = protocol_of(&client);
    eprintln!("redis e2e: initialized through nginx, protocol {protocol}");
    let tools: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|tool| tool.name.into_owned())
        .collect();
    eprintln!("redis e2e: tools {tools:?}");
    for name in ["echo", "counter", "whoami"] {
        assert!(tools.iter().any(|tool| tool == name), "{tools:?}");
    }
    let echoed = client
        .call_tool(
            CallToolRequestParams::new("echo")
                .with_arguments(json!({"text": "hello"}).as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    assert_eq!(echoed.content[0].as_text().unwrap().text, "hello");

    let mut replicas = Vec::new();
    let mut session = String::new();
    for expected in 1..=10 {
        let counted = counter(&client).await;
        let replica = counted["replica"].as_str().unwrap().to_owned();
        eprintln!(
            "redis e2e: counter call {expected:>2}: count={} served by replica {replica}",
            counted["count"]
        );
        assert_eq!(counted["count"], expected, "{counted}");
        session = counted["session"].as_str().unwrap().to_owned();
        replicas.push(replica);
    }
    assert!(
        replicas.iter().any(|r| r == "a") && replicas.iter().any(|r| r == "b"),
        "both replicas should have served: {replicas:?}"
    );

    let deleted = http
        .delete(format!("http://127.0.0.1:{nginx_port}/mcp"))
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", &protocol)
        .send()
        .await
        .unwrap();
    let served_by = deleted.headers()["x-served-by"]
        .to_str()
        .unwrap()
        .to_owned();
    eprintln!(
        "redis e2e: DELETE {session} through nginx: {} (served by {served_by})",
        deleted.status()
    );
    assert!(deleted.status().is_success(), "{}", deleted.status());

    let ping = json!({"jsonrpc": "2.0", "id": 99, "method": "ping"});
    for (name, port) in [("a", port_a), ("b", port_b)] {
        let (status, served_by, _, body) =
            post_mcp(&http, port, Some(&session), &protocol, &ping).await;
        eprintln!("redis e2e: after DELETE, replica {name} directly: {status} {body}");
        assert_eq!(served_by, name);
        assert_session_not_found(status, &body, 99);
    }
    for name in ["a", "b"] {
        let closed = children
            .log(name)
            .contains("closed the in-memory copy of a session that is gone from the store");
        let how = if name == served_by {
            "served the DELETE: rmcp closed its copy and deleted the session from Redis"
        } else if closed {
            "still held an in-memory copy; the session check closed it"
        } else {
            "held no in-memory copy"
        };
        eprintln!("redis e2e: replica {name} {how}");
    }

    concurrent_counter_calls_lose_nothing(nginx_port).await;
    print_access_log(&children, &[("a", port_a), ("b", port_b)]);
    drop(client.cancel().await);
    eprintln!("redis e2e: done in {:.1?}", started.elapsed());
}

/// Calls of `counter` at once on one session, through nginx to both replicas.
const CONCURRENT_CALLS: usize = 100;

/// How many times one of the concurrent calls may be answered "retry"
/// before the case calls it a livelock rather than contention.
const RETRIES_PER_CALL: u32 = 50;

/// [`CONCURRENT_CALLS`] calls of `counter` at once on one new session,
/// spread by nginx over both replicas: the tool's atomic read-modify-write
/// loses no increment, so the calls are told each count from 1 to 100
/// exactly once, and a last call counts 101.
///
/// A hundred writers of one session at once is contention far beyond what
/// a session sees in use, and on a starved machine a call can use up the
/// read-modify-write's attempts. The gateway then answers what the answer
/// table promises for it, `-31000` "retry", having written nothing, and the
/// client does what that answer asks: it retries, after a jittered pause.
/// Every count must still be told exactly once, so a retry that had in
/// fact written would show as a duplicate or a gap.
async fn concurrent_counter_calls_lose_nothing(nginx_port: u16) {
    let client = connect(nginx_port).await;
    let started = Instant::now();
    let barrier = Arc::new(tokio::sync::Barrier::new(CONCURRENT_CALLS));
    let calls: Vec<_> = (0..CONCURRENT_CALLS)
        .map(|_| {
            let peer = client.peer().clone();
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                let mut retries = 0;
                loop {
                    match peer.call_tool(CallToolRequestParams::new("counter")).await {
                        Ok(result) => return (text_of(&result), retries),
                        Err(ServiceError::McpError(error))
                            if error.code.0 == STORE_UNAVAILABLE && retries < RETRIES_PER_CALL =>
                        {
                            retries += 1;
                            let pause = Duration::from_millis(fastrand::u64(10..=50));
                            tokio::time::sleep(pause).await;
                        }
                        Err(error) => panic!("counter failed after {retries} retries: {error}"),
                    }
                }
            })
        })
        .collect();
    let mut counts = Vec::new();
    let mut served = std::collections::BTreeMap::<String, usize>::new();
    let mut retried = 0;
    for call in calls {
        let (counted, retries) = call.await.unwrap();
        retried += retries;
        counts.push(counted["count"].as_u64().unwrap());
        *served
            .entry(counted["replica"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    counts.sort_unstable();
    eprintln!(
        "redis e2e: {CONCURRENT_CALLS} concurrent counter calls on one session in {:.1?}, served {served:?}, {retried} answered \"retry\" first",
        started.elapsed()
    );
    let expected: Vec<u64> = (1..=CONCURRENT_CALLS as u64).collect();
    assert_eq!(
        counts, expected,
        "each count from 1 to {CONCURRENT_CALLS} exactly once"
    );
    assert_eq!(
        served.len(),
        2,
        "both replicas should have served: {served:?}"
    );
    assert_eq!(counter(&client).await["count"], CONCURRENT_CALLS as u64 + 1);
    drop(client.cancel().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_storage_does_not_share_sessions() {
    let Some(nginx) = test_env(session_testkit::env::NGINX) else {
        return;
    };
    let started = Instant::now();
    let http = http();
    let mut children = Children::new();
    let config = write(children.dir(), "local.toml", "ttl = \"30m\"\n");
    let (port_a, port_b) = (free_port(), free_port());
    children.gateway("a", port_a, &config);
    children.gateway("b", port_b, &config);
    for (name, port) in [("a", port_a), ("b", port_b)] {
        let body = wait_health(&mut children, &http, name, port, StatusCode::OK).await;
        assert_eq!(
            body,
            json!({"status": "ok", "replica": name, "storage": "local", "topology": "in-process", "foreign_requests": 0, "sessions": 0})
        );
    }

    let protocol = "2025-06-18";
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": protocol,
            "capabilities": {},
            "clientInfo": {"name": "e2e", "version": "0"},
        },
    });
    let (status, served_by, session, _) =
        post_mcp(&http, port_a, None, protocol, &initialize).await;
    let session = session.expect("initialize answers an mcp-session-id header");
    eprintln!(
        "local e2e: initialize on a directly: {status}, served by {served_by}, mcp-session-id {session}"
    );
    assert_eq!(status, StatusCode::OK);

    let ping = json!({"jsonrpc": "2.0", "id": 2, "method": "ping"});
    let (status, _, _, _) = post_mcp(&http, port_a, Some(&session), protocol, &ping).await;
    eprintln!("local e2e: ping on a with that session: {status}");
    assert_eq!(status, StatusCode::OK);
    let (status, served_by, _, body) =
        post_mcp(&http, port_b, Some(&session), protocol, &ping).await;
    eprintln!("local e2e: ping on b with that session: {status} (served by {served_by}) {body}");
    assert_eq!(served_by, "b");
    assert_session_not_found(status, &body, 2);

    let nginx_port = start_nginx(&mut children, &http, &nginx, &[port_a, port_b]).await;
    // An unmodified rmcp client through the balancer: its second request
    // lands on the other replica, which does not know the session. (rmcp's
    // client re-initializes once on a 404, and the retried request then lands
    // on the other replica again.)
    let attempt = async {
        let transport =
            StreamableHttpClientTransport::from_uri(format!("http://127.0.0.1:{nginx_port}/mcp"));
        let client = ().serve(transport).await.map_err(|error| format!("initialize: {error}"))?;
        for call in 1..=3 {
            let result = client
                .call_tool(CallToolRequestParams::new("counter"))
                .await
                .map_err(|error| format!("counter call {call}: {error}"))?;
            eprintln!(
                "local e2e: counter call {call} through nginx succeeded: {}",
                text_of(&result)
            );
        }
        Ok::<_, String>(client)
    };
    let outcome = tokio::time::timeout(Duration::from_secs(30), attempt)
        .await
        .expect("the rmcp client neither failed nor succeeded within 30 s");
    match outcome {
        Ok(_) => panic!("the rmcp client worked through nginx without shared storage"),
        Err(error) => eprintln!("local e2e: rmcp client through nginx failed as expected: {error}"),
    }
    print_access_log(&children, &[("a", port_a), ("b", port_b)]);
    eprintln!("local e2e: done in {:.1?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_connect_starts_before_redis() {
    // `SESSION_TEST_REDIS` is not used, but says Redis tests are wanted (and
    // `redis-server` is installed).
    if test_env(session_testkit::env::REDIS).is_none() {
        return;
    }
    let started = Instant::now();
    let http = http();
    let mut children = Children::new();
    let redis_port = free_port();
    let config = redis_config(
        children.dir(),
        &format!("127.0.0.1:{redis_port}"),
        "connect = \"lazy\"\ncommand_timeout = \"500ms\"\n\n[redis.reconnect]\nmax_delay = \"200ms\"\n",
    );
    let port = free_port();
    children.gateway("lazy", port, &config);

    let deadline = Instant::now() + STARTUP;
    let (status, body) = loop {
        children.check_running("lazy");
        if let Some(answer) = health(&http, port).await {
            break answer;
        }
        assert!(Instant::now() < deadline, "the replica did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("lazy e2e: started without Redis; /health: {status} {body}");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["storage"], "redis");

    let redis_dir = children.dir().join("redis");
    std::fs::create_dir_all(&redis_dir).unwrap();
    children.spawn(
        "redis-server",
        Command::new("redis-server")
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&redis_dir),
    );
    let redis_started = Instant::now();
    let body = wait_health(&mut children, &http, "lazy", port, StatusCode::OK).await;
    eprintln!(
        "lazy e2e: redis-server started; /health 200 after {:.1?}: {body}",
        redis_started.elapsed()
    );

    let client = connect(port).await;
    let counted = counter(&client).await;
    eprintln!("lazy e2e: counter through a direct rmcp client: {counted}");
    assert_eq!(counted["count"], 1);
    assert_eq!(counted["replica"], "lazy");
    drop(client.cancel().await);
    children.stop("redis-server");
    eprintln!("lazy e2e: done in {:.1?}", started.elapsed());
}
