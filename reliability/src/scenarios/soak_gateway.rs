//! Scenario 11 on the gateway: two `session-gateway` replicas on one Redis,
//! MCP clients spread over both without affinity, random Redis and replica
//! faults.
//!
//! The replicas check bearer JWTs (HS256, the secret in an environment
//! variable) and every worker is one of four principals. Workers speak
//! MCP's streamable HTTP directly, half of them in each protocol era, each
//! request to a replica chosen at random:
//!
//! - handshake era (2025-03-26): `initialize`, `notifications/initialized`,
//!   `tools/call counter`, `DELETE`;
//! - 2026-07-28: no sessions; `open_counter` mints a handle, `increment`
//!   counts behind it, `close_counter` closes it.
//!
//! Now and then a worker presents another principal's live session or
//! handle, which must be answered as unknown. Beside the workers,
//! [`STREAMERS`] clients hold resumable SSE streams open
//! (`soak_streams`): long `progress` calls, half of them cut and most of
//! those resumed on the other replica. All this while Redis connections are
//! killed, Redis is stalled (`SIGSTOP` 1 to 3 s) or killed and restarted
//! (append-only file, `appendfsync always`), and replica b is killed
//! (`SIGKILL`) or shut down (`SIGTERM`) and started again. Then the audit:
//!
//! - every session whose `initialize` was answered with a session id and
//!   that was not deleted, and every handle opened and not closed, is in the
//!   store (read with a manager of our own on the same key prefix), owned by
//!   its principal, and served by both replicas;
//! - every session whose `DELETE` succeeded, and every closed handle, is
//!   gone;
//! - during faults, requests on live sessions and handles are answered 503
//!   or a retryable error, never 404 or "unknown handle" (which would tell a
//!   client its session or handle is gone);
//! - no request with another principal's session or handle was served;
//! - no streaming client saw a notification twice or out of order, and
//!   the event logs left in Redis are all of sessions not deleted (Redis's
//!   memory and its count of logs are sampled through the run);
//! - replica a's resident memory grew by less than a bound after the
//!   warm-up (replica b's is reported), no replica exited unasked, every
//!   `SIGTERM` ended in a clean exit, and no log shows a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::StatusCode;
use serde_json::{Value, json};
use session_config::RedisConfig;
use session_core::{Owner, SessionId};

use session_testenv::cli::info_field;
use session_testenv::ports::free_port;
use session_testenv::process::{Signal, rss_kib};
use session_testenv::{Guard, RedisProcess};

use crate::load::ms;
use crate::rng::Rng;
use crate::scenarios::soak_streams;
use crate::{Outcome, scenarios};

/// The figure's name.
pub const NAME: &str = "soak-gateway";

/// Allowed growth of the resident memory of the replica that is never
/// restarted (replica a), from the end of the warm-up to the end.
pub const RSS_GROWTH_BOUND_KIB: u64 = 64 * 1024;
/// The replicas' `--local-idle`: how long each keeps its in-memory copy of
/// a session that gets no requests (the gateway's default).
pub const LOCAL_IDLE: Duration = Duration::from_secs(60);
/// The warm-up before memory is first sampled and faults start. Each
/// replica holds a copy of every session it served within `LOCAL_IDLE`,
/// deleted or not, so its memory grows for that long and then holds steady;
/// growth after that is what a leak would show.
pub const WARMUP: Duration = Duration::from_secs(LOCAL_IDLE.as_secs() + 10);
/// How long a `SIGTERM`ed replica may take to drain and exit (its own
/// drain timeout is 10 s).
const DRAIN: Duration = Duration::from_secs(12);
/// Concurrent MCP clients.
pub const WORKERS: usize = 16;
/// Live sessions each client keeps at most.
pub const SESSIONS_PER_WORKER: usize = 8;
/// Clients holding resumable SSE streams open (see `soak_streams`), on top
/// of the workers.
pub const STREAMERS: usize = 4;
/// The handshake-era revision the session workers speak.
const PROTOCOL: &str = "2025-03-26";
/// The revision without sessions the handle workers speak.
const MODERN: &str = "2026-07-28";
/// The principals the workers are spread over.
pub const PRINCIPALS: usize = 4;
/// The issuer and audience of the soak's tokens.
const ISSUER: &str = "https://soak.issuer.test";
const AUDIENCE: &str = "session-gateway-soak";
/// The environment variable that hands the replicas the HMAC secret.
const SECRET_ENV: &str = "SOAK_GATEWAY_JWT_SECRET";
/// How often (in percent of requests) a worker presents another
/// principal's session or handle.
const PROBE_PERCENT: u64 = 5;

struct Gateway {
    name: String,
    secret: String,
    port: u16,
    log: PathBuf,
    binary: PathBuf,
    config: PathBuf,
    /// The running process; the guard kills and reaps it on drop, and the
    /// signal handler stops it on Ctrl-C.
    child: Option<Guard>,
}

impl Gateway {
    fn start(
        binary: &Path,
        dir: &Path,
        name: &str,
        config: &Path,
        secret: &str,
    ) -> anyhow::Result<Self> {
        let mut gateway = Self {
            name: name.to_owned(),
            secret: secret.to_owned(),
            port: free_port()?,
            log: dir.join(format!("{name}.log")),
            binary: binary.to_owned(),
            config: config.to_owned(),
            child: None,
        };
        gateway.spawn()?;
        Ok(gateway)
    }

    /// Starts the process on this replica's port, appending to its log.
    fn spawn(&mut self) -> anyhow::Result<()> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Guard::spawn(
            Command::new(&self.binary)
                .arg("--config")
                .arg(&self.config)
                .args([
                    "--listen",
                    &format!("127.0.0.1:{}", self.port),
                    "--replica",
                    &self.name,
                    "--local-idle",
                    &format!("{}s", LOCAL_IDLE.as_secs()),
                ])
                .env("RUST_LOG", "info")
                .env(SECRET_ENV, &self.secret)
                .stdin(Stdio::null())
                .stdout(file.try_clone()?)
                .stderr(file),
        )
        .with_context(|| format!("cannot start {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Stops the process, with `SIGTERM` (a graceful shutdown, which must
    /// exit successfully within `DRAIN`) or `SIGKILL`, and starts it again
    /// on the same port. Returns how the process ended.
    async fn restart(&mut self, graceful: bool, down: Duration) -> anyhow::Result<String> {
        let mut child = self.child.take().context("the replica is not running")?;
        let ended = if graceful {
            child.signal(Signal::SIGTERM)?;
            let started = Instant::now();
            loop {
                if let Some(status) = child.try_wait()? {
                    break format!("SIGTERM: {status} after {}", ms(started.elapsed()));
                }
                if started.elapsed() > DRAIN {
                    child.kill()?;
                    break format!("SIGTERM: still running after {}, killed", ms(DRAIN));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        } else {
            child.kill()?;
            "SIGKILL".to_owned()
        };
        tokio::time::sleep(down).await;
        self.spawn()?;
        Ok(ended)
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Guard::pid)
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }
}

/// One answer of a gateway.
struct Answer {
    status: StatusCode,
    session: Option<String>,
    body: String,
}

/// A request's protocol side: the handshake era with its session, or
/// 2026-07-28 with the per-request headers that revision asks for.
#[derive(Clone, Copy)]
enum Era<'a> {
    Handshake(Option<&'a str>),
    Modern { method: &'a str, tool: &'a str },
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    era: Era<'_>,
    body: String,
) -> Result<Answer, String> {
    let mut request = http
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(body);
    match era {
        Era::Handshake(session) => {
            request = request.header("mcp-protocol-version", PROTOCOL);
            if let Some(session) = session {
                request = request.header("mcp-session-id", session);
            }
        }
        Era::Modern { method, tool } => {
            request = request
                .header("mcp-protocol-version", MODERN)
                .header("mcp-method", method)
                .header("mcp-name", tool);
        }
    }
    let response = request.send().await.map_err(|error| error.to_string())?;
    let status = response.status();
    let session = response
        .headers()
        .get("mcp-session-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response.text().await.map_err(|error| error.to_string())?;
    Ok(Answer {
        status,
        session,
        body,
    })
}

async fn delete(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    session: &str,
) -> Result<StatusCode, String> {
    http.delete(url)
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", PROTOCOL)
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .map(|response| response.status())
        .map_err(|error| error.to_string())
}

/// A 2026-07-28 `tools/call` of `tool` with `arguments`.
fn modern_call(id: u64, tool: &str, arguments: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
    "params": {"name": tool, "arguments": arguments, "_meta": {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": {"name": "session-reliability-soak", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }}})
    .to_string()
}

/// A 2026-07-28 `tools/call` of `tool` with `arguments` and the JSON-RPC
/// id `id`, read as a [`ToolAnswer`]; `what` names it in failures.
async fn call_tool(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    id: u64,
    tool: &str,
    arguments: Value,
    what: &str,
) -> ToolAnswer {
    let answer = post(
        http,
        url,
        token,
        Era::Modern {
            method: "tools/call",
            tool,
        },
        modern_call(id, tool, arguments),
    )
    .await;
    tool_answer(what, answer)
}

/// What a tool call answered.
enum ToolAnswer {
    /// The tool's JSON result.
    Done(Value),
    /// A tool error (`isError`), its text.
    ToolError(String),
    /// A JSON-RPC error, or an HTTP status other than 200: (what, detail).
    Failed(String, String),
}

/// Reads a tool call's answer (JSON or one SSE `data:` line).
fn tool_answer(what: &str, answer: Result<Answer, String>) -> ToolAnswer {
    let answer = match answer {
        Ok(answer) => answer,
        Err(error) => return ToolAnswer::Failed(format!("{what}: transport error"), error),
    };
    if answer.status != StatusCode::OK {
        return ToolAnswer::Failed(format!("{what}: {}", answer.status), answer.body);
    }
    let message = answer
        .body
        .lines()
        .map(|line| line.strip_prefix("data:").unwrap_or(line).trim())
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|message| message.get("result").is_some() || message.get("error").is_some());
    let Some(message) = message else {
        return ToolAnswer::Failed(format!("{what}: no answer"), answer.body);
    };
    if let Some(error) = message.get("error") {
        return ToolAnswer::Failed(
            format!("{what}: error {}", error["code"]),
            error.to_string(),
        );
    }
    let result = &message["result"];
    let text = result["content"][0]["text"].as_str().unwrap_or_default();
    if result["isError"] == true {
        return ToolAnswer::ToolError(text.to_owned());
    }
    match serde_json::from_str(text) {
        Ok(value) => ToolAnswer::Done(value),
        Err(_) => ToolAnswer::Failed(format!("{what}: not JSON"), text.to_owned()),
    }
}

/// A token for principal `index`, valid for `valid`.
fn token(secret: &str, index: usize, valid: Duration) -> anyhow::Result<String> {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + valid.as_secs();
    let claims = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": subject(index), "exp": exp});
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

fn subject(index: usize) -> String {
    format!("soak-{index}")
}

/// The live sessions and handles of every worker, for the probes.
#[derive(Default)]
struct Registry {
    /// (principal, is a handle, id)
    items: Vec<(usize, bool, String)>,
}

fn initialize_body() -> String {
    serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": PROTOCOL, "capabilities": {},
                   "clientInfo": {"name": "session-reliability-soak", "version": "0"}}
    })
    .to_string()
}

fn initialized_body() -> String {
    serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string()
}

fn counter_body(id: u64) -> String {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                       "params": {"name": "counter", "arguments": {}}})
    .to_string()
}

/// What the workers saw.
#[derive(Default)]
struct Tally {
    requests: usize,
    created: Vec<String>,
    deleted: Vec<String>,
    uncertain: Vec<String>,
    /// Live sessions, or live handles, with the worker's principal.
    live: Vec<String>,
    /// Each live item's principal, parallel to `live` after the merge.
    principals: Vec<usize>,
    /// Items whose worker speaks 2026-07-28 (handles), parallel likewise.
    handles: Vec<bool>,
    /// Requests with another principal's session or handle, and how many
    /// of them were served.
    probes: usize,
    cross_principal_reads: Vec<String>,
    /// Status codes (or `error: ...`) of answers that were not a success.
    failures: std::collections::BTreeMap<String, usize>,
    /// 404 for a session that was created and not deleted.
    not_found_live: Vec<String>,
    /// 404 for the `DELETE` of a session that was created and not deleted.
    delete_not_found: Vec<String>,
    /// Slowest request.
    worst: Duration,
    samples: Vec<String>,
}

impl Tally {
    fn fail(&mut self, what: String, detail: &str) {
        if self.samples.len() < 6 && !self.failures.contains_key(&what) {
            self.samples.push(format!(
                "{what}: {}",
                detail.chars().take(200).collect::<String>()
            ));
        }
        *self.failures.entry(what).or_default() += 1;
    }
}

struct WorkerSetup {
    index: usize,
    principal: usize,
    token: String,
    modern: bool,
    urls: Arc<Vec<String>>,
    registry: Arc<std::sync::Mutex<Registry>>,
    stop: Arc<AtomicBool>,
    seed: u64,
    epoch: Instant,
}

async fn worker(setup: WorkerSetup) -> Tally {
    let WorkerSetup {
        index,
        principal,
        token,
        modern,
        urls,
        registry,
        stop,
        seed,
        epoch,
    } = setup;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap_or_default();
    let mut rng = Rng::derive(seed, 0x6A7E + index as u64);
    let mut tally = Tally::default();
    let mut next_id = 2u64;
    // When and where each live session or handle was created.
    let mut born: std::collections::HashMap<String, (Instant, usize)> =
        std::collections::HashMap::new();
    let register = |item: &str, live: bool| {
        let mut registry = registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if live {
            registry.items.push((principal, modern, item.to_owned()));
        } else {
            registry.items.retain(|(_, _, id)| id != item);
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let replica = rng.below(urls.len() as u64) as usize;
        let url = &urls[replica];
        let live = tally.live.len();
        let started = Instant::now();
        next_id += 1;
        if rng.percent(PROBE_PERCENT) {
            // Another principal's live session or handle, if there is one.
            let probe = {
                let registry = registry
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let others: Vec<_> = registry
                    .items
                    .iter()
                    .filter(|(owner, ..)| *owner != principal)
                    .cloned()
                    .collect();
                (!others.is_empty())
                    .then(|| others[rng.below(others.len() as u64) as usize].clone())
            };
            if let Some((owner, is_handle, id)) = probe {
                tally.probes += 1;
                tally.requests += 1;
                let served = if is_handle {
                    let answer = call_tool(
                        &http,
                        url,
                        &token,
                        next_id,
                        "increment",
                        json!({"handle": id}),
                        "probe",
                    )
                    .await;
                    matches!(answer, ToolAnswer::Done(_))
                } else {
                    let answer = post(
                        &http,
                        url,
                        &token,
                        Era::Handshake(Some(&id)),
                        counter_body(next_id),
                    )
                    .await;
                    matches!(answer, Ok(ref answer) if answer.status == StatusCode::OK)
                };
                if served {
                    tally.cross_principal_reads.push(format!(
                        "{} of {} served to {}",
                        id,
                        subject(owner),
                        subject(principal)
                    ));
                }
            }
        } else if live == 0 || (live < SESSIONS_PER_WORKER && rng.percent(30)) {
            tally.requests += 1;
            if modern {
                let answer = call_tool(
                    &http,
                    url,
                    &token,
                    next_id,
                    "open_counter",
                    json!({}),
                    "open_counter",
                )
                .await;
                match answer {
                    ToolAnswer::Done(value) => match value["handle"].as_str() {
                        Some(handle) => {
                            born.insert(handle.to_owned(), (Instant::now(), replica));
                            tally.created.push(handle.to_owned());
                            tally.live.push(handle.to_owned());
                            register(handle, true);
                        }
                        None => tally.fail("open_counter: no handle".into(), &value.to_string()),
                    },
                    ToolAnswer::ToolError(text) => {
                        tally.fail("open_counter: tool error".into(), &text)
                    }
                    ToolAnswer::Failed(what, detail) => tally.fail(what, &detail),
                }
            } else {
                match post(&http, url, &token, Era::Handshake(None), initialize_body()).await {
                    Ok(answer)
                        if answer.status == StatusCode::OK
                            && answer.body.contains("\"result\"") =>
                    {
                        match answer.session {
                            Some(session) => {
                                // The handshake's last step; its failure does
                                // not undo the session.
                                tally.requests += 1;
                                let _ = post(
                                    &http,
                                    url,
                                    &token,
                                    Era::Handshake(Some(&session)),
                                    initialized_body(),
                                )
                                .await;
                                born.insert(session.clone(), (Instant::now(), replica));
                                tally.created.push(session.clone());
                                register(&session, true);
                                tally.live.push(session);
                            }
                            None => tally
                                .fail("initialize: 200 without a session id".into(), &answer.body),
                        }
                    }
                    Ok(answer) => {
                        tally.fail(format!("initialize: {}", answer.status), &answer.body)
                    }
                    Err(error) => tally.fail("initialize: transport error".into(), &error),
                }
            }
        } else if rng.percent(85) {
            let item = tally.live[rng.below(live as u64) as usize].clone();
            tally.requests += 1;
            let lost = |tally: &mut Tally, what: &str, detail: &str| {
                let (at, home) = born.get(&item).copied().unwrap_or((epoch, 9));
                tally.not_found_live.push(format!(
                    "{item} at {:.1}s, {} after its creation on replica {home}, asked replica {replica}",
                    epoch.elapsed().as_secs_f64(),
                    ms(at.elapsed())
                ));
                tally.fail(what.to_owned(), detail);
            };
            if modern {
                let answer = call_tool(
                    &http,
                    url,
                    &token,
                    next_id,
                    "increment",
                    json!({"handle": item}),
                    "increment",
                )
                .await;
                match answer {
                    ToolAnswer::Done(_) => {}
                    ToolAnswer::ToolError(text) if text.starts_with("unknown handle") => lost(
                        &mut tally,
                        "increment: unknown handle for a live handle",
                        &text,
                    ),
                    ToolAnswer::ToolError(text) => {
                        tally.fail("increment: tool error".into(), &text)
                    }
                    ToolAnswer::Failed(what, detail) => tally.fail(what, &detail),
                }
            } else {
                match post(
                    &http,
                    url,
                    &token,
                    Era::Handshake(Some(&item)),
                    counter_body(next_id),
                )
                .await
                {
                    Ok(answer)
                        if answer.status == StatusCode::OK
                            && answer.body.contains("\"result\"") => {}
                    Ok(answer) if answer.status == StatusCode::NOT_FOUND => lost(
                        &mut tally,
                        "tools/call: 404 for a live session",
                        &answer.body,
                    ),
                    Ok(answer) => {
                        tally.fail(format!("tools/call: {}", answer.status), &answer.body)
                    }
                    Err(error) => tally.fail("tools/call: transport error".into(), &error),
                }
            }
        } else {
            let index = rng.below(live as u64) as usize;
            let item = tally.live.swap_remove(index);
            register(&item, false);
            tally.requests += 1;
            if modern {
                let answer = call_tool(
                    &http,
                    url,
                    &token,
                    next_id,
                    "close_counter",
                    json!({"handle": item}),
                    "close_counter",
                )
                .await;
                match answer {
                    ToolAnswer::Done(_) => tally.deleted.push(item),
                    ToolAnswer::ToolError(text) => {
                        tally.fail(
                            "close_counter: unknown handle for a live handle".into(),
                            &text,
                        );
                        tally.delete_not_found.push(item);
                    }
                    ToolAnswer::Failed(what, detail) => {
                        tally.fail(what, &detail);
                        tally.uncertain.push(item);
                    }
                }
            } else {
                match delete(&http, url, &token, &item).await {
                    Ok(status) if status.is_success() => tally.deleted.push(item),
                    Ok(StatusCode::NOT_FOUND) => {
                        tally.fail("DELETE: 404 for a live session".into(), "");
                        tally.delete_not_found.push(item);
                    }
                    Ok(status) => {
                        tally.fail(format!("DELETE: {status}"), "");
                        tally.uncertain.push(item);
                    }
                    Err(error) => {
                        tally.fail("DELETE: transport error".into(), &error);
                        tally.uncertain.push(item);
                    }
                }
            }
        }
        tally.worst = tally.worst.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tally.principals = vec![principal; tally.live.len()];
    tally.handles = vec![modern; tally.live.len()];
    tally
}

/// Runs the gateway soak for `secs` seconds of faults.
pub async fn run(scratch: &Path, secs: u64, seed: u64, gateway: &Path) -> Outcome {
    Outcome::or_error(NAME, try_run(scratch, secs, seed, gateway).await)
}

/// Redis's `used_memory`, and how many event logs the run's sessions
/// have; `(0, 0)` when the server does not answer (it may be stopped).
async fn redis_memory(server: &RedisProcess, prefix: &str) -> (u64, usize) {
    let memory = match server.cli().run_async(&["INFO", "memory"]).await {
        Ok(info) => info_field(&info, "used_memory")
            .and_then(|bytes| bytes.parse().ok())
            .unwrap_or(0),
        Err(_) => 0,
    };
    let logs = event_logs(server, prefix)
        .await
        .map_or(0, |logs| logs.len());
    (memory, logs)
}

/// The session ids of the event logs under `prefix` (`SCAN`, keys
/// `events:<prefix>{<session id>}`).
async fn event_logs(server: &RedisProcess, prefix: &str) -> anyhow::Result<Vec<String>> {
    let pattern = format!("events:{prefix}*");
    let keys = server
        .cli()
        .run_async(&["--scan", "--pattern", &pattern])
        .await?;
    Ok(keys
        .lines()
        .filter_map(|key| {
            let start = key.find('{')? + 1;
            let end = key[start..].find('}')? + start;
            Some(key[start..end].to_owned())
        })
        .collect())
}

async fn wait_healthy(http: &reqwest::Client, gateway: &mut Gateway) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = gateway.exited() {
            bail!(
                "{} exited at startup ({status}): see {}",
                gateway.name,
                gateway.log.display()
            );
        }
        if let Ok(response) = http
            .get(format!("http://127.0.0.1:{}/health", gateway.port))
            .send()
            .await
            && response.status() == StatusCode::OK
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} not healthy after 20 s", gateway.name);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn try_run(scratch: &Path, secs: u64, seed: u64, binary: &Path) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::new(NAME);
    let mut server = RedisProcess::start(
        scratch,
        "soak-gateway-redis",
        &["--appendonly", "yes", "--appendfsync", "always"],
    )?;
    let prefix = scenarios::unique_prefix("soak-gateway");
    let config_path = scratch.join("gateway.toml");
    std::fs::write(
        &config_path,
        format!(
            "ttl = \"30m\"\n\n[redis]\naddr = \"{}\"\nkey_prefix = \"{prefix}\"\ncommand_timeout = \"1s\"\nconnect_timeout = \"2s\"\n\n[redis.reconnect]\nmin_delay = \"50ms\"\nmax_delay = \"1s\"\n\n[auth]\nmode = \"jwt\"\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\nhmac_secret_env = \"{SECRET_ENV}\"\n",
            server.addr()
        ),
    )?;
    // A fresh secret per run, handed to the replicas through the
    // environment, never written to a file or a log.
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let valid = Duration::from_secs(secs + 3600);
    let tokens = (0..PRINCIPALS)
        .map(|index| token(&secret, index, valid))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut gateways = vec![
        Gateway::start(binary, scratch, "replica-a", &config_path, &secret)?,
        Gateway::start(binary, scratch, "replica-b", &config_path, &secret)?,
    ];
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()?;
    for gateway in &mut gateways {
        wait_healthy(&http, gateway).await?;
    }
    let urls: Arc<Vec<String>> = Arc::new(gateways.iter().map(Gateway::url).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let registry = Arc::new(std::sync::Mutex::new(Registry::default()));
    let epoch = Instant::now();
    // Half the workers speak each era; the principals cut across both.
    let workers: Vec<_> = (0..WORKERS)
        .map(|index| {
            let principal = index % PRINCIPALS;
            tokio::spawn(worker(WorkerSetup {
                index,
                principal,
                token: tokens[principal].clone(),
                modern: index % 2 == 1,
                urls: Arc::clone(&urls),
                registry: Arc::clone(&registry),
                stop: Arc::clone(&stop),
                seed,
                epoch,
            }))
        })
        .collect();
    let streamers: Vec<_> = (0..STREAMERS)
        .map(|index| {
            tokio::spawn(soak_streams::streamer(soak_streams::StreamerSetup {
                index,
                token: tokens[index % PRINCIPALS].clone(),
                urls: Arc::clone(&urls),
                stop: Arc::clone(&stop),
                seed,
            }))
        })
        .collect();

    tokio::time::sleep(WARMUP).await;
    let rss_start: Vec<u64> = gateways
        .iter()
        .map(|g| g.pid().and_then(rss_kib).unwrap_or(0))
        .collect();
    let mut rng = Rng::derive(seed, 0x50A4);
    let mut faults = Vec::new();
    let mut unclean_exits: Vec<String> = Vec::new();
    let mut rss_trend: Vec<Vec<u64>> = vec![rss_start.clone()];
    // Redis's memory and its number of event logs, sampled with the RSS.
    let mut redis_trend = vec![redis_memory(&server, &prefix).await];
    let mut next_sample = Instant::now() + Duration::from_secs(10);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(3000 + rng.below(5000))).await;
        if Instant::now() >= deadline {
            break;
        }
        if Instant::now() >= next_sample {
            next_sample += Duration::from_secs(10);
            rss_trend.push(
                gateways
                    .iter()
                    .map(|g| g.pid().and_then(rss_kib).unwrap_or(0))
                    .collect(),
            );
            redis_trend.push(redis_memory(&server, &prefix).await);
        }
        let at = started.elapsed().as_secs_f64();
        match rng.below(5) {
            0 => {
                let killed = server
                    .cli()
                    .run_async(&["CLIENT", "KILL", "TYPE", "normal"])
                    .await?;
                faults.push(format!("{at:.0}s kill {killed}"));
            }
            1 => {
                let stall = Duration::from_millis(1000 + rng.below(2000));
                server.stall()?;
                tokio::time::sleep(stall).await;
                server.resume()?;
                faults.push(format!("{at:.0}s stall {}", ms(stall)));
            }
            2 => {
                let down = Duration::from_millis(500 + rng.below(1000));
                server.kill()?;
                tokio::time::sleep(down).await;
                server.restart()?;
                faults.push(format!("{at:.0}s restart after {}", ms(down)));
            }
            // Replica b stops (killed, or shut down gracefully) and comes
            // back empty: its clients' sessions must be restored from the
            // store, never refused. Replica a is never restarted, so that
            // its memory tells a leak.
            kind => {
                let graceful = kind == 4;
                let down = Duration::from_millis(200 + rng.below(800));
                let ended = gateways[1].restart(graceful, down).await?;
                if graceful && !ended.contains("exit status: 0") {
                    unclean_exits.push(format!("{at:.0}s {ended}"));
                }
                wait_healthy(&http, &mut gateways[1]).await?;
                faults.push(format!("{at:.0}s replica-b {ended}, down {}", ms(down)));
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_end: Vec<u64> = gateways
        .iter()
        .map(|g| g.pid().and_then(rss_kib).unwrap_or(0))
        .collect();
    rss_trend.push(rss_end.clone());
    redis_trend.push(redis_memory(&server, &prefix).await);
    stop.store(true, Ordering::SeqCst);
    let mut tally = Tally::default();
    let mut hung_workers = 0;
    for handle in workers {
        match tokio::time::timeout(Duration::from_secs(30), handle).await {
            Ok(Ok(part)) => {
                tally.requests += part.requests;
                tally.created.extend(part.created);
                tally.deleted.extend(part.deleted);
                tally.uncertain.extend(part.uncertain);
                tally.live.extend(part.live);
                tally.principals.extend(part.principals);
                tally.handles.extend(part.handles);
                tally.probes += part.probes;
                tally
                    .cross_principal_reads
                    .extend(part.cross_principal_reads);
                tally.not_found_live.extend(part.not_found_live);
                tally.delete_not_found.extend(part.delete_not_found);
                tally.worst = tally.worst.max(part.worst);
                for (what, count) in part.failures {
                    *tally.failures.entry(what).or_default() += count;
                }
                tally.samples.extend(part.samples);
            }
            _ => hung_workers += 1,
        }
    }
    let mut streams = soak_streams::StreamTally::default();
    for handle in streamers {
        match tokio::time::timeout(Duration::from_secs(30), handle).await {
            Ok(Ok(part)) => streams.merge(part),
            _ => hung_workers += 1,
        }
    }
    // Every event log left must belong to a session that was not deleted:
    // a deleted session's log goes with it, and a stream still running
    // then does not bring it back.
    let deleted: std::collections::HashSet<&str> = tally
        .deleted
        .iter()
        .chain(&streams.deleted)
        .map(String::as_str)
        .collect();
    let logs = event_logs(&server, &prefix).await?;
    let orphaned: Vec<&String> = logs
        .iter()
        .filter(|session| deleted.contains(session.as_str()))
        .collect();

    // The audit: the store, read with a manager of our own.
    let config = RedisConfig::standalone(&server.addr(), &prefix)?.with_timeouts(
        session_config::redis::DEFAULT_CONNECT_TIMEOUT,
        Duration::from_secs(5),
    )?;
    let auditor = scenarios::manager(&config).await?;
    let mut missing_in_store = Vec::new();
    let mut wrong_owner = Vec::new();
    for (session, principal) in tally.live.iter().zip(&tally.principals) {
        let id = SessionId::parse(session)?;
        match auditor.get(&id).await {
            Ok(Some(stored)) => {
                let owner = Owner::new(ISSUER, subject(*principal))?;
                if stored.owner() != Some(&owner) {
                    wrong_owner.push(format!("{session}: {:?}", stored.owner()));
                }
            }
            _ => missing_in_store.push(session.clone()),
        }
    }
    // Sessions whose DELETE succeeded must be gone. Those whose DELETE was
    // answered 404 (their initialize was acknowledged although persisting
    // them failed) may still appear later, when the timed-out write they
    // were created by is applied: counted apart.
    let mut resurrected = Vec::new();
    for session in &tally.deleted {
        let id = SessionId::parse(session)?;
        if !matches!(auditor.get(&id).await, Ok(None)) {
            resurrected.push(session.clone());
        }
    }
    let mut late_zombies = Vec::new();
    for session in &tally.delete_not_found {
        let id = SessionId::parse(session)?;
        if !matches!(auditor.get(&id).await, Ok(None)) {
            late_zombies.push(session.clone());
        }
    }
    // ... and through both replicas.
    let mut unserved = Vec::new();
    let mut call = 1_000_000u64;
    for ((item, principal), is_handle) in
        tally.live.iter().zip(&tally.principals).zip(&tally.handles)
    {
        let token = &tokens[*principal];
        for url in urls.iter() {
            call += 1;
            if *is_handle {
                let answer = call_tool(
                    &http,
                    url,
                    token,
                    call,
                    "increment",
                    json!({"handle": item}),
                    "increment",
                )
                .await;
                match answer {
                    ToolAnswer::Done(_) => {}
                    ToolAnswer::ToolError(text) => {
                        unserved.push(format!("{item} on {url}: {text}"))
                    }
                    ToolAnswer::Failed(what, detail) => unserved.push(format!(
                        "{item} on {url}: {what} {}",
                        detail.chars().take(120).collect::<String>()
                    )),
                }
                continue;
            }
            match post(
                &http,
                url,
                token,
                Era::Handshake(Some(item)),
                counter_body(call),
            )
            .await
            {
                Ok(answer)
                    if answer.status == StatusCode::OK && answer.body.contains("\"result\"") => {}
                Ok(answer) => unserved.push(format!(
                    "{item} on {url}: {} {}",
                    answer.status,
                    answer.body.chars().take(120).collect::<String>()
                )),
                Err(error) => unserved.push(format!("{item} on {url}: {error}")),
            }
        }
    }
    auditor.close().await.ok();
    let mut exited = Vec::new();
    let mut panics = 0;
    for gateway in &mut gateways {
        if let Some(status) = gateway.exited() {
            exited.push(format!("{} exited: {status}", gateway.name));
        }
        let log = std::fs::read_to_string(&gateway.log).unwrap_or_default();
        panics += log.matches("panicked").count();
    }
    let growth: Vec<u64> = rss_start
        .iter()
        .zip(&rss_end)
        .map(|(start, end)| end.saturating_sub(*start))
        .collect();

    let live_handles = tally.handles.iter().filter(|handle| **handle).count();
    outcome.figure(format!(
        "seed {seed}: {secs}s, {} faults ({}); {} requests from {WORKERS} clients ({} per era, {PRINCIPALS} principals) over 2 replicas; {} sessions and handles created, {} deleted or closed, {} live at the end ({live_handles} handles): {} missing from the store, {} with another owner; {} probes with another principal's session or handle, {} served; {} replica answers other than 200 in the audit, {} deleted sessions still present; 404 for live sessions during the run: {}; other failures {:?}; slowest request {}; DELETE answered 404 for a live session: {} ({} of them present in the store afterwards); replica RSS {:?} -> {:?} KiB (bound +{RSS_GROWTH_BOUND_KIB}), sampled about every 10 s: {}; panics in logs: {panics}",
        faults.len(),
        faults.join(", "),
        tally.requests,
        WORKERS / 2,
        tally.created.len(),
        tally.deleted.len(),
        tally.live.len(),
        missing_in_store.len(),
        wrong_owner.len(),
        tally.probes,
        tally.cross_principal_reads.len(),
        unserved.len(),
        resurrected.len(),
        tally.not_found_live.len(),
        tally.failures,
        ms(tally.worst),
        tally.delete_not_found.len(),
        late_zombies.len(),
        rss_start,
        rss_end,
        rss_trend
            .iter()
            .map(|sample| format!("{sample:?}"))
            .collect::<Vec<_>>()
            .join(" "),
    ));
    outcome.check(
        missing_in_store.is_empty(),
        format!(
            "every session and handle created and not deleted is in the store: {} missing, e.g. {:?}",
            missing_in_store.len(),
            missing_in_store.iter().take(3).collect::<Vec<_>>()
        ),
    );
    outcome.check(
        wrong_owner.is_empty(),
        format!(
            "every live session and handle is owned by its principal: {} not, e.g. {:?}",
            wrong_owner.len(),
            wrong_owner.iter().take(3).collect::<Vec<_>>()
        ),
    );
    outcome.check(
        tally.cross_principal_reads.is_empty() && tally.probes > 0,
        format!(
            "no request with another principal's session or handle is served: {} of {} probes were, e.g. {:?}",
            tally.cross_principal_reads.len(),
            tally.probes,
            tally.cross_principal_reads.iter().take(3).collect::<Vec<_>>()
        ),
    );
    outcome.check(
        unserved.is_empty(),
        format!(
            "both replicas serve every live session and handle after the soak: {} failed, e.g. {:?}",
            unserved.len(),
            unserved.iter().take(3).collect::<Vec<_>>()
        ),
    );
    outcome.check(
        resurrected.is_empty(),
        format!(
            "sessions whose DELETE succeeded, and closed handles, stay deleted: {} present, e.g. {:?}",
            resurrected.len(),
            resurrected.iter().take(3).collect::<Vec<_>>()
        ),
    );
    outcome.check(
        tally.not_found_live.is_empty(),
        format!(
            "a live session or handle is never answered as gone (404, unknown handle): {} times (faults start {:.1}s after the load), e.g. {:#?}",
            tally.not_found_live.len(),
            (started - epoch).as_secs_f64(),
            tally.not_found_live.iter().take(8).collect::<Vec<_>>()
        ),
    );
    outcome.check(
        tally.created.len() > WORKERS && live_handles > 0 && live_handles < tally.live.len(),
        "the workers created sessions and handles, and both are live at the end",
    );
    outcome.check(
        exited.is_empty() && panics == 0,
        format!("no replica exited ({exited:?}) or logged a panic ({panics})"),
    );
    outcome.check(
        hung_workers == 0,
        format!("no client hung ({hung_workers})"),
    );
    outcome.check(
        growth[0] < RSS_GROWTH_BOUND_KIB,
        format!(
            "replica a's RSS grew less than {RSS_GROWTH_BOUND_KIB} KiB after the warm-up: {} KiB (replica b, restarted: {} KiB)",
            growth[0], growth[1]
        ),
    );
    outcome.figure(format!(
        "streams: {} streamed calls of {} notifications {} ms apart from {STREAMERS} clients in {} sessions, {} cut and resumed on the other replica, {} cut and abandoned; {} complete (every notification once, in order, and the result), the others ended without their result: {:?}; notifications seen twice or out of order: {}; event logs left in Redis: {} ({} of them of deleted sessions; {} sessions of the run not deleted); Redis used_memory and event logs, sampled with the RSS: {}",
        streams.calls,
        soak_streams::STEPS,
        soak_streams::INTERVAL_MS,
        streams.sessions,
        streams.resumed,
        streams.abandoned,
        streams.complete,
        streams.incomplete,
        streams.disorder.len(),
        logs.len(),
        orphaned.len(),
        tally.live.len() + tally.uncertain.len() + tally.delete_not_found.len() + streams.remaining.len(),
        redis_trend
            .iter()
            .map(|(memory, logs)| format!("{} KiB/{logs}", memory / 1024))
            .collect::<Vec<_>>()
            .join(" "),
    ));
    outcome.check(
        streams.disorder.is_empty(),
        format!(
            "no client sees a notification twice or out of order across a stream and its resumption: {:?}",
            streams.disorder.iter().take(3).collect::<Vec<_>>()
        ),
    );
    outcome.check(
        streams.complete > 0 && streams.resumed > 0,
        format!(
            "streams were resumed on the other replica and completed: {} resumed, {} complete",
            streams.resumed, streams.complete
        ),
    );
    outcome.check(
        orphaned.is_empty(),
        format!(
            "no event log outlives its deleted session: {} do, e.g. {:?}",
            orphaned.len(),
            orphaned.iter().take(3).collect::<Vec<_>>()
        ),
    );
    outcome.check(
        unclean_exits.is_empty(),
        format!(
            "every SIGTERM drains and exits 0 within {}: {unclean_exits:?}",
            ms(DRAIN)
        ),
    );
    for sample in &tally.samples {
        outcome.note(sample.clone());
    }
    drop(gateways);
    Ok(outcome)
}
