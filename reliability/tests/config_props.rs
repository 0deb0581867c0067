//! Property tests of configuration files: any valid `SessionConfig`,
//! written as TOML, parses back to the same settings, and its `Debug` never
//! shows the password it holds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use proptest::prelude::*;
use session_config::{
    Addr, ConfigError, ConnectMode, KeyPrefix, RedisConfig, RedisTopology, SentinelConfig,
};
use session_core::{Codec, Manager};
use session_factory::SessionConfig;
use session_local::LocalStorage;

/// A duration as a humantime string, and its value.
fn duration(max_ms: u64) -> impl Strategy<Value = (String, Duration)> {
    (1..max_ms, 0..3u8).prop_map(|(ms, unit)| match unit {
        0 => (format!("{ms}ms"), Duration::from_millis(ms)),
        1 => (
            format!("{}s", ms.div_ceil(1000)),
            Duration::from_secs(ms.div_ceil(1000)),
        ),
        _ => {
            let secs = ms.div_ceil(1000);
            let (m, s) = (secs / 60, secs % 60);
            let text = match (m, s) {
                (0, s) => format!("{s}s"),
                (m, 0) => format!("{m}m"),
                (m, s) => format!("{m}m {s}s"),
            };
            (text, Duration::from_secs(secs))
        }
    })
}

#[derive(Debug, Clone)]
struct Redis {
    addr: Option<String>,
    sentinel: Option<(String, Vec<String>)>,
    cluster: bool,
    db: u8,
    key_prefix: String,
    username: Option<String>,
    password: Option<String>,
    command_timeout: (String, Duration),
    connect_timeout: (String, Duration),
    codec: Codec,
    connect: ConnectMode,
}

fn host_port() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just("127.0.0.1".to_owned()),
            Just("[::1]".to_owned()),
            "[a-z][a-z0-9-]{0,12}(\\.[a-z]{2,5})?"
        ],
        1..=u16::MAX,
    )
        .prop_map(|(host, port)| format!("{host}:{port}"))
}

fn redis() -> impl Strategy<Value = Redis> {
    (
        prop_oneof![
            host_port().prop_map(|addr| (Some(addr), None)),
            (
                "[a-zA-Z][a-zA-Z0-9_-]{0,15}",
                proptest::collection::vec(host_port(), 1..4)
            )
                .prop_map(|sentinel| (None, Some(sentinel))),
        ],
        any::<bool>(),
        0..16u8,
        "[^:\\\\\u{0}-\u{1f}]{0,12}:",
        proptest::option::of("[a-z][a-z0-9_]{0,12}"),
        proptest::option::of("[A-Za-z0-9!#%&()*+,./;<=>?@^_{|}~ -]{16,40}"),
        duration(60_000),
        duration(60_000),
        prop_oneof![Just(Codec::Bincode), Just(Codec::Json)],
        prop_oneof![Just(ConnectMode::Eager), Just(ConnectMode::Lazy)],
    )
        .prop_map(
            |(
                (addr, sentinel),
                cluster,
                db,
                key_prefix,
                username,
                password,
                command_timeout,
                connect_timeout,
                codec,
                connect,
            )| {
                // Only valid combinations: clusters use `addr` and db 0,
                // and a user name comes with a password.
                let cluster = cluster && addr.is_some();
                Redis {
                    addr,
                    sentinel,
                    cluster,
                    db: if cluster { 0 } else { db },
                    key_prefix,
                    username: username.filter(|_| password.is_some()),
                    password,
                    command_timeout,
                    connect_timeout,
                    codec,
                    connect,
                }
            },
        )
}

fn to_toml(
    ttl: &str,
    max_lifetime: Option<&str>,
    cleanup_interval: Option<&str>,
    redis: Option<&Redis>,
) -> String {
    let mut root = toml::Table::new();
    root.insert("ttl".into(), ttl.into());
    if let Some(max) = max_lifetime {
        root.insert("max_lifetime".into(), max.into());
    }
    if let Some(interval) = cleanup_interval {
        root.insert("cleanup_interval".into(), interval.into());
    }
    if let Some(redis) = redis {
        let mut table = toml::Table::new();
        if let Some(addr) = &redis.addr {
            table.insert("addr".into(), addr.as_str().into());
        }
        if let Some((master, addrs)) = &redis.sentinel {
            let mut sentinel = toml::Table::new();
            sentinel.insert("master_name".into(), master.as_str().into());
            sentinel.insert(
                "addrs".into(),
                toml::Value::Array(addrs.iter().map(|a| a.as_str().into()).collect()),
            );
            table.insert("sentinel".into(), sentinel.into());
        }
        if redis.cluster {
            table.insert("cluster".into(), true.into());
        }
        table.insert("db".into(), i64::from(redis.db).into());
        table.insert("key_prefix".into(), redis.key_prefix.as_str().into());
        if let Some(username) = &redis.username {
            table.insert("username".into(), username.as_str().into());
        }
        if let Some(password) = &redis.password {
            table.insert("password".into(), password.as_str().into());
        }
        table.insert(
            "command_timeout".into(),
            redis.command_timeout.0.as_str().into(),
        );
        table.insert(
            "connect_timeout".into(),
            redis.connect_timeout.0.as_str().into(),
        );
        table.insert("codec".into(), redis.codec.name().into());
        table.insert(
            "connect".into(),
            match redis.connect {
                ConnectMode::Eager => "eager",
                ConnectMode::Lazy => "lazy",
            }
            .into(),
        );
        root.insert("redis".into(), table.into());
    }
    toml::to_string(&root).unwrap()
}

/// Whether `config` is valid by the rules of the programmatic API: every
/// setting, handed to the constructors that build settings in code, is
/// accepted and gives back equal settings, and the expiry policy builds a
/// manager. What `from_toml` accepts must pass the very checks that code
/// gets, since nothing downstream checks it again.
fn revalidate(config: &SessionConfig) -> Result<(), String> {
    let expiry = config.expiry();
    Manager::builder(LocalStorage::new(), config.ttl())
        .max_lifetime(expiry.max_lifetime())
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
    let mut rebuilt = RedisConfig::new(topology, prefix)
        .with_timeouts(redis.connect_timeout(), redis.command_timeout())?
        .with_connect(redis.connect_mode())
        .with_reconnect(session_config::ReconnectPolicy::new(
            redis.reconnect().max_attempts(),
            redis.reconnect().min_delay(),
            redis.reconnect().max_delay(),
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn valid_configs_round_trip_through_toml(
        ttl in duration(10_000_000),
        max_lifetime in proptest::option::of(duration(100_000_000)),
        cleanup_interval in proptest::option::of(duration(60_000)),
        redis in proptest::option::of(redis()),
    ) {
        let text = to_toml(
            &ttl.0,
            max_lifetime.as_ref().map(|(text, _)| text.as_str()),
            cleanup_interval.as_ref().map(|(text, _)| text.as_str()),
            redis.as_ref(),
        );
        let config = SessionConfig::from_toml(&text, "generated.toml")
            .unwrap_or_else(|error| panic!("{error}\n{text}"));
        prop_assert_eq!(config.ttl().get(), ttl.1);
        prop_assert_eq!(config.expiry().max_lifetime(), max_lifetime.map(|(_, d)| d));
        prop_assert_eq!(config.cleanup_interval(), cleanup_interval.map(|(_, d)| d));
        match (config.redis(), &redis) {
            (None, None) => {}
            (Some(parsed), Some(redis)) => {
                let (addr, cluster, db) = match parsed.topology() {
                    RedisTopology::Standalone { addr, db } => (Some(addr.to_string()), false, *db),
                    RedisTopology::Cluster { seed } => (Some(seed.to_string()), true, 0),
                    RedisTopology::Sentinel { db, .. } => (None, false, *db),
                    other => panic!("an unknown topology: {other:?}"),
                };
                prop_assert_eq!(&addr, &redis.addr);
                prop_assert_eq!(cluster, redis.cluster);
                prop_assert_eq!(db, redis.db);
                prop_assert_eq!(parsed.key_prefix(), redis.key_prefix.as_str());
                prop_assert_eq!(
                    parsed.auth().and_then(|auth| auth.username.clone()),
                    redis.username.clone()
                );
                prop_assert_eq!(
                    parsed.auth().map(|auth| auth.password.expose().to_owned()),
                    redis.password.clone()
                );
                prop_assert_eq!(parsed.command_timeout(), redis.command_timeout.1);
                prop_assert_eq!(parsed.connect_timeout(), redis.connect_timeout.1);
                prop_assert_eq!(parsed.codec(), redis.codec);
                prop_assert_eq!(parsed.connect_mode(), redis.connect);
                match (parsed.sentinel_config(), &redis.sentinel) {
                    (None, None) => {}
                    (Some(parsed), Some((master, addrs))) => {
                        prop_assert_eq!(parsed.master_name(), master.as_str());
                        let parsed_addrs: Vec<String> =
                            parsed.addrs().iter().map(ToString::to_string).collect();
                        prop_assert_eq!(&parsed_addrs, addrs);
                    }
                    other => prop_assert!(false, "sentinel mismatch {:?}", other),
                }
                if let Some(password) = &redis.password {
                    let debug = format!("{config:?} {config:#?}");
                    prop_assert!(!debug.contains(password.as_str()), "password in Debug: {}", debug);
                }
            }
            other => prop_assert!(false, "redis table mismatch {:?}", other),
        }
    }

    /// Text that is almost a configuration: a valid file with one byte
    /// changed. Parsing never panics, and an accepted result is valid.
    #[test]
    fn mutated_configs_never_panic(
        redis in redis(),
        position in any::<proptest::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let text = to_toml("30m", Some("1h"), Some("5s"), Some(&redis));
        let mut bytes = text.into_bytes();
        let at = position.index(bytes.len());
        bytes[at] = byte;
        if let Ok(text) = String::from_utf8(bytes)
            && let Ok(config) = SessionConfig::from_toml(&text, "mutated.toml")
        {
            let valid = revalidate(&config);
            prop_assert!(valid.is_ok(), "{:?}\n{}", valid, text);
        }
    }
}
