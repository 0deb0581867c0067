//! Section 6: owned and versioned sessions, on Redis and on local storage.
//!
//! Three comparisons, each against the baseline it replaces or is read
//! beside, measured in the same run with the two interleaved:
//!
//! - `Manager::modify` incrementing a metadata counter, against the
//!   `get` + `update` pair that does the same without the revision check;
//! - `Manager::create_owned`, against `create` (no owner): what the owner
//!   bookkeeping (on Redis, the index script sent with the `SET NX`) costs;
//! - `Manager::list_owned` of an owner with 10 and with 1,000 live
//!   sessions, against a plain `get` of one session: what reading a session
//!   by listing costs beside reading it by id. Listings run at one task (see
//!   [`LIST_TASKS`]).
//!
//! Every task works on sessions of its own (its own session to modify and
//! read, its own owners to list), so that no task waits for another and the
//! figures are the cost per operation, not contention. The Redis path runs
//! at 1 and 64 tasks; the local path at 1 and 2 worker threads with one task
//! each, as in section 2: an operation on local storage never waits, so a
//! task never yields, and more tasks than threads would run one after the
//! other.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use session_core::{Error, Manager, Owner, Session, SessionId, Ttl};
use session_local::LocalStorage;

use crate::harness::{self, Plan, Row, Timing, Workload};
use crate::redis::{connect_flushed, in_parallel, server_cpu_us};
use crate::shape::{self, Rng};

/// The session TTL, as in sections 1 and 2.
const TTL: Duration = Duration::from_secs(30 * 60);
/// Concurrent tasks on Redis.
pub(crate) const TASKS: [usize; 2] = [1, 64];
/// Worker threads (one task each) on local storage.
pub(crate) const THREADS: [usize; 2] = crate::local::THREADS;
/// The sessions of each listed owner.
pub(crate) const LIST_SIZES: [usize; 2] = [10, 1_000];
/// The tasks the listings run at. One: a listing's figure is how long one
/// call takes. At 64 tasks each listing 1,000 sessions, 64,000 reads would
/// be in flight on Redis at once, and a single call would outlast the
/// measurement window.
pub(crate) const LIST_TASKS: usize = 1;
/// The owners the owned creates go to in turn: few enough that the
/// cleanup after each run is cheap, many enough that at 64 tasks no two
/// tasks create for the same owner at once.
pub(crate) const CREATE_OWNERS: usize = 64;
/// The key prefix of this section's sessions on Redis.
const PREFIX: &str = "bench-owned:";
/// The metadata key the read-modify-writes increment.
const COUNTER: &str = "counter";

/// Everything section 6 writes.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct OwnedResults {
    /// The sessions of each listed owner, in the order of the list targets.
    pub(crate) list_sizes: Vec<usize>,
    /// The owners the owned creates went to in turn.
    pub(crate) create_owners: usize,
    /// Sessions one local create run may make before it stops (the memory
    /// they take until the cleanup after the run).
    pub(crate) local_create_cap: usize,
    pub(crate) redis: Vec<Row>,
    pub(crate) local: Vec<Row>,
}

/// One measured operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// `get`, then `update` of the changed copy: the baseline of modify.
    GetUpdate,
    Modify,
    /// `create` without owner: the baseline of the owned create.
    Create,
    CreateOwned,
    /// `get` of one session: the baseline of the listings.
    Get,
    /// `list_owned` of an owner with `LIST_SIZES[i]` sessions.
    List(usize),
}

impl Target {
    /// The row's target name.
    fn name(self) -> String {
        match self {
            Self::GetUpdate => "get-update".to_owned(),
            Self::Modify => "modify".to_owned(),
            Self::Create => "create".to_owned(),
            Self::CreateOwned => "create-owned".to_owned(),
            Self::Get => "get".to_owned(),
            Self::List(i) => list_target(LIST_SIZES[i]),
        }
    }

    fn creates(self) -> bool {
        matches!(self, Self::Create | Self::CreateOwned)
    }
}

/// The row name of a listing of an owner with `size` sessions.
pub(crate) fn list_target(size: usize) -> String {
    format!("list-owned-{size}")
}

/// The comparisons, in run order: the row's operation name and its
/// targets, the baseline first.
fn comparisons() -> Vec<(&'static str, Vec<Target>)> {
    let mut list = vec![Target::Get];
    list.extend((0..LIST_SIZES.len()).map(Target::List));
    vec![
        ("modify", vec![Target::GetUpdate, Target::Modify]),
        ("create", vec![Target::Create, Target::CreateOwned]),
        ("list", list),
    ]
}

struct Ctx {
    manager: Manager,
    /// One session per task, read and written by that task alone.
    own: Vec<SessionId>,
    /// The owners of the owned creates.
    owners: Vec<Owner>,
    /// Per list size, one owner per listing task with that many sessions.
    listed: Vec<Vec<Owner>>,
}

struct TaskState {
    task: usize,
    /// The next owner (modulo their number) an owned create goes to.
    next_owner: usize,
    created: Vec<SessionId>,
}

struct OwnedWork {
    ctx: Arc<Ctx>,
    target: Target,
    /// Sessions one task may create in a create run.
    create_cap: usize,
    created: Mutex<Vec<SessionId>>,
}

/// Increments the counter in a session's metadata: the change both
/// read-modify-writes make.
fn increment(session: &mut Session) {
    let count = session
        .get_metadata(COUNTER)
        .and_then(|count| count.parse::<u64>().ok())
        .unwrap_or(0);
    session
        .metadata_mut()
        .insert(COUNTER.to_owned(), (count + 1).to_string());
}

impl Workload for OwnedWork {
    type State = TaskState;

    fn state(&self, task: usize, _tasks: usize) -> TaskState {
        TaskState {
            task,
            // Each task starts at another owner, so that concurrent owned
            // creates go to different owners.
            next_owner: task,
            created: Vec::new(),
        }
    }

    fn exhausted(&self, state: &TaskState) -> bool {
        self.target.creates() && state.created.len() >= self.create_cap
    }

    async fn op(&self, state: &mut TaskState) -> Result<bool> {
        let ctx = &*self.ctx;
        let id = &ctx.own[state.task];
        Ok(match self.target {
            Target::GetUpdate => {
                let Some(current) = ctx.manager.get(id).await? else {
                    return Ok(false);
                };
                let mut session = (*current).clone();
                increment(&mut session);
                ctx.manager.update(session).await?
            }
            Target::Modify => ctx
                .manager
                .modify(id, |session| {
                    increment(session);
                    Ok::<_, Error>(())
                })
                .await?
                .is_some(),
            Target::Create => {
                let session = ctx.manager.create().await?;
                state.created.push(session.id());
                true
            }
            Target::CreateOwned => {
                // An owner per call, as a service builds one from each
                // request's credentials.
                let owner = ctx.owners[state.next_owner % ctx.owners.len()].clone();
                state.next_owner += 1;
                let session = ctx.manager.create_owned(owner).await?;
                state.created.push(session.id());
                true
            }
            Target::Get => ctx.manager.get(id).await?.is_some(),
            Target::List(i) => {
                let owner = &ctx.listed[i][state.task];
                ctx.manager.list_owned(owner).await?.len() == LIST_SIZES[i]
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

/// An owner of this section.
fn owner(subject: String) -> Result<Owner> {
    Ok(Owner::new("https://issuer.example", subject)?)
}

/// Fills a manager with what the runs need: a session per task, the owners
/// of the owned creates, and per list size an owner per listing task with
/// that many sessions (made with `create_owned`, so that they are indexed as a
/// service's are).
async fn prepare(manager: Manager, tasks: usize) -> Result<Arc<Ctx>> {
    let mut rng = Rng::new(0x0055_E55E);
    let mut own = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        let session = shape::typical_session(shape::session_id(rng.uuid()), &mut rng);
        own.push(manager.create_from(session).await?.id());
    }
    let owners = (0..CREATE_OWNERS)
        .map(|i| owner(format!("creator-{i:02}")))
        .collect::<Result<Vec<_>>>()?;
    let mut listed = Vec::with_capacity(LIST_SIZES.len());
    for size in LIST_SIZES {
        let list_owners = (0..LIST_TASKS)
            .map(|task| owner(format!("lister-{size}-{task:02}")))
            .collect::<Result<Vec<_>>>()?;
        let shared = Arc::new(list_owners.clone());
        let manager = manager.clone();
        in_parallel(LIST_TASKS * size, 64, move |i| {
            let manager = manager.clone();
            let owner = shared[i % shared.len()].clone();
            async move { Ok(manager.create_owned(owner).await?.id()) }
        })
        .await?;
        listed.push(list_owners);
    }
    Ok(Arc::new(Ctx {
        manager,
        own,
        owners,
        listed,
    }))
}

/// A manager whose factory makes sessions of the typical shape, as in
/// sections 1 and 2.
fn manager(storage: impl session_core::Storage) -> Result<Manager> {
    let mut rng = Rng::new(0x0055_E55F);
    let template = shape::typical_session(shape::session_id(rng.uuid()), &mut rng);
    let metadata = template.metadata().clone();
    Ok(Manager::builder(storage, Ttl::new(TTL)?)
        .factory(move |id| {
            let mut session = Session::new(id, template.session_type());
            *session.metadata_mut() = metadata.clone();
            session
        })
        .build()?)
}

/// Removes what a create run made, untimed: the plain sessions one by
/// one, the owned ones by revoking their owners, which also empties their
/// indexes, so that no index grows from one run to the next.
async fn clean_up(ctx: &Arc<Ctx>, target: Target, created: Vec<SessionId>) -> Result<()> {
    match target {
        Target::Create => {
            let created = Arc::new(created);
            let ctx = Arc::clone(ctx);
            in_parallel(created.len(), 64, move |i| {
                let ctx = Arc::clone(&ctx);
                let id = created[i];
                async move { Ok(ctx.manager.delete(&id).await?) }
            })
            .await?;
        }
        Target::CreateOwned => {
            let revoked: usize = {
                let ctx = Arc::clone(ctx);
                in_parallel(ctx.owners.len(), 16, move |i| {
                    let ctx = Arc::clone(&ctx);
                    async move { Ok(ctx.manager.revoke_owned(&ctx.owners[i]).await?.len()) }
                })
                .await?
                .into_iter()
                .sum()
            };
            if revoked != created.len() {
                bail!(
                    "revoking the creators found {revoked} sessions; the run created {}",
                    created.len()
                );
            }
        }
        _ => {}
    }
    Ok(())
}

/// Which storage a run is on: how it is timed and what its rows check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Storage {
    Redis,
    Local,
}

/// Which cells to run; everything by default. Narrowing it is for
/// investigating one figure by hand (`--ops create --tasks 64`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Filter {
    /// Tasks on Redis, threads on local storage.
    pub(crate) tasks: Option<Vec<usize>>,
    /// Comparisons: `modify`, `create`, `list`.
    pub(crate) ops: Option<Vec<String>>,
}

impl Filter {
    fn tasks(&self, tasks: usize) -> bool {
        self.tasks.as_ref().is_none_or(|list| list.contains(&tasks))
    }

    fn op(&self, op: &str) -> bool {
        self.ops
            .as_ref()
            .is_none_or(|list| list.iter().any(|name| name == op))
    }
}

/// Where and how a run is made.
#[derive(Clone, Copy)]
struct Setting<'a> {
    ctx: &'a Arc<Ctx>,
    storage: Storage,
    timing: Timing,
    tasks: usize,
    /// Sessions all tasks of a create run may make together.
    create_cap: usize,
    /// The Redis server's client, for its CPU time.
    redis: Option<&'a session_redis::fred::clients::Client>,
    filter: &'a Filter,
}

/// Runs `target` once and removes what it created.
async fn measure(setting: Setting<'_>, op: &str, target: Target) -> Result<Row> {
    let Setting {
        ctx,
        storage,
        timing,
        tasks,
        create_cap,
        redis,
        filter: _,
    } = setting;
    let work = Arc::new(OwnedWork {
        ctx: Arc::clone(ctx),
        target,
        create_cap: create_cap / tasks,
        created: Mutex::new(Vec::new()),
    });
    let plan = match (storage, target) {
        (Storage::Redis, _) => Plan::timed(tasks, timing.warmup, timing.measure),
        // A listing takes microseconds: every call is timed.
        (Storage::Local, Target::List(_)) => Plan::timed(tasks, timing.warmup, timing.measure),
        // Local create runs are bounded by count (the memory the new
        // sessions take), so they spend none of it on a warmup: the store
        // is warm from the runs before.
        (Storage::Local, Target::Create | Target::CreateOwned) => {
            Plan::sampled(tasks, Duration::ZERO, timing.measure)
        }
        (Storage::Local, _) => Plan::sampled(tasks, timing.warmup, timing.measure),
    };
    let cpu_before = match redis {
        Some(client) => Some(server_cpu_us(client).await?),
        None => None,
    };
    let mut m = harness::run(&work, plan).await?;
    if let (Some(client), Some(before)) = (redis, cpu_before) {
        let after = server_cpu_us(client).await?;
        m.server_cpu_us_per_op = Some((after - before).max(0.0) / m.total_ops.max(1) as f64);
    }
    let created = std::mem::take(&mut *work.created.lock().unwrap_or_else(PoisonError::into_inner));
    clean_up(ctx, target, created).await?;
    Ok(Row {
        target: target.name(),
        op: op.to_owned(),
        concurrency: tasks,
        m,
        script_share: None,
        hit_share: None,
        rounds: Vec::new(),
    })
}

/// Runs every comparison `timing.rounds` times, the targets interleaved,
/// and adds the best round of each to `rows`.
async fn rounds(setting: Setting<'_>, rows: &mut Vec<Row>) -> Result<()> {
    // The first create run into a store grows its tables, and the runs
    // after it find them grown (removing sessions does not shrink them):
    // one unrecorded run of each create target first, so that no recorded
    // run pays for growth that the others do not.
    if setting.filter.op("create") {
        for target in [Target::Create, Target::CreateOwned] {
            check(&measure(setting, "create", target).await?)?;
        }
    }
    let (storage, tasks) = (setting.storage, setting.tasks);
    for round in 1..=setting.timing.rounds {
        for (op, targets) in comparisons() {
            if (op == "list" && tasks != LIST_TASKS) || !setting.filter.op(op) {
                continue;
            }
            // Each round starts the order at another target, so that no
            // target always runs right after the same neighbour.
            let mut order = targets;
            let shift = (round - 1) % order.len();
            order.rotate_left(shift);
            for target in order {
                let row = measure(setting, op, target).await?;
                eprintln!(
                    "owned: {storage:?} round {round} {tasks:>2} tasks {:<16} {:>10.0} ops/s  \
                     p99 {:>8.2} us  cpu {:>6.2} us/op  server {:>4.1} us/op",
                    row.target,
                    row.m.ops_per_sec,
                    row.m.p99_us,
                    row.m.cpu_us_per_op,
                    row.m.server_cpu_us_per_op.unwrap_or_default(),
                );
                check(&row)?;
                harness::keep_best(rows, row);
            }
        }
    }
    Ok(())
}

/// Every operation of this section finds what it acts on (the sessions
/// live for the whole run), so a miss or an error is a broken setup.
fn check(row: &Row) -> Result<()> {
    let m = &row.m;
    if m.ops == 0 || m.errors > 0 || m.misses > 0 {
        bail!(
            "owned {} {} at {}: {} ops, {} misses, {} errors (first: {})",
            row.target,
            row.op,
            row.concurrency,
            m.ops,
            m.misses,
            m.errors,
            m.first_error.as_deref().unwrap_or("none")
        );
    }
    Ok(())
}

/// The Redis half, on the current runtime.
async fn redis(addr: &str, timing: Timing, filter: &Filter) -> Result<Vec<Row>> {
    let storage = connect_flushed(addr, PREFIX).await?;
    let client = storage.client().clone();
    let tasks = TASKS.into_iter().max().unwrap_or(1);
    eprintln!("owned: Redis: preparing {tasks} sessions and owners of {LIST_SIZES:?} sessions");
    let ctx = prepare(manager(storage)?, tasks).await?;
    let mut rows = Vec::new();
    for tasks in TASKS.into_iter().filter(|&tasks| filter.tasks(tasks)) {
        let setting = Setting {
            ctx: &ctx,
            storage: Storage::Redis,
            timing,
            tasks,
            // Redis keeps what a run creates out of this process, and
            // the cleanup after each run removes it.
            create_cap: usize::MAX,
            redis: Some(&client),
            filter,
        };
        rounds(setting, &mut rows).await?;
    }
    ctx.manager.close().await?;
    Ok(rows)
}

/// The local half: a runtime of each thread count, each with a store of
/// its own.
fn local(timing: Timing, create_cap: usize, filter: &Filter) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for threads in THREADS.into_iter().filter(|&threads| filter.tasks(threads)) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?;
        runtime.block_on(async {
            eprintln!("owned: local: preparing the store ({threads} threads)");
            let ctx = prepare(manager(LocalStorage::new())?, threads).await?;
            let setting = Setting {
                ctx: &ctx,
                storage: Storage::Local,
                timing,
                tasks: threads,
                create_cap,
                redis: None,
                filter,
            };
            rounds(setting, &mut rows).await?;
            ctx.manager.close().await?;
            anyhow::Ok(())
        })?;
    }
    Ok(rows)
}

/// Runs section 6 against the Redis server at `addr`, then on local
/// storage.
pub(crate) fn run(addr: &str, timing: Timing, filter: &Filter) -> Result<OwnedResults> {
    let local_create_cap = if timing.quick { 100_000 } else { 500_000 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let redis = runtime.block_on(redis(addr, timing, filter))?;
    drop(runtime);
    let local = local(timing, local_create_cap, filter)?;
    Ok(OwnedResults {
        list_sizes: LIST_SIZES.to_vec(),
        create_owners: CREATE_OWNERS,
        local_create_cap,
        redis,
        local,
    })
}
