//! The example application (`examples/login`), served on 127.0.0.1 and
//! driven by a real HTTP client: lazy creation, the cookie's attributes,
//! rotation at login, logout, tampered and foreign cookies, the limits,
//! and "log out everywhere" across two replicas on Redis behind nginx.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../examples/login/app.rs"]
#[allow(dead_code)]
mod app;
mod common;

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use reqwest::StatusCode;
use session_axum::{Limits, Rate};
use session_factory::{SessionId, Ttl};

use common::{Client, local_manager, redis_manager, serve};

/// A visit writes nothing; the first press creates the session, and only
/// its response sets the cookie, with the safe attributes.
#[tokio::test]
async fn a_session_is_created_by_its_first_write_only() {
    let manager = local_manager();
    let server = serve(manager.clone(), Limits::default(), "a").await;
    let mut client = Client::new(server.url());
    for path in ["/", "/api/state", "/", "/health"] {
        let response = client.get(path).await;
        assert_eq!(response.status, StatusCode::OK, "{path}");
        assert!(response.set_cookie.is_none(), "{path} set a cookie");
    }
    assert_eq!(manager.count().await.unwrap(), 0, "a visit wrote nothing");

    let response = client.post("/count", &[]).await;
    assert_eq!(response.status, StatusCode::SEE_OTHER);
    let set = response
        .set_cookie
        .expect("the first write sets the cookie");
    let id = client.session_id().expect("a session id");
    assert_eq!(
        set,
        format!("session={id}; HttpOnly; SameSite=Lax; Secure; Path=/")
    );
    assert_eq!(manager.count().await.unwrap(), 1);
    let state = client.state().await;
    assert!(state.session);
    assert_eq!(state.count, 1);
    assert_eq!(state.user, None);
    // Later writes keep the id and set no cookie.
    let response = client.post("/count", &[]).await;
    assert!(response.set_cookie.is_none());
    assert_eq!(client.state().await.count, 2);
    assert_eq!(client.session_id(), Some(id));
}

/// A login moves the session to a fresh id owned by the user: the old id
/// is gone, the new one holds the count, and the creation time (so what is
/// left of the lifetime) is kept; so does an explicit rotation.
#[tokio::test]
async fn login_rotates_the_id_and_keeps_the_data_and_lifetime() {
    let manager = session_factory::Manager::builder(
        session_factory::LocalStorage::new(),
        Ttl::from_secs(600).unwrap(),
    )
    .max_lifetime(Some(Duration::from_secs(300)))
    .build()
    .unwrap();
    let server = serve(manager.clone(), Limits::default(), "a").await;
    let mut client = Client::new(server.url());
    client.post("/count", &[]).await;
    client.post("/count", &[]).await;
    let anonymous = client.session_id().unwrap();
    let before = manager.get(&anonymous).await.unwrap().unwrap();

    let response = client.login("alice").await;
    assert_eq!(response.status, StatusCode::SEE_OTHER);
    let owned = client.session_id().unwrap();
    assert_ne!(owned, anonymous);
    assert!(
        manager.get(&anonymous).await.unwrap().is_none(),
        "the old id is gone"
    );
    let after = manager.get(&owned).await.unwrap().unwrap();
    assert_eq!(after.created_at(), before.created_at());
    assert_eq!(after.owner().map(|owner| owner.subject()), Some("alice"));
    let state = client.state().await;
    assert_eq!(state.user.as_deref(), Some("alice"));
    assert_eq!(state.count, 2);

    // The old id, presented again, is no session; its cookie is cleared.
    let mut replay = Client::with_session(server.url(), anonymous);
    let response = replay.get("/api/state").await;
    assert!(!response.json::<app::PageState>().session);
    assert!(response.set_cookie.unwrap().contains("Max-Age=0"));

    client.post("/rotate", &[]).await;
    let rotated = client.session_id().unwrap();
    assert_ne!(rotated, owned);
    assert!(manager.get(&owned).await.unwrap().is_none());
    let again = manager.get(&rotated).await.unwrap().unwrap();
    assert_eq!(again.created_at(), before.created_at());
    assert_eq!(client.state().await.count, 2);
    // What is left of the lifetime, which here is shorter than the TTL
    // and so is the TTL the store sets: the same for the moved session as
    // for the original, at any moment.
    let now = std::time::SystemTime::now();
    let left = manager.expiry().ttl_for(&again, now).unwrap();
    assert_eq!(Some(left), manager.expiry().ttl_for(&before, now));
    assert!(left.get() < Duration::from_secs(300), "{left:?}");
}

/// Logout deletes the session and clears the cookie; the next visit has no
/// session, and writes create a new one.
#[tokio::test]
async fn logout_deletes_the_session_and_clears_the_cookie() {
    let manager = local_manager();
    let server = serve(manager.clone(), Limits::default(), "a").await;
    let mut client = Client::new(server.url());
    client.login("alice").await;
    let id = client.session_id().unwrap();
    let response = client.post("/logout", &[]).await;
    assert_eq!(response.status, StatusCode::SEE_OTHER);
    assert_eq!(
        response.set_cookie.unwrap(),
        "session=; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=0"
    );
    assert_eq!(client.session_id(), None);
    assert!(manager.get(&id).await.unwrap().is_none());
    assert_eq!(manager.count().await.unwrap(), 0);
    let state = client.state().await;
    assert!(!state.session && state.user.is_none());
}

/// A cookie that was altered, that names no session, or that another
/// deployment issued is answered as no session, and cleared; nothing is
/// created by reading.
#[tokio::test]
async fn tampered_and_foreign_cookies_are_no_session() {
    let manager = local_manager();
    let server = serve(manager.clone(), Limits::default(), "a").await;
    let other = serve(local_manager(), Limits::default(), "elsewhere").await;
    let mut elsewhere = Client::new(other.url());
    elsewhere.login("alice").await;
    let foreign = elsewhere.session_id().unwrap();

    let mut owner = Client::new(server.url());
    owner.login("alice").await;
    let genuine = owner.session_id().unwrap().to_string();
    // One hex digit changed: a well-formed id that was never issued.
    let last = genuine.chars().last().unwrap();
    let altered = format!(
        "{}{}",
        &genuine[..genuine.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    for value in [
        altered,
        foreign.to_string(),
        "not-a-session-id".to_owned(),
        format!("{genuine}x"),
        SessionId::new().to_string(),
    ] {
        let mut client = Client::with_cookie(server.url(), &value);
        let response = client.get("/api/state").await;
        assert_eq!(response.status, StatusCode::OK, "{value}");
        let state: app::PageState = response.json();
        assert!(!state.session && state.user.is_none(), "{value}");
        assert!(
            response
                .set_cookie
                .as_deref()
                .is_some_and(|set| set.contains("Max-Age=0")),
            "{value}: the cookie is cleared"
        );
    }
    assert_eq!(manager.count().await.unwrap(), 1, "reads created nothing");
    assert_eq!(owner.state().await.user.as_deref(), Some("alice"));
}

/// The cap per user refuses a login past it with 429; the anonymous rate
/// refuses a creation past it with 429 and `Retry-After`, and never
/// counts requests of an existing session.
#[tokio::test]
async fn the_limits_answer_429() {
    let limits = Limits::default()
        .per_owner(NonZeroUsize::new(2).unwrap())
        .anonymous_creations(
            Rate::per(NonZeroU32::new(3).unwrap(), Duration::from_secs(60)).unwrap(),
        );
    let manager = local_manager();
    let server = serve(manager.clone(), limits, "a").await;
    for _ in 0..2 {
        let mut client = Client::new(server.url());
        assert_eq!(client.login("alice").await.status, StatusCode::SEE_OTHER);
    }
    let mut third = Client::new(server.url());
    let refused = third.login("alice").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.body, "too many sessions for this user\n");
    assert!(refused.set_cookie.is_none());
    // Another user is not held back by alice's cap.
    assert_eq!(third.login("bob").await.status, StatusCode::SEE_OTHER);

    // Logins are not anonymous creations: the rate's three are still there.
    let mut anonymous = Vec::new();
    for _ in 0..3 {
        let mut client = Client::new(server.url());
        assert_eq!(
            client.post("/count", &[]).await.status,
            StatusCode::SEE_OTHER
        );
        anonymous.push(client);
    }
    let mut fourth = Client::new(server.url());
    let refused = fourth.post("/count", &[]).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused.retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    // The sessions that exist go on being used.
    for client in &mut anonymous {
        assert_eq!(
            client.post("/count", &[]).await.status,
            StatusCode::SEE_OTHER
        );
        assert_eq!(client.state().await.count, 2);
    }
    assert_eq!(manager.count().await.unwrap(), 3 + 3);
}

/// Two replicas on one Redis behind nginx, round robin: a user logged in
/// from two clients sees each write on either replica, and "log out
/// everywhere" from one client ends the other client's session too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_out_everywhere_across_two_replicas_behind_nginx() {
    let Some(redis) = session_testenv::var(session_testenv::contract::REDIS) else {
        return;
    };
    let Some(nginx) = session_testenv::var(session_testenv::contract::NGINX) else {
        return;
    };
    let prefix = format!("axum-e2e:{}:", uuid::Uuid::new_v4().simple());
    let a = serve(redis_manager(&redis, &prefix).await, Limits::default(), "a").await;
    let b = serve(redis_manager(&redis, &prefix).await, Limits::default(), "b").await;
    let balancer = common::Balancer::start(&nginx, &[a.port(), b.port()]).await;

    let mut laptop = Client::new(balancer.url());
    let mut phone = Client::new(balancer.url());
    assert_eq!(laptop.login("alice").await.status, StatusCode::SEE_OTHER);
    assert_eq!(phone.login("alice").await.status, StatusCode::SEE_OTHER);
    let mut replicas = std::collections::BTreeSet::new();
    for step in 1..=4 {
        laptop.post("/count", &[]).await;
        let state = laptop.state().await;
        assert_eq!(state.count, step);
        assert_eq!(state.user.as_deref(), Some("alice"));
        replicas.insert(state.replica);
        replicas.insert(phone.state().await.replica);
    }
    assert_eq!(replicas.len(), 2, "both replicas served: {replicas:?}");

    let response = laptop.post("/logout-everywhere", &[]).await;
    assert_eq!(response.status, StatusCode::SEE_OTHER);
    assert_eq!(laptop.session_id(), None);
    // The phone's session is gone on whichever replica it reaches.
    for _ in 0..4 {
        let state = phone.state().await;
        assert!(!state.session && state.user.is_none(), "{state:?}");
    }
}
