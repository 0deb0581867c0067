//! Key names: where a session is stored, and what a key name says back.
//!
//! By default a session lives under `{key_prefix}{session_id}`. With
//! hashed ids (`[redis.hashed_ids]`, `session_config::HashedIds`) it lives
//! under `{key_prefix}{hash}` instead, where `hash` is the first 16 bytes of
//! HMAC-SHA256 of the session id under a key of the operator's, in
//! lowercase hex (32 characters). A dump of Redis then lists no session id
//! (in key names or owner indexes), and a name cannot be turned back into
//! the id it stands for, even with the key: session ids are bearer
//! credentials, and reading Redis must not be enough to replay one.
//!
//! Whatever needs an id from a key name works from the stored value
//! instead, or from the hash alone:
//!
//! - the local cache files copies under a [`Slot`] (16 bytes: the id's
//!   bytes, or its hash), which both an id and an invalidated key name give;
//! - an owner's index holds the name's suffix (the hash), and a listing
//!   reads the session, and with it the id, from the value;
//! - `count` counts the names whose suffix is an id or a hash.
//!
//! # Migration from plain keys
//!
//! Turning hashing on would hide every session stored under its plain key.
//! So a [`HashPhase`] says which names a session may have: during the
//! migration, a session is looked up under both names, and stays under the
//! one it was created under (nothing is moved, so no write races a move).
//! New sessions are created under the phase's first name. The phases, in
//! the order a rolling deploy goes through them, are `PlainFirst` (every
//! replica finds hashed sessions before any creates one), `HashedFirst`,
//! and, once the last plain session has expired, `Hashed`.

use fred::bytes::Bytes;
use hmac::{Hmac, Mac};
use session_config::{HashPhase, HashedIds};
use session_core::SessionId;
use sha2::Sha256;

/// What the local cache files a session's copy under: its id's 16 bytes
/// without hashing, the first 16 bytes of its hash with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Slot(pub(crate) u128);

/// The length of a hashed name's suffix: 16 bytes in hex.
const HASH_HEX_LEN: usize = 32;

/// What the suffix of a key name under the prefix is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Name {
    /// A session's plain key.
    Plain(SessionId),
    /// A session's hashed key, with the hash.
    Hashed(u128),
}

/// The key names of one storage.
pub(crate) struct KeyNames {
    prefix: String,
    /// The keyed hash, its key already absorbed (cloned per use, so the key
    /// is not hashed again for every name), and the phase.
    hashing: Option<(Hmac<Sha256>, HashPhase)>,
}

impl KeyNames {
    pub(crate) fn new(prefix: String, hashed: Option<&HashedIds>) -> Self {
        let hashing = hashed.map(|hashed| {
            let mac = <Hmac<Sha256> as Mac>::new_from_slice(hashed.key())
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
            (mac, hashed.phase())
        });
        Self { prefix, hashing }
    }

    /// The key prefix.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The first 16 bytes of session `id`'s keyed hash; `None` without
    /// hashing.
    fn hash(&self, id: &SessionId) -> Option<u128> {
        let (mac, _) = self.hashing.as_ref()?;
        let mut mac = mac.clone();
        mac.update(id.as_uuid().as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut first = [0; 16];
        first.copy_from_slice(&digest[..16]);
        Some(u128::from_be_bytes(first))
    }

    /// The cache slot of session `id`.
    pub(crate) fn slot(&self, id: &SessionId) -> Slot {
        Slot(self.hash(id).unwrap_or_else(|| id.as_uuid().as_u128()))
    }

    /// The suffix of session `id`'s name in `kind`: what the owner index
    /// holds for it.
    fn suffix(&self, id: &SessionId, hashed: bool) -> String {
        match self.hash(id).filter(|_| hashed) {
            Some(hash) => format!("{hash:032x}"),
            None => {
                let mut buf = [0u8; 36];
                id.encode_into(&mut buf).to_owned()
            }
        }
    }

    fn name(&self, suffix: &str) -> Bytes {
        let mut key = String::with_capacity(self.prefix.len() + suffix.len());
        key.push_str(&self.prefix);
        key.push_str(suffix);
        Bytes::from(key.into_bytes())
    }

    /// Whether the first name of a session is its hashed one.
    fn hashed_first(&self) -> bool {
        matches!(
            self.hashing,
            Some((_, HashPhase::Hashed | HashPhase::HashedFirst))
        )
    }

    /// The name new sessions are created under, and the first one looked
    /// up: the plain key without hashing.
    pub(crate) fn first(&self, id: &SessionId) -> Bytes {
        self.name(&self.first_suffix(id))
    }

    /// The suffix of [`first`](Self::first): the owner index member of a
    /// session written under that name.
    pub(crate) fn first_suffix(&self, id: &SessionId) -> String {
        self.suffix(id, self.hashed_first())
    }

    /// Whether sessions may live under either of two names (a migration
    /// phase): a cheap test before [`second`](Self::second) builds one.
    pub(crate) fn migrating(&self) -> bool {
        matches!(
            self.hashing,
            Some((_, HashPhase::PlainFirst | HashPhase::HashedFirst))
        )
    }

    /// The name a session is looked up under when it is not under its
    /// first, during a migration only.
    pub(crate) fn second(&self, id: &SessionId) -> Option<Bytes> {
        match self.hashing {
            Some((_, HashPhase::PlainFirst | HashPhase::HashedFirst)) => {
                Some(self.name(&self.suffix(id, !self.hashed_first())))
            }
            _ => None,
        }
    }

    /// The key named by an owner index member.
    pub(crate) fn of_member(&self, member: &str) -> Bytes {
        self.name(member)
    }

    /// What a key name under the prefix stands for: `None` for names of
    /// something else (owner indexes, event logs) and for names of a kind
    /// this storage does not use.
    pub(crate) fn parse(&self, key: &[u8]) -> Option<Name> {
        let suffix = std::str::from_utf8(key.strip_prefix(self.prefix.as_bytes())?).ok()?;
        // Plain names hold the hyphenated form (36 characters), which a
        // hash's 32 hex digits never are, though they would parse as a UUID.
        if suffix.len() == 36
            && let Ok(id) = SessionId::parse(suffix)
        {
            let plain = !matches!(self.hashing, Some((_, HashPhase::Hashed)));
            return plain.then_some(Name::Plain(id));
        }
        let hex = self.hashing.is_some()
            && suffix.len() == HASH_HEX_LEN
            && suffix
                .bytes()
                .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'));
        if !hex {
            return None;
        }
        u128::from_str_radix(suffix, 16).ok().map(Name::Hashed)
    }

    /// The cache slot of a key name, for an invalidation.
    pub(crate) fn slot_of(&self, key: &[u8]) -> Option<Slot> {
        Some(match self.parse(key)? {
            Name::Plain(id) => self.slot(&id),
            Name::Hashed(hash) => Slot(hash),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(phase: Option<HashPhase>) -> KeyNames {
        let hashed = phase.map(|phase| HashedIds::new(vec![7; 32], phase).unwrap());
        KeyNames::new("app:s:".to_owned(), hashed.as_ref())
    }

    fn text(bytes: &Bytes) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    #[test]
    fn plain_names_carry_the_id_and_hashed_ones_do_not() {
        let id = SessionId::new();
        let plain = names(None);
        assert_eq!(text(&plain.first(&id)), format!("app:s:{id}"));
        assert_eq!(plain.second(&id), None);
        assert_eq!(plain.slot(&id), Slot(id.as_uuid().as_u128()));
        let hashed = names(Some(HashPhase::Hashed));
        let name = hashed.first(&id);
        assert!(!text(&name).contains(&id.to_string()));
        assert_eq!(text(&name).len(), "app:s:".len() + 32);
        assert_eq!(hashed.second(&id), None);
        // The same id under the same key always gets the same name, and
        // another key gives another name.
        assert_eq!(names(Some(HashPhase::Hashed)).first(&id), name);
        let other = HashedIds::new(vec![8; 32], HashPhase::Hashed).unwrap();
        assert_ne!(
            KeyNames::new("app:s:".into(), Some(&other)).first(&id),
            name
        );
        // Parsing a name gives back its slot.
        assert_eq!(hashed.slot_of(&name), Some(hashed.slot(&id)));
        assert_eq!(hashed.parse(&plain.first(&id)), None);
        assert_eq!(plain.parse(&name), None);
        assert_eq!(plain.parse(&plain.first(&id)), Some(Name::Plain(id)));
        for other in [&b"app:s:owner:00ff"[..], b"app:s:events:x", b"other:s:1"] {
            assert_eq!(hashed.parse(other), None);
        }
    }

    #[test]
    fn migration_phases_look_under_both_names() {
        let id = SessionId::new();
        let plain_name = names(None).first(&id);
        let hashed_name = names(Some(HashPhase::Hashed)).first(&id);
        let reading = names(Some(HashPhase::PlainFirst));
        assert_eq!(reading.first(&id), plain_name);
        assert_eq!(reading.second(&id), Some(hashed_name.clone()));
        assert_eq!(reading.first_suffix(&id), id.to_string());
        let writing = names(Some(HashPhase::HashedFirst));
        assert_eq!(writing.first(&id), hashed_name);
        assert_eq!(writing.second(&id), Some(plain_name.clone()));
        // Both names give one slot, so an invalidation of either drops the
        // one copy.
        for phase in [reading, writing] {
            assert_eq!(phase.slot_of(&plain_name), Some(phase.slot(&id)));
            assert_eq!(phase.slot_of(&hashed_name), Some(phase.slot(&id)));
        }
    }
}
