//! Encryption at rest against real servers: what Redis holds is sealed,
//! every way a sealed value can be wrong is a typed error that deletes
//! nothing, and keys rotate under load without losing a write.
//!
//! The conformance suite runs with encryption on as well
//! (`conformance.rs`, the `sealed_*` modules); this file checks what the
//! suite cannot see: the bytes on the server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{RedisHarness, Topology, config, test_keyring};
use session_core::seal::{SEALED_FLAG, is_sealed};
use session_core::{
    CodecError, Error, Manager, Owner, Session, SessionId, SessionType, Storage, Ttl,
};
use session_redis::RedisStorage;
use session_redis::fred::bytes::Bytes;
use session_redis::fred::interfaces::KeysInterface;

const TTL: Duration = Duration::from_secs(60);

fn ttl() -> Ttl {
    Ttl::new(TTL).unwrap()
}

async fn raw_get(storage: &RedisStorage, id: &SessionId) -> Option<Vec<u8>> {
    let value: Option<Bytes> = storage.client().get(storage.key(id)).await.unwrap();
    value.map(|bytes| bytes.to_vec())
}

async fn raw_set(storage: &RedisStorage, id: &SessionId, value: &[u8]) {
    let _: () = storage
        .client()
        .set(
            storage.key(id),
            Bytes::copy_from_slice(value),
            None,
            None,
            false,
        )
        .await
        .unwrap();
}

/// A storage on the harness's key prefix with another keyring (or none).
async fn with_keys(harness: &RedisHarness, keys: Option<(&[u32], Option<u32>)>) -> RedisStorage {
    let config = harness
        .config
        .clone()
        .with_encryption(keys.map(|(ids, write)| test_keyring(ids, write)))
        .unwrap();
    RedisStorage::connect(&config).await.unwrap()
}

fn owned_session() -> Session {
    let owner = Owner::new("https://issuer.example", "alice@example.com").unwrap();
    let mut session = Session::new_owned(SessionId::new(), SessionType::Mcp, owner);
    session.set_metadata("client", "a metadata value that must not be readable");
    session
}

/// What the server holds is sealed under the write key and shows neither
/// the id, the owner nor the metadata; each tampered or misplaced value
/// reads as its typed error, and is still there afterwards.
async fn sealed_values_hide_the_body_and_refuse_tampering(topology: Topology) {
    let Some(harness) = RedisHarness::sealed(topology).await else {
        return;
    };
    let storage = &harness.raw;
    let session = owned_session();
    let id = session.id();
    assert!(
        storage
            .create(Arc::new(session.clone()), ttl())
            .await
            .unwrap()
    );
    let stored = raw_get(storage, &id).await.expect("stored");
    assert!(is_sealed(&stored));
    assert_eq!(
        &stored[20..24],
        &2_u32.to_be_bytes(),
        "sealed with the write key"
    );
    for secret in [
        id.to_string(),
        "alice@example.com".to_owned(),
        "a metadata value".to_owned(),
    ] {
        assert!(
            !String::from_utf8_lossy(&stored).contains(&secret),
            "the stored value shows {secret:?}"
        );
    }
    let read = storage.get(&id, ttl()).await.unwrap().expect("readable");
    assert_eq!(read.get_metadata("client"), session.get_metadata("client"));
    assert_eq!(read.owner(), session.owner());

    // A storage without keys, one with another key under id 2, and one
    // without key 2 at all.
    let plain = with_keys(&harness, None).await;
    let impostor = {
        let config = harness
            .config
            .clone()
            .with_encryption(Some(
                session_core::seal::Keyring::new(
                    vec![session_core::seal::SealKey::new("test", 2, &[0xEE; 32]).unwrap()],
                    Some(2),
                )
                .unwrap(),
            ))
            .unwrap();
        RedisStorage::connect(&config).await.unwrap()
    };
    let without_two = with_keys(&harness, Some((&[1], Some(1)))).await;
    let codec_error = |result: session_core::Result<Option<Arc<Session>>>| match result {
        Err(Error::Codec(error)) => error,
        other => panic!("expected a codec error, got {other:?}"),
    };
    assert_eq!(codec_error(plain.get(&id, ttl()).await), CodecError::Sealed);
    assert_eq!(
        codec_error(impostor.get(&id, ttl()).await),
        CodecError::Unseal { key_id: 2 }
    );
    assert_eq!(
        codec_error(without_two.get(&id, ttl()).await),
        CodecError::UnknownKey(2)
    );
    // The value moved under another session's key, truncated, and with a
    // bit flipped in the body.
    let moved = SessionId::new();
    raw_set(storage, &moved, &stored).await;
    assert!(matches!(
        codec_error(storage.get(&moved, ttl()).await),
        CodecError::Unseal { key_id: 2 }
    ));
    let truncated = SessionId::new();
    raw_set(storage, &truncated, &stored[..30]).await;
    assert!(matches!(
        codec_error(storage.get(&truncated, ttl()).await),
        CodecError::BadEnvelope(_)
    ));
    let mut flipped = stored.clone();
    let last = flipped.len() - 20;
    flipped[last] ^= 1;
    raw_set(storage, &id, &flipped).await;
    assert_eq!(
        codec_error(storage.get(&id, ttl()).await),
        CodecError::Unseal { key_id: 2 }
    );
    // None of those reads deleted anything.
    for key in [&id, &moved, &truncated] {
        assert!(raw_get(storage, key).await.is_some());
    }
    // A strict keyring refuses a plaintext value; the default one reads it.
    let plaintext = SessionId::new();
    assert!(
        plain
            .create(Arc::new(Session::new(plaintext, SessionType::Mcp)), ttl())
            .await
            .unwrap()
    );
    assert!(!is_sealed(&raw_get(storage, &plaintext).await.unwrap()));
    assert!(storage.get(&plaintext, ttl()).await.unwrap().is_some());
    let strict = {
        let config = harness
            .config
            .clone()
            .with_encryption(Some(
                test_keyring(&[1, 2], Some(2)).accepting_plaintext(false),
            ))
            .unwrap();
        RedisStorage::connect(&config).await.unwrap()
    };
    assert_eq!(
        codec_error(strict.get(&plaintext, ttl()).await),
        CodecError::NotSealed
    );
    // A write through the sealing storage seals the plaintext value.
    let mut edited = (*storage.get(&plaintext, ttl()).await.unwrap().unwrap()).clone();
    edited.set_metadata("step", "sealed now");
    assert!(
        storage
            .update(Arc::new(edited), ttl())
            .await
            .unwrap()
            .is_some()
    );
    let resealed = raw_get(storage, &plaintext).await.unwrap();
    assert_eq!(resealed[3] & SEALED_FLAG, SEALED_FLAG);
    assert!(strict.get(&plaintext, ttl()).await.unwrap().is_some());
    for extra in [plain, impostor, without_two, strict] {
        extra.close().await.unwrap();
    }
}

/// Two replicas increment counters through `Manager::modify` while the
/// write key moves from 1 to 2 in the rolling order: both learn key 2, then
/// one switches its write key, then the other. Each increment runs on its
/// replica's storage of the rollout's current phase (see [`Rollout`]), so
/// the phases follow one another under load, with increments of the phase
/// before still in flight. No increment is lost, none fails, and every
/// session ends sealed under key 2.
async fn rotation_under_load_loses_nothing(topology: Topology) {
    const SESSIONS: usize = 8;
    const TASKS: usize = 8;
    const ROUNDS: u64 = 40;
    let Some(base) = config(topology) else { return };
    let keyed = |ids: &'static [u32], write: u32| {
        base.clone()
            .with_encryption(Some(test_keyring(ids, Some(write))))
            .unwrap()
    };
    // The phases of the rollout: (replica A's keys, replica B's keys).
    let phases = [
        (keyed(&[1], 1), keyed(&[1], 1)),
        (keyed(&[1, 2], 1), keyed(&[1, 2], 1)),
        (keyed(&[1, 2], 1), keyed(&[1, 2], 2)),
        (keyed(&[1, 2], 2), keyed(&[1, 2], 2)),
    ];
    let mut managers = Vec::new();
    for (a, b) in &phases {
        let mut pair = Vec::new();
        for config in [a, b] {
            pair.push(
                Manager::builder(RedisStorage::connect(config).await.unwrap(), ttl())
                    .modify_attempts(64)
                    .build()
                    .unwrap(),
            );
        }
        managers.push(pair);
    }
    let mut ids = Vec::new();
    for _ in 0..SESSIONS {
        ids.push(managers[0][0].create().await.unwrap().id());
    }
    let total = 2 * TASKS as u64 * ROUNDS;
    // Phase 3 is reached with a fifth of the increments still to come.
    let per_phase = total / (phases.len() as u64 + 1);
    let (managers, ids) = (Arc::new(managers), Arc::new(ids));
    let done = Arc::new(AtomicU64::new(0));
    let rollout = Arc::new(Mutex::new(Rollout {
        phase: 0,
        in_flight: [0; 4],
        done: 0,
    }));
    let mut tasks = Vec::new();
    for replica in 0..2 {
        for task in 0..TASKS {
            let (managers, ids, done) = (managers.clone(), ids.clone(), done.clone());
            let rollout = rollout.clone();
            tasks.push(tokio::spawn(async move {
                for round in 0..ROUNDS {
                    let phase = rollout.lock().unwrap().start();
                    let id = ids[(task + round as usize) % ids.len()];
                    let changed = managers[phase][replica]
                        .modify(&id, |session| {
                            let count: u64 = session
                                .get_metadata("count")
                                .map_or(0, |count| count.parse().unwrap());
                            session.set_metadata("count", (count + 1).to_string());
                            Ok::<_, Error>(())
                        })
                        .await
                        .unwrap_or_else(|error| panic!("phase {phase}: modify failed: {error}"));
                    assert!(changed.is_some(), "a session disappeared");
                    done.fetch_add(1, Ordering::Relaxed);
                    rollout.lock().unwrap().end(phase, per_phase);
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        rollout.lock().unwrap().phase,
        3,
        "the rollout did not finish"
    );
    let last = managers[phases.len() - 1][0].clone();
    let raw = RedisStorage::connect(&phases[3].0).await.unwrap();
    let mut counted = 0;
    for id in ids.iter() {
        // One last write, so that a session whose last increment came
        // before the switch is sealed anew.
        let (session, ()) = last
            .modify(id, |_| Ok::<_, Error>(()))
            .await
            .unwrap()
            .expect("alive");
        counted += session
            .get_metadata("count")
            .map_or(0, |count| count.parse::<u64>().unwrap());
        let stored = raw_get(&raw, id).await.unwrap();
        assert_eq!(&stored[20..24], &2_u32.to_be_bytes(), "left under key 1");
        last.delete(id).await.unwrap();
    }
    assert_eq!(counted, total);
    assert_eq!(done.load(Ordering::Relaxed), total);
    for pair in managers.iter() {
        for manager in pair {
            manager.close().await.unwrap();
        }
    }
    raw.close().await.unwrap();
}

/// Where the rollout of the rotation case is: the phase new increments
/// start in, and how many increments of each phase are in flight. A
/// replica of phase `p` knows the keys of phases `p - 1` and `p + 1`, but
/// not necessarily those of `p + 2` (phase 0 lacks key 2, which phase 2
/// seals with): so the rollout moves to `p + 1` only once nothing of
/// phase `p - 1` is in flight, as a rolling deploy replaces every replica
/// of one step before it takes the next.
struct Rollout {
    phase: usize,
    in_flight: [u32; 4],
    done: u64,
}

impl Rollout {
    fn start(&mut self) -> usize {
        self.in_flight[self.phase] += 1;
        self.phase
    }

    fn end(&mut self, phase: usize, per_phase: u64) {
        self.in_flight[phase] -= 1;
        self.done += 1;
        let next = self.phase + 1;
        let drained = self.phase == 0 || self.in_flight[self.phase - 1] == 0;
        if next < self.in_flight.len() && self.done >= next as u64 * per_phase && drained {
            self.phase = next;
        }
    }
}

on_topologies!(
    [sealed_values_hide_the_body_and_refuse_tampering, rotation_under_load_loses_nothing],
    standalone => Topology::Standalone,
    cluster => Topology::Cluster,
    sentinel => Topology::Sentinel,
    valkey_standalone => Topology::ValkeyStandalone,
    valkey_cluster => Topology::ValkeyCluster,
    valkey_sentinel => Topology::ValkeySentinel,
);
