//! Section 2: the local path, at 1 and 2 worker threads (one task per
//! thread; the machine has 2 cores).
//!
//! Our `Manager` on local storage against `tower-sessions-memory-store`'s
//! `MemoryStore` (a `HashMap` behind one async mutex), a
//! `moka::future::Cache` with time-to-idle, and a bare `DashMap` of
//! `Arc<Session>` as the floor. Every store holds the same sessions and
//! returns what its API returns: an `Arc` for ours, moka and the map, a
//! deep copy of the record for `MemoryStore`. An update writes a modified
//! copy of a session back, as an application does.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use anyhow::{Result, bail};
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use session_core::{Manager, Session, SessionId, Ttl};
use session_local::LocalStorage;
use tower_sessions_memory_store::MemoryStore;
use tsc_memory::SessionStore as _;
use tsc_memory::session::{Id, Record};

use crate::harness::{self, Plan, Row, Timing, Workload};
use crate::redis::{Op, Single, TaskState, next_op};
use crate::shape::{self, Rng};

const TTL: Duration = Duration::from_secs(30 * 60);
/// Worker threads (one task each).
pub(crate) const THREADS: [usize; 2] = [1, 2];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Ours,
    MemoryStore,
    Moka,
    DashMap,
}

impl Target {
    const ALL: [Target; 4] = [
        Target::DashMap,
        Target::Ours,
        Target::Moka,
        Target::MemoryStore,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Ours => "ours",
            Self::MemoryStore => "tower-sessions-memory-store",
            Self::Moka => "moka",
            Self::DashMap => "dashmap",
        }
    }
}

struct Ctx {
    manager: Manager,
    memory: MemoryStore,
    moka: moka::future::Cache<SessionId, Arc<Session>>,
    map: DashMap<SessionId, Arc<Session>>,
    sessions: Vec<Arc<Session>>,
    records: Vec<Record>,
    template: Session,
    record_template: Record,
}

impl Ctx {
    /// A new session of the template's shape, for the stores that have no
    /// factory of their own.
    fn new_session(&self, id: SessionId) -> Session {
        let mut session = Session::new(id, self.template.session_type());
        *session.metadata_mut() = self.template.metadata().clone();
        session
    }
}

struct LocalWork {
    ctx: Arc<Ctx>,
    target: Target,
    op: Op,
    seed: u64,
    victims: Vec<u128>,
    /// Sessions one task may create in a create run.
    create_cap: usize,
    created: Mutex<Vec<u128>>,
}

impl Workload for LocalWork {
    type State = TaskState;

    fn state(&self, task: usize, tasks: usize) -> TaskState {
        TaskState::new(self.seed, task, tasks)
    }

    fn exhausted(&self, state: &TaskState) -> bool {
        match self.op {
            Op::Delete => state.cursor >= self.victims.len(),
            // Sessions made in a create run stay until the delete run: the
            // cap bounds the memory they take.
            Op::Create => state.created.len() >= self.create_cap,
            _ => false,
        }
    }

    async fn op(&self, state: &mut TaskState) -> Result<bool> {
        let ctx = &*self.ctx;
        let single = next_op(self.op, state, ctx.sessions.len(), &self.victims);
        Ok(match (self.target, single) {
            (Target::Ours, Single::Load(i)) => {
                ctx.manager.get(&ctx.sessions[i].id()).await?.is_some()
            }
            (Target::Ours, Single::Update(i)) => {
                ctx.manager.update((*ctx.sessions[i]).clone()).await?
            }
            (Target::Ours, Single::Create) => {
                let session = ctx.manager.create().await?;
                state.created.push(shape::raw_id(session.id()));
                true
            }
            (Target::Ours, Single::Delete(raw)) => {
                ctx.manager.delete(&shape::session_id(raw)).await?
            }

            (Target::DashMap, Single::Load(i)) => ctx
                .map
                .get(&ctx.sessions[i].id())
                .map(|entry| Arc::clone(entry.value()))
                .is_some(),
            (Target::DashMap, Single::Update(i)) => {
                let mut copy = (*ctx.sessions[i]).clone();
                // What our manager's update does to the copy it writes.
                copy.set_updated_at(SystemTime::now());
                match ctx.map.get_mut(&copy.id()) {
                    Some(mut entry) => {
                        *entry = Arc::new(copy);
                        true
                    }
                    None => false,
                }
            }
            (Target::DashMap, Single::Create) => {
                let id = SessionId::new();
                let session = Arc::new(ctx.new_session(id));
                state.created.push(shape::raw_id(id));
                match ctx.map.entry(id) {
                    Entry::Vacant(vacant) => {
                        vacant.insert(session);
                        true
                    }
                    Entry::Occupied(_) => false,
                }
            }
            (Target::DashMap, Single::Delete(raw)) => {
                ctx.map.remove(&shape::session_id(raw)).is_some()
            }

            (Target::Moka, Single::Load(i)) => ctx.moka.get(&ctx.sessions[i].id()).await.is_some(),
            (Target::Moka, Single::Update(i)) => {
                let mut copy = (*ctx.sessions[i]).clone();
                // What our manager's update does to the copy it writes.
                copy.set_updated_at(SystemTime::now());
                ctx.moka.insert(copy.id(), Arc::new(copy)).await;
                true
            }
            (Target::Moka, Single::Create) => {
                let id = SessionId::new();
                ctx.moka.insert(id, Arc::new(ctx.new_session(id))).await;
                state.created.push(shape::raw_id(id));
                true
            }
            (Target::Moka, Single::Delete(raw)) => {
                ctx.moka.remove(&shape::session_id(raw)).await.is_some()
            }

            (Target::MemoryStore, Single::Load(i)) => {
                ctx.memory.load(&ctx.records[i].id).await?.is_some()
            }
            (Target::MemoryStore, Single::Update(i)) => {
                ctx.memory.save(&ctx.records[i]).await?;
                true
            }
            (Target::MemoryStore, Single::Create) => {
                let mut record = ctx.record_template.clone();
                record.id = Id::default();
                ctx.memory.create(&mut record).await?;
                state.created.push(record.id.0 as u128);
                true
            }
            (Target::MemoryStore, Single::Delete(raw)) => {
                ctx.memory.delete(&Id(raw as i128)).await?;
                true
            }
        })
    }

    fn done(&self, state: TaskState) {
        self.created
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(state.created);
    }
}

async fn setup(keyspace: usize) -> Result<Arc<Ctx>> {
    let mut rng = Rng::new(0x10CA1);
    let template = shape::typical_session(shape::session_id(rng.uuid()), &mut rng);
    let template_metadata = template.metadata().clone();
    let manager = Manager::builder(LocalStorage::new(), Ttl::new(TTL)?)
        .factory(move |id| {
            let mut session = Session::new(id, template.session_type());
            *session.metadata_mut() = template_metadata.clone();
            session
        })
        .build()?;
    let memory = MemoryStore::default();
    let moka = moka::future::Cache::builder().time_to_idle(TTL).build();
    let map = DashMap::new();
    let expiry = time::OffsetDateTime::now_utc() + TTL;
    let mut sessions = Vec::with_capacity(keyspace);
    let mut records = Vec::with_capacity(keyspace);
    for _ in 0..keyspace {
        let raw = rng.uuid();
        let session = shape::typical_session(shape::session_id(raw), &mut rng);
        let mut record = Record {
            id: Id(raw as i128),
            data: shape::tower_data(&session),
            expiry_date: expiry,
        };
        let session = manager.create_from(session).await?;
        map.insert(session.id(), Arc::new((*session).clone()));
        moka.insert(session.id(), Arc::new((*session).clone()))
            .await;
        memory.create(&mut record).await?;
        sessions.push(session);
        records.push(record);
    }
    moka.run_pending_tasks().await;
    let template = (*sessions[0]).clone();
    let record_template = records[0].clone();
    Ok(Arc::new(Ctx {
        manager,
        memory,
        moka,
        map,
        sessions,
        records,
        template,
        record_template,
    }))
}

/// The runs in order: each operation for every store, except that each
/// store's delete run follows its create run at once, so that at most one
/// store holds the sessions a create run made.
/// Each round starts the order at another store, so that no store always
/// runs right after the same neighbour.
fn steps(round: usize) -> Vec<(Op, Target)> {
    let mut order = Target::ALL.to_vec();
    let shift = (round - 1) % order.len();
    order.rotate_left(shift);
    let mut steps = Vec::new();
    for op in [Op::Load, Op::Update] {
        steps.extend(order.iter().map(|&target| (op, target)));
    }
    for &target in &order {
        steps.push((Op::Create, target));
        steps.push((Op::Delete, target));
    }
    steps.extend(order.iter().map(|&target| (Op::Mix, target)));
    steps
}

/// Runs section 2 on a runtime of each thread count.
pub(crate) fn run(timing: Timing) -> Result<Vec<Row>> {
    let keyspace = if timing.quick { 10_000 } else { 100_000 };
    let create_cap = if timing.quick { 100_000 } else { 1_000_000 };
    let mut rows = Vec::new();
    let mut seed = 100;
    for threads in THREADS {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?;
        runtime.block_on(async {
            eprintln!("local: preparing {keyspace} sessions per store ({threads} threads)");
            let ctx = setup(keyspace).await?;
            for round in 1..=timing.rounds {
                let mut created = std::collections::HashMap::new();
                for (op, target) in steps(round) {
                    seed += 1;
                    let work = Arc::new(LocalWork {
                        ctx: Arc::clone(&ctx),
                        target,
                        op,
                        seed,
                        victims: if op == Op::Delete {
                            created.remove(target.name()).unwrap_or_default()
                        } else {
                            Vec::new()
                        },
                        create_cap: create_cap / threads,
                        created: Mutex::new(Vec::new()),
                    });
                    // Create and delete runs are bounded by count (the memory the
                    // new sessions take, the sessions there are to delete), so they
                    // have no warmup to spend them on: the store is warm from the
                    // load and update runs before them.
                    let warmup = match op {
                        Op::Create | Op::Delete => Duration::ZERO,
                        _ => timing.warmup,
                    };
                    let plan = Plan::sampled(threads, warmup, timing.measure);
                    let m = harness::run(&work, plan).await?;
                    if op == Op::Create {
                        let made = std::mem::take(
                            &mut *work.created.lock().unwrap_or_else(PoisonError::into_inner),
                        );
                        created.insert(target.name(), made);
                    }
                    let row = Row {
                        target: target.name().to_owned(),
                        op: op.name().to_owned(),
                        concurrency: threads,
                        m,
                        script_share: None,
                        hit_share: None,
                        rounds: Vec::new(),
                    };
                    eprintln!(
                        "local: round {round} {threads} threads {:<7} {:<28} {:>10.0} ops/s  \
                     p99 {:>7.2} us  cpu {:>6.3} us/op",
                        row.op, row.target, row.m.ops_per_sec, row.m.p99_us, row.m.cpu_us_per_op
                    );
                    if row.m.ops == 0 || row.m.errors > 0 {
                        bail!(
                            "local {} {}: {} ops, {} errors ({:?})",
                            row.target,
                            row.op,
                            row.m.ops,
                            row.m.errors,
                            row.m.first_error
                        );
                    }
                    harness::keep_best(&mut rows, row);
                }
            }
            ctx.manager.close().await?;
            anyhow::Ok(())
        })?;
    }
    Ok(rows)
}
