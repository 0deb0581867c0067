//! The request's session: what the layer hands each request, and the
//! [`Session`] extractor through which a handler uses it.
//!
//! One [`Handle`] lives for one request. It remembers what the request
//! presented, the session as this request last saw it (read once, on first
//! use, and replaced by what each write stored), and what the response must
//! tell the client about its id. The state sits behind an async mutex, so
//! that clones of the extractor used from several tasks of one request
//! still read once and never interleave their writes.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use http::request::Parts;
use serde::Serialize;
use serde::de::DeserializeOwned;
use session_core::{AnyStorage, Conditional, Manager, Owner, SessionId, Storage};

use crate::SessionError;
use crate::limits::Limiter;
use crate::settings::{IdSource, Presented};

/// The session record of the core crate.
type Record = session_core::Session;

/// The principal the application authenticated for this request (from a
/// bearer token, say), put into the request's extensions by its own
/// middleware. With it, every read of the request is made on its behalf:
/// a session owned by anybody else reads as no session. Without it, the
/// session cookie is the credential, and the session's
/// [`owner`](Session::owner) tells the handler who the user is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticated(pub Owner);

/// The client's address, for the anonymous creation rate, when the
/// application knows it better than the connection does (from a trusted
/// proxy's header, say). Without it the layer takes axum's
/// `ConnectInfo<SocketAddr>`; a request with neither counts with every
/// other such request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

/// What the layer shares with every request.
pub(crate) struct Shared<S> {
    pub(crate) manager: Manager<S>,
    pub(crate) source: IdSource,
    pub(crate) limiter: Limiter,
}

/// What the response tells the client about its session id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CookieChange {
    /// Nothing.
    None,
    /// Its session id is now this one.
    Set(SessionId),
    /// It has no session (any more): drop the id.
    Clear,
}

struct State {
    presented: Presented,
    /// The session as this request knows it; `None` until it is read.
    current: Option<Option<Arc<Record>>>,
    change: CookieChange,
}

struct Inner<S> {
    shared: Arc<Shared<S>>,
    address: Option<IpAddr>,
    state: tokio::sync::Mutex<State>,
}

/// One request's session state, shared by the layer and the extractors.
pub(crate) struct Handle<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for Handle<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: Storage> Handle<S> {
    pub(crate) fn start(
        shared: Arc<Shared<S>>,
        presented: Presented,
        address: Option<IpAddr>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                shared,
                address,
                state: tokio::sync::Mutex::new(State {
                    presented,
                    current: None,
                    change: CookieChange::None,
                }),
            }),
        }
    }

    /// What the response must tell the client, once the handler is done.
    pub(crate) async fn finish(&self) -> CookieChange {
        let state = self.inner.state.lock().await;
        match state.change {
            CookieChange::None if state.presented == Presented::Invalid => CookieChange::Clear,
            CookieChange::None => match (&self.inner.shared.source, &state.current) {
                // A cookie with a Max-Age slides with the session: every
                // response that saw the session renews it.
                (IdSource::Cookie(cookie), Some(Some(record))) if cookie.has_max_age() => {
                    CookieChange::Set(record.id())
                }
                _ => CookieChange::None,
            },
            change => change,
        }
    }
}

/// The request's session, for a handler; see the [crate] documentation for
/// when the store is read and written.
///
/// Every method takes `&self`; the extractor may be cloned and used from
/// several tasks of one request. A method that writes may create the
/// session (lazily, with create semantics, within the
/// [`Limits`](crate::Limits)), and its response then carries the new id.
pub struct Session<S = AnyStorage> {
    handle: Handle<S>,
    principal: Option<Owner>,
}

impl<S> Clone for Session<S> {
    fn clone(&self) -> Self {
        Self {
            handle: self.handle.clone(),
            principal: self.principal.clone(),
        }
    }
}

impl<S: Storage, St: Send + Sync> FromRequestParts<St> for Session<S> {
    type Rejection = SessionError;

    async fn from_request_parts(parts: &mut Parts, _state: &St) -> Result<Self, SessionError> {
        let handle = parts
            .extensions
            .get::<Handle<S>>()
            .cloned()
            .ok_or(SessionError::MissingLayer)?;
        let principal = parts
            .extensions
            .get::<Authenticated>()
            .map(|authenticated| authenticated.0.clone());
        Ok(Self { handle, principal })
    }
}

/// How many fresh ids a lazy creation draws before it gives up.
const CREATE_ATTEMPTS: u32 = 3;

impl<S: Storage> Session<S> {
    fn manager(&self) -> &Manager<S> {
        &self.handle.inner.shared.manager
    }

    /// The session as this request knows it, read from the store on first
    /// use. A presented id that names no session (expired, ended, altered,
    /// never issued, or another owner's) is no session, and the response
    /// tells the client to drop it.
    async fn current(&self, state: &mut State) -> Result<Option<Arc<Record>>, SessionError> {
        if let Some(current) = &state.current {
            return Ok(current.clone());
        }
        let found = match state.presented {
            Presented::Id(id) => match &self.principal {
                Some(principal) => self.manager().get_as(&id, Some(principal)).await?,
                None => self.manager().get(&id).await?,
            },
            Presented::Nothing | Presented::Invalid => None,
        };
        if found.is_none() && state.presented != Presented::Nothing {
            state.change = CookieChange::Clear;
        }
        state.current = Some(found.clone());
        Ok(found)
    }

    /// The stored session record, if there is one.
    pub async fn record(&self) -> Result<Option<Arc<Record>>, SessionError> {
        let mut state = self.handle.inner.state.lock().await;
        self.current(&mut state).await
    }

    /// The session's id, if there is a session.
    pub async fn id(&self) -> Result<Option<SessionId>, SessionError> {
        Ok(self.record().await?.map(|record| record.id()))
    }

    /// Who the session belongs to: `None` without a session, or for an
    /// anonymous one.
    pub async fn owner(&self) -> Result<Option<Owner>, SessionError> {
        Ok(self
            .record()
            .await?
            .and_then(|record| record.owner().cloned()))
    }

    /// The session's data as a `T`; `None` without a session or data.
    pub async fn get<T: DeserializeOwned>(&self) -> Result<Option<T>, SessionError> {
        match self.record().await? {
            Some(record) => Ok(record.data()?),
            None => Ok(None),
        }
    }

    /// One metadata value of the session.
    pub async fn get_metadata(&self, key: &str) -> Result<Option<String>, SessionError> {
        Ok(self
            .record()
            .await?
            .and_then(|record| record.get_metadata(key).map(str::to_owned)))
    }

    /// Changes the session's data as one atomic read-modify-write, creating
    /// the session (with `T::default()`) if there is none, and returns what
    /// `change` returned. No concurrent write, on this replica or another,
    /// is lost: the write is conditional on the revision this request read,
    /// and on a conflict the session is read again and `change` runs again
    /// on the new value. So `change` may run more than once, and should
    /// only compute.
    pub async fn update<T, R>(&self, mut change: impl FnMut(&mut T) -> R) -> Result<R, SessionError>
    where
        T: Serialize + DeserializeOwned + Default,
    {
        self.write(|record| {
            let mut value: T = record.data()?.unwrap_or_default();
            let answer = change(&mut value);
            record.set_data(&value)?;
            Ok(answer)
        })
        .await
    }

    /// Replaces the session's data with `value`, creating the session if
    /// there is none.
    pub async fn insert<T: Serialize>(&self, value: &T) -> Result<(), SessionError> {
        self.write(|record| Ok(record.set_data(value)?)).await
    }

    /// Sets one metadata value, creating the session if there is none.
    pub async fn set_metadata(&self, key: &str, value: &str) -> Result<(), SessionError> {
        self.write(|record| {
            record.set_metadata(key, value);
            Ok(())
        })
        .await
    }

    /// The body of every write: a conditional write from the snapshot this
    /// request read (no second read), then the manager's read-modify-write
    /// on a conflict; a lazy creation when there is no session, or when it
    /// ended while the request ran.
    async fn write<R>(
        &self,
        mut change: impl FnMut(&mut Record) -> Result<R, SessionError>,
    ) -> Result<R, SessionError> {
        let mut state = self.handle.inner.state.lock().await;
        if let Some(record) = self.current(&mut state).await? {
            let mut edited = (*record).clone();
            let answer = change(&mut edited)?;
            match self.manager().update_if(edited, record.revision()).await? {
                Conditional::Written(stored) => {
                    state.current = Some(Some(stored));
                    return Ok(answer);
                }
                Conditional::Conflict(_) => {
                    let changed = self
                        .manager()
                        .modify_as(&record.id(), record.owner(), &mut change)
                        .await?;
                    if let Some((stored, answer)) = changed {
                        state.current = Some(Some(stored));
                        return Ok(answer);
                    }
                }
                Conditional::Absent => {}
            }
            // It ended meanwhile (a logout elsewhere, say): the request
            // goes on as a new visitor's.
            state.current = Some(None);
        }
        self.handle
            .inner
            .shared
            .limiter
            .allow_anonymous(self.handle.inner.address)?;
        let (stored, answer) = self.create(None, &mut change).await?;
        state.change = CookieChange::Set(stored.id());
        state.current = Some(Some(stored));
        Ok(answer)
    }

    /// A new session, owned by `owner` if given, filled in by `change` and
    /// stored in one write with create semantics.
    async fn create<R>(
        &self,
        owner: Option<Owner>,
        change: &mut impl FnMut(&mut Record) -> Result<R, SessionError>,
    ) -> Result<(Arc<Record>, R), SessionError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut record = self.manager().prepare(owner.clone())?;
            let answer = change(&mut record)?;
            match self.manager().create_from(record).await {
                Ok(stored) => return Ok((stored, answer)),
                // A fresh id is taken about never; draw another.
                Err(session_core::Error::AlreadyExists(_)) if attempt < CREATE_ATTEMPTS => {}
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Moves the session to a fresh id, keeping its data, owner and what is
    /// left of its lifetime ([`Manager::rotate_as`]); the response carries
    /// the new id, and the old one is worth nothing from now on. Call it
    /// whenever the user's privileges change. Returns whether there was a
    /// session to move.
    pub async fn rotate(&self) -> Result<bool, SessionError> {
        let mut state = self.handle.inner.state.lock().await;
        let Some(record) = self.current(&mut state).await? else {
            return Ok(false);
        };
        self.rotate_record(&mut state, &record, None).await
    }

    async fn rotate_record(
        &self,
        state: &mut State,
        record: &Record,
        owner: Option<Owner>,
    ) -> Result<bool, SessionError> {
        let rotated = self
            .manager()
            .rotate_as(&record.id(), record.owner(), owner)
            .await?;
        match rotated {
            Some(rotated) => {
                state.change = CookieChange::Set(rotated.id());
                state.current = Some(Some(rotated));
                Ok(true)
            }
            None => {
                state.change = CookieChange::Clear;
                state.current = Some(None);
                Ok(false)
            }
        }
    }

    /// Binds the session to `owner`, whom the application just
    /// authenticated: an anonymous session becomes `owner`'s under a fresh
    /// id, its data kept (a cart filled before the login survives it); a
    /// session of another owner is ended first; without a session, one is
    /// created for `owner`. Refused with [`SessionError::OwnerLimit`] when
    /// `owner` already holds as many sessions as the limits allow.
    pub async fn login(&self, owner: Owner) -> Result<(), SessionError> {
        let mut state = self.handle.inner.state.lock().await;
        let current = self.current(&mut state).await?;
        if let Some(record) = &current
            && record.owner() == Some(&owner)
        {
            // The same user again: a new id all the same, as after any
            // privilege change.
            self.rotate_record(&mut state, record, None).await?;
            return Ok(());
        }
        self.handle
            .inner
            .shared
            .limiter
            .allow_owner(self.manager(), &owner)
            .await?;
        if let Some(record) = current {
            if record.owner().is_none() {
                if self
                    .rotate_record(&mut state, &record, Some(owner.clone()))
                    .await?
                {
                    return Ok(());
                }
            } else {
                self.manager().delete(&record.id()).await?;
            }
        }
        let (stored, ()) = self.create(Some(owner), &mut |_| Ok(())).await?;
        state.change = CookieChange::Set(stored.id());
        state.current = Some(Some(stored));
        Ok(())
    }

    /// Ends the session: deleted from the store, and the client told to
    /// drop its id. Without a session it only does the telling.
    pub async fn logout(&self) -> Result<(), SessionError> {
        let mut state = self.handle.inner.state.lock().await;
        if let Some(record) = self.current(&mut state).await? {
            self.manager().delete(&record.id()).await?;
        }
        state.current = Some(None);
        state.change = CookieChange::Clear;
        Ok(())
    }

    /// Ends every session of this session's owner, on every replica ("log
    /// out everywhere"), this one included, and returns how many ended. An
    /// anonymous session has no others: it is ended alone.
    pub async fn logout_everywhere(&self) -> Result<usize, SessionError> {
        let mut state = self.handle.inner.state.lock().await;
        let ended = match self.current(&mut state).await? {
            Some(record) => match record.owner() {
                Some(owner) => self.manager().revoke_owned(owner).await?.len(),
                None => usize::from(self.manager().delete(&record.id()).await?),
            },
            None => 0,
        };
        state.current = Some(None);
        state.change = CookieChange::Clear;
        Ok(ended)
    }
}
