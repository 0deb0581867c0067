//! Child processes and scratch directories that must not outlive the run.
//!
//! Every long-running child (a Redis server, a gateway replica, the cargo
//! step xtask runs) is spawned through [`Guard::spawn`]. The guard owns the
//! child and kills and reaps it when dropped, which covers normal returns,
//! `?` early returns and panics. Its pid is also recorded in a process-wide
//! registry, for the one exit path that skips destructors: a signal. The
//! handler installed by [`install_interrupt_handler`] kills and reaps every
//! recorded child, removes the recorded scratch directories (and nothing
//! else), and exits with 130.
//!
//! The registry holds pids, not the children themselves, so a guard can hand
//! out its child's pipes and wait on it without taking a lock. A pid leaves
//! the registry, under its lock, before the child is reaped, so the handler
//! never signals a pid that the kernel may already have given to another
//! process.

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::kill;
use nix::unistd::Pid;

/// The signals [`Guard::signal`] sends, e.g. `Signal::SIGTERM` for a
/// graceful stop.
pub use nix::sys::signal::Signal;

use crate::error::{Error, IoContext, Result};

/// The exit code of a process stopped by SIGINT, which shells also use for
/// SIGTERM-style interruptions of scripts.
pub const INTERRUPTED_EXIT_CODE: i32 = 130;

/// How often a guarded child is polled while waiting for it.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

static PIDS: Mutex<Option<HashSet<u32>>> = Mutex::new(None);
static SCRATCH_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Locks a registry even if a panicking thread poisoned it: cleanup must still
/// run, and the registries hold no invariants a panic could break.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Installs the SIGINT/SIGTERM/SIGHUP handler that stops every recorded
/// child, removes every recorded scratch directory and exits with 130.
///
/// `program` starts the one line the handler prints, e.g. `xtask`.
pub fn install_interrupt_handler(program: &'static str) -> Result<()> {
    ctrlc::set_handler(move || {
        INTERRUPTED.store(true, Ordering::SeqCst);
        eprintln!("\n{program}: interrupted, stopping child processes");
        kill_all();
        std::process::exit(INTERRUPTED_EXIT_CODE);
    })
    .map_err(|error| {
        Error::Setup(format!(
            "failed to install the Ctrl-C/SIGTERM handler: {error}"
        ))
    })
}

/// Kills and reaps every recorded child and removes every recorded scratch
/// directory: for a signal handler, where destructors do not run.
pub fn kill_all() {
    for pid in lock(&PIDS).take().unwrap_or_default() {
        let pid = Pid::from_raw(pid as i32);
        // A stopped (SIGSTOP) child is resumed first, so that it dies now
        // rather than whenever someone continues it. The child may already
        // have died from the same terminal signal; then both calls fail
        // harmlessly and waitpid just reaps it.
        let _ = kill(pid, Signal::SIGCONT);
        let _ = kill(pid, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    }
    for dir in lock(&SCRATCH_DIRS).drain(..) {
        let _ = fs::remove_dir_all(dir);
    }
}

/// Blocks until the signal handler, which is already running, exits the process.
///
/// Used when a thread notices that an interruption is under way, so that it
/// does not report a confusing failure while the handler cleans up.
fn wait_for_interrupt_handler() -> ! {
    thread::sleep(Duration::from_secs(10));
    // The handler should have exited long ago; exit anyway so that a stuck
    // handler cannot hang CI.
    std::process::exit(INTERRUPTED_EXIT_CODE)
}

/// Owns one child process; dropping it kills and reaps the child.
#[derive(Debug)]
pub struct Guard {
    child: Child,
    name: String,
    reaped: Option<ExitStatus>,
}

impl Guard {
    /// Spawns `command` and records the child for the signal handler.
    pub fn spawn(command: &mut Command) -> Result<Guard> {
        let name = command.get_program().to_string_lossy().into_owned();
        // The lock is held across the spawn so that a signal arriving in
        // between cannot miss a child that exists but is not yet recorded.
        let mut registry = lock(&PIDS);
        if INTERRUPTED.load(Ordering::SeqCst) {
            drop(registry);
            wait_for_interrupt_handler();
        }
        let child = command.spawn().io(|| format!("failed to start {name}"))?;
        registry.get_or_insert_with(HashSet::new).insert(child.id());
        Ok(Guard {
            child,
            name,
            reaped: None,
        })
    }

    /// The operating-system process id of the child.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child itself, e.g. to take its pipes.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Sends `signal` to the child, by the pid this guard spawned.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        if self.reaped.is_some() {
            return Err(Error::NotRunning(self.name.clone()));
        }
        kill(Pid::from_raw(self.pid() as i32), signal).map_err(|source| Error::Signal {
            name: self.name.clone(),
            pid: self.pid(),
            signal: signal.as_str().to_owned(),
            source,
        })
    }

    /// Returns the child's exit status if it has exited, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if let Some(status) = self.reaped {
            return Ok(Some(status));
        }
        // The pid is forgotten before the child is reaped; see the module docs.
        let mut registry = lock(&PIDS);
        if registry.is_none() && INTERRUPTED.load(Ordering::SeqCst) {
            // The signal handler has taken the registry and is reaping the
            // children itself.
            drop(registry);
            wait_for_interrupt_handler();
        }
        let status = self
            .child
            .try_wait()
            .io(|| format!("failed to wait for {}", self.name))?;
        if let Some(status) = status {
            if let Some(pids) = registry.as_mut() {
                pids.remove(&self.pid());
            }
            self.reaped = Some(status);
        }
        Ok(status)
    }

    /// Waits until the child exits and returns its status.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        loop {
            if let Some(status) = self.try_wait()? {
                if status.signal().is_some() {
                    // A child killed by a signal usually means the user pressed
                    // Ctrl-C, which the whole process group receives. Give our
                    // handler a moment to take over so the exit code is 130.
                    thread::sleep(Duration::from_millis(500));
                    if INTERRUPTED.load(Ordering::SeqCst) {
                        wait_for_interrupt_handler();
                    }
                }
                return Ok(status);
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Kills the child (`SIGCONT`, so that a stopped child dies now, then
    /// `SIGKILL`) and reaps it. Does nothing if it was reaped already.
    pub fn kill(&mut self) -> Result<()> {
        if self.reaped.is_some() {
            return Ok(());
        }
        let pid = self.pid();
        let mut registry = lock(&PIDS);
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
        // The child may have exited on its own; kill then fails harmlessly
        // and wait reaps it, so no zombie is left behind either way.
        let _ = self.child.kill();
        if let Some(pids) = registry.as_mut() {
            pids.remove(&pid);
        }
        drop(registry);
        let status = self
            .child
            .wait()
            .io(|| format!("failed to reap {} (pid {pid})", self.name))?;
        self.reaped = Some(status);
        Ok(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// A private scratch directory under the system temp dir, removed on drop
/// and by the signal handler.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    keep: bool,
}

impl ScratchDir {
    /// Creates a new, empty directory `$TMPDIR/<prefix>-<random>`, readable
    /// only by the current user, since it holds private keys and an ACL
    /// password.
    pub fn new(prefix: &str) -> Result<ScratchDir> {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", random_hex(8)?));
        // The registry entry is added first: a signal between the two steps then
        // removes a directory that may not exist yet, which is harmless.
        lock(&SCRATCH_DIRS).push(path.clone());
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .io(|| format!("failed to create {}", path.display()))?;
        Ok(ScratchDir { path, keep: false })
    }

    /// Keeps the directory after the run (for reading its logs), on drop and
    /// on a signal alike.
    pub fn keep(&mut self) {
        self.keep = true;
        lock(&SCRATCH_DIRS).retain(|dir| dir != &self.path);
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !self.keep {
            lock(&SCRATCH_DIRS).retain(|dir| dir != &self.path);
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Returns `bytes` random bytes from the kernel, hex encoded.
///
/// Reading /dev/urandom avoids a dependency on a random-number crate; the
/// fixture only runs where Redis runs, which is Unix.
pub fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut buf))
        .io(|| "failed to read /dev/urandom".to_owned())?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Runs a short-lived command to completion with captured output, feeding it
/// `input` on its standard input, and kills it if it takes longer than
/// `timeout`.
///
/// Used for health checks and setup commands, where a hung client must turn
/// into a clear error instead of a hung CI job. The pipes are served by
/// threads of their own, so a child that writes more than a pipe holds
/// cannot block on a full pipe while we wait for it to exit.
pub fn output_with_timeout(
    command: &mut Command,
    input: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output> {
    command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut guard = Guard::spawn(command)?;
    let child = guard.child_mut();
    let writer = child.stdin.take().zip(input).map(|(mut stdin, input)| {
        let input = input.to_vec();
        // Dropping stdin at the end of the thread tells the child that the
        // input is over.
        thread::spawn(move || stdin.write_all(&input))
    });
    let readers = [
        child
            .stdout
            .take()
            .map(|out| Box::new(out) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|err| Box::new(err) as Box<dyn Read + Send>),
    ]
    .map(|pipe| {
        pipe.map(|mut pipe| {
            thread::spawn(move || {
                let mut bytes = Vec::new();
                pipe.read_to_end(&mut bytes).map(|_| bytes)
            })
        })
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = guard.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            // Killing the child closes its pipes, which ends the threads.
            guard.kill()?;
            return Err(Error::Timeout {
                command: guard.name.clone(),
                timeout,
            });
        }
        thread::sleep(POLL_INTERVAL);
    };
    if let Some(writer) = writer {
        // A child that exits without reading all its input breaks the pipe;
        // its output, not the write error, says what went wrong.
        let _ = writer.join();
    }
    let [stdout, stderr] = readers.map(|reader| {
        reader
            .and_then(|handle| handle.join().ok())
            .and_then(std::result::Result::ok)
            .unwrap_or_default()
    });
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Resident set size of process `pid` in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
}

/// The last `lines` lines of a file, or why it cannot be read: for error
/// messages about a process that wrote it.
pub fn tail(path: &Path, lines: usize) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(error) => format!("<cannot read {}: {error}>", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_guard_kills_and_reaps_its_child() {
        let guard = Guard::spawn(Command::new("sleep").arg("30")).expect("spawn sleep");
        let pid = guard.pid();
        assert!(lock(&PIDS).as_ref().is_some_and(|pids| pids.contains(&pid)));
        drop(guard);
        assert!(!lock(&PIDS).as_ref().is_some_and(|pids| pids.contains(&pid)));
        // Reaped means gone: not even a zombie is left under that pid.
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn output_with_timeout_feeds_input_and_collects_large_output() {
        // More output than a pipe buffer holds (64 KiB on Linux), which
        // would hang a wait that does not read while the child runs.
        let input = "x".repeat(200_000);
        let output = output_with_timeout(
            &mut Command::new("cat"),
            Some(input.as_bytes()),
            Duration::from_secs(10),
        )
        .expect("run cat");
        assert!(output.status.success());
        assert_eq!(output.stdout.len(), input.len());
    }

    #[test]
    fn output_with_timeout_kills_a_command_that_hangs() {
        let started = Instant::now();
        let result = output_with_timeout(
            Command::new("sleep").arg("30"),
            None,
            Duration::from_millis(200),
        );
        assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_scratch_dir_is_private_and_removed_unless_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = ScratchDir::new("testenv-test").expect("create");
        let path = dir.path().to_owned();
        let mode = fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        drop(dir);
        assert!(!path.exists());

        let mut kept = ScratchDir::new("testenv-test").expect("create");
        kept.keep();
        let path = kept.path().to_owned();
        drop(kept);
        assert!(path.exists());
        fs::remove_dir_all(path).expect("clean up");
    }
}
