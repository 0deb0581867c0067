//! Session configuration, parsed once into typed settings.
//!
//! A configuration file is read in two steps, each done exactly once:
//!
//! 1. serde reads the TOML into the [`file`](mod@file) types, which mirror the file
//!    table for table and hold what it says, unchecked;
//! 2. [`TryFrom`] turns those into the settings here, [`SessionConfig`] and
//!    [`RedisConfig`]: every address parsed, every password and PEM file
//!    read, every rule checked, each error a [`ConfigError`] that names the
//!    setting and the file.
//!
//! What comes out cannot be invalid, so nothing downstream checks it again:
//! the factory builds the manager from it, and the Redis storage connects
//! from it. The settings can also be built in code, with the same checks,
//! through their constructors.
//!
//! This crate depends on no Redis client and no TLS library, so a build
//! without Redis support still reads (and refuses with a clear error) a
//! configuration that asks for Redis.
//!
//! ```
//! use session_config::SessionConfig;
//!
//! let config = SessionConfig::from_toml(
//!     r#"
//!     ttl = "30m"
//!     [redis]
//!     addr = "127.0.0.1:6379"
//!     key_prefix = "mcp:sessions:"
//!     "#,
//!     "example.toml",
//! )?;
//! assert_eq!(config.ttl().get().as_secs(), 1800);
//! assert_eq!(config.redis().map(|redis| redis.key_prefix()), Some("mcp:sessions:"));
//! # Ok::<(), session_core::ConfigError>(())
//! ```

#![deny(missing_docs)]

pub mod file;
mod read;
pub mod redis;

use std::path::Path;
use std::time::Duration;

pub use read::{FILE_LIMIT, PASSWORD_FILE_LIMIT, read_file};
pub use redis::{
    Addr, Auth, CacheCapacity, CacheConfig, ClientIdentity, ConnectMode, HashPhase, HashedIds,
    KeyPrefix, LiveCount, Pem, ReconnectPolicy, RedisConfig, RedisTopology, Roots, Secret,
    SentinelConfig, TlsConfig, TrackingMode,
};
pub use session_core::ConfigError;
use session_core::{Expiry, Ttl};

/// Everything a session manager needs to know: the expiry policy, the
/// cleanup interval, and Redis or local storage.
///
/// No `[redis]` table means local storage; a `[redis]` table means Redis (or,
/// in a build without Redis support, an error that says so). Switching
/// backends is therefore an edit of the file:
///
/// ```toml
/// ttl = "30m"
/// max_lifetime = "12h"          # optional
///
/// [redis]                       # remove this table for local storage
/// addr = "127.0.0.1:6379"
/// key_prefix = "mcp:sessions:"
/// password_env = "SESSION_REDIS_PASSWORD"
/// ```
///
/// Unknown keys are errors, and every error names the key and the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    expiry: Expiry,
    cleanup_interval: Option<Duration>,
    redis: Option<RedisConfig>,
}

impl SessionConfig {
    /// Local storage with the sliding TTL `ttl` and every default.
    pub fn new(ttl: Ttl) -> Self {
        Self {
            expiry: Expiry::new(ttl),
            cleanup_interval: None,
            redis: None,
        }
    }

    /// An absolute lifetime on top of the sliding TTL (at least 1 ms).
    pub fn with_max_lifetime(mut self, max: Option<Duration>) -> Result<Self, ConfigError> {
        self.expiry = self
            .expiry
            .with_max_lifetime(max)
            .map_err(|error| match error {
                session_core::Error::Config(error) => error,
                other => ConfigError::new("max_lifetime", other.to_string()),
            })?;
        Ok(self)
    }

    /// How often expired local sessions are swept (default `ttl / 2`); must
    /// be greater than zero.
    pub fn with_cleanup_interval(
        mut self,
        interval: Option<Duration>,
    ) -> Result<Self, ConfigError> {
        if interval.is_some_and(|interval| interval.is_zero()) {
            return Err(ConfigError::new(
                "cleanup_interval",
                "must be greater than zero",
            ));
        }
        self.cleanup_interval = interval;
        Ok(self)
    }

    /// Keeps sessions in Redis.
    pub fn with_redis(mut self, redis: RedisConfig) -> Self {
        self.redis = Some(redis);
        self
    }

    /// Reads and parses a configuration file (a regular file of at most
    /// 1 MiB), resolving `password_env` and `password_file`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let bytes = read_file(None, path, FILE_LIMIT)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| ConfigError::whole("the file is not UTF-8 text").in_origin(&origin))?;
        Self::from_toml(&text, &origin)
    }

    /// Parses TOML text; `origin` names it in errors (a path).
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let deserializer = toml::Deserializer::parse(text)
            .map_err(|error| ConfigError::whole(error.to_string()).in_origin(origin))?;
        let file: file::SessionFile =
            serde_path_to_error::deserialize(deserializer).map_err(|error| {
                let message = error.inner().message().to_owned();
                ConfigError::new(field_path(&error.path().to_string(), &message), message)
                    .in_origin(origin)
            })?;
        Self::try_from(file).map_err(|error| error.in_origin(origin))
    }

    /// The sliding TTL.
    pub fn ttl(&self) -> Ttl {
        self.expiry.ttl()
    }

    /// The expiry policy: the TTL and the maximum lifetime.
    pub fn expiry(&self) -> Expiry {
        self.expiry
    }

    /// The cleanup interval; `None` is `ttl / 2`.
    pub fn cleanup_interval(&self) -> Option<Duration> {
        self.cleanup_interval
    }

    /// The Redis settings; `None` means local storage.
    pub fn redis(&self) -> Option<&RedisConfig> {
        self.redis.as_ref()
    }
}

/// The key an error is about. serde reports a missing key on the table that
/// lacks it (`.` for the top level), so the key's name is appended from the
/// message: a missing `ttl` is reported as `ttl`, not `.`.
fn field_path(path: &str, message: &str) -> String {
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    match (path, missing) {
        (".", Some(name)) => name.to_owned(),
        (table, Some(name)) => format!("{table}.{name}"),
        (path, None) => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_and_reason(result: Result<SessionConfig, ConfigError>) -> (String, String) {
        let error = result.expect_err("expected a config error");
        (
            error.field().unwrap_or("<whole>").to_owned(),
            error.to_string(),
        )
    }

    #[test]
    fn a_file_without_redis_means_local_storage() {
        let config = SessionConfig::from_toml("ttl = \"30m\"", "local.toml").unwrap();
        assert_eq!(config.ttl().get(), Duration::from_secs(1800));
        assert!(config.redis().is_none());
    }

    #[test]
    fn the_stored_format_is_2_unless_told_1() {
        let parse = |extra: &str| {
            SessionConfig::from_toml(
                &format!(
                    "ttl = \"1m\"\n[redis]\naddr = \"127.0.0.1:6379\"\nkey_prefix = \"s:\"\n{extra}"
                ),
                "redis.toml",
            )
        };
        use session_core::codec::FormatVersion;
        let stored = |config: SessionConfig| config.redis().unwrap().stored_format();
        assert_eq!(stored(parse("").unwrap()), FormatVersion::V2);
        assert_eq!(
            stored(parse("stored_format = 1").unwrap()),
            FormatVersion::V1
        );
        assert_eq!(
            stored(parse("stored_format = 2").unwrap()),
            FormatVersion::V2
        );
        let error = parse("stored_format = 3").unwrap_err();
        assert_eq!(error.field(), Some("redis.stored_format"));
        assert!(error.reason().contains("expected 1 or 2"), "{error}");
    }

    #[test]
    fn the_cache_is_off_unless_its_table_is_there() {
        let parse = |extra: &str, cluster: bool| {
            SessionConfig::from_toml(
                &format!(
                    "ttl = \"1m\"\n[redis]\naddr = \"127.0.0.1:6379\"\ncluster = {cluster}\nkey_prefix = \"s:\"\n{extra}"
                ),
                "redis.toml",
            )
        };
        let cache = |config: SessionConfig| config.redis().unwrap().cache().copied();
        assert_eq!(cache(parse("", false).unwrap()), None);
        let defaults = cache(parse("[redis.cache]", false).unwrap()).unwrap();
        assert_eq!(defaults, CacheConfig::default());
        assert_eq!(
            defaults.capacity(),
            CacheCapacity::Entries(std::num::NonZeroU64::new(10_000).unwrap())
        );
        assert_eq!(defaults.max_staleness(), Duration::from_secs(1));
        assert_eq!(defaults.mode(), TrackingMode::Tracking);
        let set = cache(
            parse(
                "[redis.cache]\nmax_bytes = 1048576\nmax_staleness = \"250ms\"\nmode = \"broadcast\"",
                false,
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            set.capacity(),
            CacheCapacity::Bytes(std::num::NonZeroU64::new(1 << 20).unwrap())
        );
        assert_eq!(set.max_staleness(), Duration::from_millis(250));
        assert_eq!(set.mode(), TrackingMode::Broadcast);
        // Tracking on a cluster is fine; broadcast is not.
        assert!(parse("[redis.cache]", true).is_ok());

        let refused = |extra: &str, cluster: bool| {
            let error = parse(extra, cluster).expect_err(extra);
            (
                error.field().unwrap_or("<whole>").to_owned(),
                error.to_string(),
            )
        };
        for (extra, field, says) in [
            (
                "[redis.cache]\nmax_entries = 0",
                "redis.cache.max_entries",
                "more than zero",
            ),
            (
                "[redis.cache]\nmax_bytes = 0",
                "redis.cache.max_bytes",
                "more than zero",
            ),
            (
                "[redis.cache]\nmax_entries = 5\nmax_bytes = 5",
                "redis.cache.max_bytes",
                "not both",
            ),
            (
                "[redis.cache]\nmax_staleness = \"0s\"",
                "redis.cache.max_staleness",
                "more than zero",
            ),
            (
                "[redis.cache]\nmax_staleness = \"2m\"",
                "redis.cache.max_staleness",
                "longer than the TTL",
            ),
            (
                "[redis.cache]\nmode = \"sometimes\"",
                "redis.cache.mode",
                "unknown variant",
            ),
            (
                "[redis.cache]\nsize = 5",
                "redis.cache.size",
                "unknown field",
            ),
        ] {
            let (got_field, message) = refused(extra, false);
            assert_eq!(got_field, field, "{extra}: {message}");
            assert!(message.contains(says), "{extra}: {message}");
        }
        let (field, message) = refused("[redis.cache]\nmode = \"broadcast\"", true);
        assert_eq!(field, "redis.cache.mode");
        assert!(message.contains("cluster"), "{message}");
    }

    #[test]
    fn encryption_keys_come_from_files_or_env_and_never_show() {
        use base64::Engine as _;
        use session_core::seal::Keyring;
        let dir = std::env::temp_dir().join(format!(
            "session-config-keys-{}-{}",
            std::process::id(),
            session_core::SessionId::new()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let key_one = base64::engine::general_purpose::STANDARD.encode([0x5A; 32]);
        let one = write("one", &format!("{key_one}\n"));
        let two = write(
            "two",
            &base64::engine::general_purpose::STANDARD.encode([0x6B; 32]),
        );
        let short = write(
            "short",
            &base64::engine::general_purpose::STANDARD.encode([1; 16]),
        );
        let garbage = write("garbage", "not base64 at all!");
        let parse = |table: &str| {
            SessionConfig::from_toml(
                &format!(
                    "ttl = \"1m\"\n[redis]\naddr = \"127.0.0.1:6379\"\nkey_prefix = \"s:\"\n{table}"
                ),
                "redis.toml",
            )
        };
        let ring = |config: SessionConfig| -> Option<Keyring> {
            config
                .redis()
                .unwrap()
                .encryption()
                .map(|ring| (**ring).clone())
        };
        assert_eq!(ring(parse("").unwrap()), None);
        let table = format!(
            "[redis.encryption]\nwrite_key = 2\nkeys = [{{ id = 1, file = \"{one}\" }}, {{ id = 2, file = \"{two}\" }}]"
        );
        let config = parse(&table).unwrap();
        let shown = format!("{config:?}");
        assert!(
            !shown.contains(&key_one) && !shown.contains("90, 90"),
            "{shown}"
        );
        let parsed = ring(config).unwrap();
        assert_eq!(parsed.write_key(), Some(2));
        assert_eq!(parsed.key_ids().collect::<Vec<_>>(), [1, 2]);
        assert!(parsed.accepts_plaintext());
        let open_only = ring(
            parse(&format!(
                "{table}\nseal_writes = false\naccept_plaintext = false"
            ))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(open_only.write_key(), None);
        assert!(!open_only.accepts_plaintext());

        let refused = |table: String| {
            let error = parse(&table).expect_err(&table);
            let message = error.to_string();
            assert!(!message.contains(&key_one), "{message}");
            (error.field().unwrap_or("<whole>").to_owned(), message)
        };
        for (table, field, says) in [
            (
                format!("[redis.encryption]\nwrite_key = 3\nkeys = [{{ id = 1, file = \"{one}\" }}]"),
                "redis.encryption.write_key",
                "no key with id 3",
            ),
            (
                format!("[redis.encryption]\nwrite_key = 3\nseal_writes = false\nkeys = [{{ id = 1, file = \"{one}\" }}]"),
                "redis.encryption.write_key",
                "no key with id 3",
            ),
            (
                "[redis.encryption]\nwrite_key = 1\nkeys = []".to_owned(),
                "redis.encryption.keys",
                "at least one key",
            ),
            (
                format!("[redis.encryption]\nwrite_key = 1\nkeys = [{{ id = 1, file = \"{one}\" }}, {{ id = 1, file = \"{two}\" }}]"),
                "redis.encryption.keys",
                "given twice",
            ),
            (
                format!("[redis.encryption]\nwrite_key = 1\nkeys = [{{ id = 1, file = \"{short}\" }}]"),
                "redis.encryption.keys[0]",
                "32 bytes",
            ),
            (
                format!("[redis.encryption]\nwrite_key = 1\nkeys = [{{ id = 1, file = \"{garbage}\" }}]"),
                "redis.encryption.keys[0]",
                "not standard base64",
            ),
            (
                "[redis.encryption]\nwrite_key = 1\nkeys = [{ id = 1, file = \"/nonexistent/key\" }]".to_owned(),
                "redis.encryption.keys[0].file",
                "cannot read /nonexistent/key",
            ),
            (
                "[redis.encryption]\nwrite_key = 1\nkeys = [{ id = 1, env = \"SESSION_CONFIG_TEST_UNSET_KEY\" }]".to_owned(),
                "redis.encryption.keys[0].env",
                "SESSION_CONFIG_TEST_UNSET_KEY is not set",
            ),
            (
                "[redis.encryption]\nwrite_key = 1\nkeys = [{ id = 1 }]".to_owned(),
                "redis.encryption.keys[0]",
                "never inline",
            ),
            (
                format!("[redis.encryption]\nwrite_key = 1\nkeys = [{{ id = 1, key = \"{key_one}\" }}]"),
                "redis.encryption.keys[0].key",
                "unknown field",
            ),
            (
                format!("stored_format = 1\n[redis.encryption]\nwrite_key = 1\nkeys = [{{ id = 1, file = \"{one}\" }}]"),
                "redis.encryption",
                "format 1",
            ),
        ] {
            let (got_field, message) = refused(table.clone());
            assert_eq!(got_field, field, "{table}: {message}");
            assert!(message.contains(says), "{table}: {message}");
        }
        // Format 1 may be written while the keys only open.
        assert!(parse(&format!("stored_format = 1\n{table}\nseal_writes = false")).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_live_count_is_off_unless_its_table_is_there() {
        let parse = |table: &str| {
            SessionConfig::from_toml(
                &format!(
                    "ttl = \"1m\"\n[redis]\naddr = \"127.0.0.1:6379\"\nkey_prefix = \"s:\"\n{table}"
                ),
                "redis.toml",
            )
        };
        let live = |config: SessionConfig| config.redis().unwrap().live_count();
        assert_eq!(live(parse("").unwrap()), None);
        let defaults = live(parse("[redis.live_count]").unwrap()).unwrap();
        assert_eq!(defaults.interval(), Duration::from_secs(60));
        assert_eq!(defaults.max_keys(), 1_000_000);
        let set =
            live(parse("[redis.live_count]\ninterval = \"5s\"\nmax_keys = 10").unwrap()).unwrap();
        assert_eq!(
            (set.interval(), set.max_keys()),
            (Duration::from_secs(5), 10)
        );
        for (table, field) in [
            (
                "[redis.live_count]\ninterval = \"0s\"",
                "redis.live_count.interval",
            ),
            (
                "[redis.live_count]\nmax_keys = 0",
                "redis.live_count.max_keys",
            ),
            (
                "[redis.live_count]\nevery = \"1s\"",
                "redis.live_count.every",
            ),
        ] {
            let error = parse(table).expect_err(table);
            assert_eq!(error.field(), Some(field), "{table}: {error}");
        }
    }

    #[test]
    fn hashed_ids_read_their_key_and_phase() {
        use base64::Engine as _;
        let dir = std::env::temp_dir().join(format!(
            "session-config-hash-{}-{}",
            std::process::id(),
            session_core::SessionId::new()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            std::fs::write(
                &path,
                base64::engine::general_purpose::STANDARD.encode(bytes),
            )
            .unwrap();
            path.display().to_string()
        };
        let long = write("long", &[0x3C; 48]);
        let short = write("short", &[0x3C; 16]);
        let parse = |table: &str| {
            SessionConfig::from_toml(
                &format!(
                    "ttl = \"1m\"\n[redis]\naddr = \"127.0.0.1:6379\"\nkey_prefix = \"s:\"\n{table}"
                ),
                "redis.toml",
            )
        };
        assert!(parse("").unwrap().redis().unwrap().hashed_ids().is_none());
        for (phase, expected) in [
            ("", HashPhase::Hashed),
            ("phase = \"hashed\"", HashPhase::Hashed),
            ("phase = \"plain-first\"", HashPhase::PlainFirst),
            ("phase = \"hashed-first\"", HashPhase::HashedFirst),
        ] {
            let config = parse(&format!("[redis.hashed_ids]\nfile = \"{long}\"\n{phase}")).unwrap();
            let hashed = config.redis().unwrap().hashed_ids().unwrap();
            assert_eq!(hashed.phase(), expected);
            assert_eq!(hashed.key(), &[0x3C; 48]);
            let shown = format!("{config:?}");
            assert!(!shown.contains("60, 60"), "{shown}");
        }
        for (table, field, says) in [
            (
                format!("[redis.hashed_ids]\nfile = \"{short}\""),
                "redis.hashed_ids",
                "at least 32 bytes",
            ),
            (
                "[redis.hashed_ids]\nphase = \"hashed\"".to_owned(),
                "redis.hashed_ids",
                "never inline",
            ),
            (
                format!("[redis.hashed_ids]\nfile = \"{long}\"\nenv = \"X\""),
                "redis.hashed_ids",
                "one of them",
            ),
            (
                format!("[redis.hashed_ids]\nfile = \"{long}\"\nphase = \"halfway\""),
                "redis.hashed_ids.phase",
                "unknown variant",
            ),
        ] {
            let error = parse(&table).expect_err(&table);
            assert_eq!(error.field(), Some(field), "{table}: {error}");
            assert!(error.to_string().contains(says), "{table}: {error}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_redis_table_is_read_whole() {
        let config = SessionConfig::from_toml(
            r#"
            ttl = "10m"
            max_lifetime = "1h"
            [redis]
            addr = "127.0.0.1:6379"
            key_prefix = "mcp:sessions:"
            codec = "json"
            connect = "lazy"
            command_timeout = "250ms"
            password = "hunter2"
            [redis.tls]
            server_name = "redis.internal"
            "#,
            "redis.toml",
        )
        .unwrap();
        let redis = config.redis().unwrap();
        assert_eq!(redis.codec(), session_core::Codec::Json);
        assert_eq!(redis.connect_mode(), ConnectMode::Lazy);
        assert_eq!(redis.command_timeout(), Duration::from_millis(250));
        assert_eq!(redis.connect_timeout(), redis::DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(redis.reconnect(), &ReconnectPolicy::default());
        assert_eq!(
            redis.tls().and_then(|tls| tls.server_name.as_deref()),
            Some("redis.internal")
        );
        assert_eq!(redis.tls().map(|tls| &tls.roots), Some(&Roots::System));
        assert_eq!(redis.secrets(), vec!["hunter2"]);
        assert_eq!(
            config.expiry().max_lifetime(),
            Some(Duration::from_secs(3600))
        );
    }

    #[test]
    fn topologies_are_typed() {
        let parse = |redis: &str| {
            let text = format!("ttl = \"1m\"\n[redis]\nkey_prefix = \"s:\"\n{redis}");
            SessionConfig::from_toml(&text, "t.toml")
                .unwrap()
                .redis()
                .unwrap()
                .topology()
                .clone()
        };
        assert!(matches!(
            parse("addr = \"[::1]:6379\"\ndb = 2"),
            RedisTopology::Standalone { db: 2, .. }
        ));
        assert!(matches!(
            parse("addr = \"127.0.0.1:7000\"\ncluster = true"),
            RedisTopology::Cluster { .. }
        ));
        match parse("[redis.sentinel]\nmaster_name = \"m\"\naddrs = [\"127.0.0.1:26379\"]") {
            RedisTopology::Sentinel { sentinel, db: 0 } => {
                assert_eq!(sentinel.master_name(), "m");
                assert_eq!(sentinel.addrs()[0].port(), 26379);
            }
            other => panic!("not a sentinel topology: {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        let cases = [
            ("ttl = \"30m\"\nttl_seconds = 5", "ttl_seconds"),
            (
                "ttl = \"30m\"\n[redis]\naddr = \"h:1\"\nkey_prefix = \"s:\"\npasword = \"x\"",
                "redis.pasword",
            ),
            ("ttl = \"0s\"", "ttl"),
            ("ttl = \"-5s\"", "ttl"),
            (
                "ttl = \"30m\"\ncleanup_interval = \"0s\"",
                "cleanup_interval",
            ),
            ("ttl = \"30m\"\nmax_lifetime = \"0s\"", "max_lifetime"),
            (
                "ttl = \"30m\"\n[redis]\naddr = \"h:1\"\nkey_prefix = \"sessions\"",
                "redis.key_prefix",
            ),
            (
                "ttl = \"30m\"\n[redis]\naddr = \"h:1\"\nkey_prefix = \"s:\"\ncluster = true\ndb = 2",
                "redis.db",
            ),
            (
                "ttl = \"30m\"\n[redis]\naddr = \"h:1\"\nkey_prefix = \"s:\"\npassword_env = \"SESSION_TEST_SURELY_UNSET\"",
                "redis.password_env",
            ),
            (
                "ttl = \"30m\"\n[redis]\naddr = \"h:1\"\nkey_prefix = \"s:\"\npassword = \"a\"\npassword_env = \"B\"",
                "redis.password",
            ),
            ("ttl = \"30m\"\n[redis]\nkey_prefix = \"s:\"", "redis.addr"),
            (
                "ttl = \"30m\"\n[redis]\naddr = \"localhost\"\nkey_prefix = \"s:\"",
                "redis.addr",
            ),
            ("max_lifetime = \"1h\"", "ttl"),
            ("ttl = \"30m\"\n[redis]\naddr = \"h:1\"", "redis.key_prefix"),
            (
                "ttl = \"30m\"\n[redis]\naddr = \"h:1\"\nkey_prefix = \"s:\"\n[redis.tls]\nclient_cert = { pem = \"x\" }",
                "redis.tls.client_key",
            ),
            (
                "ttl = \"30m\"\n[redis]\naddr = \"h:1\"\nkey_prefix = \"s:\"\n[redis.tls]\nca_cert = { file = \"/nonexistent/ca.pem\" }",
                "redis.tls.ca_cert",
            ),
            (
                "ttl = \"30m\"\n[redis]\nkey_prefix = \"s:\"\n[redis.sentinel]\nmaster_name = \"m\"\naddrs = [\"h:1\"]\n[redis.sentinel.tls]\n",
                "redis.sentinel.tls",
            ),
            (
                "ttl = \"30m\"\n[redis]\naddr = \"h:1\"\nkey_prefix = \"s:\"\n[redis.reconnect]\nmin_delay = \"5s\"\nmax_delay = \"1s\"",
                "redis.reconnect.min_delay",
            ),
        ];
        for (text, field) in cases {
            let (got, message) = field_and_reason(SessionConfig::from_toml(text, "conf/app.toml"));
            assert_eq!(got, field, "{text:?}: {message}");
            assert!(message.contains("conf/app.toml"), "{text:?}: {message}");
        }
    }

    /// A zero TTL is one error, whether it comes from a file or from code.
    #[test]
    fn a_zero_ttl_is_the_same_error_from_a_file_and_from_code() {
        let from_file = SessionConfig::from_toml("ttl = \"0s\"", "a.toml").unwrap_err();
        let from_code = match Ttl::new(Duration::ZERO) {
            Err(session_core::Error::Config(error)) => error,
            other => panic!("expected a config error, got {other:?}"),
        };
        assert_eq!(from_file.field(), from_code.field());
        assert_eq!(from_file.reason(), from_code.reason());
        assert_eq!(from_file.origin(), Some("a.toml"));
    }

    #[test]
    fn syntax_errors_name_the_file_and_no_field() {
        let error = SessionConfig::from_toml("ttl = ", "broken.toml").unwrap_err();
        assert_eq!(error.field(), None);
        assert_eq!(error.origin(), Some("broken.toml"));
    }

    #[test]
    fn a_missing_file_is_a_config_error_naming_it() {
        let error = SessionConfig::load("/nonexistent/session.toml").unwrap_err();
        assert_eq!(error.field(), None);
        assert!(
            error.to_string().contains("/nonexistent/session.toml"),
            "{error}"
        );
    }

    #[test]
    fn passwords_resolve_from_a_file() {
        let dir = std::env::temp_dir().join(format!("session-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("password");
        std::fs::write(&path, "from-file\n").unwrap();
        let text = format!(
            "ttl = \"1m\"\n[redis]\naddr = \"h:1\"\nkey_prefix = \"s:\"\nusername = \"app\"\npassword_file = {:?}",
            path.display().to_string()
        );
        let config = SessionConfig::from_toml(&text, "t.toml").unwrap();
        let auth = config.redis().unwrap().auth().unwrap();
        assert_eq!(auth.password.expose(), "from-file");
        assert_eq!(auth.username.as_deref(), Some("app"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A password file that is a FIFO, a device, a directory or too large
    /// is a config error at once: no hang, no huge allocation.
    #[test]
    fn password_files_that_are_not_small_regular_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("session-config-odd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success(), "mkfifo failed");
        let large = dir.join("large");
        std::fs::write(&large, vec![b'x'; PASSWORD_FILE_LIMIT as usize + 1]).unwrap();
        let at_limit = dir.join("at-limit");
        std::fs::write(&at_limit, vec![b'x'; PASSWORD_FILE_LIMIT as usize]).unwrap();
        let resolve = |path: &Path| file::PasswordSource::File(path.to_owned()).resolve("redis");
        for (path, reason) in [
            (fifo.as_path(), "not a regular file"),
            (Path::new("/dev/zero"), "not a regular file"),
            (dir.as_path(), "not a regular file"),
            (large.as_path(), "larger than"),
        ] {
            let error = resolve(path).unwrap_err();
            assert!(error.reason().contains(reason), "{path:?}: {error}");
            assert_eq!(error.field(), Some("redis.password_file"));
        }
        assert_eq!(
            resolve(&at_limit).unwrap().expose().len(),
            PASSWORD_FILE_LIMIT as usize
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
