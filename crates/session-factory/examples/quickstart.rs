//! Builds a session manager from configuration (here: none, so local
//! storage), then creates, reads, updates and deletes sessions, printing what
//! happens.
//!
//! Run it with `cargo run -p session-factory --example quickstart`.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use session_factory::{Error, SessionConfig, SessionId, SessionType, Ttl, new_manager};

/// What an application might keep per session.
#[derive(Debug, Serialize, Deserialize)]
struct Cart {
    items: Vec<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    // No Redis settings select local storage; `.with_redis(RedisConfig)`,
    // or a `[redis]` table in a file read by `SessionConfig::load`, would
    // select Redis.
    let config = SessionConfig::new(Ttl::from_secs(30 * 60)?);
    let manager = new_manager(&config, SessionType::Streamable).await?;
    println!("manager ready: {manager:?}");

    let session = manager.create().await?;
    println!(
        "created  {} ({}, created at {:?})",
        session.id(),
        session.session_type(),
        session.created_at()
    );

    let mut edited = (*session).clone();
    edited.set_metadata("user", "alice");
    edited.set_data(&Cart {
        items: vec!["book".into(), "lamp".into()],
    })?;
    let written = manager.update(edited).await?;
    println!("updated  {}: written = {written}", session.id());

    let found = manager
        .get(&session.id())
        .await?
        .context("the session we just wrote")?;
    let cart: Option<Cart> = found.data()?;
    println!(
        "read     {}: user = {:?}, cart = {cart:?}",
        found.id(),
        found.get_metadata("user")
    );

    match manager.create_with_id(session.id()).await {
        Err(Error::AlreadyExists(id)) => println!("re-adding {id} is refused: it already exists"),
        other => anyhow::bail!("a duplicate add must be refused, got {other:?}"),
    }
    match SessionId::parse("not-a-uuid") {
        Err(error) => println!("parsing a bad id: {error}"),
        Ok(id) => anyhow::bail!("parsed {id}"),
    }

    println!("sessions: {}", manager.count().await?);
    let deleted = manager.delete(&session.id()).await?;
    println!("deleted  {}: existed = {deleted}", session.id());
    println!(
        "read     {}: {:?}",
        session.id(),
        manager.get(&session.id()).await?
    );
    println!("sessions: {}", manager.count().await?);

    manager.close().await?;
    match manager.get(&session.id()).await {
        Err(error) => println!("after close: {error}"),
        Ok(found) => anyhow::bail!("a closed manager answered {found:?}"),
    }
    Ok(())
}
