//! `session-gateway`: an MCP streamable-HTTP server whose sessions are shared
//! by every replica through the session manager.
//!
//! ```text
//! session-gateway [--config <path>] [--listen <addr>] [--replica <name>]
//!                 [--allowed-host <host>]... [--local-idle <time>]
//! ```
//!
//! Without `--config` sessions are local (in-process) with a 30-minute TTL;
//! with a configuration file they are where the file says: a `[redis]` table
//! means Redis, no such table local storage. See `docs/deployment.md`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::serve::ListenerExt;
use session_factory::{Session, SessionConfig, SessionType};
use session_gateway::{Gateway, GatewayOptions};
use tracing_subscriber::EnvFilter;

const USAGE: &str = "\
session-gateway: an MCP streamable-HTTP server with sessions shared by every replica

USAGE:
    session-gateway [OPTIONS]

OPTIONS:
    --config <path>        Session configuration (TOML). A [redis] table means Redis
                           storage, none means local storage. Without this option:
                           local storage with a 30-minute TTL.
    --listen <addr>        Address to listen on [default: 127.0.0.1:8080]
    --replica <name>       This replica's name, reported by /health, the tools and
                           the x-served-by header [default: gateway@<listen addr>]
    --allowed-host <host>  A Host header value to accept (host or host:port); may be
                           repeated; `*` accepts any. Default: loopback names only
                           (rmcp's protection against DNS rebinding).
    --local-idle <time>    How long this replica keeps its in-memory copy of a session
                           that gets no requests (the store keeps the session; a later
                           request restores the copy) [default: 60s]
    -h, --help             Print this help

ROUTES:
    /mcp      MCP streamable HTTP (stateful sessions)
    /health   storage health as JSON (503 when the store is unreachable)

Logging: RUST_LOG (default `info`).
";

/// The default TTL without a configuration file.
const DEFAULT_TTL: Duration = Duration::from_secs(30 * 60);
/// How long a graceful shutdown waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, PartialEq)]
struct Args {
    config: Option<PathBuf>,
    listen: SocketAddr,
    replica: Option<String>,
    allowed_hosts: Option<Vec<String>>,
    local_idle: Duration,
}

enum Parsed {
    Run(Args),
    Help,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Parsed> {
    let mut parsed = Args {
        config: None,
        listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        replica: None,
        allowed_hosts: None,
        local_idle: session_gateway::DEFAULT_LOCAL_IDLE_TIMEOUT,
    };
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value.into())),
            _ => (arg, None),
        };
        let mut value = || -> Result<String> {
            match inline.clone() {
                Some(value) => Ok(value),
                None => args
                    .next()
                    .with_context(|| format!("{flag} needs a value (see --help)")),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--config" => parsed.config = Some(PathBuf::from(value()?)),
            "--listen" => {
                let addr = value()?;
                parsed.listen = addr.parse().with_context(|| {
                    format!("--listen {addr:?} is not an address like 127.0.0.1:8080")
                })?;
            }
            "--replica" => parsed.replica = Some(value()?),
            "--allowed-host" => {
                let host = value()?;
                let hosts = parsed.allowed_hosts.get_or_insert_with(Vec::new);
                if host != "*" {
                    hosts.push(host);
                }
            }
            "--local-idle" => {
                let text = value()?;
                parsed.local_idle = humantime::parse_duration(&text)
                    .ok()
                    .filter(|idle| !idle.is_zero())
                    .with_context(|| {
                        format!("--local-idle {text:?} is not a positive duration like 60s or 5m")
                    })?;
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    // `--allowed-host '*'` alone leaves an empty list: rmcp then accepts any host.
    Ok(Parsed::Run(parsed))
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("session-gateway: {error:#}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_ansi(std::io::stdout().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("session-gateway: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let config = match &args.config {
        Some(path) => SessionConfig::load(path)?,
        None => SessionConfig::local(DEFAULT_TTL),
    };
    let manager = config
        .build_manager(|id| Session::new(id, SessionType::Streamable))
        .await
        .context("cannot set up the session storage")?;
    let storage = if manager.is_local() { "local" } else { "redis" };
    let replica = args
        .replica
        .unwrap_or_else(|| format!("gateway@{}", args.listen));
    let mut options = GatewayOptions::default();
    options.allowed_hosts = args.allowed_hosts;
    options.local_idle_timeout = args.local_idle;
    let gateway = Gateway::with_options(manager.clone(), replica, options)?;

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let listen = listener.local_addr().unwrap_or(args.listen);
    tracing::info!(
        %listen,
        replica = gateway.replica(),
        storage,
        ttl = ?config.ttl,
        max_lifetime = ?config.max_lifetime,
        "session-gateway listening"
    );

    let stop = tokio_util::sync::CancellationToken::new();
    // Responses are small and written whole: without TCP_NODELAY, Nagle's
    // algorithm holds each one back until the client's delayed ACK, 40 ms
    // per request on a keep-alive connection.
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%error, "cannot set TCP_NODELAY");
        }
    });
    let server = axum::serve(listener, gateway.router())
        .with_graceful_shutdown(stop.clone().cancelled_owned())
        .into_future();
    let mut server = tokio::spawn(server);

    let served = tokio::select! {
        result = &mut server => Some(result),
        signal = shutdown_signal() => {
            tracing::info!(signal, "shutting down: no new connections");
            None
        }
    };
    let served = match served {
        Some(result) => result,
        None => {
            // Stop accepting, end rmcp's sessions and SSE streams (the
            // sessions stay in the store for the other replicas), and let
            // in-flight requests finish.
            stop.cancel();
            gateway.close_streams();
            match tokio::time::timeout(DRAIN_TIMEOUT, &mut server).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!(
                        "in-flight requests still running after {DRAIN_TIMEOUT:?}; stopping anyway"
                    );
                    server.abort();
                    Ok(Ok(()))
                }
            }
        }
    };
    let shutdown = manager.shutdown().await;
    served
        .context("the server task failed")?
        .context("the server failed")?;
    shutdown.context("closing the session storage")?;
    tracing::info!("stopped");
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM and names the one that came.
async fn shutdown_signal() -> &'static str {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => "SIGINT",
        () = term => "SIGTERM",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn parse(args: &[&str]) -> Result<Parsed> {
        parse_args(args.iter().map(|arg| (*arg).to_owned()))
    }

    fn run_args(args: &[&str]) -> Args {
        match parse(args).unwrap() {
            Parsed::Run(args) => args,
            Parsed::Help => panic!("unexpected help"),
        }
    }

    #[test]
    fn defaults() {
        let args = run_args(&[]);
        assert_eq!(args.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(args.config, None);
        assert_eq!(args.replica, None);
        assert_eq!(args.allowed_hosts, None);
        assert_eq!(args.local_idle, session_gateway::DEFAULT_LOCAL_IDLE_TIMEOUT);
    }

    #[test]
    fn every_flag_in_both_spellings() {
        let args = run_args(&[
            "--config",
            "config/redis.toml",
            "--listen=0.0.0.0:9000",
            "--replica",
            "a",
            "--allowed-host",
            "mcp.example.com",
            "--allowed-host=localhost",
            "--local-idle",
            "90s",
        ]);
        assert_eq!(args.local_idle, Duration::from_secs(90));
        assert_eq!(args.config, Some(PathBuf::from("config/redis.toml")));
        assert_eq!(args.listen, SocketAddr::from(([0, 0, 0, 0], 9000)));
        assert_eq!(args.replica.as_deref(), Some("a"));
        assert_eq!(
            args.allowed_hosts,
            Some(vec!["mcp.example.com".into(), "localhost".into()])
        );
        assert_eq!(
            run_args(&["--allowed-host", "*"]).allowed_hosts,
            Some(vec![])
        );
    }

    #[test]
    fn help_and_errors() {
        assert!(matches!(parse(&["--help"]).unwrap(), Parsed::Help));
        assert!(matches!(parse(&["-h"]).unwrap(), Parsed::Help));
        for bad in [
            &["--listen"][..],
            &["--listen", "nowhere"],
            &["--verbose"],
            &["--local-idle", "0s"],
            &["--local-idle", "soon"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
