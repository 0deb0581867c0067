//! The shape of a configuration file, as serde reads it, and its conversion
//! into resolved settings.
//!
//! These types mirror the TOML tables field for field (`deny_unknown_fields`
//! everywhere, durations as humantime strings such as `"5s"`). They hold
//! what the file says, unchecked: an address is a string, a password is one
//! of three places to find it. [`TryFrom`] turns them, once, into the typed
//! settings of [`crate::SessionConfig`] and [`crate::RedisConfig`]: parsing
//! every address, reading every secret and PEM file, and naming the setting
//! at fault in each error. An application that keeps its session settings
//! inside its own configuration file can embed [`SessionFile`] (or
//! [`RedisFile`]) in its own serde types and convert it the same way.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use session_core::codec::FormatVersion;
use session_core::seal::{Keyring, SealKey};
use session_core::{Codec, ConfigError, Ttl};
use zeroize::Zeroizing;

use crate::SessionConfig;
use crate::read::{PASSWORD_FILE_LIMIT, read_file};
use crate::redis::{
    Addr, Auth, CacheCapacity, CacheConfig, ClientIdentity, ConnectMode, HashPhase, HashedIds,
    KeyPrefix, LiveCount, Pem, ReconnectPolicy, RedisConfig, RedisTopology, Roots, Secret,
    SentinelConfig, TlsConfig, TrackingMode,
};

/// The top level of a session configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SessionFile {
    /// The sliding TTL of a session (and its Redis key TTL).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// An absolute lifetime on top of the sliding TTL.
    #[serde(default, with = "humantime_serde")]
    pub max_lifetime: Option<Duration>,
    /// How often expired local sessions are swept (default `ttl / 2`).
    #[serde(default, with = "humantime_serde")]
    pub cleanup_interval: Option<Duration>,
    /// Redis, or local storage when absent.
    #[serde(default)]
    pub redis: Option<RedisFile>,
}

/// The `[redis]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisFile {
    /// `host:port` of the server, or of one cluster node.
    #[serde(default)]
    pub addr: Option<String>,
    /// Whether `addr` is a node of a Redis Cluster.
    #[serde(default)]
    pub cluster: bool,
    /// Sentinel settings, instead of `addr`.
    #[serde(default)]
    pub sentinel: Option<SentinelFile>,
    /// ACL user name; the `default` user when only a password is given.
    #[serde(default)]
    pub username: Option<String>,
    /// The password, inline.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The name of an environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A file holding the password (one trailing newline is ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The database index; 0 on a cluster.
    #[serde(default)]
    pub db: u8,
    /// The prefix of every session key; required, ending with `':'`.
    pub key_prefix: String,
    /// How long to wait for a connection (default 5 s).
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    /// How long to wait for any one command (default 3 s).
    #[serde(default, with = "humantime_serde")]
    pub command_timeout: Option<Duration>,
    /// TLS for the data connections.
    #[serde(default)]
    pub tls: Option<TlsFile>,
    /// `"eager"` (default) or `"lazy"`.
    #[serde(default)]
    pub connect: ConnectMode,
    /// Reconnection backoff.
    #[serde(default)]
    pub reconnect: ReconnectFile,
    /// The codec of values written.
    #[serde(default)]
    pub codec: Codec,
    /// The stored format written: 2 (the default) or 1, for the length of a
    /// rolling deploy from a release that reads only format 1.
    #[serde(default)]
    pub stored_format: Option<u8>,
    /// How stale a TTL refresh may be (default 1/64 of the TTL).
    #[serde(default, with = "humantime_serde")]
    pub refresh_window: Option<Duration>,
    /// The local cache of hot sessions (off without this table).
    pub cache: Option<CacheFile>,
    /// Encryption of stored values (off without this table).
    pub encryption: Option<EncryptionFile>,
    /// Session keys named by a keyed hash of the id (off without this
    /// table).
    pub hashed_ids: Option<HashedIdsFile>,
    /// A sampled count of live sessions for the metrics (off without this
    /// table).
    pub live_count: Option<LiveCountFile>,
}

/// The `[redis.live_count]` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LiveCountFile {
    /// How often to count (default 60 s).
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// The most keys one count reads (default 1,000,000).
    pub max_keys: Option<u64>,
}

impl TryFrom<LiveCountFile> for LiveCount {
    type Error = ConfigError;

    fn try_from(file: LiveCountFile) -> Result<Self, ConfigError> {
        LiveCount::new(
            file.interval.unwrap_or(LiveCount::DEFAULT_INTERVAL),
            file.max_keys.unwrap_or(LiveCount::DEFAULT_MAX_KEYS),
        )
    }
}

/// The `[redis.encryption]` table: the keys stored values are sealed and
/// opened with (`session_core::seal`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct EncryptionFile {
    /// Every key that may have sealed a stored value.
    pub keys: Vec<KeyFile>,
    /// The id of the key new values are sealed with.
    pub write_key: u32,
    /// Whether new values are sealed (default `true`). `false` opens sealed
    /// values but writes plaintext: the first step of turning encryption on
    /// across replicas (docs/operations.md).
    #[serde(default = "yes")]
    pub seal_writes: bool,
    /// Whether values stored without encryption are read (default `true`).
    #[serde(default = "yes")]
    pub accept_plaintext: bool,
}

const fn yes() -> bool {
    true
}

/// One entry of `redis.encryption.keys`: an id and where the key is, never
/// the key itself. The key is 32 bytes, written in standard base64.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct KeyFile {
    /// The id written into the values this key seals.
    pub id: u32,
    /// The name of an environment variable holding the key.
    #[serde(default)]
    pub env: Option<String>,
    /// A file holding the key (surrounding whitespace is ignored).
    #[serde(default)]
    pub file: Option<PathBuf>,
}

impl TryFrom<EncryptionFile> for Keyring {
    type Error = ConfigError;

    fn try_from(file: EncryptionFile) -> Result<Self, ConfigError> {
        let keys = file
            .keys
            .into_iter()
            .enumerate()
            .map(|(index, key)| key.resolve(&format!("redis.encryption.keys[{index}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let write_key = file.seal_writes.then_some(file.write_key);
        if !file.seal_writes && !keys.iter().any(|key| key.id() == file.write_key) {
            return Err(ConfigError::new(
                "redis.encryption.write_key",
                format!("no key with id {} is configured", file.write_key),
            ));
        }
        Ok(Keyring::new(keys, write_key)?.accepting_plaintext(file.accept_plaintext))
    }
}

impl KeyFile {
    /// Reads the key from its environment variable or file.
    fn resolve(self, field: &str) -> Result<SealKey, ConfigError> {
        let bytes = read_key(field, self.env, self.file)?;
        SealKey::new(field, self.id, &bytes)
    }
}

/// Reads a key (32 or more bytes, in standard base64) from the environment
/// variable `env` or the file `file`, exactly one of which must be given.
/// Errors name the setting, the variable or the path, never what they hold.
fn read_key(
    field: &str,
    env: Option<String>,
    file: Option<PathBuf>,
) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
    use base64::Engine as _;
    let text = match (env, file) {
        (Some(name), None) => Zeroizing::new(std::env::var(&name).map_err(|_| {
            ConfigError::new(
                format!("{field}.env"),
                format!("environment variable {name} is not set (or not UTF-8)"),
            )
        })?),
        (None, Some(path)) => {
            let field = format!("{field}.file");
            let bytes = Zeroizing::new(read_file(Some(&field), &path, PASSWORD_FILE_LIMIT)?);
            Zeroizing::new(
                String::from_utf8(bytes.to_vec())
                    .map_err(|_| ConfigError::new(field, "the key file is not base64 text"))?,
            )
        }
        _ => {
            return Err(ConfigError::new(
                field,
                "give the key's `env` or its `file` (one of them); keys are never inline",
            ));
        }
    };
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map(Zeroizing::new)
        .map_err(|_| ConfigError::new(field, "the key is not standard base64 (of 32 bytes)"))
}

/// The `[redis.hashed_ids]` table: session keys named by a keyed hash of
/// the id (`HashedIds`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HashedIdsFile {
    /// The name of an environment variable holding the hash key.
    #[serde(default)]
    pub env: Option<String>,
    /// A file holding the hash key.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Which names a session may have: `"hashed"` (the default), or a
    /// migration phase, `"plain-first"` or `"hashed-first"`.
    #[serde(default)]
    pub phase: HashPhase,
}

impl TryFrom<HashedIdsFile> for HashedIds {
    type Error = ConfigError;

    fn try_from(file: HashedIdsFile) -> Result<Self, ConfigError> {
        const FIELD: &str = "redis.hashed_ids";
        let key = read_key(FIELD, file.env, file.file)?;
        HashedIds::new(key.to_vec(), file.phase)
    }
}

/// The `[redis.cache]` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CacheFile {
    /// At most this many cached sessions (default 10,000); give this or
    /// `max_bytes`, not both.
    pub max_entries: Option<u64>,
    /// At most this many bytes of cached sessions.
    pub max_bytes: Option<u64>,
    /// How old a served copy may be at most (default 1 s, at most the TTL).
    #[serde(default, with = "humantime_serde")]
    pub max_staleness: Option<Duration>,
    /// `"tracking"` (the default) or `"broadcast"`.
    #[serde(default)]
    pub mode: TrackingMode,
}

impl TryFrom<CacheFile> for CacheConfig {
    type Error = ConfigError;

    fn try_from(file: CacheFile) -> Result<Self, ConfigError> {
        let nonzero = |field: &str, value: u64| {
            std::num::NonZeroU64::new(value).ok_or_else(|| {
                ConfigError::new(
                    field,
                    "must be more than zero (to turn the cache off, remove the [redis.cache] table)",
                )
            })
        };
        let capacity = match (file.max_entries, file.max_bytes) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "redis.cache.max_bytes",
                    "give `max_entries` or `max_bytes`, not both",
                ));
            }
            (Some(entries), None) => {
                CacheCapacity::Entries(nonzero("redis.cache.max_entries", entries)?)
            }
            (None, Some(bytes)) => CacheCapacity::Bytes(nonzero("redis.cache.max_bytes", bytes)?),
            (None, None) => CacheConfig::default().capacity(),
        };
        let staleness = file
            .max_staleness
            .unwrap_or(crate::redis::DEFAULT_MAX_STALENESS);
        Ok(CacheConfig::new(capacity, staleness)?.with_mode(file.mode))
    }
}

/// The `[redis.sentinel]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SentinelFile {
    /// The name the sentinels monitor the master under.
    pub master_name: String,
    /// Sentinel addresses, `host:port`.
    pub addrs: Vec<String>,
    /// ACL user for the sentinels.
    #[serde(default)]
    pub username: Option<String>,
    /// The sentinels' password, inline.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The name of an environment variable holding the sentinels' password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A file holding the sentinels' password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// TLS for the connections to the sentinels.
    #[serde(default)]
    pub tls: Option<TlsFile>,
}

/// The `[redis.tls]` and `[redis.sentinel.tls]` tables.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TlsFile {
    /// CA certificates; the system's store when absent.
    #[serde(default)]
    pub ca_cert: Option<PemSource>,
    /// The client certificate chain, for mutual TLS.
    #[serde(default)]
    pub client_cert: Option<PemSource>,
    /// The client private key, for mutual TLS.
    #[serde(default)]
    pub client_key: Option<PemSource>,
    /// Skips verification of the server's certificate (tests only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// The name to verify the server's certificate against.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// The `[redis.reconnect]` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ReconnectFile {
    /// Attempts before giving up; 0 (the default) retries forever.
    #[serde(default)]
    pub max_attempts: u32,
    /// The first delay (default 50 ms).
    #[serde(default, with = "humantime_serde")]
    pub min_delay: Option<Duration>,
    /// The largest delay (default 2 s).
    #[serde(default, with = "humantime_serde")]
    pub max_delay: Option<Duration>,
}

/// PEM data in a file: inline, `{ pem = "-----BEGIN ..." }`, or in a file,
/// `{ file = "/etc/ssl/ca.pem" }`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum PemSource {
    /// PEM text. Kept as a secret: it may be a private key.
    Pem(Secret),
    /// A path to a PEM file.
    File(PathBuf),
}

impl std::fmt::Debug for PemSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pem(_) => f.write_str("Pem([REDACTED])"),
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

impl PemSource {
    /// Reads the PEM data; the error names `field`.
    pub fn read(&self, field: &str) -> Result<Pem, ConfigError> {
        match self {
            Self::Pem(text) => Ok(Pem::new(text.expose().as_bytes())),
            Self::File(path) => Pem::read(field, path),
        }
    }
}

/// Where a password is: in the file, in an environment variable, or in a
/// file of its own. A configuration file gives at most one of the keys
/// `password`, `password_env` and `password_file`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasswordSource {
    /// The password itself.
    Value(Secret),
    /// The name of an environment variable holding it.
    Env(String),
    /// A file holding it; one trailing newline is ignored.
    File(PathBuf),
}

impl PasswordSource {
    /// The source the three keys of `table` give, if any; two or three of
    /// them at once are an error.
    pub fn from_keys(
        table: &str,
        password: Option<Secret>,
        env: Option<String>,
        file: Option<PathBuf>,
    ) -> Result<Option<Self>, ConfigError> {
        match (password, env, file) {
            (None, None, None) => Ok(None),
            (Some(value), None, None) => Ok(Some(Self::Value(value))),
            (None, Some(name), None) => Ok(Some(Self::Env(name))),
            (None, None, Some(path)) => Ok(Some(Self::File(path))),
            _ => Err(ConfigError::new(
                format!("{table}.password"),
                "give at most one of `password`, `password_env` and `password_file`",
            )),
        }
    }

    /// Reads the password. Errors name the key of `table`, the variable or
    /// the file, never the secret.
    pub fn resolve(self, table: &str) -> Result<Secret, ConfigError> {
        match self {
            Self::Value(secret) => Ok(secret),
            Self::Env(name) => std::env::var(&name).map(Secret::new).map_err(|_| {
                ConfigError::new(
                    format!("{table}.password_env"),
                    format!("environment variable {name} is not set (or not UTF-8)"),
                )
            }),
            Self::File(path) => {
                let field = format!("{table}.password_file");
                let bytes = read_file(Some(&field), &path, PASSWORD_FILE_LIMIT)?;
                let text = String::from_utf8(bytes).map_err(|_| {
                    ConfigError::new(&field, format!("{} is not UTF-8 text", path.display()))
                })?;
                let text = text.strip_suffix('\n').unwrap_or(&text);
                let text = text.strip_suffix('\r').unwrap_or(text);
                Ok(Secret::new(text))
            }
        }
    }
}

/// Credentials from a table's `username` and password keys.
fn auth(
    table: &str,
    username: Option<String>,
    password: Option<Secret>,
    env: Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<Auth>, ConfigError> {
    match (
        username,
        PasswordSource::from_keys(table, password, env, file)?,
    ) {
        (username, Some(source)) => Ok(Some(Auth {
            username,
            password: source.resolve(table)?,
        })),
        (Some(_), None) => Err(ConfigError::new(
            format!("{table}.username"),
            "a user name needs a password (`password`, `password_env` or `password_file`)",
        )),
        (None, None) => Ok(None),
    }
}

impl TlsFile {
    /// The TLS settings of `table` (`redis.tls` or `redis.sentinel.tls`),
    /// with every PEM file read.
    fn resolve(self, table: &str) -> Result<TlsConfig, ConfigError> {
        let roots = match self.ca_cert {
            Some(ca) => Roots::Pem(ca.read(&format!("{table}.ca_cert"))?),
            None => Roots::System,
        };
        let identity = match (self.client_cert, self.client_key) {
            (Some(cert), Some(key)) => Some(ClientIdentity {
                cert_chain: cert.read(&format!("{table}.client_cert"))?,
                key: key.read(&format!("{table}.client_key"))?,
            }),
            (Some(_), None) => {
                return Err(ConfigError::new(
                    format!("{table}.client_key"),
                    "a client certificate needs its private key",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    format!("{table}.client_cert"),
                    "a client key needs its certificate",
                ));
            }
            (None, None) => None,
        };
        Ok(TlsConfig {
            roots,
            identity,
            server_name: self.server_name,
            insecure_skip_verify: self.insecure_skip_verify,
        })
    }
}

impl TryFrom<SentinelFile> for SentinelConfig {
    type Error = ConfigError;

    fn try_from(file: SentinelFile) -> Result<Self, ConfigError> {
        const TABLE: &str = "redis.sentinel";
        let mut sentinel = SentinelConfig::parse(TABLE, file.master_name, &file.addrs)?;
        if let Some(auth) = auth(
            TABLE,
            file.username,
            file.password,
            file.password_env,
            file.password_file,
        )? {
            sentinel = sentinel.with_auth(auth);
        }
        if let Some(tls) = file.tls {
            sentinel = sentinel.with_tls(tls.resolve("redis.sentinel.tls")?);
        }
        Ok(sentinel)
    }
}

impl TryFrom<RedisFile> for RedisConfig {
    type Error = ConfigError;

    fn try_from(file: RedisFile) -> Result<Self, ConfigError> {
        const TABLE: &str = "redis";
        let key_prefix = KeyPrefix::parse("redis.key_prefix", &file.key_prefix)?;
        let topology = match (file.addr, file.sentinel) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "redis.sentinel",
                    "give either `addr` or `sentinel`, not both",
                ));
            }
            (None, None) => {
                return Err(ConfigError::new("redis.addr", "give `addr` or `sentinel`"));
            }
            (Some(addr), None) => {
                let addr = Addr::parse("redis.addr", &addr)?;
                if file.cluster {
                    if file.db != 0 {
                        return Err(ConfigError::new("redis.db", "must be 0 on a cluster"));
                    }
                    RedisTopology::Cluster { seed: addr }
                } else {
                    RedisTopology::Standalone { addr, db: file.db }
                }
            }
            (None, Some(sentinel)) => {
                if file.cluster {
                    return Err(ConfigError::new(
                        "redis.cluster",
                        "a cluster is reached through `addr`, not `sentinel`",
                    ));
                }
                RedisTopology::Sentinel {
                    sentinel: sentinel.try_into()?,
                    db: file.db,
                }
            }
        };
        let defaults = ReconnectPolicy::default();
        let reconnect = ReconnectPolicy::new(
            file.reconnect.max_attempts,
            file.reconnect.min_delay.unwrap_or(defaults.min_delay()),
            file.reconnect.max_delay.unwrap_or(defaults.max_delay()),
        )?;
        let mut config = RedisConfig::new(topology, key_prefix)
            .with_timeouts(
                file.connect_timeout
                    .unwrap_or(crate::redis::DEFAULT_CONNECT_TIMEOUT),
                file.command_timeout
                    .unwrap_or(crate::redis::DEFAULT_COMMAND_TIMEOUT),
            )?
            .with_connect(file.connect)
            .with_reconnect(reconnect)
            .with_codec(file.codec)
            .with_stored_format(stored_format(file.stored_format)?)
            .with_refresh_window(file.refresh_window)
            .with_cache(file.cache.map(CacheConfig::try_from).transpose()?)?
            .with_encryption(file.encryption.map(Keyring::try_from).transpose()?)?
            .with_hashed_ids(file.hashed_ids.map(HashedIds::try_from).transpose()?)
            .with_live_count(file.live_count.map(LiveCount::try_from).transpose()?);
        if let Some(auth) = auth(
            TABLE,
            file.username,
            file.password,
            file.password_env,
            file.password_file,
        )? {
            config = config.with_auth(auth);
        }
        if let Some(tls) = file.tls {
            config = config.with_tls(tls.resolve("redis.tls")?)?;
        }
        config.check_sentinel_tls()?;
        Ok(config)
    }
}

impl TryFrom<SessionFile> for SessionConfig {
    type Error = ConfigError;

    fn try_from(file: SessionFile) -> Result<Self, ConfigError> {
        let ttl = Ttl::new(file.ttl).map_err(|error| match error {
            session_core::Error::Config(error) => error,
            other => ConfigError::new("ttl", other.to_string()),
        })?;
        let mut config = SessionConfig::new(ttl)
            .with_max_lifetime(file.max_lifetime)?
            .with_cleanup_interval(file.cleanup_interval)?;
        if let Some(redis) = file.redis {
            let redis: RedisConfig = redis.try_into()?;
            if let Some(cache) = redis.cache()
                && cache.max_staleness() > ttl.get()
            {
                // A copy is never served past the refresh window, which is
                // shorter than the TTL: a longer bound is a mistake.
                return Err(ConfigError::new(
                    "redis.cache.max_staleness",
                    format!(
                        "{} is longer than the TTL ({}): a cached copy could never get that old",
                        humantime_serde::re::humantime::format_duration(cache.max_staleness()),
                        humantime_serde::re::humantime::format_duration(ttl.get())
                    ),
                ));
            }
            config = config.with_redis(redis);
        }
        Ok(config)
    }
}

/// The `stored_format` setting: a format version this build writes.
fn stored_format(number: Option<u8>) -> Result<FormatVersion, ConfigError> {
    let Some(number) = number else {
        return Ok(FormatVersion::default());
    };
    FormatVersion::from_number(number).ok_or_else(|| {
        ConfigError::new(
            "redis.stored_format",
            format!("{number} is not a stored format this build writes: expected 1 or 2"),
        )
    })
}
