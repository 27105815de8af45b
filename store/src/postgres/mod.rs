//! The PostgreSQL container: several servers share one database. The
//! transactional core is the same as redb's and RAM's; PostgreSQL stores the
//! records, checks the versions a commit recorded under the rows' locks and
//! applies the change set atomically (`schema.rs`).

mod connection;
mod image;
mod schema;

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use keel_txn::{BoxError, DataManager, PendingVote, SavepointState, Transaction};
use parking_lot::Mutex;

use self::{
    connection::{Answer, Pg, Reply, Settings},
    image::{AppliedImages, ImageView, Images, Loader, SessionImage},
};
use crate::{
    ClientKey, Clock, ContainerStats, ExpiryPolicy, Preload, ReadAhead, SessionAdmin,
    SessionDetail, SessionSummary, StoreError, SweepReport, SystemClock,
    engine::{
        admin::{StatsBuilder, summary},
        apply::ChangeSet,
        buffer::{At, Buffer, Validation, to_tree},
        container::BufferedContainer,
        records::{self, ItemKey, SessionRecord},
    },
};

/// Process-wide counter that makes every PostgreSQL container's sort key
/// unique.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// How to connect a [`PostgresContainer`]: a builder with safe defaults.
///
/// ```
/// use keel_store::{ExpiryPolicy, PostgresOptions};
/// let options = PostgresOptions::new()
///     .with_schema("keel")
///     .with_expiry(ExpiryPolicy::default().with_timeout(1800))
///     .with_pool_size(8);
/// # let _ = options;
/// ```
#[derive(Clone)]
pub struct PostgresOptions {
    expiry: ExpiryPolicy,
    clock: Arc<dyn Clock>,
    settings: Settings,
    remembered: usize,
}

impl fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("expiry", &self.expiry)
            .field("clock", &self.clock)
            .field("settings", &self.settings)
            .field("remembered", &self.remembered)
            .finish()
    }
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl PostgresOptions {
    /// The defaults: [`ExpiryPolicy::default`], the system clock, schema
    /// `keel`, a pool of 8 connections, 5 s to connect, group commits of up
    /// to 256 change sets, 2 group commits in flight, up to 65,536 sessions
    /// remembered for writing requests.
    pub fn new() -> Self {
        PostgresOptions {
            expiry: ExpiryPolicy::default(),
            clock: Arc::new(SystemClock),
            settings: Settings {
                schema: "keel".to_owned(),
                pool_size: 8,
                connect_timeout: Duration::from_secs(5),
                max_batch: 256,
                concurrent_commits: 2,
            },
            remembered: 65_536,
        }
    }

    /// Use `expiry` instead of [`ExpiryPolicy::default`].
    pub fn with_expiry(mut self, expiry: ExpiryPolicy) -> Self {
        self.expiry = expiry;
        self
    }

    /// Take the time from `clock` (tests use a
    /// [`ManualClock`](crate::ManualClock)).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Keep Keel's tables in schema `schema` (lower-case letters, digits
    /// and `_`); default `keel`. Keel creates it on first use and never
    /// touches a schema that holds tables it did not create.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.settings.schema = schema.into();
        self
    }

    /// Keep at most `connections` connections open (at least 1).
    pub fn with_pool_size(mut self, connections: usize) -> Self {
        self.settings.pool_size = connections.max(1);
        self
    }

    /// Give up connecting (and waiting for a pooled connection) after
    /// `timeout`; the operation then fails with
    /// [`StoreError::Unavailable`].
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// Group at most `change_sets` concurrent commits into one PostgreSQL
    /// transaction (at least 1).
    pub fn with_max_batch(mut self, change_sets: usize) -> Self {
        self.settings.max_batch = change_sets.max(1);
        self
    }

    /// Remember the state of up to `sessions` sessions after each read and
    /// commit, so that a writing request ([`ReadAhead::Remembered`]) needs
    /// no read: one round trip, its commit, which validates every version
    /// it read (a state another server changed meanwhile is a conflict, and
    /// the request runs again on a fresh read). 0 turns it off. When full,
    /// the memory starts afresh.
    pub fn with_remembered_sessions(mut self, sessions: usize) -> Self {
        self.remembered = sessions;
        self
    }
}

/// A session data container in PostgreSQL: several app servers given the
/// same database share sessions, with every guarantee of
/// [`RedbContainer`](crate::RedbContainer).
///
/// A request reads a session whole, in one statement (one snapshot, one
/// round trip): the session layer starts that read before the handler runs
/// ([`SessionContainer::preload`](crate::SessionContainer::preload)), so no
/// worker thread waits on it. Writes are buffered as live values; at commit
/// they are serialized and sent, with the version of everything the
/// transaction read, to one server-side function that locks the sessions'
/// rows in key order, checks every version and applies the change set, or
/// changes nothing and reports a conflict. Concurrent commits of one process
/// share one PostgreSQL transaction (group commit); a conflict fails its own
/// change set alone. A commit is acknowledged only after PostgreSQL's COMMIT
/// returned.
///
/// Sort key `keel-store/~postgres/<id>`: like redb, it votes after every
/// other resource.
///
/// # Errors at commit
/// [`Transaction::commit`] fails with [`keel_txn::TxnError::Resource`], the
/// container's [`StoreError`] as its source: [`StoreError::Unserializable`]
/// (nothing written anywhere), [`StoreError::Conflict`] (retryable),
/// [`StoreError::Unavailable`] (nothing sent), [`StoreError::Storage`]
/// (PostgreSQL refused it: nothing written), [`StoreError::CommitOutcomeUnknown`]
/// (the link failed after the commit was sent).
///
/// ```no_run
/// use keel_store::{ClientKey, PostgresContainer, PostgresOptions, SessionContainer, SessionValue};
/// use keel_txn::TransactionManager;
///
/// let container = PostgresContainer::connect(
///     "postgres://postgres@127.0.0.1:5432/test",
///     PostgresOptions::new().with_schema("my_app_sessions"),
/// )?;
/// let key = ClientKey::from_client_id("client");
/// let manager = TransactionManager::new();
///
/// let mut tx = manager.begin();
/// container.create_session(&mut tx, &key)?;
/// container.insert(&mut tx, &key, "app", "name", SessionValue::new("Ada"))?;
/// tx.commit()?; // committed in PostgreSQL when this returns
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PostgresContainer {
    shared: Arc<Shared>,
    expiry: ExpiryPolicy,
    clock: Arc<dyn Clock>,
}

/// What the container shares with its data managers.
#[derive(Debug)]
struct Shared {
    sort_key: String,
    pg: Arc<Pg>,
    /// The state of sessions as this process last read or committed them.
    remembered: Mutex<HashMap<ClientKey, Arc<SessionImage>>>,
    capacity: usize,
}

impl Shared {
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

impl fmt::Debug for PostgresContainer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresContainer")
            .field("database", &self.shared.pg.target)
            .field("schema", &self.shared.pg.schema)
            .field("sort_key", &self.shared.sort_key)
            .field("expiry", &self.expiry)
            .finish_non_exhaustive()
    }
}

/// Round trips a [`PostgresContainer`] made since it was connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RoundTrips {
    /// Reads of sessions (each one statement).
    pub reads: u64,
    /// Group commits (each one statement, one PostgreSQL transaction).
    pub commits: u64,
    /// Change sets committed by them.
    pub committed_change_sets: u64,
}

impl PostgresContainer {
    /// Connect to the database at `url` (`postgres://USER@HOST:PORT/DB`),
    /// creating Keel's schema on first use.
    ///
    /// # Errors
    /// - [`StoreError::InvalidInput`]: a malformed URL or schema name.
    /// - [`StoreError::Unavailable`]: the server did not answer within the
    ///   connect timeout (the error names host and database).
    /// - [`StoreError::NotAKeelDatabase`]: the schema holds tables Keel did
    ///   not create.
    /// - [`StoreError::UnsupportedFormat`]: written by a newer Keel.
    /// - [`StoreError::Storage`]: PostgreSQL refused the set-up.
    pub fn connect(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let pg = Pg::connect(url, &options.settings)?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Ok(PostgresContainer {
            shared: Arc::new(Shared {
                sort_key: format!("keel-store/~postgres/{id}"),
                pg,
                remembered: Mutex::new(HashMap::new()),
                capacity: options.remembered,
            }),
            expiry: options.expiry,
            clock: options.clock,
        })
    }

    /// The database, as named in errors (its URL without a password).
    pub fn database(&self) -> &str {
        &self.shared.pg.target
    }

    /// Round trips made so far (reads and group commits).
    pub fn round_trips(&self) -> RoundTrips {
        let counters = &self.shared.pg.counters;
        RoundTrips {
            reads: counters.reads.load(Ordering::Relaxed),
            commits: counters.commits.load(Ordering::Relaxed),
            committed_change_sets: counters.committed_change_sets.load(Ordering::Relaxed),
        }
    }

    fn pg(&self) -> Arc<Pg> {
        Arc::clone(&self.shared.pg)
    }

    /// Run an admin operation and wait for it.
    fn wait<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.shared.pg.wait_for(work)?
    }

    fn join<'t>(&self, tx: &'t mut Transaction) -> Result<&'t mut PgDm, StoreError> {
        Ok(tx.join_with(&self.shared.sort_key, || {
            PgDm::new(Arc::clone(&self.shared))
        })?)
    }
}

/// Loads sessions a transaction did not read ahead, blocking the caller.
struct SharedLoader(Arc<Shared>);

impl Loader for SharedLoader {
    fn load_now(&self, client: &ClientKey) -> Result<SessionImage, StoreError> {
        let pg = Arc::clone(&self.0.pg);
        let image = self.0.pg.wait_for(pg.load(*client))??;
        self.0.remember(*client, &Arc::new(image.clone()));
        Ok(image)
    }
}

/// A transaction's data manager for one PostgreSQL container.
struct PgDm {
    shared: Arc<Shared>,
    /// The sessions read so far, sorted by key.
    images: Images,
    /// Sessions read ahead, not yet moved into `images`.
    inbox: Arc<Mutex<Images>>,
    /// A remembered state served a read: validate every read at commit.
    remembered_read: bool,
    buffer: Buffer,
    prepared: Option<ChangeSet<Vec<u8>>>,
}

impl PgDm {
    fn new(shared: Arc<Shared>) -> Self {
        PgDm {
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

impl DataManager for PgDm {
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
        let (reply, wait) = Reply::blocking();
        self.shared.pg.submit(changes, reply);
        let answer = wait()?;
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
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.shared.pg.submit(changes, Reply::Async(reply));
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

impl BufferedContainer for PostgresContainer {
    type View<'a> = ImageView<'a>;

    fn policy(&self) -> &ExpiryPolicy {
        &self.expiry
    }

    fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    /// Run `op` on this transaction's buffer and the sessions it read; a
    /// session it did not read yet is read now, blocking the caller.
    fn with_buffer<T>(
        &self,
        tx: &mut Transaction,
        op: impl for<'v> FnOnce(&mut Buffer, &mut Self::View<'v>, At) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let at = self.at();
        let dm = self.join(tx)?;
        dm.take_inbox();
        let loader = SharedLoader(Arc::clone(&dm.shared));
        let mut view = ImageView {
            images: &mut dm.images,
            loader: &loader,
        };
        op(&mut dm.buffer, &mut view, at)
    }

    fn preload(
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
        let read = self.shared.pg.spawn(self.pg().load(client));
        Ok(Some(Box::pin(async move {
            let image = Arc::new(read.await?);
            shared.remember(client, &image);
            inbox.lock().push((client, image));
            Ok(())
        })))
    }

    fn declare_fresh(&self, tx: &mut Transaction, client: &ClientKey) -> Result<(), StoreError> {
        let dm = self.join(tx)?;
        dm.take_inbox();
        if let Err(at) = dm.images.binary_search_by(|(key, _)| key.cmp(client)) {
            dm.images
                .insert(at, (*client, Arc::new(SessionImage::default())));
        }
        Ok(())
    }
}

impl SessionAdmin for PostgresContainer {
    fn list_sessions(
        &self,
        after: Option<&ClientKey>,
        limit: usize,
    ) -> Result<Vec<SessionSummary>, StoreError> {
        let now = self.clock.now();
        let rows = self.wait(self.pg().list(after.copied(), limit))?;
        Ok(rows
            .iter()
            .map(|(client, record, bytes)| summary(client, record, *bytes, &self.expiry, now))
            .collect())
    }

    fn session_detail(&self, key: &ClientKey) -> Result<Option<SessionDetail>, StoreError> {
        let now = self.clock.now();
        let pg = self.pg();
        let client = *key;
        let (record, values) = self.wait(async move {
            let record = Arc::clone(&pg).load(client).await?.record;
            let values = match &record {
                Some(_) => pg.values_of(client).await?,
                None => Vec::new(),
            };
            Ok((record, values))
        })?;
        let Some(record) = record else {
            return Ok(None);
        };
        let mut data = std::collections::BTreeMap::new();
        let mut bytes = 0;
        for (item, value, size) in values {
            bytes += size;
            data.entry(item.package)
                .or_insert_with(std::collections::BTreeMap::new)
                .insert(item.name, value);
        }
        Ok(Some(SessionDetail {
            summary: summary(key, &record, bytes, &self.expiry, now),
            data,
        }))
    }

    fn delete_sessions(&self, keys: &[ClientKey]) -> Result<u64, StoreError> {
        self.wait(self.pg().delete(keys.to_vec()))
    }

    fn sessions_of_principal(&self, principal: &str) -> Result<Vec<ClientKey>, StoreError> {
        records::check_part("principal", principal)?;
        self.wait(self.pg().by_principal(principal.to_owned()))
    }

    fn stats(&self) -> Result<ContainerStats, StoreError> {
        let mut stats = StatsBuilder::new(self.expiry, self.clock.now());
        let (times, bytes) = self.wait(self.pg().stats())?;
        for (created, last_access) in times {
            stats.add_session(&SessionRecord {
                version: 0,
                created,
                last_access,
                principal: None,
            });
        }
        stats.add_value_bytes(bytes);
        Ok(stats.finish(None))
    }

    fn sweep(&self, batch: usize) -> Result<SweepReport, StoreError> {
        let now = self.clock.now();
        let (idle, age) = (self.expiry.idle_cutoff(now), self.expiry.age_cutoff(now));
        self.wait(self.pg().sweep(idle, age, batch))
    }

    fn load_setting(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.wait(self.pg().load_setting(name.to_owned()))
    }

    fn store_setting(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.wait(self.pg().store_setting(name.to_owned(), value.to_vec()))
    }

    fn initialize_setting(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.wait(
            self.pg()
                .initialize_setting(name.to_owned(), value.to_vec()),
        )
    }
}
