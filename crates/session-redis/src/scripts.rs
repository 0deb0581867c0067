//! The Lua scripts behind the writes that compare, and how they are sent.
//!
//! Each script touches exactly one key, passed in `KEYS`, so it runs on
//! whichever cluster node owns that key's slot, and on servers that insist
//! on declared keys (Dragonfly). A script is sent by its SHA-1 digest
//! (`EVALSHA`); a server that does not have it (a restart, a failover to a
//! replica that never saw it, `SCRIPT FLUSH`) answers `NOSCRIPT` without
//! running anything, and the script is then sent whole once (`EVAL`), which
//! also caches it there for the next call.
//!
//! The scripts read the stored-value header of `session_core::codec` at its
//! fixed offsets (Lua strings count from 1): the magic bytes at 1-2, the
//! format version at 3, and in format 2 the revision at 5-12 and the owner
//! tag at 13-20. They never decode a body.

use fred::bytes::Bytes;
use fred::interfaces::LuaInterface;
use fred::prelude::Value;
use fred::types::FromValue;
use session_core::{Revision, codec};
use sha1::{Digest, Sha1};

/// A script and its digest.
pub(crate) struct Script {
    lua: &'static str,
    sha1: String,
}

impl Script {
    pub(crate) fn new(lua: &'static str) -> Self {
        let digest = Sha1::digest(lua.as_bytes());
        let sha1 = digest.iter().map(|byte| format!("{byte:02x}")).collect();
        Self { lua, sha1 }
    }

    /// Runs the script on `key` with `args`: by digest, and whole when the
    /// server lost it.
    pub(crate) async fn run<R: FromValue>(
        &self,
        client: &fred::clients::Client,
        key: Bytes,
        args: Vec<Value>,
    ) -> Result<R, fred::error::Error> {
        let first = client
            .evalsha::<R, _, _, _>(self.sha1.as_str(), key.clone(), args.clone())
            .await;
        match first {
            // NOSCRIPT means the server ran nothing, so sending the script
            // whole cannot apply the write twice.
            Err(error) if error.details().starts_with("NOSCRIPT") => {
                Box::pin(client.eval::<R, _, _, _>(self.lua, key, args)).await
            }
            other => other,
        }
    }
}

/// The scripts of one storage, digested once.
pub(crate) struct Scripts {
    /// Update, upsert or conditional update of one session.
    pub(crate) write: Script,
    /// Deletes a session only if it belongs to a given owner.
    pub(crate) delete_owned: Script,
    /// Adds a session to its owner's index and extends the index's TTL.
    pub(crate) index: Script,
    /// Reads a session and slides its TTL only when it runs low.
    pub(crate) load: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            write: Script::new(WRITE),
            delete_owned: Script::new(DELETE_OWNED),
            index: Script::new(INDEX),
            load: Script::new(LOAD),
        }
    }
}

/// What the write script is asked to do (its `ARGV[3]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteMode {
    /// Write only if the session exists.
    Update,
    /// Write whether or not it exists.
    Upsert,
    /// Write only if it exists at the given revision.
    If(Revision),
}

impl WriteMode {
    /// The script's arguments after the value and the TTL.
    pub(crate) fn args(self) -> [Value; 2] {
        match self {
            Self::Update => [Value::from_static_str("update"), Value::from_static(b"")],
            Self::Upsert => [Value::from_static_str("upsert"), Value::from_static(b"")],
            Self::If(expected) => [
                Value::from_static_str("if"),
                Value::Bytes(Bytes::copy_from_slice(&expected.to_be_bytes())),
            ],
        }
    }
}

/// What the write script answered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Written {
    /// Written; at this revision when the value was in format 2 (a value in
    /// format 1 carries none: its revision derives from its bytes).
    Stored(Option<Revision>),
    /// Nothing stored under the key.
    Absent,
    /// Stored at another revision than expected; nothing written.
    Conflict(Revision),
}

/// Why the write script refused, from its error reply.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The write would change the session's owner.
    Owner,
    /// The stored revision has no successor.
    Revision,
    /// The stored value is not in a session format this build reads.
    Format,
}

impl Refused {
    /// The refusal an error reply names, if it is one of the script's own.
    pub(crate) fn of(error: &fred::error::Error) -> Option<Self> {
        let details = error.details();
        if details.contains("SESSION_OWNER") {
            Some(Self::Owner)
        } else if details.contains("SESSION_REVISION") {
            Some(Self::Revision)
        } else if details.contains("SESSION_FORMAT") {
            Some(Self::Format)
        } else {
            None
        }
    }
}

/// What the load script answered for a session that exists.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Loaded {
    /// The stored value.
    pub(crate) value: Bytes,
    /// The key's remaining life after the script, in ms.
    pub(crate) left_ms: u64,
    /// Whether the script set the TTL (a write, which other clients'
    /// copies are invalidated by).
    pub(crate) refreshed: bool,
}

/// Reads the load script's reply: `{value, pttl, refreshed}`, or nothing
/// (`None` inside) for a missing key.
pub(crate) fn loaded(reply: Value) -> Option<Option<Loaded>> {
    let parts = match reply {
        Value::Null => return Some(None),
        Value::Array(parts) => parts,
        _ => return None,
    };
    let [value, left, refreshed]: [Value; 3] = parts.try_into().ok()?;
    let value = match value {
        Value::Bytes(bytes) => bytes,
        Value::String(text) => text.into_inner(),
        _ => return None,
    };
    Some(Some(Loaded {
        value,
        left_ms: u64::try_from(left.as_i64()?).ok()?,
        refreshed: refreshed.as_i64()? == 1,
    }))
}

/// Reads the write script's reply: `{status, revision}`.
pub(crate) fn written(reply: Value) -> Option<Written> {
    let Value::Array(parts) = reply else {
        return None;
    };
    let [status, revision]: [Value; 2] = parts.try_into().ok()?;
    let revision = match revision {
        Value::Bytes(bytes) => bytes,
        Value::String(text) => text.into_inner(),
        _ => return None,
    };
    let number = || -> Option<Revision> {
        let bytes: [u8; 8] = revision.as_ref().try_into().ok()?;
        Some(Revision::from_be_bytes(bytes))
    };
    match status.as_i64()? {
        0 => Some(Written::Absent),
        1 if revision.is_empty() => Some(Written::Stored(None)),
        1 => Some(Written::Stored(Some(number()?))),
        2 => Some(Written::Conflict(number()?)),
        _ => None,
    }
}

// The offsets below are those of `session_core::codec`; a test checks them.
const _: () = assert!(codec::REVISION_BYTES.start == 4 && codec::REVISION_BYTES.end == 12);
const _: () = assert!(codec::OWNER_TAG_BYTES.start == 12 && codec::OWNER_TAG_BYTES.end == 20);

/// KEYS[1]: the session's key. ARGV[1]: the value to store (format 2 with
/// any revision in its header, or format 1); ARGV[2]: its TTL in ms;
/// ARGV[3]: `update`, `upsert` or `if`; ARGV[4]: for `if`, the expected
/// revision (8 bytes, big-endian).
///
/// Replies `{1, revision}` when it wrote (the new revision, empty for a
/// value in format 1), `{0, ''}` when there was nothing to update, and
/// `{2, revision}` when the stored revision was not the expected one. The
/// revision of a stored value in format 1 is the first 8 bytes of its
/// SHA-1 (`codec::legacy_revision`). A stored value in no format this build
/// reads is replaced by a plain write and conflicts with a conditional one.
const WRITE: &str = r"
local NONE = '\0\0\0\0\0\0\0\0'
local FIRST = '\0\0\0\0\0\0\0\1'
local function version(value)
  if string.sub(value, 1, 2) ~= '\197\83' or string.len(value) < 4 then return nil end
  local number = string.byte(value, 3)
  if number == 1 then return 1 end
  if number == 2 and string.len(value) >= 20 then return 2 end
  return nil
end
local function revision(value, format)
  if format == 2 then return string.sub(value, 5, 12) end
  local hex = redis.sha1hex(value)
  local bytes = {}
  for i = 1, 16, 2 do
    bytes[#bytes + 1] = string.char(tonumber(string.sub(hex, i, i + 1), 16))
  end
  return table.concat(bytes)
end
local function owner(value, format)
  if format == 2 then return string.sub(value, 13, 20) end
  return NONE
end
local function after(number)
  local bytes = {string.byte(number, 1, 8)}
  for i = 8, 1, -1 do
    if bytes[i] < 255 then
      bytes[i] = bytes[i] + 1
      return string.char(unpack(bytes))
    end
    bytes[i] = 0
  end
  return nil
end
local value = ARGV[1]
local writing = version(value)
if not writing then
  return redis.error_reply('SESSION_FORMAT the value to write is not in a session format')
end
local current = redis.call('GET', KEYS[1])
local next_revision
if not current then
  if ARGV[3] ~= 'upsert' then return {0, ''} end
  next_revision = FIRST
else
  local stored = version(current)
  if not stored then
    -- An unreadable value (corrupt, or of another program) has no
    -- revision or owner to keep: a plain write replaces it, as SET did
    -- before scripts, and a conditional write conflicts with it (its
    -- revision is the one derived from its bytes, as for format 1).
    if ARGV[3] == 'if' then return {2, revision(current, 1)} end
    next_revision = FIRST
  else
    local stored_revision = revision(current, stored)
    if ARGV[3] == 'if' and stored_revision ~= ARGV[4] then return {2, stored_revision} end
    if owner(current, stored) ~= owner(value, writing) then
      return redis.error_reply('SESSION_OWNER the write would change the session owner')
    end
    next_revision = after(stored_revision)
    if not next_revision then
      return redis.error_reply('SESSION_REVISION the stored revision has no successor that fits')
    end
  end
end
if writing == 2 then
  value = string.sub(value, 1, 4) .. next_revision .. string.sub(value, 13)
else
  next_revision = ''
end
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return {1, next_revision}
";

/// KEYS[1]: a session's key. ARGV[1]: an owner tag (8 bytes). Deletes the
/// session only if it is stored in format 2 with that owner tag; replies
/// with the value it deleted (which names the session when its key, hashed,
/// does not), nil otherwise.
const DELETE_OWNED: &str = r"
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, 2) == '\197\83' and string.byte(current, 3) == 2
    and string.len(current) >= 20 and string.sub(current, 13, 20) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return current
end
return false
";

/// KEYS[1]: a session's key. ARGV[1]: the TTL in ms; ARGV[2]: the
/// threshold in ms, `ttl - refresh_window`.
///
/// Replies `{value, remaining life in ms, 1 if it set the TTL}`, or nil
/// when the key does not exist. It sets the TTL only when less than the
/// threshold is left (or more than the TTL, after the TTL was shortened):
/// a TTL change is a write, and every write invalidates every other
/// client's tracked copy, so a busy session read by many replicas is
/// refreshed about once per refresh window for all of them, not once per
/// replica.
///
/// The first `GET` comes before any change, so that a key of another type
/// fails with `WRONGTYPE` and is left as it was. After a `PEXPIRE` the
/// value is read once more: the server stops tracking a key for the client
/// that changes it, and a read tracks it again.
pub(crate) const LOAD: &str = r"
local value = redis.call('GET', KEYS[1])
if not value then return false end
local left = redis.call('PTTL', KEYS[1])
local ttl = tonumber(ARGV[1])
local refreshed = 0
if left < tonumber(ARGV[2]) or left > ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('GET', KEYS[1])
  left = ttl
  refreshed = 1
end
return {value, left, refreshed}
";

/// KEYS[1]: an owner's index (a sorted set of session ids). ARGV[1]: a
/// session id; ARGV[2]: its score, the time of this write in ms since the
/// Unix epoch; ARGV[3]: the least TTL the index must have afterwards, in ms.
/// The TTL only ever grows here: other sessions of the owner may live
/// longer than this one.
const INDEX: &str = r"
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local left = redis.call('PTTL', KEYS[1])
if left < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_lowercase_hex_sha1() {
        // The SHA-1 of the empty string, as Redis prints digests.
        assert_eq!(
            Script::new("").sha1,
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
    }

    #[test]
    fn replies_of_the_load_script_are_read() {
        let reply = |left: i64, refreshed: i64| {
            Value::Array(vec![
                Value::from_static(b"value"),
                Value::Integer(left),
                Value::Integer(refreshed),
            ])
        };
        assert_eq!(
            loaded(reply(1500, 1)),
            Some(Some(Loaded {
                value: Bytes::from_static(b"value"),
                left_ms: 1500,
                refreshed: true
            }))
        );
        assert!(!loaded(reply(10, 0)).unwrap().unwrap().refreshed);
        assert_eq!(loaded(Value::Null), Some(None));
        assert_eq!(loaded(reply(-1, 0)), None);
        assert_eq!(loaded(Value::Integer(3)), None);
    }

    #[test]
    fn replies_of_the_write_script_are_read() {
        let revision = Revision::new(7);
        let bytes = Value::Bytes(Bytes::copy_from_slice(&revision.to_be_bytes()));
        let reply =
            |status: i64, revision: Value| Value::Array(vec![Value::Integer(status), revision]);
        assert_eq!(
            written(reply(1, bytes.clone())),
            Some(Written::Stored(Some(revision)))
        );
        assert_eq!(
            written(reply(1, Value::from_static(b""))),
            Some(Written::Stored(None))
        );
        assert_eq!(
            written(reply(0, Value::from_static(b""))),
            Some(Written::Absent)
        );
        assert_eq!(written(reply(2, bytes)), Some(Written::Conflict(revision)));
        assert_eq!(written(reply(2, Value::from_static(b"short"))), None);
        assert_eq!(written(Value::Integer(1)), None);
        assert_eq!(written(reply(9, Value::from_static(b""))), None);
    }
}
