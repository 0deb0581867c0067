//! `cargo xtask bench [--quick]`: the benchmark suite, end to end.
//!
//! 1. builds the `session-bench` binary (crate `bench/`) in release mode;
//! 2. starts its own `redis-server` (session-testenv's fixture) on a free
//!    127.0.0.1 port, with persistence off, in a scratch directory;
//! 3. runs every section of `session-bench` (the session layers' included),
//!    each in a process of its own
//!    (the memory figures need a fresh process per store), and
//!    `redis-benchmark` against the same server;
//! 4. if the `session-gateway` crate builds, starts one replica on local
//!    storage and one on the Redis server and runs the gateway section
//!    against each;
//! 5. writes the report: `docs/benchmarks.md`, `docs/bench-redis.svg` and
//!    `docs/bench-local.svg`.
//!
//! `--quick` is a smoke run for CI (0.3 s per measurement, smaller data
//! sets, about a minute plus the build). Its figures mean nothing, so it
//! writes its report under `target/session-bench/report/` and leaves `docs/`
//! alone. The raw figures of either run stay in `target/session-bench/results/`.

use std::ffi::OsString;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use session_testenv::ports::free_port;
use session_testenv::process::output_with_timeout;
use session_testenv::{Guard, HOST, RedisProcess, ScratchDir};

use crate::tools::{self, Located};

/// Stores whose memory is measured, each in a process of its own.
const MEMORY_VARIANTS: [&str; 4] = ["dashmap", "ours", "moka", "tower-sessions-memory-store"];
/// Client counts of the redis-benchmark runs: the same as the Redis section.
const CLIENTS: [usize; 4] = [1, 16, 64, 256];
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs the suite; `quick` is the smoke run.
pub(crate) fn run(root: &Path, quick: bool) -> Result<()> {
    let started = Instant::now();
    let tools = tools::ensure(&[
        tools::REDIS_SERVER,
        tools::REDIS_CLI,
        tools::REDIS_BENCHMARK,
        tools::VALGRIND,
    ])?;
    let target = target_dir(root);
    let out = target.join("session-bench");
    let results = out.join("results");
    if results.exists() {
        fs::remove_dir_all(&results)?;
    }
    fs::create_dir_all(&results)?;
    let docs = if quick {
        out.join("report")
    } else {
        root.join("docs")
    };

    // One build for both binaries, so shared dependencies compile once; if
    // the gateway does not build, the benchmarks still run without it.
    let gateway_built = if root.join("crates/session-gateway/Cargo.toml").is_file() {
        let both = [
            "build",
            "--release",
            "-p",
            "session-bench",
            "-p",
            "session-gateway",
        ];
        match cargo(root, &both) {
            Ok(()) => Ok(()),
            Err(error) => {
                cargo(root, &["build", "--release", "-p", "session-bench"])?;
                Err(error.context("`session-gateway` does not build"))
            }
        }
    } else {
        cargo(root, &["build", "--release", "-p", "session-bench"])?;
        Err(anyhow::anyhow!(
            "the crate `session-gateway` does not exist yet"
        ))
    };
    let bench = Bench {
        exe: target.join("release").join("session-bench"),
        quick,
    };

    let scratch = ScratchDir::new("xtask-bench")?;
    // No persistence (the fixture's default): the benchmarks measure the
    // client and the server, not the disk.
    let redis = RedisProcess::builder(scratch.path(), "redis")
        .programs(&tools.programs())
        .start()?;
    // The load average before and after the measurements, for the report:
    // other work on the machine is what makes absolute figures move.
    let _ = fs::copy("/proc/loadavg", results.join("loadavg-start.txt"));
    let addr = redis.addr();
    println!(
        "redis-server ready on {addr} (pid {})",
        redis.pid().unwrap_or_default()
    );

    let file = |name: &str| results.join(name).into_os_string();
    bench.run(&[
        "redis".into(),
        "--addr".into(),
        addr.clone().into(),
        "--out".into(),
        file("redis.json"),
    ])?;
    redis_benchmark(&tools, &bench, redis.port(), &results)?;
    bench.run(&["local".into(), "--out".into(), file("local.json")])?;
    bench.run(&[
        "owned".into(),
        "--addr".into(),
        addr.clone().into(),
        "--out".into(),
        file("owned.json"),
    ])?;
    bench.run(&[
        "layer".into(),
        "--addr".into(),
        addr.clone().into(),
        "--out".into(),
        file("layer.json"),
    ])?;
    let count = if quick { "100000" } else { "1000000" };
    for variant in MEMORY_VARIANTS {
        bench.run(&[
            "memory".into(),
            "--variant".into(),
            variant.into(),
            "--count".into(),
            count.into(),
            "--out".into(),
            file(&format!("memory-{variant}.json")),
        ])?;
    }
    bench.run(&[
        "sweep".into(),
        "--count".into(),
        count.into(),
        "--live".into(),
        "10000".into(),
        "--out".into(),
        file("sweep.json"),
    ])?;
    bench.run(&["codec".into(), "--out".into(), file("codec.json")])?;
    let gateway_run =
        gateway_built.and_then(|()| gateway(&target, &bench, &addr, scratch.path(), &results));
    if let Err(reason) = gateway_run {
        let reason = format!("{reason:#}");
        println!("gateway section skipped: {reason}");
        fs::write(results.join("gateway-skipped.txt"), reason)?;
    }
    drop(redis);
    let _ = fs::copy("/proc/loadavg", results.join("loadavg-end.txt"));

    let command = format!("cargo xtask bench{}", if quick { " --quick" } else { "" });
    bench.run(&[
        "report".into(),
        "--results".into(),
        results.into_os_string(),
        "--docs".into(),
        docs.clone().into_os_string(),
        "--root".into(),
        root.into(),
        "--command".into(),
        command.into(),
        "--wall-secs".into(),
        started.elapsed().as_secs().to_string().into(),
    ])?;
    println!(
        "xtask bench: done in {:.1?}; report in {}",
        started.elapsed(),
        docs.display()
    );
    Ok(())
}

/// The target directory cargo builds into.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .or_else(|| std::env::var_os("CARGO_BUILD_TARGET_DIR"))
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                root.join(dir)
            }
        })
        .unwrap_or_else(|| root.join("target"))
}

/// Runs a cargo command in the workspace root and fails unless it succeeds.
fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    println!("$ cargo {}", args.join(" "));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Guard::spawn(Command::new(cargo).current_dir(root).args(args))?.wait()?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The built benchmark binary.
struct Bench {
    exe: PathBuf,
    quick: bool,
}

impl Bench {
    fn command(&self, args: &[OsString]) -> Command {
        let mut command = Command::new(&self.exe);
        command.args(args).stdin(Stdio::null());
        if self.quick {
            command.arg("--quick");
        }
        command
    }

    /// Runs one subcommand with its output shown, failing unless it succeeds.
    fn run(&self, args: &[OsString]) -> Result<()> {
        let shown: Vec<String> = args
            .iter()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        println!("$ session-bench {}", shown.join(" "));
        let status = Guard::spawn(&mut self.command(args))?.wait()?;
        if !status.success() {
            bail!("`session-bench {}` failed ({status})", shown.join(" "));
        }
        Ok(())
    }
}

/// `redis-benchmark -t get,set` at each client count, without and with
/// `-P 16`, with values the size of one of our stored sessions.
fn redis_benchmark(tools: &Located, bench: &Bench, port: u16, results: &Path) -> Result<()> {
    let size = output_with_timeout(
        &mut bench.command(&["value-size".into()]),
        None,
        Duration::from_secs(30),
    )?;
    let size = String::from_utf8_lossy(&size.stdout).trim().to_owned();
    size.parse::<usize>()
        .with_context(|| format!("session-bench value-size printed {size:?}"))?;
    let keyspace = if bench.quick { "5000" } else { "50000" };
    for pipeline in [1usize, 16] {
        for clients in CLIENTS {
            // About two seconds per test on this machine's server.
            let requests = match (pipeline, clients) {
                (1, 1) => 40_000,
                (1, _) => 200_000,
                (_, 1) => 400_000,
                _ => 2_000_000,
            } / if bench.quick { 10 } else { 1 };
            let args = [
                "-h".to_owned(),
                HOST.to_owned(),
                "-p".to_owned(),
                port.to_string(),
                "-t".to_owned(),
                "get,set".to_owned(),
                "-c".to_owned(),
                clients.to_string(),
                "-n".to_owned(),
                requests.to_string(),
                "-r".to_owned(),
                keyspace.to_owned(),
                "-d".to_owned(),
                size.clone(),
                "-P".to_owned(),
                pipeline.to_string(),
                "-q".to_owned(),
                "--csv".to_owned(),
            ];
            println!("$ redis-benchmark {}", args.join(" "));
            let output = output_with_timeout(
                Command::new(tools.path(tools::REDIS_BENCHMARK)).args(&args),
                None,
                Duration::from_secs(300),
            )?;
            if !output.status.success() {
                bail!(
                    "redis-benchmark failed ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            let csv = String::from_utf8_lossy(&output.stdout);
            print!("{csv}");
            fs::write(
                results.join(format!("redis-benchmark-c{clients}-p{pipeline}.csv")),
                csv.as_bytes(),
            )?;
        }
    }
    Ok(())
}

/// The gateway section: one replica on local storage, one on Redis. An
/// error here means the section is skipped, and the report says why.
fn gateway(
    target: &Path,
    bench: &Bench,
    redis_addr: &str,
    scratch: &Path,
    results: &Path,
) -> Result<()> {
    let exe = target.join("release").join("session-gateway");
    for storage in ["local", "redis"] {
        let config = scratch.join(format!("gateway-{storage}.toml"));
        let mut text = "ttl = \"30m\"\n".to_owned();
        if storage == "redis" {
            text.push_str(&format!(
                "\n[redis]\naddr = \"{redis_addr}\"\nkey_prefix = \"bench:gateway:\"\n"
            ));
        }
        fs::write(&config, text)?;
        let port = free_port()?;
        let listen = format!("{HOST}:{port}");
        let log = scratch.join(format!("gateway-{storage}.log"));
        let mut command = Command::new(&exe);
        command
            .arg("--config")
            .arg(&config)
            .args([
                "--listen",
                &listen,
                "--replica",
                &format!("bench-{storage}"),
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log)?)
            .stderr(fs::File::create(
                scratch.join(format!("gateway-{storage}.stderr")),
            )?);
        let mut guard = Guard::spawn(&mut command)?;
        let addr: SocketAddr = listen.parse()?;
        let deadline = Instant::now() + READY_TIMEOUT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = guard.try_wait()? {
                bail!(
                    "session-gateway ({storage}) exited with {status}: {}",
                    fs::read_to_string(scratch.join(format!("gateway-{storage}.stderr")))
                        .unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "session-gateway ({storage}) did not listen on {listen} in {READY_TIMEOUT:?}"
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        bench
            .run(&[
                "gateway".into(),
                "--url".into(),
                format!("http://{listen}/mcp").into(),
                "--storage".into(),
                storage.into(),
                "--out".into(),
                results
                    .join(format!("gateway-{storage}.json"))
                    .into_os_string(),
            ])
            .with_context(|| format!("the gateway run on {storage} storage failed"))?;
        drop(guard);
    }
    Ok(())
}
