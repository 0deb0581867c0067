//! Resumable SSE streams across replicas, end to end: two `session-gateway`
//! replicas on one Redis behind nginx (round robin, no affinity, so two
//! requests in a row reach different replicas), bearer tokens, and a raw
//! HTTP client that reads the SSE streams itself.
//!
//! - A `progress` call sends 20 notifications over 2 s. The client drops
//!   its connection after the 5th and resumes with `GET` and
//!   `Last-Event-ID`, which lands on the other replica: it receives
//!   notifications 6 to 20 and the result, each once and in order, while
//!   the call is still running on the first replica.
//! - The same with the cut after the result was produced but before it was
//!   read: the resumed stream brings all of it.
//! - A second principal presenting the first's event id gets nothing: with
//!   the first's session the guard refuses (404, as for a session that never
//!   existed), with a session of her own the id is unknown there (an empty
//!   stream). A forged or malformed id is unknown too: an empty `200`
//!   stream that ends at once, so that an `EventSource` does not retry
//!   forever.
//! - `DELETE` of the session deletes its event log.
//! - A session whose TTL is shorter than a call lives while the call's
//!   stream is open, and while a resumed copy of it is replayed.
//! - The official TypeScript SDK, whose connection a proxy in front of nginx
//!   cuts after the 5th notification, resumes on its own (its priming event
//!   makes the stream resumable) on the other replica and gets every
//!   notification and the result once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use session_testkit::env::var as test_env;

use common::http;
use common::processes::{Children, print_access_log, start_nginx, start_replicas, write};

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "session-gateway";
const SECRET_ENV: &str = "SESSION_GATEWAY_TEST_JWT_SECRET";
const SECRET: &str = "the secret of the resumable stream tests, 40+ bytes";
const PROTOCOL: &str = "2025-11-25";
/// How long any one stream may take to end.
const STREAM_TIMEOUT: Duration = Duration::from_secs(30);

fn token(subject: &str) -> String {
    let exp = jsonwebtoken::get_current_timestamp() + 3600;
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// One SSE event as the client read it.
#[derive(Clone, Debug, Default)]
struct Event {
    id: Option<String>,
    data: Option<Value>,
    retry: Option<u64>,
}

impl Event {
    /// The progress count of a progress notification.
    fn progress(&self) -> Option<u64> {
        let data = self.data.as_ref()?;
        // rmcp writes the progress as a JSON float (`1.0`).
        let progress = data["params"]["progress"].as_f64();
        (data["method"] == "notifications/progress").then(|| progress.map(|p| p as u64))?
    }

    /// Whether this is the answer to JSON-RPC request `id`.
    fn answers(&self, id: u64) -> bool {
        self.data.as_ref().is_some_and(|data| data["id"] == id)
    }
}

/// Reads SSE events off a streaming response as they come.
struct Reader {
    response: reqwest::Response,
    buffer: String,
    served_by: String,
}

impl Reader {
    fn new(response: reqwest::Response) -> Self {
        let served_by = response.headers()["x-served-by"]
            .to_str()
            .unwrap()
            .to_owned();
        Self {
            response,
            buffer: String::new(),
            served_by,
        }
    }

    /// The next event, or `None` when the stream ended.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = Event::default();
                let mut any = false;
                for line in block.lines() {
                    if let Some(id) = line.strip_prefix("id:") {
                        event.id = Some(id.trim().to_owned());
                        any = true;
                    } else if let Some(data) = line.strip_prefix("data:") {
                        let data = data.trim();
                        if !data.is_empty() {
                            event.data = Some(serde_json::from_str(data).unwrap());
                        }
                        any = true;
                    } else if let Some(retry) = line.strip_prefix("retry:") {
                        event.retry = Some(retry.trim().parse().unwrap());
                        any = true;
                    }
                }
                // A block of comments only is a keep-alive.
                if any {
                    return Some(event);
                }
                continue;
            }
            let chunk = tokio::time::timeout(STREAM_TIMEOUT, self.response.chunk())
                .await
                .expect("the stream stalled")
                .expect("the stream broke");
            match chunk {
                Some(bytes) => self.buffer.push_str(
                    &String::from_utf8(bytes.to_vec())
                        .unwrap()
                        .replace("\r\n", "\n"),
                ),
                None => return None,
            }
        }
    }

    /// Every event until the stream ends.
    async fn rest(mut self) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

/// A client of the deployment: nginx's address and a principal's token.
struct Client {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Client {
    fn new(nginx: u16, subject: &str) -> Self {
        Self {
            http: http(),
            url: format!("http://127.0.0.1:{nginx}/mcp"),
            token: token(subject),
        }
    }

    fn request(&self, method: reqwest::Method, session: Option<&str>) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .request(method, &self.url)
            .bearer_auth(&self.token)
            .header("mcp-protocol-version", PROTOCOL);
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        request
    }

    async fn post(&self, session: Option<&str>, body: Value) -> reqwest::Response {
        self.request(reqwest::Method::POST, session)
            .header("accept", "application/json, text/event-stream")
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// The handshake; the new session's id.
    async fn open(&self) -> String {
        let response = self
            .post(
                None,
                json!({
                    "jsonrpc": "2.0", "id": 1, "method": "initialize",
                    "params": {
                        "protocolVersion": PROTOCOL,
                        "capabilities": {},
                        "clientInfo": {"name": "resume-test", "version": "0"},
                    },
                }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let session = response.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let events = Reader::new(response).rest().await;
        assert!(events.iter().any(|event| event.answers(1)), "{events:?}");
        let response = self
            .post(
                Some(&session),
                json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        session
    }

    /// Starts a `progress` call of `steps` notifications `interval_ms`
    /// apart, as JSON-RPC request `id`; its stream.
    async fn progress(&self, session: &str, id: u64, steps: u32, interval_ms: u64) -> Reader {
        let response = self
            .post(
                Some(session),
                json!({
                    "jsonrpc": "2.0", "id": id, "method": "tools/call",
                    "params": {
                        "name": "progress",
                        "arguments": {"steps": steps, "interval_ms": interval_ms},
                        "_meta": {"progressToken": format!("call-{id}")},
                    },
                }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        Reader::new(response)
    }

    /// `GET` with `Last-Event-ID`: the status and, if 200, the stream.
    async fn resume(&self, session: &str, last_event_id: &str) -> (StatusCode, Option<Reader>) {
        let response = self
            .request(reqwest::Method::GET, Some(session))
            .header("accept", "text/event-stream")
            .header("last-event-id", last_event_id)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (
            status,
            (status == StatusCode::OK).then(|| Reader::new(response)),
        )
    }
}

/// The deployment, or `None` (SKIPPED) without Redis and nginx.
async fn deployment() -> Option<(Children, u16, [u16; 2])> {
    deployment_with_ttl("30m").await
}

/// The deployment with sessions of TTL `ttl`.
async fn deployment_with_ttl(ttl: &str) -> Option<(Children, u16, [u16; 2])> {
    let (Some(redis), Some(nginx)) = (
        test_env(session_testkit::env::REDIS),
        test_env(session_testkit::env::NGINX),
    ) else {
        return None;
    };
    let http = http();
    let mut children = Children::new();
    let prefix = format!("resume:{}:", uuid::Uuid::new_v4().simple());
    let config = write(
        children.dir(),
        "redis.toml",
        &format!(
            "ttl = \"{ttl}\"\n\n[redis]\naddr = \"{redis}\"\nkey_prefix = \"{prefix}\"\n\n\
             [auth]\nmode = \"jwt\"\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n\
             hmac_secret_env = \"{SECRET_ENV}\"\n"
        ),
    );
    let ports = start_replicas(&mut children, &http, &config, &[(SECRET_ENV, SECRET)]).await;
    let nginx_port = start_nginx(&mut children, &http, &nginx, &ports).await;
    Some((children, nginx_port, ports))
}

/// Asserts that `events` are notifications `from..=to` and then the answer
/// to request `id` (with `steps`), each once, every one with a distinct id.
fn assert_progress_then_result(events: &[Event], from: u64, to: u64, id: u64, steps: u32) {
    let data: Vec<&Event> = events.iter().filter(|event| event.data.is_some()).collect();
    let progress: Vec<u64> = data.iter().filter_map(|event| event.progress()).collect();
    assert_eq!(progress, (from..=to).collect::<Vec<_>>(), "{events:#?}");
    let last = data.last().expect("events");
    assert!(
        last.answers(id),
        "the last event is not the result: {events:#?}"
    );
    assert_eq!(
        data.iter().filter(|event| event.answers(id)).count(),
        1,
        "{events:#?}"
    );
    let text = last.data.as_ref().unwrap()["result"]["content"][0]["text"]
        .as_str()
        .unwrap();
    let result: Value = serde_json::from_str(text).unwrap();
    assert_eq!(result["steps"], steps);
    let mut ids: Vec<&str> = events.iter().filter_map(|e| e.id.as_deref()).collect();
    assert_eq!(ids.len(), events.len(), "an event without id: {events:#?}");
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "an id twice: {events:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_on_one_replica_resumes_on_the_other() {
    let Some((children, nginx, ports)) = deployment().await else {
        return;
    };
    let alice = Client::new(nginx, "alice");
    let session = alice.open().await;

    // Cut after the 5th notification, with 15 still to come.
    let mut stream = alice.progress(&session, 7, 20, 100).await;
    let producer = stream.served_by.clone();
    let priming = stream.next().await.unwrap();
    assert!(
        priming.data.is_none() && priming.retry.is_some(),
        "{priming:?}"
    );
    let mut seen = vec![priming];
    while seen.iter().filter_map(Event::progress).count() < 5 {
        seen.push(stream.next().await.expect("five notifications"));
    }
    assert_eq!(
        seen.iter().filter_map(Event::progress).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    drop(stream);
    let last = seen.last().unwrap().id.clone().expect("events have ids");

    let (status, resumed) = alice.resume(&session, &last).await;
    assert_eq!(status, StatusCode::OK);
    let resumed = resumed.unwrap();
    assert_ne!(
        resumed.served_by, producer,
        "round robin sends the resumption to the other replica"
    );
    let started = tokio::time::Instant::now();
    let rest = resumed.rest().await;
    assert_progress_then_result(&rest, 6, 20, 7, 20);
    // The call was still running: the tail brought what came after.
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );

    // Cut after the result was produced, before it was read.
    let mut stream = alice.progress(&session, 8, 3, 50).await;
    let producer = stream.served_by.clone();
    let priming = stream.next().await.unwrap();
    drop(stream);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (status, resumed) = alice.resume(&session, priming.id.as_deref().unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let resumed = resumed.unwrap();
    assert_ne!(resumed.served_by, producer);
    assert_progress_then_result(&resumed.rest().await, 1, 3, 8, 3);

    // Resuming again from the same id replays the same events.
    let (_, again) = alice.resume(&session, priming.id.as_deref().unwrap()).await;
    assert_progress_then_result(&again.unwrap().rest().await, 1, 3, 8, 3);

    print_access_log(&children, &[("a", ports[0]), ("b", ports[1])]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_ids_replay_only_their_own_session() {
    let Some((_children, nginx, _ports)) = deployment().await else {
        return;
    };
    let alice = Client::new(nginx, "alice");
    let mallory = Client::new(nginx, "mallory");
    let session = alice.open().await;
    let stream = alice.progress(&session, 3, 2, 10).await;
    let events = stream.rest().await;
    let valid = events[0].id.clone().unwrap();
    assert_eq!(event_logs(&session).await, 1);

    // With alice's session: the guard refuses, as for a session that never
    // existed.
    let (status, _) = mallory.resume(&session, &valid).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // With a session of her own: alice's id names nothing there.
    let own = mallory.open().await;
    for _ in 0..2 {
        // Twice, so that both replicas answer once.
        let (status, stream) = mallory.resume(&own, &valid).await;
        assert_eq!(status, StatusCode::OK);
        let events = stream.unwrap().rest().await;
        assert!(
            events.iter().all(|event| event.data.is_none()),
            "{events:?}"
        );
    }

    // Forged and malformed ids on alice's own session: an empty stream
    // that ends at once.
    let (tag, entry) = valid.split_once(':').unwrap();
    let forged_tag = format!("{}:{entry}", "0".repeat(tag.len()));
    let later_entry = format!("{tag}:99999999999999-0");
    for id in [
        "garbage",
        "0",
        "3/0",
        forged_tag.as_str(),
        later_entry.as_str(),
        "",
    ] {
        let started = tokio::time::Instant::now();
        let (status, stream) = alice.resume(&session, id).await;
        assert_eq!(status, StatusCode::OK, "{id:?}");
        let events = stream.unwrap().rest().await;
        assert!(
            events.iter().all(|event| event.data.is_none()),
            "{id:?}: {events:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{id:?} took {:?}",
            started.elapsed()
        );
    }

    // The valid id still works for alice, and the log goes with the session.
    let (_, stream) = alice.resume(&session, &valid).await;
    assert_progress_then_result(&stream.unwrap().rest().await, 1, 2, 3, 2);
    let deleted = alice
        .request(reqwest::Method::DELETE, Some(&session))
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());
    let (status, _) = alice.resume(&session, &valid).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        event_logs(&session).await,
        0,
        "the session's event log outlived it"
    );
}

/// A session deleted through one replica while a call of it still streams
/// on the other: the producer's later events are not logged, so the log
/// does not come back for another TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_deleted_with_its_session_stays_deleted() {
    let Some((_children, nginx, _ports)) = deployment().await else {
        return;
    };
    let alice = Client::new(nginx, "alice");
    let session = alice.open().await;
    // 20 notifications 100 ms apart; the client leaves after the first.
    let mut stream = alice.progress(&session, 5, 20, 100).await;
    let producer = stream.served_by.clone();
    while stream
        .next()
        .await
        .and_then(|event| event.progress())
        .is_none()
    {}
    drop(stream);
    assert_eq!(event_logs(&session).await, 1);
    // Round robin sends the DELETE to the other replica once the producer
    // answered the request before it.
    steer(nginx, Some(&producer)).await;
    let response = alice
        .request(reqwest::Method::DELETE, Some(&session))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    assert_ne!(response.headers()["x-served-by"], producer.as_str());
    // The call runs on for about 2 s after the delete.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        event_logs(&session).await,
        0,
        "a deleted session's log came back"
    );
}

/// How many event log keys of `session` the Redis server holds.
async fn event_logs(session: &str) -> usize {
    use session_factory::session_redis::fred::interfaces::KeysInterface;
    use session_factory::{RedisConfig, RedisStorage, Storage};
    let redis = test_env(session_testkit::env::REDIS).unwrap();
    let storage = RedisStorage::connect(&RedisConfig::standalone(&redis, "probe:").unwrap())
        .await
        .unwrap();
    // SCAN, not KEYS: the test server is shared with the other tests.
    let mut keys = Vec::new();
    let mut cursor = "0".to_owned();
    loop {
        let (next, batch): (String, Vec<String>) = storage
            .client()
            .scan_page(cursor, format!("events:*{{{session}}}"), Some(1000), None)
            .await
            .unwrap();
        keys.extend(batch);
        if next == "0" {
            break;
        }
        cursor = next;
    }
    storage.close().await.unwrap();
    keys.len()
}

/// A TCP proxy to `upstream` (nginx) on 127.0.0.1 that cuts, once, the
/// connection carrying the call's stream where `cut` says: right after
/// passing on a number of progress notifications, or just before the bytes
/// with the call's result, which it withholds. A balancer dropping a
/// client. Its port, and whether it has cut.
///
/// Then it steers nginx's round robin so that the client's next request
/// goes to the other replica: the SDK opens its standalone `GET` stream
/// without waiting, racing its first call, so which replica is next is not
/// fixed by the order of the client's requests. The proxy asks nginx for
/// `/health` until the replica that answers is the one that produced the
/// cut stream; the SDK waits the stream's `retry` (3 s) before it resumes.
async fn cutting_proxy(upstream: u16, cut: Cut) -> (u16, Arc<AtomicBool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const PROGRESS: &[u8] = b"notifications/progress";
    const RESULT: &[u8] = b"\"result\":";
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let has_cut = Arc::new(AtomicBool::new(false));
    let cut_flag = Arc::clone(&has_cut);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let cut_flag = Arc::clone(&cut_flag);
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                    let _ = server_write.shutdown().await;
                });
                let mut progress = 0;
                let mut producer = None;
                let mut carry: Vec<u8> = Vec::new();
                let mut buffer = vec![0u8; 16 * 1024];
                while let Ok(read) = server_read.read(&mut buffer).await {
                    if read == 0 {
                        break;
                    }
                    let chunk = &buffer[..read];
                    let mut cut_here = false;
                    let mut withhold = false;
                    if !cut_flag.load(Ordering::SeqCst) {
                        if let Some(name) = served_by(chunk) {
                            producer = Some(name);
                        }
                        // The carried tail is shorter than either pattern,
                        // so an occurrence counted here always ends in the
                        // new bytes: none twice.
                        carry.extend_from_slice(chunk);
                        let count = |pattern: &[u8]| {
                            carry
                                .windows(pattern.len())
                                .filter(|w| *w == pattern)
                                .count()
                        };
                        let before = progress;
                        progress += count(PROGRESS);
                        match cut {
                            Cut::AfterProgress(n) => cut_here = progress >= n,
                            // A result after this connection carried
                            // progress: the call's, not the initialize's.
                            Cut::BeforeResult => {
                                withhold = (before > 0 || progress > 0) && count(RESULT) > 0;
                                cut_here = withhold;
                            }
                        }
                        let keep = carry
                            .len()
                            .saturating_sub(PROGRESS.len().max(RESULT.len()) - 1);
                        carry.drain(..keep);
                    }
                    if !withhold && client_write.write_all(chunk).await.is_err() {
                        break;
                    }
                    if cut_here
                        && cut_flag
                            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                            .is_ok()
                    {
                        // Dropping both halves closes the client's socket
                        // in the middle of its response.
                        up.abort();
                        drop((client_write, server_read));
                        steer(upstream, producer.as_deref()).await;
                        return;
                    }
                }
                let _ = client_write.shutdown().await;
            });
        }
    });
    (port, has_cut)
}

/// Where [`cutting_proxy`] cuts the call's stream.
#[derive(Clone, Copy)]
enum Cut {
    /// Right after the `n`th progress notification reached the client.
    AfterProgress(usize),
    /// When the call's result comes: the bytes that carry it (and whatever
    /// progress shares them) never reach the client.
    BeforeResult,
}

/// The `x-served-by` value of a response head in `bytes`, if there is one.
fn served_by(bytes: &[u8]) -> Option<String> {
    const HEADER: &[u8] = b"x-served-by: ";
    let start = bytes.windows(HEADER.len()).position(|w| w == HEADER)? + HEADER.len();
    let end = bytes[start..].iter().position(|&b| b == b'\r')? + start;
    Some(String::from_utf8_lossy(&bytes[start..end]).into_owned())
}

/// Sends `GET /health` through nginx at `nginx` until `producer` answers
/// one, so that round robin sends the next request to the other replica.
async fn steer(nginx: u16, producer: Option<&str>) {
    let producer = producer.expect("the cut response named its replica");
    for _ in 0..4 {
        let response = http()
            .get(format!("http://127.0.0.1:{nginx}/health"))
            .send()
            .await
            .unwrap();
        if response.headers()["x-served-by"] == producer {
            return;
        }
    }
    panic!("nginx never sent a request to {producer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_sdk_resumes_a_cut_stream_on_the_other_replica() {
    typescript_sdk_resumes(Cut::AfterProgress(5)).await;
}

/// The cut comes after the call's result was produced but before the
/// client read it: the SDK resumes from the last event it got and receives
/// the result (and any notification cut with it) from the log, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_sdk_gets_a_result_cut_before_delivery_on_the_other_replica() {
    typescript_sdk_resumes(Cut::BeforeResult).await;
}

async fn typescript_sdk_resumes(cut_at: Cut) {
    let (Some(node), Some(modules)) = (
        test_env(session_testkit::env::MCP_NODE),
        test_env(session_testkit::env::MCP_NODE_MODULES),
    ) else {
        return;
    };
    let Some((children, nginx, ports)) = deployment().await else {
        return;
    };
    let (proxy, cut) = cutting_proxy(nginx, cut_at).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/ts_resume.mjs");
    let url = format!("http://127.0.0.1:{proxy}/mcp");
    let token = token("alice");
    let mut command = tokio::process::Command::new(&node);
    command
        .args([
            script.to_str().unwrap(),
            "--modules",
            &modules,
            "--url",
            &url,
            "--token",
            &token,
        ])
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the TypeScript client finished in time")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}{stderr}");
    print_access_log(&children, &[("a", ports[0]), ("b", ports[1])]);
    assert!(output.status.success(), "node failed: {stdout}\n{stderr}");
    assert!(cut.load(Ordering::SeqCst), "the proxy never cut");
    let called: Value = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|step| step["step"] == "called")
        .expect("the call's step");
    let progress: Vec<u64> = called["progress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap() as u64)
        .collect();
    assert_eq!(progress, (1..=20).collect::<Vec<_>>(), "{called}");
    assert_eq!(called["result"]["steps"], 20, "{called}");
    let errors = called["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e.as_str().unwrap().contains("SSE stream disconnected")),
        "the SDK saw no broken stream: {called}"
    );

    // nginx logs a request when it ends: the cut call, then its
    // resumption (the one GET with a Last-Event-ID), on the other replica.
    let log = std::fs::read_to_string(children.dir().join("nginx/access.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let resumed = lines
        .iter()
        .position(|line| line.starts_with("GET ") && !line.ends_with("last_event_id=-"))
        .expect("a GET with Last-Event-ID");
    let call = lines[..resumed]
        .iter()
        .rev()
        .find(|line| line.starts_with("POST "))
        .expect("the call before it");
    let upstream = |line: &str| {
        line.split_whitespace()
            .find_map(|field| field.strip_prefix("upstream="))
            .unwrap()
            .to_owned()
    };
    assert_ne!(
        upstream(call),
        upstream(lines[resumed]),
        "resumed on the replica that produced the stream"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|line| line.starts_with("GET ") && !line.ends_with("last_event_id=-"))
            .count(),
        1,
        "the SDK resumed more than once: {log}"
    );
}

/// A call that outlasts the session's TTL (2 s) keeps the session alive:
/// its stream's drain reads the session every quarter TTL, and so does the
/// replay of a resumed copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_or_resumed_stream_keeps_its_session_alive() {
    let Some((_children, nginx, _ports)) = deployment_with_ttl("2s").await else {
        return;
    };
    let alice = Client::new(nginx, "alice");
    let session = alice.open().await;
    let alive = |id: u64| {
        let alice = &alice;
        let session = session.clone();
        async move {
            let response = alice
                .post(
                    Some(&session),
                    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                           "params": {"name": "whoami", "arguments": {}}}),
                )
                .await;
            response.status()
        }
    };

    // 4 s of notifications, nothing else sent in the session meanwhile.
    let events = alice.progress(&session, 2, 20, 200).await.rest().await;
    assert_progress_then_result(&events, 1, 20, 2, 20);
    assert_eq!(
        alive(3).await,
        StatusCode::OK,
        "the session expired under its stream"
    );

    // Cut early; the resumed copy is replayed for about 3.5 s.
    let mut stream = alice.progress(&session, 4, 20, 200).await;
    let mut last = None;
    while let Some(event) = stream.next().await {
        last = event.id.clone();
        if event.progress() == Some(2) {
            break;
        }
    }
    drop(stream);
    let (status, resumed) = alice.resume(&session, &last.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_progress_then_result(&resumed.unwrap().rest().await, 3, 20, 4, 20);
    assert_eq!(
        alive(5).await,
        StatusCode::OK,
        "the session expired under its replay"
    );

    // Without a stream the same session does expire.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(alive(6).await, StatusCode::NOT_FOUND);
}
