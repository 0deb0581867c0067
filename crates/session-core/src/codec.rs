//! The stored-value format.
//!
//! Every value a backend stores starts with a header. Format 2, which this
//! build writes, is:
//!
//! ```text
//! offset  size  field
//! 0       2     magic: 0xC5 0x53
//! 2       1     format version: 2
//! 3       1     codec id: 1 = bincode 2 (serde mode), 2 = JSON
//! 4       8     revision, big-endian (see `Revision`)
//! 12      8     owner tag: the first 8 bytes of `Owner::digest`, zero for none
//! 20      ..    the body, a `Session` encoded with that codec
//! ```
//!
//! Format 1, which earlier releases wrote, is the first four bytes (with
//! version byte 1) followed by the body of a session without owner. Both are read; which
//! one is written is a setting ([`FormatVersion`]), so that a rolling deploy
//! can keep writing format 1 until no replica of the earlier release is left
//! (docs/stored-format.md has the procedure). A format 1 value has no
//! revision number: it reads with the revision [`legacy_revision`] derives
//! from its bytes, which changes with every write, so a conditional write
//! still sees a write in between.
//!
//! The revision and owner tag sit at fixed offsets in the header so that a
//! server-side script (Redis Lua) can compare and advance the revision, and
//! refuse a change of owner, without decoding the body.
//!
//! The header is what makes rolling deploys safe: a reader dispatches on the
//! version and the codec id, so a replica configured for JSON reads what a
//! bincode replica wrote and the other way round. A value that is not in
//! this format (a foreign value under the key prefix, a truncated write, an
//! unknown version or codec) decodes to a typed [`CodecError`], never a
//! panic.
//!
//! bincode is the default body: it is compact and fast. The crate that
//! implements it is no longer maintained, which is one more reason it sits
//! behind this module: it can be replaced with a new codec id without
//! breaking what is already stored.

use std::ops::Range;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::session::SessionV1;
use crate::{Revision, Session, SessionId};

/// The first two bytes of every stored value.
pub const MAGIC: [u8; 2] = [0xC5, 0x53];
/// The format version this build writes by default.
pub const FORMAT_VERSION: u8 = 2;
/// The length of the format 2 header in bytes.
pub const HEADER_LEN: usize = 20;
/// The length of the format 1 header in bytes.
pub const HEADER_LEN_V1: usize = 4;
/// Where the revision sits in a format 2 header.
pub const REVISION_BYTES: Range<usize> = 4..12;
/// Where the owner tag sits in a format 2 header.
pub const OWNER_TAG_BYTES: Range<usize> = 12..20;

/// Which stored format a backend writes. Both are always read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FormatVersion {
    /// Format 1, as written by releases before owners and revisions: for
    /// the length of a rolling deploy from such a release, so that its
    /// replicas can read what the new ones write. It cannot hold an owner.
    V1,
    /// Format 2, with the revision and owner tag in the header: the default.
    #[default]
    V2,
}

impl FormatVersion {
    /// The version byte.
    pub const fn number(self) -> u8 {
        match self {
            Self::V1 => 1,
            Self::V2 => 2,
        }
    }

    /// The format with this version byte.
    pub const fn from_number(number: u8) -> Option<Self> {
        match number {
            1 => Some(Self::V1),
            2 => Some(Self::V2),
            _ => None,
        }
    }
}

/// The revision of a value stored in format 1, which has no revision
/// number: the first eight bytes of the SHA-1 of the whole value. SHA-1 is
/// what Redis scripts can compute (`redis.sha1hex`), so a script can derive
/// the same revision from the value it finds; it serves as a fingerprint
/// here, not as a protection against forgery (whoever can write the value
/// can write any revision).
pub fn legacy_revision(value: &[u8]) -> Revision {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(value);
    let mut first = [0; 8];
    first.copy_from_slice(&digest[..8]);
    Revision::from_be_bytes(first)
}

/// The largest body bincode will decode. A corrupt length prefix could
/// otherwise ask for an allocation of many gigabytes before failing.
const BINCODE_LIMIT: usize = 64 * 1024 * 1024;

type BincodeConfig = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<BINCODE_LIMIT>,
>;

const fn bincode_config() -> BincodeConfig {
    bincode::config::standard().with_limit::<BINCODE_LIMIT>()
}

/// A body encoding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// bincode 2 in serde mode: compact and fast. The default. It cannot
    /// encode types that need a self-describing format (`serde_json::Value`,
    /// untagged or internally tagged enums, `#[serde(flatten)]`).
    #[default]
    Bincode,
    /// JSON: larger and slower, readable with `redis-cli`, and able to encode
    /// every serde type.
    Json,
}

impl Codec {
    /// The id written in the header.
    pub const fn id(self) -> u8 {
        match self {
            Self::Bincode => 1,
            Self::Json => 2,
        }
    }

    /// The codec with the given header id.
    pub const fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(Self::Bincode),
            2 => Some(Self::Json),
            _ => None,
        }
    }

    /// The codec's name, as in configuration files.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Bincode => "bincode",
            Self::Json => "json",
        }
    }

    /// Encodes a session in format 2 with its header, ready to store.
    pub fn encode_session(self, session: &Session) -> Result<Vec<u8>, CodecError> {
        self.encode_session_as(session, FormatVersion::V2)
    }

    /// Encodes a session in the given format. Format 1 cannot hold an
    /// owner: an owned session is [`CodecError::OwnerNeedsFormat2`].
    pub fn encode_session_as(
        self,
        session: &Session,
        format: FormatVersion,
    ) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&MAGIC);
        out.push(format.number());
        out.push(self.id());
        match format {
            FormatVersion::V2 => {
                out.extend_from_slice(&session.revision().to_be_bytes());
                out.extend_from_slice(
                    &session.owner().map(|owner| owner.tag()).unwrap_or_default(),
                );
                self.encode_into(session, &mut out)?;
            }
            FormatVersion::V1 => {
                let legacy = session.as_v1().ok_or(CodecError::OwnerNeedsFormat2)?;
                self.encode_into(&legacy, &mut out)?;
            }
        }
        Ok(out)
    }

    /// Encodes any serde value without a header (used for user data).
    pub fn encode_value<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::new();
        self.encode_into(value, &mut out)?;
        Ok(out)
    }

    fn encode_into<T: Serialize + ?Sized>(
        self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let result = match self {
            Self::Bincode => bincode::serde::encode_into_std_write(value, out, bincode_config())
                .map(drop)
                .map_err(|err| err.to_string()),
            Self::Json => serde_json::to_writer(out, value).map_err(|err| err.to_string()),
        };
        result.map_err(|message| CodecError::Encode {
            codec: self,
            message,
        })
    }

    /// Decodes a value written by [`Codec::encode_value`] with this codec. The
    /// whole input must be consumed: trailing bytes mean corruption.
    pub fn decode_value<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, CodecError> {
        let decode_error = |message: String| CodecError::Decode {
            codec: self,
            message,
        };
        match self {
            Self::Bincode => {
                let (value, read) = bincode::serde::decode_from_slice(bytes, bincode_config())
                    .map_err(|err| decode_error(err.to_string()))?;
                if read != bytes.len() {
                    return Err(decode_error(format!(
                        "{} trailing bytes after the value",
                        bytes.len() - read
                    )));
                }
                Ok(value)
            }
            Self::Json => {
                serde_json::from_slice(bytes).map_err(|err| decode_error(err.to_string()))
            }
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Codec {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bincode" => Ok(Self::Bincode),
            "json" => Ok(Self::Json),
            other => Err(crate::Error::InvalidInput(format!(
                "unknown codec {other:?}: expected \"bincode\" or \"json\""
            ))),
        }
    }
}

/// Decodes a stored value, whichever format and codec wrote it.
pub fn decode_session(bytes: &[u8]) -> Result<Session, CodecError> {
    let (format, codec) = header(bytes)?;
    match format {
        FormatVersion::V2 => {
            let mut session: Session = codec.decode_value(&bytes[HEADER_LEN..])?;
            let mut revision = [0; 8];
            revision.copy_from_slice(&bytes[REVISION_BYTES]);
            session.set_revision(Revision::from_be_bytes(revision));
            let tag = session.owner().map(|owner| owner.tag()).unwrap_or_default();
            if bytes[OWNER_TAG_BYTES] != tag {
                return Err(CodecError::Decode {
                    codec,
                    message: "the owner tag in the header does not match the stored owner".into(),
                });
            }
            Ok(session)
        }
        FormatVersion::V1 => {
            let legacy: SessionV1 = codec.decode_value(&bytes[HEADER_LEN_V1..])?;
            Ok(legacy.into_session(legacy_revision(bytes)))
        }
    }
}

/// Decodes the value stored under session `id`'s key, and checks that it is
/// that session: a value copied or written under another session's key is
/// corrupt for this one. The error names the codec that wrote the value.
pub fn decode_session_for(bytes: &[u8], id: &SessionId) -> Result<Session, CodecError> {
    let session = decode_session(bytes)?;
    if session.id() != *id {
        return Err(CodecError::Decode {
            codec: header(bytes)?.1,
            message: "the stored session has another id than its key".into(),
        });
    }
    Ok(session)
}

/// Checks the header and returns the format and codec it names.
fn header(bytes: &[u8]) -> Result<(FormatVersion, Codec), CodecError> {
    let truncated = CodecError::Truncated { len: bytes.len() };
    let start = bytes.get(..HEADER_LEN_V1).ok_or(truncated.clone())?;
    if start[..2] != MAGIC {
        return Err(CodecError::NotSessionFormat);
    }
    let format =
        FormatVersion::from_number(start[2]).ok_or(CodecError::UnsupportedVersion(start[2]))?;
    if start[3] & crate::seal::SEALED_FLAG != 0 {
        // Only a keyring opens a sealed body (`crate::seal`).
        return Err(CodecError::Sealed);
    }
    let codec = Codec::from_id(start[3]).ok_or(CodecError::UnknownCodec(start[3]))?;
    if format == FormatVersion::V2 && bytes.len() < HEADER_LEN {
        return Err(truncated);
    }
    Ok((format, codec))
}

/// Why a value could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The value is shorter than its header.
    #[error("stored value is truncated: {len} bytes, shorter than its header")]
    Truncated {
        /// The length of the value.
        len: usize,
    },
    /// The value does not start with the magic bytes: something else wrote it.
    #[error("stored value is not in the session format (wrong magic bytes)")]
    NotSessionFormat,
    /// The header names a format version this build cannot read.
    #[error("stored value has format version {0}; this build reads versions 1 and 2")]
    UnsupportedVersion(u8),
    /// An owned session was to be written in format 1, which has no room for
    /// an owner.
    #[error(
        "an owned session cannot be written in stored format 1; finish the rolling deploy and write format 2"
    )]
    OwnerNeedsFormat2,
    /// The header names a codec this build does not know.
    #[error("stored value names unknown codec id {0}")]
    UnknownCodec(u8),
    /// The value is encrypted (`crate::seal`), and was given to a reader
    /// without the keys to open it.
    #[error("stored value is encrypted, and this storage has no encryption keys configured")]
    Sealed,
    /// The value is not encrypted, and the keyring refuses plaintext
    /// values (`Keyring::accepting_plaintext`).
    #[error("stored value is not encrypted, and this storage reads encrypted values only")]
    NotSealed,
    /// The value was sealed with a key whose id is not configured.
    #[error("stored value is encrypted under key id {0}, which is not configured")]
    UnknownKey(u32),
    /// The value failed authentication under the key its header names: the
    /// key under that id is another one, the value was altered or
    /// truncated, or it was moved from another storage key.
    #[error(
        "stored value failed to decrypt under key id {key_id}: another key under that id, a corrupt value, or a value moved from another key"
    )]
    Unseal {
        /// The key id the value names.
        key_id: u32,
    },
    /// The encryption envelope is malformed.
    #[error("stored value has a malformed encryption envelope: {0}")]
    BadEnvelope(&'static str),
    /// A value in format 1 was to be sealed: only format 2 keeps the
    /// header the envelope needs.
    #[error("a value in stored format 1 cannot be encrypted; write format 2")]
    SealNeedsFormat2,
    /// Encoding failed (for bincode, usually a type that needs a
    /// self-describing format).
    #[error("could not encode with {codec}: {message}")]
    Encode {
        /// The codec that failed.
        codec: Codec,
        /// What went wrong.
        message: String,
    },
    /// The body is corrupt or of another type.
    #[error("could not decode {codec} body: {message}")]
    Decode {
        /// The codec that failed.
        codec: Codec,
        /// What went wrong.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SessionId, SessionType};
    use proptest::prelude::*;

    /// A format 2 header with revision 1 and no owner.
    fn header_v2(codec: Codec) -> Vec<u8> {
        let mut bytes = vec![0xC5, 0x53, FORMAT_VERSION, codec.id()];
        bytes.extend_from_slice(&Revision::FIRST.to_be_bytes());
        bytes.extend_from_slice(&[0; 8]);
        bytes
    }

    fn sample() -> Session {
        let mut session = Session::new(SessionId::new(), SessionType::Streamable);
        session.set_metadata("user", "alice");
        session.set_metadata("client", "inspector");
        session
    }

    #[test]
    fn both_codecs_round_trip_a_session() {
        let session = sample();
        for codec in [Codec::Bincode, Codec::Json] {
            let bytes = codec.encode_session(&session).unwrap();
            assert_eq!(&bytes[..2], &MAGIC);
            assert_eq!(bytes[2], FORMAT_VERSION);
            assert_eq!(bytes[3], codec.id());
            assert_eq!(decode_session(&bytes).unwrap(), session);
        }
    }

    /// The error for a value under another session's key names the codec
    /// that wrote the value, not the default one.
    #[test]
    fn a_value_of_another_session_is_a_decode_error_of_its_own_codec() {
        let session = sample();
        for codec in [Codec::Bincode, Codec::Json] {
            let bytes = codec.encode_session(&session).unwrap();
            assert_eq!(decode_session_for(&bytes, &session.id()).unwrap(), session);
            match decode_session_for(&bytes, &SessionId::new()) {
                Err(CodecError::Decode {
                    codec: named,
                    message,
                }) => {
                    assert_eq!(named, codec);
                    assert!(message.contains("another id"), "{message}");
                }
                other => panic!("expected a decode error, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_header_carries_revision_and_owner_tag() {
        let owner = crate::Owner::new("https://issuer.example", "alice").unwrap();
        let mut session = Session::new_owned(SessionId::new(), SessionType::Mcp, owner.clone());
        session.set_revision(Revision::new(0x0102));
        for codec in [Codec::Bincode, Codec::Json] {
            let bytes = codec.encode_session(&session).unwrap();
            assert_eq!(&bytes[REVISION_BYTES], &0x0102_u64.to_be_bytes());
            assert_eq!(&bytes[OWNER_TAG_BYTES], &owner.tag());
            let back = decode_session(&bytes).unwrap();
            assert_eq!(back.revision(), Revision::new(0x0102));
            assert_eq!(back.owner(), Some(&owner));
            // A header whose tag disagrees with the body is corrupt.
            let mut forged = bytes.clone();
            forged[OWNER_TAG_BYTES.start] ^= 1;
            assert!(matches!(
                decode_session(&forged),
                Err(CodecError::Decode { .. })
            ));
            // Format 1 has no room for the owner.
            assert_eq!(
                codec.encode_session_as(&session, FormatVersion::V1),
                Err(CodecError::OwnerNeedsFormat2)
            );
        }
    }

    #[test]
    fn format_1_is_written_on_request_and_read_with_a_derived_revision() {
        let session = sample();
        for codec in [Codec::Bincode, Codec::Json] {
            let bytes = codec
                .encode_session_as(&session, FormatVersion::V1)
                .unwrap();
            assert_eq!(&bytes[..4], &[0xC5, 0x53, 1, codec.id()]);
            let back = decode_session(&bytes).unwrap();
            assert_eq!(back.revision(), legacy_revision(&bytes));
            assert_eq!(back.owner(), None);
            let mut expected = session.clone();
            expected.set_revision(back.revision());
            assert_eq!(back, expected);
        }
    }

    /// Values written by the release before format 2 (captured with its
    /// codec, in `tests/data/`) read back field for field.
    #[test]
    fn golden_values_of_format_1_still_read() {
        use std::time::{Duration, UNIX_EPOCH};
        for (bytes, codec) in [
            (
                &include_bytes!("../tests/data/v1-bincode.bin")[..],
                Codec::Bincode,
            ),
            (
                &include_bytes!("../tests/data/v1-json.bin")[..],
                Codec::Json,
            ),
        ] {
            assert_eq!(bytes[2], 1);
            let session = decode_session(bytes).unwrap();
            assert_eq!(
                session.id().to_string(),
                "0b1c2d3e-4f50-4617-8a9b-0c1d2e3f4a5b"
            );
            assert_eq!(session.session_type(), SessionType::Streamable);
            assert_eq!(
                session.created_at(),
                UNIX_EPOCH + Duration::from_millis(1_767_225_600_123)
            );
            assert_eq!(
                session.updated_at(),
                UNIX_EPOCH + Duration::from_millis(1_767_225_660_456)
            );
            assert_eq!(session.get_metadata("user"), Some("alice"));
            assert_eq!(session.get_metadata("client"), Some("inspector"));
            assert_eq!(session.owner(), None);
            assert_eq!(session.revision(), legacy_revision(bytes));
            match codec {
                Codec::Bincode => assert_eq!(session.data::<u64>().unwrap(), Some(41)),
                Codec::Json => assert_eq!(
                    session.data::<serde_json::Value>().unwrap(),
                    Some(serde_json::json!({"count": 41}))
                ),
            }
            // Written back in format 1 it is the same bytes, so replicas of
            // the earlier release read it exactly as they wrote it.
            assert_eq!(
                codec
                    .encode_session_as(&session, FormatVersion::V1)
                    .unwrap(),
                bytes
            );
        }
    }

    #[test]
    fn bincode_is_smaller_than_json() {
        let session = sample();
        let bincode = Codec::Bincode.encode_session(&session).unwrap();
        let json = Codec::Json.encode_session(&session).unwrap();
        assert!(
            bincode.len() < json.len(),
            "{} vs {}",
            bincode.len(),
            json.len()
        );
    }

    #[test]
    fn bad_values_are_typed_errors() {
        let good = Codec::Bincode.encode_session(&sample()).unwrap();
        assert_eq!(decode_session(b""), Err(CodecError::Truncated { len: 0 }));
        assert_eq!(
            decode_session(b"\xC5S"),
            Err(CodecError::Truncated { len: 2 })
        );
        assert_eq!(
            decode_session(b"{\"id\":1}"),
            Err(CodecError::NotSessionFormat)
        );
        let mut version = good.clone();
        version[2] = 99;
        assert_eq!(
            decode_session(&version),
            Err(CodecError::UnsupportedVersion(99))
        );
        let mut codec = good.clone();
        codec[3] = 7;
        assert_eq!(decode_session(&codec), Err(CodecError::UnknownCodec(7)));
        let truncated = &good[..good.len() - 3];
        assert!(matches!(
            decode_session(truncated),
            Err(CodecError::Decode { .. })
        ));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(
            decode_session(&trailing),
            Err(CodecError::Decode { .. })
        ));
        // A bincode body behind a JSON header is corrupt, not a panic.
        let mut swapped = good;
        swapped[3] = Codec::Json.id();
        assert!(matches!(
            decode_session(&swapped),
            Err(CodecError::Decode { .. })
        ));
    }

    #[test]
    fn a_huge_length_prefix_fails_without_allocating_it() {
        // Header, then a bincode varint claiming a u64::MAX-long first field.
        let mut bytes = header_v2(Codec::Bincode);
        bytes.extend_from_slice(&[0xFD, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert!(matches!(
            decode_session(&bytes),
            Err(CodecError::Decode { .. })
        ));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_session(&bytes);
        }

        #[test]
        fn decoding_arbitrary_bodies_never_panics(codec in prop_oneof![Just(Codec::Bincode), Just(Codec::Json)],
                                                  body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut bytes = header_v2(codec);
            bytes.extend_from_slice(&body);
            let _ = decode_session(&bytes);
            let mut bytes = vec![0xC5, 0x53, 1, codec.id()];
            bytes.extend_from_slice(&body);
            let _ = decode_session(&bytes);
        }

        #[test]
        fn sessions_round_trip(metadata in proptest::collection::btree_map(".{0,16}", ".{0,64}", 0..8),
                               data in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..256)),
                               kind in prop_oneof![Just(SessionType::Mcp), Just(SessionType::Sse), Just(SessionType::Streamable)],
                               codec in prop_oneof![Just(Codec::Bincode), Just(Codec::Json)]) {
            let mut session = Session::new(SessionId::new(), kind);
            for (key, value) in metadata {
                session.set_metadata(key, value);
            }
            if let Some(data) = data {
                session.set_data_with(Codec::Bincode, &data).unwrap();
            }
            let bytes = codec.encode_session(&session).unwrap();
            prop_assert_eq!(decode_session(&bytes).unwrap(), session);
        }
    }
}
