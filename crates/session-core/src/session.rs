//! The session record.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::codec::{Codec, CodecError};
use crate::metadata::Metadata;
use crate::{Owner, Revision, SessionId};

/// The kind of transport a session belongs to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionType {
    /// A Model Context Protocol session (the default).
    #[default]
    Mcp,
    /// A server-sent events session.
    Sse,
    /// A streamable HTTP session.
    Streamable,
}

impl SessionType {
    /// The lowercase name, as serialized.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Mcp => "mcp",
            Self::Sse => "sse",
            Self::Streamable => "streamable",
        }
    }
}

impl fmt::Display for SessionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A session: plain data that every backend stores and returns by value.
///
/// Unlike the Go package, whose local store hands out live objects that
/// mutate in place, a `Session` read from storage is a snapshot. To change a
/// session, change a copy and write it back with `Manager::update` or
/// `Manager::upsert`; nothing else reaches storage. Managers return sessions
/// as `Arc<Session>`, so a read from local storage costs a reference count,
/// not a copy; `Arc::unwrap_or_clone` or `(*arc).clone()` gives a copy to edit.
///
/// User data is any serde type of the caller's, stored encoded with a codec
/// (see [`Session::set_data`]), so the record stays one concrete type that
/// every backend can store.
///
/// A session may have an [`Owner`], given when it is created
/// ([`Session::new_owned`], [`Manager::create_owned`](crate::Manager::create_owned))
/// and never changed, and carries the [`Revision`] it was stored at, which
/// the storage assigns on every write.
///
/// Its serde form is the stored body: the revision is not part of it (the
/// stored-value header carries it, see [`codec`](crate::codec)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    id: SessionId,
    #[serde(rename = "type")]
    session_type: SessionType,
    created_at: SystemTime,
    updated_at: SystemTime,
    metadata: Metadata,
    data: Option<UserData>,
    // Last, so that the fields before it are laid out as in format 1. The
    // default only matters for self-describing bodies (JSON); bincode reads
    // format 1 through `SessionV1`.
    #[serde(default)]
    owner: Option<Owner>,
    #[serde(skip, default = "first_revision")]
    revision: Revision,
}

/// The revision of a session deserialized outside the codec, which has no
/// header to take one from: that of a new session.
fn first_revision() -> Revision {
    Revision::FIRST
}

impl Session {
    /// A new session of the given type, created and updated now (by the
    /// system clock; a manager stamps the sessions it creates from its own
    /// clock).
    pub fn new(id: SessionId, session_type: SessionType) -> Self {
        let now = SystemTime::now();
        Self {
            id,
            session_type,
            created_at: now,
            updated_at: now,
            metadata: Metadata::default(),
            data: None,
            owner: None,
            revision: Revision::FIRST,
        }
    }

    /// A new session of the given type that belongs to `owner`; otherwise as
    /// [`Session::new`]. The owner is fixed for the session's whole life.
    pub fn new_owned(id: SessionId, session_type: SessionType, owner: Owner) -> Self {
        let mut session = Self::new(id, session_type);
        session.owner = Some(owner);
        session
    }

    /// Who the session belongs to; `None` for a session without owner.
    pub fn owner(&self) -> Option<&Owner> {
        self.owner.as_ref()
    }

    /// Whether a caller acting for `principal` may see this session: always
    /// when it has no owner, otherwise only when `principal` is its owner.
    pub fn is_visible_to(&self, principal: Option<&Owner>) -> bool {
        match &self.owner {
            None => true,
            Some(owner) => principal == Some(owner),
        }
    }

    /// The revision this snapshot was stored at.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// Sets the revision: for storage implementations, which assign it on
    /// every write and read it back with the value. Whatever revision a
    /// session carries when it is written, the storage stores its own.
    pub fn set_revision(&mut self, revision: Revision) {
        self.revision = revision;
    }

    /// Gives a session its owner as the manager creates it.
    pub(crate) fn set_owner(&mut self, owner: Owner) {
        self.owner = Some(owner);
    }

    /// This session under a new id, for a rotation: the same type,
    /// timestamps, metadata, data and owner (or `owner`, for a session that
    /// had none), not yet stored.
    pub(crate) fn reissued(&self, id: SessionId, owner: Option<Owner>) -> Self {
        let mut session = self.clone();
        session.id = id;
        session.revision = Revision::FIRST;
        if let Some(owner) = owner {
            session.owner = Some(owner);
        }
        session
    }

    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The session's type.
    pub fn session_type(&self) -> SessionType {
        self.session_type
    }

    /// When the session was created.
    pub fn created_at(&self) -> SystemTime {
        self.created_at
    }

    /// When the session was last written.
    pub fn updated_at(&self) -> SystemTime {
        self.updated_at
    }

    /// Sets the last-written time; the manager does this on every write.
    pub(crate) fn touch(&mut self, now: SystemTime) {
        self.updated_at = now;
    }

    /// Sets both timestamps of a session the manager is about to create.
    pub(crate) fn stamp_new(&mut self, now: SystemTime) {
        self.created_at = now;
        self.updated_at = now;
    }

    /// Replaces the last-written time; for restoring sessions from elsewhere.
    pub fn set_updated_at(&mut self, at: SystemTime) {
        self.updated_at = at;
    }

    /// Replaces the creation time; for restoring sessions from elsewhere.
    pub fn set_created_at(&mut self, at: SystemTime) {
        self.created_at = at;
    }

    /// The string metadata.
    ///
    /// A session read from storage builds this map on the first call (see
    /// [`get_metadata`](Session::get_metadata), which does not).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        self.metadata.map()
    }

    /// The string metadata, for editing.
    pub fn metadata_mut(&mut self) -> &mut BTreeMap<String, String> {
        self.metadata.map_mut()
    }

    /// One metadata value.
    pub fn get_metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key)
    }

    /// Sets one metadata value, returning the previous one.
    pub fn set_metadata(
        &mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Option<String> {
        self.metadata.map_mut().insert(key.into(), value.into())
    }

    /// Stores user data of any serde type, encoded as JSON.
    ///
    /// JSON handles every serde type, including `serde_json::Value`,
    /// untagged enums and `#[serde(flatten)]`. For plain structs,
    /// [`Session::set_data_with`] and [`Codec::Bincode`] are smaller and
    /// faster.
    pub fn set_data<T: Serialize + ?Sized>(&mut self, data: &T) -> Result<(), CodecError> {
        self.set_data_with(Codec::Json, data)
    }

    /// Stores user data encoded with the given codec.
    pub fn set_data_with<T: Serialize + ?Sized>(
        &mut self,
        codec: Codec,
        data: &T,
    ) -> Result<(), CodecError> {
        self.data = Some(UserData {
            codec,
            bytes: codec.encode_value(data)?,
        });
        Ok(())
    }

    /// Decodes the user data as `T`; `Ok(None)` when there is none, a
    /// [`CodecError`] when it is not a `T`.
    pub fn data<T: DeserializeOwned>(&self) -> Result<Option<T>, CodecError> {
        self.data
            .as_ref()
            .map(|data| data.codec.decode_value(&data.bytes))
            .transpose()
    }

    /// Whether the session carries user data.
    pub fn has_data(&self) -> bool {
        self.data.is_some()
    }

    /// Removes the user data.
    pub fn clear_data(&mut self) {
        self.data = None;
    }
}

/// A session as stored in format 1, before owners and revisions: the same
/// fields in the same order, so that bincode, which is not self-describing,
/// reads and writes exactly those bytes.
#[derive(Deserialize)]
pub(crate) struct SessionV1 {
    id: SessionId,
    #[serde(rename = "type")]
    session_type: SessionType,
    created_at: SystemTime,
    updated_at: SystemTime,
    metadata: Metadata,
    data: Option<UserData>,
}

impl SessionV1 {
    /// The session, without owner, at `revision`.
    pub(crate) fn into_session(self, revision: Revision) -> Session {
        Session {
            id: self.id,
            session_type: self.session_type,
            created_at: self.created_at,
            updated_at: self.updated_at,
            metadata: self.metadata,
            data: self.data,
            owner: None,
            revision,
        }
    }
}

/// A borrowed session in the shape of format 1, for writing it.
#[derive(Serialize)]
pub(crate) struct SessionV1Ref<'a> {
    id: &'a SessionId,
    #[serde(rename = "type")]
    session_type: &'a SessionType,
    created_at: &'a SystemTime,
    updated_at: &'a SystemTime,
    metadata: &'a Metadata,
    data: &'a Option<UserData>,
}

impl Session {
    /// The session in the shape of format 1; `None` for an owned session,
    /// which that format cannot hold.
    pub(crate) fn as_v1(&self) -> Option<SessionV1Ref<'_>> {
        if self.owner.is_some() {
            return None;
        }
        Some(SessionV1Ref {
            id: &self.id,
            session_type: &self.session_type,
            created_at: &self.created_at,
            updated_at: &self.updated_at,
            metadata: &self.metadata,
            data: &self.data,
        })
    }
}

/// Encoded user data, tagged with the codec that encoded it.
///
/// In a compact format (bincode) the bytes are written as bytes. In a
/// human-readable one (JSON), bytes would be an array of numbers, four times
/// their size; so bytes that are UTF-8 text, as JSON user data always is,
/// are written as a string (`{"codec":"json","bytes":"{\"cart\":[1,2]}"}`),
/// readable with `redis-cli` and barely larger than the data. Other bytes
/// (bincode user data inside a JSON record, a rare mix) stay an array of
/// numbers. Either form is accepted on reading, and both give back exactly
/// the bytes written.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
struct UserData {
    codec: Codec,
    #[serde(with = "user_data_bytes")]
    bytes: Vec<u8>,
}

/// The `bytes` of [`UserData`]; see there. Only the field is custom, so a
/// human-readable serializer still sees the codec first.
mod user_data_bytes {
    use std::fmt;

    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(bytes) {
            // Only text is written as a string, so reading it back as its
            // UTF-8 bytes gives exactly what was written.
            Ok(text) if serializer.is_human_readable() => serializer.serialize_str(text),
            _ => serde_bytes::serialize(bytes, serializer),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        struct BytesOrText;

        impl<'de> Visitor<'de> for BytesOrText {
            type Value = Vec<u8>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes, a byte array or a string")
            }

            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
                Ok(bytes.to_vec())
            }

            fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(bytes)
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Vec<u8>, E> {
                Ok(text.as_bytes().to_vec())
            }

            fn visit_string<E: de::Error>(self, text: String) -> Result<Vec<u8>, E> {
                Ok(text.into_bytes())
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                // A corrupt length hint must not reserve gigabytes.
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(byte) = seq.next_element()? {
                    bytes.push(byte);
                }
                Ok(bytes)
            }
        }

        if deserializer.is_human_readable() {
            deserializer.deserialize_any(BytesOrText)
        } else {
            deserializer.deserialize_byte_buf(BytesOrText)
        }
    }
}

impl fmt::Debug for UserData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // User data may hold tokens or other secrets of the caller's: only
        // its shape is printed.
        write!(f, "UserData({}, {} bytes)", self.codec, self.bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Custom {
        name: String,
        count: u32,
        tags: Vec<String>,
    }

    #[test]
    fn session_types_serialize_as_lowercase_words() {
        for (kind, word) in [
            (SessionType::Mcp, "mcp"),
            (SessionType::Sse, "sse"),
            (SessionType::Streamable, "streamable"),
        ] {
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{word}\""));
            assert_eq!(kind.to_string(), word);
        }
        assert_eq!(SessionType::default(), SessionType::Mcp);
    }

    #[test]
    fn user_data_round_trips_with_both_codecs() {
        let value = Custom {
            name: "alice".into(),
            count: 7,
            tags: vec!["a".into(), "b".into()],
        };
        let mut session = Session::new(SessionId::new(), SessionType::Mcp);
        assert_eq!(session.data::<Custom>().unwrap(), None);
        for codec in [Codec::Bincode, Codec::Json] {
            session.set_data_with(codec, &value).unwrap();
            assert_eq!(session.data::<Custom>().unwrap().as_ref(), Some(&value));
        }
    }

    #[test]
    fn json_user_data_takes_self_describing_types() {
        let mut session = Session::new(SessionId::new(), SessionType::Mcp);
        let value = serde_json::json!({"nested": [1, "two", null]});
        session.set_data(&value).unwrap();
        assert_eq!(session.data::<serde_json::Value>().unwrap(), Some(value));
    }

    #[test]
    fn user_data_of_another_type_is_a_codec_error() {
        let mut session = Session::new(SessionId::new(), SessionType::Mcp);
        session.set_data(&"just a string").unwrap();
        assert!(matches!(
            session.data::<Custom>(),
            Err(CodecError::Decode { .. })
        ));
    }

    #[test]
    fn json_user_data_is_a_string_in_a_json_record_and_reads_back_from_either_form() {
        let value = Custom {
            name: "alice \"quoted\"".into(),
            count: 7,
            tags: vec!["a".into()],
        };
        let mut session = Session::new(SessionId::new(), SessionType::Mcp);
        session.set_data(&value).unwrap();
        let record = serde_json::to_value(&session).unwrap();
        let text = serde_json::to_string(&value).unwrap();
        assert_eq!(record["data"]["codec"], "json");
        assert_eq!(
            record["data"]["bytes"],
            serde_json::Value::String(text.clone())
        );
        // Both codecs round-trip the whole record.
        for codec in [Codec::Json, Codec::Bincode] {
            let stored = codec.encode_session(&session).unwrap();
            let back = crate::codec::decode_session(&stored).unwrap();
            assert_eq!(back, session);
            assert_eq!(back.data::<Custom>().unwrap(), Some(value.clone()));
        }
        // The earlier form, an array of numbers, is still read.
        let mut legacy = record.clone();
        legacy["data"]["bytes"] = text.bytes().map(serde_json::Value::from).collect();
        let back: Session = serde_json::from_value(legacy).unwrap();
        assert_eq!(back, session);
        // Bincode user data that is not UTF-8 stays an array of numbers
        // (the count 200 is the byte 0xC8, which starts no valid sequence
        // here).
        let value = Custom {
            count: 200,
            ..value
        };
        session.set_data_with(Codec::Bincode, &value).unwrap();
        let record = serde_json::to_value(&session).unwrap();
        assert!(record["data"]["bytes"].is_array(), "{record}");
        let back: Session = serde_json::from_value(record).unwrap();
        assert_eq!(back.data::<Custom>().unwrap(), Some(value));
    }

    #[test]
    fn debug_does_not_print_user_data() {
        let mut session = Session::new(SessionId::new(), SessionType::Mcp);
        session.set_data(&"token-abc123").unwrap();
        let debug = format!("{session:?}");
        assert!(!debug.contains("token-abc123"), "{debug}");
        assert!(debug.contains("UserData(json, 14 bytes)"), "{debug}");
    }
}
