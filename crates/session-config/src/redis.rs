//! Redis settings, resolved: every value typed and checked, every secret and
//! PEM file read.
//!
//! [`RedisConfig`] is what `session_redis::RedisStorage::connect` takes. It
//! cannot hold an invalid combination: the topology is an enum (a database
//! index exists only where Redis has one), addresses are parsed
//! [`Addr`]esses, the key prefix is a checked [`KeyPrefix`], timeouts are
//! non-zero, and TLS material is already read. So the storage connects
//! without checking anything again. Build one in code with the constructors
//! and `with_*` methods, or from a configuration file through
//! [`crate::file`].

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use std::time::Duration;
use zeroize::Zeroizing;

use serde::Deserialize;
use session_core::codec::FormatVersion;
use session_core::seal::Keyring;
use session_core::{Codec, ConfigError};

use crate::read::{FILE_LIMIT, read_file};

/// A secret string (a password).
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

impl From<&str> for Secret {
    fn from(secret: &str) -> Self {
        Self(secret.to_owned())
    }
}

impl From<String> for Secret {
    fn from(secret: String) -> Self {
        Self(secret)
    }
}

/// A `host:port` address: a host name or IP address (IPv6 in brackets,
/// `[::1]:6379`) and a port from 1 to 65535.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Addr {
    host: String,
    port: u16,
}

impl Addr {
    /// Parses `host:port`; the error names `field`.
    pub fn parse(field: &str, text: &str) -> Result<Self, ConfigError> {
        let invalid = |reason: &str| ConfigError::new(field, format!("{text:?} {reason}"));
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| invalid("is not `host:port`"))?;
        let host = match host.strip_prefix('[') {
            Some(bracketed) => bracketed
                .strip_suffix(']')
                .ok_or_else(|| invalid("has an unclosed `[`"))?,
            None => host,
        };
        if host.is_empty() {
            return Err(invalid("has no host"));
        }
        match port.parse::<u16>() {
            Ok(0) | Err(_) => Err(invalid("has no valid port")),
            Ok(port) => Ok(Self {
                host: host.to_owned(),
                port,
            }),
        }
    }

    /// The host name or IP address, without brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl FromStr for Addr {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, ConfigError> {
        Self::parse("addr", text)
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The prefix of every session key: not empty, ending with `':'`. Keys are
/// `{key_prefix}{session_id}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    /// Checks a prefix; the error names `field`.
    pub fn parse(field: &str, prefix: &str) -> Result<Self, ConfigError> {
        if prefix.is_empty() {
            return Err(ConfigError::new(field, "is required"));
        }
        if !prefix.ends_with(':') {
            return Err(ConfigError::new(field, "must end with ':'"));
        }
        Ok(Self(prefix.to_owned()))
    }

    /// The prefix.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Credentials for Redis servers or sentinels: an ACL user (the `default`
/// user when `None`, the `requirepass` style) and its password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Auth {
    /// The ACL user name.
    pub username: Option<String>,
    /// The password.
    pub password: Secret,
}

impl Auth {
    /// A password for the `default` user.
    pub fn password(password: impl Into<Secret>) -> Self {
        Self {
            username: None,
            password: password.into(),
        }
    }

    /// An ACL user and its password.
    pub fn user(username: impl Into<String>, password: impl Into<Secret>) -> Self {
        Self {
            username: Some(username.into()),
            password: password.into(),
        }
    }
}

/// PEM text, already read. Its `Debug` output is its length only: it may be
/// a private key.
#[derive(Clone, PartialEq, Eq)]
pub struct Pem(Vec<u8>);

impl Pem {
    /// PEM text given inline.
    pub fn new(text: impl Into<Vec<u8>>) -> Self {
        Self(text.into())
    }

    /// Reads a PEM file (a regular file of at most 1 MiB); the error names
    /// `field` and the path.
    pub fn read(field: &str, path: &Path) -> Result<Self, ConfigError> {
        read_file(Some(field), path, FILE_LIMIT).map(Self)
    }

    /// The PEM bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pem({} bytes)", self.0.len())
    }
}

/// The certificate and private key a client presents for mutual TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The certificate chain, leaf first.
    pub cert_chain: Pem,
    /// The private key of the leaf certificate.
    pub key: Pem,
}

/// Which certificate authorities to trust.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Roots {
    /// The operating system's certificate store.
    #[default]
    System,
    /// These CA certificates only.
    Pem(Pem),
}

/// TLS for connections to Redis servers or to sentinels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsConfig {
    /// The certificate authorities that sign the servers' certificates.
    pub roots: Roots,
    /// The client certificate, for mutual TLS.
    pub identity: Option<ClientIdentity>,
    /// The name to verify the servers' certificates against, when it differs
    /// from the host in the address.
    pub server_name: Option<String>,
    /// Skips verification of the servers' certificates. For tests only: it
    /// makes TLS open to interception, and the storage logs a warning.
    pub insecure_skip_verify: bool,
}

impl TlsConfig {
    /// TLS that verifies servers against the system's certificate store.
    pub fn system() -> Self {
        Self::default()
    }

    /// TLS that verifies servers against `ca`.
    pub fn with_ca(ca: Pem) -> Self {
        Self {
            roots: Roots::Pem(ca),
            ..Self::default()
        }
    }

    /// Adds a client certificate, for mutual TLS.
    pub fn with_identity(mut self, identity: ClientIdentity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Verifies the servers' certificates against `name`.
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }
}

/// The sentinels to ask, and which master to follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentinelConfig {
    master_name: String,
    addrs: Vec<Addr>,
    auth: Option<Auth>,
    tls: Option<TlsConfig>,
}

impl SentinelConfig {
    /// Sentinels at `addrs` (each `host:port`, at least one) monitoring the
    /// master `master_name`.
    pub fn new(
        master_name: impl Into<String>,
        addrs: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Result<Self, ConfigError> {
        Self::parse("redis.sentinel", master_name.into(), addrs)
    }

    pub(crate) fn parse(
        table: &str,
        master_name: String,
        addrs: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Result<Self, ConfigError> {
        if master_name.is_empty() {
            return Err(ConfigError::new(
                format!("{table}.master_name"),
                "is required",
            ));
        }
        let field = format!("{table}.addrs");
        let addrs = addrs
            .into_iter()
            .map(|addr| Addr::parse(&field, addr.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if addrs.is_empty() {
            return Err(ConfigError::new(
                field,
                "needs at least one sentinel address",
            ));
        }
        Ok(Self {
            master_name,
            addrs,
            auth: None,
            tls: None,
        })
    }

    /// Credentials for the sentinels.
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// TLS for the connections to the sentinels, when it differs from the
    /// data nodes' (its CA certificates are trusted beside theirs).
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The name the sentinels monitor the master under.
    pub fn master_name(&self) -> &str {
        &self.master_name
    }

    /// The sentinels.
    pub fn addrs(&self) -> &[Addr] {
        &self.addrs
    }

    /// Credentials for the sentinels.
    pub fn auth(&self) -> Option<&Auth> {
        self.auth.as_ref()
    }

    /// TLS for the sentinels.
    pub fn tls(&self) -> Option<&TlsConfig> {
        self.tls.as_ref()
    }
}

/// Where the sessions are: one server, a cluster, or a master found through
/// sentinels.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisTopology {
    /// One server, and the database index to use on it.
    Standalone {
        /// The server.
        addr: Addr,
        /// The database index.
        db: u8,
    },
    /// A Redis Cluster, discovered from one of its nodes. A cluster has only
    /// database 0.
    Cluster {
        /// The node the client discovers the cluster from.
        seed: Addr,
    },
    /// A master found and followed through sentinels.
    Sentinel {
        /// The sentinels and the master's name.
        sentinel: SentinelConfig,
        /// The database index.
        db: u8,
    },
}

impl RedisTopology {
    /// The core's name for this topology.
    pub fn kind(&self) -> session_core::Topology {
        match self {
            Self::Standalone { .. } => session_core::Topology::Standalone,
            Self::Cluster { .. } => session_core::Topology::Cluster,
            Self::Sentinel { .. } => session_core::Topology::Sentinel,
        }
    }
}

/// When the storage connects.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ConnectMode {
    /// Connect and `PING` while building the storage; fail fast (within the
    /// connect timeout) with a typed error if Redis cannot be reached.
    #[default]
    Eager,
    /// Build the storage without waiting for Redis: the client connects in
    /// the background and keeps retrying under the reconnect policy, and
    /// operations fail with typed errors (within the command timeout) until
    /// it succeeds. A service can then start before Redis does.
    Lazy,
}

/// How the client reconnects after losing its connection: exponential
/// backoff from `min_delay`, doubling up to `max_delay`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReconnectPolicy {
    max_attempts: u32,
    min_delay: Duration,
    max_delay: Duration,
}

impl ReconnectPolicy {
    /// A policy of at most `max_attempts` attempts (0: forever) with delays
    /// from `min_delay` to `max_delay`.
    pub fn new(
        max_attempts: u32,
        min_delay: Duration,
        max_delay: Duration,
    ) -> Result<Self, ConfigError> {
        if min_delay > max_delay {
            return Err(ConfigError::new(
                "redis.reconnect.min_delay",
                "must not exceed `max_delay`",
            ));
        }
        Ok(Self {
            max_attempts,
            min_delay,
            max_delay,
        })
    }

    /// Attempts before giving up; 0 retries forever.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The first delay.
    pub fn min_delay(&self) -> Duration {
        self.min_delay
    }

    /// The largest delay.
    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }
}

impl Default for ReconnectPolicy {
    /// Forever, from 50 ms to 2 s: what a long-running service wants.
    fn default() -> Self {
        Self {
            max_attempts: 0,
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
        }
    }
}

/// How big the local cache may grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheCapacity {
    /// At most this many sessions.
    Entries(std::num::NonZeroU64),
    /// At most this many bytes of cached sessions, counted as their stored
    /// size plus a fixed overhead per entry.
    Bytes(std::num::NonZeroU64),
}

/// How the server tells the cache that a key changed (`CLIENT TRACKING`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackingMode {
    /// The server remembers which keys this client read and invalidates
    /// exactly those (with `NOLOOP`: not for this client's own writes). It
    /// costs the server memory per tracked key (`tracking-table-max-keys`)
    /// and works on every topology. The default.
    #[default]
    Tracking,
    /// The server sends every change under the key prefix to every client
    /// (`BCAST PREFIX`, with `NOLOOP`): no server memory, more messages.
    /// Not on a cluster.
    Broadcast,
}

/// The default number of cached sessions.
pub const DEFAULT_CACHE_ENTRIES: u64 = 10_000;
/// The default bound on how old a cached copy may be.
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_secs(1);

/// How the Redis storage samples the number of live sessions for the
/// `session_live_sessions` gauge (`[redis.live_count]`): a `SCAN` of the
/// session keys every `interval`, stopped after `max_keys` keys. `SCAN`
/// reads key names only: it touches no TTL and no value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveCount {
    interval: Duration,
    max_keys: std::num::NonZeroU64,
}

impl LiveCount {
    /// The default interval between two counts.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
    /// The default bound on the keys one count reads.
    pub const DEFAULT_MAX_KEYS: u64 = 1_000_000;

    /// A count every `interval` (more than zero) of at most `max_keys`
    /// keys (more than zero).
    pub fn new(interval: Duration, max_keys: u64) -> Result<Self, ConfigError> {
        if interval.is_zero() {
            return Err(ConfigError::new(
                "redis.live_count.interval",
                "must be more than zero (to turn the count off, remove the [redis.live_count] table)",
            ));
        }
        let max_keys = std::num::NonZeroU64::new(max_keys).ok_or_else(|| {
            ConfigError::new("redis.live_count.max_keys", "must be more than zero")
        })?;
        Ok(Self { interval, max_keys })
    }

    /// How often the sessions are counted.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The most keys one count reads; past it, the gauge holds how many it
    /// found so far (a lower bound) and `session_live_sessions_capped` is 1.
    pub fn max_keys(&self) -> u64 {
        self.max_keys.get()
    }
}

/// The local cache of a Redis storage: its bound, how old a copy may get
/// before it is read again, and how invalidations arrive.
///
/// A copy is served only while the session's refresh window holds and for
/// at most `max_staleness` after it was read; a change by any client
/// reaches the cache as an invalidation, usually well within that bound.
/// The bound covers what invalidations cannot: a `FLUSHALL`, a connection
/// that died without a word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    capacity: CacheCapacity,
    max_staleness: Duration,
    mode: TrackingMode,
}

impl CacheConfig {
    /// A cache bounded by `capacity`, serving copies at most
    /// `max_staleness` old; zero is refused.
    pub fn new(capacity: CacheCapacity, max_staleness: Duration) -> Result<Self, ConfigError> {
        if max_staleness.is_zero() {
            return Err(ConfigError::new(
                "redis.cache.max_staleness",
                "must be more than zero (to read every session from Redis, leave the cache off)",
            ));
        }
        Ok(Self {
            capacity,
            max_staleness,
            mode: TrackingMode::default(),
        })
    }

    /// The same cache with invalidations in `mode`.
    pub fn with_mode(mut self, mode: TrackingMode) -> Self {
        self.mode = mode;
        self
    }

    /// How big the cache may grow.
    pub fn capacity(&self) -> CacheCapacity {
        self.capacity
    }

    /// How old a served copy may be at most.
    pub fn max_staleness(&self) -> Duration {
        self.max_staleness
    }

    /// How invalidations arrive.
    pub fn mode(&self) -> TrackingMode {
        self.mode
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            capacity: CacheCapacity::Entries(
                std::num::NonZeroU64::new(DEFAULT_CACHE_ENTRIES)
                    .unwrap_or(std::num::NonZeroU64::MIN),
            ),
            max_staleness: DEFAULT_MAX_STALENESS,
            mode: TrackingMode::default(),
        }
    }
}

/// Which key names a session may have while ids are hashed (see
/// [`HashedIds`]); the order of a migration from plain keys is
/// `PlainFirst`, `HashedFirst`, `Hashed`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HashPhase {
    /// New sessions under the plain key; sessions looked up under both
    /// names: the first step, so that every replica finds hashed sessions
    /// before any replica creates one.
    PlainFirst,
    /// New sessions under the hashed key; sessions looked up under both
    /// names, until the last plain session has expired.
    HashedFirst,
    /// Hashed keys only: the default, and the end of a migration.
    #[default]
    Hashed,
}

/// Session keys named by a keyed hash of the session id: the hash key (at
/// least 32 bytes; `Debug` shows none of it) and the [`HashPhase`].
#[derive(Clone, PartialEq, Eq)]
pub struct HashedIds {
    key: Zeroizing<Vec<u8>>,
    phase: HashPhase,
}

impl HashedIds {
    /// The least length of a hash key in bytes.
    pub const MIN_KEY_LEN: usize = 32;

    /// Hashed ids under `key` (at least [`Self::MIN_KEY_LEN`] bytes), in
    /// `phase`.
    pub fn new(key: Vec<u8>, phase: HashPhase) -> Result<Self, ConfigError> {
        let key = Zeroizing::new(key);
        if key.len() < Self::MIN_KEY_LEN {
            return Err(ConfigError::new(
                "redis.hashed_ids",
                format!(
                    "the hash key must be at least {} bytes; this one is {} bytes",
                    Self::MIN_KEY_LEN,
                    key.len()
                ),
            ));
        }
        Ok(Self { key, phase })
    }

    /// The hash key. Call this only where the hash is computed.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The phase.
    pub fn phase(&self) -> HashPhase {
        self.phase
    }
}

impl fmt::Debug for HashedIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashedIds")
            .field("key", &"[REDACTED]")
            .field("phase", &self.phase)
            .finish()
    }
}

/// The default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default command timeout.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

/// How to reach Redis and where to keep sessions there; see the
/// [module documentation](self).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisConfig {
    topology: RedisTopology,
    auth: Option<Auth>,
    key_prefix: KeyPrefix,
    connect_timeout: Duration,
    command_timeout: Duration,
    tls: Option<TlsConfig>,
    connect: ConnectMode,
    reconnect: ReconnectPolicy,
    codec: Codec,
    stored_format: FormatVersion,
    refresh_window: Option<Duration>,
    cache: Option<CacheConfig>,
    encryption: Option<Arc<Keyring>>,
    hashed_ids: Option<HashedIds>,
    live_count: Option<LiveCount>,
}

impl RedisConfig {
    /// Settings for `topology` with every default.
    pub fn new(topology: RedisTopology, key_prefix: KeyPrefix) -> Self {
        Self {
            topology,
            auth: None,
            key_prefix,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            tls: None,
            connect: ConnectMode::default(),
            reconnect: ReconnectPolicy::default(),
            codec: Codec::default(),
            stored_format: FormatVersion::default(),
            refresh_window: None,
            cache: None,
            encryption: None,
            hashed_ids: None,
            live_count: None,
        }
    }

    /// A standalone server at `addr` (`host:port`), database 0.
    pub fn standalone(addr: &str, key_prefix: &str) -> Result<Self, ConfigError> {
        let addr = Addr::parse("redis.addr", addr)?;
        let key_prefix = KeyPrefix::parse("redis.key_prefix", key_prefix)?;
        Ok(Self::new(
            RedisTopology::Standalone { addr, db: 0 },
            key_prefix,
        ))
    }

    /// A cluster, discovered from the node at `seed` (`host:port`).
    pub fn cluster(seed: &str, key_prefix: &str) -> Result<Self, ConfigError> {
        let seed = Addr::parse("redis.addr", seed)?;
        let key_prefix = KeyPrefix::parse("redis.key_prefix", key_prefix)?;
        Ok(Self::new(RedisTopology::Cluster { seed }, key_prefix))
    }

    /// A master found through `sentinel`, database 0.
    pub fn sentinel(sentinel: SentinelConfig, key_prefix: &str) -> Result<Self, ConfigError> {
        let key_prefix = KeyPrefix::parse("redis.key_prefix", key_prefix)?;
        Ok(Self::new(
            RedisTopology::Sentinel { sentinel, db: 0 },
            key_prefix,
        ))
    }

    /// Credentials for the data nodes.
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// The database index; a cluster has only database 0.
    pub fn with_db(mut self, index: u8) -> Result<Self, ConfigError> {
        match &mut self.topology {
            RedisTopology::Standalone { db, .. } | RedisTopology::Sentinel { db, .. } => {
                *db = index;
            }
            RedisTopology::Cluster { .. } if index != 0 => {
                return Err(ConfigError::new("redis.db", "must be 0 on a cluster"));
            }
            RedisTopology::Cluster { .. } => {}
        }
        Ok(self)
    }

    /// TLS for the data nodes (and, unless the sentinel settings have their
    /// own, for the sentinels).
    pub fn with_tls(mut self, tls: TlsConfig) -> Result<Self, ConfigError> {
        self.tls = Some(tls);
        self.check_sentinel_tls()?;
        Ok(self)
    }

    /// How long to wait for a connection and for any one command; both must
    /// be greater than zero (a zero command timeout would mean "wait
    /// forever").
    pub fn with_timeouts(
        mut self,
        connect: Duration,
        command: Duration,
    ) -> Result<Self, ConfigError> {
        if connect.is_zero() {
            return Err(ConfigError::new(
                "redis.connect_timeout",
                "must be greater than zero",
            ));
        }
        if command.is_zero() {
            return Err(ConfigError::new(
                "redis.command_timeout",
                "must be greater than zero",
            ));
        }
        self.connect_timeout = connect;
        self.command_timeout = command;
        Ok(self)
    }

    /// Eager (the default) or lazy connect.
    pub fn with_connect(mut self, mode: ConnectMode) -> Self {
        self.connect = mode;
        self
    }

    /// The reconnection backoff.
    pub fn with_reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// The stored format written: format 2 by default, format 1 while a
    /// rolling deploy from a release that reads only format 1 is under way
    /// (docs/stored-format.md). Both formats are always read. Format 1
    /// cannot hold an owner: writing an owned session is then refused.
    pub fn with_stored_format(mut self, format: FormatVersion) -> Self {
        self.stored_format = format;
        self
    }

    /// The codec of values written (values in either codec are always read).
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// How stale a session's TTL refresh may be: a read refreshes the key's
    /// TTL unless this client set it less than `window` ago. `None` (the
    /// default) is 1/64 of the TTL; zero refreshes on every read.
    pub fn with_refresh_window(mut self, window: Option<Duration>) -> Self {
        self.refresh_window = window;
        self
    }

    /// Keeps a local copy of hot sessions, invalidated by the server
    /// (RESP3 client tracking); `None`, the default, reads every session
    /// from Redis. See [`CacheConfig`].
    ///
    /// Broadcast tracking is refused on a cluster: it must be enabled on
    /// every node's connection, and the client enables it on one.
    pub fn with_cache(mut self, cache: Option<CacheConfig>) -> Result<Self, ConfigError> {
        if let Some(cache) = &cache
            && cache.mode() == TrackingMode::Broadcast
            && matches!(self.topology, RedisTopology::Cluster { .. })
        {
            return Err(ConfigError::new(
                "redis.cache.mode",
                "\"broadcast\" is not supported on a cluster (it would be enabled on one node only); \
                 use \"tracking\"",
            ));
        }
        self.cache = cache;
        Ok(self)
    }

    /// Encrypts stored values with `keyring` (`session_core::seal`): new
    /// values are sealed with its write key, and values sealed with any of
    /// its keys are read. `None`, the default, stores plaintext (and reads
    /// a sealed value as [`session_core::CodecError::Sealed`]).
    ///
    /// Refused with stored format 1, which has no room for the envelope.
    pub fn with_encryption(mut self, keyring: Option<Keyring>) -> Result<Self, ConfigError> {
        if keyring
            .as_ref()
            .is_some_and(|ring| ring.write_key().is_some())
            && self.stored_format == FormatVersion::V1
        {
            return Err(ConfigError::new(
                "redis.encryption",
                "stored format 1 cannot be encrypted: write format 2, or set `seal_writes = false` \
                 until the rolling deploy is over",
            ));
        }
        self.encryption = keyring.map(Arc::new);
        Ok(self)
    }

    /// The keys of encryption at rest, if it is on.
    pub fn encryption(&self) -> Option<&Arc<Keyring>> {
        self.encryption.as_ref()
    }

    /// Names session keys by a keyed hash of the id instead of the id
    /// (`session_redis`'s `keys` module): a dump of Redis then lists no
    /// session id. `None`, the default, names keys `{key_prefix}{id}`.
    pub fn with_hashed_ids(mut self, hashed: Option<HashedIds>) -> Self {
        self.hashed_ids = hashed;
        self
    }

    /// The settings of hashed ids, if they are on.
    pub fn hashed_ids(&self) -> Option<&HashedIds> {
        self.hashed_ids.as_ref()
    }

    /// Samples the number of live sessions every so often for the
    /// `session_live_sessions` gauge, with a bounded `SCAN` ([`LiveCount`]);
    /// `None`, the default, never counts (a count reads every key name).
    pub fn with_live_count(mut self, live_count: Option<LiveCount>) -> Self {
        self.live_count = live_count;
        self
    }

    /// The settings of the live-session count, if it is on.
    pub fn live_count(&self) -> Option<LiveCount> {
        self.live_count
    }

    /// The local cache's settings, if it is on.
    pub fn cache(&self) -> Option<&CacheConfig> {
        self.cache.as_ref()
    }

    /// Where the sessions are.
    pub fn topology(&self) -> &RedisTopology {
        &self.topology
    }

    /// Credentials for the data nodes.
    pub fn auth(&self) -> Option<&Auth> {
        self.auth.as_ref()
    }

    /// The key prefix.
    pub fn key_prefix(&self) -> &str {
        self.key_prefix.as_str()
    }

    /// How long to wait for a connection.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// How long to wait for any one command.
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// TLS for the data nodes.
    pub fn tls(&self) -> Option<&TlsConfig> {
        self.tls.as_ref()
    }

    /// Eager or lazy connect.
    pub fn connect_mode(&self) -> ConnectMode {
        self.connect
    }

    /// The reconnection backoff.
    pub fn reconnect(&self) -> &ReconnectPolicy {
        &self.reconnect
    }

    /// The codec of values written.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The stored format written (both are always read).
    pub fn stored_format(&self) -> FormatVersion {
        self.stored_format
    }

    /// The refresh window; `None` is 1/64 of the TTL.
    pub fn refresh_window(&self) -> Option<Duration> {
        self.refresh_window
    }

    /// The sentinel settings, in sentinel mode.
    pub fn sentinel_config(&self) -> Option<&SentinelConfig> {
        match &self.topology {
            RedisTopology::Sentinel { sentinel, .. } => Some(sentinel),
            _ => None,
        }
    }

    /// Every secret in these settings, for removing from error messages.
    pub fn secrets(&self) -> Vec<&str> {
        let sentinel = self.sentinel_config().and_then(SentinelConfig::auth);
        [self.auth.as_ref(), sentinel]
            .into_iter()
            .flatten()
            .map(|auth| auth.password.expose())
            .filter(|password| !password.is_empty())
            .collect()
    }

    /// The client opens sentinel and data connections with one TLS setup, so
    /// sentinel TLS needs data TLS, and the two may not present different
    /// client certificates. Those cannot be expressed; they are errors, not
    /// silent downgrades. The constructors and the file conversion call it;
    /// a storage calls it too for settings assembled with
    /// [`RedisConfig::new`], which cannot check what the sentinel settings
    /// carry.
    pub fn check_sentinel_tls(&self) -> Result<(), ConfigError> {
        let Some(sentinel_tls) = self.sentinel_config().and_then(SentinelConfig::tls) else {
            return Ok(());
        };
        let Some(data_tls) = &self.tls else {
            return Err(ConfigError::new(
                "redis.sentinel.tls",
                "sentinel TLS without data-node TLS is not supported: the client uses one \
                 transport for both; set `redis.tls` too",
            ));
        };
        match (&data_tls.identity, &sentinel_tls.identity) {
            (Some(data), Some(sentinel)) if data != sentinel => Err(ConfigError::new(
                "redis.sentinel.tls.client_cert",
                "the client presents one certificate to sentinels and data nodes; give the same \
                 one or only one",
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(error: ConfigError) -> String {
        error.field().unwrap_or("<whole>").to_owned()
    }

    #[test]
    fn addresses_parse_hosts_ipv6_and_ports() {
        let addr = Addr::parse("f", "127.0.0.1:6379").unwrap();
        assert_eq!((addr.host(), addr.port()), ("127.0.0.1", 6379));
        let v6 = Addr::parse("f", "[::1]:7000").unwrap();
        assert_eq!((v6.host(), v6.port()), ("::1", 7000));
        assert_eq!(v6.to_string(), "[::1]:7000");
        assert_eq!(addr.to_string(), "127.0.0.1:6379");
        for bad in ["localhost", ":6379", "h:0", "h:99999", "h:x", "[::1:6379"] {
            let error = Addr::parse("redis.addr", bad).unwrap_err();
            assert_eq!(field(error), "redis.addr", "{bad}");
        }
    }

    #[test]
    fn invalid_settings_name_their_field() {
        let base = RedisConfig::standalone("127.0.0.1:6379", "s:").unwrap();
        let cases: Vec<(Result<RedisConfig, ConfigError>, &str)> = vec![
            (
                RedisConfig::standalone("127.0.0.1:6379", ""),
                "redis.key_prefix",
            ),
            (
                RedisConfig::standalone("127.0.0.1:6379", "sessions"),
                "redis.key_prefix",
            ),
            (RedisConfig::standalone("localhost", "s:"), "redis.addr"),
            (
                RedisConfig::cluster("127.0.0.1:7000", "s:").and_then(|c| c.with_db(3)),
                "redis.db",
            ),
            (
                base.clone()
                    .with_timeouts(Duration::ZERO, Duration::from_secs(1)),
                "redis.connect_timeout",
            ),
            (
                base.clone()
                    .with_timeouts(Duration::from_secs(1), Duration::ZERO),
                "redis.command_timeout",
            ),
            (
                SentinelConfig::new("", ["127.0.0.1:1"])
                    .and_then(|s| RedisConfig::sentinel(s, "s:")),
                "redis.sentinel.master_name",
            ),
            (
                SentinelConfig::new("m", Vec::<String>::new())
                    .and_then(|s| RedisConfig::sentinel(s, "s:")),
                "redis.sentinel.addrs",
            ),
        ];
        for (result, expected) in cases {
            assert_eq!(field(result.unwrap_err()), expected);
        }
        assert_eq!(
            field(
                ReconnectPolicy::new(0, Duration::from_secs(2), Duration::from_secs(1))
                    .unwrap_err()
            ),
            "redis.reconnect.min_delay"
        );
        assert_eq!(
            base.clone().with_db(2).unwrap().topology(),
            &RedisTopology::Standalone {
                addr: Addr::parse("f", "127.0.0.1:6379").unwrap(),
                db: 2
            }
        );
    }

    #[test]
    fn sentinel_tls_rules() {
        let sentinel = SentinelConfig::new("m", ["127.0.0.1:26379"])
            .unwrap()
            .with_tls(TlsConfig::with_ca(Pem::new("ca")));
        let config = RedisConfig::sentinel(sentinel, "s:").unwrap();
        assert_eq!(
            field(config.check_sentinel_tls().unwrap_err()),
            "redis.sentinel.tls"
        );
        let identity = |name: &str| ClientIdentity {
            cert_chain: Pem::new(name),
            key: Pem::new("key"),
        };
        let sentinel = SentinelConfig::new("m", ["127.0.0.1:26379"])
            .unwrap()
            .with_tls(TlsConfig::system().with_identity(identity("a")));
        let error = RedisConfig::sentinel(sentinel, "s:")
            .unwrap()
            .with_tls(TlsConfig::system().with_identity(identity("b")))
            .unwrap_err();
        assert_eq!(field(error), "redis.sentinel.tls.client_cert");
    }

    #[test]
    fn debug_shows_no_secret() {
        let config = RedisConfig::standalone("127.0.0.1:6379", "s:")
            .unwrap()
            .with_auth(Auth::user("app", "hunter2"))
            .with_tls(TlsConfig::system().with_identity(ClientIdentity {
                cert_chain: Pem::new("-----BEGIN CERTIFICATE-----"),
                key: Pem::new("-----BEGIN PRIVATE KEY-----\nMIIsecret"),
            }))
            .unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains("MIIsecret"), "{debug}");
        assert!(debug.contains("[REDACTED]"), "{debug}");
        assert_eq!(config.secrets(), vec!["hunter2"]);
    }
}
