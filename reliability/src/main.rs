//! `session-reliability`: runs the reliability and security scenarios and
//! prints one `PASS|FAIL <scenario>: <figure>` line each.
//!
//! ```text
//! session-reliability [--only <name>[,<name>...]] [--quick]
//! session-reliability soak --secs <N> [--gateway <session-gateway binary>]
//! session-reliability fuzz-seeds <dir>
//! ```
//!
//! Run it through `cargo xtask reliability` (which also starts the ACL and
//! TLS servers the secrets scenario needs, and fuzzes) or `cargo xtask soak`.
//! The scenarios that kill, stall or restart Redis start their own
//! redis-server processes; the others use `SESSION_TEST_REDIS`, or a server
//! of their own when it is not set. The races and bad stored values run a
//! second time on the plain Valkey server of `SESSION_TEST_VALKEY`, as
//! verdicts of their own (`race-create-valkey`, ...); without that variable
//! they are skipped on Valkey, or fail when `SESSION_TEST_REQUIRE_REDIS` is
//! set. The run's seed is printed;
//! `RELIABILITY_SEED=<seed>` replays the same schedules.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Result, bail};
use lexopt::prelude::*;
use session_reliability::scenarios::{
    bad_config, bad_values, cache_consistency, cluster_failover, conn_kill, down_at_start,
    failover, races, restart, secrets, soak, soak_gateway, stall, stream_events,
};
use session_reliability::{Outcome, capture, env, rng};
use session_testenv::{RedisProcess, contract, process};

const USAGE: &str = "\
usage: session-reliability [--only <name>[,<name>...]] [--quick]
       session-reliability soak --secs <N> [--gateway <session-gateway binary>]
       session-reliability fuzz-seeds <dir>

scenarios: connection-killed server-stalled server-restarted sentinel-failover
           cluster-failover redis-down-at-start races bad-stored-values
           secrets-redacted bad-configuration cache-consistency stream-events";

const ALL: &[&str] = &[
    "bad-configuration",
    "bad-stored-values",
    "secrets-redacted",
    "races",
    "redis-down-at-start",
    "connection-killed",
    "server-stalled",
    "server-restarted",
    "sentinel-failover",
    "cluster-failover",
    "cache-consistency",
    "stream-events",
];

#[derive(Debug, PartialEq, Eq)]
enum Command {
    Scenarios {
        only: Vec<String>,
        quick: bool,
    },
    Soak {
        secs: u64,
        gateway: Option<std::path::PathBuf>,
    },
    FuzzSeeds {
        dir: std::path::PathBuf,
    },
    Help,
}

/// Parses the command line: a subcommand (`soak`, `fuzz-seeds`) first, or
/// the scenario flags. Anything else is an error with the usage, so a typo
/// never runs a different set of scenarios than asked for.
fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Command> {
    let mut parser = lexopt::Parser::from_args(args);
    let mut only = Vec::new();
    let mut quick = false;
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Value(command) if command == "soak" && only.is_empty() && !quick => {
                return parse_soak(&mut parser);
            }
            Value(command) if command == "fuzz-seeds" && only.is_empty() && !quick => {
                let dir = match parser.next()? {
                    Some(Value(dir)) => dir.into(),
                    Some(Short('h') | Long("help")) => return Ok(Command::Help),
                    Some(other) => bail!("{}\n\n{USAGE}", other.unexpected()),
                    None => bail!("fuzz-seeds needs a directory\n\n{USAGE}"),
                };
                if let Some(extra) = parser.next()? {
                    bail!("{}\n\n{USAGE}", extra.unexpected());
                }
                return Ok(Command::FuzzSeeds { dir });
            }
            Long("quick") => quick = true,
            Long("only") => {
                for name in parser.value()?.string()?.split(',') {
                    if !ALL.contains(&name) {
                        bail!("unknown scenario {name:?}\n\n{USAGE}");
                    }
                    only.push(name.to_owned());
                }
            }
            other => bail!("{}\n\n{USAGE}", other.unexpected()),
        }
    }
    Ok(Command::Scenarios { only, quick })
}

/// The flags after `soak`.
fn parse_soak(parser: &mut lexopt::Parser) -> Result<Command> {
    let mut secs = 60;
    let mut gateway = None;
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Long("secs") => secs = parser.value()?.parse()?,
            Long("gateway") => gateway = Some(parser.value()?.into()),
            other => bail!("{} to `soak`\n\n{USAGE}", other.unexpected()),
        }
    }
    Ok(Command::Soak { secs, gateway })
}

fn main() -> ExitCode {
    let command = match parse(std::env::args_os().skip(1)) {
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::FuzzSeeds { dir }) => {
            return match fuzz_seeds(&dir) {
                Ok(count) => {
                    println!("wrote {count} seeds to {}", dir.display());
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("session-reliability: {error:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Ok(command) => command,
        Err(error) => {
            eprintln!("session-reliability: {error:#}");
            return ExitCode::from(2);
        }
    };
    // Servers started here must not outlive an interrupted run.
    if let Err(error) = process::install_interrupt_handler("session-reliability") {
        eprintln!("session-reliability: {error}");
    }
    // The capture subscriber is the process's only one; it records nothing
    // until the secrets scenario switches it on.
    if let Err(error) = capture::install() {
        eprintln!("session-reliability: {error:#}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("session-reliability: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match command {
            Command::Scenarios { only, quick } => run_scenarios(only, quick).await,
            Command::Soak { secs, gateway } => run_soak(secs, gateway).await,
            Command::Help | Command::FuzzSeeds { .. } => Ok(Vec::new()),
        }
    });
    match result {
        Ok(outcomes) if outcomes.iter().all(|o| o.passed) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("session-reliability: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn report(outcomes: &mut Vec<Outcome>, outcome: Outcome) {
    println!("{outcome}");
    outcomes.push(outcome);
}

async fn run_scenarios(only: Vec<String>, quick: bool) -> Result<Vec<Outcome>> {
    let seed = rng::run_seed();
    let started = Instant::now();
    println!("session-reliability: seed {seed} (RELIABILITY_SEED={seed} replays the schedules)");
    let scratch = env::scratch_dir("session-reliability")?;
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    // The plain server from the harness, or one of our own.
    let own_plain;
    let plain = match std::env::var(contract::REDIS) {
        Ok(addr) if !addr.is_empty() => addr,
        _ => {
            own_plain = RedisProcess::start(scratch.path(), "plain", &[])?;
            own_plain.addr()
        }
    };
    // Valkey's plain server, only from the harness: the reliability suite
    // finds no Valkey of its own, since xtask installs it off PATH.
    let valkey = std::env::var(contract::VALKEY)
        .ok()
        .filter(|addr| !addr.is_empty());
    let scale = |full: usize, small: usize| if quick { small } else { full };
    let mut outcomes = Vec::new();
    if wanted("bad-configuration") {
        report(&mut outcomes, bad_config::run().await);
    }
    if wanted("bad-stored-values") {
        report(
            &mut outcomes,
            bad_values::run(&plain, scale(2000, 200), seed).await,
        );
        on_valkey(
            &mut outcomes,
            valkey.as_deref(),
            bad_values::NAME,
            |addr| async move { bad_values::run(&addr, scale(2000, 200), seed).await },
        )
        .await;
    }
    if wanted("secrets-redacted") {
        let outcome = match env::SecureServers::from_env() {
            Some(servers) => secrets::run(&servers).await,
            None => Outcome::error(
                secrets::NAME,
                &anyhow::anyhow!(
                    "needs the ACL/TLS/mTLS servers of `cargo xtask reliability` (SESSION_TEST_REDIS_* variables)"
                ),
            ),
        };
        report(&mut outcomes, outcome);
    }
    if wanted("races") {
        report(
            &mut outcomes,
            races::create_race(&plain, scale(1000, 100), seed).await,
        );
        on_valkey(
            &mut outcomes,
            valkey.as_deref(),
            "race-create",
            |addr| async move { races::create_race(&addr, scale(1000, 100), seed).await },
        )
        .await;
        report(
            &mut outcomes,
            races::delete_update_race(races::Backend::Redis(&plain), scale(5000, 500), seed).await,
        );
        on_valkey(
            &mut outcomes,
            valkey.as_deref(),
            "race-delete-update",
            |addr| async move {
                races::delete_update_race(races::Backend::Redis(&addr), scale(5000, 500), seed)
                    .await
            },
        )
        .await;
        report(
            &mut outcomes,
            races::delete_update_race(races::Backend::Local, scale(20000, 2000), seed).await,
        );
        report(
            &mut outcomes,
            races::sweep_load_race(std::time::Duration::from_secs(scale(5, 2) as u64), seed).await,
        );
    }
    if wanted("redis-down-at-start") {
        report(&mut outcomes, down_at_start::run(scratch.path()).await);
    }
    if wanted("connection-killed") {
        report(&mut outcomes, conn_kill::run(scratch.path(), seed).await);
    }
    if wanted("server-stalled") {
        report(&mut outcomes, stall::run(scratch.path(), seed).await);
    }
    if wanted("server-restarted") {
        report(&mut outcomes, restart::run(scratch.path(), seed).await);
    }
    if wanted("stream-events") {
        let redis = session_testenv::Programs::redis();
        report(
            &mut outcomes,
            stream_events::run(scratch.path(), &redis).await,
        );
        report(
            &mut outcomes,
            stream_events::run_failover(scratch.path(), &redis).await,
        );
        if let (Ok(server), Ok(cli)) = (
            std::env::var(contract::VALKEY_SERVER_BIN),
            std::env::var(contract::VALKEY_CLI_BIN),
        ) {
            let valkey = session_testenv::Programs::new(server, cli);
            report(
                &mut outcomes,
                stream_events::run(scratch.path(), &valkey).await,
            );
            report(
                &mut outcomes,
                stream_events::run_failover(scratch.path(), &valkey).await,
            );
        }
    }
    if wanted("sentinel-failover") {
        report(&mut outcomes, failover::run(scratch.path(), seed).await);
        report(
            &mut outcomes,
            failover::run_cached(scratch.path(), seed).await,
        );
    }
    if wanted("cluster-failover") {
        report(
            &mut outcomes,
            cluster_failover::run(scratch.path(), seed).await,
        );
        report(
            &mut outcomes,
            cluster_failover::run_cached(scratch.path(), seed).await,
        );
    }
    if wanted("cache-consistency") {
        let mut servers = vec![session_testenv::Programs::redis()];
        match (
            std::env::var(contract::VALKEY_SERVER_BIN),
            std::env::var(contract::VALKEY_CLI_BIN),
        ) {
            (Ok(server), Ok(cli)) => servers.push(session_testenv::Programs::new(server, cli)),
            _ if contract::require_redis() => report(
                &mut outcomes,
                Outcome::error(
                    format!("{}-valkey", cache_consistency::NAME),
                    &anyhow::anyhow!("{} is not set", contract::VALKEY_SERVER_BIN),
                ),
            ),
            _ => println!(
                "SKIPPED: {} on Valkey: {} is not set (`cargo xtask reliability` sets it)",
                cache_consistency::NAME,
                contract::VALKEY_SERVER_BIN
            ),
        }
        for programs in servers {
            let valkey = programs.server.to_string_lossy().contains("valkey");
            for mode in [
                session_config::TrackingMode::Tracking,
                session_config::TrackingMode::Broadcast,
            ] {
                for fault in cache_consistency::Fault::ALL {
                    let spec = cache_consistency::Spec {
                        programs: programs.clone(),
                        mode,
                        fault,
                        duration: std::time::Duration::from_secs(scale(20, 5) as u64),
                        seed,
                    };
                    let outcome = cache_consistency::run(scratch.path(), &spec).await;
                    report(
                        &mut outcomes,
                        if valkey {
                            outcome.on_server("valkey")
                        } else {
                            outcome
                        },
                    );
                }
            }
        }
    }
    summary(&outcomes, started, seed);
    Ok(outcomes)
}

/// Runs a scenario once more against the plain Valkey server at `valkey`
/// and reports it under its Valkey name. Without a Valkey server the run is
/// a failure named `<name>-valkey` when servers are required, and one
/// `SKIPPED:` line otherwise.
async fn on_valkey<F, Fut>(outcomes: &mut Vec<Outcome>, valkey: Option<&str>, name: &str, run: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Outcome>,
{
    match valkey {
        Some(addr) => report(outcomes, run(addr.to_owned()).await.on_server("valkey")),
        None if contract::require_redis() => report(
            outcomes,
            Outcome::error(
                format!("{name}-valkey"),
                &anyhow::anyhow!(
                    "{} is not set, but {} is",
                    contract::VALKEY,
                    contract::REQUIRE_REDIS
                ),
            ),
        ),
        None => println!(
            "SKIPPED: {name} on Valkey: {} is not set (`cargo xtask reliability` sets it)",
            contract::VALKEY
        ),
    }
}

async fn run_soak(secs: u64, gateway: Option<std::path::PathBuf>) -> Result<Vec<Outcome>> {
    let seed = rng::run_seed();
    let started = Instant::now();
    println!("session-reliability soak: seed {seed}, {secs} s of faults");
    let scratch = env::scratch_dir("session-soak")?;
    let mut outcomes = Vec::new();
    match gateway {
        Some(gateway) => {
            report(
                &mut outcomes,
                soak_gateway::run(scratch.path(), secs, seed, &gateway).await,
            );
        }
        None => {
            println!("no gateway binary given: soaking the library directly");
            report(
                &mut outcomes,
                soak::run_library(scratch.path(), secs, seed).await,
            );
        }
    }
    summary(&outcomes, started, seed);
    Ok(outcomes)
}

fn summary(outcomes: &[Outcome], started: Instant, seed: u64) {
    println!();
    println!(
        "summary (seed {seed}, {:.1} s):",
        started.elapsed().as_secs_f64()
    );
    for outcome in outcomes {
        println!("{}", outcome.line());
    }
}

/// Writes valid stored values (both codecs; with metadata, user data and
/// neither) into `dir`: starting points for the `decode_session` fuzzer,
/// which would otherwise have to discover the bincode body layout by chance.
fn fuzz_seeds(dir: &std::path::Path) -> Result<usize> {
    use session_core::codec::Codec;
    use session_core::{Session, SessionId, SessionType};
    std::fs::create_dir_all(dir)?;
    let mut sessions = Vec::new();
    for kind in [SessionType::Mcp, SessionType::Sse, SessionType::Streamable] {
        sessions.push(Session::new(SessionId::new(), kind));
    }
    let mut rich = Session::new(SessionId::new(), SessionType::Streamable);
    rich.set_metadata("user", "alice");
    rich.set_metadata("unicode", "grüße ✓");
    rich.set_metadata("", "");
    rich.set_data(&serde_json::json!({"nested": [1, "two", null], "ok": true}))?;
    sessions.push(rich);
    let mut binary = Session::new(SessionId::new(), SessionType::Mcp);
    binary.set_data_with(Codec::Bincode, &vec![0u8, 1, 2, 255])?;
    sessions.push(binary);
    let mut count = 0;
    for (index, session) in sessions.iter().enumerate() {
        for codec in [Codec::Bincode, Codec::Json] {
            let bytes = codec.encode_session(session)?;
            std::fs::write(dir.join(format!("seed-{index}-{codec}")), bytes)?;
            count += 1;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_list(list: &[&str]) -> Result<Command> {
        parse(list.iter().map(std::ffi::OsString::from))
    }

    #[test]
    fn parses_every_command_and_flag() {
        assert_eq!(
            parse_list(&[]).ok(),
            Some(Command::Scenarios {
                only: vec![],
                quick: false
            })
        );
        assert_eq!(
            parse_list(&["--only", "races,secrets-redacted", "--quick"]).ok(),
            Some(Command::Scenarios {
                only: vec!["races".into(), "secrets-redacted".into()],
                quick: true
            })
        );
        assert_eq!(
            parse_list(&["soak", "--secs", "30", "--gateway", "target/gw"]).ok(),
            Some(Command::Soak {
                secs: 30,
                gateway: Some("target/gw".into())
            })
        );
        assert_eq!(
            parse_list(&["soak"]).ok(),
            Some(Command::Soak {
                secs: 60,
                gateway: None
            })
        );
        assert_eq!(
            parse_list(&["fuzz-seeds", "/tmp/seeds"]).ok(),
            Some(Command::FuzzSeeds {
                dir: "/tmp/seeds".into()
            })
        );
        assert_eq!(parse_list(&["--help"]).ok(), Some(Command::Help));
        assert_eq!(parse_list(&["soak", "-h"]).ok(), Some(Command::Help));
    }

    #[test]
    fn refuses_unknown_flags_scenarios_and_stray_arguments() {
        for bad in [
            &["--fast"][..],
            &["races"],
            &["--only", "no-such-scenario"],
            &["--only"],
            &["soak", "--secs"],
            &["soak", "--secs", "many"],
            &["soak", "--quick"],
            &["soak", "extra"],
            &["--quick", "soak"],
            &["fuzz-seeds"],
            &["fuzz-seeds", "a", "b"],
        ] {
            assert!(parse_list(bad).is_err(), "{bad:?} was accepted");
        }
        let error = parse_list(&["--fast"]).err().map(|error| error.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|text| text.starts_with("invalid option '--fast'")),
            "{error:?}"
        );
    }
}
