//! Session identifiers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::Error;

/// The identifier of a session: always a valid UUID.
///
/// The Go package validates ids with a function at each entry point; here the
/// type itself is the validation, so a `SessionId` that exists is valid and no
/// storage backend ever sees a malformed id. [`SessionId::new`] makes a random
/// (version 4) id; parsing accepts the textual forms of
/// [`Uuid::try_parse`] (hyphenated, simple, braced and URN) and rejects empty
/// or malformed input with [`Error::InvalidInput`]. Every id displays in the
/// canonical lowercase hyphenated form, which is also the form used in storage
/// keys, so two spellings of one UUID name one session.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(Uuid);

impl SessionId {
    /// A new random (version 4) session id.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    /// Parses a session id, rejecting empty and malformed input.
    pub fn parse(input: &str) -> Result<Self, Error> {
        if input.is_empty() {
            return Err(Error::InvalidInput("session id is empty".into()));
        }
        Uuid::try_parse(input).map(Self).map_err(|err| {
            // The offending input is not echoed: ids are bearer credentials,
            // and a near-miss may be one.
            Error::InvalidInput(format!("session id is not a valid UUID: {err}"))
        })
    }

    /// The UUID behind this id.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// Writes the canonical form into a stack buffer, for building storage
    /// keys without an allocation.
    pub fn encode_into<'b>(&self, buf: &'b mut [u8; 36]) -> &'b str {
        self.0.hyphenated().encode_lower(buf)
    }
}

impl Default for SessionId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for SessionId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl FromStr for SessionId {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        Self::parse(input)
    }
}

impl TryFrom<&str> for SessionId {
    type Error = Error;

    fn try_from(input: &str) -> Result<Self, Self::Error> {
        Self::parse(input)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.0.hyphenated())
    }
}

impl Serialize for SessionId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // `Uuid`'s own implementation validates, in both the textual form
        // (JSON) and the 16-byte form (bincode).
        Uuid::deserialize(deserializer).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_random_v4() {
        let a = SessionId::new();
        let b = SessionId::new();
        assert_ne!(a, b);
        assert_eq!(a.as_uuid().get_version_num(), 4);
    }

    #[test]
    fn parse_accepts_the_canonical_form_and_round_trips() {
        let id = SessionId::new();
        assert_eq!(SessionId::parse(&id.to_string()).unwrap(), id);
    }

    #[test]
    fn other_spellings_name_the_same_session() {
        let id: SessionId = "67E55044-10B1-426F-9247-BB680E5FE0C8".parse().unwrap();
        assert_eq!(id.to_string(), "67e55044-10b1-426f-9247-bb680e5fe0c8");
        let simple: SessionId = "67e5504410b1426f9247bb680e5fe0c8".parse().unwrap();
        assert_eq!(simple, id);
        let mut buf = [0u8; 36];
        assert_eq!(id.encode_into(&mut buf), id.to_string());
    }

    #[test]
    fn empty_and_malformed_ids_are_typed_errors() {
        for bad in [
            "",
            " ",
            "not-a-uuid",
            "67e55044-10b1-426f-9247",
            "../../etc/passwd",
            "67e55044-10b1-426f-9247-bb680e5fe0c8x",
        ] {
            let err = SessionId::parse(bad).unwrap_err();
            assert!(
                matches!(err, Error::InvalidInput(_)),
                "{bad:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn deserializing_validates() {
        let err = serde_json::from_str::<SessionId>("\"nope\"");
        assert!(err.is_err());
        let id = SessionId::new();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<SessionId>(&json).unwrap(), id);
    }
}
