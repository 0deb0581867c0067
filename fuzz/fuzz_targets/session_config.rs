//! `session_config::SessionConfig::from_toml` on arbitrary text: it must
//! never panic, an accepted configuration must pass the checks of the
//! programmatic API (see `revalidate`), and the `Debug` of whatever it
//! returns must be formattable.
//!
//! Inputs may name files (`password_file`, PEM paths): reading them is part
//! of what is tested. Configuration refuses files that are not regular (a
//! FIFO or `/dev/zero` would block or never end) and files over its size
//! limit, so no input can hang the parser or make it allocate without bound.

#![no_main]

use libfuzzer_sys::fuzz_target;
use session_factory::session_config::{
    Addr, ConfigError, KeyPrefix, ReconnectPolicy, RedisConfig, RedisTopology, SentinelConfig,
};
use session_factory::{LocalStorage, Manager, SessionConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match SessionConfig::from_toml(text, "fuzz.toml") {
        Ok(config) => {
            if let Err(error) = revalidate(&config) {
                panic!("from_toml accepted an invalid config: {error}");
            }
            let _ = format!("{config:?}");
        }
        Err(error) => {
            let _ = format!("{error} {error:?}");
        }
    }
});

/// Whether `config` is valid by the rules of the programmatic API: its
/// expiry policy builds a manager, and its Redis settings, handed part by
/// part to the constructors that build settings in code, are accepted and
/// come back equal. Nothing downstream of `from_toml` checks the settings
/// again, so what it accepts must pass every check that code gets.
fn revalidate(config: &SessionConfig) -> Result<(), String> {
    Manager::builder(LocalStorage::new(), config.ttl())
        .max_lifetime(config.expiry().max_lifetime())
        .cleanup_interval(config.cleanup_interval())
        .build()
        .map_err(|error| format!("the manager refuses the expiry policy: {error}"))?;
    let Some(redis) = config.redis() else {
        return Ok(());
    };
    let rebuilt = rebuild(redis).map_err(|error| format!("a constructor refuses it: {error}"))?;
    if &rebuilt != redis {
        return Err(format!(
            "the constructors give other settings: {rebuilt:?} != {redis:?}"
        ));
    }
    Ok(())
}

/// `redis`, built again from its parts by the programmatic constructors.
fn rebuild(redis: &RedisConfig) -> Result<RedisConfig, ConfigError> {
    let prefix = KeyPrefix::parse("redis.key_prefix", redis.key_prefix())?;
    let topology = match redis.topology() {
        RedisTopology::Standalone { addr, db } => RedisTopology::Standalone {
            addr: Addr::parse("redis.addr", &addr.to_string())?,
            db: *db,
        },
        RedisTopology::Cluster { seed } => RedisTopology::Cluster {
            seed: Addr::parse("redis.addr", &seed.to_string())?,
        },
        RedisTopology::Sentinel { sentinel, db } => {
            let addrs: Vec<String> = sentinel.addrs().iter().map(ToString::to_string).collect();
            let mut rebuilt = SentinelConfig::new(sentinel.master_name(), addrs)?;
            if let Some(auth) = sentinel.auth() {
                rebuilt = rebuilt.with_auth(auth.clone());
            }
            if let Some(tls) = sentinel.tls() {
                rebuilt = rebuilt.with_tls(tls.clone());
            }
            RedisTopology::Sentinel {
                sentinel: rebuilt,
                db: *db,
            }
        }
        other => other.clone(),
    };
    let reconnect = redis.reconnect();
    let mut rebuilt = RedisConfig::new(topology, prefix)
        .with_timeouts(redis.connect_timeout(), redis.command_timeout())?
        .with_connect(redis.connect_mode())
        .with_reconnect(ReconnectPolicy::new(
            reconnect.max_attempts(),
            reconnect.min_delay(),
            reconnect.max_delay(),
        )?)
        .with_codec(redis.codec())
        .with_refresh_window(redis.refresh_window());
    if let Some(auth) = redis.auth() {
        rebuilt = rebuilt.with_auth(auth.clone());
    }
    if let Some(tls) = redis.tls() {
        rebuilt = rebuilt.with_tls(tls.clone())?;
    }
    Ok(rebuilt)
}
