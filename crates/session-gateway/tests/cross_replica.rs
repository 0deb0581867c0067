//! End to end: `session-gateway` processes behind nginx (round robin, no
//! affinity), driven by an unmodified rmcp client.
//!
//! - On Redis, one MCP session is served by both replicas: `counter` counts
//!   1..=10 across them, and after a `DELETE` through nginx both replicas,
//!   asked directly, refuse the session with a JSON-RPC 404. 100 `counter`
//!   calls at once on one new session, spread over both replicas, are told
//!   each count from 1 to 100 exactly once: no increment is lost.
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

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};
use session_testkit::env::var as test_env;

use common::{free_port, http};

const GATEWAY: &str = env!("CARGO_BIN_EXE_session-gateway");
const STARTUP: Duration = Duration::from_secs(15);

/// Child processes, killed and waited for when the test ends, pass or fail.
/// On a failure their logs are printed.
struct Children {
    dir: tempfile::TempDir,
    procs: Vec<(String, Child, PathBuf)>,
}

impl Children {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            procs: Vec::new(),
        }
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts `command` with its output in `<dir>/<name>.log`.
    fn spawn(&mut self, name: &str, command: &mut Command) {
        let log = self.dir().join(format!("{name}.log"));
        let file = File::create(&log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name}: {error}"));
        self.procs.push((name.to_owned(), child, log));
    }

    /// Starts a gateway replica.
    fn gateway(&mut self, name: &str, port: u16, config: &Path) {
        self.spawn(
            name,
            Command::new(GATEWAY)
                .arg("--config")
                .arg(config)
                .args(["--listen", &format!("127.0.0.1:{port}"), "--replica", name])
                .env("RUST_LOG", "info"),
        );
    }

    /// Panics (with the log) if `name` has exited.
    fn check_running(&mut self, name: &str) {
        let (_, child, log) = self.procs.iter_mut().find(|(n, ..)| n == name).unwrap();
        if let Some(status) = child.try_wait().unwrap() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{name} exited with {status}:\n{log}");
        }
    }

    fn log(&self, name: &str) -> String {
        let (.., log) = self.procs.iter().find(|(n, ..)| n == name).unwrap();
        std::fs::read_to_string(log).unwrap_or_default()
    }

    fn stop(&mut self, name: &str) {
        if let Some(index) = self.procs.iter().position(|(n, ..)| n == name) {
            let (_, mut child, _) = self.procs.remove(index);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (name, child, log) in &mut self.procs {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("---- last lines of {name}'s log ----");
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A configuration file on the Redis server `addr`, with its own key prefix.
fn redis_config(dir: &Path, addr: &str, extra: &str) -> PathBuf {
    let prefix = format!("e2e:{}:", uuid::Uuid::new_v4().simple());
    write(
        dir,
        "redis.toml",
        &format!("ttl = \"30m\"\n\n[redis]\naddr = \"{addr}\"\nkey_prefix = \"{prefix}\"\n{extra}"),
    )
}

/// GET /health; the status and the body (JSON), or `None` if nothing answers.
async fn health(http: &reqwest::Client, port: u16) -> Option<(StatusCode, Value)> {
    let response = http
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
        .ok()?;
    let status = response.status();
    Some((status, response.json().await.ok()?))
}

/// Waits until `/health` of `name` answers `want`.
async fn wait_health(
    children: &mut Children,
    http: &reqwest::Client,
    name: &str,
    port: u16,
    want: StatusCode,
) -> Value {
    let deadline = Instant::now() + STARTUP;
    loop {
        children.check_running(name);
        if let Some((status, body)) = health(http, port).await
            && status == want
        {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: /health did not answer {want} within {STARTUP:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts nginx in front of `upstreams`: round robin, no affinity.
async fn start_nginx(
    children: &mut Children,
    http: &reqwest::Client,
    nginx: &str,
    upstreams: &[u16],
) -> u16 {
    let port = free_port();
    let dir = children.dir().join("nginx");
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    // Temp paths only for the modules this nginx has (nginx-light lacks some).
    let features = Command::new(nginx).arg("-V").output().unwrap();
    let features = String::from_utf8_lossy(&features.stderr).into_owned();
    let mut temp_paths =
        format!("client_body_temp_path {d}/client_body;\n    proxy_temp_path {d}/proxy;\n");
    for module in ["fastcgi", "uwsgi", "scgi"] {
        if !features.contains(&format!("--without-http_{module}_module")) {
            temp_paths.push_str(&format!("    {module}_temp_path {d}/{module};\n"));
        }
    }
    let servers: String = upstreams
        .iter()
        .map(|port| format!("        server 127.0.0.1:{port};\n"))
        .collect();
    let conf = format!(
        r#"daemon off;
# One process: the guard's kill (SIGKILL, all std offers) must leave no
# orphaned worker behind, which a master process would.
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 256;
}}
http {{
    log_format upstream '$request_method $uri $status upstream=$upstream_addr';
    access_log {d}/access.log upstream;
    {temp_paths}
    upstream gateways {{
{servers}    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://gateways;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_buffering off;
            proxy_read_timeout 120s;
        }}
    }}
}}
"#
    );
    let conf_path = write(&dir, "nginx.conf", &conf);
    children.spawn(
        "nginx",
        Command::new(nginx)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.join("error.log")),
    );
    wait_health(children, http, "nginx", port, StatusCode::OK).await;
    port
}

/// Prints nginx's access log, upstreams named by replica.
fn print_access_log(children: &Children, replicas: &[(&str, u16)]) {
    let log = std::fs::read_to_string(children.dir().join("nginx/access.log")).unwrap();
    for line in log.lines() {
        let mut line = line.to_owned();
        for (name, port) in replicas {
            line = line.replace(&format!("upstream=127.0.0.1:{port}"), &format!("-> {name}"));
        }
        eprintln!("nginx: {line}");
    }
}

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
    let (Some(redis), Some(nginx)) = (
        test_env(session_testkit::env::REDIS),
        test_env(session_testkit::env::NGINX),
    ) else {
        return;
    };
    let started = Instant::now();
    let http = http();
    let mut children = Children::new();
    let config = redis_config(children.dir(), &redis, "");
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

/// [`CONCURRENT_CALLS`] calls of `counter` at once on one new session,
/// spread by nginx over both replicas: the tool's atomic read-modify-write
/// loses no increment, so the calls are told each count from 1 to 100
/// exactly once, and a last call counts 101.
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
                let result = peer
                    .call_tool(CallToolRequestParams::new("counter"))
                    .await
                    .unwrap();
                text_of(&result)
            })
        })
        .collect();
    let mut counts = Vec::new();
    let mut served = std::collections::BTreeMap::<String, usize>::new();
    for call in calls {
        let counted = call.await.unwrap();
        counts.push(counted["count"].as_u64().unwrap());
        *served
            .entry(counted["replica"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    counts.sort_unstable();
    eprintln!(
        "redis e2e: {CONCURRENT_CALLS} concurrent counter calls on one session in {:.1?}, served {served:?}",
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
