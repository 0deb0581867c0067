//! Configuration files: the whole session setup in one TOML document.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::{
    DEFAULT_CLEANUP_TIMEOUT, DEFAULT_OPERATION_TIMEOUT, Error, Manager, RedisConfig, Result,
    Session, SessionId, Ttl,
};

/// Session settings as read from a configuration file.
///
/// No `[redis]` table means local storage; a `[redis]` table means Redis (or,
/// in a build without the `redis` feature, an error that says so). Switching
/// backends is therefore an edit of the file:
///
/// ```toml
/// ttl = "30m"
/// max_lifetime = "12h"          # optional
/// operation_timeout = "5s"      # optional, the default
///
/// [redis]                       # remove this table for local storage
/// addr = "127.0.0.1:6379"
/// key_prefix = "mcp:sessions:"
/// password_env = "SESSION_REDIS_PASSWORD"
/// ```
///
/// Unknown keys are errors, and every error names the key and the file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SessionConfig {
    /// The sliding TTL of a session (and its Redis key TTL).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// An absolute lifetime on top of the sliding TTL.
    #[serde(default, with = "humantime_serde")]
    pub max_lifetime: Option<Duration>,
    /// The timeout of each storage operation (default 5 s).
    #[serde(default = "default_operation_timeout", with = "humantime_serde")]
    pub operation_timeout: Duration,
    /// The timeout of each cleanup sweep (default 30 s).
    #[serde(default = "default_cleanup_timeout", with = "humantime_serde")]
    pub cleanup_timeout: Duration,
    /// How often expired local sessions are swept (default `ttl / 2`).
    #[serde(default, with = "humantime_serde")]
    pub cleanup_interval: Option<Duration>,
    /// Redis, or local storage when absent.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
}

fn default_operation_timeout() -> Duration {
    DEFAULT_OPERATION_TIMEOUT
}

fn default_cleanup_timeout() -> Duration {
    DEFAULT_CLEANUP_TIMEOUT
}

impl SessionConfig {
    /// Settings for local storage with the given TTL and every default.
    pub fn local(ttl: Duration) -> Self {
        Self {
            ttl,
            max_lifetime: None,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            cleanup_timeout: DEFAULT_CLEANUP_TIMEOUT,
            cleanup_interval: None,
            redis: None,
        }
    }

    /// Reads, parses and validates a configuration file, resolving
    /// `password_env` and `password_file`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let bytes =
            session_core::config::read_file("(file)", path, session_core::config::FILE_LIMIT)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::config("(file)", format!("{origin} is not UTF-8 text")))?;
        Self::from_toml(&text, &origin)
    }

    /// Parses and validates TOML text; `origin` names it in errors (a path).
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        let deserializer = toml::Deserializer::parse(text)
            .map_err(|error| Error::config("(syntax)", format!("{origin}: {}", error.message())))?;
        let mut config: Self = serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let message = error.inner().message().to_owned();
            let field = field_path(&error.path().to_string(), &message);
            Error::config(field, format!("{message} (in {origin})"))
        })?;
        if let Some(redis) = &mut config.redis {
            redis
                .resolve_secrets()
                .map_err(|error| in_file(error, origin))?;
        }
        config.validate().map_err(|error| in_file(error, origin))?;
        Ok(config)
    }

    /// Checks every setting without touching the network.
    pub fn validate(&self) -> Result<()> {
        Ttl::new(self.ttl).map_err(|error| Error::config("ttl", error.to_string()))?;
        self.manager_builder(Ttl::new(self.ttl)?).build()?;
        if let Some(redis) = &self.redis {
            redis.validate()?;
        }
        Ok(())
    }

    fn manager_builder(&self, ttl: Ttl) -> crate::ManagerBuilder {
        let mut builder = Manager::builder(ttl)
            .max_lifetime(self.max_lifetime)
            .operation_timeout(self.operation_timeout)
            .cleanup_timeout(self.cleanup_timeout);
        if let Some(interval) = self.cleanup_interval {
            builder = builder.cleanup_interval(interval);
        }
        builder
    }

    /// Builds the manager these settings describe: on Redis when there is a
    /// `[redis]` table, on local storage otherwise.
    pub async fn build_manager(
        &self,
        factory: impl Fn(SessionId) -> Session + Send + Sync + 'static,
    ) -> Result<Manager> {
        self.validate()?;
        let builder = self.manager_builder(Ttl::new(self.ttl)?).factory(factory);
        match &self.redis {
            None => builder.build(),
            Some(redis) => builder.storage(crate::redis_storage(redis).await?).build(),
        }
    }
}

/// The key an error is about. serde reports a missing key on the table that
/// lacks it (`.` for the top level), so the key's name is appended from the
/// message: a missing `ttl` is reported as `ttl`, not `.`.
fn field_path(path: &str, message: &str) -> String {
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    match (path, missing) {
        (".", Some(name)) => name.to_owned(),
        (table, Some(name)) => format!("{table}.{name}"),
        (path, None) => path.to_owned(),
    }
}

/// Adds the file name to a configuration error.
fn in_file(error: Error, origin: &str) -> Error {
    match error {
        Error::Config { field, reason } => Error::Config {
            field,
            reason: format!("{reason} (in {origin})"),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_and_reason(result: Result<SessionConfig>) -> (String, String) {
        match result {
            Err(Error::Config { field, reason }) => (field, reason),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn a_file_without_redis_means_local_storage() {
        let config = SessionConfig::from_toml("ttl = \"30m\"", "local.toml").unwrap();
        assert_eq!(config.ttl, Duration::from_secs(1800));
        assert_eq!(config.operation_timeout, DEFAULT_OPERATION_TIMEOUT);
        assert!(config.redis.is_none());
    }

    #[test]
    fn a_redis_table_is_read_whole() {
        let config = SessionConfig::from_toml(
            r#"
            ttl = "10m"
            max_lifetime = "1h"
            [redis]
            addr = "127.0.0.1:6379"
            key_prefix = "mcp:sessions:"
            codec = "json"
            connect = "lazy"
            [redis.tls]
            ca_cert = { file = "/etc/redis/ca.pem" }
            "#,
            "redis.toml",
        )
        .unwrap();
        let redis = config.redis.unwrap();
        assert_eq!(redis.codec, crate::Codec::Json);
        assert!(redis.tls.is_some());
        assert_eq!(config.max_lifetime, Some(Duration::from_secs(3600)));
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        let cases = [
            ("ttl = \"30m\"\nttl_seconds = 5", "ttl_seconds"),
            (
                "ttl = \"30m\"\n[redis]\naddr = \"h:1\"\nkey_prefix = \"s:\"\npasword = \"x\"",
                "redis.pasword",
            ),
            ("ttl = \"0s\"", "ttl"),
            ("ttl = \"-5s\"", "ttl"),
            (
                "ttl = \"30m\"\noperation_timeout = \"0s\"",
                "operation_timeout",
            ),
            (
                "ttl = \"30m\"\n[redis]\naddr = \"h:1\"\nkey_prefix = \"sessions\"",
                "redis.key_prefix",
            ),
            (
                "ttl = \"30m\"\n[redis]\naddr = \"h:1\"\nkey_prefix = \"s:\"\ncluster = true\ndb = 2",
                "redis.db",
            ),
            (
                "ttl = \"30m\"\n[redis]\naddr = \"h:1\"\nkey_prefix = \"s:\"\npassword_env = \"SESSION_TEST_SURELY_UNSET\"",
                "redis.password_env",
            ),
            ("ttl = \"30m\"\n[redis]\nkey_prefix = \"s:\"", "redis.addr"),
            ("max_lifetime = \"1h\"", "ttl"),
            ("ttl = \"30m\"\n[redis]\naddr = \"h:1\"", "redis.key_prefix"),
        ];
        for (text, field) in cases {
            let (got, reason) = field_and_reason(SessionConfig::from_toml(text, "conf/app.toml"));
            assert!(
                got.starts_with(field),
                "{text:?}: field {got:?}, expected {field:?} ({reason})"
            );
            assert!(reason.contains("conf/app.toml"), "{text:?}: {reason}");
        }
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let (field, reason) = field_and_reason(SessionConfig::from_toml("ttl = ", "broken.toml"));
        assert_eq!(field, "(syntax)");
        assert!(reason.contains("broken.toml"), "{reason}");
    }

    #[test]
    fn a_missing_file_is_a_config_error_naming_it() {
        let (_, reason) = field_and_reason(SessionConfig::load("/nonexistent/session.toml"));
        assert!(reason.contains("/nonexistent/session.toml"), "{reason}");
    }

    #[tokio::test]
    async fn build_manager_honours_the_settings() {
        let mut config = SessionConfig::local(Duration::from_secs(60));
        config.max_lifetime = Some(Duration::from_secs(600));
        let manager = config
            .build_manager(|id| Session::new(id, crate::SessionType::Sse))
            .await
            .unwrap();
        assert!(manager.is_local());
        assert_eq!(
            manager.expiry().max_lifetime(),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            manager.create().await.unwrap().session_type(),
            crate::SessionType::Sse
        );
    }
}
