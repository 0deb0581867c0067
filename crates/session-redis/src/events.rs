//! A per-session event log on Redis Streams: what a resumable stream needs
//! to outlive the replica that produced it.
//!
//! An MCP server of the handshake era numbers the events of its SSE
//! streams, and a client whose connection broke asks for what came after
//! the last one it saw (`GET` with `Last-Event-ID`). Behind a balancer
//! without affinity that request may reach another replica, so the events
//! must be where every replica reads: here, one Redis stream per session.
//!
//! - **One key per session**, `events:<key_prefix>{<session id>}` (the
//!   id hashed with `[redis.hashed_ids]`): every stream of the session
//!   (each request's, and the standalone `GET` stream) appends to it, each
//!   entry naming its stream. Redis's entry ids
//!   are unique and ordered within the key, so an entry id and a stream tag
//!   name an event of the session once. The key starts with `events:`, not
//!   with the key prefix, so that a broadcast-mode cache (which tracks
//!   every key under the prefix) is not told of every event.
//! - **Slots**: the session id is the key's hash tag, so in a cluster the
//!   log lives in the slot of `{<id>}`; the session's own key (no hash tag)
//!   may live elsewhere. No command touches both keys.
//! - **Append before send**: [`EventLog::append`] returns only after the
//!   server acknowledged the `XADD`, in one script with the `PEXPIRE` that
//!   keeps the key alive as long as the session (the caller passes the
//!   session's TTL on every append). The script trims the key to the
//!   per-session cap (`MAXLEN ~`): the oldest events go first, and an id
//!   that was trimmed is unknown afterwards. Only a stream's first event
//!   may create the log ([`EventLog::append`]); the others are appended
//!   only to a log that exists ([`EventLog::append_existing`], `XADD
//!   NOMKSTREAM`), so a deleted session's log stays deleted.
//! - **Replay** reads after an id (`XRANGE` with an exclusive start);
//!   [`EventLog::find`] checks that an id names an entry of this session's
//!   log, so an id taken from another session's stream finds nothing.
//! - **Live tail**: [`EventLog::wait_after`] blocks on `XREAD BLOCK` on a
//!   connection of its own (a blocking read on the shared, pipelined
//!   connection would stall every other command). At most
//!   [`EventLimits::max_tails`] wait at once; past that it answers `None`
//!   at once, and the caller ends the replay after what was already stored
//!   (the client polls again).
//!
//! - **Replicas**: Redis replicates asynchronously, so the master answers
//!   an `XADD` before any replica has it, and a failover can lose events a
//!   client was already sent. With [`EventLimits::confirm_on_replicas`] an
//!   append also waits (`WAIT`) until that many replicas have the log's
//!   writes, and an append they did not confirm in time fails with an
//!   unknown outcome: its event is sent without an id, so no client ever
//!   holds an id that a failover could take back. In sentinel mode the
//!   log, like the storage, reconnects the moment a sentinel announces a
//!   new master (`sentinel_watch`), not seconds later when the old one is
//!   demoted.
//!
//! The log has its own client, built from the same settings as the
//! storage's but without the cache's client tracking, so its reads never
//! make the server track event keys.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fred::bytes::Bytes;
use fred::interfaces::{ClientLike, KeysInterface, StreamsInterface};
use fred::prelude::Value;
use fred::types::config::Options;
use fred::types::{ClusterHash, CustomCommand};

use session_config::{ConnectMode, RedisConfig};
use session_core::{Error, Operation, SessionId, Ttl};
use tokio::sync::Semaphore;

use crate::connect;
use crate::errors::ErrorContext;
use crate::scripts::Script;
use crate::sentinel_watch::{Follower, SentinelWatch};

/// The bounds of an event log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventLimits {
    max_events_per_session: u64,
    max_event_bytes: usize,
    max_tails: usize,
    confirm: Option<Confirm>,
}

/// How many replicas must confirm an append, and how long it waits for
/// them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Confirm {
    /// The number of replicas (`WAIT numreplicas`).
    pub replicas: u32,
    /// How long an append waits for them (`WAIT ... timeout`).
    pub timeout: Duration,
}

impl Default for EventLimits {
    /// 1,000 events per session, 1 MiB per event, 64 live tails, no
    /// replica confirmation.
    fn default() -> Self {
        Self {
            max_events_per_session: 1_000,
            max_event_bytes: 1 << 20,
            max_tails: 64,
            confirm: None,
        }
    }
}

impl EventLimits {
    /// At most `events` events are kept per session (approximately: Redis
    /// trims whole nodes of the stream, `MAXLEN ~`); the oldest go first.
    /// At least 1.
    pub fn max_events_per_session(mut self, events: u64) -> Self {
        self.max_events_per_session = events.max(1);
        self
    }

    /// An event larger than `bytes` is refused by
    /// [`EventLog::append`] (its caller may still deliver it live, without
    /// an id). At least 1.
    pub fn max_event_bytes(mut self, bytes: usize) -> Self {
        self.max_event_bytes = bytes.max(1);
        self
    }

    /// At most `tails` live tails (each a connection of its own) wait at
    /// once; 0 turns live tails off, so that a replay ends after what is
    /// stored.
    pub fn max_tails(mut self, tails: usize) -> Self {
        self.max_tails = tails;
        self
    }

    /// Every append waits until `replicas` replicas have the log's writes
    /// (`WAIT`, on the connection of the log's key), for at most `timeout`
    /// (at least 1 ms). An append that fewer replicas confirmed fails with
    /// a backend error of kind `Unavailable`, whose outcome is unknown
    /// ([`Error::is_outcome_unknown`]): the entry is on the master and may
    /// or may not survive a failover. 0 replicas turns this off.
    ///
    /// It costs a replication round trip per append, and `WAIT` holds the
    /// connection it runs on while it waits, so the log's other commands
    /// queue behind it: set `timeout` to a few replication round trips.
    pub fn confirm_on_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.confirm = (replicas > 0).then(|| Confirm {
            replicas,
            timeout: timeout.max(Duration::from_millis(1)),
        });
        self
    }

    /// The replica confirmation appends wait for, if any.
    pub fn confirmation(&self) -> Option<Confirm> {
        self.confirm
    }

    /// The per-session cap.
    pub fn events_per_session(&self) -> u64 {
        self.max_events_per_session
    }

    /// The per-event cap, in bytes.
    pub fn event_bytes(&self) -> usize {
        self.max_event_bytes
    }

    /// The cap on live tails.
    pub fn tails(&self) -> usize {
        self.max_tails
    }
}

/// A Redis stream entry id, `<milliseconds>-<sequence>`: parsed, so that
/// what reaches a command is always a well-formed id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    ms: u64,
    seq: u64,
}

impl EntryId {
    /// The id before every entry (`0-0`).
    pub const ZERO: Self = Self { ms: 0, seq: 0 };
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// The text is not an entry id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a stream entry id (expected <milliseconds>-<sequence>)")]
pub struct InvalidEntryId;

impl FromStr for EntryId {
    type Err = InvalidEntryId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (ms, seq) = text.split_once('-').ok_or(InvalidEntryId)?;
        // Digits only: `u64::from_str` would also take a leading `+`, and a
        // canonical text is what makes an id name one entry.
        let number = |part: &str| {
            if part.is_empty() || part.len() > 20 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(InvalidEntryId);
            }
            part.parse::<u64>().map_err(|_| InvalidEntryId)
        };
        let id = Self {
            ms: number(ms)?,
            seq: number(seq)?,
        };
        if id.to_string() != text {
            // Leading zeros: another spelling of an id is not that id.
            return Err(InvalidEntryId);
        }
        Ok(id)
    }
}

/// What an entry of the log records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// An event: its payload (none for a priming event) and the reconnect
    /// delay it tells the client, if any.
    Event {
        /// The event's payload, as the caller encoded it.
        data: Option<Bytes>,
        /// The SSE `retry` the event carries.
        retry: Option<Duration>,
    },
    /// The stream ended: its producer sent everything it had. Never sent
    /// to a client; a replay stops here.
    End,
}

/// One entry of a session's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedEvent {
    /// The entry's id in the session's log.
    pub id: EntryId,
    /// The tag of the stream the event belongs to.
    pub stream: String,
    /// What the entry records.
    pub record: Record,
}

/// Sessions' events in Redis Streams; see the [module documentation](self).
/// Cheap to clone; clones share one client.
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Inner>,
}

struct Inner {
    client: fred::clients::Client,
    /// In sentinel mode, the subscribers that hear a failover announced, as
    /// the storage's: without them the log would append to the old master,
    /// which acknowledges and later discards, until the sentinels demote it.
    sentinel_watch: Option<SentinelWatch>,
    closed: AtomicBool,
    /// The key prefix, and whether session ids are hashed in key names.
    names: crate::keys::KeyNames,
    errors: ErrorContext,
    limits: EventLimits,
    /// Permits for live tails, each holding a connection of its own.
    tails: Semaphore,
    append: Script,
}

impl Follower for Inner {
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
        // A log dropped without `close` leaves no subscriber behind; its
        // data client ends with its last handle.
        if !self.closed.swap(true, Ordering::AcqRel)
            && let Some(watch) = &self.sentinel_watch
        {
            watch.quit_in_background();
        }
    }
}

impl fmt::Debug for EventLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No address or credentials: the shape only.
        f.debug_struct("EventLog")
            .field("key_prefix", &self.inner.names.prefix())
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

/// KEYS[1]: a session's log. ARGV[1]: the per-session cap; ARGV[2]: the
/// session's TTL in ms; ARGV[3]: the stream tag; ARGV[4]: the kind (`e`
/// event, `x` end); ARGV[5]: the payload (empty for none); ARGV[6]: the
/// retry in ms (empty for none); ARGV[7]: `1` to create the log if there is
/// none, else append only to an existing log (`NOMKSTREAM`) and answer nil
/// without it. Appends, trims and sets the key's TTL in one step, so a log
/// never outlives its session by more than one TTL.
const APPEND: &str = r"
local id
if ARGV[7] == '1' then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
    's', ARGV[3], 'k', ARGV[4], 'd', ARGV[5], 'r', ARGV[6])
else
  id = redis.call('XADD', KEYS[1], 'NOMKSTREAM', 'MAXLEN', '~', ARGV[1], '*',
    's', ARGV[3], 'k', ARGV[4], 'd', ARGV[5], 'r', ARGV[6])
  if not id then
    return false
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return id
";

impl EventLog {
    /// Connects an event log for the Redis deployment `config` describes
    /// (its topology, TLS and credentials), with eager connect bounded by
    /// the connect timeout as the storage's.
    pub async fn connect(config: &RedisConfig, limits: EventLimits) -> Result<Self, Error> {
        let tls = connect::tls(config)?;
        let sentinel_watch = SentinelWatch::build(config, tls.as_ref())?;
        let client = connect::data_client_with(config, tls, false)?;
        let errors = ErrorContext::new(config);
        match config.connect_mode() {
            ConnectMode::Eager => crate::connect_eagerly(&client, config, &errors).await?,
            ConnectMode::Lazy => drop(client.connect()),
        }
        let log = Self {
            inner: Arc::new(Inner {
                client,
                sentinel_watch,
                closed: AtomicBool::new(false),
                names: crate::keys::KeyNames::new(
                    config.key_prefix().to_owned(),
                    config.hashed_ids(),
                ),
                errors,
                tails: Semaphore::new(limits.max_tails),
                limits,
                append: Script::new(APPEND),
            }),
        };
        if let (Some(watch), Some(sentinel)) = (&log.inner.sentinel_watch, config.sentinel_config())
        {
            watch.start(
                Arc::downgrade(&log.inner),
                sentinel.master_name().to_owned(),
            );
        }
        Ok(log)
    }

    /// The limits this log keeps.
    pub fn limits(&self) -> EventLimits {
        self.inner.limits
    }

    /// The key of session `session`'s log: `events:{key_prefix}{{id}}`,
    /// or with hashed ids (`[redis.hashed_ids]`) the hash in place of the id,
    /// as the session's own key has it when created (`keys`).
    pub fn key(&self, session: &SessionId) -> String {
        format!(
            "events:{}{{{}}}",
            self.inner.names.prefix(),
            self.inner.names.first_suffix(session)
        )
    }

    /// Appends `record` to stream `stream` of session `session`, creating
    /// the log if there is none, and returns its id once the server has it;
    /// the log's key then lives `ttl` more. An event over
    /// [`EventLimits::max_event_bytes`] is refused with
    /// [`Error::InvalidInput`] and nothing is written.
    pub async fn append(
        &self,
        session: &SessionId,
        stream: &str,
        record: &Record,
        ttl: Ttl,
    ) -> Result<EntryId, Error> {
        self.append_with(session, stream, record, ttl, true)
            .await?
            .ok_or_else(|| self.protocol("XADD answered no entry id"))
    }

    /// Like [`append`](Self::append), but only to a log that exists:
    /// `Ok(None)` and nothing written when there is none, because the
    /// session was deleted (which deletes its log) or its log expired. A
    /// stream's first event creates the log; the rest go through here, so
    /// that a producer still running when its session is deleted does not
    /// bring the log back for another TTL.
    pub async fn append_existing(
        &self,
        session: &SessionId,
        stream: &str,
        record: &Record,
        ttl: Ttl,
    ) -> Result<Option<EntryId>, Error> {
        self.append_with(session, stream, record, ttl, false).await
    }

    async fn append_with(
        &self,
        session: &SessionId,
        stream: &str,
        record: &Record,
        ttl: Ttl,
        create: bool,
    ) -> Result<Option<EntryId>, Error> {
        let (kind, data, retry) = match record {
            Record::Event { data, retry } => {
                let data = data.clone().unwrap_or_default();
                if data.len() > self.inner.limits.max_event_bytes {
                    return Err(Error::InvalidInput(format!(
                        "an event of {} bytes is over the log's cap of {} bytes",
                        data.len(),
                        self.inner.limits.max_event_bytes
                    )));
                }
                let retry = retry.map_or_else(String::new, |retry| retry.as_millis().to_string());
                ("e", data, retry)
            }
            Record::End => ("x", Bytes::new(), String::new()),
        };
        let ttl_ms = i64::try_from(ttl.get().as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        let args = vec![
            Value::from(self.inner.limits.max_events_per_session as i64),
            Value::from(ttl_ms),
            Value::from(stream),
            Value::from_static_str(kind),
            Value::Bytes(data),
            Value::from(retry),
            Value::from_static_str(if create { "1" } else { "0" }),
        ];
        let key = self.key(session);
        let id: Option<String> = self
            .inner
            .append
            .run(&self.inner.client, Bytes::from(key.clone()), args)
            .await
            .map_err(self.map(Operation::AppendEvent))?;
        let Some(id) = id else {
            return Ok(None);
        };
        let id = id
            .parse()
            .map_err(|_| self.protocol("XADD answered no entry id"))?;
        if let Some(confirm) = self.inner.limits.confirm {
            self.confirm(&key, confirm).await?;
        }
        Ok(Some(id))
    }

    /// `WAIT` on the connection that carried the append to `key`: in a
    /// cluster, the connection to the node of the key's slot.
    async fn confirm(&self, key: &str, confirm: Confirm) -> Result<(), Error> {
        let wait = CustomCommand::new_static(
            "WAIT",
            ClusterHash::Custom(fred::util::redis_keyslot(key.as_bytes())),
            false,
        );
        let timeout_ms = i64::try_from(confirm.timeout.as_millis()).unwrap_or(i64::MAX);
        // `WAIT` may take its whole timeout, on top of the round trip the
        // command timeout bounds.
        let options = Options {
            timeout: Some(confirm.timeout + self.inner.errors.command_timeout),
            ..Options::default()
        };
        let confirmed: i64 = self
            .inner
            .client
            .with_options(&options)
            .custom(
                wait,
                vec![
                    Value::from(i64::from(confirm.replicas)),
                    Value::from(timeout_ms),
                ],
            )
            .await
            .map_err(self.map(Operation::AppendEvent))?;
        if confirmed < i64::from(confirm.replicas) {
            return Err(Error::Backend {
                kind: session_core::BackendErrorKind::Unavailable,
                message: format!(
                    "append_event: {confirmed} of {} replicas confirmed the event within {} ms; \
                     it is on the master only and a failover may lose it",
                    confirm.replicas, timeout_ms
                ),
            });
        }
        Ok(())
    }

    /// The entry `id` of session `session`'s log, if the log holds it.
    pub async fn find(
        &self,
        session: &SessionId,
        id: EntryId,
    ) -> Result<Option<LoggedEvent>, Error> {
        let text = id.to_string();
        let reply: Value = self
            .inner
            .client
            .xrange(self.key(session), text.as_str(), text.as_str(), Some(1))
            .await
            .map_err(self.map(Operation::ReadEvents))?;
        Ok(self.entries(reply)?.into_iter().next())
    }

    /// Up to `count` entries of session `session`'s log after `id`, oldest
    /// first.
    pub async fn after(
        &self,
        session: &SessionId,
        id: EntryId,
        count: u64,
    ) -> Result<Vec<LoggedEvent>, Error> {
        let start = format!("({id}");
        let reply: Value = self
            .inner
            .client
            .xrange(self.key(session), start.as_str(), "+", Some(count.max(1)))
            .await
            .map_err(self.map(Operation::ReadEvents))?;
        self.entries(reply)
    }

    /// Waits up to `wait` for entries after `id` in session `session`'s log,
    /// on a connection of its own. `Ok(None)` when [`EventLimits::max_tails`]
    /// tails already wait; `Ok(Some(empty))` when nothing came in time.
    pub async fn wait_after(
        &self,
        session: &SessionId,
        id: EntryId,
        wait: Duration,
    ) -> Result<Option<Vec<LoggedEvent>>, Error> {
        let Ok(_permit) = self.inner.tails.try_acquire() else {
            return Ok(None);
        };
        // A connection of its own: XREAD BLOCK holds the connection it runs
        // on until an entry comes or the wait ends. It is closed after one
        // wait: tails are rare (a client resumed while its call still runs)
        // and a pool would hold idle connections for them.
        let tail = self.inner.client.clone_new();
        let result = async {
            tail.init().await?;
            let block = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
            // The command may block for `wait`, longer than the command
            // timeout allows any other command.
            let options = Options {
                timeout: Some(wait + self.inner.errors.command_timeout),
                ..Options::default()
            };
            tail.with_options(&options)
                .xread::<Value, _, _>(
                    Some(self.inner.limits.max_events_per_session),
                    Some(block),
                    self.key(session),
                    id.to_string(),
                )
                .await
        }
        .await;
        let timeout = self.inner.errors.command_timeout;
        tokio::spawn(async move {
            let _ = tokio::time::timeout(timeout, tail.quit()).await;
        });
        let reply = result.map_err(self.map(Operation::ReadEvents))?;
        // XREAD answers nil when the wait ended, else [[key, entries]] (the
        // log's client speaks RESP2, where that is an array, not a map).
        let entries = match reply {
            Value::Null => Vec::new(),
            Value::Array(mut streams) if streams.len() == 1 => match streams.pop() {
                Some(Value::Array(mut pair)) if pair.len() == 2 => {
                    self.entries(pair.pop().unwrap_or(Value::Null))?
                }
                _ => return Err(self.protocol("XREAD answered an unexpected shape")),
            },
            _ => return Err(self.protocol("XREAD answered an unexpected shape")),
        };
        Ok(Some(entries))
    }

    /// Deletes session `session`'s log; whether there was one.
    pub async fn delete(&self, session: &SessionId) -> Result<bool, Error> {
        let removed: i64 = self
            .inner
            .client
            .del(self.key(session))
            .await
            .map_err(self.map(Operation::Delete))?;
        Ok(removed > 0)
    }

    /// Closes the log's connections.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        if let Some(watch) = &self.inner.sentinel_watch {
            watch.quit().await;
        }
        let _ =
            tokio::time::timeout(self.inner.errors.command_timeout, self.inner.client.quit()).await;
    }

    fn map(&self, operation: Operation) -> impl Fn(fred::error::Error) -> Error + '_ {
        move |error| self.inner.errors.map(operation, &error)
    }

    fn protocol(&self, message: &str) -> Error {
        Error::Backend {
            kind: session_core::BackendErrorKind::Protocol,
            message: message.to_owned(),
        }
    }

    /// Parses `[[id, [field, value, ...]], ...]`. An entry this log did not
    /// write (another writer's fields) is corrupt, not skipped: it would
    /// otherwise end a replay early or late without a word.
    fn entries(&self, reply: Value) -> Result<Vec<LoggedEvent>, Error> {
        let Value::Array(items) = reply else {
            return match reply {
                Value::Null => Ok(Vec::new()),
                _ => Err(self.protocol("the log answered an unexpected shape")),
            };
        };
        items.into_iter().map(|item| self.entry(item)).collect()
    }

    fn entry(&self, item: Value) -> Result<LoggedEvent, Error> {
        let corrupt = |what: &str| Error::Backend {
            kind: session_core::BackendErrorKind::Protocol,
            message: format!("an entry of the event log {what}"),
        };
        let Value::Array(mut pair) = item else {
            return Err(self.protocol("the log answered an unexpected shape"));
        };
        if pair.len() != 2 {
            return Err(self.protocol("the log answered an unexpected shape"));
        }
        let fields = pair.pop().unwrap_or(Value::Null);
        let id = pair
            .pop()
            .and_then(|id| id.into_string())
            .and_then(|id| id.parse::<EntryId>().ok())
            .ok_or_else(|| self.protocol("the log answered an entry without id"))?;
        let fields = match fields {
            Value::Array(fields) => fields,
            _ => return Err(corrupt("has no fields")),
        };
        let mut stream = None;
        let mut kind = None;
        let mut data = None;
        let mut retry = None;
        let mut fields = fields.into_iter();
        while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
            let value = value
                .into_bytes()
                .ok_or_else(|| corrupt("has a field that is no string"))?;
            match name.as_bytes() {
                Some(b"s") => stream = Some(value),
                Some(b"k") => kind = Some(value),
                Some(b"d") => data = Some(value),
                Some(b"r") => retry = Some(value),
                _ => return Err(corrupt("has a field this log never writes")),
            }
        }
        let stream = stream
            .and_then(|stream| String::from_utf8(stream.to_vec()).ok())
            .ok_or_else(|| corrupt("names no stream"))?;
        let record = match kind.as_deref() {
            Some(b"x") => Record::End,
            Some(b"e") => {
                let retry = match retry.as_deref() {
                    None | Some(b"") => None,
                    Some(ms) => Some(Duration::from_millis(
                        std::str::from_utf8(ms)
                            .ok()
                            .and_then(|ms| ms.parse().ok())
                            .ok_or_else(|| corrupt("has a retry that is no number"))?,
                    )),
                };
                Record::Event {
                    data: data.filter(|data| !data.is_empty()),
                    retry,
                }
            }
            _ => return Err(corrupt("has no known kind")),
        };
        Ok(LoggedEvent { id, stream, record })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_parse_only_canonical_text() {
        let id: EntryId = "1733230000000-7".parse().unwrap();
        assert_eq!(id.to_string(), "1733230000000-7");
        assert!(EntryId::ZERO < id);
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "1",
            "1-2-3",
            "+1-2",
            "01-2",
            "1-02",
            "a-1",
            "1-b",
            "1 -2",
            "99999999999999999999999-0",
        ] {
            assert_eq!(bad.parse::<EntryId>(), Err(InvalidEntryId), "{bad:?}");
        }
    }

    #[test]
    fn limits_keep_their_floors() {
        let limits = EventLimits::default()
            .max_events_per_session(0)
            .max_event_bytes(0)
            .max_tails(0);
        assert_eq!(limits.events_per_session(), 1);
        assert_eq!(limits.event_bytes(), 1);
        assert_eq!(limits.tails(), 0);
    }
}
