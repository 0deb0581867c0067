//! The owner index: which sessions an owner has, so that they can be listed
//! and revoked in O(sessions of that owner).
//!
//! # Layout
//!
//! Each owner has one sorted set, `{key_prefix}owner:{digest}`, where
//! `digest` is the first 16 bytes of `Owner::digest` in hex (the key holds
//! neither the subject, which is personal data, nor any byte a key cannot
//! hold). Its members are session ids; a member's score is the time of the
//! last write that added it, in milliseconds since the Unix epoch.
//!
//! # Why it stays exact without keyspace notifications
//!
//! The index is kept by the writes themselves (an index kept from keyspace
//! notifications goes stale whenever a notification is missed), and it is
//! allowed to hold too much but never too little:
//!
//! - **Too much** is pruned on read. A listing reads every member's session
//!   and answers only those that are live and owned by the owner, so an id
//!   whose session expired or was deleted is never listed; such members are
//!   removed, once they are older than a grace period (below).
//! - **Never too little.** An owned session is added to the index in the
//!   same pipeline as its create, ahead of it; if the index write fails, the
//!   session just created is deleted again and the create fails, so no live
//!   owned session is missing from its index. Every later write of an owned
//!   session adds it again first, and so does a read once half a TTL has
//!   passed since the session was last written, before its TTL is pushed
//!   past what the index was given.
//! - **Its own TTL.** Each of those index writes makes the index live at
//!   least twice the session's TTL from then, and never shortens it. The
//!   session lives at most one TTL past its last read or write, so the
//!   index outlives every one of its sessions, and outlives the last of them
//!   by at most one TTL (the longest TTL among the owner's sessions).
//!
//! The grace period covers the one race of the pipeline: an index entry
//! lands a moment before its session, and a listing that ran between the
//! two would see no session. Members younger than the grace period are
//! therefore never pruned, only left out of the answer.
//!
//! # Cluster
//!
//! The index and the sessions are separate keys in separate slots: no
//! script or transaction spans them, and no hash tag is needed (session
//! keys must stay computable from the id alone). Each command touches one
//! key; consistency comes from the ordering above, not from atomicity
//! across keys.
//!
//! # Revocation
//!
//! A revocation reads the index once, then deletes each session with a
//! script that deletes only if the stored owner tag is the owner's, so a
//! session id that meanwhile belongs to someone else is left alone. A
//! session created while it runs is in the index or not by the time the
//! index is read: if it is, it is deleted; if not, it survives and is
//! listed afterwards.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fred::bytes::Bytes;
use fred::interfaces::{KeysInterface, SortedSetsInterface};
use fred::prelude::Value;
use futures_util::future::join_all;
use session_core::{BackendErrorKind, Error, Operation, Owner, Result, Session, SessionId, Ttl};
use tokio::time::Instant;

use crate::keys::Name;
use crate::{RedisStorage, millis};

/// The least grace period before a member without a live session is pruned:
/// see the module documentation. It is at least twice the command timeout,
/// the longest a session write may land after its index write.
const PRUNE_GRACE: Duration = Duration::from_secs(10);

impl RedisStorage {
    /// The key of `owner`'s index.
    pub fn owner_index_key(&self, owner: &Owner) -> String {
        use std::fmt::Write;
        let prefix = self.inner.names.prefix();
        let mut key = String::with_capacity(prefix.len() + 6 + 32);
        key.push_str(prefix);
        key.push_str("owner:");
        for byte in &owner.digest()[..16] {
            // Writing to a String cannot fail.
            let _ = write!(key, "{byte:02x}");
        }
        key
    }

    /// Adds session `id` to `owner`'s index and makes the index live at
    /// least two TTLs from now.
    async fn index(
        &self,
        operation: Operation,
        owner: &Owner,
        id: &SessionId,
        ttl: Ttl,
        started: Instant,
    ) -> Result<()> {
        let key = Bytes::from(self.owner_index_key(owner).into_bytes());
        let score = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| since.as_millis())
            .unwrap_or_default();
        let args = vec![
            Value::from(self.inner.names.first_suffix(id)),
            Value::from(i64::try_from(score).unwrap_or(i64::MAX)),
            Value::from(millis(ttl).saturating_mul(2)),
        ];
        let client = &self.inner.client;
        let script = &self.inner.scripts.index;
        let _: Value = self
            .redirected(started, || script.run(client, key.clone(), args.clone()))
            .await
            .map_err(|error| self.index_error(operation, &error))?;
        Ok(())
    }

    /// A failed index write, named as such: the index key may hold a value
    /// of another type, written by something else under the prefix.
    fn index_error(&self, operation: Operation, error: &fred::error::Error) -> Error {
        match self.map(operation)(error.clone()) {
            Error::Backend {
                kind: BackendErrorKind::WrongType,
                message,
            } => Error::backend(
                BackendErrorKind::WrongType,
                format!("{message} (the key of an owner's session index holds another type)"),
            ),
            other => other,
        }
    }

    /// Creates an owned session: its index entry and the session in one
    /// pipeline, the index first (see the module documentation).
    pub(crate) async fn create_owned(
        &self,
        owner: &Owner,
        session: &Session,
        ttl: Ttl,
    ) -> Result<bool> {
        self.check_open()?;
        let started = Instant::now();
        let id = session.id();
        // Encoded before anything is sent: a session this storage cannot
        // write (an owner in stored format 1) leaves no index entry behind.
        let value = self.encode_new(session, &self.key_bytes(&id))?;
        // Joined, not awaited in turn: fred sends both commands at once,
        // the index write first, so the pair costs one round trip.
        let (indexed, created) = tokio::join!(
            self.index(Operation::Create, owner, &id, ttl, started),
            self.set_new(session, value, ttl),
        );
        match (indexed, created) {
            (Ok(()), created) => created,
            (Err(error), Ok(true)) => {
                // The session exists but may be missing from its index,
                // where no listing or revocation would find it: undo the
                // create, and report the failure.
                self.inner.refreshed.remove(&id);
                self.forget(&id);
                let key = self.key_bytes(&id);
                let undone: std::result::Result<i64, _> =
                    self.within(started, self.inner.client.del(key)).await;
                if let Err(undo) = undone {
                    tracing::warn!(
                        error = %self.map(Operation::Create)(undo),
                        "an owned session whose index write failed could not be deleted again; \
                         it expires with its TTL"
                    );
                }
                Err(error)
            }
            (Err(error), _) => Err(error),
        }
    }

    /// Before a write of an owned session, adds it to its owner's index (a
    /// write refused afterwards leaves an entry that listing prunes). Does
    /// nothing for a session without owner.
    pub(crate) async fn index_before_write(
        &self,
        operation: Operation,
        session: &Session,
        ttl: Ttl,
    ) -> Result<()> {
        let Some(owner) = session.owner() else {
            return Ok(());
        };
        self.check_open()?;
        self.index(operation, owner, &session.id(), ttl, Instant::now())
            .await
    }

    /// After a read that pushed an owned session's TTL forward, renews its
    /// index when half a TTL has passed since the session was last written
    /// (the last time its index was renewed for sure).
    pub(crate) async fn index_after_read(
        &self,
        session: &Session,
        ttl: Ttl,
        started: Instant,
    ) -> Result<()> {
        let Some(owner) = session.owner() else {
            return Ok(());
        };
        let since_write = SystemTime::now()
            .duration_since(session.updated_at())
            .unwrap_or_default();
        if since_write < ttl.get() / 2 {
            return Ok(());
        }
        self.index(Operation::Get, owner, &session.id(), ttl, started)
            .await
    }

    /// The index of `owner`: each member, the session key it names with
    /// the session id when the name holds it (`None` for a member that
    /// names no session key of this storage), and its score.
    async fn members(
        &self,
        operation: Operation,
        owner: &Owner,
    ) -> Result<(Bytes, Vec<(Value, Option<Member>, f64)>)> {
        let key = Bytes::from(self.owner_index_key(owner).into_bytes());
        let reply: Value = self
            .inner
            .client
            .zrange(key.clone(), 0, -1, None, false, None, true)
            .await
            .map_err(|error| self.index_error(operation, &error))?;
        let members = pairs(reply)
            .into_iter()
            .map(|(member, text, score)| {
                let key = text.and_then(|text| self.member_key(&text));
                (member, key, score)
            })
            .collect();
        Ok((key, members))
    }

    /// The session key an index member names: the member is the suffix of
    /// the name the session was written under (`keys`).
    fn member_key(&self, member: &str) -> Option<Member> {
        let key = self.inner.names.of_member(member);
        let id = match self.inner.names.parse(&key)? {
            Name::Plain(id) => Some(id),
            Name::Hashed(_) => None,
        };
        Some(Member { key, id })
    }

    /// Decodes the value under an index member's key: by its id when the
    /// member holds it, else checking that the session found is one whose
    /// name is that key.
    fn decode_member(&self, value: &[u8], member: &Member) -> Result<Session> {
        if let Some(id) = &member.id {
            return self.decode(value, &member.key, id);
        }
        let plain = match &self.keyring {
            Some(keyring) => keyring.open(value, &member.key)?.into_owned(),
            None => value.to_vec(),
        };
        let session = session_core::codec::decode_session(&plain)?;
        let id = session.id();
        let names = &self.inner.names;
        if names.first(&id) != member.key && names.second(&id).as_ref() != Some(&member.key) {
            return Err(session_core::CodecError::Decode {
                codec: session_core::Codec::from_id(plain[3]).unwrap_or_default(),
                message: "the stored session has another id than its key".into(),
            }
            .into());
        }
        Ok(session)
    }

    /// The live sessions of `owner`; prunes members whose session is gone.
    pub(crate) async fn owned_sessions(&self, owner: &Owner) -> Result<Vec<Arc<Session>>> {
        self.check_open()?;
        let (index, members) = self.members(Operation::ListOwned, owner).await?;
        let client = &self.inner.client;
        let reads = members.iter().map(|(_, member, _)| async move {
            match member {
                Some(member) => client
                    .get::<Option<Bytes>, _>(member.key.clone())
                    .await
                    .map(Some),
                None => Ok(None),
            }
        });
        let values = join_all(reads).await;
        let cutoff = self.prune_cutoff();
        let mut live = Vec::new();
        let mut stale = Vec::new();
        for ((member, key, score), value) in members.into_iter().zip(values) {
            let value = value.map_err(self.map(Operation::ListOwned))?;
            let session = match (key, value.flatten()) {
                (Some(key), Some(bytes)) => Some(self.decode_member(&bytes, &key)?),
                _ => None,
            };
            match session {
                Some(session) if session.owner() == Some(owner) => live.push(Arc::new(session)),
                _ if score < cutoff => stale.push(member),
                _ => {}
            }
        }
        self.prune(&index, stale).await;
        Ok(live)
    }

    /// Deletes every session in `owner`'s index that is owned by `owner`.
    pub(crate) async fn revoke(&self, owner: &Owner) -> Result<Vec<SessionId>> {
        self.check_open()?;
        let (index, members) = self.members(Operation::RevokeOwned, owner).await?;
        let client = &self.inner.client;
        let script = &self.inner.scripts.delete_owned;
        let tag = Value::Bytes(Bytes::copy_from_slice(&owner.tag()));
        let deletes = members.iter().map(|(_, member, _)| {
            let tag = tag.clone();
            async move {
                match member {
                    Some(member) => {
                        script
                            .run::<Option<Bytes>>(client, member.key.clone(), vec![tag])
                            .await
                    }
                    None => Ok(None),
                }
            }
        });
        let outcomes = join_all(deletes).await;
        let cutoff = self.prune_cutoff();
        let mut revoked = Vec::new();
        let mut stale = Vec::new();
        let mut failure = None;
        for ((member, key, score), outcome) in members.into_iter().zip(outcomes) {
            match (outcome, key) {
                (Ok(Some(deleted)), Some(key)) => {
                    // A hashed name does not say whose session it was; the
                    // deleted value does.
                    let id = key.id.or_else(|| match self.decode_member(&deleted, &key) {
                        Ok(session) => Some(session.id()),
                        Err(error) => {
                            tracing::warn!(
                                %error,
                                "revoked a session whose value does not decode; its id is not reported"
                            );
                            None
                        }
                    });
                    if let Some(id) = id {
                        self.inner.refreshed.remove(&id);
                        self.forget(&id);
                        revoked.push(id);
                    }
                    stale.push(member);
                }
                (Ok(_), _) if score < cutoff => stale.push(member),
                (Ok(_), _) => {}
                (Err(error), _) => {
                    failure.get_or_insert(error);
                }
            }
        }
        self.prune(&index, stale).await;
        match failure {
            // Some sessions may not be deleted: the caller must know, and
            // may call again (what was revoked stays revoked).
            Some(error) => Err(self.map(Operation::RevokeOwned)(error)),
            None => Ok(revoked),
        }
    }

    /// Members scored before this are old enough to prune.
    fn prune_cutoff(&self) -> f64 {
        let grace = PRUNE_GRACE.max(self.inner.errors.command_timeout * 2);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        now.saturating_sub(grace).as_millis() as f64
    }

    /// Removes members from an index; a failure only leaves them for the
    /// next listing, so it is logged, not returned.
    async fn prune(&self, index: &Bytes, members: Vec<Value>) {
        if members.is_empty() {
            return;
        }
        let removed: std::result::Result<i64, _> =
            self.inner.client.zrem(index.clone(), members).await;
        if let Ok(removed) = &removed {
            metrics::counter!("session_owner_index_pruned_total", "backend" => "redis")
                .increment(u64::try_from(*removed).unwrap_or(0));
        }
        if let Err(error) = removed {
            tracing::debug!(
                error = %self.map(Operation::ListOwned)(error),
                "pruning an owner index failed; the next listing prunes it"
            );
        }
    }
}

/// An index member that names a session key of this storage.
pub(crate) struct Member {
    /// The session's key.
    key: Bytes,
    /// The session's id, when the key holds it (not when hashed).
    id: Option<SessionId>,
}

/// The `(member, text, score)` triples of a `ZRANGE … WITHSCORES` reply,
/// flat (RESP2) or nested (RESP3).
fn pairs(reply: Value) -> Vec<(Value, Option<String>, f64)> {
    let Value::Array(items) = reply else {
        return Vec::new();
    };
    let entry = |member: Value, score: Value| {
        let text = member.as_str().map(|text| text.into_owned());
        let score = score.as_f64().unwrap_or(0.0);
        (member, text, score)
    };
    if items.iter().all(|item| matches!(item, Value::Array(_))) {
        items
            .into_iter()
            .filter_map(|item| match item {
                Value::Array(pair) => {
                    let [member, score]: [Value; 2] = pair.try_into().ok()?;
                    Some(entry(member, score))
                }
                _ => None,
            })
            .collect()
    } else {
        let mut items = items.into_iter();
        let mut entries = Vec::new();
        while let (Some(member), Some(score)) = (items.next(), items.next()) {
            entries.push(entry(member, score));
        }
        entries
    }
}
