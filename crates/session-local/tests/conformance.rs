//! The conformance suite against local storage, under Tokio's paused clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use session_core::{SessionId, Ttl};
use session_local::LocalStorage;
use session_testkit::Harness;

struct Local {
    storage: LocalStorage,
}

impl Harness for Local {
    type Storage = LocalStorage;

    async fn open(&self) -> LocalStorage {
        self.storage.clone()
    }

    fn ttl(&self) -> Ttl {
        // Virtual time: a realistic TTL costs nothing.
        Ttl::from_secs(30 * 60).expect("a valid TTL")
    }

    async fn write_raw(&self, _id: &SessionId, _bytes: &[u8]) -> bool {
        // Local storage keeps `Arc<Session>` values, never bytes.
        false
    }

    async fn raw_exists(&self, id: &SessionId) -> Option<bool> {
        // Beneath the reads: a live entry in the map, found without sliding
        // its deadline.
        Some(self.storage.contains(id))
    }
}

async fn harness() -> Option<Local> {
    Some(Local {
        storage: LocalStorage::new(),
    })
}

session_testkit::conformance_suite!(harness, virtual_time);
