//! The stored-value format.
//!
//! Every value a backend stores starts with a four-byte header:
//!
//! ```text
//! offset  size  field
//! 0       2     magic: 0xC5 0x53
//! 2       1     format version: 1
//! 3       1     codec id: 1 = bincode 2 (serde mode), 2 = JSON
//! 4       ..    the body, a `Session` encoded with that codec
//! ```
//!
//! The header is what makes rolling deploys safe: a reader dispatches on the
//! codec id, so a replica configured for JSON reads what a bincode replica
//! wrote and the other way round, and a future format version can be read
//! beside this one. A value that is not in this format (a foreign value under
//! the key prefix, a truncated write, an unknown version or codec) decodes to
//! a typed [`CodecError`], never a panic.
//!
//! bincode is the default body: it is compact and fast. The crate that
//! implements it is no longer maintained, which is one more reason it sits
//! behind this module: it can be replaced with a new codec id without
//! breaking what is already stored.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::Session;

/// The first two bytes of every stored value.
pub const MAGIC: [u8; 2] = [0xC5, 0x53];
/// The format version this build writes.
pub const FORMAT_VERSION: u8 = 1;
/// The length of the header in bytes.
pub const HEADER_LEN: usize = 4;

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

    /// Encodes a session with its header, ready to store.
    pub fn encode_session(self, session: &Session) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&MAGIC);
        out.push(FORMAT_VERSION);
        out.push(self.id());
        self.encode_into(session, &mut out)?;
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

/// Decodes a stored value, whichever codec wrote it.
pub fn decode_session(bytes: &[u8]) -> Result<Session, CodecError> {
    let codec = header_codec(bytes)?;
    codec.decode_value(&bytes[HEADER_LEN..])
}

/// Decodes the value stored under session `id`'s key, and checks that it is
/// that session: a value copied or written under another session's key is
/// corrupt for this one. The error names the codec that wrote the value.
pub fn decode_session_for(bytes: &[u8], id: &crate::SessionId) -> Result<Session, CodecError> {
    let codec = header_codec(bytes)?;
    let session: Session = codec.decode_value(&bytes[HEADER_LEN..])?;
    if session.id() != *id {
        return Err(CodecError::Decode {
            codec,
            message: "the stored session has another id than its key".into(),
        });
    }
    Ok(session)
}

/// Checks the header and returns the codec it names.
fn header_codec(bytes: &[u8]) -> Result<Codec, CodecError> {
    let header = bytes
        .get(..HEADER_LEN)
        .ok_or(CodecError::Truncated { len: bytes.len() })?;
    if header[..2] != MAGIC {
        return Err(CodecError::NotSessionFormat);
    }
    if header[2] != FORMAT_VERSION {
        return Err(CodecError::UnsupportedVersion(header[2]));
    }
    Codec::from_id(header[3]).ok_or(CodecError::UnknownCodec(header[3]))
}

/// Why a value could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The value is shorter than the header.
    #[error("stored value is truncated: {len} bytes, shorter than the {HEADER_LEN}-byte header")]
    Truncated {
        /// The length of the value.
        len: usize,
    },
    /// The value does not start with the magic bytes: something else wrote it.
    #[error("stored value is not in the session format (wrong magic bytes)")]
    NotSessionFormat,
    /// The header names a format version this build cannot read.
    #[error("stored value has format version {0}; this build reads version {FORMAT_VERSION}")]
    UnsupportedVersion(u8),
    /// The header names a codec this build does not know.
    #[error("stored value names unknown codec id {0}")]
    UnknownCodec(u8),
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
        let mut bytes = vec![0xC5, 0x53, FORMAT_VERSION, Codec::Bincode.id()];
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
            let mut bytes = vec![0xC5, 0x53, FORMAT_VERSION, codec.id()];
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
