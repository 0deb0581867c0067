//! Section 7: a request through a session layer, ours against
//! tower-sessions'.
//!
//! The same axum handler (read the session's counter, answer it as text)
//! behind `session-axum`'s layer on our Redis storage, and behind
//! tower-sessions' `SessionManagerLayer` with its Redis store
//! (`tower-sessions-redis-store`, fred), both on the same Redis server,
//! each served in this process on a port of its own. Every task holds one
//! session (created before the run through the same layer) and sends
//! `GET /read` with its cookie over its own keep-alive connection, so the
//! figure is what one authenticated request costs.
//!
//! Ours slides the session's TTL on each read (the refresh window spares
//! most reads a write); tower-sessions with `Expiry::OnInactivity` writes
//! the expiry only when a handler modifies the session, so its reads leave
//! the TTL as it was: it does less per read, which is the point of the
//! comparison. The rounds alternate the two layers.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use session_axum::SessionLayer;
use session_core::{Manager, Ttl};
use tower_sessions::{Expiry, SessionManagerLayer};
use tower_sessions_redis_store::RedisStore;

use crate::harness::{self, Plan, Row, Timing, Workload};
use crate::redis::{TTL, connect_flushed};

/// Concurrent connections.
pub(crate) const CONCURRENCY: [usize; 2] = [1, 64];
/// The key prefix of our sessions here.
const PREFIX: &str = "bench-layer:";

/// The section's figures.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LayerResults {
    pub(crate) rows: Vec<Row>,
}

/// The two layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layer {
    Ours,
    Tower,
}

impl Layer {
    fn name(self) -> &'static str {
        match self {
            Self::Ours => "session-axum",
            Self::Tower => "tower-sessions",
        }
    }
}

async fn ours_read(session: session_axum::Session) -> Result<String, session_axum::SessionError> {
    let count: Option<u64> = session.get().await?;
    Ok(count.unwrap_or_default().to_string())
}

async fn ours_write(session: session_axum::Session) -> Result<String, session_axum::SessionError> {
    session.insert(&1_u64).await?;
    Ok("1".to_owned())
}

async fn tower_read(
    session: tower_sessions::Session,
) -> Result<String, (axum::http::StatusCode, String)> {
    let count: Option<u64> = session.get("count").await.map_err(internal)?;
    Ok(count.unwrap_or_default().to_string())
}

async fn tower_write(
    session: tower_sessions::Session,
) -> Result<String, (axum::http::StatusCode, String)> {
    session.insert("count", 1_u64).await.map_err(internal)?;
    Ok("1".to_owned())
}

fn internal(error: impl std::fmt::Display) -> (axum::http::StatusCode, String) {
    (
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        error.to_string(),
    )
}

/// Serves `router` on 127.0.0.1; its address.
async fn serve(router: Router) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    Ok(addr)
}

/// Both layers' servers: their addresses.
async fn servers(addr: &str) -> Result<[(Layer, SocketAddr); 2]> {
    let storage = connect_flushed(addr, PREFIX).await?;
    let client = storage.client().clone();
    let manager = Manager::builder(storage, Ttl::new(TTL)?).build()?;
    let ours = Router::new()
        .route("/read", get(ours_read))
        .route("/write", post(ours_write))
        .layer(SessionLayer::new(manager));
    let tower = Router::new()
        .route("/read", get(tower_read))
        .route("/write", post(tower_write))
        .layer(
            SessionManagerLayer::new(RedisStore::new(client))
                .with_secure(false)
                .with_expiry(Expiry::OnInactivity(time::Duration::seconds(
                    i64::try_from(TTL.as_secs()).unwrap_or(i64::MAX),
                ))),
        );
    Ok([
        (Layer::Ours, serve(ours).await?),
        (Layer::Tower, serve(tower).await?),
    ])
}

struct Reads {
    http: reqwest::Client,
    url: String,
    /// One `Cookie` header per task.
    cookies: Vec<String>,
}

impl Reads {
    /// `tasks` sessions made through the layer at `addr`, one per task.
    async fn with_sessions(http: &reqwest::Client, addr: SocketAddr, tasks: usize) -> Result<Self> {
        let mut cookies = Vec::with_capacity(tasks);
        for _ in 0..tasks {
            let response = http.post(format!("http://{addr}/write")).send().await?;
            if !response.status().is_success() {
                bail!("POST /write answered {}", response.status());
            }
            let cookie = response
                .headers()
                .get("set-cookie")
                .context("POST /write set no cookie")?
                .to_str()?
                .split(';')
                .next()
                .context("an empty Set-Cookie")?
                .to_owned();
            cookies.push(cookie);
        }
        Ok(Self {
            http: http.clone(),
            url: format!("http://{addr}/read"),
            cookies,
        })
    }
}

impl Workload for Reads {
    type State = usize;

    fn state(&self, task: usize, _tasks: usize) -> usize {
        task
    }

    async fn op(&self, task: &mut usize) -> Result<bool> {
        let response = self
            .http
            .get(&self.url)
            .header("cookie", &self.cookies[*task])
            .send()
            .await?;
        let status = response.status();
        let body = response.text().await?;
        if !status.is_success() || body != "1" {
            bail!("GET /read answered {status}: {body}");
        }
        Ok(true)
    }
}

/// Runs the section against the Redis server at `addr`.
pub(crate) async fn run(addr: &str, timing: Timing) -> Result<LayerResults> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(256)
        .build()?;
    let servers = servers(addr).await?;
    let mut rows = Vec::new();
    for tasks in CONCURRENCY {
        let mut works = Vec::new();
        for (layer, addr) in servers {
            works.push((
                layer,
                Arc::new(Reads::with_sessions(&http, addr, tasks).await?),
            ));
        }
        let mut best: Vec<Option<Row>> = vec![None, None];
        for round in 0..timing.rounds {
            // The order alternates, so neither layer always runs second.
            let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for index in order {
                let (layer, work) = &works[index];
                let m =
                    harness::run(work, Plan::timed(tasks, timing.warmup, timing.measure)).await?;
                eprintln!(
                    "layer: round {} {tasks:>3} connections {:<15} {:>8.0} requests/s  p99 {:>8.1} us  cpu {:>5.1} us/op",
                    round + 1,
                    layer.name(),
                    m.ops_per_sec,
                    m.p99_us,
                    m.cpu_us_per_op
                );
                if m.ops == 0 || m.errors > 0 {
                    bail!(
                        "{} at {tasks} connections: {} requests, {} errors (first: {})",
                        layer.name(),
                        m.ops,
                        m.errors,
                        m.first_error.as_deref().unwrap_or("none")
                    );
                }
                let slot = &mut best[index];
                let rounds = slot
                    .as_ref()
                    .map(|row| row.rounds.clone())
                    .unwrap_or_default();
                let mut rounds = rounds;
                rounds.push((m.ops_per_sec, m.p99_us));
                let keep = slot
                    .as_ref()
                    .is_none_or(|row| m.ops_per_sec > row.m.ops_per_sec);
                let m = if keep {
                    m
                } else {
                    slot.as_ref()
                        .map(|row| row.m.clone())
                        .context("a kept row")?
                };
                *slot = Some(Row {
                    target: layer.name().to_owned(),
                    op: "GET with a session".to_owned(),
                    concurrency: tasks,
                    m,
                    script_share: None,
                    hit_share: None,
                    rounds,
                });
            }
        }
        rows.extend(best.into_iter().flatten());
    }
    Ok(LayerResults { rows })
}
