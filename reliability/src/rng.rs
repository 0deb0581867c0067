//! A small seeded generator (SplitMix64): schedules are reproducible from the
//! seed each scenario prints, without a dependency on a random-number crate.

use session_core::SessionId;

/// The first stream of the load tasks (task `i` draws from stream
/// `LOAD_STREAMS + i`); scenarios use streams below it, so a scenario's own
/// ids never coincide with a load task's.
pub const LOAD_STREAMS: u64 = 1 << 40;

/// SplitMix64: fast, statistically fine for schedules, not cryptographic.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A generator for one stream (a task, a round) derived from `seed`.
    pub fn derive(seed: u64, stream: u64) -> Self {
        let mut rng = Self(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        rng.next_u64();
        rng
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }

    /// `true` with probability `percent`/100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// A session id (a version-4 UUID) drawn from this generator.
    pub fn session_id(&mut self) -> SessionId {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        SessionId::from(uuid::Builder::from_random_bytes(bytes).into_uuid())
    }
}

/// The seed of this run: `RELIABILITY_SEED` when set (to reproduce a run),
/// otherwise taken from the clock.
pub fn run_seed() -> u64 {
    if let Some(seed) = std::env::var("RELIABILITY_SEED")
        .ok()
        .and_then(|seed| seed.trim().parse().ok())
    {
        return seed;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0x5EED)
}
