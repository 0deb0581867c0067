//! Who a session belongs to, and which version of it is stored.
//!
//! An [`Owner`] is an authenticated principal: the issuer that vouched for
//! it and the subject it named (the `iss` and `sub` of an OIDC token). A
//! session gets its owner when it is created and keeps it: no method of
//! [`Session`](crate::Session) changes it, and every storage refuses a write
//! that would (see [`Storage`](crate::Storage)). A read on behalf of another
//! principal answers an owned session exactly as an absent one
//! ([`Manager::get_as`](crate::Manager::get_as)).
//!
//! A [`Revision`] numbers the versions of one stored session: a create
//! stores [`Revision::FIRST`], and every later write stores the next one.
//! Whoever holds a revision can write on the condition that nobody wrote in
//! between ([`Manager::update_if`](crate::Manager::update_if)); the atomic
//! read-modify-write ([`Manager::modify`](crate::Manager::modify)) is built on
//! that.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Error;

/// The longest issuer or subject accepted, in bytes. OIDC issuers are URLs
/// and subjects are at most 255 ASCII characters by the specification; the
/// bound keeps a hostile token from making every stored session large.
pub const MAX_OWNER_PART_LEN: usize = 1024;

/// An authenticated principal that owns sessions: an issuer and a subject,
/// both non-empty.
///
/// Two owners are the same when both parts are byte for byte equal; there is
/// no normalisation (an issuer URL with and without a trailing slash are two
/// issuers, as in OIDC).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "OwnerParts")]
pub struct Owner {
    issuer: String,
    subject: String,
}

/// The unchecked shape of an [`Owner`] on the wire, checked on the way in.
#[derive(Deserialize)]
struct OwnerParts {
    issuer: String,
    subject: String,
}

impl TryFrom<OwnerParts> for Owner {
    type Error = Error;

    fn try_from(parts: OwnerParts) -> Result<Self, Error> {
        Owner::new(parts.issuer, parts.subject)
    }
}

impl Owner {
    /// The owner with this issuer and subject; [`Error::InvalidInput`] when
    /// either is empty or longer than [`MAX_OWNER_PART_LEN`] bytes.
    pub fn new(issuer: impl Into<String>, subject: impl Into<String>) -> Result<Self, Error> {
        let issuer = issuer.into();
        let subject = subject.into();
        for (name, part) in [("issuer", &issuer), ("subject", &subject)] {
            if part.is_empty() {
                return Err(Error::InvalidInput(format!("an owner's {name} is empty")));
            }
            if part.len() > MAX_OWNER_PART_LEN {
                return Err(Error::InvalidInput(format!(
                    "an owner's {name} is {} bytes long; at most {MAX_OWNER_PART_LEN} are accepted",
                    part.len()
                )));
            }
        }
        Ok(Self { issuer, subject })
    }

    /// The issuer (OIDC `iss`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The subject (OIDC `sub`).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The SHA-256 digest of the owner: of the issuer's length (eight bytes,
    /// big-endian), the issuer and the subject. The length prefix makes the
    /// split between the parts unambiguous, so `("ab", "c")` and `("a",
    /// "bc")` differ. Backends derive key names and the stored owner tag
    /// from it, so that neither contains the subject, which is personal
    /// data, nor any byte a key name cannot hold.
    pub fn digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update((self.issuer.len() as u64).to_be_bytes());
        hasher.update(self.issuer.as_bytes());
        hasher.update(self.subject.as_bytes());
        hasher.finalize().into()
    }

    /// The first eight bytes of [`Owner::digest`]: what the stored-value
    /// header carries, so that a server-side script can refuse a write that
    /// would change a session's owner without decoding the session. It is a
    /// check against mistakes, not a secret: the owner itself is in the body.
    pub fn tag(&self) -> [u8; 8] {
        let digest = self.digest();
        let mut tag = [0; 8];
        tag.copy_from_slice(&digest[..8]);
        tag
    }
}

impl fmt::Debug for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Issuer and subject identify a user, they do not authenticate one:
        // printing them is what a log needs to say whose session it was.
        f.debug_struct("Owner")
            .field("issuer", &self.issuer)
            .field("subject", &self.subject)
            .finish()
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.subject, self.issuer)
    }
}

/// The version of a stored session: [`Revision::FIRST`] when created, one
/// more on every successful write.
///
/// Values written in stored format 1, before revisions existed, have no
/// number; such a value reads with a revision derived from its bytes (see
/// [`codec`](crate::codec)), which changes whenever the value does, so a
/// conditional write still detects a write in between.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision(u64);

impl Revision {
    /// The revision of a newly created session.
    pub const FIRST: Revision = Revision(1);

    /// The revision numbered `number`.
    pub const fn new(number: u64) -> Self {
        Self(number)
    }

    /// The number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The revision after this one; [`Error::InvalidInput`] at `u64::MAX`,
    /// where no next revision fits (a session written once a nanosecond
    /// would take 584 years to get there).
    pub fn next(self) -> Result<Self, Error> {
        self.0.checked_add(1).map(Self).ok_or_else(|| {
            Error::InvalidInput(format!("revision {} has no successor that fits", self.0))
        })
    }

    /// The eight big-endian bytes the stored-value header carries.
    pub const fn to_be_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// The revision in eight big-endian bytes.
    pub const fn from_be_bytes(bytes: [u8; 8]) -> Self {
        Self(u64::from_be_bytes(bytes))
    }
}

impl fmt::Debug for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Revision({})", self.0)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Revision {
    type Err = Error;

    /// Parses a decimal revision, as a client sends it back (an HTTP
    /// `If-Match` value, a form field); anything that is not a number from 0
    /// to 2^64 - 1 is [`Error::InvalidInput`].
    fn from_str(text: &str) -> Result<Self, Error> {
        text.parse::<u64>().map(Self).map_err(|_| {
            let shown: String = text.chars().take(32).collect();
            Error::InvalidInput(format!(
                "revision {shown:?} is not a whole number from 0 to {}",
                u64::MAX
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_need_both_parts_and_a_bounded_length() {
        assert!(Owner::new("https://issuer.example", "alice").is_ok());
        for (issuer, subject, named) in [
            ("", "alice", "issuer"),
            ("https://issuer.example", "", "subject"),
        ] {
            match Owner::new(issuer, subject) {
                Err(Error::InvalidInput(message)) => {
                    assert!(message.contains(named), "{message}");
                }
                other => panic!("expected InvalidInput, got {other:?}"),
            }
        }
        let long = "x".repeat(MAX_OWNER_PART_LEN + 1);
        assert!(matches!(
            Owner::new("iss", long),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn the_digest_separates_issuer_from_subject() {
        let a = Owner::new("ab", "c").unwrap();
        let b = Owner::new("a", "bc").unwrap();
        assert_ne!(a.digest(), b.digest());
        assert_eq!(a.digest(), Owner::new("ab", "c").unwrap().digest());
        assert_eq!(&a.digest()[..8], &a.tag());
    }

    #[test]
    fn deserializing_checks_the_owner() {
        let owner: Owner = serde_json::from_str(r#"{"issuer":"i","subject":"s"}"#).unwrap();
        assert_eq!(owner, Owner::new("i", "s").unwrap());
        let empty = serde_json::from_str::<Owner>(r#"{"issuer":"i","subject":""}"#);
        assert!(empty.unwrap_err().to_string().contains("subject is empty"));
    }

    #[test]
    fn revisions_parse_advance_and_refuse_what_does_not_fit() {
        assert_eq!("7".parse::<Revision>().unwrap(), Revision::new(7));
        assert_eq!(Revision::FIRST.next().unwrap(), Revision::new(2));
        assert!(matches!(
            Revision::new(u64::MAX).next(),
            Err(Error::InvalidInput(_))
        ));
        for bad in ["", "-1", "18446744073709551616", "1.5", "abc"] {
            assert!(
                matches!(bad.parse::<Revision>(), Err(Error::InvalidInput(_))),
                "{bad:?}"
            );
        }
        let revision = Revision::new(0x0102_0304_0506_0708);
        assert_eq!(Revision::from_be_bytes(revision.to_be_bytes()), revision);
    }
}
