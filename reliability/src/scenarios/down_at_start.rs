//! Scenario 5: Redis is down when the service starts.
//!
//! - Eager connect (the default) to a port that refuses connections fails
//!   at once, and to a listener that accepts but never answers fails within
//!   the connect timeout; both with typed, retryable errors.
//! - Lazy connect builds the manager without Redis; operations fail typed
//!   and bounded while Redis is away, and succeed by themselves once a
//!   server appears on the address (that part starts a server, so it runs
//!   only under `cargo xtask reliability`).

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use session_config::{ConnectMode, RedisConfig};
use session_core::{Error, SessionId};
use session_redis::RedisStorage;

use crate::load::ms;
use crate::{Outcome, scenarios};
use session_testenv::ports::free_port;
use session_testenv::{HOST, RedisProcess};

/// The figure's name.
pub const NAME: &str = "redis-down-at-start";

/// Allowed lateness beyond a timeout.
pub const MARGIN: Duration = Duration::from_millis(300);

/// The eager half, which needs no server: a refused port and a silent
/// listener. Runs in the normal test suite too.
pub async fn eager(outcome: &mut Outcome) -> anyhow::Result<()> {
    // Refused: nothing listens on the port any more.
    let refused = free_port()?;
    let config = RedisConfig::standalone(&format!("{HOST}:{refused}"), "rel:down:")?
        .with_timeouts(
            Duration::from_secs(2),
            session_config::redis::DEFAULT_COMMAND_TIMEOUT,
        )?;
    let started = Instant::now();
    let result = RedisStorage::connect(&config).await;
    let refused_after = started.elapsed();
    match &result {
        Err(error) => {
            outcome.check(
                error.is_retryable() && error.backend_kind().is_some(),
                format!("a refused eager connect is a retryable backend error: {error:?}"),
            );
        }
        Ok(_) => {
            outcome.check(false, "eager connect to a refused port succeeded");
        }
    }
    outcome.check(
        refused_after < config.connect_timeout(),
        format!(
            "a refused eager connect fails before the connect timeout ({})",
            ms(refused_after)
        ),
    );

    // Silent: a listener that accepts and never answers.
    let silent = TcpListener::bind((HOST, 0))?;
    let config = RedisConfig::standalone(&silent.local_addr()?.to_string(), "rel:down:")?
        .with_timeouts(
            Duration::from_secs(1),
            session_config::redis::DEFAULT_COMMAND_TIMEOUT,
        )?;
    let started = Instant::now();
    let result = RedisStorage::connect(&config).await;
    let silent_after = started.elapsed();
    match &result {
        Err(error @ Error::Timeout { .. }) => {
            outcome.check(
                error.is_retryable(),
                format!("the timeout is retryable: {error:?}"),
            );
        }
        Err(other) => {
            outcome.check(
                false,
                format!("eager connect to a silent server is a Timeout error, got {other:?}"),
            );
        }
        Ok(_) => {
            outcome.check(false, "eager connect to a silent listener succeeded");
        }
    }
    outcome.check(
        silent_after <= config.connect_timeout() + MARGIN,
        format!(
            "eager connect to a silent server fails within the connect timeout {} + {} ({})",
            ms(config.connect_timeout()),
            ms(MARGIN),
            ms(silent_after)
        ),
    );
    outcome.figure(format!(
        "eager: refused port fails in {}, silent listener in {} (connect timeout {})",
        ms(refused_after),
        ms(silent_after),
        ms(config.connect_timeout())
    ));
    Ok(())
}

/// Lazy connect while nothing listens: the manager builds, operations fail
/// typed within the command timeout. Returns the manager's address' port
/// and the manager. Runs in the normal test suite too.
pub async fn lazy_while_down(
    outcome: &mut Outcome,
) -> anyhow::Result<(u16, session_core::Manager, RedisConfig)> {
    let port = free_port()?;
    let config = scenarios::fault_config(&format!("{HOST}:{port}"), "rel:down:lazy:")?
        .with_connect(ConnectMode::Lazy)
        .with_timeouts(scenarios::CONNECT_TIMEOUT, Duration::from_millis(500))?;
    let started = Instant::now();
    let manager = scenarios::manager(&config).await?;
    let built_after = started.elapsed();
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        let result = manager.get(&SessionId::new()).await;
        let took = started.elapsed();
        worst = worst.max(took);
        match result {
            Err(error) => {
                outcome.check(
                    error.is_retryable(),
                    format!("operations while Redis is down fail retryable: {error:?}"),
                );
            }
            Ok(found) => {
                outcome.check(
                    false,
                    format!("an operation succeeded with Redis down: {found:?}"),
                );
            }
        }
    }
    outcome.check(
        worst <= config.command_timeout() + MARGIN,
        format!(
            "operations while Redis is down fail within the command timeout {} + {} (worst {})",
            ms(config.command_timeout()),
            ms(MARGIN),
            ms(worst)
        ),
    );
    outcome.figure(format!(
        "lazy: manager built in {} with Redis down, operations fail in at most {}",
        ms(built_after),
        ms(worst)
    ));
    Ok((port, manager, config))
}

/// The whole scenario, starting a server on the lazy manager's address.
pub async fn run(scratch: &Path) -> Outcome {
    let mut outcome = Outcome::new(NAME);
    let result = try_run(scratch, &mut outcome).await;
    Outcome::or_error(NAME, result.map(|()| outcome))
}

async fn try_run(scratch: &Path, outcome: &mut Outcome) -> anyhow::Result<()> {
    eager(outcome).await?;
    let (port, manager, _config) = lazy_while_down(outcome).await?;
    // Start a server on that very port.
    let started = Instant::now();
    let server = RedisProcess::start_on(scratch, "down-at-start", port, &[])?;
    let listening = started.elapsed();
    let appeared = Instant::now();
    let mut served_after = None;
    let mut failures = 0;
    while appeared.elapsed() < Duration::from_secs(10) {
        match manager.create().await {
            Ok(session) => {
                if manager.get(&session.id()).await?.is_some() {
                    served_after = Some(appeared.elapsed());
                    break;
                }
            }
            Err(_) => failures += 1,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    outcome.figure(format!(
        "server started in {}, lazy manager served {} after it answered PING ({failures} failed attempts meanwhile; reconnect backoff max 1 s)",
        ms(listening),
        served_after.map(ms).unwrap_or_else(|| "never".into()),
    ));
    outcome.check(
        served_after.is_some_and(|after| after <= Duration::from_secs(3)),
        format!("the lazy manager serves within 3 s of Redis appearing: {served_after:?}"),
    );
    manager.close().await.ok();
    drop(server);
    Ok(())
}
