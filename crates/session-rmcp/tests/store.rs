//! The rmcp store over a local manager, under Tokio's paused clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rmcp::model::{ClientCapabilities, Implementation, InitializeRequestParams};
use rmcp::transport::streamable_http_server::session::store::{SessionState, SessionStore};
use session_core::{Error, Manager, SessionId, SessionType, Ttl};
use session_local::LocalStorage;
use session_rmcp::ManagerSessionStore;

const TTL: Duration = Duration::from_secs(60);

fn store() -> ManagerSessionStore {
    let manager = Manager::builder(LocalStorage::new(), Ttl::new(TTL).unwrap())
        .factory(SessionType::Streamable)
        .build()
        .unwrap();
    ManagerSessionStore::new(manager)
}

fn state(client: &str) -> SessionState {
    SessionState::new(InitializeRequestParams::new(
        ClientCapabilities::default(),
        Implementation::new(client, "1.0.0"),
    ))
}

#[tokio::test(start_paused = true)]
async fn state_round_trips_and_delete_removes_it() {
    let store = store();
    let id = SessionId::new().to_string();
    assert!(store.load(&id).await.unwrap().is_none());
    store.store(&id, &state("inspector")).await.unwrap();
    let loaded = store.load(&id).await.unwrap().expect("stored state");
    assert_eq!(loaded.initialize_params.client_info.name, "inspector");
    store.delete(&id).await.unwrap();
    assert!(store.load(&id).await.unwrap().is_none());
    store.delete(&id).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn storing_keeps_the_application_metadata() {
    let store = store();
    let id = SessionId::new();
    store.store(&id.to_string(), &state("first")).await.unwrap();
    let mut session = (*store.manager().get(&id).await.unwrap().unwrap()).clone();
    session.set_metadata("counter", "7");
    assert!(store.manager().update(session).await.unwrap());
    store
        .store(&id.to_string(), &state("second"))
        .await
        .unwrap();
    let session = store.manager().get(&id).await.unwrap().unwrap();
    assert_eq!(session.get_metadata("counter"), Some("7"));
    let loaded = store.load(&id.to_string()).await.unwrap().unwrap();
    assert_eq!(loaded.initialize_params.client_info.name, "second");
}

#[tokio::test(start_paused = true)]
async fn loads_slide_the_ttl_and_idle_sessions_expire() {
    let store = store();
    let id = SessionId::new().to_string();
    store.store(&id, &state("c")).await.unwrap();
    for _ in 0..4 {
        tokio::time::sleep(TTL * 3 / 5).await;
        assert!(store.load(&id).await.unwrap().is_some());
    }
    tokio::time::sleep(TTL + Duration::from_millis(1)).await;
    assert!(store.load(&id).await.unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn ids_that_are_not_uuids_are_typed_errors() {
    let store = store();
    for bad in ["", "session-1", "../etc"] {
        let error = store.load(bad).await.unwrap_err();
        let typed = error
            .downcast_ref::<Error>()
            .expect("a session_core::Error");
        assert!(
            matches!(typed, Error::InvalidInput(_)),
            "{bad:?}: {typed:?}"
        );
        assert!(store.store(bad, &state("c")).await.is_err());
        assert!(store.delete(bad).await.is_err());
    }
}

#[tokio::test(start_paused = true)]
async fn a_session_without_rmcp_state_is_unknown_to_rmcp() {
    let store = store();
    let session = store.manager().create().await.unwrap();
    assert!(
        store
            .load(&session.id().to_string())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(start_paused = true)]
async fn errors_of_a_closed_manager_reach_rmcp_typed() {
    let store = store();
    store.manager().close().await.unwrap();
    let error = store.load(&SessionId::new().to_string()).await.unwrap_err();
    assert!(matches!(error.downcast_ref::<Error>(), Some(Error::Closed)));
}
