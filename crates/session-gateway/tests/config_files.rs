//! The configuration files shipped in `config/` parse, and differ by the
//! `[redis]` table alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use session_factory::SessionConfig;
use session_gateway::auth::AuthSettings;
use session_gateway::limits::Limits;
use session_gateway::settings::GatewaySettings;

fn shipped(name: &str) -> SessionConfig {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../config")
        .join(name);
    SessionConfig::load(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

#[test]
fn local_toml_is_local_storage_with_a_30_minute_ttl() {
    let config = shipped("local.toml");
    assert_eq!(config.ttl().get(), Duration::from_secs(30 * 60));
    assert!(config.redis().is_none());
}

#[test]
fn redis_toml_is_local_toml_plus_a_redis_table() {
    let local = shipped("local.toml");
    let redis = shipped("redis.toml");
    assert_eq!(redis.expiry(), local.expiry());
    assert_eq!(redis.cleanup_interval(), local.cleanup_interval());
    let table = redis.redis().expect("a [redis] table");
    assert_eq!(
        table.topology(),
        &session_factory::session_config::RedisTopology::Standalone {
            addr: "127.0.0.1:6379".parse().unwrap(),
            db: 0
        }
    );
    assert_eq!(table.key_prefix(), "mcp:sessions:");
}

/// The gateway reads the same files, with its own tables commented out:
/// anonymous mode and the default limits.
#[test]
fn the_gateway_reads_both_files_as_anonymous_with_default_limits() {
    for name in ["local.toml", "redis.toml"] {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../config")
            .join(name);
        let settings =
            GatewaySettings::load(&path).unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(settings.session.expiry(), shipped(name).expiry(), "{name}");
        assert!(matches!(settings.auth, AuthSettings::Anonymous), "{name}");
        assert_eq!(settings.limits, Limits::default(), "{name}");
    }
}
