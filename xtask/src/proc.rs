//! Child processes and scratch directories that must not outlive xtask.
//!
//! Every long-running child (Redis servers, the cargo step being run) is
//! spawned through [`Guard::spawn`], which records it in a process-wide
//! registry. The guard kills and reaps its child when dropped, which covers
//! normal returns, `?` early returns and panics. The registry exists for the
//! one exit path that skips destructors: a signal. The handler installed by
//! [`install_interrupt_handler`] kills and reaps every recorded child, removes
//! the recorded scratch directories (and nothing else), and exits with 130.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The exit code of a process stopped by SIGINT, which shells also use for
/// SIGTERM-style interruptions of scripts.
const INTERRUPTED_EXIT_CODE: i32 = 130;

/// How often a guarded child is polled while waiting for it. The wait polls
/// instead of blocking so that the registry lock is never held for long.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

static CHILDREN: Mutex<Option<HashMap<u64, Child>>> = Mutex::new(None);
static SCRATCH_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(0);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Locks a registry even if a panicking thread poisoned it: cleanup must still
/// run, and the registries hold no invariants a panic could break.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Installs the SIGINT/SIGTERM/SIGHUP handler that stops every recorded child.
pub(crate) fn install_interrupt_handler() -> Result<()> {
    ctrlc::set_handler(|| {
        INTERRUPTED.store(true, Ordering::SeqCst);
        eprintln!("\nxtask: interrupted, stopping child processes");
        let children = lock(&CHILDREN).take().unwrap_or_default();
        for (_, mut child) in children {
            // The child may already have died from the same terminal signal;
            // then kill fails harmlessly and wait just reaps it.
            let _ = child.kill();
            let _ = child.wait();
        }
        for dir in lock(&SCRATCH_DIRS).drain(..) {
            let _ = fs::remove_dir_all(dir);
        }
        std::process::exit(INTERRUPTED_EXIT_CODE);
    })
    .context("failed to install the Ctrl-C/SIGTERM handler")
}

/// Blocks until the signal handler, which is already running, exits the process.
///
/// Used when the main thread notices that an interruption is under way, so
/// that it does not report a confusing failure while the handler cleans up.
fn wait_for_interrupt_handler() -> ! {
    thread::sleep(Duration::from_secs(10));
    // The handler should have exited long ago; exit anyway so that a stuck
    // handler cannot hang CI.
    std::process::exit(INTERRUPTED_EXIT_CODE)
}

/// Owns one recorded child process; dropping it kills and reaps the child.
#[derive(Debug)]
pub(crate) struct Guard {
    id: u64,
    pid: u32,
}

impl Guard {
    /// Spawns `command` and records the child in the registry.
    pub(crate) fn spawn(command: &mut Command) -> Result<Guard> {
        // The lock is held across the spawn so that a signal arriving in
        // between cannot miss a child that exists but is not yet recorded.
        let mut registry = lock(&CHILDREN);
        if INTERRUPTED.load(Ordering::SeqCst) {
            drop(registry);
            wait_for_interrupt_handler();
        }
        let child = command
            .spawn()
            .with_context(|| format!("failed to start {:?}", command.get_program()))?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let pid = child.id();
        registry.get_or_insert_with(HashMap::new).insert(id, child);
        Ok(Guard { id, pid })
    }

    /// The operating-system process id of the child.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Returns the child's exit status if it has exited, without blocking.
    pub(crate) fn try_wait(&self) -> Result<Option<ExitStatus>> {
        let mut registry = lock(&CHILDREN);
        match registry
            .as_mut()
            .and_then(|children| children.get_mut(&self.id))
        {
            Some(child) => Ok(child.try_wait()?),
            None => {
                // Only the signal handler removes children behind a guard's back.
                drop(registry);
                wait_for_interrupt_handler()
            }
        }
    }

    /// Waits until the child exits and returns its status.
    pub(crate) fn wait(&self) -> Result<ExitStatus> {
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
}

impl Drop for Guard {
    fn drop(&mut self) {
        let child = lock(&CHILDREN)
            .as_mut()
            .and_then(|children| children.remove(&self.id));
        if let Some(mut child) = child {
            // The child may have exited on its own; kill then fails harmlessly
            // and wait reaps it, so no zombie is left behind either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A private scratch directory under the system temp dir, removed on drop and
/// by the signal handler.
#[derive(Debug)]
pub(crate) struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates a new, empty directory readable only by the current user, since
    /// it holds private keys and an ACL password.
    pub(crate) fn new(prefix: &str) -> Result<ScratchDir> {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", random_hex(8)?));
        // The registry entry is added first: a signal between the two steps then
        // removes a directory that may not exist yet, which is harmless.
        lock(&SCRATCH_DIRS).push(path.clone());
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("failed to create {}", path.display()))?;
        Ok(ScratchDir { path })
    }

    /// The directory's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        lock(&SCRATCH_DIRS).retain(|dir| dir != &self.path);
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Returns `bytes` random bytes from the kernel, hex encoded.
///
/// Reading /dev/urandom avoids a dependency on a random-number crate; xtask
/// only runs where Redis runs, which is Unix.
pub(crate) fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut buf))
        .context("failed to read /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Runs a short-lived command to completion with captured output, killing it
/// if it takes longer than `timeout`.
///
/// Used for health checks, where a hung client must turn into a clear error
/// instead of a hung CI job.
pub(crate) fn output_with_timeout(
    command: &mut Command,
    timeout: Duration,
) -> Result<std::process::Output> {
    use std::process::Stdio;
    use std::time::Instant;

    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let guard = Guard::spawn(command)?;
    let deadline = Instant::now() + timeout;
    while guard.try_wait()?.is_none() {
        if Instant::now() >= deadline {
            bail!(
                "{:?} did not finish within {timeout:?}",
                command.get_program()
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
    // The child has exited, so taking it out of the registry and collecting its
    // (small) output cannot block.
    let child = lock(&CHILDREN)
        .as_mut()
        .and_then(|children| children.remove(&guard.id));
    match child {
        Some(child) => Ok(child.wait_with_output()?),
        None => wait_for_interrupt_handler(),
    }
}
