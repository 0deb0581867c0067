//! Sessions for any axum or tower service, on a session [`Manager`]: a
//! [`SessionLayer`] that finds the request's session id (a cookie, or a
//! header), and a [`Session`] extractor through which a handler reads and
//! changes that session.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Router, routing::post};
//! use session_axum::{Session, SessionError, SessionLayer};
//! use session_core::{Manager, SessionType, Ttl};
//! use session_local::LocalStorage;
//!
//! async fn count(session: Session) -> Result<String, SessionError> {
//!     // One atomic read-modify-write; the first call creates the session.
//!     let visits = session.update(|visits: &mut u64| { *visits += 1; *visits }).await?;
//!     Ok(format!("visit {visits}"))
//! }
//!
//! let manager = Manager::builder(LocalStorage::new(), Ttl::from_secs(1800)?).build()?;
//! let app: Router = Router::new()
//!     .route("/count", post(count))
//!     .layer(SessionLayer::new(manager));
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! What the store sees, and when:
//!
//! - **A read per request, at most.** The session is read the first time a
//!   handler asks for it, and kept for the rest of the request; a handler
//!   that never asks costs nothing. The read slides the session's TTL (the
//!   manager's refresh window spares the store a write on most reads), so a
//!   session that is only read stays alive.
//! - **Writes happen when the handler makes them**, through the manager's
//!   atomic operations: [`Session::update`] is a read-modify-write that
//!   loses no concurrent change, on this replica or another. Nothing is
//!   written when the response goes out, so a request that changed nothing
//!   writes nothing, and a write never resurrects a session another replica
//!   deleted.
//! - **Creation is lazy**: a request without a session gets one only when a
//!   handler writes to it, with create semantics (an id is never reused or
//!   overwritten). The cookie is set on that response.
//! - **Rotation** ([`Session::rotate`], [`Session::login`]) moves the
//!   session to a fresh id, keeping its data and what is left of its
//!   lifetime, so that an id seen before a privilege change is worthless
//!   after it. [`Session::logout`] deletes it and clears the cookie;
//!   [`Session::logout_everywhere`] ends every session of its owner.
//! - **Owners** come from the application: its authentication puts an
//!   [`Authenticated`] into the request's extensions, and every read of the
//!   request is then made on that principal's behalf. Another owner's
//!   session reads as no session, as does an id that was tampered with,
//!   expired or was never issued.
//! - **Limits** ([`Limits`]): a cap on the sessions one owner may hold, and
//!   a rate of anonymous session creations per client address. A request
//!   past either is answered `429 Too Many Requests` ([`SessionError`]).
//!
//! The cookie defaults are the safe ones: `HttpOnly`, `Secure`,
//! `SameSite=Lax`, `Path=/`, no `Domain`, no `Max-Age` (the store's TTL
//! bounds the session); see [`CookieSettings`].

#![deny(missing_docs)]

mod error;
mod handle;
mod limits;
mod settings;

pub use error::SessionError;
pub use handle::{Authenticated, ClientAddress, Session};
pub use limits::{Limits, Rate};
pub use settings::{CookieSettings, DEFAULT_COOKIE, IdSource};

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use http::{HeaderValue, Request, Response};
use session_core::{AnyStorage, Manager, SessionId, Storage};

use crate::handle::{CookieChange, Handle, Shared};
use crate::limits::Limiter;

/// The tower layer that gives each request its [`Session`]; cheap to clone.
pub struct SessionLayer<S = AnyStorage> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for SessionLayer<S> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: Storage> SessionLayer<S> {
    /// A layer over `manager`, with the session id in the default cookie
    /// and no limits.
    pub fn new(manager: Manager<S>) -> Self {
        Self::with_settings(manager, IdSource::default(), Limits::default())
    }

    /// A layer that finds the session id where `source` says, and enforces
    /// `limits`.
    pub fn with_settings(manager: Manager<S>, source: IdSource, limits: Limits) -> Self {
        Self {
            shared: Arc::new(Shared {
                manager,
                source,
                limiter: Limiter::new(limits),
            }),
        }
    }

    /// The manager the layer serves sessions from.
    pub fn manager(&self) -> &Manager<S> {
        &self.shared.manager
    }
}

impl<S, I> tower_layer::Layer<I> for SessionLayer<S> {
    type Service = SessionService<S, I>;

    fn layer(&self, inner: I) -> Self::Service {
        SessionService {
            shared: Arc::clone(&self.shared),
            inner,
        }
    }
}

/// The service of [`SessionLayer`].
pub struct SessionService<S, I> {
    shared: Arc<Shared<S>>,
    inner: I,
}

impl<S, I: Clone> Clone for SessionService<S, I> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            inner: self.inner.clone(),
        }
    }
}

impl<S, I, B, R> tower_service::Service<Request<B>> for SessionService<S, I>
where
    S: Storage,
    I: tower_service::Service<Request<B>, Response = Response<R>> + Send,
    I::Future: Send + 'static,
    B: Send + 'static,
    R: Send + 'static,
{
    type Response = Response<R>;
    type Error = I::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, I::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let presented = self.shared.source.find(request.headers());
        let address = request
            .extensions()
            .get::<ClientAddress>()
            .map(|address| address.0)
            .or_else(|| {
                request
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|info| info.0.ip())
            });
        let handle = Handle::start(Arc::clone(&self.shared), presented, address);
        request.extensions_mut().insert(handle.clone());
        let future = self.inner.call(request);
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let mut response = future.await?;
            match handle.finish().await {
                CookieChange::None => {}
                CookieChange::Set(id) => set(&shared.source, &mut response, Some(id)),
                CookieChange::Clear => set(&shared.source, &mut response, None),
            }
            Ok(response)
        })
    }
}

/// Tells the client its session id, or that it has none any more.
fn set<R>(source: &IdSource, response: &mut Response<R>, id: Option<SessionId>) {
    match source {
        IdSource::Cookie(cookie) => {
            if let Ok(value) = HeaderValue::try_from(cookie.set_cookie(id)) {
                response
                    .headers_mut()
                    .append(http::header::SET_COOKIE, value);
            }
        }
        IdSource::Header(name) => {
            // A header client learns a new id from the response, and that
            // the session ended from an empty value.
            let value = id.map_or_else(String::new, |id| id.to_string());
            if let Ok(value) = HeaderValue::try_from(value) {
                response.headers_mut().insert(name.clone(), value);
            }
        }
    }
}
