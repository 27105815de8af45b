//! The durable container: one redb file, group commit, expiry indexes.

mod admin;
mod check;
mod codec;
mod committer;
mod open;
mod read_cache;
mod snapshot;
mod storage;
mod tables;
mod view;

use std::{
    fmt, io,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use keel_txn::{
    BoxError, DataManager, PendingVote, PerThread, SavepointState, ThreadHandle, Transaction,
};
use parking_lot::RwLock;
use redb::{ReadTransaction, StorageBackend};

pub use self::check::IntegrityReport;
use self::{
    committer::{CommitterHandle, DbSlot, Job, read_last_tid},
    open::{BackendFactory, Target, guard_panic, open_database},
    read_cache::CachedTables,
    snapshot::{LatestSnapshot, Snapshot},
    view::storage,
};
use crate::{
    Clock, ExpiryPolicy, StoreError, SystemClock,
    engine::{
        apply::ChangeSet,
        buffer::{At, Buffer, Validation, to_tree},
        container::BufferedContainer,
        records::{self, ItemKey},
    },
};

/// Process-wide counter that makes every redb container's sort key unique.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// How to open a [`RedbContainer`]: a builder with secure defaults.
///
/// ```
/// use keel_store::{ExpiryPolicy, RedbOptions};
/// let options = RedbOptions::new()
///     .with_expiry(ExpiryPolicy::default().with_timeout(1800))
///     .with_max_batch(128);
/// # let _ = options;
/// ```
#[derive(Clone)]
pub struct RedbOptions {
    expiry: ExpiryPolicy,
    clock: Arc<dyn Clock>,
    max_batch: usize,
    cache_size: Option<usize>,
    check_integrity: bool,
    read_only: bool,
    backend: Option<BackendFactory>,
}

impl fmt::Debug for RedbOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbOptions")
            .field("expiry", &self.expiry)
            .field("clock", &self.clock)
            .field("max_batch", &self.max_batch)
            .field("cache_size", &self.cache_size)
            .field("check_integrity", &self.check_integrity)
            .field("read_only", &self.read_only)
            .field("custom_backend", &self.backend.is_some())
            .finish()
    }
}

impl Default for RedbOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl RedbOptions {
    /// The defaults: [`ExpiryPolicy::default`], the system clock, batches of
    /// up to 256 commits, redb's default cache, no integrity check on open.
    pub fn new() -> Self {
        RedbOptions {
            expiry: ExpiryPolicy::default(),
            clock: Arc::new(SystemClock),
            max_batch: 256,
            cache_size: None,
            check_integrity: false,
            read_only: false,
            backend: None,
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

    /// Group at most `commits` commits into one durable redb commit (at least
    /// 1).
    pub fn with_max_batch(mut self, commits: usize) -> Self {
        self.max_batch = commits.max(1);
        self
    }

    /// Give redb a page cache of `bytes` (redb's default is 1 GiB, allocated
    /// as needed).
    pub fn with_cache_size(mut self, bytes: usize) -> Self {
        self.cache_size = Some(bytes);
        self
    }

    /// Verify every page checksum when opening (reads the whole file), so a
    /// file damaged outside redb is refused with [`StoreError::Corrupted`]
    /// instead of failing later.
    pub fn with_integrity_check(mut self, enabled: bool) -> Self {
        self.check_integrity = enabled;
        self
    }

    /// Open an existing database read-only: the file is opened for reading
    /// only and never written, not even to repair it (a file that was not
    /// closed cleanly is repaired in memory). A missing or empty file is an
    /// error, never made a database. Every write (a commit, a deletion, a
    /// sweep, a setting) fails with [`StoreError::ReadOnly`]; the integrity
    /// check is not made. For inspecting a file, also on a read-only file
    /// system.
    pub fn with_read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Store the database in redb storage backends made by `factory` instead
    /// of the file at the path given to [`RedbContainer::open_with`] (which
    /// then only names the database in errors).
    ///
    /// The factory is called for every open: once to look inside, once to
    /// open, and again whenever the container reopens the database after a
    /// storage error. Each call must return a new handle on the same storage.
    /// This is the hook for fault injection and crash simulation in tests.
    ///
    /// NOTE: this is the only place where a redb type appears in this crate's
    /// API; a redb major upgrade may change it.
    pub fn with_storage_backend(
        mut self,
        factory: impl Fn() -> io::Result<Box<dyn StorageBackend>> + Send + Sync + 'static,
    ) -> Self {
        self.backend = Some(Arc::new(factory));
        self
    }
}

/// A durable session data container in one redb file: zope.session's
/// `PersistentSessionDataContainer`, with group commit.
///
/// Every request transaction reads one consistent snapshot (a redb read
/// transaction opened at its first read). Its writes are buffered as live
/// values; at commit they are serialized, sent to the committer thread, and
/// validated against the current versions there. The commit returns only
/// after the batch it was part of is durable (`fdatasync`).
///
/// Sort key `keel-store/~redb/<id>`: it sorts after other containers, so it
/// votes (and writes durably) only after every other resource has voted.
///
/// Dropping the container (and every transaction that used it) closes the
/// file.
///
/// # Errors at commit
/// [`Transaction::commit`] fails with [`keel_txn::TxnError::Resource`], the
/// container's [`StoreError`] as its source:
/// [`StoreError::Unserializable`] (nothing written anywhere),
/// [`StoreError::Conflict`] (retryable), [`StoreError::Storage`] (nothing
/// written), [`StoreError::CommitOutcomeUnknown`] (the durable write failed
/// partway), [`StoreError::Closed`].
///
/// ```
/// use keel_store::{ClientKey, RedbContainer, SessionContainer, SessionValue};
/// use keel_txn::TransactionManager;
///
/// let dir = tempfile::tempdir()?;
/// let container = RedbContainer::open(dir.path().join("sessions.redb"))?;
/// let key = ClientKey::from_client_id("client");
/// let manager = TransactionManager::new();
///
/// let mut tx = manager.begin();
/// container.create_session(&mut tx, &key)?;
/// container.insert(&mut tx, &key, "app", "name", SessionValue::new("Ada"))?;
/// tx.commit()?; // durable when this returns
///
/// let mut tx = manager.begin();
/// let name = container.get(&mut tx, &key, "app", "name")?.expect("stored");
/// assert_eq!(name.to_typed::<String>()?, "Ada");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RedbContainer {
    // NOTE: every transaction's data manager holds a handle on `Inner`; a
    // per-thread one keeps requests on different cores from sharing its
    // reference count.
    inner: PerThread<Inner>,
    expiry: ExpiryPolicy,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for RedbContainer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbContainer")
            .field("path", &self.inner.path)
            .field("sort_key", &self.inner.sort_key)
            .field("expiry", &self.expiry)
            .finish_non_exhaustive()
    }
}

/// What the container shares with its data managers.
struct Inner {
    sort_key: String,
    path: PathBuf,
    is_file: bool,
    // NOTE: drop order (field order): the committer thread stops first,
    // then the shared snapshot goes, then the database it reads.
    committer: CommitterHandle,
    /// The newest committed state, shared by requests.
    latest: Arc<LatestSnapshot>,
    db: DbSlot,
}

impl RedbContainer {
    /// Open the session database at `path`, creating it if the file does not
    /// exist or is empty, with the default [`RedbOptions`]. A new database is
    /// created atomically: built under a temporary name beside `path`, then
    /// moved into place, so a failed creation leaves no file at `path`.
    ///
    /// # Errors
    /// As for [`open_with`](Self::open_with).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, RedbOptions::new())
    }

    /// Open the session database at `path` with `options`.
    ///
    /// A file that is not a redb database, or a redb database that Keel did
    /// not write, is refused before anything is written to it; so is a file
    /// of a newer format. A file that was not closed cleanly is repaired by
    /// redb (after checking, on an in-memory copy of the changed pages, that
    /// it is a Keel database).
    ///
    /// # Errors
    /// - [`StoreError::NotAKeelDatabase`]: not redb, or no `keel_meta` in a
    ///   redb database with tables.
    /// - [`StoreError::UnsupportedFormat`]: written by a newer Keel.
    /// - [`StoreError::DatabaseInUse`]: another process has it open.
    /// - [`StoreError::Corrupted`]: damaged beyond repair.
    /// - [`StoreError::CannotOpen`]: an I/O error (permissions, a read-only
    ///   or full file system, a directory, a missing file for a read-only
    ///   open); the message says what to do.
    /// - [`StoreError::Storage`]: the committer thread cannot start.
    pub fn open_with(path: impl AsRef<Path>, options: RedbOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let target = match &options.backend {
            Some(factory) => Target::Backend(Arc::clone(factory)),
            None => Target::File(path.clone()),
        };
        let db = open_database(&target, &path, &options)?;
        let last_tid = read_last_tid(&db)?;
        let latest = Arc::new(LatestSnapshot::default());
        latest.publish(&db);
        let slot: DbSlot = Arc::new(RwLock::new(Some(db)));
        let reopen = {
            let (target, path, options) = (target.clone(), path.clone(), options.clone());
            Box::new(move |read_only: bool| {
                let options = options.clone();
                let read_only = read_only || options.read_only;
                open_database(&target, &path, &options.with_read_only(read_only))
            })
        };
        let committer = CommitterHandle::start(
            path.clone(),
            Arc::clone(&slot),
            Arc::clone(&latest),
            reopen,
            last_tid,
            options.max_batch,
            options.expiry.absolute_lifetime().is_some(),
        )?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Ok(RedbContainer {
            inner: PerThread::new(Inner {
                sort_key: format!("keel-store/~redb/{id}"),
                is_file: matches!(target, Target::File(_)),
                path,
                committer,
                latest,
                db: slot,
            }),
            expiry: options.expiry,
            clock: options.clock,
        })
    }

    /// Check the database at `path` completely, without changing a byte of
    /// it: redb's check of every page (checksums, b-tree structure), then
    /// every Keel record (each session record and value decodes, each data
    /// record belongs to a session, the expiry and principal indexes agree
    /// with the session records). The file is opened read-only
    /// ([`RedbOptions::with_read_only`] is implied); a repair redb makes
    /// during its check stays in memory. Reads the whole file: a few seconds
    /// per GB (docs/PERFORMANCE.md, "Integrity check at start").
    ///
    /// Damage is reported in the [`IntegrityReport`], not as an error, also
    /// when it keeps the file from being opened.
    ///
    /// ```
    /// use keel_store::{RedbContainer, RedbOptions};
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("sessions.redb");
    /// drop(RedbContainer::open(&path)?);
    /// let report = RedbContainer::check_file(&path, RedbOptions::new())?;
    /// assert!(report.is_clean(), "{:?}", report.problems);
    /// assert_eq!(report.sessions, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As for a read-only [`open_with`](Self::open_with), except
    /// [`StoreError::Corrupted`], which is a problem of the report:
    /// [`StoreError::NotAKeelDatabase`], [`StoreError::UnsupportedFormat`],
    /// [`StoreError::DatabaseInUse`] (a server holds it: stop it, or check
    /// a copy), [`StoreError::CannotOpen`].
    pub fn check_file(
        path: impl AsRef<Path>,
        options: RedbOptions,
    ) -> Result<IntegrityReport, StoreError> {
        let path = path.as_ref();
        let target = match &options.backend {
            Some(factory) => Target::Backend(Arc::clone(factory)),
            None => Target::File(path.to_path_buf()),
        };
        check::check(&target, path, options)
    }

    /// Whether a panic on the current thread would now be caught by a redb
    /// container and returned as [`StoreError::Corrupted`]: redb may panic
    /// reading a file damaged outside it, and every call into redb is
    /// guarded. A process-wide panic hook can stay quiet then: the container
    /// logs one error line naming the file, and its error names the file
    /// and carries the panic's message.
    ///
    /// ```
    /// // Outside any container call.
    /// assert!(!keel_store::RedbContainer::panic_is_caught());
    /// ```
    pub fn panic_is_caught() -> bool {
        open::panic_is_caught()
    }

    /// The path the container was opened with.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Run an admin read, a panic of redb on a damaged file becoming
    /// [`StoreError::Corrupted`].
    fn guarded<T>(&self, work: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        guard_panic(&self.inner.path, work)?
    }
}

impl Inner {
    fn read_txn(&self) -> Result<ReadTransaction, StoreError> {
        {
            let slot = self.db.read();
            if let Some(db) = slot.as_ref() {
                return db.begin_read().map_err(storage(READ));
            }
        }
        // A storage error closed the database and reopening it failed: ask
        // the committer to try again (its error says why it cannot).
        self.committer.submit(Job::Reopen)?;
        let slot = self.db.read();
        let db = slot.as_ref().ok_or(StoreError::Closed)?;
        db.begin_read().map_err(storage(READ))
    }

    /// A snapshot of the newest committed state: the one the committer
    /// published, or (if it has none) one of our own.
    fn snapshot(&self) -> Result<ThreadHandle<Snapshot>, StoreError> {
        match self.latest.get() {
            Some(snapshot) => Ok(snapshot),
            None => Ok(ThreadHandle::new(Arc::new(Snapshot::of(self.read_txn()?)?))),
        }
    }
}

pub(crate) const READ: &str = "reading the session database";

/// A transaction's data manager for one redb container.
struct RedbDm {
    // NOTE: dropped first (field order), so the read transaction ends before
    // the last handle on the database may go.
    snapshot: Option<ThreadHandle<Snapshot>>,
    inner: ThreadHandle<Inner>,
    buffer: Buffer,
    prepared: Option<ChangeSet<Vec<u8>>>,
}

impl RedbDm {
    fn new(inner: ThreadHandle<Inner>) -> Self {
        RedbDm {
            snapshot: None,
            inner,
            buffer: Buffer::default(),
            prepared: None,
        }
    }

    fn reset(&mut self) {
        self.snapshot = None;
        self.prepared = None;
        self.buffer = Buffer::default();
    }
}

impl DataManager for RedbDm {
    fn sort_key(&self) -> &str {
        &self.inner.sort_key
    }

    fn commit(&mut self) -> Result<(), BoxError> {
        // Every read is done: release the snapshot so it pins no pages.
        self.snapshot = None;
        if !self.buffer.may_write() {
            // Read-only: nothing to encode, validate or send.
            return Ok(());
        }
        let changes = std::mem::take(&mut self.buffer)
            .change_set(Validation::IfWrites, |key: &ItemKey, value| {
                Ok(records::encode_value(&to_tree(key, value)?))
            })?;
        self.prepared = Some(changes);
        Ok(())
    }

    fn tpc_vote(&mut self) -> Result<(), BoxError> {
        let Some(changes) = self.prepared.take() else {
            return Ok(());
        };
        if !changes.has_writes() {
            // Read-only (a snapshot is consistent by itself): nothing to do.
            return Ok(());
        }
        self.inner.committer.submit(Job::Commit(changes))?;
        Ok(())
    }

    /// Queue the change set for the committer and return the wait for its
    /// durable commit as a future. If the future is dropped, the change set
    /// is still committed (or refused) by the committer: the outcome is
    /// unknown to the caller, as when a process dies after queuing it.
    fn tpc_vote_async(&mut self) -> Option<PendingVote> {
        let changes = self.prepared.take().filter(ChangeSet::has_writes)?;
        let done = self.inner.committer.submit_async(Job::Commit(changes));
        Some(Box::pin(async move {
            done.await?;
            Ok(())
        }))
    }

    fn tpc_finish(&mut self) {
        self.reset();
    }

    /// A read-only transaction read one consistent snapshot: nothing to
    /// validate, encode or send.
    fn has_nothing_to_commit(&self) -> bool {
        !self.buffer.may_write()
    }

    /// Only a commit that writes waits for the committer's fsync.
    fn commit_may_block(&self) -> bool {
        self.buffer.may_write()
    }

    /// The only wait, the committer's fsync, is the future
    /// [`tpc_vote_async`](DataManager::tpc_vote_async) returns.
    fn commit_async_may_block(&self) -> bool {
        false
    }

    fn tpc_abort(&mut self) {
        self.reset();
    }

    fn abort(&mut self) {
        self.reset();
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

impl BufferedContainer for RedbContainer {
    type View<'a> = CachedTables<'a>;

    fn policy(&self) -> &ExpiryPolicy {
        &self.expiry
    }

    fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    /// Run `op` on this transaction's buffer and snapshot.
    fn with_buffer<T>(
        &self,
        tx: &mut Transaction,
        op: impl for<'v> FnOnce(&mut Buffer, &mut Self::View<'v>, At) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let at = self.at();
        let dm = tx.join_with(&self.inner.sort_key, || RedbDm::new(self.inner.handle()))?;
        guard_panic(&self.inner.path, || {
            let snapshot = match &mut dm.snapshot {
                Some(snapshot) => snapshot,
                slot @ None => slot.insert(self.inner.snapshot()?),
            };
            let buffer = &mut dm.buffer;
            self.inner.latest.with_reads(snapshot, |cache| {
                let mut view = CachedTables {
                    tables: &snapshot.tables,
                    cache,
                };
                op(buffer, &mut view, at)
            })
        })?
    }
}
