//! Section 5: the gateway, end to end.
//!
//! `tools/call counter` through one `session-gateway` replica over HTTP/1.1
//! (keep-alive connections from one reqwest client), each task on its own MCP
//! session. Every call loads the session from the store and writes it back
//! with the counter incremented, so the difference between a replica on
//! local storage and one on Redis is what the store costs a real request.
//!
//! Then `tools/call progress` ([`STREAM_STEPS`] notifications, no pause
//! between them) read as one SSE stream: on local storage the events stay in
//! rmcp's memory, on Redis each is appended to the session's event log
//! before it is sent, so the difference per event is what resumable
//! streams cost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::harness::{self, Plan, Row, Timing, Workload};

/// Concurrent clients.
pub(crate) const CONCURRENCY: [usize; 3] = [1, 16, 64];
/// Concurrent clients of the streamed calls.
pub(crate) const STREAM_CONCURRENCY: [usize; 2] = [1, 16];
/// Progress notifications per streamed call.
pub(crate) const STREAM_STEPS: u32 = 50;
const PROTOCOL: &str = "2025-06-18";

/// One replica's figures.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct GatewayResults {
    /// `local` or `redis`.
    pub(crate) storage: String,
    pub(crate) rows: Vec<Row>,
    /// The streamed calls (`tools/call progress`), by client count.
    #[serde(default)]
    pub(crate) streams: Vec<Row>,
}

struct Calls {
    http: reqwest::Client,
    url: String,
    sessions: Vec<String>,
    next_id: AtomicU64,
}

impl Calls {
    fn post(&self, session: Option<&str>, body: &serde_json::Value) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", PROTOCOL)
            .body(body.to_string());
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        request
    }

    /// Calls to `url` with `tasks` MCP sessions open, one per task.
    async fn with_sessions(http: &reqwest::Client, url: &str, tasks: usize) -> Result<Self> {
        let mut calls = Self {
            http: http.clone(),
            url: url.to_owned(),
            sessions: Vec::new(),
            next_id: AtomicU64::new(10),
        };
        for _ in 0..tasks {
            calls.sessions.push(calls.open().await?);
        }
        Ok(calls)
    }

    /// Opens one MCP session: initialize, then the initialized notification.
    async fn open(&self) -> Result<String> {
        let initialize = json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL,
                "capabilities": {},
                "clientInfo": {"name": "session-bench", "version": "0"},
            },
        });
        let response = self.post(None, &initialize).send().await?;
        if !response.status().is_success() {
            bail!("initialize answered {}", response.status());
        }
        let session = response
            .headers()
            .get("mcp-session-id")
            .context("initialize answered no mcp-session-id")?
            .to_str()?
            .to_owned();
        drop(response.text().await?);
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let response = self.post(Some(&session), &initialized).send().await?;
        if !response.status().is_success() {
            bail!("notifications/initialized answered {}", response.status());
        }
        Ok(session)
    }
}

struct CounterWork {
    calls: Arc<Calls>,
}

impl Workload for CounterWork {
    type State = usize;

    fn state(&self, task: usize, _tasks: usize) -> usize {
        task
    }

    async fn op(&self, task: &mut usize) -> Result<bool> {
        let calls = &self.calls;
        let id = calls.next_id.fetch_add(1, Ordering::Relaxed);
        let call = json!({
            "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "counter", "arguments": {}},
        });
        let response = calls
            .post(Some(&calls.sessions[*task]), &call)
            .send()
            .await?;
        let status = response.status();
        let body = response.text().await?;
        if !status.is_success() || !body.contains("\"result\"") {
            bail!(
                "tools/call answered {status}: {}",
                body.chars().take(200).collect::<String>()
            );
        }
        Ok(true)
    }
}

struct ProgressWork {
    calls: Arc<Calls>,
}

impl Workload for ProgressWork {
    type State = usize;

    fn state(&self, task: usize, _tasks: usize) -> usize {
        task
    }

    async fn op(&self, task: &mut usize) -> Result<bool> {
        let calls = &self.calls;
        let id = calls.next_id.fetch_add(1, Ordering::Relaxed);
        let call = json!({
            "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {
                "name": "progress",
                "arguments": {"steps": STREAM_STEPS, "interval_ms": 0},
                "_meta": {"progressToken": id},
            },
        });
        let response = calls
            .post(Some(&calls.sessions[*task]), &call)
            .send()
            .await?;
        let status = response.status();
        let body = response.text().await?;
        let notifications = body.matches("notifications/progress").count();
        if !status.is_success()
            || !body.contains("\"result\"")
            || notifications != STREAM_STEPS as usize
        {
            bail!(
                "tools/call progress answered {status} with {notifications} notifications: {}",
                body.chars().take(200).collect::<String>()
            );
        }
        Ok(true)
    }
}

/// Runs section 5 against the gateway at `url`.
pub(crate) async fn run(url: &str, storage: &str, timing: Timing) -> Result<GatewayResults> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let mut rows = Vec::new();
    for tasks in CONCURRENCY {
        let calls = Calls::with_sessions(&http, url, tasks).await?;
        let work = Arc::new(CounterWork {
            calls: Arc::new(calls),
        });
        let m = harness::run(&work, Plan::timed(tasks, timing.warmup, timing.measure)).await?;
        eprintln!(
            "gateway: {storage:<5} {tasks:>3} clients {:>8.0} calls/s  p99 {:>8.1} us",
            m.ops_per_sec, m.p99_us
        );
        if m.ops == 0 || m.errors > 0 {
            bail!(
                "gateway ({storage}) at {tasks} clients: {} calls, {} errors (first: {})",
                m.ops,
                m.errors,
                m.first_error.as_deref().unwrap_or("none")
            );
        }
        rows.push(Row {
            target: format!("gateway-{storage}"),
            op: "tools/call counter".to_owned(),
            concurrency: tasks,
            m,
            script_share: None,
            hit_share: None,
            rounds: Vec::new(),
        });
    }
    let mut streams = Vec::new();
    for tasks in STREAM_CONCURRENCY {
        let calls = Calls::with_sessions(&http, url, tasks).await?;
        let work = Arc::new(ProgressWork {
            calls: Arc::new(calls),
        });
        let m = harness::run(&work, Plan::timed(tasks, timing.warmup, timing.measure)).await?;
        eprintln!(
            "gateway: {storage:<5} {tasks:>3} clients {:>8.0} streamed calls/s ({:.0} events/s)  p50 {:>8.1} us",
            m.ops_per_sec,
            m.ops_per_sec * f64::from(STREAM_STEPS),
            m.p50_us
        );
        if m.ops == 0 || m.errors > 0 {
            bail!(
                "gateway ({storage}) streamed calls at {tasks} clients: {} calls, {} errors (first: {})",
                m.ops,
                m.errors,
                m.first_error.as_deref().unwrap_or("none")
            );
        }
        streams.push(Row {
            target: format!("gateway-{storage}"),
            op: "tools/call progress".to_owned(),
            concurrency: tasks,
            m,
            script_share: None,
            hit_share: None,
            rounds: Vec::new(),
        });
    }
    Ok(GatewayResults {
        storage: storage.to_owned(),
        rows,
        streams,
    })
}
