//! Section 4: the stored-value codec.
//!
//! Encode + decode time and stored bytes of one session, small (the typical
//! shape: four metadata pairs) and large (plus 4 KiB of user data), for each
//! of our codecs (bincode, JSON, both with the 4-byte format header) and for
//! MessagePack via `rmp-serde` (what `tower-sessions-redis-store` stores),
//! the baseline, encoding the same `Session`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use session_core::Session;
use session_core::codec::{self, Codec};

use crate::shape::{self, Rng};

/// One codec on one shape.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CodecResult {
    pub(crate) shape: String,
    pub(crate) codec: String,
    pub(crate) bytes: usize,
    /// Mean time of one encode followed by one decode.
    pub(crate) encode_decode_ns: f64,
}

/// User data of about 4 KiB: what an application might keep per session.
#[derive(Serialize, Deserialize)]
struct LargeData {
    subject: String,
    scopes: Vec<String>,
    upstream_token: String,
    notes: String,
}

impl LargeData {
    fn new(rng: &mut Rng) -> Self {
        let text = |len: usize, rng: &mut Rng| -> String {
            (0..len)
                .map(|_| char::from(b'a' + (rng.below(26) as u8)))
                .collect()
        };
        Self {
            subject: text(32, rng),
            scopes: (0..8).map(|_| text(24, rng)).collect(),
            upstream_token: text(1024, rng),
            notes: text(4096 - 32 - 8 * 24 - 1024, rng),
        }
    }
}

fn session(large: bool, data_codec: Codec) -> Result<Session> {
    let mut rng = Rng::new(0xC0DEC);
    let mut session = shape::typical_session(shape::session_id(rng.uuid()), &mut rng);
    if large {
        session.set_data_with(data_codec, &LargeData::new(&mut rng))?;
    }
    Ok(session)
}

/// Runs `round` repeatedly for about `window` and returns its mean time.
fn time_per_round(window: Duration, mut round: impl FnMut() -> Result<()>) -> Result<f64> {
    // Warm up, then run batches until the window is used.
    let warm = Instant::now();
    while warm.elapsed() < window / 5 {
        round()?;
    }
    let started = Instant::now();
    let mut rounds = 0u64;
    while started.elapsed() < window {
        for _ in 0..64 {
            round()?;
        }
        rounds += 64;
    }
    Ok(started.elapsed().as_nanos() as f64 / rounds as f64)
}

/// Runs section 4.
pub(crate) fn run(quick: bool) -> Result<Vec<CodecResult>> {
    let window = if quick {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(1)
    };
    let mut results = Vec::new();
    for large in [false, true] {
        let shape_name = if large { "large" } else { "small" };
        for codec in [Codec::Bincode, Codec::Json] {
            let session = session(large, codec)?;
            let bytes = codec.encode_session(&session)?;
            if codec::decode_session(&bytes)? != session {
                bail!("{codec} does not round-trip");
            }
            let ns = time_per_round(window, || {
                let encoded = codec.encode_session(black_box(&session))?;
                black_box(codec::decode_session(black_box(&encoded))?);
                Ok(())
            })?;
            results.push(CodecResult {
                shape: shape_name.to_owned(),
                codec: codec.name().to_owned(),
                bytes: bytes.len(),
                encode_decode_ns: ns,
            });
        }
        // The baseline: the same session (user data in bincode) as
        // MessagePack, the way tower-sessions-redis-store encodes records.
        let session = session(large, Codec::Bincode)?;
        let bytes = rmp_serde::to_vec(&session)?;
        let ns = time_per_round(window, || {
            let encoded = rmp_serde::to_vec(black_box(&session))?;
            black_box(rmp_serde::from_slice::<Session>(black_box(&encoded))?);
            Ok(())
        })?;
        results.push(CodecResult {
            shape: shape_name.to_owned(),
            codec: "messagepack".to_owned(),
            bytes: bytes.len(),
            encode_decode_ns: ns,
        });
        for result in results.iter().filter(|r| r.shape == shape_name) {
            eprintln!(
                "codec: {:<5} {:<11} {:>6} bytes {:>9.0} ns",
                result.shape, result.codec, result.bytes, result.encode_decode_ns
            );
        }
    }
    Ok(results)
}
