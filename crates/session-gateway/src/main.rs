//! `session-gateway`: an MCP streamable-HTTP server whose sessions are shared
//! by every replica through the session manager.
//!
//! ```text
//! session-gateway [--config <path>] [--listen <addr>] [--replica <name>]
//!                 [--allowed-host <host>]... [--allowed-origin <host>]...
//!                 [--local-idle <time>]
//! ```
//!
//! Every option falls back on an environment variable (`--help` names
//! them), for container platforms that configure by environment. Without
//! `--config` sessions are local (in-process) with a 30-minute TTL and every
//! caller is anonymous; with a configuration file they are where the file
//! says: a `[redis]` table means Redis, no such table local storage, an
//! `[auth]` table bearer JWTs, a `[limits]` table the caps per principal.
//! See `docs/deployment.md`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::serve::ListenerExt;
use clap::{CommandFactory, Parser};
use session_factory::session_redis::EventLog;
use session_factory::{SessionType, Ttl, new_manager};
use session_gateway::auth::AuthSettings;
use session_gateway::settings::GatewaySettings;
use session_gateway::streams::StreamSettings;
use session_gateway::{AllowedHosts, Gateway, GatewayOptions};
use tracing_subscriber::EnvFilter;

/// The default TTL without a configuration file.
const DEFAULT_TTL: Duration = Duration::from_secs(30 * 60);
/// How long a graceful shutdown waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// session-gateway: an MCP streamable-HTTP server with sessions shared by
/// every replica.
#[derive(Debug, Parser)]
#[command(
    name = "session-gateway",
    version,
    after_help = "\
Routes:
  /mcp      MCP streamable HTTP: sessions for protocol revisions 2025-03-26 to
            2025-11-25, stateless 2026-07-28 with handles
  /health   storage health as JSON (503 when the store is unreachable)
  /.well-known/oauth-protected-resource   protected resource metadata

Logging: RUST_LOG (default `info,rmcp::service=warn,rmcp::transport::streamable_http_server::session=warn`)."
)]
struct Args {
    /// Configuration (TOML). A [redis] table means Redis storage, none means
    /// local storage; an [auth] table bearer JWTs, none anonymous mode.
    /// Without this option: local storage with a 30-minute TTL, anonymous.
    #[arg(long, value_name = "path", env = "SESSION_GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(
        long,
        value_name = "addr",
        env = "SESSION_GATEWAY_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    listen: SocketAddr,
    /// This replica's name, reported by /health, the tools and the
    /// x-served-by header [default: gateway@<listen addr>].
    #[arg(long, value_name = "name", env = "SESSION_GATEWAY_REPLICA")]
    replica: Option<String>,
    /// A Host header value to accept (host or host:port); may be repeated
    /// (the environment variable takes a comma-separated list); `*` accepts
    /// any. Default: loopback names only (rmcp's protection against DNS
    /// rebinding).
    #[arg(
        long = "allowed-host",
        value_name = "host",
        env = "SESSION_GATEWAY_ALLOWED_HOSTS",
        value_delimiter = ',',
        value_parser = parse_host
    )]
    allowed_hosts: Vec<Host>,
    /// A host that a browser's Origin header may name (host or host:port,
    /// any scheme); may be repeated (the environment variable takes a
    /// comma-separated list); `*` accepts any. Default: the accepted Host
    /// values (same-origin pages only).
    #[arg(
        long = "allowed-origin",
        value_name = "host",
        env = "SESSION_GATEWAY_ALLOWED_ORIGINS",
        value_delimiter = ',',
        value_parser = parse_host
    )]
    allowed_origins: Vec<Host>,
    /// How long this replica keeps its in-memory copy of a session that gets
    /// no requests (the store keeps the session; a later request restores
    /// the copy).
    // The default is `DEFAULT_LOCAL_IDLE_TIMEOUT`, written as text for the
    // help; a test checks that the two agree.
    #[arg(
        long,
        value_name = "time",
        env = "SESSION_GATEWAY_LOCAL_IDLE",
        default_value = "60s",
        value_parser = parse_idle
    )]
    local_idle: Duration,
    /// Address to serve Prometheus metrics on (`GET /metrics`), apart from
    /// the public one so that it can stay off the balancer. Default: no
    /// metrics endpoint.
    #[arg(long, value_name = "addr", env = "SESSION_GATEWAY_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Export the spans (each request's, and the store's operations at
    /// debug level) over OTLP/HTTP to this collector, as in
    /// `http://127.0.0.1:4318` (`/v1/traces` is appended; plain HTTP, to a
    /// collector or agent next to the replica). Default: no export.
    #[arg(long, value_name = "url", env = "SESSION_GATEWAY_OTLP_ENDPOINT", value_parser = traces::parse_endpoint)]
    otlp_endpoint: Option<traces::Endpoint>,
}

/// One `--allowed-host` value.
#[derive(Clone, Debug, PartialEq)]
enum Host {
    /// `*`: any host.
    Any,
    /// A host name, with or without a port.
    Name(String),
}

fn parse_host(text: &str) -> Result<Host, String> {
    match text.trim() {
        "" => Err("a host must not be empty".into()),
        "*" => Ok(Host::Any),
        name => Ok(Host::Name(name.to_owned())),
    }
}

fn parse_idle(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .ok()
        .filter(|idle| !idle.is_zero())
        .ok_or_else(|| "not a positive duration like 60s or 5m".into())
}

impl Args {
    /// The `Host` values to accept: rmcp's loopback default without
    /// `--allowed-host`, any host for `*`, the names otherwise.
    fn allowed_hosts(&self) -> Result<AllowedHosts, clap::Error> {
        Ok(hosts_of(&self.allowed_hosts, "--allowed-host")?.unwrap_or(AllowedHosts::Loopback))
    }

    /// The hosts an Origin may name: `None` (the accepted Host values)
    /// without `--allowed-origin`, with the same rules as
    /// [`allowed_hosts`](Args::allowed_hosts) otherwise.
    fn allowed_origins(&self) -> Result<Option<AllowedHosts>, clap::Error> {
        hosts_of(&self.allowed_origins, "--allowed-origin")
    }
}

/// `values` of `flag` as a host list: `None` without values, any host for
/// `*`, the names otherwise.
///
/// `*` beside names is refused rather than read one way or the other:
/// either reading would ignore some of what the operator wrote.
fn hosts_of(values: &[Host], flag: &str) -> Result<Option<AllowedHosts>, clap::Error> {
    let mut names = Vec::new();
    let mut any = false;
    for host in values {
        match host {
            Host::Any => any = true,
            Host::Name(name) => names.push(name.clone()),
        }
    }
    match (any, names.is_empty()) {
        (false, true) => Ok(None),
        (true, true) => Ok(Some(AllowedHosts::Any)),
        (false, false) => Ok(Some(AllowedHosts::Only(names))),
        (true, false) => Err(Args::command().error(
            clap::error::ErrorKind::ArgumentConflict,
            format!("{flag} '*' accepts any host: it cannot stand beside host names"),
        )),
    }
}

mod metrics {
    //! The Prometheus endpoint: the recorder every metric of the process
    //! goes to, and `GET /metrics` on an address of its own.

    use std::net::SocketAddr;
    use std::sync::{Arc, OnceLock};
    use std::time::Duration;

    use anyhow::{Context, Result};
    use axum::Router;
    use axum::routing::get;
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    use session_factory::Manager;
    use session_factory::metrics::DURATION;
    use tokio_util::sync::CancellationToken;

    /// Bucket bounds of the operation latency histogram, in seconds: from a
    /// local read (microseconds) to a command timeout (seconds).
    const BUCKETS: [f64; 14] = [
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
        1.0, 5.0,
    ];
    /// How often histograms are folded for rendering.
    const UPKEEP: Duration = Duration::from_secs(5);

    /// The running endpoint.
    pub(crate) struct Endpoint {
        stop: CancellationToken,
        server: tokio::task::JoinHandle<()>,
        manager: Arc<OnceLock<Manager>>,
    }

    /// Installs the Prometheus recorder and serves it on `addr`.
    pub(crate) async fn serve(addr: SocketAddr) -> Result<Endpoint> {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(DURATION.to_owned()), &BUCKETS)
            .context("the metrics histogram buckets")?
            .install_recorder()
            .context("cannot install the metrics recorder")?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
        let listen = listener.local_addr().unwrap_or(addr);
        let stop = CancellationToken::new();
        let upkeep = handle.clone();
        let upkeep_stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(UPKEEP);
            loop {
                tokio::select! {
                    _ = tick.tick() => upkeep.run_upkeep(),
                    () = upkeep_stop.cancelled() => return,
                }
            }
        });
        // The manager is built after the recorder; once it is, each scrape
        // first pushes what it samples (live sessions, a cache's counters).
        let manager: Arc<OnceLock<Manager>> = Arc::new(OnceLock::new());
        let source = Arc::clone(&manager);
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                let source = Arc::clone(&source);
                async move {
                    if let Some(manager) = source.get() {
                        manager.record_metrics();
                    }
                    handle.render()
                }
            }),
        );
        let shutdown = stop.clone();
        let server = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "the metrics endpoint failed");
            }
        });
        tracing::info!(%listen, "metrics on GET /metrics");
        Ok(Endpoint {
            stop,
            server,
            manager,
        })
    }

    impl Endpoint {
        /// Samples `manager` before each scrape.
        pub(crate) fn watch(&self, manager: &Manager) {
            let _ = self.manager.set(manager.clone());
        }

        /// Stops serving.
        pub(crate) async fn stop(self) {
            self.stop.cancel();
            let _ = self.server.await;
        }
    }
}

fn main() -> ExitCode {
    // clap prints the help or the error itself and exits, with status 2 on
    // an error, as the hand-written parser did.
    let args = Args::parse();
    let allowed_hosts = args.allowed_hosts().unwrap_or_else(|error| error.exit());
    let allowed_origins = args.allowed_origins().unwrap_or_else(|error| error.exit());
    // Built before the runtime: the exporter's HTTP client blocks, on the
    // batch exporter's own thread.
    let replica = args
        .replica
        .clone()
        .unwrap_or_else(|| format!("gateway@{}", args.listen));
    let traces = match args
        .otlp_endpoint
        .as_ref()
        .map(|to| traces::export(to, &replica))
    {
        Some(Ok(traces)) => Some(traces),
        Some(Err(error)) => {
            eprintln!("session-gateway: cannot set up the OTLP exporter: {error:#}");
            return ExitCode::FAILURE;
        }
        None => None,
    };
    {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        tracing_subscriber::registry()
            .with(
                EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| EnvFilter::new(session_gateway::DEFAULT_LOG_FILTER)),
            )
            .with(tracing_subscriber::fmt::layer().with_ansi(std::io::stdout().is_terminal()))
            .with(traces.as_ref().map(traces::Traces::layer))
            .init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("session-gateway: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run(args, allowed_hosts, allowed_origins)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    };
    if let Some(traces) = traces {
        // Sends what the batch still holds.
        traces.shutdown();
    }
    code
}

/// Span export over OTLP (`--otlp-endpoint`).
mod traces {
    use anyhow::{Context, Result};
    use opentelemetry::KeyValue;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::SdkTracerProvider;

    /// A collector's base URL, checked: plain HTTP, no query.
    #[derive(Clone, Debug)]
    pub(super) struct Endpoint(String);

    pub(super) fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
        let uri: http::Uri = text
            .parse()
            .map_err(|error| format!("not a URL: {error}"))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(
                "give an http:// URL with a host (the exporter speaks plain HTTP, to a \
                 collector next to the replica)"
                    .into(),
            );
        }
        if uri.query().is_some() {
            return Err("the URL must not have a query".into());
        }
        Ok(Endpoint(text.trim_end_matches('/').to_owned()))
    }

    /// The tracer provider that batches and exports the spans.
    pub(super) struct Traces {
        provider: SdkTracerProvider,
    }

    /// Exports spans to `endpoint`, as `session-gateway` with `replica` as
    /// its instance id (OpenTelemetry's `service.instance.id`).
    pub(super) fn export(endpoint: &Endpoint, replica: &str) -> Result<Traces> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{}/v1/traces", endpoint.0))
            .build()
            .context("cannot build the OTLP span exporter")?;
        let resource = Resource::builder()
            .with_service_name("session-gateway")
            .with_attribute(KeyValue::new("service.instance.id", replica.to_owned()))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        Ok(Traces { provider })
    }

    impl Traces {
        /// The `tracing` layer that hands spans to the exporter.
        pub(super) fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + use<S>
        where
            S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
        {
            tracing_opentelemetry::layer().with_tracer(self.provider.tracer("session-gateway"))
        }

        /// Exports what is batched and stops.
        pub(super) fn shutdown(self) {
            if let Err(error) = self.provider.shutdown() {
                eprintln!("session-gateway: the OTLP exporter did not shut down cleanly: {error}");
            }
        }
    }
}

async fn run(
    args: Args,
    allowed_hosts: AllowedHosts,
    allowed_origins: Option<AllowedHosts>,
) -> Result<()> {
    let settings = match &args.config {
        Some(path) => GatewaySettings::load(path)?,
        None => GatewaySettings::local(Ttl::new(DEFAULT_TTL)?),
    };
    let config = &settings.session;
    // Before the manager: it registers its metrics when it is built.
    let metrics = match args.metrics_listen {
        Some(addr) => Some(metrics::serve(addr).await?),
        None => None,
    };
    let manager = new_manager(config, SessionType::Streamable)
        .await
        .context("cannot set up the session storage")?;
    if let Some(metrics) = &metrics {
        metrics.watch(&manager);
    }
    let storage = manager.describe().backend;
    if config.redis().is_none() && args.replica.is_some() {
        // A replica name says that several replicas run; on local storage
        // each knows only its own sessions and handles, so a balancer that
        // spreads one client's requests makes them fail at random.
        tracing::warn!(
            "a replica name is set but storage is local: replicas do not share sessions or \
             handles; add a [redis] table to the configuration to share them"
        );
    }
    if matches!(settings.auth, AuthSettings::Anonymous) {
        tracing::warn!(
            "anonymous mode: no [auth] table, so every caller is one principal and may use \
             every session and handle; the limits count per client address"
        );
    }
    let replica = args
        .replica
        .clone()
        .unwrap_or_else(|| format!("gateway@{}", args.listen));
    let mut options = GatewayOptions::default();
    options.allowed_hosts = allowed_hosts;
    options.allowed_origins = allowed_origins;
    options.local_idle_timeout = args.local_idle;
    options.auth = settings.auth.clone();
    options.limits = settings.limits;
    options.resume = settings.streams.resume;
    if let Some(redis) = config.redis() {
        // The events of SSE streams go where the sessions are, so that a
        // client resumes a broken stream on whichever replica it reaches.
        options.events = Some(
            EventLog::connect(redis, settings.streams.limits)
                .await
                .context("cannot set up the event log of resumable streams")?,
        );
    } else if settings.streams != StreamSettings::default() {
        tracing::warn!(
            "the [streams] table applies to Redis only: on local storage a stream's events \
             stay in this replica's memory, with rmcp's own bounds"
        );
    }
    let gateway = Gateway::with_options(manager.clone(), replica, options)?;

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let listen = listener.local_addr().unwrap_or(args.listen);
    tracing::info!(
        %listen,
        replica = gateway.replica(),
        storage,
        ttl = ?config.ttl().get(),
        max_lifetime = ?config.expiry().max_lifetime(),
        "session-gateway listening"
    );

    let stop = tokio_util::sync::CancellationToken::new();
    // Responses are small and written whole: without TCP_NODELAY, Nagle's
    // algorithm holds each one back until the client's delayed ACK, 40 ms
    // per request on a keep-alive connection.
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%error, "cannot set TCP_NODELAY");
        }
    });
    // The peer address is what anonymous mode's limits count by.
    let app = gateway
        .router()
        .into_make_service_with_connect_info::<SocketAddr>();
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(stop.clone().cancelled_owned())
        .into_future();
    let mut server = tokio::spawn(server);

    let served = tokio::select! {
        result = &mut server => Some(result),
        signal = shutdown_signal() => {
            tracing::info!(signal, "shutting down: no new connections");
            None
        }
    };
    let served = match served {
        Some(result) => result,
        None => {
            // Stop accepting, end rmcp's sessions and SSE streams (the
            // sessions stay in the store for the other replicas), and let
            // in-flight requests finish.
            stop.cancel();
            gateway.close_streams();
            match tokio::time::timeout(DRAIN_TIMEOUT, &mut server).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!(
                        "in-flight requests still running after {DRAIN_TIMEOUT:?}; stopping anyway"
                    );
                    server.abort();
                    Ok(Ok(()))
                }
            }
        }
    };
    if let Some(metrics) = metrics {
        metrics.stop().await;
    }
    let shutdown = manager.close().await;
    served
        .context("the server task failed")?
        .context("the server failed")?;
    shutdown.context("closing the session storage")?;
    tracing::info!("stopped");
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM and names the one that came.
async fn shutdown_signal() -> &'static str {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => "SIGINT",
        () = term => "SIGTERM",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use clap::error::ErrorKind;

    use super::*;

    // These tests parse argument lists only; the environment fall-backs are
    // tested on the binary (`tests/command_line.rs`), since setting this
    // process's environment would race the other tests.

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("session-gateway").chain(args.iter().copied()))
    }

    fn hosts(args: &[&str]) -> AllowedHosts {
        parse(args).unwrap().allowed_hosts().unwrap()
    }

    #[test]
    fn the_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(args.config, None);
        assert_eq!(args.replica, None);
        assert_eq!(args.allowed_hosts().unwrap(), AllowedHosts::Loopback);
        assert_eq!(args.local_idle, session_gateway::DEFAULT_LOCAL_IDLE_TIMEOUT);
    }

    #[test]
    fn every_flag_in_both_spellings() {
        let args = parse(&[
            "--config",
            "config/redis.toml",
            "--listen=0.0.0.0:9000",
            "--replica",
            "a",
            "--allowed-host",
            "mcp.example.com",
            "--allowed-host=localhost:8080",
            "--local-idle",
            "90s",
        ])
        .unwrap();
        assert_eq!(args.config, Some(PathBuf::from("config/redis.toml")));
        assert_eq!(args.listen, SocketAddr::from(([0, 0, 0, 0], 9000)));
        assert_eq!(args.replica.as_deref(), Some("a"));
        assert_eq!(
            args.allowed_hosts().unwrap(),
            AllowedHosts::Only(vec!["mcp.example.com".into(), "localhost:8080".into()])
        );
        assert_eq!(args.local_idle, Duration::from_secs(90));
        assert_eq!(
            parse(&["--local-idle=5m"]).unwrap().local_idle,
            Duration::from_secs(300)
        );
    }

    #[test]
    fn origins_default_to_the_hosts_and_follow_the_same_rules() {
        assert_eq!(parse(&[]).unwrap().allowed_origins().unwrap(), None);
        assert_eq!(
            parse(&["--allowed-origin", "chat.example.com,app.example.com:8443"])
                .unwrap()
                .allowed_origins()
                .unwrap(),
            Some(AllowedHosts::Only(vec![
                "chat.example.com".into(),
                "app.example.com:8443".into()
            ]))
        );
        assert_eq!(
            parse(&["--allowed-origin=*"])
                .unwrap()
                .allowed_origins()
                .unwrap(),
            Some(AllowedHosts::Any)
        );
        let error = parse(&["--allowed-origin", "*", "--allowed-origin", "a.example"])
            .unwrap()
            .allowed_origins()
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ArgumentConflict);
    }

    #[test]
    fn a_star_accepts_any_host_and_stands_alone() {
        assert_eq!(hosts(&["--allowed-host", "*"]), AllowedHosts::Any);
        assert_eq!(
            hosts(&["--allowed-host", "*", "--allowed-host=*"]),
            AllowedHosts::Any
        );
        // The environment variable's comma-separated form, on the command
        // line too.
        assert_eq!(
            hosts(&["--allowed-host", "a.example,b.example"]),
            AllowedHosts::Only(vec!["a.example".into(), "b.example".into()])
        );
        let error = parse(&["--allowed-host", "*", "--allowed-host", "a.example"])
            .unwrap()
            .allowed_hosts()
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ArgumentConflict);
    }

    #[test]
    fn help_and_errors() {
        for help in ["--help", "-h"] {
            let error = parse(&[help]).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::DisplayHelp);
        }
        let help = Args::command().render_long_help().to_string();
        for flag in [
            "--config <path>",
            "--listen <addr>",
            "--replica <name>",
            "--allowed-host <host>",
            "--local-idle <time>",
            "--allowed-origin <host>",
            "SESSION_GATEWAY_ALLOWED_ORIGINS",
            "SESSION_GATEWAY_CONFIG",
            "SESSION_GATEWAY_LISTEN",
            "SESSION_GATEWAY_REPLICA",
            "SESSION_GATEWAY_ALLOWED_HOSTS",
            "SESSION_GATEWAY_LOCAL_IDLE",
            "[default: 127.0.0.1:8080]",
            "[default: 60s]",
        ] {
            assert!(help.contains(flag), "{flag} is not in the help:\n{help}");
        }
        let cases: [(&[&str], ErrorKind); 6] = [
            (&["--verbose"], ErrorKind::UnknownArgument),
            (&["extra"], ErrorKind::UnknownArgument),
            (&["--listen"], ErrorKind::InvalidValue),
            (&["--listen", "nowhere"], ErrorKind::ValueValidation),
            (&["--local-idle", "0s"], ErrorKind::ValueValidation),
            (&["--local-idle", "soon"], ErrorKind::ValueValidation),
        ];
        for (bad, kind) in cases {
            let error = parse(bad).unwrap_err();
            assert_eq!(error.kind(), kind, "{bad:?}: {error}");
        }
        assert_eq!(
            parse(&["--allowed-host", ""]).unwrap_err().kind(),
            ErrorKind::ValueValidation
        );
    }
}
