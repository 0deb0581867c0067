//! Session ids hashed in key names against real servers: after a workload,
//! no key name, owner index member or (with encryption) stored value holds
//! a session id; and a migration from plain keys through both phases loses
//! no session, creates no second copy and keeps count, listing and
//! revocation whole.
//!
//! The conformance suite runs with hashed ids too (`conformance.rs`, the
//! `private_*`, `hashed_*` and `migrating_*` modules).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::{Topology, config, hashing, sealing};
use futures_util::TryStreamExt;
use session_config::{HashPhase, RedisConfig};
use session_core::{Error, Manager, Owner, Session, SessionId, SessionType, Storage, Ttl};
use session_redis::events::Record;
use session_redis::fred::bytes::Bytes;
use session_redis::fred::interfaces::{ClientLike, KeysInterface, SortedSetsInterface};
use session_redis::fred::types::Key;
use session_redis::{EventLimits, EventLog, RedisStorage};

fn ttl() -> Ttl {
    Ttl::from_secs(60).unwrap()
}

fn owner() -> Owner {
    Owner::new("https://issuer.example", "alice").unwrap()
}

/// Every key under the storage's prefix, and the event logs of it, on
/// every node (`SCAN`, as `KEYS *` would list them).
async fn every_key(storage: &RedisStorage) -> Vec<Key> {
    let client = storage.client();
    let keys: HashSet<Key> = if client.is_clustered() {
        client
            .scan_cluster_buffered("*", Some(1000), None)
            .try_collect()
            .await
            .unwrap()
    } else {
        client
            .scan_buffered("*", Some(1000), None)
            .try_collect()
            .await
            .unwrap()
    };
    let prefix = storage.key_prefix();
    let events = format!("events:{prefix}");
    keys.into_iter()
        .filter(|key| {
            let name = String::from_utf8_lossy(key.as_bytes());
            name.starts_with(prefix) || name.starts_with(&events)
        })
        .collect()
}

/// A workload of plain and owned sessions, writes, a read-modify-write, a
/// listing and an event log, through storages that hash ids and seal
/// values; then every key name, every owner index member and every session
/// value is searched for every session id the workload made.
async fn a_workload_leaves_no_session_id_in_redis(topology: Topology) {
    let Some(base) = config(topology) else { return };
    let config = sealing(hashing(base, HashPhase::Hashed));
    let storage = RedisStorage::connect(&config).await.unwrap();
    let manager = Manager::typed_builder(storage.clone(), ttl())
        .build()
        .unwrap();
    let log = EventLog::connect(&config, EventLimits::default())
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..4 {
        let session = manager.create().await.unwrap();
        let mut edited = (*session).clone();
        edited.set_metadata("user", "someone");
        assert!(manager.update(edited).await.unwrap());
        ids.push(session.id());
    }
    for _ in 0..3 {
        let session = manager.create_owned(owner()).await.unwrap();
        manager
            .modify(&session.id(), |session| {
                session.set_metadata("step", "modified");
                Ok::<_, Error>(())
            })
            .await
            .unwrap()
            .expect("it exists");
        ids.push(session.id());
    }
    let record = Record::Event {
        data: Some(Bytes::from_static(b"progress")),
        retry: None,
    };
    log.append(&ids[0], "request-1", &record, ttl())
        .await
        .unwrap();
    assert_eq!(manager.list_owned(&owner()).await.unwrap().len(), 3);
    assert_eq!(manager.count().await.unwrap(), 7);

    let keys = every_key(&storage).await;
    // Seven sessions, one owner index, one event log.
    assert_eq!(keys.len(), 9, "{keys:?}");
    let texts: Vec<String> = ids
        .iter()
        .flat_map(|id| [id.to_string(), id.as_uuid().simple().to_string()])
        .collect();
    let client = storage.client();
    for key in &keys {
        let name = String::from_utf8_lossy(key.as_bytes()).into_owned();
        let mut contents = vec![name.clone()];
        if name.contains(":owner:") {
            let members: Vec<String> = client
                .zrange(key.clone(), 0, -1, None, false, None, false)
                .await
                .unwrap();
            assert_eq!(members.len(), 3);
            contents.extend(members);
        } else if !name.starts_with("events:") {
            let value: Bytes = client.get(key.clone()).await.unwrap();
            contents.push(String::from_utf8_lossy(&value).into_owned());
        }
        for content in &contents {
            for id in &texts {
                assert!(
                    !content.contains(id.as_str()),
                    "{name} holds session id {id}"
                );
            }
        }
    }
    log.close().await;
    manager.close().await.unwrap();
}

/// A storage of `base` in a phase of the migration (`None`: before it).
async fn in_phase(base: &RedisConfig, phase: Option<HashPhase>) -> RedisStorage {
    let config = match phase {
        Some(phase) => hashing(base.clone(), phase),
        None => base.clone(),
    };
    RedisStorage::connect(&config).await.unwrap()
}

async fn exists(storage: &RedisStorage, key: Bytes) -> bool {
    let found: i64 = storage.client().exists(key).await.unwrap();
    found > 0
}

/// The migration in its rolling order, two adjacent steps live at once as
/// during a deploy: plain keys, then `plain-first`, `hashed-first` and
/// `hashed`. Each step finds what the step before and after it wrote;
/// writes never add a copy under the other name; count, listing and
/// revocation see sessions under both names; at the end the hashed-only
/// storage sees the sessions created under hashed keys.
async fn migration_from_plain_keys_loses_no_session(topology: Topology) {
    let Some(base) = config(topology) else { return };
    let before = in_phase(&base, None).await;
    let plain_first = in_phase(&base, Some(HashPhase::PlainFirst)).await;
    let hashed_first = in_phase(&base, Some(HashPhase::HashedFirst)).await;
    let hashed = in_phase(&base, Some(HashPhase::Hashed)).await;
    let plain_name = |id: &SessionId| Bytes::from(before.key(id).into_bytes());
    let hashed_name = |id: &SessionId| Bytes::from(hashed.key(id).into_bytes());
    let new = || Arc::new(Session::new(SessionId::new(), SessionType::Mcp));
    let owned = || {
        Arc::new(Session::new_owned(
            SessionId::new(),
            SessionType::Mcp,
            owner(),
        ))
    };

    // Before: plain keys, one ownerless and one owned session.
    let (a, b) = (new(), owned());
    assert!(before.create(a.clone(), ttl()).await.unwrap());
    assert!(before.create(b.clone(), ttl()).await.unwrap());
    // Step 1 reads them and creates under plain keys still, which the
    // replicas not yet upgraded read.
    let c = new();
    assert!(plain_first.create(c.clone(), ttl()).await.unwrap());
    assert!(exists(&before, plain_name(&c.id())).await);
    for session in [&a, &b, &c] {
        assert!(before.get(&session.id(), ttl()).await.unwrap().is_some());
        assert!(
            plain_first
                .get(&session.id(), ttl())
                .await
                .unwrap()
                .is_some()
        );
    }
    // Step 2 creates under hashed keys, which step 1 replicas find.
    let (d, e) = (new(), owned());
    assert!(hashed_first.create(d.clone(), ttl()).await.unwrap());
    assert!(hashed_first.create(e.clone(), ttl()).await.unwrap());
    assert!(exists(&hashed, hashed_name(&d.id())).await);
    assert!(!exists(&before, plain_name(&d.id())).await);
    for session in [&a, &b, &c, &d, &e] {
        for storage in [&plain_first, &hashed_first] {
            assert!(
                storage.get(&session.id(), ttl()).await.unwrap().is_some(),
                "a session is lost in the migration"
            );
        }
    }
    // Writes go where the session is, in either step, and add no copy.
    for storage in [&plain_first, &hashed_first] {
        for session in [&a, &d] {
            let mut edited = (**session).clone();
            edited.set_metadata("by", "a write during the migration");
            assert!(
                storage
                    .update(Arc::new(edited.clone()), ttl())
                    .await
                    .unwrap()
                    .is_some()
            );
            storage.upsert(Arc::new(edited), ttl()).await.unwrap();
            assert!(storage.expire(&session.id(), ttl()).await.unwrap());
        }
    }
    assert!(exists(&before, plain_name(&a.id())).await);
    assert!(
        !exists(&hashed, hashed_name(&a.id())).await,
        "a copy of a plain session"
    );
    assert!(exists(&hashed, hashed_name(&d.id())).await);
    assert!(
        !exists(&before, plain_name(&d.id())).await,
        "a copy of a hashed session"
    );
    // A create of an id that lives under the other name is refused.
    assert!(!hashed_first.create(a.clone(), ttl()).await.unwrap());
    assert!(!plain_first.create(d.clone(), ttl()).await.unwrap());
    // Count, listing and revocation see both names.
    for storage in [&plain_first, &hashed_first] {
        assert_eq!(storage.count().await.unwrap(), 5);
        let listed: HashSet<SessionId> = storage
            .list_owned(&owner())
            .await
            .unwrap()
            .iter()
            .map(|session| session.id())
            .collect();
        assert_eq!(listed, HashSet::from([b.id(), e.id()]));
    }
    assert_eq!(before.count().await.unwrap(), 3, "plain keys only");
    assert_eq!(hashed.count().await.unwrap(), 2, "hashed keys only");
    let revoked: HashSet<SessionId> = hashed_first
        .revoke_owned(&owner())
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(revoked, HashSet::from([b.id(), e.id()]));
    // The last step, once no plain session is left: a plain session seen
    // by it would be absent, which is why it waits out the TTL; the
    // hashed ones are all there.
    assert!(plain_first.delete(&a.id()).await.unwrap());
    assert!(hashed_first.delete(&c.id()).await.unwrap());
    assert_eq!(hashed.count().await.unwrap(), 1);
    assert!(hashed.get(&d.id(), ttl()).await.unwrap().is_some());
    assert!(hashed.delete(&d.id()).await.unwrap());
    assert_eq!(plain_first.count().await.unwrap(), 0);
    for storage in [before, plain_first, hashed_first, hashed] {
        storage.close().await.unwrap();
    }
}

on_topologies!(
    [a_workload_leaves_no_session_id_in_redis, migration_from_plain_keys_loses_no_session],
    standalone => Topology::Standalone,
    cluster => Topology::Cluster,
    sentinel => Topology::Sentinel,
    valkey_standalone => Topology::ValkeyStandalone,
    valkey_cluster => Topology::ValkeyCluster,
);
