//! A login flow with a counter page, on sessions from `session-axum`.
//!
//! ```text
//! cargo run -p session-axum --example login                     # local storage
//! cargo run -p session-axum --example login -- --config redis.toml
//! ```
//!
//! Without `--config` the sessions live in this process (local storage);
//! with a configuration file in the session-config format, a `[redis]`
//! table puts them in Redis, so that several copies behind a balancer share
//! them. See `app.rs` for the application and `docs/axum.md` for the
//! library.

mod app;

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use session_axum::{CookieSettings, IdSource, Limits, Rate, SessionLayer};
use session_factory::{SessionConfig, SessionType, Ttl, new_manager};

/// The example's command line.
#[derive(Parser)]
#[command(about = "A login flow and a counter page on session-axum")]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// A configuration file (session-config's format: `ttl`, `[redis]`);
    /// without it, local storage with a 30-minute TTL.
    #[arg(long)]
    config: Option<PathBuf>,
    /// This server's name in its answers.
    #[arg(long, default_value = "login-example")]
    replica: String,
    /// Send the cookie over plain HTTP too (drops `Secure`): for a browser
    /// on a host other than localhost without TLS. Never in production.
    #[arg(long)]
    insecure_cookie: bool,
    /// The most sessions one user may hold at once.
    #[arg(long)]
    max_sessions_per_user: Option<NonZeroUsize>,
    /// The most anonymous sessions one client address may create per
    /// minute.
    #[arg(long)]
    anonymous_sessions_per_minute: Option<NonZeroU32>,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let config = match &args.config {
        Some(path) => SessionConfig::load(path)?,
        None => SessionConfig::new(Ttl::from_secs(30 * 60)?),
    };
    let manager = new_manager(&config, SessionType::default())
        .await
        .context("cannot set up the session storage")?;
    let mut limits = Limits::default();
    if let Some(cap) = args.max_sessions_per_user {
        limits = limits.per_owner(cap);
    }
    if let Some(count) = args.anonymous_sessions_per_minute {
        limits = limits.anonymous_creations(Rate::per(count, Duration::from_secs(60))?);
    }
    let cookie = CookieSettings::default().secure(!args.insecure_cookie);
    let layer = SessionLayer::with_settings(manager.clone(), IdSource::Cookie(cookie), limits);
    let app = app::router(layer, args.replica.clone());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        storage = manager.describe().backend,
        "login example listening"
    );
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    manager.close().await?;
    Ok(())
}
