//! Redis configuration as plain data.
//!
//! [`RedisConfig`] lives here, not in `session-redis`, so that configuration
//! can be read, validated and passed around (for instance to
//! `session_factory::new_manager`) by code that never compiles a Redis client.
//! [`RedisConfig::validate`] checks every rule that needs no network; the
//! Redis backend re-checks it before connecting.
//!
//! It deserializes from any serde format (the field names are those of the
//! `[redis]` table in configuration files); unknown keys are errors. Durations
//! are written as human-readable strings such as `"5s"` or `"250ms"`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::{Error, Result};

/// A secret string (a password, inline key material).
///
/// Its `Debug` output is `"[REDACTED]"` and it has no `Display`, so it cannot
/// leak through logs or error messages by accident; [`Secret::expose`] is the
/// one way to read it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself. Call this only where the value is handed to the
    /// client that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"[REDACTED]\"")
    }
}

impl From<String> for Secret {
    fn from(secret: String) -> Self {
        Self(secret)
    }
}

impl From<&str> for Secret {
    fn from(secret: &str) -> Self {
        Self(secret.to_owned())
    }
}

/// PEM data, inline or in a file: `{ pem = "-----BEGIN ..." }` or
/// `{ file = "/etc/ssl/ca.pem" }`. Inline PEM is kept as a [`Secret`] because
/// it may be a private key.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum PemSource {
    /// PEM text.
    Pem(Secret),
    /// A path to a PEM file, read when the client is built.
    File(PathBuf),
}

/// TLS settings for connections to Redis servers or to sentinels.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TlsConfig {
    /// CA certificates that sign the server's certificate. Without it, the
    /// operating system's certificate store is trusted.
    #[serde(default)]
    pub ca_cert: Option<PemSource>,
    /// The client certificate chain, for mutual TLS; needs `client_key`.
    #[serde(default)]
    pub client_cert: Option<PemSource>,
    /// The client private key, for mutual TLS; needs `client_cert`.
    #[serde(default)]
    pub client_key: Option<PemSource>,
    /// Skips verification of the server's certificate. For tests only: it
    /// makes TLS open to interception, and the client logs a warning.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// The name to verify the server's certificate against, when it differs
    /// from the host in the address.
    #[serde(default)]
    pub server_name: Option<String>,
}

impl TlsConfig {
    /// TLS that verifies the server against `ca_cert`.
    pub fn with_ca(ca_cert: PemSource) -> Self {
        Self {
            ca_cert: Some(ca_cert),
            ..Self::default()
        }
    }

    /// Adds a client certificate and key, for mutual TLS.
    pub fn with_client_auth(mut self, cert: PemSource, key: PemSource) -> Self {
        self.client_cert = Some(cert);
        self.client_key = Some(key);
        self
    }

    fn validate(&self, field: &str) -> Result<()> {
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) => Err(Error::config(
                format!("{field}.client_key"),
                "a client certificate needs its private key",
            )),
            (None, Some(_)) => Err(Error::config(
                format!("{field}.client_cert"),
                "a client key needs its certificate",
            )),
            _ => Ok(()),
        }
    }
}

/// Sentinel settings: the sentinels to ask, and which master to follow.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SentinelConfig {
    /// The name the sentinels monitor the master under.
    pub master_name: String,
    /// Sentinel addresses, `host:port`.
    pub addrs: Vec<String>,
    /// ACL user for the sentinels, when they require one.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for the sentinels, when they require one.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The name of an environment variable holding the sentinels' password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A file holding the sentinels' password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// TLS for connections to the sentinels, separate from the master's
    /// `tls`: sentinels and data nodes often differ.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

impl SentinelConfig {
    /// Sentinel settings for `master_name` monitored by `addrs`.
    pub fn new(
        master_name: impl Into<String>,
        addrs: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            master_name: master_name.into(),
            addrs: addrs.into_iter().map(Into::into).collect(),
            username: None,
            password: None,
            password_env: None,
            password_file: None,
            tls: None,
        }
    }
}

/// When the client connects.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ConnectMode {
    /// Connect and `PING` while building the storage; fail fast (within the
    /// connect timeout) with a typed error if Redis cannot be reached.
    #[default]
    Eager,
    /// Build the storage without waiting for Redis: the client starts
    /// connecting in the background and keeps retrying under the reconnect
    /// policy, and operations fail with typed errors (within the command
    /// timeout) until it succeeds. A service can then start before Redis does.
    Lazy,
}

/// How the client reconnects after losing its connection: exponential
/// backoff from `min_delay` to `max_delay`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ReconnectPolicy {
    /// Attempts before giving up; 0 (the default) retries forever, which is
    /// what a long-running service wants.
    #[serde(default)]
    pub max_attempts: u32,
    /// The first delay (default 50 ms).
    #[serde(default = "default_min_delay", with = "humantime_serde")]
    pub min_delay: Duration,
    /// The largest delay (default 2 s).
    #[serde(default = "default_max_delay", with = "humantime_serde")]
    pub max_delay: Duration,
}

fn default_min_delay() -> Duration {
    Duration::from_millis(50)
}

fn default_max_delay() -> Duration {
    Duration::from_secs(2)
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 0,
            min_delay: default_min_delay(),
            max_delay: default_max_delay(),
        }
    }
}

/// The default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default command timeout.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

fn default_connect_timeout() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}

fn default_command_timeout() -> Duration {
    DEFAULT_COMMAND_TIMEOUT
}

/// How to reach Redis and where to keep sessions there.
///
/// Exactly one topology: `addr` alone (standalone), `addr` with
/// `cluster = true` (a cluster, `addr` being one seed node), or `sentinel`.
/// See `docs/configuration.md` for every field with its default.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `host:port` of the server, or of one cluster node.
    #[serde(default)]
    pub addr: Option<String>,
    /// Whether `addr` is a node of a Redis Cluster.
    #[serde(default)]
    pub cluster: bool,
    /// Sentinel settings, instead of `addr`.
    #[serde(default)]
    pub sentinel: Option<SentinelConfig>,
    /// ACL user name (Redis 6+); `default` when only a password is given.
    #[serde(default)]
    pub username: Option<String>,
    /// Password (ACL or `requirepass`). In configuration files prefer
    /// `password_env` or `password_file`, so the file can be committed.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The name of an environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A file holding the password (one trailing newline is ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Database index; must be 0 on a cluster.
    #[serde(default)]
    pub db: u8,
    /// Prefix of every session key, e.g. `"mcp:sessions:"`; required, and
    /// must end with `':'`. Keys are `{key_prefix}{session_id}`.
    pub key_prefix: String,
    /// How long to wait for a connection (default 5 s).
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long to wait for any one command (default 3 s). Every command runs
    /// under it, so nothing hangs on a dead connection.
    #[serde(default = "default_command_timeout", with = "humantime_serde")]
    pub command_timeout: Duration,
    /// TLS for the data connections.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Eager (default) or lazy connect.
    #[serde(default)]
    pub connect: ConnectMode,
    /// Reconnection backoff.
    #[serde(default)]
    pub reconnect: ReconnectPolicy,
    /// The codec of values written (values in either codec are always read).
    #[serde(default)]
    pub codec: crate::Codec,
    /// How stale a session's TTL refresh may be. A load refreshes the key's
    /// TTL with `GETEX` unless this client refreshed or wrote the same
    /// session less than `refresh_window` ago, in which case it reads with a
    /// plain `GET` (cheaper for Redis: `GETEX` is a write). Every load thus
    /// keeps the session alive for at least `ttl - refresh_window`. Default:
    /// 1/64 of the TTL; `"0s"` refreshes on every load.
    #[serde(default, with = "humantime_serde")]
    pub refresh_window: Option<Duration>,
}

impl RedisConfig {
    fn base(key_prefix: impl Into<String>) -> Self {
        Self {
            addr: None,
            cluster: false,
            sentinel: None,
            username: None,
            password: None,
            password_env: None,
            password_file: None,
            db: 0,
            key_prefix: key_prefix.into(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            tls: None,
            connect: ConnectMode::default(),
            reconnect: ReconnectPolicy::default(),
            codec: crate::Codec::default(),
            refresh_window: None,
        }
    }

    /// A standalone server at `addr`.
    pub fn standalone(addr: impl Into<String>, key_prefix: impl Into<String>) -> Self {
        Self {
            addr: Some(addr.into()),
            ..Self::base(key_prefix)
        }
    }

    /// A cluster, reached first through the node at `addr`.
    pub fn cluster(addr: impl Into<String>, key_prefix: impl Into<String>) -> Self {
        Self {
            cluster: true,
            ..Self::standalone(addr, key_prefix)
        }
    }

    /// A master found through sentinels.
    pub fn sentinel(sentinel: SentinelConfig, key_prefix: impl Into<String>) -> Self {
        Self {
            sentinel: Some(sentinel),
            ..Self::base(key_prefix)
        }
    }

    /// Replaces `password_env` and `password_file` (here and in `sentinel`)
    /// by the password they point to, so a configuration file can name a
    /// secret without containing it. Errors name the field, the variable or
    /// the file, never the secret.
    pub fn resolve_secrets(&mut self) -> Result<()> {
        resolve_password(
            "redis",
            &mut self.password,
            &mut self.password_env,
            &mut self.password_file,
        )?;
        if let Some(sentinel) = &mut self.sentinel {
            resolve_password(
                "redis.sentinel",
                &mut sentinel.password,
                &mut sentinel.password_env,
                &mut sentinel.password_file,
            )?;
        }
        Ok(())
    }

    /// Checks every rule that needs no network. The error names the field.
    pub fn validate(&self) -> Result<()> {
        check_one_password(
            "redis",
            &self.password,
            &self.password_env,
            &self.password_file,
        )?;
        if let Some(sentinel) = &self.sentinel {
            check_one_password(
                "redis.sentinel",
                &sentinel.password,
                &sentinel.password_env,
                &sentinel.password_file,
            )?;
        }
        if self.key_prefix.is_empty() {
            return Err(Error::config("redis.key_prefix", "is required"));
        }
        if !self.key_prefix.ends_with(':') {
            return Err(Error::config("redis.key_prefix", "must end with ':'"));
        }
        match (&self.addr, &self.sentinel) {
            (Some(_), Some(_)) => {
                return Err(Error::config(
                    "redis.sentinel",
                    "give either `addr` or `sentinel`, not both",
                ));
            }
            (None, None) => {
                return Err(Error::config("redis.addr", "give `addr` or `sentinel`"));
            }
            (Some(addr), None) => validate_addr("redis.addr", addr)?,
            (None, Some(sentinel)) => {
                if self.cluster {
                    return Err(Error::config(
                        "redis.cluster",
                        "a cluster is reached through `addr`, not `sentinel`",
                    ));
                }
                if sentinel.master_name.is_empty() {
                    return Err(Error::config("redis.sentinel.master_name", "is required"));
                }
                if sentinel.addrs.is_empty() {
                    return Err(Error::config(
                        "redis.sentinel.addrs",
                        "needs at least one sentinel address",
                    ));
                }
                for addr in &sentinel.addrs {
                    validate_addr("redis.sentinel.addrs", addr)?;
                }
                if let Some(tls) = &sentinel.tls {
                    tls.validate("redis.sentinel.tls")?;
                }
            }
        }
        if self.cluster && self.db != 0 {
            return Err(Error::config("redis.db", "must be 0 on a cluster"));
        }
        if let Some(tls) = &self.tls {
            tls.validate("redis.tls")?;
        }
        if self.connect_timeout.is_zero() {
            return Err(Error::config(
                "redis.connect_timeout",
                "must be greater than zero",
            ));
        }
        if self.command_timeout.is_zero() {
            return Err(Error::config(
                "redis.command_timeout",
                "must be greater than zero",
            ));
        }
        if self.reconnect.min_delay > self.reconnect.max_delay {
            return Err(Error::config(
                "redis.reconnect.min_delay",
                "must not exceed `max_delay`",
            ));
        }
        Ok(())
    }
}

fn check_one_password(
    table: &str,
    password: &Option<Secret>,
    env: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<()> {
    let given = [password.is_some(), env.is_some(), file.is_some()];
    if given.iter().filter(|given| **given).count() > 1 {
        return Err(Error::config(
            format!("{table}.password"),
            "give at most one of `password`, `password_env` and `password_file`",
        ));
    }
    Ok(())
}

fn resolve_password(
    table: &str,
    password: &mut Option<Secret>,
    env: &mut Option<String>,
    file: &mut Option<PathBuf>,
) -> Result<()> {
    check_one_password(table, password, env, file)?;
    if let Some(name) = env.take() {
        let value = std::env::var(&name).map_err(|_| {
            Error::config(
                format!("{table}.password_env"),
                format!("environment variable {name} is not set (or not UTF-8)"),
            )
        })?;
        *password = Some(Secret::new(value));
    }
    if let Some(path) = file.take() {
        let field = format!("{table}.password_file");
        let bytes = read_file(&field, &path, PASSWORD_FILE_LIMIT)?;
        let value = String::from_utf8(bytes)
            .map_err(|_| Error::config(&field, format!("{} is not UTF-8 text", path.display())))?;
        let value = value.strip_suffix('\n').unwrap_or(&value);
        let value = value.strip_suffix('\r').unwrap_or(value);
        *password = Some(Secret::new(value));
    }
    Ok(())
}

/// The largest password file read: far above any real password.
pub const PASSWORD_FILE_LIMIT: u64 = 64 * 1024;
/// The largest PEM or configuration file read.
pub const FILE_LIMIT: u64 = 1024 * 1024;

/// Reads a file that configuration names (a password, PEM or configuration
/// file) for the key `field`, refusing what is not a regular file or is
/// larger than `limit` bytes.
///
/// Configuration is read at start-up, where a hang or an allocation of
/// gigabytes is worse than an error: opening a FIFO blocks until a writer
/// appears, and `/dev/zero` or a huge file never ends or exhausts memory.
/// The errors name the key and the path, never the contents.
pub fn read_file(field: &str, path: &std::path::Path, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read as _;
    let cannot =
        |reason: String| Error::config(field, format!("cannot read {}: {reason}", path.display()));
    let metadata = std::fs::metadata(path).map_err(|error| cannot(error.to_string()))?;
    if !metadata.is_file() {
        return Err(cannot("not a regular file".into()));
    }
    let file = std::fs::File::open(path).map_err(|error| cannot(error.to_string()))?;
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len().min(limit)).unwrap_or(0));
    // One byte past the limit tells a file at the limit from a larger one,
    // even if it grew after `metadata`.
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|error| cannot(error.to_string()))?;
    if bytes.len() as u64 > limit {
        return Err(cannot(format!("larger than {limit} bytes")));
    }
    Ok(bytes)
}

/// Checks that `addr` is `host:port` with a non-empty host and a port number.
fn validate_addr(field: &str, addr: &str) -> Result<()> {
    let invalid = |reason: &str| Error::config(field, format!("{addr:?} {reason}"));
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| invalid("is not `host:port`"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(invalid("has no host"));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(invalid("has no valid port")),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(result: Result<()>) -> String {
        match result {
            Err(Error::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn valid_topologies_pass() {
        RedisConfig::standalone("127.0.0.1:6379", "s:")
            .validate()
            .unwrap();
        RedisConfig::standalone("[::1]:6379", "s:")
            .validate()
            .unwrap();
        RedisConfig::cluster("127.0.0.1:7000", "s:")
            .validate()
            .unwrap();
        RedisConfig::sentinel(SentinelConfig::new("mymaster", ["127.0.0.1:26379"]), "s:")
            .validate()
            .unwrap();
    }

    #[test]
    fn invalid_combinations_name_their_field() {
        let base = RedisConfig::standalone("127.0.0.1:6379", "s:");
        let cases: Vec<(RedisConfig, &str)> = vec![
            (
                RedisConfig {
                    key_prefix: String::new(),
                    ..base.clone()
                },
                "redis.key_prefix",
            ),
            (
                RedisConfig {
                    key_prefix: "sessions".into(),
                    ..base.clone()
                },
                "redis.key_prefix",
            ),
            (
                RedisConfig {
                    sentinel: Some(SentinelConfig::new("m", ["127.0.0.1:26379"])),
                    ..base.clone()
                },
                "redis.sentinel",
            ),
            (
                RedisConfig {
                    addr: None,
                    ..base.clone()
                },
                "redis.addr",
            ),
            (
                RedisConfig {
                    addr: Some("localhost".into()),
                    ..base.clone()
                },
                "redis.addr",
            ),
            (
                RedisConfig {
                    addr: Some(":6379".into()),
                    ..base.clone()
                },
                "redis.addr",
            ),
            (
                RedisConfig {
                    addr: Some("h:0".into()),
                    ..base.clone()
                },
                "redis.addr",
            ),
            (
                RedisConfig {
                    addr: Some("h:99999".into()),
                    ..base.clone()
                },
                "redis.addr",
            ),
            (
                RedisConfig {
                    db: 3,
                    ..RedisConfig::cluster("127.0.0.1:7000", "s:")
                },
                "redis.db",
            ),
            (
                RedisConfig {
                    cluster: true,
                    ..RedisConfig::sentinel(SentinelConfig::new("m", ["127.0.0.1:1"]), "s:")
                },
                "redis.cluster",
            ),
            (
                RedisConfig::sentinel(SentinelConfig::new("", ["127.0.0.1:1"]), "s:"),
                "redis.sentinel.master_name",
            ),
            (
                RedisConfig::sentinel(SentinelConfig::new("m", Vec::<String>::new()), "s:"),
                "redis.sentinel.addrs",
            ),
            (
                RedisConfig {
                    tls: Some(TlsConfig {
                        client_cert: Some(PemSource::File("c.pem".into())),
                        ..TlsConfig::default()
                    }),
                    ..base.clone()
                },
                "redis.tls.client_key",
            ),
            (
                RedisConfig {
                    tls: Some(TlsConfig {
                        client_key: Some(PemSource::File("k.pem".into())),
                        ..TlsConfig::default()
                    }),
                    ..base.clone()
                },
                "redis.tls.client_cert",
            ),
            (
                RedisConfig {
                    connect_timeout: Duration::ZERO,
                    ..base.clone()
                },
                "redis.connect_timeout",
            ),
            (
                RedisConfig {
                    command_timeout: Duration::ZERO,
                    ..base.clone()
                },
                "redis.command_timeout",
            ),
        ];
        for (config, field) in cases {
            assert_eq!(field_of(config.validate()), field, "{config:?}");
        }
    }

    #[test]
    fn sentinel_tls_is_validated_separately() {
        let mut sentinel = SentinelConfig::new("m", ["127.0.0.1:26379"]);
        sentinel.tls = Some(TlsConfig {
            client_cert: Some(PemSource::File("c.pem".into())),
            ..TlsConfig::default()
        });
        assert_eq!(
            field_of(RedisConfig::sentinel(sentinel, "s:").validate()),
            "redis.sentinel.tls.client_key"
        );
    }

    #[test]
    fn deserializes_with_defaults_and_rejects_unknown_keys() {
        let config: RedisConfig = toml::from_str(
            r#"
            addr = "127.0.0.1:6379"
            key_prefix = "mcp:sessions:"
            password = "hunter2"
            command_timeout = "250ms"
            connect = "lazy"
            [tls]
            ca_cert = { file = "/etc/ca.pem" }
            "#,
        )
        .unwrap();
        assert_eq!(config.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(config.command_timeout, Duration::from_millis(250));
        assert_eq!(config.connect, ConnectMode::Lazy);
        assert_eq!(config.reconnect, ReconnectPolicy::default());
        config.validate().unwrap();
        let error =
            toml::from_str::<RedisConfig>("addr = \"h:1\"\nkey_prefix = \"s:\"\npasword = \"x\"")
                .unwrap_err();
        assert!(error.to_string().contains("pasword"), "{error}");
    }

    #[test]
    fn passwords_resolve_from_a_file_and_never_from_two_sources() {
        let dir = std::env::temp_dir().join(format!("session-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("password");
        std::fs::write(&path, "from-file\n").unwrap();
        let mut config = RedisConfig::standalone("127.0.0.1:6379", "s:");
        config.password_file = Some(path.clone());
        config.resolve_secrets().unwrap();
        assert_eq!(
            config.password.as_ref().map(Secret::expose),
            Some("from-file")
        );
        assert_eq!(config.password_file, None);

        let mut both = RedisConfig::standalone("127.0.0.1:6379", "s:");
        both.password = Some("x".into());
        both.password_file = Some(path);
        assert_eq!(field_of(both.validate()), "redis.password");

        let mut missing = RedisConfig::standalone("127.0.0.1:6379", "s:");
        missing.password_env = Some("SESSION_TEST_SURELY_UNSET_VARIABLE".into());
        assert_eq!(field_of(missing.resolve_secrets()), "redis.password_env");
        let mut unreadable = RedisConfig::standalone("127.0.0.1:6379", "s:");
        unreadable.password_file = Some("/nonexistent/password".into());
        assert_eq!(
            field_of(unreadable.resolve_secrets()),
            "redis.password_file"
        );
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
        for (path, reason) in [
            (fifo.as_path(), "not a regular file"),
            (std::path::Path::new("/dev/zero"), "not a regular file"),
            (dir.as_path(), "not a regular file"),
            (large.as_path(), "larger than"),
        ] {
            let mut config = RedisConfig::standalone("127.0.0.1:6379", "s:");
            config.password_file = Some(path.to_owned());
            let error = config.resolve_secrets().unwrap_err();
            let text = error.to_string();
            assert!(text.contains(reason), "{path:?}: {text}");
            assert_eq!(field_of(Err(error)), "redis.password_file");
        }
        let mut config = RedisConfig::standalone("127.0.0.1:6379", "s:");
        config.password_file = Some(at_limit);
        config.resolve_secrets().unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn debug_redacts_secrets() {
        let mut config = RedisConfig::standalone("127.0.0.1:6379", "s:");
        config.password = Some(Secret::new("hunter2"));
        config.tls = Some(
            TlsConfig::with_ca(PemSource::File("ca.pem".into())).with_client_auth(
                PemSource::File("c.pem".into()),
                PemSource::Pem(Secret::new("-----BEGIN PRIVATE KEY-----\nMIIsecret")),
            ),
        );
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains("MIIsecret"), "{debug}");
        assert!(debug.contains("[REDACTED]"), "{debug}");
    }
}
