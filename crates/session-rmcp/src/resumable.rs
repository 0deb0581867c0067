//! Resumable SSE streams across replicas: rmcp's `LocalSessionManager`
//! with every event of a session written to a shared [`EventLog`] before
//! it is sent.
//!
//! A handshake-era client whose SSE stream broke sends `GET` with the
//! session id and `Last-Event-ID`. rmcp's own manager answers that from the
//! memory of the replica that produced the stream, so behind a balancer
//! without affinity the client, landing elsewhere, got nothing: not the
//! progress it missed, not the result of a call still running.
//! [`ResumableSessions`] keeps rmcp's manager for everything else and
//! changes three things:
//!
//! - **Every stream is drained by a task of its own** (a request's stream
//!   from `create_stream`, the standalone one from
//!   `create_standalone_stream`), which appends each event to the log and
//!   only then hands it to the HTTP response, with an id naming the stream
//!   and the log entry (`<stream tag>:<entry id>`). The task goes on when
//!   the client's connection breaks, so the events of a call that is still
//!   running reach the log whoever listens; when rmcp ends the stream (the
//!   response was sent) it appends an end marker. An event the log cannot
//!   take (Redis down, over the size cap) is still sent, without an id: a
//!   client can resume from the event before it, and that resumption will
//!   not see it.
//! - **`resume` reads the log, bound to the session**: the id must name an
//!   entry of this session's log and of the stream it says, or the answer
//!   is an unknown event (which rmcp turns into an empty `200` stream, so an
//!   `EventSource` does not retry forever). An id of another session's
//!   stream names no entry of this session's log, so it replays nothing;
//!   the session itself is bound to its owner by the gateway's guard, which
//!   refuses another principal's `GET` before it gets here. The replay sends
//!   what the log holds after the id, then tails it (`XREAD BLOCK`) for what
//!   the producing replica appends, until the end marker, until nothing came
//!   for the tail timeout (the client resumes again from its last id), or
//!   until the client goes.
//! - **The session lives while a stream does**: the drain and the replay
//!   read the session every quarter TTL, which slides its TTL, and every
//!   append sets the log's TTL to the session's. A closed session's log is
//!   deleted with it, and stays deleted: only a stream's first event may
//!   create the log, so a call still running on another replica when its
//!   session is deleted sends the rest of its events unlogged.
//!
//! Without a log ([`ResumableSessions::local`], the gateway on local
//! storage) it is rmcp's manager unchanged: one replica, events in memory.
//!
//! The 2026-07-28 revision has no sessions and no `GET` streams; rmcp's
//! stateless `EventStore` path is not used (`event_store` stays `None`).

use std::fmt;
use std::pin::pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError,
};
use rmcp::transport::streamable_http_server::session::{
    RestoreOutcome, ServerSseMessage, SessionId as RmcpSessionId, SessionManager,
};
use session_core::{Error, Manager, SessionId, Ttl};
use session_redis::events::{EntryId, Record};
use session_redis::{EventLimits, EventLog};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

/// How many events wait between a drain or a replay and the HTTP
/// response: rmcp's own channel capacity.
const CHANNEL_CAPACITY: usize = 16;
/// How many log entries one read of a replay asks for.
const REPLAY_BATCH: u64 = 100;

/// Why a stream could not be resumed or served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// rmcp's own session manager refused.
    #[error(transparent)]
    Local(#[from] LocalSessionManagerError),
    /// The session store or the event log failed.
    #[error(transparent)]
    Store(#[from] Error),
    /// The `Last-Event-ID` names no event of this session's streams: never
    /// issued, of another session, malformed, or trimmed or expired.
    #[error("unknown event id")]
    UnknownEvent,
}

/// What became of an event's append.
enum Appended {
    /// In the log, under this SSE id.
    Id(String),
    /// Not in the log (it failed, or the event could not be encoded): sent
    /// without an id.
    NoId,
    /// The session's log no longer exists: the session was deleted.
    Gone,
}

/// The settings of resumable streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumeSettings {
    /// How long a replay waits for new events of a stream before it ends
    /// (the client then resumes again from its last id).
    pub tail_timeout: Duration,
    /// How long one blocking read of a tail waits.
    pub tail_wait: Duration,
}

impl Default for ResumeSettings {
    /// A 30 s tail timeout, in waits of 5 s.
    fn default() -> Self {
        Self {
            tail_timeout: Duration::from_secs(30),
            tail_wait: Duration::from_secs(5),
        }
    }
}

/// rmcp's session manager with resumable streams; see the
/// [module documentation](self).
pub struct ResumableSessions {
    local: LocalSessionManager,
    log: Option<Shared>,
}

/// What the drain and replay tasks share.
#[derive(Clone)]
struct Shared {
    log: EventLog,
    manager: Manager,
    settings: ResumeSettings,
}

impl fmt::Debug for ResumableSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResumableSessions")
            .field("log", &self.log.as_ref().map(|shared| &shared.log))
            .finish_non_exhaustive()
    }
}

impl ResumableSessions {
    /// rmcp's manager alone: events stay in this replica's memory.
    pub fn local(local: LocalSessionManager) -> Self {
        Self { local, log: None }
    }

    /// rmcp's manager with every stream's events in `log`, the sessions'
    /// TTLs slid through `manager`.
    pub fn with_log(
        local: LocalSessionManager,
        log: EventLog,
        manager: Manager,
        settings: ResumeSettings,
    ) -> Self {
        Self {
            local,
            log: Some(Shared {
                log,
                manager,
                settings,
            }),
        }
    }

    /// rmcp's manager underneath.
    pub fn local_manager(&self) -> &LocalSessionManager {
        &self.local
    }

    /// The event log, when streams are resumable across replicas.
    pub fn event_log(&self) -> Option<&EventLog> {
        self.log.as_ref().map(|shared| &shared.log)
    }

    /// The limits of the event log, if there is one.
    pub fn limits(&self) -> Option<EventLimits> {
        self.event_log().map(EventLog::limits)
    }
}

/// An event id as this module writes it: `<16 hex digits>:<entry id>`.
fn parse_event_id(text: &str) -> Option<(&str, EntryId)> {
    let (tag, entry) = text.split_once(':')?;
    let is_tag = tag.len() == 16
        && tag
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !is_tag {
        return None;
    }
    Some((tag, entry.parse().ok()?))
}

/// A fresh stream tag: 64 random bits, unique among a session's streams
/// for all practical purposes (and a collision would only let a client
/// resume one stream of its own session from the other's ids).
fn new_tag() -> String {
    format!("{:016x}", uuid::Uuid::new_v4().as_u64_pair().0)
}

impl Shared {
    fn ttl(&self) -> Ttl {
        self.manager.expiry().ttl()
    }

    /// Reads the session, which slides its TTL; whether it still exists.
    async fn touch(&self, session: &SessionId) -> bool {
        match self.manager.get(session).await {
            Ok(found) => found.is_some(),
            // A store that failed for a moment does not end a stream.
            Err(error) => {
                tracing::debug!(%session, %error, "cannot slide the TTL of a streaming session");
                true
            }
        }
    }

    /// The interval of [`touch`](Self::touch): a quarter TTL.
    fn touch_every(&self) -> Duration {
        (self.manager.ttl() / 4).max(Duration::from_millis(10))
    }

    /// Appends `message` to stream `tag` and returns the id to send it
    /// with. The stream's first event may create the session's log; later
    /// ones are appended only while the log exists. [`Appended::Gone`]: the
    /// session was deleted (with its log) while the stream ran.
    async fn append(
        &self,
        session: &SessionId,
        tag: &str,
        message: &ServerSseMessage,
        first: bool,
    ) -> Appended {
        let data = match message
            .message
            .as_deref()
            .map(serde_json::to_vec)
            .transpose()
        {
            Ok(data) => data.map(Into::into),
            Err(error) => {
                tracing::warn!(%session, %error, "cannot encode an event; sent without id");
                return Appended::NoId;
            }
        };
        let record = Record::Event {
            data,
            retry: message.retry,
        };
        let appended = if first {
            self.log
                .append(session, tag, &record, self.ttl())
                .await
                .map(Some)
        } else {
            self.log
                .append_existing(session, tag, &record, self.ttl())
                .await
        };
        match appended {
            Ok(Some(entry)) => Appended::Id(format!("{tag}:{entry}")),
            Ok(None) => Appended::Gone,
            Err(error) => {
                tracing::warn!(
                    %session,
                    %error,
                    "cannot store an event: it is sent without id and cannot be resumed"
                );
                Appended::NoId
            }
        }
    }

    /// Drains `inner` into the log and, while the client listens, into the
    /// returned stream.
    fn drain<S>(&self, session: SessionId, inner: S) -> ReceiverStream<ServerSseMessage>
    where
        S: Stream<Item = ServerSseMessage> + Send + 'static,
    {
        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        let shared = self.clone();
        tokio::spawn(async move {
            let tag = new_tag();
            let mut inner = pin!(inner);
            let mut listening = true;
            // Until the first event is in the log, the next append may
            // create it (a failed first append leaves that to the next).
            let mut logged = false;
            let mut gone = false;
            let mut touch = tokio::time::interval_at(
                Instant::now() + shared.touch_every(),
                shared.touch_every(),
            );
            loop {
                let message = tokio::select! {
                    message = inner.next() => message,
                    _ = touch.tick() => {
                        shared.touch(&session).await;
                        continue;
                    }
                };
                let Some(mut message) = message else { break };
                if !gone {
                    match shared.append(&session, &tag, &message, !logged).await {
                        Appended::Id(id) => {
                            logged = true;
                            message.event_id = Some(id);
                        }
                        Appended::NoId => message.event_id = None,
                        // The session was deleted: nothing more is logged,
                        // and what is still sent cannot be resumed.
                        Appended::Gone => {
                            tracing::debug!(%session, "the session's log is gone; events go unlogged");
                            gone = true;
                            message.event_id = None;
                        }
                    }
                } else {
                    message.event_id = None;
                }
                // The client may be gone; the events still go to the log, so
                // that it finds them when it resumes, here or elsewhere.
                if listening && sender.send(message).await.is_err() {
                    listening = false;
                }
            }
            if gone || !logged {
                return;
            }
            match shared
                .log
                .append_existing(&session, &tag, &Record::End, shared.ttl())
                .await
            {
                Ok(_) => {}
                Err(error) => tracing::warn!(
                    %session,
                    %error,
                    "cannot mark the end of a stream: a resumed copy ends at its tail timeout"
                ),
            }
        });
        ReceiverStream::new(receiver)
    }

    /// Checks that `last_event_id` names an event of `session` and starts
    /// its replay.
    async fn resume(
        &self,
        session: SessionId,
        last_event_id: &str,
    ) -> Result<ReceiverStream<ServerSseMessage>, StreamError> {
        let (tag, entry) = parse_event_id(last_event_id).ok_or(StreamError::UnknownEvent)?;
        match self.log.find(&session, entry).await? {
            Some(found) if found.stream == tag => {}
            _ => return Err(StreamError::UnknownEvent),
        }
        let tag = tag.to_owned();
        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        let shared = self.clone();
        tokio::spawn(async move {
            if let Err(error) = shared.replay(&session, &tag, entry, &sender).await {
                tracing::warn!(%session, %error, "a resumed stream ended early");
            }
        });
        Ok(ReceiverStream::new(receiver))
    }

    /// Sends what stream `tag` has after `last`, then what comes, until
    /// its end, the tail timeout, or the client leaving.
    async fn replay(
        &self,
        session: &SessionId,
        tag: &str,
        mut last: EntryId,
        sender: &mpsc::Sender<ServerSseMessage>,
    ) -> Result<(), Error> {
        let mut heard = Instant::now();
        let mut touched = Instant::now();
        loop {
            if touched.elapsed() >= self.touch_every() {
                touched = Instant::now();
                if !self.touch(session).await {
                    return Ok(());
                }
            }
            let mut batch = self.log.after(session, last, REPLAY_BATCH).await?;
            if batch.is_empty() {
                let left = self.settings.tail_timeout.saturating_sub(heard.elapsed());
                if left.is_zero() {
                    return Ok(());
                }
                let wait = left.min(self.settings.tail_wait);
                match self.log.wait_after(session, last, wait).await? {
                    Some(entries) => batch = entries,
                    // No tail free: what was stored has been sent.
                    None => return Ok(()),
                }
            }
            for event in batch {
                last = event.id;
                if event.stream != tag {
                    continue;
                }
                heard = Instant::now();
                let (data, retry) = match event.record {
                    Record::End => return Ok(()),
                    Record::Event { data, retry } => (data, retry),
                };
                let id = format!("{tag}:{}", event.id);
                // The message type is non-exhaustive: built by its
                // constructors, then given the stored retry.
                let mut sse = match data {
                    None => ServerSseMessage::priming(id, retry.unwrap_or_default()),
                    Some(data) => match serde_json::from_slice::<ServerJsonRpcMessage>(&data) {
                        Ok(message) => ServerSseMessage::new(id, message),
                        Err(error) => {
                            return Err(Error::backend(
                                session_core::BackendErrorKind::Protocol,
                                format!("an event in the log is not a JSON-RPC message: {error}"),
                            ));
                        }
                    },
                };
                sse.retry = retry;
                if sender.send(sse).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// The session id of an rmcp id: rmcp's are UUIDs, and so are the store's.
fn session_id(id: &RmcpSessionId) -> Result<SessionId, StreamError> {
    Ok(SessionId::parse(id)?)
}

impl SessionManager for ResumableSessions {
    type Error = StreamError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(RmcpSessionId, Self::Transport), Self::Error> {
        Ok(self.local.create_session().await?)
    }

    async fn initialize_session(
        &self,
        id: &RmcpSessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        Ok(self.local.initialize_session(id, message).await?)
    }

    async fn has_session(&self, id: &RmcpSessionId) -> Result<bool, Self::Error> {
        Ok(self.local.has_session(id).await?)
    }

    async fn close_session(&self, id: &RmcpSessionId) -> Result<(), Self::Error> {
        self.local.close_session(id).await?;
        if let Some(shared) = &self.log {
            shared.log.delete(&session_id(id)?).await?;
        }
        Ok(())
    }

    async fn create_stream(
        &self,
        id: &RmcpSessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let inner = self.local.create_stream(id, message).await?;
        Ok(match &self.log {
            Some(shared) => shared.drain(session_id(id)?, inner).left_stream(),
            None => inner.right_stream(),
        })
    }

    async fn accept_message(
        &self,
        id: &RmcpSessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        Ok(self.local.accept_message(id, message).await?)
    }

    async fn create_standalone_stream(
        &self,
        id: &RmcpSessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let inner = self.local.create_standalone_stream(id).await?;
        Ok(match &self.log {
            Some(shared) => shared.drain(session_id(id)?, inner).left_stream(),
            None => inner.right_stream(),
        })
    }

    async fn resume(
        &self,
        id: &RmcpSessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(match &self.log {
            Some(shared) => shared
                .resume(session_id(id)?, &last_event_id)
                .await?
                .left_stream(),
            None => self.local.resume(id, last_event_id).await?.right_stream(),
        })
    }

    async fn restore_session(
        &self,
        id: RmcpSessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        Ok(self.local.restore_session(id).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_name_a_tag_and_an_entry() {
        let tag = new_tag();
        assert_eq!(tag.len(), 16);
        let id = format!("{tag}:1733230000000-3");
        let (parsed, entry) = parse_event_id(&id).unwrap();
        assert_eq!(parsed, tag);
        assert_eq!(entry.to_string(), "1733230000000-3");
        for bad in [
            "",
            "0",
            "0/1",
            "3/0",
            ":1-0",
            "0123456789abcdef",
            "0123456789abcdef:",
            "0123456789ABCDEF:1-0",
            "0123456789abcde:1-0",
            "0123456789abcdefa:1-0",
            "0123456789abcdef:1-0:2",
            "0123456789abcdef:01-0",
        ] {
            assert!(parse_event_id(bad).is_none(), "{bad:?}");
        }
    }
}
