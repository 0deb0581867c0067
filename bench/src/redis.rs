//! Section 1: the Redis path.
//!
//! One `Manager` over `RedisStorage` shared by 1, 16, 64 and 256 tasks,
//! against, on the same server and the same fred connection (one
//! auto-pipelined client, our client configuration):
//!
//! - raw fred sending the same commands with the same value bytes (the
//!   encoded sessions our manager stored), which is the floor for any client;
//! - raw fred `GET`, the cheapest read, for reference;
//! - a fred pool of four clients doing the raw `GETEX` (single client vs
//!   pool);
//! - `tower-sessions-redis-store` (its `load` is a plain `GET`, `create` is
//!   `SET NX EXAT`, `save` is `SET XX EXAT`, values in MessagePack);
//! - our manager with the local cache on (`[redis.cache]`, a client of its
//!   own with the same sessions), in tracking and in broadcast mode, for the
//!   load and the mix: every session is read once before each cell, so the
//!   figure is that of a replica whose hot sessions are cached.
//!
//! Operations of a run run in this order for every target before the next
//! operation, so that the figures compared with each other are measured
//! seconds apart: load, update, create, delete (of what create made), mix.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use session_config::{CacheCapacity, CacheConfig, RedisConfig, TrackingMode};
use session_core::codec::Codec;
use session_core::{Manager, Session, SessionId, Storage, Ttl};
use session_redis::RedisStorage;
use session_redis::fred;
use session_redis::fred::bytes::Bytes;
use session_redis::fred::interfaces::{ClientLike, KeysInterface, LuaInterface};
use session_redis::fred::prelude::{Builder, Config, Expiration, SetOptions, Value};
use session_redis::fred::types::{ClusterHash, CustomCommand};
use tower_sessions_redis_store::RedisStore;
use tsc_redis::SessionStore as _;
use tsc_redis::session::{Id, Record};

use crate::harness::{self, Measurement, Plan, Row, Timing, Workload};
use crate::shape::{self, Rng};

/// The session TTL of every store.
pub(crate) const TTL: Duration = Duration::from_secs(30 * 60);
/// Concurrent tasks.
pub(crate) const CONCURRENCY: [usize; 4] = [1, 16, 64, 256];
/// The key prefix of our sessions (raw fred reads and writes the same keys).
const PREFIX: &str = "bench:";
/// The key prefix of the sealed sessions.
const SEALED_PREFIX: &str = "bench-sealed:";

/// The keyring of the sealing storage: one key, fixed (a benchmark needs
/// no secret), sealing every write.
fn bench_keyring() -> Result<session_core::seal::Keyring> {
    let key = session_core::seal::SealKey::new("bench", 1, &[0x42; session_core::seal::KEY_LEN])?;
    Ok(session_core::seal::Keyring::new(vec![key], Some(1))?)
}
/// Clients in the pool compared with the single auto-pipelined client.
const POOL_SIZE: usize = 4;

/// Everything section 1 writes.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RedisResults {
    pub(crate) redis_version: String,
    /// Bytes of one stored session of ours (header + bincode body).
    pub(crate) value_bytes: usize,
    /// Bytes of the same session as tower-sessions stores it (MessagePack).
    pub(crate) tower_value_bytes: usize,
    /// Sessions loaded and updated at random, per store.
    pub(crate) keyspace: usize,
    pub(crate) rows: Vec<Row>,
    /// TTL refresh writes of two replicas reading the same sessions.
    #[serde(default)]
    pub(crate) refresh: Option<RefreshWrites>,
    /// Resident memory the local cache takes per cached session, in bytes.
    #[serde(default)]
    pub(crate) cache_bytes_per_entry: Option<f64>,
    /// Client instructions per uncached load, by store; `None` without
    /// valgrind.
    #[serde(default)]
    pub(crate) instructions: Option<Vec<InstructionCount>>,
    /// Server memory per event of the resumable streams' event log.
    #[serde(default)]
    pub(crate) event_memory: Option<EventMemory>,
}

/// What the server's memory grew by per event appended to the event log of
/// resumable streams (`session_redis::EventLog`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct EventMemory {
    /// Events appended.
    pub(crate) events: usize,
    /// Sessions (one log each) they went to.
    pub(crate) sessions: usize,
    /// Bytes of one event's payload (a progress notification's JSON).
    pub(crate) payload_bytes: usize,
    /// `used_memory` growth per event.
    pub(crate) bytes_per_event: f64,
}

/// Sessions of the event memory measurement.
const EVENT_SESSIONS: usize = 100;
/// Events per session of the event memory measurement.
const EVENTS_PER_SESSION: usize = 100;

/// Appends [`EVENTS_PER_SESSION`] progress notifications to each of
/// [`EVENT_SESSIONS`] sessions' logs and reads the server's `used_memory`
/// before and after.
async fn event_memory(addr: &str) -> Result<EventMemory> {
    use session_redis::events::Record;
    use session_redis::{EventLimits, EventLog};
    let config = RedisConfig::standalone(addr, "bench:events:")?;
    let limits = EventLimits::default().max_events_per_session(EVENTS_PER_SESSION as u64 * 10);
    let log = EventLog::connect(&config, limits).await?;
    let probe = RedisStorage::connect(&config).await?;
    let sessions: Vec<SessionId> = (0..EVENT_SESSIONS).map(|_| SessionId::new()).collect();
    let payload = |n: usize| {
        serde_json::json!({
            "jsonrpc": "2.0", "method": "notifications/progress",
            "params": {"progressToken": "call-12345", "progress": n as f64, "total": 50.0,
                       "message": format!("step {n} of 50")},
        })
        .to_string()
    };
    let before = used_memory(probe.client()).await?;
    let ttl = Ttl::from_secs(1800)?;
    for n in 0..EVENTS_PER_SESSION {
        for session in &sessions {
            let record = Record::Event {
                data: Some(Bytes::from(payload(n))),
                retry: None,
            };
            log.append(session, "0123456789abcdef", &record, ttl)
                .await?;
        }
    }
    let after = used_memory(probe.client()).await?;
    for session in &sessions {
        log.delete(session).await?;
    }
    log.close().await;
    probe.close().await?;
    let events = EVENT_SESSIONS * EVENTS_PER_SESSION;
    Ok(EventMemory {
        events,
        sessions: EVENT_SESSIONS,
        payload_bytes: payload(EVENTS_PER_SESSION / 2).len(),
        bytes_per_event: after.saturating_sub(before) as f64 / events as f64,
    })
}

/// The server's `used_memory`, in bytes (`INFO memory`).
async fn used_memory(client: &fred::clients::Client) -> Result<u64> {
    let info: String = client
        .custom(
            CustomCommand::new_static("INFO", ClusterHash::Random, false),
            vec!["memory"],
        )
        .await?;
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|n| n.trim().parse().ok())
        .context("INFO memory has no used_memory")
}

/// Two replicas read the same sessions for several refresh windows: how
/// many TTL refresh writes the server received per session and window,
/// with the load script (ours) and with a `GETEX` whenever the replica's own
/// refresh is older than the window (what the storage sent before the
/// script).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RefreshWrites {
    pub(crate) sessions: usize,
    pub(crate) window_ms: u64,
    pub(crate) windows: f64,
    /// `PEXPIRE`s run by the load script, per session and window.
    pub(crate) script: f64,
    /// `GETEX`s, per session and window.
    pub(crate) getex: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// Our manager over `RedisStorage`, its type kept
    /// (`Manager::typed_builder`): no boxed future per call.
    Ours,
    /// The manager with the storage's type erased (`Manager::builder`, what
    /// `session-factory` builds for a backend chosen by configuration): one
    /// boxed future per call.
    OursAny,
    Raw,
    RawGet,
    /// Raw fred sending the load script (`EVALSHA`) our loads send outside
    /// the refresh window, with the same arguments.
    RawScript,
    Pool,
    Tower,
    /// Our manager on a storage with the local cache, tracking mode.
    CachedTracking,
    /// The same in broadcast mode.
    CachedBroadcast,
    /// Our manager on a storage that encrypts what it stores
    /// (`[redis.encryption]`), on sessions stored sealed.
    Sealed,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Self::Ours => "ours",
            Self::OursAny => "ours-any-storage",
            Self::Raw => "raw-fred",
            Self::RawGet => "raw-fred-get",
            Self::RawScript => "raw-fred-load-script",
            Self::Pool => "raw-fred-pool4",
            Self::Tower => "tower-sessions-redis-store",
            Self::CachedTracking => "ours-cached-tracking",
            Self::CachedBroadcast => "ours-cached-broadcast",
            Self::Sealed => "ours-sealed",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Load,
    Update,
    Create,
    Delete,
    Mix,
}

impl Op {
    pub(crate) const ALL: [Op; 5] = [Op::Load, Op::Update, Op::Create, Op::Delete, Op::Mix];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Load => "load",
            Self::Update => "update",
            Self::Create => "create",
            Self::Delete => "delete",
            Self::Mix => "mix",
        }
    }
}

/// One concrete operation (a mix resolves to one of these per call).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Single {
    Load(usize),
    Update(usize),
    Create,
    Delete(u128),
}

/// Per-task state shared by the Redis and local workloads.
pub(crate) struct TaskState {
    pub(crate) rng: Rng,
    pub(crate) created: Vec<u128>,
    /// The next victim of a delete run: this task deletes every `stride`-th
    /// session that create made, so tasks share no counter.
    pub(crate) cursor: usize,
    pub(crate) stride: usize,
}

impl TaskState {
    pub(crate) fn new(seed: u64, task: usize, tasks: usize) -> Self {
        Self {
            // The generator's state advances by a fixed constant, so tasks
            // whose states start a multiple of it apart walk one sequence a
            // few steps apart (every task would load the same sessions right
            // after each other): each task starts from a scrambled state.
            rng: Rng::new(
                Rng::new(seed ^ (task as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_u64(),
            ),
            created: Vec::new(),
            cursor: task,
            stride: tasks.max(1),
        }
    }
}

/// Resolves the next operation: the mix is 90% load, 5% update, 4% create
/// and 1% delete (of a session this task created, so deletes hit).
pub(crate) fn next_op(op: Op, state: &mut TaskState, keyspace: usize, victims: &[u128]) -> Single {
    match op {
        Op::Load => Single::Load(state.rng.below(keyspace)),
        Op::Update => Single::Update(state.rng.below(keyspace)),
        Op::Create => Single::Create,
        Op::Delete => {
            let index = state.cursor;
            state.cursor += state.stride;
            // Past the end of what create made, deletes miss (and say so);
            // `exhausted` stops the task before that.
            Single::Delete(
                victims
                    .get(index)
                    .copied()
                    .unwrap_or_else(|| state.rng.uuid()),
            )
        }
        Op::Mix => match state.rng.below(100) {
            0..90 => Single::Load(state.rng.below(keyspace)),
            90..95 => Single::Update(state.rng.below(keyspace)),
            95..99 => Single::Create,
            _ => Single::Delete(state.created.pop().unwrap_or_else(|| state.rng.uuid())),
        },
    }
}

struct Ctx {
    manager: Manager<RedisStorage>,
    /// A manager over the same storage, its type erased.
    erased: Manager,
    /// Managers on storages with the local cache, tracking and broadcast
    /// mode, and those storages (for their counters).
    cached: [(Manager<RedisStorage>, RedisStorage); 2],
    /// A manager on a storage that seals what it stores, under a prefix of
    /// its own, and its prepopulated sessions (the same shapes as ours).
    sealed: Manager<RedisStorage>,
    sealed_ours: Vec<Arc<Session>>,
    /// The TTL the manager gives every read, for reads of the storage
    /// alone (the cache's memory, the refresh writes).
    ttl: Ttl,
    client: fred::clients::Client,
    pool: fred::clients::Pool,
    tower: RedisStore<fred::clients::Client>,
    getex: CustomCommand,
    ttl_ms: i64,
    /// The load script's digest, loaded on the server, and its threshold
    /// argument (`ttl - refresh_window`, the storage's default window).
    load_script_sha: String,
    threshold_ms: i64,
    /// Our prepopulated sessions.
    ours: Vec<Arc<Session>>,
    /// Their keys and stored bytes, for raw fred.
    raw_keys: Vec<String>,
    raw_values: Vec<Bytes>,
    /// The value raw fred creates new keys with (same size as ours).
    raw_template: Bytes,
    tower_records: Vec<Record>,
    tower_template: Record,
}

struct RedisWork {
    ctx: Arc<Ctx>,
    target: Target,
    op: Op,
    seed: u64,
    victims: Vec<u128>,
    created: Mutex<Vec<u128>>,
}

impl Workload for RedisWork {
    type State = TaskState;

    fn state(&self, task: usize, tasks: usize) -> TaskState {
        TaskState::new(self.seed, task, tasks)
    }

    fn exhausted(&self, state: &TaskState) -> bool {
        self.op == Op::Delete && state.cursor >= self.victims.len()
    }

    async fn op(&self, state: &mut TaskState) -> Result<bool> {
        let ctx = &self.ctx;
        let single = next_op(self.op, state, ctx.ours.len(), &self.victims);
        match self.target {
            Target::Ours => ours(&ctx.manager, &ctx.ours, single, state).await,
            Target::OursAny => match single {
                Single::Load(i) => Ok(ctx.erased.get(&ctx.ours[i].id()).await?.is_some()),
                _ => bail!("{:?} is measured for loads only", self.target),
            },
            Target::Raw | Target::RawGet | Target::RawScript | Target::Pool => {
                raw(ctx, self.target, single, state).await
            }
            Target::Tower => tower(ctx, single, state).await,
            Target::CachedTracking => ours(&ctx.cached[0].0, &ctx.ours, single, state).await,
            Target::CachedBroadcast => ours(&ctx.cached[1].0, &ctx.ours, single, state).await,
            Target::Sealed => ours(&ctx.sealed, &ctx.sealed_ours, single, state).await,
        }
    }

    fn done(&self, state: TaskState) {
        self.created
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(state.created);
    }
}

/// One operation through one of our managers (the plain one, a cached
/// replica, the sealing one) on its prepopulated `sessions`.
async fn ours(
    manager: &Manager<RedisStorage>,
    sessions: &[Arc<Session>],
    op: Single,
    state: &mut TaskState,
) -> Result<bool> {
    Ok(match op {
        Single::Load(i) => manager.get(&sessions[i].id()).await?.is_some(),
        Single::Update(i) => manager.update((*sessions[i]).clone()).await?,
        Single::Create => {
            let session = manager.create().await?;
            state.created.push(shape::raw_id(session.id()));
            true
        }
        Single::Delete(raw) => manager.delete(&shape::session_id(raw)).await?,
    })
}

fn raw_key(raw: u128) -> String {
    format!("{PREFIX}{}", uuid::Uuid::from_u128(raw).hyphenated())
}

async fn raw(ctx: &Ctx, target: Target, op: Single, state: &mut TaskState) -> Result<bool> {
    let client = match target {
        Target::Pool => ctx.pool.next(),
        _ => &ctx.client,
    };
    Ok(match op {
        Single::Load(i) if target == Target::RawGet => {
            let reply: Value = client.get(ctx.raw_keys[i].as_str()).await?;
            !reply.is_null()
        }
        Single::Load(i) if target == Target::RawScript => {
            // The arguments our load script gets: the TTL, and the
            // threshold below which it slides the TTL.
            let args = vec![Value::from(ctx.ttl_ms), Value::from(ctx.threshold_ms)];
            let reply: Value = client
                .evalsha(ctx.load_script_sha.as_str(), ctx.raw_keys[i].as_str(), args)
                .await?;
            !reply.is_null()
        }
        Single::Load(i) => {
            let args = vec![
                Value::from(ctx.raw_keys[i].as_str()),
                Value::from_static_str("PX"),
                Value::from(ctx.ttl_ms),
            ];
            let reply: Value = client.custom(ctx.getex.clone(), args).await?;
            !reply.is_null()
        }
        Single::Update(i) => {
            let reply: Value = client
                .set(
                    ctx.raw_keys[i].as_str(),
                    ctx.raw_values[i].clone(),
                    Some(Expiration::PX(ctx.ttl_ms)),
                    Some(SetOptions::XX),
                    false,
                )
                .await?;
            !reply.is_null()
        }
        Single::Create => {
            // A random id per session, as every session store needs.
            let id = uuid::Uuid::new_v4().as_u128();
            let reply: Value = client
                .set(
                    raw_key(id),
                    ctx.raw_template.clone(),
                    Some(Expiration::PX(ctx.ttl_ms)),
                    Some(SetOptions::NX),
                    false,
                )
                .await?;
            state.created.push(id);
            !reply.is_null()
        }
        Single::Delete(raw) => {
            let removed: i64 = client.del(raw_key(raw)).await?;
            removed > 0
        }
    })
}

async fn tower(ctx: &Ctx, op: Single, state: &mut TaskState) -> Result<bool> {
    Ok(match op {
        Single::Load(i) => ctx.tower.load(&ctx.tower_records[i].id).await?.is_some(),
        Single::Update(i) => {
            ctx.tower.save(&ctx.tower_records[i]).await?;
            true
        }
        Single::Create => {
            let mut record = ctx.tower_template.clone();
            record.id = Id::default();
            ctx.tower.create(&mut record).await?;
            state.created.push(record.id.0 as u128);
            true
        }
        Single::Delete(raw) => {
            // tower-sessions' delete does not say whether the key existed.
            ctx.tower.delete(&Id(raw as i128)).await?;
            true
        }
    })
}

/// How many calls of each of `names` the server counted so far, from
/// `INFO commandstats` (0 for a command it never ran).
async fn calls_of<const N: usize>(
    client: &fred::clients::Client,
    names: [&str; N],
) -> Result<[u64; N]> {
    let info: String = client
        .custom(
            CustomCommand::new_static("INFO", ClusterHash::Random, false),
            vec!["commandstats"],
        )
        .await?;
    Ok(names.map(|name| {
        info.lines()
            .find_map(|line| line.strip_prefix(&format!("cmdstat_{name}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    }))
}

/// The GET and EVALSHA (the load script) call counts of the server.
async fn command_calls(client: &fred::clients::Client) -> Result<(u64, u64)> {
    let [get, evalsha] = calls_of(client, ["get", "evalsha"]).await?;
    Ok((get, evalsha))
}

/// The server's CPU time so far, in microseconds (`INFO cpu`).
pub(crate) async fn server_cpu_us(client: &fred::clients::Client) -> Result<f64> {
    let info: String = client
        .custom(
            CustomCommand::new_static("INFO", ClusterHash::Random, false),
            vec!["cpu"],
        )
        .await?;
    let seconds = |name: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(&format!("{name}:")))
            .and_then(|n| n.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((seconds("used_cpu_user") + seconds("used_cpu_sys")) * 1e6)
}

async fn server_version(client: &fred::clients::Client) -> Result<String> {
    let info: String = client
        .custom(
            CustomCommand::new_static("INFO", ClusterHash::Random, false),
            vec!["server"],
        )
        .await?;
    Ok(info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .unwrap_or("unknown")
        .trim()
        .to_owned())
}

/// Runs `count` async jobs, `width` at a time, on the current runtime.
pub(crate) async fn in_parallel<F, Fut, T>(count: usize, width: usize, job: F) -> Result<Vec<T>>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let job = Arc::new(job);
    let mut handles = Vec::new();
    for lane in 0..width {
        let job = Arc::clone(&job);
        handles.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in (lane..count).step_by(width) {
                out.push((i, job(i).await?));
            }
            anyhow::Ok(out)
        }));
    }
    let mut all = Vec::with_capacity(count);
    for handle in handles {
        all.extend(handle.await??);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, value)| value).collect())
}

/// A `RedisStorage` under `prefix` on the server at `addr`, emptied first
/// (`FLUSHALL`), so that no section measures what an earlier one left.
pub(crate) async fn connect_flushed(addr: &str, prefix: &str) -> Result<RedisStorage> {
    let config = RedisConfig::standalone(addr, prefix)
        .with_context(|| format!("invalid Redis address {addr:?}"))?;
    let storage = RedisStorage::connect(&config)
        .await
        .with_context(|| format!("cannot connect to Redis at {addr}"))?;
    let _: Value = storage
        .client()
        .custom(
            CustomCommand::new_static("FLUSHALL", ClusterHash::Random, false),
            Vec::<Value>::new(),
        )
        .await?;
    Ok(storage)
}

async fn setup(addr: &str, keyspace: usize) -> Result<Arc<Ctx>> {
    let storage = connect_flushed(addr, PREFIX).await?;
    let client = storage.client().clone();

    // The template every create uses, in every store: one typical session.
    let mut rng = Rng::new(0x5E55_1011);
    let template = shape::typical_session(shape::session_id(rng.uuid()), &mut rng);
    let template_metadata = template.metadata().clone();
    let ttl = Ttl::new(TTL)?;
    let template_type = template.session_type();
    let factory = move |id| {
        let mut session = Session::new(id, template_type);
        *session.metadata_mut() = template_metadata.clone();
        session
    };
    let manager_on = |storage: RedisStorage| {
        Manager::typed_builder(storage, ttl)
            .factory(factory.clone())
            .build()
    };
    let manager = manager_on(storage.clone())?;
    let erased = Manager::builder(storage.clone(), ttl)
        .factory(factory.clone())
        .build()?;
    // Two more replicas of ours on the same sessions, each with the cache:
    // room for every session, and a staleness bound the fill before a cell
    // and the cell fit in.
    let mut cached = Vec::new();
    for mode in [TrackingMode::Tracking, TrackingMode::Broadcast] {
        let capacity = CacheCapacity::Entries(
            std::num::NonZeroU64::new(2 * keyspace as u64).context("an empty keyspace")?,
        );
        let config = RedisConfig::standalone(addr, PREFIX)?.with_cache(Some(
            CacheConfig::new(capacity, CACHE_STALENESS)?.with_mode(mode),
        ))?;
        let storage = connect_armed(&config).await?;
        cached.push((manager_on(storage.clone())?, storage));
    }
    let cached: [(Manager<RedisStorage>, RedisStorage); 2] = cached
        .try_into()
        .map_err(|_| anyhow::anyhow!("two cached replicas"))?;

    // Our sessions, created through the manager.
    let sessions: Vec<Session> = (0..keyspace)
        .map(|_| shape::typical_session(shape::session_id(rng.uuid()), &mut rng))
        .collect();
    let sessions = Arc::new(sessions);
    let create_all = |manager: &Manager<RedisStorage>| {
        let manager = manager.clone();
        let sessions = Arc::clone(&sessions);
        in_parallel(keyspace, 64, move |i| {
            let manager = manager.clone();
            let session = sessions[i].clone();
            async move { Ok(manager.create_from(session).await?) }
        })
    };
    let ours = create_all(&manager).await?;
    // The same sessions again, sealed, under the sealing storage's prefix.
    let sealed = {
        let config = RedisConfig::standalone(addr, SEALED_PREFIX)?
            .with_encryption(Some(bench_keyring()?))?;
        manager_on(RedisStorage::connect(&config).await?)?
    };
    let sealed_ours = create_all(&sealed).await?;
    let codec = Codec::default();
    let raw_keys = ours.iter().map(|s| storage.key(&s.id())).collect();
    let raw_values = ours
        .iter()
        .map(|s| codec.encode_session(s).map(Bytes::from))
        .collect::<Result<Vec<_>, _>>()?;
    let raw_template = Bytes::from(codec.encode_session(&sessions[0])?);

    // The same sessions in tower-sessions' model, created through its store.
    let tower = RedisStore::new(client.clone());
    let expiry = time::OffsetDateTime::now_utc() + TTL;
    let records: Vec<Record> = sessions
        .iter()
        .map(|session| Record {
            id: Id(rng.uuid() as i128),
            data: shape::tower_data(session),
            expiry_date: expiry,
        })
        .collect();
    let tower_template = records[0].clone();
    let records = Arc::new(records);
    let tower_records = {
        let tower = tower.clone();
        let records = Arc::clone(&records);
        in_parallel(keyspace, 64, move |i| {
            let tower = tower.clone();
            let mut record = records[i].clone();
            async move {
                tower.create(&mut record).await?;
                Ok(record)
            }
        })
        .await?
    };

    // The pool: the same settings as our client, four connections.
    let command_timeout = client.perf_config().default_command_timeout;
    let mut pool_config = Config::from_url(&format!("redis://{addr}"))?;
    pool_config.fail_fast = true;
    let pool = Builder::from_config(pool_config)
        .with_performance_config(|performance| {
            performance.default_command_timeout = command_timeout;
        })
        .build_pool(POOL_SIZE)?;
    pool.init().await?;
    let load_script_sha: String = client.script_load(session_redis::LOAD_SCRIPT).await?;
    let threshold = TTL - session_redis::default_refresh_window(ttl);

    Ok(Arc::new(Ctx {
        manager,
        erased,
        cached,
        sealed,
        sealed_ours,
        ttl,
        client,
        pool,
        tower,
        getex: CustomCommand::new_static("GETEX", ClusterHash::FirstKey, false),
        ttl_ms: i64::try_from(TTL.as_millis())?,
        load_script_sha,
        threshold_ms: i64::try_from(threshold.as_millis())?,
        ours,
        raw_keys,
        raw_values,
        raw_template,
        tower_records,
        tower_template,
    }))
}

fn targets(op: Op) -> &'static [Target] {
    match op {
        Op::Load => &[
            Target::Raw,
            Target::RawGet,
            Target::RawScript,
            Target::Pool,
            Target::OursAny,
            Target::Ours,
            Target::Tower,
            Target::CachedTracking,
            Target::CachedBroadcast,
            Target::Sealed,
        ],
        Op::Mix => &[
            Target::Raw,
            Target::Ours,
            Target::Tower,
            Target::CachedTracking,
            Target::CachedBroadcast,
        ],
        _ => &[Target::Raw, Target::Ours, Target::Tower, Target::Sealed],
    }
}

fn check(row: &Row) -> Result<()> {
    let m: &Measurement = &row.m;
    if m.ops == 0 || m.errors > m.ops / 100 {
        bail!(
            "{} {} at {} tasks: {} ops, {} errors (first: {})",
            row.target,
            row.op,
            row.concurrency,
            m.ops,
            m.errors,
            m.first_error.as_deref().unwrap_or("none")
        );
    }
    Ok(())
}

/// Which cells to run; everything by default. Narrowing it is for
/// investigating one figure by hand (`--tasks 64 --ops load`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Filter {
    pub(crate) tasks: Option<Vec<usize>>,
    pub(crate) ops: Option<Vec<String>>,
}

impl Filter {
    fn tasks(&self, tasks: usize) -> bool {
        self.tasks.as_ref().is_none_or(|list| list.contains(&tasks))
    }

    fn op(&self, op: Op) -> bool {
        // Delete needs the sessions that create made.
        self.ops.as_ref().is_none_or(|list| {
            list.iter()
                .any(|name| name == op.name() || (op == Op::Create && name == "delete"))
        })
    }
}

/// The staleness bound of the cached replicas: longer than the default
/// (1 s), so that the copies filled before a cell, which takes up to a
/// second on this machine at 50,000 sessions, still answer at its end.
/// Invalidations, not the bound, keep the copies correct.
const CACHE_STALENESS: Duration = Duration::from_secs(5);

/// Reads each of `sessions` once through `manager`, 64 at a time, outside
/// any measurement.
async fn read_every_session(
    manager: &Manager<RedisStorage>,
    sessions: &[Arc<Session>],
) -> Result<()> {
    let manager = manager.clone();
    let ids: Arc<Vec<SessionId>> = Arc::new(sessions.iter().map(|s| s.id()).collect());
    in_parallel(ids.len(), 64, move |i| {
        let manager = manager.clone();
        let ids = Arc::clone(&ids);
        async move { Ok(manager.get(&ids[i]).await?.is_some()) }
    })
    .await?;
    Ok(())
}

/// Runs one cell and returns its row and, for create, what it made.
async fn measure(
    ctx: &Arc<Ctx>,
    timing: Timing,
    tasks: usize,
    op: Op,
    target: Target,
    seed: u64,
    victims: Vec<u128>,
) -> Result<(Row, Vec<u128>)> {
    let work = Arc::new(RedisWork {
        ctx: Arc::clone(ctx),
        target,
        op,
        seed,
        victims,
        created: Mutex::new(Vec::new()),
    });
    let cached = match target {
        Target::CachedTracking => Some(&ctx.cached[0]),
        Target::CachedBroadcast => Some(&ctx.cached[1]),
        _ => None,
    };
    // A cached replica whose hot sessions are in its cache: every session
    // is read once just before the cell, outside the measurement. Without
    // this, the copies the last cell filled would have passed their
    // staleness bound while the other targets ran, and the cell
    // would measure mostly the fills of a cold cache.
    let hits_before = match cached {
        Some((manager, storage)) => {
            read_every_session(manager, &ctx.ours).await?;
            storage
                .cache_stats()
                .map(|stats| (stats.hits, stats.misses))
        }
        None => None,
    };
    // Our uncached loads likewise: the refresh window's knowledge (until
    // when a plain GET leaves the session enough life) that the last cell
    // left has lapsed while the other targets ran, so without this the
    // cell would run the load script on most sessions' first read and
    // measure a cold start, not sessions read more often than once per
    // window. Every session is read once, outside the measurement; the
    // script's own cost is the raw-fred-load-script row, and the share of
    // loads that still ran it is reported.
    if matches!(target, Target::Ours | Target::OursAny) && matches!(op, Op::Load | Op::Mix) {
        read_every_session(&ctx.manager, &ctx.ours).await?;
    }
    if target == Target::Sealed && op == Op::Load {
        read_every_session(&ctx.sealed, &ctx.sealed_ours).await?;
    }
    let calls_before = command_calls(&ctx.client).await?;
    let cpu_before = server_cpu_us(&ctx.client).await?;
    let mut m = harness::run(&work, Plan::timed(tasks, timing.warmup, timing.measure)).await?;
    let cpu_after = server_cpu_us(&ctx.client).await?;
    let calls_after = command_calls(&ctx.client).await?;
    // The share of reads the cache answered, over warmup and run together.
    let hit_share = cached
        .and_then(|(_, storage)| storage.cache_stats())
        .zip(hits_before)
        .map(|(stats, (hits, misses))| {
            let hits = stats.hits.saturating_sub(hits);
            let misses = stats.misses.saturating_sub(misses);
            hits as f64 / (hits + misses).max(1) as f64
        });
    m.server_cpu_us_per_op = Some((cpu_after - cpu_before).max(0.0) / m.total_ops.max(1) as f64);
    // Only for loads: the mix's writes run scripts of their own.
    let script_share = (target == Target::Ours && op == Op::Load).then(|| {
        let get = calls_after.0.saturating_sub(calls_before.0) as f64;
        let script = calls_after.1.saturating_sub(calls_before.1) as f64;
        if get + script > 0.0 {
            script / (get + script)
        } else {
            0.0
        }
    });
    let made = std::mem::take(&mut *work.created.lock().unwrap_or_else(PoisonError::into_inner));
    let row = Row {
        target: target.name().to_owned(),
        op: op.name().to_owned(),
        concurrency: tasks,
        m,
        script_share,
        hit_share,
        rounds: Vec::new(),
    };
    Ok((row, made))
}

/// A storage with the local cache, once the server confirmed its tracking
/// (before that it answers every read from Redis).
async fn connect_armed(config: &RedisConfig) -> Result<RedisStorage> {
    let storage = RedisStorage::connect(config).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !storage.cache_armed() {
        if std::time::Instant::now() > deadline {
            bail!("the cache's tracking was not confirmed within 5 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(storage)
}

/// The prefix of the sessions the cache's memory is measured on.
const MEMORY_PREFIX: &str = "bench:cache-memory:";

/// The resident memory per cached session, measured by `session-bench
/// cache-memory` in a process of its own: in this one, the memory the cells
/// freed would take the cache's entries and hide them from the resident set.
async fn cache_memory_in_child(addr: &str, count: usize) -> Result<f64> {
    let exe = std::env::current_exe().context("the path of session-bench")?;
    let args = [
        "cache-memory",
        "--addr",
        addr,
        "--count",
        &count.to_string(),
    ]
    .map(String::from);
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .args(args)
            .stderr(std::process::Stdio::inherit())
            .output()
    })
    .await?
    .context("running session-bench cache-memory")?;
    if !output.status.success() {
        bail!("session-bench cache-memory failed ({})", output.status);
    }
    let text = String::from_utf8(output.stdout)?;
    text.trim()
        .parse()
        .with_context(|| format!("session-bench cache-memory printed {text:?}"))
}

/// The resident memory per cached session: `count` sessions of the usual
/// shape are stored under a prefix of their own, then a fresh cached client
/// reads every one. Everything this process allocates before the
/// measurement stays allocated until after it (the sessions' ids and stored
/// bytes), so the growth of the resident set is what the cache holds: the
/// decoded `Session`, its `Arc`, the entry and the cache's slot.
pub(crate) async fn cache_memory(addr: &str, count: usize) -> Result<f64> {
    let plain = RedisStorage::connect(&RedisConfig::standalone(addr, MEMORY_PREFIX)?).await?;
    let mut rng = Rng::new(0xCAC4E);
    let codec = Codec::default();
    let ids: Vec<SessionId> = (0..count).map(|_| shape::session_id(rng.uuid())).collect();
    let values = ids
        .iter()
        .map(|&id| {
            let session = shape::typical_session(id, &mut rng);
            Ok((plain.key(&id), Bytes::from(codec.encode_session(&session)?)))
        })
        .collect::<Result<Vec<_>>>()?;
    let client = plain.client().clone();
    for chunk in values.chunks(64) {
        let writes = chunk.iter().map(|(key, value)| {
            client.set::<Value, _, _>(
                key.as_str(),
                value.clone(),
                Some(Expiration::PX(
                    i64::try_from(TTL.as_millis()).unwrap_or(i64::MAX),
                )),
                None,
                false,
            )
        });
        for write in futures_util::future::join_all(writes).await {
            write?;
        }
    }
    let capacity =
        CacheCapacity::Entries(std::num::NonZeroU64::new(2 * count as u64).context("no sessions")?);
    let config = RedisConfig::standalone(addr, MEMORY_PREFIX)?
        .with_cache(Some(CacheConfig::new(capacity, Duration::from_secs(600))?))?;
    let storage = connect_armed(&config).await?;
    let ttl = Ttl::new(TTL)?;
    // The client's own buffers grow on the first reads: warm them on a few
    // sessions, then measure the rest.
    let warm = 256.min(count);
    for id in &ids[..warm] {
        Storage::get(&storage, id, ttl).await?;
    }
    let before = crate::memory::rss_bytes()? as f64;
    let entries_before = storage.cache_stats().map_or(0, |stats| stats.entries);
    for chunk in ids[warm..].chunks(64) {
        let reads = chunk.iter().map(|id| Storage::get(&storage, id, ttl));
        for read in futures_util::future::join_all(reads).await {
            read?.context("a stored session was not found")?;
        }
    }
    let after = crate::memory::rss_bytes()? as f64;
    let entries = storage.cache_stats().map_or(0, |stats| stats.entries) - entries_before;
    storage.close().await?;
    for chunk in values.chunks(512) {
        let keys: Vec<&str> = chunk.iter().map(|(key, _)| key.as_str()).collect();
        let _: i64 = client.del(keys).await?;
    }
    plain.close().await?;
    Ok((after - before) / entries.max(1) as f64)
}

/// Two replicas, one refresh window of 200 ms, every session read by both
/// about every 10 ms for a number of windows: the refresh writes the server
/// counted, with the load script and with `GETEX` per replica and window.
async fn refresh_writes(addr: &str, ctx: &Ctx, timing: Timing) -> Result<RefreshWrites> {
    const WINDOW: Duration = Duration::from_millis(200);
    let sessions = 500.min(ctx.ours.len());
    let run_for = if timing.quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(4)
    };
    let ttl_ms = i64::try_from(TTL.as_millis())?;
    let commands = |name: &'static str| async move {
        let [calls] = calls_of(&ctx.client, [name]).await?;
        anyhow::Ok(calls)
    };
    // With the script: two storages of ours with the short window.
    let config = RedisConfig::standalone(addr, PREFIX)?.with_refresh_window(Some(WINDOW));
    let replicas = [
        RedisStorage::connect(&config).await?,
        RedisStorage::connect(&config).await?,
    ];
    let before = commands("pexpire").await?;
    let started = std::time::Instant::now();
    while started.elapsed() < run_for {
        for replica in &replicas {
            let reads = ctx.ours[..sessions]
                .iter()
                .map(|session| async move { Storage::get(replica, &session.id(), ctx.ttl).await });
            for read in futures_util::future::join_all(reads).await {
                read?;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let windows = started.elapsed().as_secs_f64() / WINDOW.as_secs_f64();
    let script = (commands("pexpire").await? - before) as f64 / (sessions as f64 * windows);
    for replica in &replicas {
        replica.close().await?;
    }
    // Before the script: each replica sent GETEX when its own last refresh
    // of the session was a window old, a plain GET otherwise.
    let before = commands("getex").await?;
    let mut refreshed = [vec![None; sessions], vec![None; sessions]];
    let started = std::time::Instant::now();
    while started.elapsed() < run_for {
        for own in &mut refreshed {
            let reads = own.iter_mut().enumerate().map(|(i, last)| {
                let key = ctx.raw_keys[i].as_str();
                let stale = last.is_none_or(|at: std::time::Instant| at.elapsed() >= WINDOW);
                if stale {
                    *last = Some(std::time::Instant::now());
                }
                let client = &ctx.client;
                let getex = ctx.getex.clone();
                async move {
                    let reply: Value = if stale {
                        client
                            .custom(getex, vec![Value::from(key), "PX".into(), ttl_ms.into()])
                            .await?
                    } else {
                        client.get(key).await?
                    };
                    anyhow::Ok(reply)
                }
            });
            for read in futures_util::future::join_all(reads).await {
                read?;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let getex_windows = started.elapsed().as_secs_f64() / WINDOW.as_secs_f64();
    let getex = (commands("getex").await? - before) as f64 / (sessions as f64 * getex_windows);
    Ok(RefreshWrites {
        sessions,
        window_ms: u64::try_from(WINDOW.as_millis())?,
        windows,
        script,
        getex,
    })
}

/// Runs section 1 against the Redis server at `addr`.
pub(crate) async fn run(addr: &str, timing: Timing, filter: &Filter) -> Result<RedisResults> {
    let keyspace = if timing.quick { 5_000 } else { 50_000 };
    eprintln!("redis: preparing {keyspace} sessions per store");
    let ctx = setup(addr, keyspace).await?;
    let redis_version = server_version(&ctx.client).await?;
    let value_bytes = ctx.raw_values[0].len();
    let tower_value_bytes = rmp_serde::to_vec(&ctx.tower_records[0])?.len();

    let mut rows = Vec::new();
    let mut seed = 1;
    for tasks in CONCURRENCY.into_iter().filter(|&t| filter.tasks(t)) {
        for round in 1..=timing.rounds {
            let mut created: HashMap<&'static str, Vec<u128>> = HashMap::new();
            for op in Op::ALL.into_iter().filter(|&op| filter.op(op)) {
                // Each round starts the order at another store, so that no store
                // always runs right after the same neighbour.
                let mut order = targets(op).to_vec();
                let shift = (round - 1) % order.len();
                order.rotate_left(shift);
                for target in order {
                    seed += 1;
                    let victims = match op {
                        Op::Delete => created.remove(target.name()).unwrap_or_default(),
                        _ => Vec::new(),
                    };
                    let (row, made) =
                        measure(&ctx, timing, tasks, op, target, seed, victims).await?;
                    if op == Op::Create {
                        created.insert(target.name(), made);
                    }
                    eprintln!(
                        "redis: round {round} {tasks:>3} tasks {:<7} {:<27} {:>8.0} ops/s  \
                         p99 {:>7.0} us  cpu {:>5.1} us/op  server {:>4.1} us/op{}",
                        row.op,
                        row.target,
                        row.m.ops_per_sec,
                        row.m.p99_us,
                        row.m.cpu_us_per_op,
                        row.m.server_cpu_us_per_op.unwrap_or_default(),
                        row.script_share
                            .map(|share| format!("  script {:.1}%", share * 100.0))
                            .or_else(|| row
                                .hit_share
                                .map(|share| format!("  hits {:.0}%", share * 100.0)))
                            .unwrap_or_default()
                    );
                    check(&row)?;
                    harness::keep_best(&mut rows, row);
                }
            }
        }
    }
    let cache_bytes_per_entry = cache_memory_in_child(addr, ctx.ours.len()).await?;
    let refresh = refresh_writes(addr, &ctx, timing).await?;
    ctx.manager.close().await?;
    for (manager, _) in &ctx.cached {
        manager.close().await?;
    }
    let _ = ctx.pool.quit().await;
    let event_memory = event_memory(addr).await?;
    // Last: each counted process starts by flushing the server.
    let instructions = instruction_counts(addr).await?;
    Ok(RedisResults {
        redis_version,
        value_bytes,
        tower_value_bytes,
        keyspace,
        rows,
        refresh: Some(refresh),
        cache_bytes_per_entry: Some(cache_bytes_per_entry),
        instructions,
        event_memory: Some(event_memory),
    })
}

/// The loads of the two counted runs of each store. Setup, connection and
/// exit cost the same in both, so their difference over the difference of
/// loads is what one load costs.
pub(crate) const INSTRUCTION_LOADS: [usize; 2] = [6_400, 19_200];
/// Sessions per store in a counted run.
const INSTRUCTION_KEYSPACE: usize = 1_000;
/// Tasks of a counted run, as in the cells at 64 tasks.
const INSTRUCTION_TASKS: usize = 64;
/// The stores whose loads are counted.
const INSTRUCTION_TARGETS: [Target; 4] =
    [Target::RawGet, Target::Ours, Target::OursAny, Target::Tower];

/// Client instructions per load of one store.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct InstructionCount {
    pub(crate) target: String,
    pub(crate) per_load: f64,
}

/// Counts the client instructions of an uncached load for each store:
/// `session-bench instructions` under callgrind, which counts every
/// instruction the process runs, exactly. Unlike throughput, the count does
/// not move with what else the machine runs. `None` when `valgrind` is not
/// on PATH (`cargo xtask bench` installs it).
async fn instruction_counts(addr: &str) -> Result<Option<Vec<InstructionCount>>> {
    let found = std::process::Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        eprintln!("redis: valgrind is not on PATH; instructions per load not counted");
        return Ok(None);
    }
    let mut counts = Vec::new();
    for target in INSTRUCTION_TARGETS {
        let mut collected = Vec::new();
        for loads in INSTRUCTION_LOADS {
            collected.push(callgrind(addr, target, loads).await?);
        }
        let per_load = (collected[1] as f64 - collected[0] as f64)
            / (INSTRUCTION_LOADS[1] - INSTRUCTION_LOADS[0]) as f64;
        eprintln!(
            "redis: {:<27} {per_load:>8.0} instructions per load",
            target.name()
        );
        counts.push(InstructionCount {
            target: target.name().to_owned(),
            per_load,
        });
    }
    Ok(Some(counts))
}

/// The instructions callgrind counted in one `session-bench instructions`
/// run of `loads` loads of `target`.
async fn callgrind(addr: &str, target: Target, loads: usize) -> Result<u64> {
    let exe = std::env::current_exe().context("the path of session-bench")?;
    let args: Vec<String> = [
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        &exe.to_string_lossy(),
        "instructions",
        "--addr",
        addr,
        "--target",
        target.name(),
        "--count",
        &loads.to_string(),
    ]
    .map(String::from)
    .to_vec();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("valgrind").args(args).output()
    })
    .await?
    .context("running session-bench instructions under valgrind")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!(
            "session-bench instructions --target {} failed ({}): {stderr}",
            target.name(),
            output.status
        );
    }
    // callgrind ends with `==PID== Collected : N`.
    stderr
        .lines()
        .find_map(|line| line.split_once("Collected : ").map(|(_, n)| n.trim()))
        .and_then(|count| count.parse().ok())
        .with_context(|| format!("no instruction count in callgrind's output: {stderr}"))
}

/// `session-bench instructions`: `loads` loads of `target`'s sessions by
/// 64 tasks on one thread, for callgrind to count (see
/// [`instruction_counts`]). The loads are those of the cells, drawn the
/// same way.
pub(crate) async fn instruction_loads(addr: &str, target: &str, loads: usize) -> Result<()> {
    let target = INSTRUCTION_TARGETS
        .into_iter()
        .find(|known| known.name() == target)
        .with_context(|| format!("no instruction count for store {target:?}"))?;
    let ctx = setup(addr, INSTRUCTION_KEYSPACE).await?;
    let work = Arc::new(RedisWork {
        ctx,
        target,
        op: Op::Load,
        seed: 1,
        victims: Vec::new(),
        created: Mutex::new(Vec::new()),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..INSTRUCTION_TASKS {
        let work = Arc::clone(&work);
        tasks.spawn(async move {
            let mut state = work.state(task, INSTRUCTION_TASKS);
            for _ in 0..loads / INSTRUCTION_TASKS {
                if !work.op(&mut state).await? {
                    bail!("a load found no session");
                }
            }
            Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}
