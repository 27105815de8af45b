//! The durable container: one redb file, group commit, expiry indexes.

use std::{
    fmt, io,
    ops::Bound,
    panic::{AssertUnwindSafe, catch_unwind},
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
use redb::{
    Builder, Database, DatabaseError, ReadTransaction, ReadableDatabase, ReadableTable,
    StorageBackend, StorageError, TableError, backends::FileBackend,
};

use crate::{
    ClientKey, Clock, ContainerStats, ExpiryPolicy, SessionAdmin, SessionDetail, SessionSummary,
    StoreError, SweepReport, SystemClock, Value,
    admin::{StatsBuilder, summary},
    apply::ChangeSet,
    backend::{BoxedBackend, Overlay},
    buffer::{At, Buffer, Validation, to_tree},
    codec::{self, DataKey, ItemKey},
    commit::{CommitterHandle, DbSlot, Done, Job, read_last_tid},
    read_cache::CachedTables,
    redb_view::{snapshot_tables, storage},
    snapshot::{LatestSnapshot, Snapshot},
    tables,
};

/// Makes a fresh handle on the storage of a [`RedbContainer`] opened with
/// [`RedbOptions::with_storage_backend`].
type BackendFactory = Arc<dyn Fn() -> io::Result<Box<dyn StorageBackend>> + Send + Sync>;

/// The magic number every redb file starts with.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

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

/// Where the database lives.
#[derive(Clone)]
enum Target {
    File(PathBuf),
    Backend(BackendFactory),
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
    /// exist or is empty, with the default [`RedbOptions`].
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
    /// - [`StoreError::Storage`]: any other I/O error.
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
            Box::new(move || open_database(&target, &path, &options))
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

    /// The path the container was opened with.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn at(&self) -> At {
        At {
            policy: self.expiry,
            now: self.clock.now(),
        }
    }

    /// Run `op` on this transaction's buffer and snapshot.
    fn with_buffer<T>(
        &self,
        tx: &mut Transaction,
        op: impl FnOnce(&mut Buffer, &mut CachedTables<'_>, At) -> Result<T, StoreError>,
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

const READ: &str = "reading the session database";
const OPEN: &str = "opening the session database";

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
                Ok(codec::encode_value(&to_tree(key, value)?))
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

/// Open (creating if new) the database at `target`, after checking that it
/// is a Keel database of a readable format; initialize it if new.
fn open_database(
    target: &Target,
    path: &Path,
    options: &RedbOptions,
) -> Result<Database, StoreError> {
    // NOTE: redb may panic on a file damaged outside redb (it trusts a
    // cleanly closed file); every step of the open is guarded.
    guard_panic(path, || open_unguarded(target, path, options))?
}

fn open_unguarded(
    target: &Target,
    path: &Path,
    options: &RedbOptions,
) -> Result<Database, StoreError> {
    probe(target, path)?;
    let mut builder = Builder::new();
    if let Some(bytes) = options.cache_size {
        builder.set_cache_size(bytes);
    }
    builder.set_check_integrity_on_open(options.check_integrity);
    let opened = match target {
        Target::File(file) => guard_panic(path, || builder.create(file))?,
        Target::Backend(factory) => {
            let backend = BoxedBackend(factory().map_err(storage(OPEN))?);
            guard_panic(path, || builder.create_with_backend(backend))?
        }
    };
    let db = opened.map_err(|err| open_error(path, err))?;
    initialize(&db, path)?;
    Ok(db)
}

/// Run `work` on redb, turning a panic on a damaged file into
/// [`StoreError::Corrupted`].
pub(crate) fn guard_panic<T>(path: &Path, work: impl FnOnce() -> T) -> Result<T, StoreError> {
    catch_unwind(AssertUnwindSafe(work)).map_err(|_| StoreError::Corrupted {
        path: path.to_path_buf(),
        source: "redb could not read the file's structure".into(),
    })
}

fn not_keel(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::NotAKeelDatabase {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn open_error(path: &Path, err: DatabaseError) -> StoreError {
    let path = path.to_path_buf();
    match err {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            StoreError::DatabaseInUse { path }
        }
        DatabaseError::UpgradeRequired(version) => StoreError::NotAKeelDatabase {
            path,
            reason: format!("a redb database of file format {version}, older than Keel's"),
        },
        DatabaseError::Storage(StorageError::Io(io)) if io.kind() == io::ErrorKind::InvalidData => {
            StoreError::Corrupted {
                path,
                source: Box::new(io),
            }
        }
        DatabaseError::Storage(err @ StorageError::Corrupted(_)) => StoreError::Corrupted {
            path,
            source: Box::new(err),
        },
        DatabaseError::RepairAborted => StoreError::Corrupted {
            path,
            source: "the file needs a repair that could not be made".into(),
        },
        other => StoreError::Storage {
            operation: OPEN,
            source: Box::new(other),
        },
    }
}

/// Look inside an existing file without writing to it: is it a redb
/// database, and one of Keel's, in a format this build reads?
fn probe(target: &Target, path: &Path) -> Result<(), StoreError> {
    let base = || -> Result<Option<Box<dyn StorageBackend>>, StoreError> {
        match target {
            Target::File(file) => match std::fs::File::open(file) {
                Ok(file) => Ok(Some(Box::new(
                    FileBackend::new(file).map_err(|err| open_error(path, err))?,
                ))),
                Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(err) => Err(storage(OPEN)(err)),
            },
            Target::Backend(factory) => factory().map(Some).map_err(storage(OPEN)),
        }
    };
    let Some(first) = base()? else {
        return Ok(());
    };
    let len = first.len().map_err(storage(OPEN))?;
    if len == 0 {
        return Ok(());
    }
    let mut magic = [0u8; REDB_MAGIC.len()];
    if len < magic.len() as u64 || first.read(0, &mut magic).is_err() || magic != REDB_MAGIC {
        return Err(not_keel(path, "not a redb database"));
    }
    let read_only = guard_panic(path, || {
        Builder::new().open_read_only_with_backend(BoxedBackend(first))
    })?;
    match read_only {
        Ok(db) => check_meta(&db, path),
        Err(DatabaseError::RepairAborted) => {
            // Not closed cleanly: let redb repair a copy-on-write overlay of
            // the file, and look at the repaired state.
            let Some(second) = base()? else {
                return Ok(());
            };
            let overlay = Overlay::new(second).map_err(storage(OPEN))?;
            let db = guard_panic(path, || Builder::new().create_with_backend(overlay))?
                .map_err(|err| open_error(path, err))?;
            check_meta(&db, path)
        }
        Err(err) => Err(open_error(path, err)),
    }
}

/// Check the format version of a database; an empty redb database (no
/// tables at all) is accepted and initialized on open.
fn check_meta(db: &impl ReadableDatabase, path: &Path) -> Result<(), StoreError> {
    let txn = db.begin_read().map_err(|err| read_error(path, err))?;
    let meta = match txn.open_table(tables::META) {
        Ok(meta) => meta,
        Err(TableError::TableDoesNotExist(_)) => {
            let has_tables = txn
                .list_tables()
                .map_err(|err| read_error(path, err))?
                .next()
                .is_some()
                || txn
                    .list_multimap_tables()
                    .map_err(|err| read_error(path, err))?
                    .next()
                    .is_some();
            return if has_tables {
                Err(not_keel(path, "a redb database without a keel_meta table"))
            } else {
                Ok(())
            };
        }
        Err(TableError::Storage(err)) => return Err(read_error(path, err)),
        Err(err) => return Err(not_keel(path, format!("unexpected keel_meta table: {err}"))),
    };
    let version = meta
        .get(tables::META_FORMAT_VERSION)
        .map_err(|err| read_error(path, err))?
        .and_then(|guard| codec::meta_u64(guard.value()));
    match version {
        None | Some(0) => Err(not_keel(path, "keel_meta holds no format version")),
        Some(found) if found > u64::from(tables::FORMAT_VERSION) => {
            Err(StoreError::UnsupportedFormat {
                path: path.to_path_buf(),
                found: u32::try_from(found).unwrap_or(u32::MAX),
                supported: tables::FORMAT_VERSION,
            })
        }
        Some(_) => Ok(()),
    }
}

/// A read error while opening: damage is [`StoreError::Corrupted`].
fn read_error<E>(path: &Path, err: E) -> StoreError
where
    E: Into<redb::Error>,
{
    match err.into() {
        err @ redb::Error::Corrupted(_) => StoreError::Corrupted {
            path: path.to_path_buf(),
            source: Box::new(err),
        },
        err => StoreError::Storage {
            operation: OPEN,
            source: Box::new(err),
        },
    }
}

/// Create the tables and the format record if any is missing.
fn initialize(db: &Database, path: &Path) -> Result<(), StoreError> {
    check_meta(db, path)?;
    {
        let txn = db.begin_read().map_err(|err| read_error(path, err))?;
        let complete = txn.open_table(tables::META).is_ok()
            && txn.open_table(tables::SESSIONS).is_ok()
            && txn.open_table(tables::DATA).is_ok()
            && txn.open_table(tables::BY_ACCESS).is_ok()
            && txn.open_table(tables::BY_CREATED).is_ok()
            && txn.open_table(tables::PRINCIPALS).is_ok()
            && txn.open_table(tables::SETTINGS).is_ok();
        if complete {
            return Ok(());
        }
    }
    const INIT: &str = "initializing the session database";
    let txn = db.begin_write().map_err(storage(INIT))?;
    {
        let mut meta = txn.open_table(tables::META).map_err(storage(INIT))?;
        if meta
            .get(tables::META_FORMAT_VERSION)
            .map_err(storage(INIT))?
            .is_none()
        {
            meta.insert(
                tables::META_FORMAT_VERSION,
                tables::FORMAT_VERSION.to_le_bytes().as_slice(),
            )
            .map_err(storage(INIT))?;
            meta.insert(tables::META_LAST_TID, 0u64.to_le_bytes().as_slice())
                .map_err(storage(INIT))?;
        }
        txn.open_table(tables::SESSIONS).map_err(storage(INIT))?;
        txn.open_table(tables::DATA).map_err(storage(INIT))?;
        txn.open_table(tables::BY_ACCESS).map_err(storage(INIT))?;
        txn.open_table(tables::BY_CREATED).map_err(storage(INIT))?;
        txn.open_table(tables::PRINCIPALS).map_err(storage(INIT))?;
        txn.open_table(tables::SETTINGS).map_err(storage(INIT))?;
    }
    txn.commit().map_err(storage(INIT))
}

crate::buffer::impl_session_container!(RedbContainer);

/// The bytes of stored values of a session: each item record less its
/// version header.
fn value_bytes(
    data: &impl ReadableTable<&'static [u8], &'static [u8]>,
    client: &ClientKey,
) -> Result<u64, StoreError> {
    let bounds = codec::prefix_bounds(client.as_bytes());
    let mut bytes = 0;
    for entry in data
        .range::<&[u8]>(codec::as_slices(&bounds))
        .map_err(storage(READ))?
    {
        let (key, record) = entry.map_err(storage(READ))?;
        bytes += stored_value_len(key.value(), record.value())?;
    }
    Ok(bytes)
}

/// The bytes of the encoded value of a data record; 0 for a version record.
fn stored_value_len(key: &[u8], record: &[u8]) -> Result<u64, StoreError> {
    let (client, DataKey::Item(package, name)) = codec::split_data_key(key)? else {
        return Ok(0);
    };
    let item = ItemKey {
        client,
        package,
        name,
    };
    Ok(codec::split_item(&item, record)?.1.len() as u64)
}

impl SessionAdmin for RedbContainer {
    fn list_sessions(
        &self,
        after: Option<&ClientKey>,
        limit: usize,
    ) -> Result<Vec<SessionSummary>, StoreError> {
        self.guarded(|| {
            let now = self.clock.now();
            let txn = self.inner.read_txn()?;
            let tables = snapshot_tables(&txn)?;
            let start = after.map_or(Bound::Unbounded, |key| Bound::Excluded(key.as_bytes()));
            let mut out = Vec::new();
            for entry in tables
                .sessions
                .range::<&[u8; 32]>((start, Bound::Unbounded))
                .map_err(storage(READ))?
            {
                if out.len() >= limit {
                    break;
                }
                let (key, record) = entry.map_err(storage(READ))?;
                let client = ClientKey::from_bytes(*key.value());
                let record = codec::decode_session(&client, record.value())?;
                let bytes = value_bytes(&tables.data, &client)?;
                out.push(summary(&client, &record, bytes, &self.expiry, now));
            }
            Ok(out)
        })
    }

    fn session_detail(&self, key: &ClientKey) -> Result<Option<SessionDetail>, StoreError> {
        self.guarded(|| {
            use crate::view::ReadView;
            use std::collections::BTreeMap;

            let now = self.clock.now();
            let txn = self.inner.read_txn()?;
            let tables = snapshot_tables(&txn)?;
            let Some(record) = (&tables).session(key)? else {
                return Ok(None);
            };
            let mut data: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
            let mut bytes = 0;
            let bounds = codec::prefix_bounds(key.as_bytes());
            for entry in tables
                .data
                .range::<&[u8]>(codec::as_slices(&bounds))
                .map_err(storage(READ))?
            {
                let (item_key, item) = entry.map_err(storage(READ))?;
                let (client, DataKey::Item(package, name)) =
                    codec::split_data_key(item_key.value())?
                else {
                    continue;
                };
                let item_key = ItemKey {
                    client,
                    package,
                    name,
                };
                let (_, encoded) = codec::split_item(&item_key, item.value())?;
                bytes += encoded.len() as u64;
                let value = codec::decode_value(&item_key, encoded)?;
                data.entry(item_key.package)
                    .or_default()
                    .insert(item_key.name, value);
            }
            Ok(Some(SessionDetail {
                summary: summary(key, &record, bytes, &self.expiry, now),
                data,
            }))
        })
    }

    fn delete_sessions(&self, keys: &[ClientKey]) -> Result<u64, StoreError> {
        match self
            .inner
            .committer
            .submit(Job::DeleteSessions(keys.to_vec()))?
        {
            Done::Deleted(count) => Ok(count),
            _ => Ok(0),
        }
    }

    fn sessions_of_principal(&self, principal: &str) -> Result<Vec<ClientKey>, StoreError> {
        self.guarded(|| {
            codec::check_part("principal", principal)?;
            let txn = self.inner.read_txn()?;
            let index = txn.open_table(tables::PRINCIPALS).map_err(storage(READ))?;
            let bounds = codec::prefix_bounds(&codec::principal_prefix(principal));
            let mut keys = Vec::new();
            for entry in index
                .range::<&[u8]>(codec::as_slices(&bounds))
                .map_err(storage(READ))?
            {
                let (key, _) = entry.map_err(storage(READ))?;
                keys.push(codec::client_of_index_key(key.value())?);
            }
            Ok(keys)
        })
    }

    fn stats(&self) -> Result<ContainerStats, StoreError> {
        self.guarded(|| {
            let mut stats = StatsBuilder::new(self.expiry, self.clock.now());
            let txn = self.inner.read_txn()?;
            let tables = snapshot_tables(&txn)?;
            for entry in tables.sessions.iter().map_err(storage(READ))? {
                let (key, record) = entry.map_err(storage(READ))?;
                let client = ClientKey::from_bytes(*key.value());
                stats.add_session(&codec::decode_session(&client, record.value())?);
            }
            for entry in tables.data.iter().map_err(storage(READ))? {
                let (key, record) = entry.map_err(storage(READ))?;
                stats.add_value_bytes(stored_value_len(key.value(), record.value())?);
            }
            let file_bytes = if self.inner.is_file {
                std::fs::metadata(&self.inner.path).ok().map(|m| m.len())
            } else {
                None
            };
            Ok(stats.finish(file_bytes))
        })
    }

    fn sweep(&self, batch: usize) -> Result<SweepReport, StoreError> {
        let job = Job::Sweep {
            policy: self.expiry,
            now: self.clock.now(),
            batch,
        };
        match self.inner.committer.submit(job)? {
            Done::Swept(report) => Ok(report),
            _ => Ok(SweepReport::default()),
        }
    }

    fn load_setting(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.guarded(|| {
            let txn = self.inner.read_txn()?;
            let settings = txn.open_table(tables::SETTINGS).map_err(storage(READ))?;
            Ok(settings
                .get(name)
                .map_err(storage(READ))?
                .map(|guard| guard.value().to_vec()))
        })
    }

    fn store_setting(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let job = Job::StoreSetting {
            name: name.to_owned(),
            value: value.to_vec(),
        };
        self.inner.committer.submit(job).map(|_| ())
    }
}
