//! The layer's settings and answers, on small routers of their own: the id
//! in a header, a cookie with a Max-Age that slides, reads on behalf of an
//! authenticated principal, one read per request, and the answers to a
//! missing layer and a failing store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, Request, StatusCode};
use axum::routing::{get, post};
use session_axum::{
    Authenticated, CookieSettings, IdSource, Limits, Session, SessionError, SessionLayer,
};
use session_factory::{AnyStorage, LocalStorage, Manager, Owner, SessionId, Storage, Ttl};
use tower::ServiceExt;

fn manager() -> Manager {
    Manager::builder(LocalStorage::new(), Ttl::from_secs(600).unwrap())
        .build()
        .unwrap()
}

async fn count<S: Storage>(session: Session<S>) -> Result<String, SessionError> {
    let count = session
        .update(|count: &mut u64| {
            *count += 1;
            *count
        })
        .await?;
    Ok(count.to_string())
}

async fn read<S: Storage>(session: Session<S>) -> Result<String, SessionError> {
    // Three reads in one request: the store is asked once.
    let first: Option<u64> = session.get().await?;
    let _ = session.id().await?;
    let _ = session.owner().await?;
    Ok(first.map_or_else(|| "none".to_owned(), |count| count.to_string()))
}

fn router(layer: SessionLayer) -> Router {
    Router::new()
        .route("/count", post(count::<AnyStorage>))
        .route("/read", get(read::<AnyStorage>))
        .layer(layer)
}

async fn call(
    router: &Router,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn the_id_can_travel_in_a_header() {
    let header = HeaderName::from_static("x-session-id");
    let layer = SessionLayer::with_settings(
        manager(),
        IdSource::Header(header.clone()),
        Limits::default(),
    );
    let router = router(layer);
    let (status, headers, body) = call(
        &router,
        Request::post("/count").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "1"));
    assert!(headers.get("set-cookie").is_none());
    let id = SessionId::parse(headers[&header].to_str().unwrap()).unwrap();
    let with_id = |path: &str, value: &str| {
        Request::post(path)
            .header(&header, value)
            .body(Body::empty())
            .unwrap()
    };
    let (_, headers, body) = call(&router, with_id("/count", &id.to_string())).await;
    assert_eq!(body, "2");
    assert!(headers.get(&header).is_none(), "no new id, no header");
    // An id that names nothing: no session, and an empty header says so.
    let (_, headers, body) = call(
        &router,
        Request::get("/read")
            .header(&header, SessionId::new().to_string())
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(body, "none");
    assert_eq!(headers[&header], "");
}

#[tokio::test]
async fn a_cookie_with_a_max_age_is_renewed_by_every_response_that_saw_the_session() {
    let cookie = CookieSettings::default().max_age(Duration::from_secs(900));
    let layer = SessionLayer::with_settings(manager(), IdSource::Cookie(cookie), Limits::default());
    let router = router(layer);
    let (_, headers, _) = call(
        &router,
        Request::post("/count").body(Body::empty()).unwrap(),
    )
    .await;
    let set = headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(set.ends_with("Max-Age=900"), "{set}");
    let value = set.split(';').next().unwrap().to_owned();
    let (_, headers, body) = call(
        &router,
        Request::get("/read")
            .header("cookie", &value)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(body, "1");
    assert_eq!(headers["set-cookie"].to_str().unwrap(), set, "renewed");
}

#[tokio::test]
async fn reads_are_made_on_behalf_of_the_authenticated_principal() {
    let manager = manager();
    let alice = Owner::new("https://issuer.test", "alice").unwrap();
    let bob = Owner::new("https://issuer.test", "bob").unwrap();
    let owned = manager.create_owned(alice.clone()).await.unwrap();
    let router = router(SessionLayer::new(manager.clone()));
    let as_principal = |owner: &Owner| {
        let mut request = Request::get("/read")
            .header("cookie", format!("session={}", owned.id()))
            .body(Body::empty())
            .unwrap();
        request
            .extensions_mut()
            .insert(Authenticated(owner.clone()));
        request
    };
    let (status, headers, body) = call(&router, as_principal(&bob)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "none"));
    assert!(
        headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0"),
        "another owner's session is no session"
    );
    assert_eq!(manager.foreign_reads(), 1);
    let (_, headers, body) = call(&router, as_principal(&alice)).await;
    assert_eq!(body, "none", "the session has no count yet");
    assert!(headers.get("set-cookie").is_none(), "the owner keeps it");
    assert!(manager.get(&owned.id()).await.unwrap().is_some());
}

/// A storage that counts the reads it serves.
struct Counting {
    inner: LocalStorage,
    reads: Arc<AtomicUsize>,
}

impl session_factory::Storage for Counting {
    fn create(
        &self,
        session: Arc<session_factory::Session>,
        ttl: Ttl,
    ) -> impl Future<Output = session_factory::Result<bool>> + Send {
        self.inner.create(session, ttl)
    }

    fn get(
        &self,
        id: &SessionId,
        ttl: Ttl,
    ) -> impl Future<Output = session_factory::Result<Option<Arc<session_factory::Session>>>> + Send
    {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.get(id, ttl)
    }

    fn update(
        &self,
        session: Arc<session_factory::Session>,
        ttl: Ttl,
    ) -> impl Future<Output = session_factory::Result<Option<Arc<session_factory::Session>>>> + Send
    {
        self.inner.update(session, ttl)
    }

    fn upsert(
        &self,
        session: Arc<session_factory::Session>,
        ttl: Ttl,
    ) -> impl Future<Output = session_factory::Result<Arc<session_factory::Session>>> + Send {
        self.inner.upsert(session, ttl)
    }

    fn update_if(
        &self,
        session: Arc<session_factory::Session>,
        expected: session_factory::Revision,
        ttl: Ttl,
    ) -> impl Future<Output = session_factory::Result<session_factory::Conditional>> + Send {
        self.inner.update_if(session, expected, ttl)
    }

    fn list_owned(
        &self,
        owner: &Owner,
    ) -> impl Future<Output = session_factory::Result<Vec<Arc<session_factory::Session>>>> + Send
    {
        self.inner.list_owned(owner)
    }

    fn revoke_owned(
        &self,
        owner: &Owner,
    ) -> impl Future<Output = session_factory::Result<Vec<SessionId>>> + Send {
        self.inner.revoke_owned(owner)
    }

    fn expire(
        &self,
        id: &SessionId,
        ttl: Ttl,
    ) -> impl Future<Output = session_factory::Result<bool>> + Send {
        self.inner.expire(id, ttl)
    }

    fn delete(&self, id: &SessionId) -> impl Future<Output = session_factory::Result<bool>> + Send {
        self.inner.delete(id)
    }

    fn delete_expired(
        &self,
        before: tokio::time::Instant,
    ) -> impl Future<Output = session_factory::Result<Vec<SessionId>>> + Send {
        self.inner.delete_expired(before)
    }

    fn count(&self) -> impl Future<Output = session_factory::Result<usize>> + Send {
        self.inner.count()
    }

    fn ping(&self) -> impl Future<Output = session_factory::Result<()>> + Send {
        self.inner.ping()
    }

    fn close(&self) -> impl Future<Output = session_factory::Result<()>> + Send {
        self.inner.close()
    }

    fn describe(&self) -> session_factory::Description {
        self.inner.describe()
    }
}

#[tokio::test]
async fn a_request_reads_the_store_once_and_writes_from_what_it_read() {
    let reads = Arc::new(AtomicUsize::new(0));
    let storage = Counting {
        inner: LocalStorage::new(),
        reads: Arc::clone(&reads),
    };
    let manager = Manager::typed_builder(storage, Ttl::from_secs(600).unwrap())
        .build()
        .unwrap();
    let router = Router::new()
        .route("/count", post(count::<Counting>))
        .route("/read", get(read::<Counting>))
        .route(
            "/nothing",
            get(|_session: Session<Counting>| async { "untouched" }),
        )
        .layer(SessionLayer::new(manager));
    let (_, headers, _) = call(
        &router,
        Request::post("/count").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(reads.load(Ordering::Relaxed), 0, "a creation reads nothing");
    let cookie = headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let with_cookie = |method: &str, path: &str| {
        Request::builder()
            .method(method)
            .uri(path)
            .header("cookie", &cookie)
            .body(Body::empty())
            .unwrap()
    };
    let (_, _, body) = call(&router, with_cookie("GET", "/read")).await;
    assert_eq!(body, "1");
    assert_eq!(
        reads.load(Ordering::Relaxed),
        1,
        "three reads, one store read"
    );
    let (_, _, body) = call(&router, with_cookie("POST", "/count")).await;
    assert_eq!(body, "2");
    assert_eq!(
        reads.load(Ordering::Relaxed),
        2,
        "the update wrote from its read"
    );
    let (_, headers, _) = call(&router, with_cookie("GET", "/nothing")).await;
    assert_eq!(
        reads.load(Ordering::Relaxed),
        2,
        "an unused session costs nothing"
    );
    assert!(headers.get("set-cookie").is_none());
}

#[tokio::test]
async fn a_missing_layer_and_a_closed_store_are_answered_500() {
    let bare = Router::new().route("/count", post(count::<AnyStorage>));
    let (status, _, body) = call(&bare, Request::post("/count").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, "session layer missing\n");

    let manager = manager();
    let router = router(SessionLayer::new(manager.clone()));
    manager.close().await.unwrap();
    let (status, headers, body) = call(
        &router,
        Request::post("/count").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, "session store error\n");
    assert!(headers.get("set-cookie").is_none());
}
