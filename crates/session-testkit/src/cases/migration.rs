//! Values in stored format 1, as the release before owners and revisions
//! wrote them: they read, they migrate to format 2 on their first write,
//! and their derived revision still guards a conditional write.
//!
//! The golden values are those of `session-core`'s codec tests
//! (`crates/session-core/tests/data/`), captured with the codec of that
//! release; they are included from there, so that there is one copy.

use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use session_core::codec::{self, Codec, FormatVersion};
use session_core::{Conditional, Error, Revision, Session, SessionId, SessionType, Storage};

use crate::fixture::manager;
use crate::{Fixture, Harness};

/// The golden value of format 1 with a bincode body; its user data is the
/// number 41.
const GOLDEN_BINCODE: &[u8] = include_bytes!("../../../session-core/tests/data/v1-bincode.bin");
/// The golden value of format 1 with a JSON body; its user data is
/// `{"count": 41}`.
const GOLDEN_JSON: &[u8] = include_bytes!("../../../session-core/tests/data/v1-json.bin");
/// The id both golden values are stored for.
const GOLDEN_ID: &str = "0b1c2d3e-4f50-4617-8a9b-0c1d2e3f4a5b";

/// The user data of the JSON golden value.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Count {
    count: u64,
}

/// The counter in a golden session's user data, whichever codec wrote it.
fn golden_count(session: &Session, codec: Codec) -> u64 {
    match codec {
        Codec::Bincode => session.data::<u64>().unwrap().expect("user data"),
        Codec::Json => session.data::<Count>().unwrap().expect("user data").count,
    }
}

/// Increments the counter in a golden session's user data, in its codec.
fn increment_golden_count(session: &mut Session, codec: Codec) -> Result<u64, Error> {
    let next = golden_count(session, codec) + 1;
    match codec {
        Codec::Bincode => session.set_data_with(codec, &next),
        Codec::Json => session.set_data_with(codec, &Count { count: next }),
    }
    .map_err(Error::from)?;
    Ok(next)
}

/// Checks the fields every golden value holds.
fn assert_golden_fields(session: &Session, what: &str) {
    assert_eq!(session.id().to_string(), GOLDEN_ID, "{what}");
    assert_eq!(session.session_type(), SessionType::Streamable, "{what}");
    assert_eq!(
        session.created_at(),
        UNIX_EPOCH + Duration::from_millis(1_767_225_600_123),
        "{what}"
    );
    assert_eq!(session.get_metadata("user"), Some("alice"), "{what}");
    assert_eq!(session.get_metadata("client"), Some("inspector"), "{what}");
    assert_eq!(session.owner(), None, "{what}");
}

/// A session decoded from a format 1 value carries the revision derived
/// from its bytes; written through the storage, it is stored at the
/// storage's own revision (the first, for a new id), never at the one it
/// carried. For backends that store bytes, the golden values themselves,
/// written raw under their id, read through the storage and the manager,
/// are changed by `modify` and read back as format 2: at the derived
/// revision plus one, and advancing by one from there on, which only a
/// value with a revision number in its header can do.
pub async fn golden_format_1_values_read_and_migrate<H: Harness>(harness: &H) {
    let store = Fixture::open(harness).await;
    let manager = manager(harness).await;
    let id = SessionId::parse(GOLDEN_ID).unwrap();
    for (golden, codec) in [(GOLDEN_BINCODE, Codec::Bincode), (GOLDEN_JSON, Codec::Json)] {
        let decoded = codec::decode_session(golden).unwrap();
        let legacy = codec::legacy_revision(golden);
        assert_eq!(decoded.revision(), legacy, "{codec}");
        let restored = store
            .storage
            .upsert(std::sync::Arc::new(decoded.clone()), store.ttl)
            .await
            .unwrap();
        assert_eq!(restored.revision(), Revision::FIRST, "{codec}: restored");
        assert_golden_fields(&restored, "restored");
        assert_eq!(*store.must_get(&id).await, *restored, "{codec}: restored");
        assert!(store.delete(&id).await);
    }

    for (golden, codec) in [(GOLDEN_BINCODE, Codec::Bincode), (GOLDEN_JSON, Codec::Json)] {
        if !harness.write_raw(&id, golden).await {
            // This backend stores values, not bytes: no format 1 value can
            // be in it, and the restore above is its whole share of the case.
            return;
        }
        let legacy = codec::legacy_revision(golden);
        let read = store.must_get(&id).await;
        assert_golden_fields(&read, &format!("{codec} golden value read raw"));
        assert_eq!(read.revision(), legacy, "{codec}: the derived revision");
        assert_eq!(golden_count(&read, codec), 41);
        let through_manager = manager.get_as(&id, None).await.unwrap().unwrap();
        assert_eq!(*through_manager, *read);

        let (migrated, count) = manager
            .modify(&id, |session| increment_golden_count(session, codec))
            .await
            .unwrap()
            .expect("the golden session exists");
        assert_eq!(count, 42);
        let first = legacy.next().unwrap();
        assert_eq!(migrated.revision(), first, "{codec}: migrated");
        harness.settle().await;
        let read = store.must_get(&id).await;
        assert_eq!(*read, *migrated, "{codec}: read back after migration");
        assert_golden_fields(&read, &format!("{codec} golden value migrated"));
        assert_eq!(golden_count(&read, codec), 42);

        // A second write advances by exactly one: the stored value has a
        // revision number, so it is format 2 (a format 1 value's revision
        // is a fingerprint of its bytes, not its predecessor plus one).
        let (again, _) = manager
            .modify(&id, |session| increment_golden_count(session, codec))
            .await
            .unwrap()
            .expect("the migrated session exists");
        assert_eq!(again.revision(), first.next().unwrap(), "{codec}");
        harness.settle().await;
        assert_eq!(store.must_get(&id).await.revision(), again.revision());
        assert!(store.delete(&id).await);
    }
    manager.close().await.unwrap();
}

/// A format 1 value's derived revision still guards a conditional write: a
/// value read at one derived revision, then replaced raw by another format 1
/// value (a replica of the earlier release writing), refuses the write with
/// the new value's revision and keeps that value; at the new revision the
/// write goes through, as format 2, at that revision plus one.
pub async fn a_format_1_value_refuses_a_stale_conditional_write<H: Harness>(harness: &H) {
    let store = Fixture::open(harness).await;
    let id = SessionId::parse(GOLDEN_ID).unwrap();
    for (golden, codec) in [(GOLDEN_BINCODE, Codec::Bincode), (GOLDEN_JSON, Codec::Json)] {
        if !harness.write_raw(&id, golden).await {
            // This backend stores values, not bytes: a format 1 value cannot
            // be in it. Its conditional writes are checked by the revision
            // cases.
            return;
        }
        let read = store.must_get(&id).await;
        assert_eq!(read.revision(), codec::legacy_revision(golden));

        // A replica of the earlier release writes in between, in format 1.
        let mut theirs = (*read).clone();
        theirs.set_metadata("writer", "earlier release");
        let their_bytes = codec.encode_session_as(&theirs, FormatVersion::V1).unwrap();
        let theirs_revision = codec::legacy_revision(&their_bytes);
        assert_ne!(theirs_revision, read.revision());
        assert!(harness.write_raw(&id, &their_bytes).await);

        let mut mine = (*read).clone();
        mine.set_metadata("writer", "stale");
        for (expected, what) in [
            (read.revision(), "the revision read before the other write"),
            (Revision::FIRST, "the first revision"),
            (
                read.revision().next().unwrap(),
                "the read revision plus one",
            ),
        ] {
            assert_eq!(
                store.update_if(&mine, expected).await,
                Conditional::Conflict(theirs_revision),
                "{codec}: update_if with {what}"
            );
            let after = store.must_get(&id).await;
            assert_eq!(after.revision(), theirs_revision, "{codec}: after {what}");
            assert_eq!(after.get_metadata("writer"), Some("earlier release"));
        }

        let Conditional::Written(stored) = store.update_if(&mine, theirs_revision).await else {
            panic!("{codec}: a conditional write at the stored derived revision was refused");
        };
        assert_eq!(stored.revision(), theirs_revision.next().unwrap());
        assert_eq!(stored.get_metadata("writer"), Some("stale"));
        assert_eq!(*store.must_get(&id).await, *stored);
        assert!(store.delete(&id).await);
    }
}
