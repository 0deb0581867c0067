//! Redis session storage on [fred]: standalone, TLS and mutual TLS,
//! ACL authentication, cluster and sentinel.
//!
//! # Layout
//!
//! - [`RedisStorage`] implements `session_core::Storage` with one Redis
//!   command per operation, each atomic on the server:
//!
//!   | operation        | command                     |
//!   |------------------|-----------------------------|
//!   | `create`         | `SET key value NX PX ttl`   |
//!   | `update`         | `SET key value XX PX ttl`   |
//!   | `upsert`         | `SET key value PX ttl`      |
//!   | `get`            | `GET key` while this client knows enough life is left, else the load script |
//!   | `expire`         | `PEXPIRE key ttl LT` (and `EXISTS key` when it set nothing) |
//!   | `delete`         | `DEL key`                   |
//!   | `delete_expired` | nothing: Redis expires keys |
//!   | `count`          | `SCAN MATCH prefix*` on every node (every master of a cluster): O(keyspace) |
//!   | `ping`           | `PING`                      |
//!   | `close`          | `QUIT`                      |
//!
//!   A read must slide the session's TTL, but a TTL change is a write for
//!   Redis: it costs more than a `GET`, and it invalidates every other
//!   client's cached copy of the key. So a read promises the session at
//!   least `ttl - refresh_window` more life instead of exactly `ttl`
//!   (`RedisConfig::refresh_window`, default 1/64 of the TTL: 98.4%). Each
//!   client remembers until when it knows that much is left (after its own
//!   write, or a read through the load script) and reads with a plain `GET`
//!   until then. Otherwise the load script (in `scripts`) reads the key's
//!   remaining life and sets the TTL only if less than `ttl - refresh_window`
//!   is left. A busy session is therefore refreshed about once per window
//!   for the whole fleet of replicas, not once per replica.
//!
//!   Keys are `{key_prefix}{session_id}`, or with hashed ids
//!   (`[redis.hashed_ids]`) `{key_prefix}{hash}` (the `keys` module); values
//!   are in the versioned format of `session_core::codec`, sealed with
//!   `[redis.encryption]` (`session_core::seal`). The TTL each call passes is the key's TTL.
//! - `connect` turns a resolved `session_config::RedisConfig` into fred
//!   clients: topology, ACL, one TLS setup for the data client and the
//!   sentinel watchers, and one function that sets every client's timeouts.
//! - `errors` maps fred's errors into the core's kinds, with secrets removed
//!   from messages.
//! - `sentinel_watch`, in sentinel mode: subscribers on the sentinels that
//!   reconnect the client the moment a sentinel announces a new master.
//!
//! # The local cache
//!
//! With `RedisConfig::with_cache` (`[redis.cache]`), the storage keeps
//! copies of the sessions it read or wrote and answers reads from them, in
//! memory, while the refresh window and the staleness bound hold. The
//! server's invalidations (RESP3 `CLIENT TRACKING`) drop a copy as soon as
//! any client changes the key; writes, read-modify-writes and conditional
//! writes always go to Redis, which decides them. The `cache` module says
//! what makes a copy safe to serve and what fred leaves to us;
//! [`RedisStorage::cache_stats`] has its counters.
//!
//! # One client, auto-pipelined
//!
//! A single fred client multiplexes every concurrent command over one
//! connection per node and pipelines them automatically. On the machines this
//! was measured on, that beat a pool of four clients (about 260k against 183k
//! GET/s at 50 concurrent tasks), so there is no pool.
//!
//! # Timeouts
//!
//! The storage owns its deadlines (the manager adds no timer; see
//! `session_core::Storage`). fred's default command timeout is zero, meaning
//! none: a command sent on a dead connection would wait forever. Every
//! operation here ends within `RedisConfig::command_timeout`: its first
//! command under fred's timeout, any follow-up command within what is left
//! of it. Connections that leave a command unanswered that long are
//! replaced.
//!
//! # Connection errors
//!
//! With lazy connect, or while reconnecting, a command waits for a
//! connection and fails with a timeout when none comes. When the last
//! attempt to connect was refused for a reason that will not pass by itself
//! (the server rejected the credentials), the storage reports that refusal
//! instead of the timeout: a service must not answer 503 forever for a bad
//! password.

#![deny(missing_docs)]

mod cache;
mod connect;
mod errors;
pub mod events;
mod keys;
mod owners;
mod scripts;
mod sentinel_watch;

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fred::bytes::Bytes;
use fred::interfaces::{ClientLike, EventInterface, KeysInterface};
use fred::prelude::{Expiration, SetOptions, Value};
use fred::types::{ClientState, ExpireOptions};
use futures_util::{StreamExt, TryStreamExt};
use session_config::{ConnectMode, RedisConfig};
use session_core::codec::{self, Codec, CodecError, FormatVersion};
use session_core::seal::Keyring;
use session_core::{
    BackendErrorKind, Conditional, Description, Error, Operation, Owner, Result, Revision, Session,
    SessionId, Storage, Topology, Ttl,
};
use session_local::map::ExpiringMap;
use tokio::time::Instant;

use crate::errors::ErrorContext;
use crate::scripts::{Refused, Scripts, WriteMode, Written};
use crate::sentinel_watch::SentinelWatch;

pub use cache::CacheStats;
pub use events::{EventLimits, EventLog};
pub use fred;

/// The refresh window of a storage configured without one
/// (`RedisConfig::refresh_window` left at `None`): 1/64 of the TTL. A read
/// leaves the session at least `ttl` minus this to live.
pub fn default_refresh_window(ttl: Ttl) -> Duration {
    ttl.get() / 64
}

/// The gauge that says the last live-session count stopped at its bound
/// (`[redis.live_count] max_keys`): 1 when `session_live_sessions` is a
/// lower bound, 0 when it is the count.
pub const LIVE_CAPPED: &str = "session_live_sessions_capped";

/// The Lua source of the load script (a `GET` that slides the TTL only
/// when it runs low), for benchmarks that send the very commands a load
/// sends through fred alone. Not part of the stable API.
#[doc(hidden)]
pub const LOAD_SCRIPT: &str = scripts::LOAD;

/// Session storage in Redis. Cheap to clone; clones share one client.
#[derive(Clone)]
pub struct RedisStorage {
    inner: Arc<Inner>,
    codec: Codec,
    format: FormatVersion,
    /// The keys of encryption at rest, when it is on.
    keyring: Option<Arc<Keyring>>,
}

struct Inner {
    client: fred::clients::Client,
    /// The key prefix, and how a session's key is named under it.
    names: keys::KeyNames,
    topology: Topology,
    errors: ErrorContext,
    closed: AtomicBool,
    /// `RedisConfig::refresh_window`; `None` means 1/64 of each call's TTL.
    refresh_window: Option<Duration>,
    /// The sessions whose remaining life this client knows to be at least
    /// `ttl - refresh_window` until the instant each entry holds (and
    /// expires at): set by a write, or by a read through the load script.
    /// Their reads use a plain GET. A task of the storage's own frees
    /// passed entries every second.
    refreshed: ExpiringMap<SessionId, Instant>,
    /// The local cache, when configured (see the `cache` module).
    cache: Option<cache::NearCache>,
    /// The last sampled count of live sessions (`[redis.live_count]`), and
    /// whether it stopped at its bound: `None` until the first count ends.
    live: Mutex<Option<(u64, bool)>>,
    /// The last refusal of a connection attempt that will not pass by
    /// itself (bad credentials), cleared when a connection succeeds: see
    /// "Connection errors" in the crate documentation.
    refused: Mutex<Option<Error>>,
    /// In sentinel mode, the subscribers that hear a failover announced.
    sentinel_watch: Option<SentinelWatch>,
    /// The scripts of the comparing writes, digested once.
    scripts: Scripts,
}

impl sentinel_watch::Follower for Inner {
    fn client(&self) -> &fred::clients::Client {
        &self.client
    }

    fn errors(&self) -> &ErrorContext {
        &self.errors
    }

    fn is_open(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A storage dropped without `close` must not leave connections and
        // their tasks behind.
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(watch) = &self.sentinel_watch {
            watch.quit_in_background();
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            let client = self.client.clone();
            let timeout = self.errors.command_timeout;
            tokio::spawn(async move {
                let _ = tokio::time::timeout(timeout, client.quit()).await;
            });
        }
    }
}

impl fmt::Debug for RedisStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No address, user, password or key material: just the shape.
        f.debug_struct("RedisStorage")
            .field("topology", &self.inner.topology)
            .field("key_prefix", &self.inner.names.prefix())
            .field("codec", &self.codec)
            .field("encrypted", &self.keyring.is_some())
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl RedisStorage {
    /// Builds the client for `config` and, with eager connect (the default),
    /// connects and sends `PING`, failing within the connect timeout with a
    /// typed error if Redis cannot be reached (the client is closed again).
    /// With lazy connect it returns at once while the client connects in the
    /// background, retrying under the reconnect policy; commands issued
    /// before it succeeds fail with typed errors within the command timeout.
    ///
    /// `config` is resolved already (see `session-config`): nothing is
    /// checked again here, but rustls may still refuse a certificate.
    pub async fn connect(config: &RedisConfig) -> Result<Self> {
        // One TLS setup for the data client and the sentinel watchers.
        let tls = connect::tls(config)?;
        let sentinel_watch = SentinelWatch::build(config, tls.as_ref())?;
        let client = connect::data_client(config, tls)?;
        let errors = ErrorContext::new(config);
        if config.connect_mode() == ConnectMode::Eager {
            connect_eagerly(&client, config, &errors).await?;
        }
        let mut storage = Self::from_parts(
            client,
            keys::KeyNames::new(config.key_prefix().to_owned(), config.hashed_ids()),
            config.topology().kind(),
            errors,
            config.refresh_window(),
            sentinel_watch,
            config.cache(),
        );
        storage.codec = config.codec();
        storage.format = config.stored_format();
        storage.keyring = config.encryption().cloned();
        if config.connect_mode() == ConnectMode::Lazy {
            // Spawns the connection task, which keeps retrying under the
            // reconnect policy; commands wait for it (up to their timeout).
            drop(storage.inner.client.connect());
        }
        if let (Some(watch), Some(sentinel)) =
            (&storage.inner.sentinel_watch, config.sentinel_config())
        {
            watch.start(
                Arc::downgrade(&storage.inner),
                sentinel.master_name().to_owned(),
            );
        }
        if let Some(live) = config.live_count() {
            spawn_live_count(Arc::downgrade(&storage.inner), live);
        }
        Ok(storage)
    }

    /// Storage on a fred client the application already owns (connected or
    /// not), with keys under `key_prefix` (which must end with `':'`).
    ///
    /// The client must bound every command (fred's `default_command_timeout`
    /// is zero, meaning no bound, unless set): the storage's operations end
    /// within that bound, and the manager adds no timer of its own. It
    /// should allow one attempt per command (`max_command_attempts = 1`):
    /// with more, a command whose reply was lost with its connection is sent
    /// again, and a create that succeeded can come back as "already exists".
    pub fn with_client(client: fred::clients::Client, key_prefix: &str) -> Result<Self> {
        let key_prefix = session_config::KeyPrefix::parse("redis.key_prefix", key_prefix)?;
        let command_timeout = client.perf_config().default_command_timeout;
        if command_timeout.is_zero() {
            return Err(Error::config(
                "redis.command_timeout",
                "the client has no command timeout (fred's default_command_timeout is zero): \
                 set one, so that no operation can wait forever",
            ));
        }
        if client.connection_config().max_command_attempts != 1 {
            tracing::warn!(
                "the Redis client re-sends commands whose reply was lost \
                 (max_command_attempts != 1): a create that succeeded may be reported as \
                 AlreadyExists after a dropped connection"
            );
        }
        let topology = if client.is_clustered() {
            Topology::Cluster
        } else if client.client_config().server.is_sentinel() {
            Topology::Sentinel
        } else {
            Topology::Standalone
        };
        let errors = ErrorContext {
            command_timeout,
            secrets: client.client_config().password.into_iter().collect(),
        };
        Ok(Self::from_parts(
            client,
            keys::KeyNames::new(key_prefix.as_str().to_owned(), None),
            topology,
            errors,
            None,
            None,
            None,
        ))
    }

    fn from_parts(
        client: fred::clients::Client,
        names: keys::KeyNames,
        topology: Topology,
        errors: ErrorContext,
        refresh_window: Option<Duration>,
        sentinel_watch: Option<SentinelWatch>,
        cache: Option<&session_config::CacheConfig>,
    ) -> Self {
        let inner = Arc::new(Inner {
            client,
            names,
            topology,
            errors,
            closed: AtomicBool::new(false),
            refresh_window,
            refreshed: ExpiringMap::new(),
            cache: cache.map(cache::NearCache::new),
            refused: Mutex::new(None),
            live: Mutex::new(None),
            sentinel_watch,
            scripts: Scripts::new(),
        });
        spawn_refresh_sweeper(Arc::downgrade(&inner));
        spawn_refusal_watch(&inner);
        if inner.cache.is_some() {
            spawn_tracking(&inner);
        }
        Self {
            inner,
            codec: Codec::default(),
            format: FormatVersion::default(),
            keyring: None,
        }
    }

    /// Writes new values in stored format `format` (`RedisConfig::stored_format`,
    /// format 2 by default). Both formats are always read; format 1 is for
    /// the length of a rolling deploy from a release that reads only it, and
    /// cannot hold an owner.
    pub fn with_stored_format(mut self, format: FormatVersion) -> Self {
        self.format = format;
        self
    }

    /// Writes new values with `codec` (`RedisConfig::codec`, bincode by
    /// default). Values written by either codec are always readable: the
    /// header names the codec.
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Encrypts the values written with `keyring`'s write key and opens
    /// values sealed with any of its keys (`RedisConfig::with_encryption`,
    /// `[redis.encryption]`); see `session_core::seal`.
    pub fn with_encryption(mut self, keyring: Option<Arc<Keyring>>) -> Self {
        self.keyring = keyring;
        self
    }

    /// The key a new session is stored under: `{key_prefix}{session_id}`,
    /// or `{key_prefix}{hash}` with hashed ids (`[redis.hashed_ids]`; in
    /// the `plain-first` phase of a migration, the plain key).
    pub fn key(&self, id: &SessionId) -> String {
        String::from_utf8_lossy(&self.key_bytes(id)).into_owned()
    }

    /// The key as the bytes fred sends: one allocation, shared by reference
    /// count by every command of an operation.
    fn key_bytes(&self, id: &SessionId) -> Bytes {
        self.inner.names.first(id)
    }

    /// The key prefix.
    pub fn key_prefix(&self) -> &str {
        self.inner.names.prefix()
    }

    /// The fred client, for diagnostics and tests. It is shut down (`QUIT`)
    /// when the storage is closed or its last clone dropped; a clone of the
    /// client kept past that no longer works.
    pub fn client(&self) -> &fred::clients::Client {
        &self.inner.client
    }

    /// How many sessions this client currently treats as refreshed (their
    /// reads send `GET`, not `GETEX`), counting entries whose window passed
    /// but that the once-a-second sweep has not dropped yet. For diagnostics.
    pub fn refresh_tracked(&self) -> usize {
        self.inner.refreshed.len()
    }

    /// The last sampled count of live sessions and whether it stopped at
    /// its bound (`[redis.live_count]`); `None` without the setting, and
    /// until the first count has ended.
    pub fn live_sessions(&self) -> Option<(u64, bool)> {
        *self
            .inner
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// What the local cache did so far; `None` without a cache.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.inner.cache.as_ref().map(cache::NearCache::stats)
    }

    /// Whether the local cache stores copies now: it is configured, and the
    /// server confirmed tracking on the current connections. `false` while
    /// a reconnect is being handled, and for good after the server refused
    /// `CLIENT TRACKING`.
    pub fn cache_armed(&self) -> bool {
        self.inner
            .cache
            .as_ref()
            .is_some_and(cache::NearCache::is_armed)
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Sends a command built by `send`, and in a cluster sends it once more
    /// if the first was refused at a redirection.
    ///
    /// When a slot moves (a failover, a resharding), the node a command
    /// reaches answers `MOVED` or `ASK`, and fred, which allows each command
    /// one attempt here, gives up instead of following. Such a command did
    /// not run, and fred has just refreshed its map of the slots, so sending
    /// it again is safe and nearly always reaches the right node. Without
    /// this, every operation on a moved slot in the first ~100 ms of a
    /// cluster failover failed.
    ///
    /// The second send gets what is left of the command timeout since
    /// `started`, the start of the operation, so that an operation never
    /// takes longer than one command timeout.
    async fn redirected<T, Fut>(
        &self,
        started: Instant,
        send: impl Fn() -> Fut,
    ) -> std::result::Result<T, fred::error::Error>
    where
        Fut: Future<Output = std::result::Result<T, fred::error::Error>>,
    {
        // The first reply is bound to a variable, not matched in place: a
        // temporary in a `match` scrutinee lives until the end of the match,
        // which would keep two command futures (several kilobytes each) in
        // this future's state at once.
        let first = send().await;
        match first {
            Err(error)
                if self.inner.topology == Topology::Cluster
                    && errors::is_redirect_refused(&error) =>
            {
                tracing::debug!("a cluster slot moved under a command; sending it again");
                // Boxed: inline, this rare second command future would double
                // the size of every operation's future.
                Box::pin(self.within(started, send())).await
            }
            other => other,
        }
    }

    /// Runs a command that follows another in one operation within what is
    /// left of the command timeout since `started`. The first command of an
    /// operation needs no such wrapper: fred bounds it by the command
    /// timeout itself, without a second timer.
    async fn within<T>(
        &self,
        started: Instant,
        command: impl Future<Output = std::result::Result<T, fred::error::Error>>,
    ) -> std::result::Result<T, fred::error::Error> {
        let left = self
            .inner
            .errors
            .command_timeout
            .saturating_sub(started.elapsed());
        tokio::time::timeout(left, command)
            .await
            .unwrap_or_else(|_| {
                Err(fred::error::Error::new(
                    fred::error::ErrorKind::Timeout,
                    "the operation ran out of its command timeout",
                ))
            })
    }

    fn map(&self, operation: Operation) -> impl Fn(fred::error::Error) -> Error + '_ {
        move |error| {
            let mapped = self.inner.errors.map(operation, &error);
            self.explain(mapped)
        }
    }

    /// A timeout while the client is not connected, after the server refused
    /// the last attempt to connect, is that refusal: see "Connection errors"
    /// in the crate documentation.
    fn explain(&self, error: Error) -> Error {
        if !matches!(error, Error::Timeout { .. })
            || self.inner.client.state() == ClientState::Connected
        {
            return error;
        }
        let refused = self
            .inner
            .refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        refused.unwrap_or(error)
    }

    /// How long after setting a key's TTL a read may skip refreshing it.
    fn refresh_window(&self, ttl: Ttl) -> Duration {
        self.inner
            .refresh_window
            .unwrap_or_else(|| default_refresh_window(ttl))
    }

    /// Records that this client just set the TTL of session `id` to `ttl`;
    /// returns until when its reads may skip the refresh.
    fn note_refresh(&self, id: SessionId, ttl: Ttl) -> Instant {
        self.note_left(id, self.refresh_window(ttl))
    }

    /// Records that reads of session `id` may skip the refresh for `for_`
    /// from now; returns until when.
    fn note_left(&self, id: SessionId, for_: Duration) -> Instant {
        let until = Instant::now() + for_;
        if !for_.is_zero() {
            self.inner.refreshed.upsert(id, until, for_);
        }
        until
    }

    /// Drops this client's copy of `id` and any fill of it in flight,
    /// around a write of it.
    fn forget(&self, id: &SessionId) {
        if let Some(cache) = &self.inner.cache {
            cache.forget(self.inner.names.slot(id));
        }
    }

    /// A fill's claim on `id`, taken before the command that fills it is
    /// sent: by a read always, by a write only in broadcast mode.
    fn ticket(&self, id: &SessionId, write: bool) -> Option<cache::Ticket> {
        let cache = self.inner.cache.as_ref()?;
        if write && !cache.writes_through() {
            return None;
        }
        cache.ticket(self.inner.names.slot(id))
    }

    /// Stores `session` as this client's copy if `ticket` still holds.
    fn fill(
        &self,
        ticket: Option<cache::Ticket>,
        session: &Arc<Session>,
        until: Instant,
        bytes: usize,
    ) {
        if let (Some(cache), Some(ticket)) = (&self.inner.cache, ticket) {
            cache.fill(ticket, session.clone(), until, bytes);
        }
    }

    /// The stored value of `session` under `key`: encoded in the format
    /// and codec this storage writes, and sealed when it encrypts.
    fn encode(&self, session: &Session, key: &[u8]) -> Result<Vec<u8>> {
        let value = self.codec.encode_session_as(session, self.format)?;
        Ok(match &self.keyring {
            Some(keyring) => keyring.seal(value, key)?,
            None => value,
        })
    }

    /// The stored value of a new session: as [`encode`](Self::encode)
    /// makes it, at [`Revision::FIRST`] (the revision is outside the
    /// envelope, so this holds for sealed values too).
    fn encode_new(&self, session: &Session, key: &[u8]) -> Result<Bytes> {
        let mut value = self.encode(session, key)?;
        if self.format == FormatVersion::V2 {
            value[codec::REVISION_BYTES].copy_from_slice(&Revision::FIRST.to_be_bytes());
        }
        Ok(Bytes::from(value))
    }

    /// Decodes the value stored under session `id`'s `key`, opening it
    /// first when it is sealed.
    fn decode(&self, value: &[u8], key: &[u8], id: &SessionId) -> Result<Session> {
        let session = match &self.keyring {
            Some(keyring) => codec::decode_session_for(&keyring.open(value, key)?, id),
            None => codec::decode_session_for(value, id),
        };
        Ok(session?)
    }

    /// `SET key value NX PX ttl` of `session`, encoded by
    /// [`encode_new`](Self::encode_new); returns whether Redis wrote.
    async fn create_key(&self, session: &Session, ttl: Ttl) -> Result<bool> {
        let value = self.encode_new(session, &self.key_bytes(&session.id()))?;
        self.set_new(session, value, ttl).await
    }

    /// `SET key value NX PX ttl` of `session`'s already encoded `value`;
    /// returns whether Redis wrote.
    async fn set_new(&self, session: &Session, value: Bytes, ttl: Ttl) -> Result<bool> {
        self.check_open()?;
        let started = Instant::now();
        let key = self.key_bytes(&session.id());
        // No copy is kept of a new session: the manager reads it back
        // rarely at once, and in tracking mode only a read tracks the key.
        self.forget(&session.id());
        let client = &self.inner.client;
        let condition = Some(SetOptions::NX);
        let reply: Value = self
            .redirected(started, || {
                client.set(
                    key.clone(),
                    value.clone(),
                    Some(Expiration::PX(millis(ttl))),
                    condition.clone(),
                    false,
                )
            })
            .await
            .map_err(self.map(Operation::Create))?;
        // `SET` answers OK when it wrote and nil when NX prevented it.
        let written = !reply.is_null();
        if written {
            self.note_refresh(session.id(), ttl);
        }
        Ok(written)
    }

    /// A write of `session` in `mode` under its first key name and, during
    /// a migration of key names (see `keys`), under its second when the
    /// first holds nothing: a session lives under one of them, the one it
    /// was created under. An upsert in a migration first updates under the
    /// second name, so that it never creates a second copy.
    async fn write(
        &self,
        operation: Operation,
        session: Arc<Session>,
        ttl: Ttl,
        mode: WriteMode,
    ) -> Result<(Written, Option<Arc<Session>>)> {
        if !self.inner.names.migrating() {
            let key = self.key_bytes(&session.id());
            return self.write_under(operation, session, key, ttl, mode).await;
        }
        Box::pin(async move {
            let id = session.id();
            let second = self.inner.names.second(&id);
            if mode == WriteMode::Upsert
                && let Some(second) = second.clone()
            {
                let moved = self
                    .write_under(operation, session.clone(), second, ttl, WriteMode::Update)
                    .await?;
                if moved.0 != Written::Absent {
                    return Ok(moved);
                }
            }
            let first = self
                .write_under(operation, session.clone(), self.key_bytes(&id), ttl, mode)
                .await?;
            match second {
                Some(second) if first.0 == Written::Absent => {
                    self.write_under(operation, session, second, ttl, mode)
                        .await
                }
                _ => Ok(first),
            }
        })
        .await
    }

    /// One run of the write script under `key`: update, upsert or
    /// conditional update. Returns the session as stored when it wrote.
    async fn write_under(
        &self,
        operation: Operation,
        mut session: Arc<Session>,
        key: Bytes,
        ttl: Ttl,
        mode: WriteMode,
    ) -> Result<(Written, Option<Arc<Session>>)> {
        self.check_open()?;
        let started = Instant::now();
        let id = session.id();
        let value = Bytes::from(self.encode(&session, &key)?);
        let client = &self.inner.client;
        // No read may keep a copy from before this write: its fills in
        // flight are dropped, and in broadcast mode the written session
        // becomes the copy (the server does not tell this client of its own
        // writes, `NOLOOP`).
        self.forget(&id);
        let ticket = self.ticket(&id, true);
        let [mode_arg, expected] = mode.args();
        let args = vec![
            Value::Bytes(value.clone()),
            Value::from(millis(ttl)),
            mode_arg,
            expected,
        ];
        let script = &self.inner.scripts.write;
        let reply: std::result::Result<Value, _> = self
            .redirected(started, || script.run(client, key.clone(), args.clone()))
            .await;
        if ticket.is_none() {
            // Tracking mode: the server no longer tracks this key for this
            // client, so no copy may stay (a read tracks it again).
            self.forget(&id);
        }
        let reply = reply.map_err(|error| {
            self.forget(&id);
            self.script_error(operation, &session, &error)
        })?;
        let written = scripts::written(reply).ok_or_else(|| {
            Error::backend(
                BackendErrorKind::Protocol,
                format!("{operation}: the write script answered something unexpected"),
            )
        })?;
        let Written::Stored(revision) = written else {
            if written == Written::Absent {
                self.inner.refreshed.remove(&id);
            }
            // A conflict says this client's copy, if it read one, was old.
            self.forget(&id);
            return Ok((written, None));
        };
        let until = self.note_refresh(id, ttl);
        // A value in format 1 has no revision number: its revision is
        // derived from its bytes, as when it is read back.
        let revision = revision.unwrap_or_else(|| codec::legacy_revision(&value));
        // The manager hands over the only reference, so this edits in place.
        Arc::make_mut(&mut session).set_revision(revision);
        self.fill(ticket, &session, until, value.len());
        Ok((Written::Stored(Some(revision)), Some(session)))
    }

    /// `PEXPIRE key ttl LT` (and `EXISTS key` when it set nothing): whether
    /// a live session is under `key`.
    async fn expire_under(&self, key: Bytes, ttl: Ttl) -> Result<bool> {
        let started = Instant::now();
        let client = &self.inner.client;
        // `LT` sets the new TTL only if it is shorter than the current one,
        // so this never lengthens a session's life.
        let set: i64 = self
            .redirected(started, || {
                client.pexpire(key.clone(), millis(ttl), Some(ExpireOptions::LT))
            })
            .await
            .map_err(self.map(Operation::Expire))?;
        if set == 1 {
            return Ok(true);
        }
        // Nothing set: the key is gone, or its TTL was shorter already.
        // Boxed: a rare path that would otherwise enlarge every call's future.
        let exists: i64 =
            Box::pin(self.redirected(started, || self.within(started, client.exists(key.clone()))))
                .await
                .map_err(self.map(Operation::Expire))?;
        Ok(exists > 0)
    }

    /// `DEL key`: whether something was deleted.
    async fn delete_under(&self, key: Bytes) -> Result<bool> {
        let started = Instant::now();
        let removed: std::result::Result<i64, _> = self
            .redirected(started, || self.inner.client.del(key.clone()))
            .await;
        Ok(removed.map_err(self.map(Operation::Delete))? > 0)
    }

    /// During a migration of key names (see `keys`), whether session `id`
    /// lives under its second name, where a create must not add a copy
    /// under the first. Generated ids never collide; this guards ids the
    /// caller chose. It is a check before the create, not one atomic with
    /// it: two creators of one chosen id in different phases at the same
    /// moment could both succeed.
    async fn exists_second(&self, id: &SessionId) -> Result<bool> {
        self.check_open()?;
        let Some(second) = self.inner.names.second(id) else {
            return Ok(false);
        };
        let exists: i64 = Box::pin(self.inner.client.exists(second))
            .await
            .map_err(self.map(Operation::Create))?;
        Ok(exists > 0)
    }

    /// A read of session `id` under its second key name, during a migration
    /// of key names (see `keys`) only: through the load script, and never
    /// cached (only sessions under their first name are).
    async fn get_second(&self, id: &SessionId, ttl: Ttl) -> Result<Option<Arc<Session>>> {
        if !self.inner.names.migrating() {
            return Ok(None);
        }
        Box::pin(async move {
            let Some(key) = self.inner.names.second(id) else {
                return Ok(None);
            };
            let started = Instant::now();
            let Some((bytes, _, refreshed)) = self.load(id, key.clone(), ttl, started).await?
            else {
                return Ok(None);
            };
            let session = Arc::new(self.decode(&bytes, &key, id)?);
            if refreshed {
                self.index_after_read(&session, ttl, started).await?;
            }
            Ok(Some(session))
        })
        .await
    }

    /// The load script on `id`'s key: the stored value, until when reads
    /// may skip the refresh, and whether the script set the TTL; `None`
    /// when the key does not exist.
    async fn load(
        &self,
        id: &SessionId,
        key: Bytes,
        ttl: Ttl,
        started: Instant,
    ) -> Result<Option<(Bytes, Instant, bool)>> {
        let window = self.refresh_window(ttl);
        let threshold = ttl.get().saturating_sub(window);
        let args = vec![
            Value::from(millis(ttl)),
            Value::from(i64::try_from(threshold.as_millis()).unwrap_or(i64::MAX)),
        ];
        let script = &self.inner.scripts.load;
        let client = &self.inner.client;
        let reply: Value = self
            .redirected(started, || script.run(client, key.clone(), args.clone()))
            .await
            .map_err(self.map(Operation::Get))?;
        let Some(loaded) = scripts::loaded(reply).ok_or_else(|| {
            Error::backend(
                BackendErrorKind::Protocol,
                "get: the load script answered something unexpected",
            )
        })?
        else {
            self.inner.refreshed.remove(id);
            return Ok(None);
        };
        // The key lives at least `left` from when the script was sent, so
        // reads may skip the refresh for what that leaves above the
        // threshold.
        let left = Duration::from_millis(loaded.left_ms);
        let skip = left.saturating_sub(threshold);
        let until = started + skip;
        if !skip.is_zero() {
            self.inner.refreshed.upsert(
                *id,
                until,
                until.saturating_duration_since(Instant::now()),
            );
        }
        Ok(Some((loaded.value, until, loaded.refreshed)))
    }

    /// Maps an error of a script run: the script's own refusals become the
    /// core's errors for them, everything else as any command error.
    fn script_error(
        &self,
        operation: Operation,
        session: &Session,
        error: &fred::error::Error,
    ) -> Error {
        match Refused::of(error) {
            Some(Refused::Owner) => Error::InvalidInput(format!(
                "{operation}: the write would change the owner of session {}; an owner is fixed when the session is created",
                session.id()
            )),
            Some(Refused::Revision) => Error::InvalidInput(format!(
                "{operation}: the stored revision of session {} has no successor that fits",
                session.id()
            )),
            Some(Refused::Format) => Error::Codec(CodecError::NotSessionFormat),
            None => self.map(operation)(error.clone()),
        }
    }
}

/// How often the refresh bookkeeping drops the entries whose window passed.
const REFRESH_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Sweeps the refresh bookkeeping every [`REFRESH_SWEEP_INTERVAL`].
///
/// An entry lives for one refresh window, but the manager's cleanup (which
/// also sweeps it) runs only every half TTL: a service creating many sessions
/// would hold half a TTL's worth of dead entries. Sweeping each second keeps
/// the map at about one window's worth of sessions. The task holds the
/// storage weakly and ends with it, or when it is closed.
/// Counts the live sessions every `live.interval()` with a bounded `SCAN`
/// (`[redis.live_count]`), for the `session_live_sessions` gauge that
/// `record_metrics` sets. A count that fails leaves the last one in place,
/// with a debug line: the gauge is a sample, not an operation.
fn spawn_live_count(inner: std::sync::Weak<Inner>, live: session_config::LiveCount) {
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(live.interval());
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(inner) = inner.upgrade() else { return };
            if inner.closed.load(Ordering::Acquire) {
                return;
            }
            match scan_sessions(&inner, Some(live.max_keys())).await {
                Ok(counted) => {
                    *inner.live.lock().unwrap_or_else(PoisonError::into_inner) = Some(counted);
                }
                Err(error) => tracing::debug!(
                    error = %inner.errors.map(Operation::Count, &error),
                    "counting the live sessions failed; the gauge keeps the last count"
                ),
            }
        }
    });
}

/// `SCAN MATCH prefix*` on every node (every master of a cluster), counting
/// the session keys among the names: at most `limit` of them, and then
/// `true` (capped). With a limit, a key the server returns twice (while it
/// rehashes) is counted twice, since remembering every name to tell would
/// cost memory in proportion to the keyspace; without one, the names are
/// deduplicated. `SCAN` reads names only: no TTL and no value is touched.
async fn scan_sessions(
    inner: &Inner,
    limit: Option<u64>,
) -> std::result::Result<(u64, bool), fred::error::Error> {
    let pattern = format!("{}*", glob_escape(inner.names.prefix()));
    let client = &inner.client;
    let mut keys = if inner.topology == Topology::Cluster {
        client
            .scan_cluster_buffered(pattern, Some(1000), None)
            .boxed()
    } else {
        client.scan_buffered(pattern, Some(1000), None).boxed()
    };
    let mut seen = HashSet::new();
    let mut counted = 0;
    while let Some(key) = keys.try_next().await? {
        if inner.names.parse(key.as_bytes()).is_none() {
            continue;
        }
        match limit {
            Some(limit) => {
                counted += 1;
                if counted >= limit {
                    return Ok((counted, true));
                }
            }
            None => {
                seen.insert(key);
            }
        }
    }
    Ok((
        if limit.is_some() {
            counted
        } else {
            seen.len() as u64
        },
        false,
    ))
}

fn spawn_refresh_sweeper(inner: std::sync::Weak<Inner>) {
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(REFRESH_SWEEP_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(inner) = inner.upgrade() else { return };
            if inner.closed.load(Ordering::Acquire) {
                inner.refreshed.clear();
                return;
            }
            inner.refreshed.sweep(Instant::now());
        }
    });
}

/// Remembers why the last connection attempt was refused, when the reason
/// will not pass by itself, and forgets it once a connection succeeds.
///
/// fred reports every failed attempt to connect on its error channel and
/// every successful one on its reconnect channel. Only an authentication
/// refusal is kept: a refused or reset connection is what a restarting
/// server looks like, and the timeout (retryable) is the right answer then.
fn spawn_refusal_watch(inner: &Arc<Inner>) {
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    let weak = Arc::downgrade(inner);
    let mut failures = inner.client.error_rx();
    let mut connects = inner.client.reconnect_rx();
    /// What the two channels said.
    enum Event {
        Refused(fred::error::Error),
        Connected,
    }
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let event = tokio::select! {
                failure = failures.recv() => match failure {
                    Ok((error, _server)) => Event::Refused(error),
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                },
                connected = connects.recv() => match connected {
                    Ok(_) | Err(RecvError::Lagged(_)) => Event::Connected,
                    Err(RecvError::Closed) => return,
                },
            };
            let Some(inner) = weak.upgrade() else { return };
            if inner.closed.load(Ordering::Acquire) {
                return;
            }
            let mut refused = inner.refused.lock().unwrap_or_else(PoisonError::into_inner);
            match event {
                Event::Connected => *refused = None,
                Event::Refused(error) => {
                    let error = inner.errors.map(Operation::Connect, &error);
                    // Another kind of failure leaves what was known: a
                    // refused password stays refused until a success.
                    if error.backend_kind() == Some(BackendErrorKind::Auth) {
                        *refused = Some(error);
                    }
                }
            }
        }
    });
}

/// Keeps the local cache correct: reads the server's invalidations, and
/// after every reconnect or cluster change flushes the cache and enables
/// tracking again (see the `cache` module for what fred leaves to us).
///
/// The cache starts disarmed and is armed once the server confirmed
/// tracking. A server that refuses `CLIENT TRACKING` (an ACL without
/// `client`, a managed service without it) leaves it disarmed: the storage
/// runs uncached, and says so once. The task holds the storage weakly and
/// ends with it.
fn spawn_tracking(inner: &Arc<Inner>) {
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    use fred::interfaces::TrackingInterface;
    let weak = Arc::downgrade(inner);
    let mut invalidations = inner.client.invalidation_rx();
    let mut reconnects = inner.client.reconnect_rx();
    let mut changes = inner.client.cluster_change_rx();
    /// What woke the task.
    enum Event {
        Keys(Vec<fred::types::Key>),
        Flush(cache::Flush),
    }
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        // Enables tracking now, and again after each flush; a failure that
        // may pass (no connection yet) is retried by the next reconnect.
        let enable = |weak: std::sync::Weak<Inner>| async move {
            let Some(inner) = weak.upgrade() else { return };
            let Some(cache) = &inner.cache else { return };
            let broadcast = cache.mode() == session_config::TrackingMode::Broadcast;
            let prefixes: Vec<String> = if broadcast {
                vec![inner.names.prefix().to_owned()]
            } else {
                Vec::new()
            };
            let client = inner.client.clone();
            drop(inner);
            let result = client
                .start_tracking(prefixes, broadcast, false, false, true)
                .await;
            let Some(inner) = weak.upgrade() else { return };
            let Some(cache) = &inner.cache else { return };
            match result {
                Ok(()) if !inner.closed.load(Ordering::Acquire) => cache.arm(),
                Ok(()) => {}
                Err(error)
                    if *error.kind() == fred::error::ErrorKind::Timeout
                        || *error.kind() == fred::error::ErrorKind::IO
                        || *error.kind() == fred::error::ErrorKind::Canceled =>
                {
                    tracing::debug!(
                        error = %inner.errors.map(Operation::Connect, &error),
                        "could not enable client tracking yet; the cache waits for the next connection"
                    );
                }
                Err(error) => {
                    if cache.note_refused() {
                        tracing::warn!(
                            error = %inner.errors.map(Operation::Connect, &error),
                            "the Redis server refused CLIENT TRACKING: the session cache is off, \
                             every read goes to Redis"
                        );
                    }
                }
            }
        };
        enable(weak.clone()).await;
        loop {
            let event = tokio::select! {
                invalidation = invalidations.recv() => match invalidation {
                    Ok(invalidation) => Event::Keys(invalidation.keys),
                    Err(RecvError::Lagged(_)) => Event::Flush(cache::Flush::Lagged),
                    Err(RecvError::Closed) => return,
                },
                reconnect = reconnects.recv() => match reconnect {
                    Ok(_) | Err(RecvError::Lagged(_)) => Event::Flush(cache::Flush::Reconnect),
                    Err(RecvError::Closed) => return,
                },
                change = changes.recv() => match change {
                    Ok(_) | Err(RecvError::Lagged(_)) => Event::Flush(cache::Flush::Topology),
                    Err(RecvError::Closed) => return,
                },
            };
            let Some(inner) = weak.upgrade() else { return };
            if inner.closed.load(Ordering::Acquire) {
                return;
            }
            let Some(cache) = &inner.cache else { return };
            match event {
                Event::Keys(keys) => {
                    for key in &keys {
                        // Owner indexes share the prefix; only sessions are
                        // cached.
                        if let Some(slot) = inner.names.slot_of(key.as_bytes()) {
                            cache.invalidate(slot);
                        }
                    }
                }
                // Lost invalidations: the copies may be stale, but tracking
                // is still on.
                Event::Flush(cache::Flush::Lagged) => cache.flush(cache::Flush::Lagged),
                Event::Flush(cause) => {
                    cache.disarm(cause);
                    drop(inner);
                    enable(weak.clone()).await;
                }
            }
        }
    });
}

/// Eager connect: connects `client` and sends `PING` within the connect
/// timeout, or fails with a typed error and leaves nothing running. Shared
/// by the storage and the event log, whose clients come from one
/// configuration.
pub(crate) async fn connect_eagerly(
    client: &fred::clients::Client,
    config: &RedisConfig,
    errors: &ErrorContext,
) -> Result<()> {
    let connected = async {
        client.init().await?;
        client.ping::<Value>(None).await
    };
    let result = tokio::time::timeout(config.connect_timeout(), connected).await;
    let failure = match result {
        Ok(Ok(_)) => return Ok(()),
        Ok(Err(error)) if config.cache().is_some() && refuses_resp3(&error) => Error::config(
            "redis.cache",
            "the server does not speak RESP3 (it refused HELLO 3), which the \
             cache's invalidations need: remove [redis.cache], or use Redis 6 \
             or later",
        ),
        Ok(Err(error)) => errors.map(Operation::Connect, &error),
        Err(_) => Error::Timeout {
            operation: Operation::Connect,
            after: config.connect_timeout(),
        },
    };
    // Stop the client: a failed eager connect must leave nothing running.
    // QUIT on a connection that never came up can wait for its own timeout,
    // so it runs in the background and the error is returned at once.
    let client = client.clone();
    let command_timeout = config.command_timeout();
    tokio::spawn(async move {
        let _ = tokio::time::timeout(command_timeout, client.quit()).await;
    });
    Err(failure)
}

/// Whether a connection failed because the server does not speak RESP3.
fn refuses_resp3(error: &fred::error::Error) -> bool {
    let details = error.details();
    details.contains("HELLO") || details.contains("NOPROTO") || details.contains("unknown command")
}

/// A TTL in whole milliseconds, at least 1 (Redis rejects `PX 0`).
fn millis(ttl: Ttl) -> i64 {
    i64::try_from(ttl.get().as_millis())
        .unwrap_or(i64::MAX)
        .max(1)
}

/// Escapes the glob characters of a key prefix for `SCAN MATCH`.
fn glob_escape(prefix: &str) -> String {
    let mut escaped = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

impl Storage for RedisStorage {
    async fn create(&self, session: Arc<Session>, ttl: Ttl) -> Result<bool> {
        if self.inner.names.migrating() && self.exists_second(&session.id()).await? {
            return Ok(false);
        }
        match session.owner() {
            None => self.create_key(&session, ttl).await,
            // Boxed: the owned create joins two command futures, which
            // inline would double the size of every create's future.
            Some(owner) => Box::pin(self.create_owned(owner, &session, ttl)).await,
        }
    }

    async fn update(&self, session: Arc<Session>, ttl: Ttl) -> Result<Option<Arc<Session>>> {
        self.index_before_write(Operation::Update, &session, ttl)
            .await?;
        let (_, stored) = self
            .write(Operation::Update, session, ttl, WriteMode::Update)
            .await?;
        Ok(stored)
    }

    async fn upsert(&self, session: Arc<Session>, ttl: Ttl) -> Result<Arc<Session>> {
        self.index_before_write(Operation::Upsert, &session, ttl)
            .await?;
        match self
            .write(Operation::Upsert, session, ttl, WriteMode::Upsert)
            .await?
        {
            (_, Some(stored)) => Ok(stored),
            (_, None) => Err(Error::backend(
                BackendErrorKind::Protocol,
                "upsert: the write script wrote nothing",
            )),
        }
    }

    async fn update_if(
        &self,
        session: Arc<Session>,
        expected: Revision,
        ttl: Ttl,
    ) -> Result<Conditional> {
        self.index_before_write(Operation::UpdateIf, &session, ttl)
            .await?;
        match self
            .write(Operation::UpdateIf, session, ttl, WriteMode::If(expected))
            .await?
        {
            (_, Some(stored)) => Ok(Conditional::Written(stored)),
            (Written::Conflict(current), None) => Ok(Conditional::Conflict(current)),
            (_, None) => Ok(Conditional::Absent),
        }
    }

    async fn list_owned(&self, owner: &Owner) -> Result<Vec<Arc<Session>>> {
        self.owned_sessions(owner).await
    }

    async fn revoke_owned(&self, owner: &Owner) -> Result<Vec<SessionId>> {
        self.revoke(owner).await
    }

    async fn get(&self, id: &SessionId, ttl: Ttl) -> Result<Option<Arc<Session>>> {
        self.check_open()?;
        if let Some(cache) = &self.inner.cache {
            if let Some(session) = self.get_cached(id, ttl) {
                return Ok(Some(session));
            }
            cache.note_miss();
        }
        let ticket = self.ticket(id, false);
        let started = ticket.map_or_else(Instant::now, |ticket| ticket.sent());
        let key = self.key_bytes(id);
        // The sliding TTL without a write per read: while this client knows
        // the key has at least `ttl - refresh_window` left, a plain GET
        // suffices; otherwise the load script reads the key's remaining life
        // and sets the TTL only if it runs low.
        let known = self.inner.refreshed.peek(id);
        let client = &self.inner.client;
        let (bytes, until, refreshed) = if let Some(until) = known {
            // Only a cluster moves slots under a command. Elsewhere the GET
            // is awaited here directly: through `redirected`, one more
            // future level, the command future (about 7 KB) was copied three
            // times more per load (callgrind: 920 instructions of a load's
            // 21,560).
            let reply: std::result::Result<Option<Bytes>, _> =
                if self.inner.topology == Topology::Cluster {
                    self.redirected(started, || client.get(key.clone())).await
                } else {
                    client.get(key).await
                };
            let reply = reply.map_err(self.map(Operation::Get))?;
            match reply {
                Some(bytes) => (bytes, until, false),
                None => {
                    self.inner.refreshed.remove(id);
                    return self.get_second(id, ttl).await;
                }
            }
        } else {
            // Boxed: a script future is several kilobytes, the manager boxes
            // this whole future (moving all of it) on every call, and this
            // path runs once per refresh window.
            match Box::pin(self.load(id, key, ttl, started)).await? {
                Some(loaded) => loaded,
                None => return self.get_second(id, ttl).await,
            }
        };
        // A sealed value opens only under the key it was stored under; the
        // key is built again for that, so that the plain path does not keep
        // a second reference to it across the command.
        let session = Arc::new(match &self.keyring {
            Some(_) => self.decode(&bytes, &self.key_bytes(id), id)?,
            None => codec::decode_session_for(&bytes, id)?,
        });
        if refreshed && session.owner().is_some() {
            // Boxed: a path of owned sessions only, once per half TTL.
            Box::pin(self.index_after_read(&session, ttl, started)).await?;
        }
        self.fill(ticket, &session, until, bytes.len());
        Ok(Some(session))
    }

    fn get_cached(&self, id: &SessionId, _ttl: Ttl) -> Option<Arc<Session>> {
        // A closed storage answers nothing from memory either.
        if self.inner.closed.load(Ordering::Acquire) {
            return None;
        }
        self.inner
            .cache
            .as_ref()?
            .lookup(&self.inner.names.slot(id))
    }

    async fn expire(&self, id: &SessionId, ttl: Ttl) -> Result<bool> {
        self.check_open()?;
        // A copy may answer until a bound this shortens: it goes, and so
        // does what this client knew of the key's remaining life.
        self.forget(id);
        self.inner.refreshed.remove(id);
        if self.expire_under(self.key_bytes(id), ttl).await? {
            return Ok(true);
        }
        match self.inner.names.second(id) {
            Some(second) => Box::pin(self.expire_under(second, ttl)).await,
            None => Ok(false),
        }
    }

    async fn delete(&self, id: &SessionId) -> Result<bool> {
        self.check_open()?;
        self.inner.refreshed.remove(id);
        self.forget(id);
        let mut removed = self.delete_under(self.key_bytes(id)).await?;
        if let Some(second) = self.inner.names.second(id) {
            removed |= Box::pin(self.delete_under(second)).await?;
        }
        // A read sent before the delete may have been answered with the
        // session and be filling now: that fill must not survive.
        self.forget(id);
        Ok(removed)
    }

    async fn delete_expired(&self, before: Instant) -> Result<Vec<SessionId>> {
        // Redis expires keys by itself, exactly at their TTL; only the
        // refresh bookkeeping of this client needs sweeping.
        self.check_open()?;
        self.inner.refreshed.sweep(before);
        Ok(Vec::new())
    }

    async fn count(&self) -> Result<usize> {
        self.check_open()?;
        let (count, _) = scan_sessions(&self.inner, None)
            .await
            .map_err(self.map(Operation::Count))?;
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    /// Sends `PING`: a health check that does not touch sessions.
    async fn ping(&self) -> Result<()> {
        self.check_open()?;
        self.inner
            .client
            .ping::<Value>(None)
            .await
            .map(drop)
            .map_err(self.map(Operation::Ping))
    }

    fn describe(&self) -> Description {
        Description::new("redis", self.inner.topology, false)
    }

    fn record_metrics(&self) {
        if let Some(stats) = self.cache_stats() {
            stats.record();
        }
        if let Some((live, capped)) = self.live_sessions() {
            metrics::gauge!(session_core::metrics::LIVE, "backend" => "redis").set(live as f64);
            metrics::gauge!(LIVE_CAPPED, "backend" => "redis").set(if capped { 1.0 } else { 0.0 });
        }
    }

    async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if let Some(cache) = &self.inner.cache {
            cache.disarm(cache::Flush::Close);
        }
        // QUIT waits for commands in flight; a server that does not answer
        // must not hold up shutdown past the command timeout. Either way the
        // storage is closed: a QUIT that fails because the connection is
        // already down leaves nothing to release.
        if let Some(watch) = &self.inner.sentinel_watch {
            watch.quit().await;
        }
        let quit = self.inner.client.quit();
        match tokio::time::timeout(self.inner.errors.command_timeout, quit).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                let error = self.inner.errors.map(Operation::Close, &error);
                tracing::debug!(%error, "QUIT failed; the storage is closed anyway");
            }
            Err(_) => tracing::debug!("QUIT timed out; the storage is closed anyway"),
        }
        Ok(())
    }
}
