//! `Session`: one request's view of its client's session data, across every
//! container, inside the request's transaction.

use std::{fmt, sync::Arc};

use http::{HeaderMap, Method};
use keel_store::{ClientKey, SessionContainer, StoreError};
use keel_txn::{ThreadHandle, Transaction};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;

use crate::{
    ClientId, ClientIdManager, ContainerRegistry, SessionError, SessionPkgData,
    registry::same_container,
};

/// What the response must say about the cookie once the transaction commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CookieAction {
    /// Nothing.
    #[default]
    None,
    /// Send the (new or refreshed) client id.
    Set,
    /// Expire the cookie (the session was invalidated).
    Expire,
}

/// The per-request state shared by every handle of one request's session.
pub(crate) struct RequestState {
    /// The request's transaction; taken by the middleware at the end.
    pub(crate) tx: Option<Transaction>,
    pub(crate) method: Method,
    /// The validly signed id the request arrived with.
    pub(crate) incoming: Option<ClientId>,
    /// The id in use: the incoming one, or one minted by this request.
    pub(crate) current: Option<ClientId>,
    /// Whether `current` is known to have a live session in some container.
    pub(crate) known_live: bool,
    pub(crate) cookie: CookieAction,
}

impl RequestState {
    /// The key of the id in use (it travels with the id).
    pub(crate) fn current_key(&self) -> Option<ClientKey> {
        self.current.as_ref().map(ClientId::key)
    }
}

/// The request-independent parts a session needs.
pub(crate) struct SessionContext {
    pub(crate) ids: Arc<dyn ClientIdManager>,
    pub(crate) containers: ContainerRegistry,
}

/// One request's session: per-package data of the request's client, read and
/// written inside the request's transaction.
///
/// Cheap to clone; clones share the request's state. Obtained from the tower
/// layer (request extension or axum extractor) or, outside HTTP, from
/// [`SessionManager::session_for`](crate::SessionManager::session_for).
///
/// - [`get`](Session::get) never creates anything: a client without session
///   data gets `None`, and no cookie.
/// - [`pkg`](Session::pkg) creates the session (minting a client id if the
///   request had none) and returns the package's data.
/// - Beyond zope.session: [`invalidate`](Session::invalidate),
///   [`cycle_id`](Session::cycle_id) and principals.
#[derive(Clone)]
pub struct Session {
    // NOTE: one allocation per request, and cloning a handle touches only
    // this request's reference count, never one shared by every request.
    inner: Arc<SessionInner>,
}

struct SessionInner {
    state: Mutex<RequestState>,
    context: ThreadHandle<SessionContext>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.lock();
        f.debug_struct("Session")
            .field("has_client_id", &state.current.is_some())
            .field("cookie", &state.cookie)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(
        context: ThreadHandle<SessionContext>,
        tx: Transaction,
        method: Method,
        headers: &HeaderMap,
    ) -> Self {
        let incoming = context.ids.read_id(headers);
        Session {
            inner: Arc::new(SessionInner {
                state: Mutex::new(RequestState {
                    tx: Some(tx),
                    method,
                    current: incoming.clone(),
                    incoming,
                    known_live: false,
                    cookie: CookieAction::None,
                }),
                context,
            }),
        }
    }

    fn state(&self) -> parking_lot::MutexGuard<'_, RequestState> {
        self.inner.state.lock()
    }

    fn context(&self) -> &SessionContext {
        &self.inner.context
    }

    /// Run `f` with the request's transaction.
    pub(crate) fn with_tx<R>(
        &self,
        f: impl FnOnce(&mut Transaction) -> Result<R, SessionError>,
    ) -> Result<R, SessionError> {
        let mut state = self.state();
        let tx = state.tx.as_mut().ok_or(SessionError::RequestFinished)?;
        f(tx)
    }

    /// Read this request's session ahead, in every container that reads over
    /// the network, without blocking a thread: the session layer awaits
    /// this before the handler runs, so the handler's reads find the session
    /// already read. Does nothing for a request without a client id, or for
    /// the embedded containers.
    ///
    /// # Errors
    /// [`SessionError::Store`] if a container cannot read the session
    /// ([`StoreError::Unavailable`](keel_store::StoreError::Unavailable) when
    /// its database cannot be reached).
    pub async fn preload(&self) -> Result<(), SessionError> {
        let reads = {
            let mut state = self.state();
            let Some(key) = state.current_key() else {
                return Ok(());
            };
            // A request with an unsafe method probably writes: a state the
            // container remembers may serve, its commit validating it.
            let read_ahead = if state.method.is_safe() {
                keel_store::ReadAhead::Fresh
            } else {
                keel_store::ReadAhead::Remembered
            };
            let tx = state.tx.as_mut().ok_or(SessionError::RequestFinished)?;
            let mut reads = Vec::new();
            for container in self.context().containers.containers() {
                if let Some(read) = container.preload(tx, &key, read_ahead)? {
                    reads.push(read);
                }
            }
            reads
        };
        for read in reads {
            read.await?;
        }
        Ok(())
    }

    /// The key (hashed client id) of this request's session, if the request
    /// has a client id.
    pub fn client_key(&self) -> Option<ClientKey> {
        self.state().current_key()
    }

    /// The data of package `package`, or `None` if the client has no live
    /// session or the package holds nothing. Never creates anything.
    ///
    /// Counts as an access: the session's last-access time is refreshed under
    /// the resolution rule.
    ///
    /// # Errors
    /// [`SessionError::NoContainer`] if no container serves `package`;
    /// [`SessionError::Store`] if the container fails.
    pub fn get(&self, package: &str) -> Result<Option<SessionPkgData>, SessionError> {
        let container = self.context().containers.lookup(package)?;
        let Some(key) = self.client_key() else {
            return Ok(None);
        };
        let exists = self.with_tx(|tx| {
            if container.session(tx, &key)?.is_none() {
                return Ok(false);
            }
            Ok(container.has_names(tx, &key, package)?)
        })?;
        Ok(exists.then(|| SessionPkgData::new(self.clone(), Arc::clone(container), key, package)))
    }

    /// The value under `name` in package `package`, as a `T`; `None` if the
    /// client has no live session or the package holds no such name. Never
    /// creates anything; counts as an access, like [`get`](Session::get).
    ///
    /// The shortcut for reading one value: `get(package)?` followed by
    /// [`SessionPkgData::get`] gives the same answer, but first asks whether
    /// the package holds anything at all, one more lookup.
    ///
    /// ```
    /// # use keel_session::doc_support::session_for_docs;
    /// let session = session_for_docs();
    /// assert_eq!(session.value::<u64>("my.app", "visits")?, None);
    /// session.pkg("my.app")?.insert("visits", 3u64)?;
    /// assert_eq!(session.value::<u64>("my.app", "visits")?, Some(3));
    /// # Ok::<(), keel_session::SessionError>(())
    /// ```
    ///
    /// # Errors
    /// As for [`get`](Session::get); [`SessionError::WrongType`] naming the
    /// package and key if the stored value is not a `T`.
    ///
    /// [`SessionPkgData::get`]: crate::SessionPkgData::get
    pub fn value<T: DeserializeOwned + 'static>(
        &self,
        package: &str,
        name: &str,
    ) -> Result<Option<T>, SessionError> {
        let container = self.context().containers.lookup(package)?;
        // One lock of the request state for the key and the transaction.
        let stored = {
            let mut state = self.state();
            let Some(key) = state.current_key() else {
                return Ok(None);
            };
            let tx = state.tx.as_mut().ok_or(SessionError::RequestFinished)?;
            container.touch_and_get(tx, &key, package, name)?
        };
        stored
            .map(|value| crate::pkg_data::typed(&value, package, name))
            .transpose()
    }

    /// The data of package `package`, creating the session (and minting a
    /// client id, sent as a cookie once the transaction commits) if needed.
    ///
    /// A validly signed id whose session no longer exists anywhere (expired,
    /// swept, invalidated, revoked) is not reused: a fresh id is minted.
    ///
    /// # Errors
    /// [`SessionError::MissingClientId`] if an id is needed but may not be
    /// minted here (`post_only` on a non-POST request, `thirdparty` mode);
    /// otherwise as for [`get`](Session::get).
    pub fn pkg(&self, package: &str) -> Result<SessionPkgData, SessionError> {
        let container = Arc::clone(self.context().containers.lookup(package)?);
        let key = self.ensure_session(&container)?;
        Ok(SessionPkgData::new(self.clone(), container, key, package))
    }

    /// Make sure the client has a live session in `container`; returns its key.
    fn ensure_session(
        &self,
        container: &Arc<dyn SessionContainer>,
    ) -> Result<ClientKey, SessionError> {
        let mut state = self.state();
        let state = &mut *state;
        let current_key = state.current_key();
        let tx = state.tx.as_mut().ok_or(SessionError::RequestFinished)?;
        if let Some(key) = current_key {
            if container.session(tx, &key)?.is_some() {
                state.known_live = true;
                return Ok(key);
            }
            // Not in this container. Reuse the id only if it is live in
            // another one (named containers share one client id).
            if !state.known_live {
                for other in self.context().containers.containers() {
                    if !same_container(&other, container) && other.session(tx, &key)?.is_some() {
                        state.known_live = true;
                        break;
                    }
                }
            }
            // NOTE: zope's rule keeps a signed id with no session as the
            // client's (see `IdFormat::adopts_unknown_ids`).
            if state.known_live || self.context().ids.adopts_unknown_ids() {
                container.create_session(tx, &key)?;
                state.known_live = true;
                return Ok(key);
            }
        }
        // NOTE: a transaction that read the dead `current_key` and creates
        // the new one must be able to commit both (on a Redis Cluster: one
        // bucket).
        let id = self.mint_movable(&state.method, current_key.as_ref())?;
        let key = id.key();
        container.declare_fresh(tx, &key)?;
        container.create_session(tx, &key)?;
        state.current = Some(id);
        state.known_live = true;
        state.cookie = CookieAction::Set;
        Ok(key)
    }

    /// The live containers of this client, with its key.
    fn live_containers(
        &self,
        tx: &mut Transaction,
        key: &ClientKey,
    ) -> Result<Vec<Arc<dyn SessionContainer>>, SessionError> {
        let mut live = Vec::new();
        for container in self.context().containers.containers() {
            if container.session(tx, key)?.is_some() {
                live.push(container);
            }
        }
        Ok(live)
    }

    /// Delete the session's data in every container and expire the cookie
    /// (once the transaction commits). Later writes in this request start a
    /// new session under a new id.
    ///
    /// # Errors
    /// [`SessionError::Store`] if a container fails.
    pub fn invalidate(&self) -> Result<(), SessionError> {
        let mut state = self.state();
        let state = &mut *state;
        let current_key = state.current_key();
        let tx = state.tx.as_mut().ok_or(SessionError::RequestFinished)?;
        if let Some(key) = current_key {
            for container in self.live_containers(tx, &key)? {
                container.delete_session(tx, &key)?;
            }
        }
        state.current = None;
        state.known_live = false;
        state.cookie = if state.incoming.is_some() {
            CookieAction::Expire
        } else {
            CookieAction::None
        };
        Ok(())
    }

    /// Give the session a new client id, keeping its data; the old id stops
    /// working once the transaction commits. Call it at login to prevent
    /// session fixation. Creates the session if there is none. The session's
    /// CSRF token is dropped, so [`csrf_token`](Session::csrf_token) mints a
    /// new one.
    ///
    /// # Errors
    /// [`SessionError::MissingClientId`] if no id may be minted here;
    /// [`SessionError::Store`] if a container fails.
    pub fn cycle_id(&self) -> Result<(), SessionError> {
        let mut state = self.state();
        let state = &mut *state;
        let current_key = state.current_key();
        let tx = state.tx.as_mut().ok_or(SessionError::RequestFinished)?;
        let new_id = self.mint_movable(&state.method, current_key.as_ref())?;
        let new_key = new_id.key();
        for container in self.context().containers.containers() {
            container.declare_fresh(tx, &new_key)?;
        }
        let mut moved = false;
        if let Some(old_key) = current_key {
            for container in self.live_containers(tx, &old_key)? {
                container.rename_session(tx, &old_key, &new_key)?;
                moved = true;
            }
        }
        if moved {
            // The CSRF token goes with the old id: a token learnt before
            // login must not work after it. The next `csrf_token()` mints one.
            crate::csrf::forget_token(&self.context().containers, tx, &new_key)?;
        }
        if !moved {
            let containers = self.context().containers.containers();
            let first = containers
                .first()
                .ok_or_else(|| SessionError::NoContainer {
                    package: String::new(),
                })?;
            first.create_session(tx, &new_key)?;
        }
        state.current = Some(new_id);
        state.known_live = true;
        state.cookie = CookieAction::Set;
        Ok(())
    }

    /// A fresh id that every container can move the session `from` to (see
    /// [`SessionContainer::can_rename`]: on a Redis Cluster one in the same
    /// bucket, about 256 draws; elsewhere the first), so that one
    /// transaction can commit both.
    fn mint_movable(
        &self,
        method: &Method,
        from: Option<&ClientKey>,
    ) -> Result<ClientId, SessionError> {
        /// Draws before giving up: (255/256)^65536 is about e^-256, so
        /// reaching it means a container refuses every key.
        const DRAWS: u32 = 65_536;
        let ids = &self.context().ids;
        let Some(from) = from else {
            return ids.mint(method);
        };
        let containers = self.context().containers.containers();
        for _ in 0..DRAWS {
            let id = ids.mint(method)?;
            let key = id.key();
            if containers.iter().all(|c| c.can_rename(from, &key)) {
                return Ok(id);
            }
        }
        Err(SessionError::Store(StoreError::InvalidInput {
            what: "new session id",
            reason: format!("no container accepted a move of the session in {DRAWS} draws"),
        }))
    }

    /// Attach `principal` (a user name) to the session in every container
    /// where it lives, creating the session if there is none; `None`
    /// detaches it.
    ///
    /// # Errors
    /// As for [`cycle_id`](Session::cycle_id).
    pub fn set_principal(&self, principal: Option<&str>) -> Result<(), SessionError> {
        let containers = self.context().containers.containers();
        let first = containers
            .first()
            .ok_or_else(|| SessionError::NoContainer {
                package: String::new(),
            })?;
        let key = self.ensure_session(first)?;
        self.with_tx(|tx| {
            for container in self.live_containers(tx, &key)? {
                container.set_principal(tx, &key, principal)?;
            }
            Ok(())
        })
    }

    /// The principal attached to the session, if any (from the first
    /// container where the session lives).
    ///
    /// # Errors
    /// [`SessionError::Store`] if a container fails.
    pub fn principal(&self) -> Result<Option<String>, SessionError> {
        let Some(key) = self.client_key() else {
            return Ok(None);
        };
        self.with_tx(|tx| {
            for container in self.context().containers.containers() {
                if let Some(info) = container.session(tx, &key)? {
                    return Ok(info.principal);
                }
            }
            Ok(None)
        })
    }

    /// The session's record (creation time, last access, principal) from the
    /// first container where it lives; `None` if the client has no live
    /// session. Never creates anything.
    ///
    /// ```
    /// # use keel_session::doc_support::session_for_docs;
    /// let session = session_for_docs();
    /// assert!(session.info()?.is_none());
    /// session.pkg("my.app")?.insert("n", 1_u64)?;
    /// let info = session.info()?.expect("created by the write");
    /// assert!(info.created <= info.last_access);
    /// # Ok::<(), keel_session::SessionError>(())
    /// ```
    ///
    /// # Errors
    /// [`SessionError::Store`] if a container fails.
    pub fn info(&self) -> Result<Option<keel_store::SessionInfo>, SessionError> {
        let Some(key) = self.client_key() else {
            return Ok(None);
        };
        self.with_tx(|tx| {
            for container in self.context().containers.containers() {
                if let Some(info) = container.session(tx, &key)? {
                    return Ok(Some(info));
                }
            }
            Ok(None)
        })
    }

    /// Commit the request's transaction (blocking until it is durable). For use
    /// outside the tower layer, which commits by itself.
    ///
    /// # Errors
    /// [`SessionError::Transaction`] with the commit's error (a conflict is
    /// retryable); [`SessionError::RequestFinished`] if already finished.
    pub fn commit(&self) -> Result<keel_txn::CommitInfo, SessionError> {
        let tx = self
            .take_transaction()
            .ok_or(SessionError::RequestFinished)?;
        Ok(tx.commit()?)
    }

    /// Abort the request's transaction: nothing it did is kept.
    pub fn abort(&self) {
        if let Some(tx) = self.take_transaction() {
            tx.abort();
        }
    }

    /// Take the request's transaction out (for the middleware to commit or
    /// abort). Later session operations fail with
    /// [`SessionError::RequestFinished`].
    pub(crate) fn take_transaction(&self) -> Option<Transaction> {
        self.state().tx.take()
    }

    /// What the response must do with the cookie once the commit succeeded.
    pub fn cookie_action(&self) -> CookieAction {
        let state = self.state();
        match state.cookie {
            CookieAction::None
                if state.current.is_some() && self.context().ids.refreshes_on_access() =>
            {
                CookieAction::Set
            }
            action => action,
        }
    }

    /// Write the Set-Cookie (and cache-defeating) headers the committed
    /// request needs into `headers`.
    pub fn write_cookie_headers(&self, headers: &mut HeaderMap) {
        match self.cookie_action() {
            CookieAction::Set => {
                if let Some(id) = &self.state().current {
                    self.context()
                        .ids
                        .set_cookie(headers, id, std::time::SystemTime::now());
                }
            }
            CookieAction::Expire => self.context().ids.expire_cookie(headers),
            CookieAction::None => {}
        }
    }
}
