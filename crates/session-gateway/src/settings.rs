//! The gateway's configuration file: the session settings of
//! `session-config` plus the gateway's own `[auth]`, `[limits]` and
//! `[streams]` tables, parsed once, at startup, into typed settings.
//!
//! ```toml
//! ttl = "30m"
//!
//! [redis]                      # session-config's table: Redis storage
//! addr = "127.0.0.1:6379"
//!
//! [auth]                       # without it: anonymous mode
//! mode = "jwt"
//! issuer = "https://idp.example.com"
//! audience = "session-gateway"
//! jwks_file = "/etc/session-gateway/jwks.json"
//!
//! [limits]
//! per_principal = 1000         # live sessions and handles of one principal
//!
//! [streams]                    # resumable SSE streams on Redis: see `streams`
//! confirm_replicas = 1
//! ```
//!
//! Errors are session-config's [`ConfigError`]: they name the file, the
//! field and the reason, never a secret.

use std::num::NonZeroUsize;
use std::path::Path;

use serde::Deserialize;
use session_factory::session_config::{FILE_LIMIT, read_file};
use session_factory::{ConfigError, SessionConfig, Ttl};

use crate::auth::{AuthFile, AuthSettings};
use crate::limits::{DEFAULT_PER_PRINCIPAL, Limits};
use crate::streams::{StreamSettings, StreamsFile};

/// Everything the configuration file says, parsed.
#[derive(Clone, Debug)]
pub struct GatewaySettings {
    /// The session settings (TTL, storage).
    pub session: SessionConfig,
    /// Who may call, and how callers are told apart.
    pub auth: AuthSettings,
    /// The caps on what one principal may hold.
    pub limits: Limits,
    /// Resumable streams' bounds (on Redis).
    pub streams: StreamSettings,
}

/// The tables of the file as written: the gateway's own, and the rest for
/// session-config.
#[derive(Deserialize)]
struct GatewayFile {
    auth: Option<AuthFile>,
    limits: Option<LimitsFile>,
    streams: Option<StreamsFile>,
    #[serde(flatten)]
    session: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    per_principal: Option<usize>,
}

impl GatewaySettings {
    /// The settings without a configuration file: local storage with `ttl`,
    /// anonymous mode, default limits.
    pub fn local(ttl: Ttl) -> Self {
        Self {
            session: SessionConfig::new(ttl),
            auth: AuthSettings::Anonymous,
            limits: Limits::default(),
            streams: StreamSettings::default(),
        }
    }

    /// Reads and parses a configuration file (at most 1 MiB); environment
    /// variables the file names (`hmac_secret_env`, `password_env`) are
    /// this process's.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let origin = path.display().to_string();
        let bytes = read_file(None, path, FILE_LIMIT)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| ConfigError::whole("the file is not UTF-8 text").in_origin(&origin))?;
        Self::from_toml(&text, &origin, |name| std::env::var(name).ok())
    }

    /// Parses TOML text; `origin` names it in errors, `env` looks up the
    /// environment variables the `[auth]` table names.
    pub fn from_toml(
        text: &str,
        origin: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let file: GatewayFile = toml::from_str(text)
            .map_err(|error| ConfigError::whole(error.message().to_owned()).in_origin(origin))?;
        // session-config parses its part as text of its own: the tables are
        // written back without the gateway's, so that its errors (and its
        // refusal of unknown fields) are what they are for any other user.
        let session_text = toml::to_string(&file.session)
            .map_err(|error| ConfigError::whole(error.to_string()).in_origin(origin))?;
        let session = SessionConfig::from_toml(&session_text, origin)?;
        let auth = match file.auth {
            None => AuthSettings::Anonymous,
            Some(auth) => auth.resolve(env).map_err(|error| error.in_origin(origin))?,
        };
        let limits = match file.limits {
            None => Limits::default(),
            Some(LimitsFile { per_principal }) => Limits::per_principal(match per_principal {
                None => DEFAULT_PER_PRINCIPAL,
                Some(limit) => NonZeroUsize::new(limit).ok_or_else(|| {
                    ConfigError::new("limits.per_principal", "must be at least 1").in_origin(origin)
                })?,
            }),
        };
        let streams = file
            .streams
            .unwrap_or_default()
            .resolve()
            .map_err(|error| error.in_origin(origin))?;
        Ok(Self {
            session,
            auth,
            limits,
            streams,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use super::*;

    fn parse(text: &str) -> Result<GatewaySettings, ConfigError> {
        GatewaySettings::from_toml(text, "gateway.toml", |name| {
            (name == "SECRET").then(|| "x".repeat(40))
        })
    }

    #[test]
    fn the_session_part_goes_to_session_config() {
        let settings = parse("ttl = \"5m\"\n").unwrap();
        assert_eq!(settings.session.ttl().get(), Duration::from_secs(300));
        assert!(matches!(settings.auth, AuthSettings::Anonymous));
        assert_eq!(settings.limits, Limits::default());
        let error = parse("ttl = \"5m\"\nbogus = 1\n").unwrap_err().to_string();
        assert!(
            error.contains("gateway.toml") && error.contains("bogus"),
            "{error}"
        );
        let error = parse("ttl = \"5m\"\n[redis]\naddr = \"nowhere\"\nkey_prefix = \"p:\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("redis.addr"), "{error}");
    }

    #[test]
    fn the_gateway_tables_are_read() {
        let settings = parse(
            "ttl = \"5m\"\n[auth]\nmode = \"jwt\"\nissuer = \"i\"\naudience = \"a\"\n\
             hmac_secret_env = \"SECRET\"\n[limits]\nper_principal = 7\n",
        )
        .unwrap();
        assert!(matches!(settings.auth, AuthSettings::Jwt(_)));
        assert_eq!(settings.limits.per_principal.get(), 7);
        let error = parse("ttl = \"5m\"\n[limits]\nper_principal = 0\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("limits.per_principal"), "{error}");
        let error = parse("ttl = \"5m\"\n[limits]\nsessions = 3\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("sessions"), "{error}");
        let settings =
            parse("ttl = \"5m\"\n[streams]\nconfirm_replicas = 1\nmax_tails = 3\n").unwrap();
        assert_eq!(settings.streams.limits.tails(), 3);
        assert!(settings.streams.limits.confirmation().is_some());
        let error = parse("ttl = \"5m\"\n[streams]\ntail_wait = \"0s\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("gateway.toml") && error.contains("streams.tail_wait"),
            "{error}"
        );
        let error = parse("ttl = \"5m\"\n[auth]\nmode = \"jwt\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("gateway.toml") && error.contains("auth.issuer"),
            "{error}"
        );
    }
}
