//! The size of the storage's futures, which is CPU time per operation: the
//! manager boxes each call's future (moving all of it into the heap), and a
//! fred command future alone is several kilobytes. An operation's future
//! must hold one command future, not several side by side (a load once held
//! four, 27 KB, and the manager's boxing cost 17% of load throughput).
//! No Redis is needed: the futures are built, never polled.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use session_config::{ConnectMode, RedisConfig};
use session_core::{Session, SessionId, SessionType, Storage, Ttl};
use session_redis::RedisStorage;
use session_redis::fred::interfaces::KeysInterface;
use session_redis::fred::prelude::Value;

#[tokio::test]
async fn operation_futures_hold_one_command_future() {
    let config = RedisConfig::standalone("127.0.0.1:1", "size:")
        .unwrap()
        .with_connect(ConnectMode::Lazy);
    let storage = RedisStorage::connect(&config).await.unwrap();
    let id = SessionId::new();
    let expiry = Ttl::from_secs(60).unwrap();
    let command = std::mem::size_of_val(&storage.client().get::<Value, _>("k"));
    let session = Arc::new(Session::new(id, SessionType::Mcp));
    let sizes = [
        (
            "get",
            std::mem::size_of_val(&Storage::get(&storage, &id, expiry)),
        ),
        (
            "create",
            std::mem::size_of_val(&Storage::create(&storage, Arc::clone(&session), expiry)),
        ),
        (
            "update",
            std::mem::size_of_val(&Storage::update(&storage, Arc::clone(&session), expiry)),
        ),
        (
            "expire",
            std::mem::size_of_val(&Storage::expire(&storage, &id, expiry)),
        ),
        (
            "delete",
            std::mem::size_of_val(&Storage::delete(&storage, &id)),
        ),
    ];
    for (operation, size) in sizes {
        assert!(
            size * 4 <= command * 5,
            "{operation} future is {size} bytes, more than 1.25x one fred command future ({command} bytes)"
        );
    }
    storage.close().await.unwrap();
}
