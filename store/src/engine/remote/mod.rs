//! The transactional core's data manager for backends reached over the
//! network (PostgreSQL, Redis): a transaction reads each session whole, in
//! one round trip, ahead of the handler ([`RemoteCore::preload`]) or when
//! first used; its change set goes to the backend's committer, which checks
//! every recorded version and applies it atomically next to the data. The
//! core remembers what each read and commit left, so a writing request of a
//! session the process knows needs no read. A backend implements
//! [`RemoteStore`]: read a session, queue a change set.

pub(crate) mod image;
pub(crate) mod runtime;

use std::{collections::HashMap, fmt, future::Future, pin::Pin, sync::Arc};

use keel_txn::{BoxError, DataManager, PendingVote, SavepointState, Transaction};

use crate::{SessionAdmin, engine::container::BufferedContainer};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use self::image::{AppliedImages, ImageView, Images, Loader, SessionImage};
use crate::{
    ClientKey, Clock, ExpiryPolicy, Preload, ReadAhead, StoreError,
    engine::{
        apply::ChangeSet,
        buffer::{At, Buffer, Validation, to_tree},
        records::{self, ItemKey},
    },
};

/// A read of a session that holds no thread while it waits.
pub(crate) type Read = Pin<Box<dyn Future<Output = Result<SessionImage, StoreError>> + Send>>;

/// A commit's answer: the tid its writes were applied as (`None` if it
/// only validated), and the change set itself, handed back so the core can
/// remember what the sessions became.
pub(crate) type Answer = (Result<Option<u64>, StoreError>, ChangeSet<Vec<u8>>);

/// Where a commit's answer goes.
#[derive(Debug)]
pub(crate) enum Reply {
    /// A thread blocked in the synchronous vote.
    Blocking(std::sync::mpsc::SyncSender<Answer>),
    /// A future returned by the asynchronous vote.
    Async(oneshot::Sender<Answer>),
}

impl Reply {
    /// Answer the waiter (one that went away needs no answer).
    pub(crate) fn send(self, answer: Answer) {
        match self {
            Reply::Blocking(sender) => drop(sender.send(answer)),
            Reply::Async(sender) => drop(sender.send(answer)),
        }
    }
}

/// What a network backend does for the core: storage only.
pub(crate) trait RemoteStore: Send + Sync + fmt::Debug + 'static {
    /// Read the session `client` whole, in one round trip, from one
    /// snapshot; the future holds no thread.
    fn read(self: &Arc<Self>, client: ClientKey) -> Read;

    /// Read the session `client`, blocking the calling thread (on a tokio
    /// worker, announced with `block_in_place`).
    ///
    /// # Errors
    /// The backend's read errors.
    fn read_blocking(self: &Arc<Self>, client: ClientKey) -> Result<SessionImage, StoreError>;

    /// Queue `changes` for commit: check every version it recorded and
    /// apply it atomically, or change nothing; the answer goes to `reply`
    /// once the backend has it durable as far as the backend promises.
    fn submit(self: &Arc<Self>, changes: ChangeSet<Vec<u8>>, reply: Reply);

    /// [`SessionContainer::can_rename`](crate::SessionContainer::can_rename).
    fn can_rename(&self, from: &ClientKey, to: &ClientKey) -> bool {
        let _ = (from, to);
        true
    }

    /// Wait for a blocking reply (see [`RemoteStore::read_blocking`]).
    ///
    /// # Errors
    /// [`StoreError::Closed`] if the committer went away.
    fn wait(&self, answer: std::sync::mpsc::Receiver<Answer>) -> Result<Answer, StoreError>;
}

/// A container over a [`RemoteStore`]: it gives its core, the core does the
/// rest ([`BufferedContainer`] is implemented once for all of them).
pub(crate) trait RemoteContainer: SessionAdmin + Send + Sync + fmt::Debug + 'static {
    /// The backend.
    type Store: RemoteStore;

    /// The container's core.
    fn core(&self) -> &RemoteCore<Self::Store>;
}

impl<C: RemoteContainer> BufferedContainer for C {
    type View<'a> = ImageView<'a>;

    fn policy(&self) -> &ExpiryPolicy {
        self.core().expiry()
    }

    fn clock(&self) -> &dyn Clock {
        self.core().clock()
    }

    fn with_buffer<T>(
        &self,
        tx: &mut Transaction,
        op: impl for<'v> FnOnce(&mut Buffer, &mut Self::View<'v>, At) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.core().with_buffer(tx, self.at(), op)
    }

    fn preload(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
        read_ahead: ReadAhead,
    ) -> Result<Option<Preload>, StoreError> {
        self.core().preload(tx, client, read_ahead)
    }

    fn declare_fresh(&self, tx: &mut Transaction, client: &ClientKey) -> Result<(), StoreError> {
        self.core().declare_fresh(tx, client)
    }

    fn can_rename(&self, from: &ClientKey, to: &ClientKey) -> bool {
        self.core().store().can_rename(from, to)
    }
}

/// The core of a network container: its sort key, its store, the states it
/// remembers, its expiry policy and clock.
#[derive(Debug)]
pub(crate) struct RemoteCore<S: RemoteStore> {
    shared: Arc<Shared<S>>,
    expiry: ExpiryPolicy,
    clock: Arc<dyn Clock>,
}

/// What the core shares with its data managers.
#[derive(Debug)]
struct Shared<S> {
    sort_key: String,
    store: Arc<S>,
    /// The state of sessions as this process last read or committed them.
    remembered: Mutex<HashMap<ClientKey, Arc<SessionImage>>>,
    capacity: usize,
}

impl<S: RemoteStore> RemoteCore<S> {
    /// A core over `store`, remembering up to `remembered` sessions.
    pub(crate) fn new(
        sort_key: String,
        store: Arc<S>,
        remembered: usize,
        expiry: ExpiryPolicy,
        clock: Arc<dyn Clock>,
    ) -> Self {
        RemoteCore {
            shared: Arc::new(Shared {
                sort_key,
                store,
                remembered: Mutex::new(HashMap::new()),
                capacity: remembered,
            }),
            expiry,
            clock,
        }
    }

    pub(crate) fn store(&self) -> &Arc<S> {
        &self.shared.store
    }

    pub(crate) fn expiry(&self) -> &ExpiryPolicy {
        &self.expiry
    }

    pub(crate) fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    pub(crate) fn sort_key(&self) -> &str {
        &self.shared.sort_key
    }

    fn join<'t>(&self, tx: &'t mut Transaction) -> Result<&'t mut RemoteDm<S>, StoreError> {
        Ok(tx.join_with(&self.shared.sort_key, || {
            RemoteDm::new(Arc::clone(&self.shared))
        })?)
    }

    /// [`BufferedContainer::with_buffer`](crate::engine::container::BufferedContainer::with_buffer):
    /// run `op` on this transaction's buffer and the sessions it read; a
    /// session it did not read yet is read now, blocking the caller.
    pub(crate) fn with_buffer<T>(
        &self,
        tx: &mut Transaction,
        at: At,
        op: impl for<'v> FnOnce(&mut Buffer, &mut ImageView<'v>, At) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let dm = self.join(tx)?;
        dm.take_inbox();
        let loader = SharedLoader(Arc::clone(&dm.shared));
        let mut view = ImageView {
            images: &mut dm.images,
            loader: &loader,
        };
        op(&mut dm.buffer, &mut view, at)
    }

    /// [`SessionContainer::preload`](crate::SessionContainer::preload).
    ///
    /// # Errors
    /// As for [`SessionContainer::preload`](crate::SessionContainer::preload).
    pub(crate) fn preload(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
        read_ahead: ReadAhead,
    ) -> Result<Option<Preload>, StoreError> {
        let now = self.clock.now();
        let dm = self.join(tx)?;
        dm.take_inbox();
        if dm.holds(client) {
            return Ok(None);
        }
        if read_ahead == ReadAhead::Remembered
            && let Some(image) = dm.shared.remembered(client)
            // NOTE: only a live state serves. Other servers' touches do not
            // change a session's version, so "expired" from an old state
            // could wrongly wipe a session that is live; "live" cannot be
            // wrong that way (last access only grows).
            && image
                .record
                .as_ref()
                .is_some_and(|r| !self.expiry.is_expired(r.created, r.last_access, now))
        {
            dm.remembered_read = true;
            if let Err(at) = dm.images.binary_search_by(|(key, _)| key.cmp(client)) {
                dm.images.insert(at, (*client, image));
            }
            return Ok(None);
        }
        let inbox = Arc::clone(&dm.inbox);
        let shared = Arc::clone(&dm.shared);
        let client = *client;
        let read = self.shared.store.read(client);
        Ok(Some(Box::pin(async move {
            let image = Arc::new(read.await?);
            shared.remember(client, &image);
            inbox.lock().push((client, image));
            Ok(())
        })))
    }

    /// [`SessionContainer::declare_fresh`](crate::SessionContainer::declare_fresh).
    ///
    /// # Errors
    /// As for [`SessionContainer::declare_fresh`](crate::SessionContainer::declare_fresh).
    pub(crate) fn declare_fresh(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
    ) -> Result<(), StoreError> {
        let dm = self.join(tx)?;
        dm.take_inbox();
        if let Err(at) = dm.images.binary_search_by(|(key, _)| key.cmp(client)) {
            dm.images
                .insert(at, (*client, Arc::new(SessionImage::default())));
        }
        Ok(())
    }
}

impl<S: RemoteStore> Shared<S> {
    fn remembered(&self, client: &ClientKey) -> Option<Arc<SessionImage>> {
        self.remembered.lock().get(client).cloned()
    }

    /// Remember `image` (an absent session is forgotten instead).
    fn remember(&self, client: ClientKey, image: &Arc<SessionImage>) {
        if self.capacity == 0 {
            return;
        }
        let mut remembered = self.remembered.lock();
        if image.record.is_none() {
            remembered.remove(&client);
            return;
        }
        if remembered.len() >= self.capacity && !remembered.contains_key(&client) {
            remembered.clear();
        }
        remembered.insert(client, Arc::clone(image));
    }

    fn forget(&self, clients: impl IntoIterator<Item = ClientKey>) {
        let mut remembered = self.remembered.lock();
        for client in clients {
            remembered.remove(&client);
        }
    }

    /// After a commit's answer: remember what the sessions became (the
    /// images read, with the change set applied by the core's `apply`), or
    /// forget them if the commit failed (a conflict means some are stale).
    fn after_commit(&self, images: &[(ClientKey, Arc<SessionImage>)], answer: &Answer) {
        let (result, changes) = answer;
        let applied = match result {
            Ok(Some(tid)) => AppliedImages::after(images, changes, *tid).ok(),
            // Validated, nothing written: what was read is current.
            Ok(None) => Some(AppliedImages {
                images: images
                    .iter()
                    .map(|(client, image)| (*client, SessionImage::clone(image)))
                    .collect(),
            }),
            Err(_) => None,
        };
        match applied {
            Some(applied) => {
                for (client, image) in applied.images {
                    self.remember(client, &Arc::new(image));
                }
            }
            None => {
                let touched = changes
                    .reads
                    .iter()
                    .map(|(key, _)| *key.client())
                    .chain(changes.sessions.iter().map(|change| change.client))
                    .chain(changes.items.iter().map(|(key, _)| key.client))
                    .chain(images.iter().map(|(client, _)| *client));
                self.forget(touched);
            }
        }
    }
}

/// Loads sessions a transaction did not read ahead, blocking the caller.
struct SharedLoader<S>(Arc<Shared<S>>);

impl<S: RemoteStore> Loader for SharedLoader<S> {
    fn load_now(&self, client: &ClientKey) -> Result<SessionImage, StoreError> {
        let image = self.0.store.read_blocking(*client)?;
        self.0.remember(*client, &Arc::new(image.clone()));
        Ok(image)
    }
}

/// A transaction's data manager for one network container.
struct RemoteDm<S> {
    shared: Arc<Shared<S>>,
    /// The sessions read so far, sorted by key.
    images: Images,
    /// Sessions read ahead, not yet moved into `images`.
    inbox: Arc<Mutex<Images>>,
    /// A remembered state served a read: validate every read at commit.
    remembered_read: bool,
    buffer: Buffer,
    prepared: Option<ChangeSet<Vec<u8>>>,
}

impl<S: RemoteStore> RemoteDm<S> {
    fn new(shared: Arc<Shared<S>>) -> Self {
        RemoteDm {
            shared,
            images: Vec::new(),
            inbox: Arc::new(Mutex::new(Vec::new())),
            remembered_read: false,
            buffer: Buffer::default(),
            prepared: None,
        }
    }

    fn holds(&self, client: &ClientKey) -> bool {
        self.images
            .binary_search_by(|(key, _)| key.cmp(client))
            .is_ok()
    }

    /// Move sessions read ahead into `images` (an image already there was
    /// read earlier and stays: the transaction's reads stay consistent).
    fn take_inbox(&mut self) {
        let arrived = std::mem::take(&mut *self.inbox.lock());
        for (client, image) in arrived {
            if let Err(at) = self.images.binary_search_by(|(key, _)| key.cmp(&client)) {
                self.images.insert(at, (client, image));
            }
        }
    }

    /// A read-only transaction that read one session read one snapshot:
    /// nothing to validate. One that read several read them at different
    /// moments, and one served by a remembered state may have read an old
    /// one, so their reads are validated like a writer's.
    fn validation(&self) -> Validation {
        if self.images.len() > 1 || self.remembered_read {
            Validation::Always
        } else {
            Validation::IfWrites
        }
    }

    fn reset(&mut self) {
        self.prepared = None;
        self.buffer = Buffer::default();
        self.images.clear();
        self.inbox.lock().clear();
        self.remembered_read = false;
    }
}

impl<S: RemoteStore> DataManager for RemoteDm<S> {
    fn sort_key(&self) -> &str {
        &self.shared.sort_key
    }

    fn commit(&mut self) -> Result<(), BoxError> {
        if self.has_nothing_to_commit() {
            return Ok(());
        }
        let validation = self.validation();
        let changes = std::mem::take(&mut self.buffer)
            .change_set(validation, |key: &ItemKey, value| {
                Ok(records::encode_value(&to_tree(key, value)?))
            })?;
        self.prepared = Some(changes).filter(|changes| !changes.is_empty());
        Ok(())
    }

    fn tpc_vote(&mut self) -> Result<(), BoxError> {
        let Some(changes) = self.prepared.take() else {
            return Ok(());
        };
        let images = std::mem::take(&mut self.images);
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.shared.store.submit(changes, Reply::Blocking(reply));
        let answer = self.shared.store.wait(answer)?;
        self.shared.after_commit(&images, &answer);
        answer.0?;
        Ok(())
    }

    /// Queue the change set for the group committer and return the wait
    /// for PostgreSQL's COMMIT as a future. If the future is dropped, the
    /// change set is still committed (or refused): the outcome is unknown to
    /// the caller, as when a process dies after sending it.
    fn tpc_vote_async(&mut self) -> Option<PendingVote> {
        let changes = self.prepared.take()?;
        let images = std::mem::take(&mut self.images);
        let shared = Arc::clone(&self.shared);
        let (reply, answer) = oneshot::channel();
        self.shared.store.submit(changes, Reply::Async(reply));
        Some(Box::pin(async move {
            let answer = answer.await.map_err(|_| StoreError::Closed)?;
            shared.after_commit(&images, &answer);
            answer.0?;
            Ok(())
        }))
    }

    fn tpc_finish(&mut self) {
        self.reset();
    }

    fn tpc_abort(&mut self) {
        self.reset();
    }

    fn abort(&mut self) {
        self.reset();
    }

    /// A transaction that read one session and wrote nothing read one
    /// snapshot: no round trip at commit.
    fn has_nothing_to_commit(&self) -> bool {
        !self.buffer.may_write() && self.validation() == Validation::IfWrites
    }

    fn commit_may_block(&self) -> bool {
        !self.has_nothing_to_commit()
    }

    /// The only wait, PostgreSQL's answer, is the future
    /// [`tpc_vote_async`](DataManager::tpc_vote_async) returns.
    fn commit_async_may_block(&self) -> bool {
        false
    }

    fn savepoint(&mut self) -> Option<SavepointState> {
        Some(self.buffer.savepoint())
    }

    fn rollback(&mut self, state: &SavepointState) -> Result<(), BoxError> {
        self.buffer.rollback(state)
    }

    fn should_retry(&self, error: &(dyn std::error::Error + 'static)) -> bool {
        StoreError::is_retryable_source(error)
    }
}
