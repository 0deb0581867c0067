//! The data every benchmark uses: a seeded random source and the session of
//! a typical shape (id, type, timestamps, four metadata pairs), in our model
//! and in tower-sessions' model.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use session_core::{Session, SessionId, SessionType};
use uuid::Uuid;

/// SplitMix64: a tiny, fast, seeded generator. Seeds are fixed so that every
/// run makes the same keys, values and operation sequences.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        // Multiply-shift: unbiased enough for picking keys, and no division.
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// A random version-4 UUID as a u128 (the form every store's id is kept
    /// in by the benchmarks).
    pub(crate) fn uuid(&mut self) -> u128 {
        let raw = (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64());
        raw & 0xFFFF_FFFF_FFFF_4FFF_BFFF_FFFF_FFFF_FFFF | 0x4000_8000_0000_0000_0000
    }
}

/// A session id from the u128 form.
pub(crate) fn session_id(raw: u128) -> SessionId {
    SessionId::from(Uuid::from_u128(raw))
}

/// The u128 form of a session id.
pub(crate) fn raw_id(id: SessionId) -> u128 {
    id.as_uuid().as_u128()
}

/// Four metadata pairs of the kind an MCP gateway keeps per session.
pub(crate) fn typical_metadata(rng: &mut Rng) -> BTreeMap<String, String> {
    let mut metadata = BTreeMap::new();
    metadata.insert(
        "user".to_owned(),
        format!("user-{:07}@example.com", rng.below(10_000_000)),
    );
    metadata.insert(
        "client".to_owned(),
        format!("claude-desktop/1.{}.{}", rng.below(20), rng.below(100)),
    );
    metadata.insert(
        "remote_addr".to_owned(),
        format!(
            "198.51.{}.{}:{}",
            rng.below(256),
            rng.below(256),
            1024 + rng.below(60_000)
        ),
    );
    metadata.insert(
        "backend".to_owned(),
        format!(
            "mcp-server-{}",
            ["github", "fetch", "postgres", "slack"][rng.below(4)]
        ),
    );
    metadata
}

/// A session of the typical shape.
pub(crate) fn typical_session(id: SessionId, rng: &mut Rng) -> Session {
    let mut session = Session::new(id, SessionType::Streamable);
    *session.metadata_mut() = typical_metadata(rng);
    session
}

/// The same data in tower-sessions' model: a map of JSON values.
pub(crate) fn tower_data(session: &Session) -> HashMap<String, Value> {
    let secs = |at: std::time::SystemTime| {
        at.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default()
    };
    let mut data = HashMap::with_capacity(7);
    data.insert(
        "type".to_owned(),
        Value::from(session.session_type().as_str()),
    );
    data.insert(
        "created_at".to_owned(),
        Value::from(secs(session.created_at())),
    );
    data.insert(
        "updated_at".to_owned(),
        Value::from(secs(session.updated_at())),
    );
    for (key, value) in session.metadata() {
        data.insert(key.clone(), Value::from(value.as_str()));
    }
    data
}
