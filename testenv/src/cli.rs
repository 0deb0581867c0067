//! Talking to a test server: `redis-cli` with a timeout, and a raw `PING`.
//!
//! Setup and inspection go through the real command-line client, as a
//! person would type them, rather than through a client library: the
//! fixture then depends on no Redis client crate, and a failure can be
//! replayed by hand from the arguments it reports.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use crate::certs::TestCerts;
use crate::error::{Error, Result};
use crate::process::output_with_timeout;
use crate::{HOST, Programs};

/// How long any single redis-cli call may take; they are all local and small.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(10);

/// How `redis-cli` reaches one server: the program and its connection
/// arguments.
#[derive(Clone, Debug)]
pub struct Cli {
    program: PathBuf,
    args: Vec<OsString>,
}

impl Cli {
    /// A plain-text connection to `127.0.0.1:port`.
    pub fn new(programs: &Programs, port: u16) -> Cli {
        Cli {
            program: programs.cli.clone(),
            args: vec![
                "-h".into(),
                HOST.into(),
                "-p".into(),
                port.to_string().into(),
            ],
        }
    }

    /// A TLS connection verified against the test CA, presenting the client
    /// certificate when `client_cert` is set.
    pub fn tls(programs: &Programs, port: u16, certs: &TestCerts, client_cert: bool) -> Cli {
        let mut cli = Cli::new(programs, port);
        cli.args.push("--tls".into());
        cli.args.push("--cacert".into());
        cli.args.push(certs.ca_cert.clone().into());
        if client_cert {
            cli.args.push("--cert".into());
            cli.args.push(certs.client_cert.clone().into());
            cli.args.push("--key".into());
            cli.args.push(certs.client_key.clone().into());
        }
        cli
    }

    /// The same connection, authenticated as `user`.
    pub fn user(mut self, user: &str, password: &str) -> Cli {
        for arg in ["--user", user, "--pass", password, "--no-auth-warning"] {
            self.args.push(arg.into());
        }
        self
    }

    /// The command that runs `args` over this connection, for callers that
    /// need more than the trimmed standard output.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args).args(args);
        command
    }

    /// Runs one command; returns its trimmed standard output whatever the
    /// exit status, since redis-cli prints error replies there too and
    /// callers check the text.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let output = output_with_timeout(&mut self.command(args), None, CLI_TIMEOUT)?;
        Ok(stdout(&output))
    }

    /// Runs `input`, one command a line, through a single redis-cli process
    /// and returns its trimmed standard output, one reply a line. Hundreds of
    /// commands then cost one process instead of hundreds.
    pub fn pipe(&self, input: &str) -> Result<String> {
        let output =
            output_with_timeout(&mut self.command(&[]), Some(input.as_bytes()), CLI_TIMEOUT)?;
        Ok(stdout(&output))
    }

    /// Whether the server answers `PING` with `PONG`.
    pub fn ping(&self) -> Result<bool> {
        Ok(self.run(&["PING"])? == "PONG")
    }

    /// Runs a command that must reply `OK`.
    pub fn expect_ok(&self, args: &[&str]) -> Result<()> {
        let reply = self.run(args)?;
        if reply != "OK" {
            return Err(Error::Setup(format!(
                "`redis-cli {}` replied {reply:?}",
                args.join(" ")
            )));
        }
        Ok(())
    }

    /// [`run`](Self::run) on a blocking thread, so that a runtime serving
    /// load keeps its workers while redis-cli runs.
    #[cfg(feature = "tokio")]
    pub async fn run_async(&self, args: &[&str]) -> Result<String> {
        let cli = self.clone();
        let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli.run(&args)
        })
        .await?
    }

    /// [`pipe`](Self::pipe) on a blocking thread.
    #[cfg(feature = "tokio")]
    pub async fn pipe_async(&self, input: String) -> Result<String> {
        let cli = self.clone();
        tokio::task::spawn_blocking(move || cli.pipe(&input)).await?
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Whether a plain-text server on `port` answers `PING` within half a
/// second. A raw RESP exchange, without a redis-cli process, since startup
/// polls this every few milliseconds.
pub fn ping(port: u16) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(
            &(Ipv4Addr::LOCALHOST, port).into(),
            Duration::from_millis(500),
        )?;
        stream.set_read_timeout(Some(Duration::from_millis(500)))?;
        stream.write_all(b"*1\r\n$4\r\nPING\r\n")?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply)?;
        Ok(&reply == b"+PONG\r\n")
    };
    attempt().unwrap_or(false)
}

/// The value of `field` in an `INFO` or `CLUSTER INFO` reply (`field:value`
/// lines).
pub fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|line| line.trim().strip_prefix(field)?.strip_prefix(':'))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_are_found_by_exact_name() {
        let info =
            "# Replication\r\nrole:slave\r\nmaster_link_status:up\r\nmaster_link_status_x:down\r\n";
        assert_eq!(info_field(info, "role").as_deref(), Some("slave"));
        assert_eq!(
            info_field(info, "master_link_status").as_deref(),
            Some("up")
        );
        assert_eq!(info_field(info, "master"), None);
    }

    #[test]
    fn nothing_listening_is_no_pong() {
        let port = crate::ports::free_port().expect("a free port");
        assert!(!ping(port));
    }
}
