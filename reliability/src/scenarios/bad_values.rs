//! Scenario 7: bad values under the key prefix.
//!
//! Values the library did not write (random bytes, truncated writes, an
//! unknown format version or codec id, one codec's body under the other's
//! header, another session's value) and keys of other Redis types (hash,
//! list, set, sorted set, stream) are planted under the prefix with a raw
//! client. Promised: loading one is a typed error (`Error::Codec`, or a
//! backend error of kind `WrongType`), never a panic and never `Ok(None)`
//! (which would tell a server "404" for data it cannot read); both read
//! paths are covered (the load script, and `GET` within the refresh window); other
//! sessions load as before; a value written by the other codec loads fine
//! (rolling deploys); `update` of an unreadable value does not resurrect or
//! hide anything it should not, and `delete` removes it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use session_core::codec::{Codec, FORMAT_VERSION, MAGIC};
use session_core::{BackendErrorKind, Error, Manager, Session, SessionId, SessionType};
use session_redis::RedisStorage;
use session_redis::fred::bytes::Bytes;
use session_redis::fred::interfaces::{ClientLike, KeysInterface};
use session_redis::fred::prelude::Value;
use session_redis::fred::types::{ClusterHash, CustomCommand};

use crate::Outcome;
use crate::load::ms;
use crate::rng::Rng;
use crate::scenarios;

/// The figure's name.
pub const NAME: &str = "bad-stored-values";

/// What a load of a planted value must give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Codec,
    WrongType,
    /// A valid value in the other codec: it loads.
    Loads,
}

/// Runs the scenario on the Redis server at `addr`; `random_values` random
/// byte strings are planted besides the fixed cases.
pub async fn run(addr: &str, random_values: usize, seed: u64) -> Outcome {
    let mut outcome = Outcome::new(NAME);
    let result = try_run(addr, random_values, seed, &mut outcome).await;
    Outcome::or_error(NAME, result.map(|()| outcome))
}

fn sample(id: SessionId) -> Session {
    let mut session = Session::new(id, SessionType::Streamable);
    session.set_metadata("user", "alice");
    session.set_metadata("unicode", "grüße ✓");
    session
}

struct Planter {
    storage: RedisStorage,
}

impl Planter {
    async fn set(&self, id: &SessionId, bytes: &[u8]) -> anyhow::Result<()> {
        let _: () = self
            .storage
            .client()
            .set(
                self.storage.key(id),
                Bytes::copy_from_slice(bytes),
                None,
                None,
                false,
            )
            .await?;
        Ok(())
    }

    async fn custom(
        &self,
        command: &'static str,
        id: &SessionId,
        args: &[&str],
    ) -> anyhow::Result<()> {
        let mut values = vec![Value::from(self.storage.key(id))];
        values.extend(args.iter().map(|arg| Value::from(*arg)));
        let _: Value = self
            .storage
            .client()
            .custom(
                CustomCommand::new_static(command, ClusterHash::FirstKey, false),
                values,
            )
            .await?;
        Ok(())
    }

    async fn del(&self, id: &SessionId) -> anyhow::Result<()> {
        let _: i64 = self.storage.client().del(self.storage.key(id)).await?;
        Ok(())
    }
}

async fn try_run(
    addr: &str,
    random_values: usize,
    seed: u64,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    let config =
        session_config::RedisConfig::standalone(addr, &scenarios::unique_prefix("bad-values"))?
            .with_timeouts(
                session_config::redis::DEFAULT_CONNECT_TIMEOUT,
                Duration::from_secs(5),
            )?;
    let manager = scenarios::manager(&config).await?;
    let planter = Planter {
        storage: RedisStorage::connect(&config).await?,
    };
    let mut rng = Rng::derive(seed, 7);
    let started = Instant::now();

    // Bystanders, which every case must leave readable.
    let mut bystanders = Vec::new();
    for _ in 0..16 {
        bystanders.push(manager.create().await?.id());
    }

    let good_id = rng.session_id();
    let bincode = Codec::Bincode.encode_session(&sample(good_id))?;
    let json = Codec::Json.encode_session(&sample(good_id))?;

    // (label, bytes, expectation); the bytes are stored under a fresh id,
    // so a decodable body under the wrong key is caught by the id check.
    let mut cases: Vec<(String, Vec<u8>, Expect)> = Vec::new();
    for index in 0..random_values {
        let len = rng.below(300) as usize;
        let mut bytes = rng.bytes(len);
        // Half of them behind a valid header: the body decoder's turn.
        if index % 2 == 1 && bytes.len() >= 4 {
            bytes[..2].copy_from_slice(&MAGIC);
            bytes[2] = FORMAT_VERSION;
            bytes[3] = if index % 4 == 1 {
                Codec::Bincode.id()
            } else {
                Codec::Json.id()
            };
        }
        cases.push((
            format!("random #{index} ({len} bytes)"),
            bytes,
            Expect::Codec,
        ));
    }
    for (codec, encoded) in [("bincode", &bincode), ("json", &json)] {
        for len in 0..encoded.len() {
            cases.push((
                format!(
                    "{codec} value truncated to {len} of {} bytes",
                    encoded.len()
                ),
                encoded[..len].to_vec(),
                Expect::Codec,
            ));
        }
        let mut trailing = encoded.clone();
        trailing.extend_from_slice(b"\0garbage");
        cases.push((
            format!("{codec} value with trailing bytes"),
            trailing,
            Expect::Codec,
        ));
    }
    // Versions 1 and 2 are both read: 1 here means a format 2 header that
    // claims format 1, whose body then starts at the wrong offset.
    for version in [0u8, 1, 3, 255] {
        let mut bytes = bincode.clone();
        bytes[2] = version;
        cases.push((format!("format version {version}"), bytes, Expect::Codec));
    }
    for codec in [0u8, 3, 255] {
        let mut bytes = bincode.clone();
        bytes[3] = codec;
        cases.push((format!("codec id {codec}"), bytes, Expect::Codec));
    }
    let mut swapped = bincode.clone();
    swapped[3] = Codec::Json.id();
    cases.push((
        "a bincode body under a JSON header".into(),
        swapped,
        Expect::Codec,
    ));
    let mut swapped = json.clone();
    swapped[3] = Codec::Bincode.id();
    cases.push((
        "a JSON body under a bincode header".into(),
        swapped,
        Expect::Codec,
    ));
    cases.push((
        "a headerless JSON session".into(),
        serde_json::to_vec(&sample(good_id))?,
        Expect::Codec,
    ));
    cases.push(("plain text".into(), b"hello".to_vec(), Expect::Codec));
    cases.push(("an empty string".into(), Vec::new(), Expect::Codec));

    let mut checked = 0usize;
    let mut failures: Vec<String> = Vec::new();
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();

    // Each planted value, through both read paths: a key this client never
    // touched (the load script) and one it just wrote (a plain GET within
    // the refresh window).
    for (label, bytes, expect) in &cases {
        for path in ["load script", "GET"] {
            let id = rng.session_id();
            if path == "GET" {
                manager
                    .create_from(Session::new(id, SessionType::Mcp))
                    .await?;
            }
            planter.set(&id, bytes).await?;
            let result = load_isolated(&manager, id).await;
            checked += 1;
            if let Some(problem) = judge(&result, *expect, &mut kinds) {
                failures.push(format!("{label} via {path}: {problem}"));
            }
        }
    }
    // A valid value of another session, under this id.
    {
        let id = rng.session_id();
        planter.set(&id, &bincode).await?;
        let result = load_isolated(&manager, id).await;
        checked += 1;
        if let Some(problem) = judge(&result, Expect::Codec, &mut kinds) {
            failures.push(format!("another session's value: {problem}"));
        }
    }
    // A value written by the other codec loads: rolling deploys.
    for codec in [Codec::Bincode, Codec::Json] {
        let id = rng.session_id();
        planter
            .set(&id, &codec.encode_session(&sample(id))?)
            .await?;
        let result = load_isolated(&manager, id).await;
        checked += 1;
        if let Some(problem) = judge(&result, Expect::Loads, &mut kinds) {
            failures.push(format!("a valid {codec} value: {problem}"));
        }
    }
    // Keys of other types under the prefix.
    let other_types: [(&str, &'static str, &[&str]); 5] = [
        ("hash", "HSET", &["field", "value"]),
        ("list", "RPUSH", &["a", "b"]),
        ("set", "SADD", &["member"]),
        ("sorted set", "ZADD", &["1", "member"]),
        ("stream", "XADD", &["*", "field", "value"]),
    ];
    for (label, command, args) in other_types {
        for path in ["load script", "GET"] {
            let id = rng.session_id();
            if path == "GET" {
                manager
                    .create_from(Session::new(id, SessionType::Mcp))
                    .await?;
                planter.del(&id).await?;
            }
            planter.custom(command, &id, args).await?;
            let result = load_isolated(&manager, id).await;
            checked += 1;
            if let Some(problem) = judge(&result, Expect::WrongType, &mut kinds) {
                failures.push(format!("a {label} via {path}: {problem}"));
            }
            // Writes over a key of another type: create must not claim it
            // (the key exists), delete removes it.
            match manager.create_with_id(id).await {
                Err(Error::AlreadyExists(_)) => {}
                other => failures.push(format!(
                    "create over a {label}: expected AlreadyExists, got {other:?}"
                )),
            }
            match manager.delete(&id).await {
                Ok(true) => {}
                other => failures.push(format!("delete of a {label}: {other:?}")),
            }
        }
    }
    // An unreadable value is replaced by update (write-if-present) and
    // removed by delete, without errors.
    {
        let id = rng.session_id();
        planter.set(&id, b"\xC5Sgarbage").await?;
        match manager.update(sample(id)).await {
            Ok(true) => {}
            other => failures.push(format!("update over garbage: {other:?}")),
        }
        match manager.get(&id).await {
            Ok(Some(session)) if session.id() == id => {}
            other => failures.push(format!("load after update over garbage: {other:?}")),
        }
        planter.set(&id, b"garbage").await?;
        match manager.delete(&id).await {
            Ok(true) => {}
            other => failures.push(format!("delete of garbage: {other:?}")),
        }
    }

    // Bystanders are unaffected; count still works with all that under
    // the prefix.
    let mut bystanders_missing = 0;
    for id in &bystanders {
        if !matches!(manager.get(id).await, Ok(Some(_))) {
            bystanders_missing += 1;
        }
    }
    let count = manager.count().await;

    outcome.figure(format!(
        "seed {seed}: {checked} planted values loaded ({} random, {} fixed cases, 2 read paths) in {}; outcomes {kinds:?}; wrong outcomes: {}; panics: {}; bystanders unreadable: {bystanders_missing}/{}",
        random_values,
        cases.len() - random_values,
        ms(started.elapsed()),
        failures.len(),
        failures.iter().filter(|f| f.contains("panicked")).count(),
        bystanders.len()
    ));
    outcome.check(
        failures.is_empty(),
        format!(
            "every bad value is a typed error and nothing panics: {} wrong, e.g. {:?}",
            failures.len(),
            failures.iter().take(5).collect::<Vec<_>>()
        ),
    );
    outcome.check(bystanders_missing == 0, "other sessions load as before");
    outcome.check(
        count.is_ok(),
        format!("count() works with bad values under the prefix: {count:?}"),
    );
    manager.close().await.ok();
    Ok(())
}

/// Loads `id` on a task of its own, so a panic is caught and reported.
async fn load_isolated(
    manager: &Manager,
    id: SessionId,
) -> Result<Result<Option<Arc<Session>>, Error>, String> {
    let manager = manager.clone();
    tokio::spawn(async move { manager.get(&id).await })
        .await
        .map_err(|join| format!("panicked: {join}"))
}

fn judge(
    result: &Result<Result<Option<Arc<Session>>, Error>, String>,
    expect: Expect,
    kinds: &mut std::collections::BTreeMap<String, usize>,
) -> Option<String> {
    let result = match result {
        Err(panic) => return Some(panic.clone()),
        Ok(result) => result,
    };
    let kind = match result {
        Ok(Some(_)) => "loaded".to_owned(),
        Ok(None) => "not found".to_owned(),
        Err(Error::Codec(error)) => format!("codec: {}", codec_kind(error)),
        Err(error) => crate::load::error_class(error).to_string(),
    };
    *kinds.entry(kind.clone()).or_default() += 1;
    let ok = match expect {
        Expect::Codec => matches!(result, Err(Error::Codec(_))),
        Expect::WrongType => matches!(
            result,
            Err(error) if error.backend_kind() == Some(BackendErrorKind::WrongType)
        ),
        Expect::Loads => matches!(result, Ok(Some(_))),
    };
    (!ok).then(|| format!("expected {expect:?}, got {result:?}"))
}

fn codec_kind(error: &session_core::CodecError) -> &'static str {
    use session_core::CodecError;
    match error {
        CodecError::Truncated { .. } => "truncated",
        CodecError::NotSessionFormat => "not-session-format",
        CodecError::UnsupportedVersion(_) => "unsupported-version",
        CodecError::UnknownCodec(_) => "unknown-codec",
        CodecError::Decode { .. } => "decode",
        CodecError::Encode { .. } => "encode",
        _ => "other",
    }
}
