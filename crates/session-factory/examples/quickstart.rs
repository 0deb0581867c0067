//! Builds a session manager from configuration (here: none, so local
//! storage), then creates, reads, updates and deletes sessions, printing what
//! happens.
//!
//! Run it with `cargo run -p session-factory --example quickstart`.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use session_factory::{Error, Owner, SessionConfig, SessionId, SessionType, Ttl, new_manager};

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

    // A read-modify-write: retried when another writer came first, so no
    // concurrent increment is lost; the stored revision says how many
    // writes the session has seen.
    let (stored, visits) = manager
        .modify(&session.id(), |session| {
            let visits = session
                .get_metadata("visits")
                .map_or(0, |visits| visits.parse().unwrap_or(0))
                + 1;
            session.set_metadata("visits", visits.to_string());
            Ok::<_, Error>(visits)
        })
        .await?
        .context("the session we just wrote")?;
    println!(
        "modified {}: visits = {visits}, revision = {}",
        stored.id(),
        stored.revision()
    );

    // Sessions of an authenticated principal: another principal, or none,
    // reads them as absent; their owner lists and revokes them together.
    let alice = Owner::new("https://issuer.example", "alice")?;
    let owned = manager.create_owned(alice.clone()).await?;
    let seen_by_nobody = manager.get_as(&owned.id(), None).await?;
    println!(
        "owned    {}: seen without a principal = {}, alice's sessions = {}",
        owned.id(),
        seen_by_nobody.is_some(),
        manager.list_owned(&alice).await?.len()
    );
    println!("revoked  {:?}", manager.revoke_owned(&alice).await?);

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
