//! One module per scenario. Each `run` returns an [`Outcome`](crate::Outcome)
//! and never panics on a finding: a broken promise is a failed check with
//! the evidence in the outcome's details.

pub mod bad_config;
pub mod bad_values;
pub mod cache_consistency;
pub mod cluster_failover;
pub mod conn_kill;
pub mod down_at_start;
pub mod failover;
pub mod races;
pub mod restart;
pub mod secrets;
pub mod soak;
pub mod soak_gateway;
pub mod soak_streams;
pub mod stall;
pub mod stream_events;

use std::time::Duration;

use session_config::{ReconnectPolicy, RedisConfig};
use session_core::{Manager, SessionType, Ttl};
use session_redis::RedisStorage;

/// The command timeout of the fault scenarios: short, so a stall shows
/// within the run, and well above a loaded round trip on 2 cores. It is
/// also the bound on every operation: the manager adds no timer of its own,
/// and a Redis operation ends within its command timeout.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

/// The connect timeout of the fault scenarios.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A latency above which an operation counts as disrupted (normal
/// operations take about a millisecond here).
pub const SLOW: Duration = Duration::from_millis(100);

/// The session TTL of every scenario: long, so that nothing expires during
/// a run and every missing session is a lost one.
pub fn ttl() -> Ttl {
    Ttl::new(Duration::from_secs(3600)).unwrap_or_else(|_| unreachable!("an hour is a valid TTL"))
}

/// A standalone configuration with the fault scenarios' timeouts and a
/// reconnect backoff of 50 ms to 1 s.
pub fn fault_config(addr: &str, prefix: &str) -> anyhow::Result<RedisConfig> {
    tune(RedisConfig::standalone(addr, prefix)?)
}

/// `config` with the fault scenarios' timeouts and reconnect backoff.
pub fn tune(config: RedisConfig) -> anyhow::Result<RedisConfig> {
    let reconnect = ReconnectPolicy::new(
        ReconnectPolicy::default().max_attempts(),
        Duration::from_millis(50),
        Duration::from_secs(1),
    )?;
    Ok(config
        .with_timeouts(CONNECT_TIMEOUT, COMMAND_TIMEOUT)?
        .with_reconnect(reconnect))
}

/// A manager over a new Redis client for `config` (eager connect).
pub async fn manager(config: &RedisConfig) -> anyhow::Result<Manager> {
    Ok(manager_and_storage(config).await?.0)
}

/// A manager over a new Redis client for `config` (eager connect), and a
/// handle on that same storage. The handle shares the manager's client, and
/// so its connections: a `WAIT` sent through it covers the manager's
/// writes, and its `key` names the manager's keys.
pub async fn manager_and_storage(config: &RedisConfig) -> anyhow::Result<(Manager, RedisStorage)> {
    let storage = RedisStorage::connect(config).await?;
    let manager = Manager::builder(storage.clone(), ttl())
        .factory(SessionType::Streamable)
        .build()?;
    Ok((manager, storage))
}

/// A key prefix no other run uses.
pub fn unique_prefix(scenario: &str) -> String {
    format!("rel:{scenario}:{}:", session_core::SessionId::new())
}

/// Sends `WAIT 1 500` with `send` (over the connection whose writes are to
/// be confirmed) until it reports a replica or `limit` passes, and returns
/// the last count. Once it reports one, every earlier write of that
/// connection is on a replica. Each WAIT stays under the fault scenarios'
/// command timeout (1 s), which applies to WAIT too; errors before `limit`
/// count as no replica yet.
pub async fn wait_replicated<F, Fut>(limit: Duration, send: F) -> anyhow::Result<i64>
where
    F: Fn(Vec<session_redis::fred::prelude::Value>) -> Fut,
    Fut: Future<
        Output = Result<session_redis::fred::prelude::Value, session_redis::fred::error::Error>,
    >,
{
    use session_redis::fred::prelude::Value;
    let started = std::time::Instant::now();
    loop {
        let replicas = match send(vec![Value::from(1), Value::from(500)]).await {
            Ok(reply) => reply
                .as_i64()
                .ok_or_else(|| anyhow::anyhow!("WAIT replied with a non-integer"))?,
            Err(_) if started.elapsed() < limit => 0,
            Err(error) => return Err(error.into()),
        };
        if replicas >= 1 || started.elapsed() >= limit {
            return Ok(replicas);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `WAIT` as a custom command (fred has no typed one).
pub fn wait_command() -> session_redis::fred::types::CustomCommand {
    session_redis::fred::types::CustomCommand::new_static(
        "WAIT",
        session_redis::fred::types::ClusterHash::Random,
        false,
    )
}
