//! Following a sentinel failover as soon as a sentinel announces it.
//!
//! fred finds the master through the sentinels when it connects, and again
//! only when that connection drops. After a failover the old master keeps
//! its clients connected (and acknowledges their writes, which it discards
//! when it rejoins as a replica) until the sentinels reconfigure it, seconds
//! later: 11 s in the reliability suite's measurement. Every session written
//! in that window is acknowledged and then lost.
//!
//! Sentinels publish `+switch-master <name> <old-ip> <old-port> <new-ip>
//! <new-port>` on their own pub/sub the moment they promote a replica. So a
//! sentinel-mode storage (and event log) also subscribes to that channel on
//! every sentinel, each with its own small client, and on an announcement
//! for its master forces the data client to reconnect, which asks the
//! sentinels for the new master at once.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use fred::clients::SubscriberClient;
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::prelude::{Builder, Config, ServerConfig};
use fred::types::config::TlsConfig as FredTls;
use session_config::RedisConfig;
use session_core::{Error, Operation, Result};
use tokio::sync::broadcast::error::RecvError;

use crate::connect::{Role, sentinel_tls_name, server, tune};
use crate::errors::ErrorContext;

/// What a watch reconnects: the shared state of a storage or an event log.
pub(crate) trait Follower: Send + Sync + 'static {
    /// The data client to reconnect.
    fn client(&self) -> &fred::clients::Client;
    /// How its errors are mapped.
    fn errors(&self) -> &ErrorContext;
    /// Whether it is still open: the watch ends when it is closed.
    fn is_open(&self) -> bool;
}

/// The channel sentinels announce a promoted master on.
const SWITCH_MASTER: &str = "+switch-master";

/// One subscriber per sentinel, listening for `+switch-master`.
pub(crate) struct SentinelWatch {
    clients: Vec<SubscriberClient>,
    /// The pause before subscribing again after a failed attempt.
    retry: std::time::Duration,
}

impl SentinelWatch {
    /// Builds (without connecting) one subscriber per sentinel address, or
    /// nothing when `config` is not in sentinel mode. `tls` is the storage's
    /// one TLS setup, shared with its data client.
    pub(crate) fn build(config: &RedisConfig, tls: Option<&FredTls>) -> Result<Option<Self>> {
        let Some(sentinel) = config.sentinel_config() else {
            return Ok(None);
        };
        let tls_name = sentinel_tls_name(config);
        let auth = sentinel.auth();
        let mut clients = Vec::with_capacity(sentinel.addrs().len());
        for addr in sentinel.addrs() {
            let fred_config = Config {
                username: auth.and_then(|auth| auth.username.clone()),
                password: auth.map(|auth| auth.password.expose().to_owned()),
                server: ServerConfig::Centralized {
                    server: server(addr, tls_name),
                },
                tls: tls.cloned(),
                // A sentinel that is down must not fail the storage: the
                // others announce too, and this one is retried.
                fail_fast: false,
                ..Config::default()
            };
            let mut builder = Builder::from_config(fred_config);
            tune(&mut builder, config, Role::Watcher);
            let client = builder.build_subscriber_client().map_err(|error| {
                Error::config(
                    "redis.sentinel",
                    format!("cannot build the sentinel watcher: {}", error.details()),
                )
            })?;
            clients.push(client);
        }
        Ok(Some(Self {
            clients,
            retry: config
                .reconnect()
                .min_delay()
                .max(std::time::Duration::from_millis(10)),
        }))
    }

    /// Connects every subscriber in the background and reconnects the data
    /// client of `inner` when a sentinel announces a new master named
    /// `master_name`. The subscribers hold `inner` weakly.
    pub(crate) fn start<F: Follower>(&self, inner: Weak<F>, master_name: String) {
        // Several sentinels announce the same switch; the data client is
        // reconnected once per distinct announcement.
        let last = Arc::new(Mutex::new(String::new()));
        for client in &self.clients {
            let watcher_inner = inner.clone();
            let master_name = master_name.clone();
            let last = Arc::clone(&last);
            drop(client.on_message(move |message| {
                let inner = watcher_inner.clone();
                let master_name = master_name.clone();
                let last = Arc::clone(&last);
                async move {
                    if message.channel != SWITCH_MASTER {
                        return Ok(());
                    }
                    let Some(text) = message.value.as_string() else {
                        return Ok(());
                    };
                    let Some(new_master) = announced_master(&master_name, &text) else {
                        return Ok(());
                    };
                    {
                        let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
                        if *last == text {
                            return Ok(());
                        }
                        last.clone_from(&text);
                    }
                    let Some(inner) = inner.upgrade() else {
                        return Ok(());
                    };
                    tracing::info!(
                        master = %master_name,
                        %new_master,
                        "a sentinel announced a new master; reconnecting"
                    );
                    if let Err(error) = inner.client().force_reconnection().await {
                        let error = inner.errors().map(Operation::Connect, &error);
                        tracing::warn!(%error, "cannot reconnect after a failover");
                    }
                    Ok(())
                }
            }));
            drop(client.connect());
            tokio::spawn(subscribe_while_open(
                client.clone(),
                inner.clone(),
                self.retry,
            ));
        }
    }

    /// Closes every subscriber.
    pub(crate) async fn quit(&self) {
        for client in &self.clients {
            let _ = client.quit().await;
        }
    }

    /// Closes every subscriber without waiting (for `Drop`).
    pub(crate) fn quit_in_background(&self) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        for client in &self.clients {
            let client = client.clone();
            tokio::spawn(async move {
                let _ = client.quit().await;
            });
        }
    }
}

/// The new master's `ip:port` if `text`, a `+switch-master` message
/// (`<name> <old-ip> <old-port> <new-ip> <new-port>`), announces a switch of
/// the master named `master_name`; `None` for another master or a message
/// of another shape.
fn announced_master(master_name: &str, text: &str) -> Option<String> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    match fields.as_slice() {
        [name, _, _, ip, port] if *name == master_name => Some(format!("{ip}:{port}")),
        _ => None,
    }
}

/// Subscribes `client` to [`SWITCH_MASTER`] on every (re)connection, until
/// the storage is closed or dropped.
///
/// fred's own `manage_subscriptions` restores only subscriptions that once
/// succeeded, so a sentinel that was down when the storage started would
/// never be listened to; this loop keeps trying instead.
async fn subscribe_while_open<F: Follower>(
    client: SubscriberClient,
    inner: Weak<F>,
    retry: std::time::Duration,
) {
    let mut reconnects = client.reconnect_rx();
    let open = || inner.upgrade().is_some_and(|inner| inner.is_open());
    while open() {
        match client.subscribe(SWITCH_MASTER).await {
            Ok(()) => match reconnects.recv().await {
                // Subscribed: wait for the connection to be replaced.
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                // The client quit.
                Err(RecvError::Closed) => return,
            },
            Err(error) => {
                tracing::debug!(error = %error.details(), "cannot subscribe to a sentinel yet");
                tokio::time::sleep(retry).await;
            }
        }
    }
    let _ = client.quit().await;
}

#[cfg(test)]
mod tests {
    use super::announced_master;

    #[test]
    fn only_a_well_formed_switch_of_our_master_counts() {
        assert_eq!(
            announced_master("mymaster", "mymaster 127.0.0.1 6379 127.0.0.1 6380"),
            Some("127.0.0.1:6380".to_owned())
        );
        assert_eq!(
            announced_master("mymaster", "other 127.0.0.1 6379 127.0.0.1 6380"),
            None
        );
        assert_eq!(
            announced_master("mymaster", "mymaster 127.0.0.1 6379"),
            None
        );
        assert_eq!(
            announced_master("mymaster", "mymaster 127.0.0.1 6379 127.0.0.1 6380 extra"),
            None
        );
        assert_eq!(announced_master("mymaster", ""), None);
    }
}
