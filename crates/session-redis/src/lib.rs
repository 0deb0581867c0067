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
//!   | `store`          | `SET key value PX ttl`      |
//!   | `load`           | `GETEX key PX ttl`, or `GET key` within the refresh window |
//!   | `delete`         | `DEL key`                   |
//!   | `delete_expired` | nothing: Redis expires keys |
//!   | `count`          | `SCAN MATCH prefix*` on every node (every master of a cluster): O(keyspace) |
//!   | `close`          | `QUIT`                      |
//!
//!   A load must slide the session's TTL, but `GETEX` is a write for Redis
//!   and costs a fifth to a third more than `GET`. So each client remembers
//!   which keys it set the TTL of recently (by a write or a `GETEX`), and
//!   within `RedisConfig::refresh_window` (default: 1/64 of the TTL) loads
//!   them with a plain `GET`. A load therefore guarantees the session at
//!   least `ttl - refresh_window` more life instead of exactly `ttl`; with
//!   the default that is 98.4% of the TTL, for a busy session one `GETEX`
//!   per window instead of one per request.
//!
//!   Keys are `{key_prefix}{session_id}`; values are in the versioned format
//!   of `session_core::codec`. The TTL the manager passes is the key's TTL,
//!   capped by the session's remaining maximum lifetime when one is set.
//! - `connect` turns a `RedisConfig` into a fred client: topology, ACL, TLS
//!   (PEM read with rustls-pemfile, one explicit ring crypto provider),
//!   timeouts and reconnect policy.
//! - `errors` maps fred's errors into the core's kinds, with secrets removed
//!   from messages.
//! - `sentinel_watch`, in sentinel mode: subscribers on the sentinels that
//!   reconnect the client the moment a sentinel announces a new master.
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
//! fred's default command timeout is zero, meaning none: a command sent on a
//! dead connection would wait forever. Every operation here ends within
//! `RedisConfig::command_timeout`: its first command under fred's timeout,
//! any follow-up command within what is left of it. Connections that leave a
//! command unanswered that long are replaced. Because of that bound the
//! manager adds no timer of its own to keyed operations when its operation
//! timeout is at least the command timeout (3 s and 5 s by default).

#![deny(missing_docs)]

mod connect;
mod errors;
mod sentinel_watch;

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fred::bytes::Bytes;
use fred::interfaces::{ClientLike, KeysInterface};
use fred::prelude::{Expiration, SetOptions, Value};
use fred::types::{ClusterHash, CustomCommand};
use futures_util::TryStreamExt;
use session_core::codec::{self, Codec};
use session_core::config::{ConnectMode, RedisConfig};
use session_core::{Error, Expiry, Result, Session, SessionId, Storage, clock};
use session_local::ExpiringMap;
use tokio::time::Instant;

use crate::errors::ErrorContext;
use crate::sentinel_watch::SentinelWatch;

pub use fred;

/// Session storage in Redis. Cheap to clone; clones share one client.
#[derive(Clone)]
pub struct RedisStorage {
    inner: Arc<Inner>,
    codec: Codec,
}

struct Inner {
    client: fred::clients::Client,
    key_prefix: String,
    cluster: bool,
    errors: ErrorContext,
    closed: AtomicBool,
    topology: &'static str,
    /// `RedisConfig::refresh_window`; `None` means 1/64 of each call's TTL.
    refresh_window: Option<Duration>,
    /// The sessions whose key TTL this client set within the refresh
    /// window, by GETEX or a write: their loads use a plain GET. Entries
    /// expire by themselves after the window; a task of the storage's own
    /// frees them every second.
    refreshed: ExpiringMap<SessionId, ()>,
    /// In sentinel mode, the subscribers that hear a failover announced.
    sentinel_watch: Option<SentinelWatch>,
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
            .field("key_prefix", &self.inner.key_prefix)
            .field("codec", &self.codec)
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// `GETEX` is not among fred's typed commands. Sent as a custom command, it is
/// routed by its first key, so it goes to the right node of a cluster.
const GETEX: CustomCommand = CustomCommand {
    cmd: fred::bytes_utils::Str::from_static("GETEX"),
    cluster_hash: ClusterHash::FirstKey,
    blocking: false,
};

impl RedisStorage {
    /// Validates `config`, builds the client and, with eager connect (the
    /// default), connects and sends `PING`, failing within the connect timeout
    /// with a typed error if Redis cannot be reached (the client is closed
    /// again). With lazy connect it returns at once while the client connects
    /// in the background, retrying under the reconnect policy; commands
    /// issued before it succeeds fail with typed errors within the command
    /// timeout.
    pub async fn connect(config: &RedisConfig) -> Result<Self> {
        config.validate()?;
        let client = connect::build_client(config)?;
        let sentinel_watch = SentinelWatch::build(config)?;
        let mut secrets: Vec<String> = Vec::new();
        if let Some(password) = &config.password {
            secrets.push(password.expose().to_owned());
        }
        if let Some(password) = config.sentinel.as_ref().and_then(|s| s.password.as_ref()) {
            secrets.push(password.expose().to_owned());
        }
        let errors = ErrorContext {
            command_timeout: config.command_timeout,
            secrets,
        };
        let topology = if config.sentinel.is_some() {
            "sentinel"
        } else if config.cluster {
            "cluster"
        } else {
            "standalone"
        };
        match config.connect {
            ConnectMode::Eager => {
                let connected = async {
                    client.init().await?;
                    client.ping::<Value>(None).await
                };
                let result = tokio::time::timeout(config.connect_timeout, connected).await;
                let failure = match result {
                    Ok(Ok(_)) => None,
                    Ok(Err(error)) => Some(errors.map("connect", &error)),
                    Err(_) => Some(Error::Timeout {
                        operation: "connect",
                        after: config.connect_timeout,
                    }),
                };
                if let Some(failure) = failure {
                    // Stop the client: a failed eager connect must leave
                    // nothing running. QUIT on a connection that never came up
                    // can wait for its own timeout, so it runs in the
                    // background and the error is returned at once.
                    let command_timeout = config.command_timeout;
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(command_timeout, client.quit()).await;
                    });
                    return Err(failure);
                }
            }
            ConnectMode::Lazy => {
                // Spawns the connection task, which keeps retrying under the
                // reconnect policy; commands wait for it (up to their timeout).
                drop(client.connect());
            }
        }
        let inner = Arc::new(Inner {
            client,
            key_prefix: config.key_prefix.clone(),
            cluster: config.cluster,
            errors,
            closed: AtomicBool::new(false),
            topology,
            refresh_window: config.refresh_window,
            refreshed: ExpiringMap::new(),
            sentinel_watch,
        });
        spawn_refresh_sweeper(Arc::downgrade(&inner));
        if let (Some(watch), Some(sentinel)) = (&inner.sentinel_watch, &config.sentinel) {
            watch.start(Arc::downgrade(&inner), sentinel.master_name.clone());
        }
        Ok(Self {
            inner,
            codec: config.codec,
        })
    }

    /// Writes new values with `codec` (`RedisConfig::codec`, bincode by
    /// default). Values written by either codec are always readable: the
    /// header names the codec.
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// The key a session is stored under: `{key_prefix}{session_id}`.
    pub fn key(&self, id: &SessionId) -> String {
        let mut buf = [0u8; 36];
        let mut key = String::with_capacity(self.inner.key_prefix.len() + 36);
        key.push_str(&self.inner.key_prefix);
        key.push_str(id.encode_into(&mut buf));
        key
    }

    /// The key as the bytes fred sends: one allocation (the `String` of
    /// [`RedisStorage::key`], taken over without a copy), shared by reference
    /// count by every command of an operation.
    fn key_bytes(&self, id: &SessionId) -> Bytes {
        Bytes::from(self.key(id).into_bytes())
    }

    /// The key prefix.
    pub fn key_prefix(&self) -> &str {
        &self.inner.key_prefix
    }

    /// The fred client, for diagnostics and tests. It is shut down (`QUIT`)
    /// when the storage is closed or its last clone dropped; a clone of the
    /// client kept past that no longer works.
    pub fn client(&self) -> &fred::clients::Client {
        &self.inner.client
    }

    /// How many sessions this client currently treats as refreshed (their
    /// loads send `GET`, not `GETEX`), counting entries whose window passed
    /// but that the once-a-second sweep has not dropped yet. For diagnostics.
    pub fn refresh_tracked(&self) -> usize {
        self.inner.refreshed.len()
    }

    /// Sends `PING`: a health check that does not touch sessions.
    pub async fn ping(&self) -> Result<()> {
        self.check_open()?;
        self.inner
            .client
            .ping::<Value>(None)
            .await
            .map(drop)
            .map_err(|error| self.inner.errors.map("ping", &error))
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
    /// takes longer than one command timeout (see
    /// [`Storage::keyed_operation_bound`]).
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
            Err(error) if self.inner.cluster && errors::is_redirect_refused(&error) => {
                tracing::debug!("a cluster slot moved under a command; sending it again");
                // Boxed: inline, this rare second command future would double
                // the size of every operation's future.
                Box::pin(self.within(started, send())).await
            }
            other => other,
        }
    }

    /// After a load with a maximum lifetime: GETEX slid the key's TTL by the
    /// full TTL, so it is pulled back to the session's remaining lifetime,
    /// or the session removed if none remains (returns whether it lives).
    /// Boxed by its caller: a rare path that would otherwise make every load
    /// future larger.
    async fn cap_lifetime(
        &self,
        started: Instant,
        key: Bytes,
        session: &Session,
        expiry: &Expiry,
    ) -> Result<bool> {
        let client = &self.inner.client;
        match expiry.ttl_for(session, clock::now()) {
            Some(ttl) if ttl < expiry.ttl() => {
                let pexpire = self.redirected(started, || {
                    client.pexpire::<Value, _>(key.clone(), millis(ttl), None)
                });
                self.within(started, pexpire)
                    .await
                    .map_err(self.map("load"))?;
                Ok(true)
            }
            Some(_) => Ok(true),
            None => {
                let del = self.redirected(started, || client.del::<i64, _>(key.clone()));
                self.within(started, del).await.map_err(self.map("load"))?;
                Ok(false)
            }
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

    fn map(&self, operation: &'static str) -> impl Fn(fred::error::Error) -> Error + '_ {
        move |error| self.inner.errors.map(operation, &error)
    }

    /// How long after setting a key's TTL a load may skip refreshing it.
    fn refresh_window(&self, expiry: &Expiry) -> Duration {
        self.inner.refresh_window.unwrap_or(expiry.ttl() / 64)
    }

    /// Records that this client just set the TTL of session `id`.
    fn note_refresh(&self, id: SessionId, expiry: &Expiry) {
        let window = self.refresh_window(expiry);
        if !window.is_zero() {
            self.inner.refreshed.upsert(id, (), window);
        }
    }

    fn encode(&self, session: &Session) -> Result<Bytes> {
        Ok(Bytes::from(self.codec.encode_session(session)?))
    }

    /// One `SET` with the given condition; returns whether Redis wrote.
    async fn set(
        &self,
        operation: &'static str,
        session: &Session,
        expiry: Expiry,
        condition: Option<SetOptions>,
    ) -> Result<bool> {
        self.check_open()?;
        let started = Instant::now();
        let key = self.key_bytes(&session.id());
        let client = &self.inner.client;
        let Some(ttl) = expiry.ttl_for(session, clock::now()) else {
            // Past its maximum lifetime: gone, as on every backend. Boxed,
            // because this rare path would otherwise add its own command
            // future to the state of every write (see `load`).
            Box::pin(self.redirected(started, || client.del::<i64, _>(key.clone())))
                .await
                .map_err(self.map(operation))?;
            return Ok(false);
        };
        let value = self.encode(session)?;
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
            .map_err(self.map(operation))?;
        // `SET` answers OK when it wrote and nil when NX/XX prevented it.
        let written = !reply.is_null();
        if written {
            self.note_refresh(session.id(), &expiry);
        }
        Ok(written)
    }
}

/// What [`Storage::keyed_operation_bound`] adds to the command timeout.
const KEYED_BOUND_MARGIN: Duration = Duration::from_millis(100);

/// How often the refresh bookkeeping drops the entries whose window passed.
const REFRESH_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Sweeps the refresh bookkeeping every [`REFRESH_SWEEP_INTERVAL`].
///
/// An entry lives for one refresh window, but the manager's cleanup (which
/// also sweeps it) runs only every half TTL: a service creating many sessions
/// would hold half a TTL's worth of dead entries. Sweeping each second keeps
/// the map at about one window's worth of sessions. The task holds the
/// storage weakly and ends with it, or when it is closed.
fn spawn_refresh_sweeper(inner: std::sync::Weak<Inner>) {
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

/// A TTL in whole milliseconds, at least 1 (Redis rejects `PX 0`).
fn millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
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
    async fn create(&self, session: Arc<Session>, expiry: Expiry) -> Result<bool> {
        self.set("create", &session, expiry, Some(SetOptions::NX))
            .await
    }

    async fn update(&self, session: Arc<Session>, expiry: Expiry) -> Result<bool> {
        self.set("update", &session, expiry, Some(SetOptions::XX))
            .await
    }

    async fn store(&self, session: Arc<Session>, expiry: Expiry) -> Result<()> {
        self.set("store", &session, expiry, None).await.map(drop)
    }

    async fn load(&self, id: &SessionId, expiry: Expiry) -> Result<Option<Arc<Session>>> {
        self.check_open()?;
        let started = Instant::now();
        let key = self.key_bytes(id);
        // The sliding TTL without a write per read: if this client set the
        // key's TTL within the refresh window, a plain GET suffices and the
        // session still lives at least `ttl - refresh_window` from now.
        let fresh = self.inner.refreshed.peek(id).is_some();
        let client = &self.inner.client;
        // The common read, GET, is a typed command that fred pipelines with
        // others; GETEX, once per refresh window, is a custom command, which
        // fred flushes to the socket on its own (a write call per command).
        // The GETEX future is boxed: a fred command future is several
        // kilobytes, the manager boxes this whole future (moving all of it)
        // on every call, and its size is CPU time per load.
        let reply: Value = if fresh {
            self.redirected(started, || client.get(key.clone())).await
        } else {
            Box::pin(self.redirected(started, || {
                let args: Vec<Value> = vec![
                    Value::Bytes(key.clone()),
                    Value::from_static_str("PX"),
                    Value::from(millis(expiry.ttl())),
                ];
                client.custom(GETEX, args)
            }))
            .await
        }
        .map_err(self.map("load"))?;
        if reply.is_null() {
            self.inner.refreshed.remove(id);
            return Ok(None);
        }
        if !fresh {
            self.note_refresh(*id, &expiry);
        }
        let bytes = match reply {
            Value::Bytes(bytes) => bytes,
            Value::String(text) => text.into_inner(),
            other => {
                return Err(Error::backend(
                    session_core::BackendErrorKind::Protocol,
                    format!("load: unexpected GETEX reply of type {:?}", other.kind()),
                ));
            }
        };
        let session = codec::decode_session(&bytes)?;
        if session.id() != *id {
            return Err(Error::Codec(session_core::CodecError::Decode {
                codec: Codec::default(),
                message: "stored session has another id than its key".into(),
            }));
        }
        if expiry.max_lifetime().is_some()
            && !Box::pin(self.cap_lifetime(started, key, &session, &expiry)).await?
        {
            return Ok(None);
        }
        Ok(Some(Arc::new(session)))
    }

    async fn delete(&self, id: &SessionId) -> Result<bool> {
        self.check_open()?;
        self.inner.refreshed.remove(id);
        let started = Instant::now();
        let key = self.key_bytes(id);
        let removed: i64 = self
            .redirected(started, || self.inner.client.del(key.clone()))
            .await
            .map_err(self.map("delete"))?;
        Ok(removed > 0)
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
        let pattern = format!("{}*", glob_escape(&self.inner.key_prefix));
        let client = &self.inner.client;
        // SCAN may return a key more than once (while the server rehashes),
        // so keys are deduplicated; a cluster is scanned on every master.
        let keys: HashSet<fred::types::Key> = if self.inner.cluster {
            client
                .scan_cluster_buffered(pattern, Some(1000), None)
                .try_collect()
                .await
        } else {
            client
                .scan_buffered(pattern, Some(1000), None)
                .try_collect()
                .await
        }
        .map_err(self.map("count"))?;
        Ok(keys.len())
    }

    /// Every keyed operation ends within one command timeout: its first
    /// command under fred's own timeout, any command after it (a redirected
    /// re-send, the maximum-lifetime correction) within what is left of it.
    /// The margin covers timer granularity.
    fn keyed_operation_bound(&self) -> Option<Duration> {
        Some(self.inner.errors.command_timeout + KEYED_BOUND_MARGIN)
    }

    async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
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
                let error = self.inner.errors.map("close", &error);
                tracing::debug!(%error, "QUIT failed; the storage is closed anyway");
            }
            Err(_) => tracing::debug!("QUIT timed out; the storage is closed anyway"),
        }
        Ok(())
    }
}
