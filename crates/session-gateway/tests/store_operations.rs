//! The session the guard reads reaches the tools, for a session rmcp holds
//! and for one it restores from the store, and a tool call costs the store
//! operations the guard's documentation says: one read plus the tool's
//! write, and one read more on a cold replica.
//!
//! Two gateways share one local storage, as two replicas share Redis; each
//! reaches it through its own counting wrapper, so the operations of each
//! replica are counted apart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

/// What `whoami` reports for the anonymous caller of these tests.
fn anonymous() -> serde_json::Value {
    serde_json::json!({"issuer": "urn:session-gateway:anonymous", "subject": "anonymous"})
}

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use rmcp::transport::streamable_http_server::session::SessionManager;
use serde_json::json;
use session_factory::{
    Conditional, Description, LocalStorage, Manager, Owner, Result, Revision, Session, SessionId,
    SessionType, Storage, Ttl,
};
use session_gateway::Gateway;
use tokio::time::Instant;

use common::{call_tool, open_session};

/// How many times each storage operation ran since the last
/// [`Counting::take`].
#[derive(Debug, Default, PartialEq, Eq)]
struct Ops {
    create: usize,
    get: usize,
    update: usize,
    update_if: usize,
    upsert: usize,
    expire: usize,
    delete: usize,
    count: usize,
    list_owned: usize,
}

#[derive(Default)]
struct Counters {
    create: AtomicUsize,
    get: AtomicUsize,
    update: AtomicUsize,
    update_if: AtomicUsize,
    upsert: AtomicUsize,
    expire: AtomicUsize,
    delete: AtomicUsize,
    count: AtomicUsize,
    list_owned: AtomicUsize,
}

/// Local storage that counts the operations of the requests it serves.
///
/// The cleanup sweep (`delete_expired`) and `close` are not counted: they
/// belong to the manager's life, not to a request.
#[derive(Clone)]
struct Counting {
    inner: LocalStorage,
    ops: Arc<Counters>,
}

impl Counting {
    /// The counts so far, and zero for the next ones.
    fn take(&self) -> Ops {
        let take = |counter: &AtomicUsize| counter.swap(0, Ordering::SeqCst);
        Ops {
            create: take(&self.ops.create),
            get: take(&self.ops.get),
            update: take(&self.ops.update),
            update_if: take(&self.ops.update_if),
            upsert: take(&self.ops.upsert),
            expire: take(&self.ops.expire),
            delete: take(&self.ops.delete),
            count: take(&self.ops.count),
            list_owned: take(&self.ops.list_owned),
        }
    }
}

fn bump(counter: &AtomicUsize) {
    counter.fetch_add(1, Ordering::SeqCst);
}

impl Storage for Counting {
    async fn create(&self, session: Arc<Session>, ttl: Ttl) -> Result<bool> {
        bump(&self.ops.create);
        self.inner.create(session, ttl).await
    }
    async fn update(&self, session: Arc<Session>, ttl: Ttl) -> Result<Option<Arc<Session>>> {
        bump(&self.ops.update);
        self.inner.update(session, ttl).await
    }
    async fn upsert(&self, session: Arc<Session>, ttl: Ttl) -> Result<Arc<Session>> {
        bump(&self.ops.upsert);
        self.inner.upsert(session, ttl).await
    }
    async fn update_if(
        &self,
        session: Arc<Session>,
        expected: Revision,
        ttl: Ttl,
    ) -> Result<Conditional> {
        bump(&self.ops.update_if);
        self.inner.update_if(session, expected, ttl).await
    }
    async fn list_owned(&self, owner: &Owner) -> Result<Vec<Arc<Session>>> {
        bump(&self.ops.list_owned);
        self.inner.list_owned(owner).await
    }
    async fn revoke_owned(&self, owner: &Owner) -> Result<Vec<SessionId>> {
        self.inner.revoke_owned(owner).await
    }
    async fn get(&self, id: &SessionId, ttl: Ttl) -> Result<Option<Arc<Session>>> {
        bump(&self.ops.get);
        self.inner.get(id, ttl).await
    }
    async fn expire(&self, id: &SessionId, ttl: Ttl) -> Result<bool> {
        bump(&self.ops.expire);
        self.inner.expire(id, ttl).await
    }
    async fn delete(&self, id: &SessionId) -> Result<bool> {
        bump(&self.ops.delete);
        self.inner.delete(id).await
    }
    async fn delete_expired(&self, before: Instant) -> Result<Vec<SessionId>> {
        self.inner.delete_expired(before).await
    }
    async fn count(&self) -> Result<usize> {
        bump(&self.ops.count);
        self.inner.count().await
    }
    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
    fn describe(&self) -> Description {
        self.inner.describe()
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

/// Replicas `a` and `b` on one storage, each with its router and counter.
fn two_replicas() -> [(Gateway, Router, Counting); 2] {
    let storage = LocalStorage::new();
    ["a", "b"].map(|name| {
        let counting = Counting {
            inner: storage.clone(),
            ops: Arc::default(),
        };
        let manager = Manager::builder(counting.clone(), Ttl::from_secs(60).unwrap())
            .factory(SessionType::Streamable)
            .build()
            .unwrap();
        let gateway = Gateway::new(manager, name).unwrap();
        let router = gateway.router();
        (gateway, router, counting)
    })
}

/// Whether rmcp on `gateway` holds an in-memory copy of `session`.
async fn holds(gateway: &Gateway, session: &str) -> bool {
    let rmcp_id = session.into();
    gateway.rmcp_sessions().has_session(&rmcp_id).await.unwrap()
}

/// `whoami` reports the id of the guard's `LoadedSession` (it has no other
/// source), so its answer shows that rmcp passed the request's extensions
/// through: on the replica that created the session, and on one that
/// restores it from the store for this very request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guards_session_reaches_the_tools_live_and_restored() {
    let [(_, a_router, _), (b, b_router, _)] = two_replicas();
    let id = open_session(&a_router).await;

    assert_eq!(
        call_tool(&a_router, &id, "whoami", 2).await,
        json!({"replica": "a", "session": id, "principal": anonymous()})
    );

    assert!(!holds(&b, &id).await, "b must start cold");
    assert_eq!(
        call_tool(&b_router, &id, "whoami", 3).await,
        json!({"replica": "b", "session": id, "principal": anonymous()})
    );
    assert!(holds(&b, &id).await, "the call restored the session on b");

    // `counter` works on the guard's session too, on either replica.
    assert_eq!(
        call_tool(&b_router, &id, "counter", 4).await,
        json!({"count": 1, "replica": "b", "session": id})
    );
    assert_eq!(
        call_tool(&a_router, &id, "counter", 5).await,
        json!({"count": 2, "replica": "a", "session": id})
    );
}

/// The store operations of one `tools/call counter`: one read (the guard's)
/// and one write (the tool's conditional `update_if`) on a warm replica; on
/// a cold one, rmcp's restore adds one read of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_call_costs_one_read_and_one_write() {
    let [(_, a_router, a_ops), (b, b_router, b_ops)] = two_replicas();

    let id = open_session(&a_router).await;
    // The handshake, for the record: rmcp saves the new session through
    // `ManagerSessionStore`, which reads it first (a session it would keep
    // the other contents of; none yet) and then creates it; the guard reads
    // it back to confirm that it reached the store; and the guard reads it
    // for `notifications/initialized`. Before all that, the limits list the
    // principal's sessions and handles once.
    assert_eq!(
        a_ops.take(),
        Ops {
            create: 1,
            get: 3,
            list_owned: 1,
            ..Ops::default()
        }
    );

    // Warm: `a` holds the session. The guard's read, handed to the tool,
    // and the tool's conditional write.
    assert_eq!(
        call_tool(&a_router, &id, "counter", 2).await,
        json!({"count": 1, "replica": "a", "session": id})
    );
    let one_read_one_write = Ops {
        get: 1,
        update_if: 1,
        ..Ops::default()
    };
    assert_eq!(a_ops.take(), one_read_one_write);
    assert_eq!(b_ops.take(), Ops::default());

    // Cold: `b` has never seen the session. The guard's read; rmcp's
    // restore, whose `SessionStore::load` reads the session again for the
    // saved `initialize` parameters (it is given the session id only, not
    // the request, so it cannot use the guard's read); and the tool's
    // conditional write. The restore writes nothing.
    assert!(!holds(&b, &id).await, "b must start cold");
    assert_eq!(
        call_tool(&b_router, &id, "counter", 3).await,
        json!({"count": 2, "replica": "b", "session": id})
    );
    assert_eq!(
        b_ops.take(),
        Ops {
            get: 2,
            update_if: 1,
            ..Ops::default()
        }
    );
    assert_eq!(a_ops.take(), Ops::default());

    // The restored copy serves the next call: `b` is warm now.
    assert_eq!(
        call_tool(&b_router, &id, "counter", 4).await,
        json!({"count": 3, "replica": "b", "session": id})
    );
    assert_eq!(b_ops.take(), one_read_one_write);
}

/// Ten `counter` calls on `session` through `router`, the n-th started
/// `n * spread` after the first; asserts that they count 1 to 10, each once.
async fn ten_calls_at_once(router: &Router, session: &str, spread: Duration, round: u64) {
    let calls = (0..10u32).map(|n| {
        let router = router.clone();
        let session = session.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(spread * n).await;
            call_tool(&router, &session, "counter", 100 + u64::from(n)).await
        })
    });
    let mut counts = Vec::new();
    for call in calls {
        let answer = call
            .await
            .unwrap_or_else(|error| panic!("round {round}: {error}"));
        counts.push(answer["count"].as_u64().unwrap());
    }
    counts.sort_unstable();
    assert_eq!(counts, (1..=10).collect::<Vec<_>>(), "round {round}");
}

/// Ten first requests of one session at once on a replica that has never
/// seen it (a restarted replica, a new one behind the balancer): rmcp
/// restores the session for the first and the others must wait for that
/// restore rather than reach a worker that is not ready. Every call is
/// answered, and the ten counts are 1 to 10, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_first_requests_at_once_on_a_cold_replica_are_all_served() {
    // The calls are spread over a few milliseconds, so that some arrive
    // while the first one's restore is under way rather than all before it.
    for round in 0..20u64 {
        let [(_, a_router, _), (b, b_router, _)] = two_replicas();
        let id = open_session(&a_router).await;
        assert!(!holds(&b, &id).await);
        ten_calls_at_once(
            &b_router,
            &id,
            Duration::from_micros(50 + 25 * round),
            round,
        )
        .await;
    }
}

/// The same ten first requests on Redis, where a restore waits on the
/// network: a replica started after the session was opened (its own
/// connection, no in-memory copy) serves all ten, counting 1 to 10.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_first_requests_at_once_on_a_cold_replica_on_redis() {
    let Some(redis) = session_testkit::env::var(session_testkit::env::REDIS) else {
        return;
    };
    let prefix = format!("cold:{}:", uuid::Uuid::new_v4().simple());
    let config = session_factory::SessionConfig::from_toml(
        &format!("ttl = \"5m\"\n[redis]\naddr = \"{redis}\"\nkey_prefix = \"{prefix}\"\n"),
        "test",
    )
    .unwrap();
    let replica = |name: &'static str| {
        let config = config.clone();
        async move {
            let manager = session_factory::new_manager(&config, SessionType::Streamable)
                .await
                .unwrap();
            let gateway = Gateway::new(manager, name).unwrap();
            let router = gateway.router();
            (gateway, router)
        }
    };
    let (home, home_router) = replica("home").await;
    for round in 0..10u64 {
        let id = open_session(&home_router).await;
        let (cold, cold_router) = replica("cold").await;
        ten_calls_at_once(&cold_router, &id, Duration::from_micros(100 * round), round).await;
        cold.manager().close().await.unwrap();
    }
    home.manager().close().await.unwrap();
}
