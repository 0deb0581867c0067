//! The streaming clients of the gateway soak: resumable SSE streams held
//! open through the soak's faults.
//!
//! Each streamer opens a handshake-era session, makes a few `tools/call
//! progress` calls ([`STEPS`] notifications, [`INTERVAL_MS`] apart, so
//! that a stream stays open for seconds) on a random replica, and drops
//! half of the streams after a random number of notifications. It resumes
//! most of those on the *other* replica with `Last-Event-ID`, and abandons
//! the rest (their drains go on writing the log). Then it deletes the
//! session, which deletes its event log.
//!
//! Promised whatever the faults: a client never sees a notification twice
//! or out of order across a stream and its resumption. Counted, not
//! promised (a fault may cost an event its id, or the producing replica
//! its life): streams that ended without their result. The soak itself
//! checks that the event logs left in Redis are those of sessions not
//! deleted, so abandoned and resumed streams leave nothing behind.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::rng::Rng;

/// Notifications per streamed call.
pub const STEPS: u64 = 40;
/// The pause between two notifications: a call's stream is open for
/// about `STEPS * INTERVAL_MS`.
pub const INTERVAL_MS: u64 = 50;
/// Calls per session before the streamer deletes it.
const CALLS_PER_SESSION: usize = 3;
const PROTOCOL: &str = "2025-03-26";

/// What one streamer needs.
pub struct StreamerSetup {
    /// Its number, for its random draws.
    pub index: usize,
    /// Its principal's bearer token.
    pub token: String,
    /// The replicas' `/mcp` URLs.
    pub urls: Arc<Vec<String>>,
    /// Set when the soak ends.
    pub stop: Arc<AtomicBool>,
    /// The soak's seed.
    pub seed: u64,
}

/// What the streamers did and saw.
#[derive(Default)]
pub struct StreamTally {
    /// Streamed calls made.
    pub calls: usize,
    /// Streams dropped and resumed on the other replica.
    pub resumed: usize,
    /// Streams dropped and never resumed.
    pub abandoned: usize,
    /// Calls whose client got every notification once, in order, and the
    /// result (directly or through a resumption).
    pub complete: usize,
    /// Why the other calls ended without their result, with counts.
    pub incomplete: BTreeMap<String, usize>,
    /// A notification seen twice or out of order: broken promises.
    pub disorder: Vec<String>,
    /// Sessions created.
    pub sessions: usize,
    /// Sessions deleted (`DELETE` answered 2xx): their logs must be gone.
    pub deleted: Vec<String>,
    /// Sessions still open at the end, or whose `DELETE` failed: their
    /// event logs may remain.
    pub remaining: Vec<String>,
}

impl StreamTally {
    /// Adds `other` to this tally.
    pub fn merge(&mut self, other: StreamTally) {
        self.calls += other.calls;
        self.resumed += other.resumed;
        self.abandoned += other.abandoned;
        self.complete += other.complete;
        for (what, count) in other.incomplete {
            *self.incomplete.entry(what).or_default() += count;
        }
        self.disorder.extend(other.disorder);
        self.sessions += other.sessions;
        self.deleted.extend(other.deleted);
        self.remaining.extend(other.remaining);
    }

    fn incomplete(&mut self, what: impl Into<String>) {
        *self.incomplete.entry(what.into()).or_default() += 1;
    }
}

/// One streamer: sessions, streamed calls, cuts and resumptions until
/// `stop`.
pub async fn streamer(setup: StreamerSetup) -> StreamTally {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap_or_default();
    let mut rng = Rng::derive(setup.seed, 0x57E4 + setup.index as u64);
    let mut tally = StreamTally::default();
    let mut next_id = 10u64;
    let client = Client {
        http: &http,
        token: &setup.token,
    };
    while !setup.stop.load(Ordering::Relaxed) {
        let replica = rng.below(setup.urls.len() as u64) as usize;
        let Some(session) = client.open(&setup.urls[replica]).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        tally.sessions += 1;
        for _ in 0..CALLS_PER_SESSION {
            if setup.stop.load(Ordering::Relaxed) {
                break;
            }
            next_id += 1;
            tally.calls += 1;
            let producer = rng.below(setup.urls.len() as u64) as usize;
            let other = (producer + 1) % setup.urls.len();
            // Half the streams are cut after 1..=STEPS notifications.
            let cut_after = rng.percent(50).then(|| 1 + rng.below(STEPS));
            let resume = rng.percent(80);
            let mut seen = Seen::default();
            let first = client
                .call(
                    &setup.urls[producer],
                    &session,
                    next_id,
                    cut_after,
                    &mut seen,
                )
                .await;
            let outcome = match (first, cut_after) {
                (Ok(()), _) if seen.result => Ok(()),
                (Ok(()), Some(_)) if !resume => {
                    tally.abandoned += 1;
                    continue;
                }
                (Ok(()), Some(_)) => {
                    tally.resumed += 1;
                    match seen.last_id.clone() {
                        None => Err("cut before any event id".to_owned()),
                        Some(last) => {
                            client
                                .resume(&setup.urls[other], &session, &last, next_id, &mut seen)
                                .await
                        }
                    }
                }
                (Ok(()), None) => Err("stream ended without the result".to_owned()),
                (Err(error), _) => Err(error),
            };
            if let Some(disorder) = seen.disorder.take() {
                tally
                    .disorder
                    .push(format!("session {session}: {disorder}"));
            }
            match outcome {
                Ok(()) if seen.result && seen.progress == STEPS => tally.complete += 1,
                Ok(()) if seen.result => {
                    tally.incomplete("result after a gap in the notifications")
                }
                Ok(()) => tally.incomplete("resumed stream ended without the result"),
                Err(error) => tally.incomplete(error),
            }
        }
        let replica = rng.below(setup.urls.len() as u64) as usize;
        match client.delete(&setup.urls[replica], &session).await {
            Some(status) if status.is_success() => tally.deleted.push(session),
            _ => tally.remaining.push(session),
        }
    }
    tally
}

/// The notifications and result one call's client has seen so far.
#[derive(Default)]
struct Seen {
    /// The last progress value seen.
    progress: u64,
    result: bool,
    last_id: Option<String>,
    /// The first notification seen twice or out of order.
    disorder: Option<String>,
}

impl Seen {
    /// Takes in one SSE event's id and data.
    fn event(&mut self, id: Option<&str>, data: &str, call: u64) {
        if let Some(id) = id {
            self.last_id = Some(id.to_owned());
        }
        let Ok(message) = serde_json::from_str::<Value>(data) else {
            return;
        };
        if message["method"] == "notifications/progress" {
            let Some(progress) = message["params"]["progress"].as_f64() else {
                return;
            };
            let progress = progress as u64;
            if progress != self.progress + 1 && self.disorder.is_none() {
                self.disorder = Some(format!(
                    "notification {progress} after {} (call {call})",
                    self.progress
                ));
            }
            self.progress = self.progress.max(progress);
        } else if message["id"] == call && message.get("result").is_some() {
            if self.result && self.disorder.is_none() {
                self.disorder = Some(format!("the result of call {call} twice"));
            }
            self.result = true;
        }
    }
}

struct Client<'a> {
    http: &'a reqwest::Client,
    token: &'a str,
}

impl Client<'_> {
    fn post(&self, url: &str, session: Option<&str>, body: Value) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .post(url)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", PROTOCOL)
            .header("authorization", format!("Bearer {}", self.token))
            .body(body.to_string());
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        request
    }

    /// Opens a session: `initialize`, then `notifications/initialized`.
    async fn open(&self, url: &str) -> Option<String> {
        let initialize = json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL,
                "capabilities": {},
                "clientInfo": {"name": "soak-streamer", "version": "0"},
            },
        });
        let response = self.post(url, None, initialize).send().await.ok()?;
        if response.status() != StatusCode::OK {
            return None;
        }
        let session = response
            .headers()
            .get("mcp-session-id")?
            .to_str()
            .ok()?
            .to_owned();
        response.text().await.ok()?;
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let _ = self.post(url, Some(&session), initialized).send().await;
        Some(session)
    }

    /// Calls `progress` and reads its stream into `seen`, dropping the
    /// connection after `cut_after` notifications if given.
    async fn call(
        &self,
        url: &str,
        session: &str,
        id: u64,
        cut_after: Option<u64>,
        seen: &mut Seen,
    ) -> Result<(), String> {
        let call = json!({
            "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {
                "name": "progress",
                "arguments": {"steps": STEPS, "interval_ms": INTERVAL_MS},
                "_meta": {"progressToken": id},
            },
        });
        let response = self
            .post(url, Some(session), call)
            .send()
            .await
            .map_err(|_| "call: transport error".to_owned())?;
        if response.status() != StatusCode::OK {
            return Err(format!("call: {}", response.status()));
        }
        read_stream(response, id, seen, cut_after).await
    }

    /// Resumes the stream after `last` on `url` and reads it into `seen`.
    async fn resume(
        &self,
        url: &str,
        session: &str,
        last: &str,
        id: u64,
        seen: &mut Seen,
    ) -> Result<(), String> {
        let response = self
            .http
            .get(url)
            .header("accept", "text/event-stream")
            .header("mcp-protocol-version", PROTOCOL)
            .header("mcp-session-id", session)
            .header("last-event-id", last)
            .header("authorization", format!("Bearer {}", self.token))
            .send()
            .await
            .map_err(|_| "resume: transport error".to_owned())?;
        if response.status() != StatusCode::OK {
            return Err(format!("resume: {}", response.status()));
        }
        read_stream(response, id, seen, None).await
    }

    async fn delete(&self, url: &str, session: &str) -> Option<StatusCode> {
        self.http
            .delete(url)
            .header("mcp-session-id", session)
            .header("mcp-protocol-version", PROTOCOL)
            .header("authorization", format!("Bearer {}", self.token))
            .send()
            .await
            .ok()
            .map(|response| response.status())
    }
}

/// Reads SSE events from `response` into `seen` until the stream ends, the
/// result came, or `cut_after` notifications were seen (then the response
/// is dropped, closing the connection mid-stream).
async fn read_stream(
    mut response: reqwest::Response,
    call: u64,
    seen: &mut Seen,
    cut_after: Option<u64>,
) -> Result<(), String> {
    let mut buffer = String::new();
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Ok(()),
            Err(error) if error.is_timeout() => return Err("stream: timed out".to_owned()),
            Err(_) => return Err("stream: transport error".to_owned()),
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let mut id = None;
            let mut data = String::new();
            for line in event.lines() {
                if let Some(value) = line.strip_prefix("id:") {
                    id = Some(value.trim().to_owned());
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push_str(value.trim_start());
                }
            }
            seen.event(id.as_deref(), &data, call);
            if seen.result || cut_after.is_some_and(|cut| seen.progress >= cut) {
                return Ok(());
            }
        }
    }
}
