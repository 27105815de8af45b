//! Opening a redb file: look inside without writing (is it a redb
//! database, one of Keel's, of a format this build reads?), let redb repair
//! a file that was not closed cleanly, create a new database atomically, open
//! an existing one read-only, and name the file in every error. redb may
//! panic on a file damaged outside redb: every step is guarded.
//!
//! A new database is built completely under a temporary name in the same
//! directory (mode 0600, tables and format version written, synced), then
//! linked into place and the directory synced: a file at the path is either
//! a complete Keel database or was never created by Keel. A temporary file
//! left by a process killed while creating (`.NAME.keel-new.*`) blocks
//! nothing; it may be deleted once no Keel is starting.
//!
//! A read-only open opens the file for reading only, and never writes a
//! byte of it: redb runs over a copy-on-write [`Overlay`] of the file, so it
//! checks the file as a normal open does and repairs one that was not closed
//! cleanly in memory, not on disk. (redb's own read-only open refuses a file
//! that needs a repair, and meets damage only later, when reading.)

use std::{
    cell::Cell,
    fs::{self, File},
    io,
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use redb::{
    Builder, Database, DatabaseError, ReadOnlyDatabase, ReadTransaction, ReadableDatabase,
    ReadableTable, StorageBackend, TableError, TransactionError, backends::FileBackend,
};

use crate::{
    StoreError,
    redb::{
        RedbOptions, codec,
        storage::{BoxedBackend, Overlay},
        tables,
    },
};

/// Makes a fresh handle on the storage of a [`RedbContainer`] opened with
/// [`RedbOptions::with_storage_backend`].
pub(crate) type BackendFactory = Arc<dyn Fn() -> io::Result<Box<dyn StorageBackend>> + Send + Sync>;

/// Where the database lives.
#[derive(Clone)]
pub(crate) enum Target {
    File(std::path::PathBuf),
    Backend(BackendFactory),
}

/// An open database.
pub(crate) enum Db {
    /// Opened for reading and writing.
    Writable(Database),
    /// Looked at by redb's read-only open (which refuses a file that was
    /// not closed cleanly, and checks less than a normal open).
    ReadOnly(ReadOnlyDatabase),
    /// Opened read-only: redb runs as a writer over an [`Overlay`] on a
    /// handle that can only read the file, so it checks the file (and
    /// repairs it, if it was not closed cleanly) as a normal open does,
    /// while nothing reaches the file. The committer refuses every write.
    Overlaid(Database),
}

impl Db {
    /// Begin a read transaction on the newest committed state.
    pub(crate) fn begin_read(&self) -> Result<ReadTransaction, TransactionError> {
        match self {
            Db::Writable(db) | Db::Overlaid(db) => db.begin_read(),
            Db::ReadOnly(db) => db.begin_read(),
        }
    }

    /// The database to write to, unless it was opened read-only.
    pub(crate) fn writable(&self) -> Option<&Database> {
        match self {
            Db::Writable(db) => Some(db),
            Db::ReadOnly(_) | Db::Overlaid(_) => None,
        }
    }
}

/// The magic number every redb file starts with.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// Open the database at `target` after checking that it is a Keel database
/// of a readable format: read-only if `options` say so, else creating it
/// (atomically) if the file is missing or empty.
pub(crate) fn open_database(
    target: &Target,
    path: &Path,
    options: &RedbOptions,
) -> Result<Db, StoreError> {
    // NOTE: redb may panic on a file damaged outside redb (it trusts a
    // cleanly closed file); every step of the open is guarded.
    guard_panic(path, || open_unguarded(target, path, options))?
}

fn open_unguarded(target: &Target, path: &Path, options: &RedbOptions) -> Result<Db, StoreError> {
    let mut builder = Builder::new();
    if let Some(bytes) = options.cache_size {
        builder.set_cache_size(bytes);
    }
    if options.read_only {
        return open_read_only(target, path, &builder);
    }
    // The integrity check commits: only for an open that may write.
    builder.set_check_integrity_on_open(options.check_integrity);
    let db = match target {
        Target::File(file) => {
            match file_state(file, path)? {
                FileState::Missing => create_new(file, path, &builder)?,
                FileState::Empty => replace_empty(file, path, &builder)?,
                FileState::Present => drop(look_inside(target, path, &Builder::new())?),
            }
            guard_panic(path, || builder.open(file))?.map_err(|err| failure(path, err))?
        }
        Target::Backend(factory) => {
            drop(look_inside(target, path, &Builder::new())?);
            let backend = BoxedBackend(factory().map_err(|err| cannot_open(path, err))?);
            guard_panic(path, || builder.create_with_backend(backend))?
                .map_err(|err| failure(path, err))?
        }
    };
    initialize(&db, path)?;
    Ok(Db::Writable(db))
}

/// What is at the path of a database file opened for writing.
enum FileState {
    Missing,
    /// A regular, empty file (not a symbolic link): created as a database.
    Empty,
    Present,
}

fn file_state(file: &Path, path: &Path) -> Result<FileState, StoreError> {
    let meta = match fs::metadata(file) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(FileState::Missing),
        Err(err) => return Err(cannot_open(path, err)),
    };
    if meta.is_dir() {
        return Err(is_a_directory(path));
    }
    if !meta.is_file() {
        return Err(not_keel(path, "not a regular file"));
    }
    if meta.len() > 0 {
        return Ok(FileState::Present);
    }
    let is_link = fs::symlink_metadata(file)
        .map_err(|err| cannot_open(path, err))?
        .file_type()
        .is_symlink();
    if is_link {
        // Replacing the link would leave its (empty) target as it was.
        return Err(not_keel(
            path,
            "an empty file behind a symbolic link; give the path of the file itself",
        ));
    }
    Ok(FileState::Empty)
}

/// Create the database at `file`, which did not exist: built under a
/// temporary name, then linked into place without replacing anything.
fn create_new(file: &Path, path: &Path, builder: &Builder) -> Result<(), StoreError> {
    let temp = build_database(file, path, builder)?;
    let placed = match fs::hard_link(&temp, file) {
        Ok(()) => Ok(()),
        // Another process created it meanwhile: open that one.
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        // NOTE: a file system without hard links: rename, which would
        // replace a database another process created in the same instant.
        Err(_) => fs::rename(&temp, file),
    };
    // Gone after a rename; after a link, the database has its own name.
    let _ = fs::remove_file(&temp);
    placed.map_err(|err| cannot_open(path, err))?;
    sync_directory(file, path)
}

/// Create the database at `file`, an empty file: built under a temporary
/// name, then renamed over it.
fn replace_empty(file: &Path, path: &Path, builder: &Builder) -> Result<(), StoreError> {
    // NOTE: two processes may find the same empty file; the one holding an
    // exclusive lock on it replaces it. After the lock is taken, the file
    // must still be the one at the path, still empty: else another process
    // replaced it, and that database is opened as it is.
    let empty = File::open(file).map_err(|err| cannot_open(path, err))?;
    match empty.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            return Err(StoreError::DatabaseInUse {
                path: path.to_path_buf(),
            });
        }
        // Locks unsupported here: go on, as redb itself does.
        Err(fs::TryLockError::Error(_)) => {}
    }
    if !still_at(&empty, file)? {
        return Ok(());
    }
    let temp = build_database(file, path, builder)?;
    // NOTE: the empty file's mode is the operator's choice (it may be 0640
    // for a group that reads backups): the database that replaces it keeps
    // it rather than the 0600 of a file Keel creates.
    let kept = empty
        .metadata()
        .and_then(|metadata| fs::set_permissions(&temp, metadata.permissions()));
    if let Err(err) = kept {
        let _ = fs::remove_file(&temp);
        return Err(cannot_open(path, err));
    }
    if let Err(err) = fs::rename(&temp, file) {
        let _ = fs::remove_file(&temp);
        return Err(cannot_open(path, err));
    }
    drop(empty);
    sync_directory(file, path)
}

/// Whether `handle` is still the empty file at `file`.
fn still_at(handle: &File, file: &Path) -> Result<bool, StoreError> {
    let held = handle.metadata().map_err(|err| cannot_open(file, err))?;
    let Ok(now) = fs::metadata(file) else {
        return Ok(false);
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if (held.dev(), held.ino()) != (now.dev(), now.ino()) {
            return Ok(false);
        }
    }
    Ok(held.len() == 0 && now.len() == 0)
}

/// Build a complete, synced Keel database under a temporary name beside
/// `file`, and return that name. On failure nothing is left behind.
fn build_database(file: &Path, path: &Path, builder: &Builder) -> Result<PathBuf, StoreError> {
    let temp = temporary_name(file, path)?;
    let built = (|| {
        create_private(&temp).map_err(|err| cannot_open(path, err))?;
        let db = guard_panic(path, || builder.create(&temp))?.map_err(|err| failure(path, err))?;
        initialize(&db, path)?;
        // A clean close: the file opens later without a repair.
        db.close().map_err(|err| failure(path, err))?;
        File::open(&temp)
            .and_then(|done| done.sync_all())
            .map_err(|err| cannot_open(path, err))
    })();
    match built {
        Ok(()) => Ok(temp),
        Err(err) => {
            let _ = fs::remove_file(&temp);
            Err(err)
        }
    }
}

/// `.NAME.keel-new.PID.NANOS` beside `file`: unique, so that a leftover of
/// a killed process never blocks a later creation.
fn temporary_name(file: &Path, path: &Path) -> Result<PathBuf, StoreError> {
    let Some(name) = file.file_name() else {
        return Err(is_a_directory(path));
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let mut temp = std::ffi::OsString::from(".");
    temp.push(name);
    temp.push(format!(".keel-new.{}.{nanos}", std::process::id()));
    Ok(file.with_file_name(temp))
}

/// Make the new name durable (on Unix; elsewhere the rename is all).
fn sync_directory(file: &Path, path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        let dir = match file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|err| cannot_open(path, err))?;
    }
    #[cfg(not(unix))]
    let _ = (file, path);
    Ok(())
}

/// Create `file`, empty, readable and writable by its owner only (mode 0600:
/// it will hold the signing key ring and every session's data); it must not
/// exist.
fn create_private(file: &Path) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(file).map(drop)
}

thread_local! {
    /// How many [`guard_panic`] calls the current thread is inside.
    static GUARDED: Cell<u32> = const { Cell::new(0) };
}

/// Whether a panic on the current thread would now be caught by
/// [`guard_panic`] (see [`RedbContainer::panic_is_caught`]).
///
/// [`RedbContainer::panic_is_caught`]: crate::RedbContainer::panic_is_caught
pub(crate) fn panic_is_caught() -> bool {
    GUARDED.with(|depth| depth.get() > 0)
}

/// Marks the current thread as inside [`guard_panic`] while it lives (also
/// while a panic unwinds through it).
struct Guarded;

impl Guarded {
    fn enter() -> Self {
        GUARDED.with(|depth| depth.set(depth.get().saturating_add(1)));
        Guarded
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        GUARDED.with(|depth| depth.set(depth.get().saturating_sub(1)));
    }
}

/// Run `work` on redb, turning a panic on a damaged file into
/// [`StoreError::Corrupted`] naming the file and carrying the panic's
/// message; the panic is logged as one error line naming the file.
pub(crate) fn guard_panic<T>(path: &Path, work: impl FnOnce() -> T) -> Result<T, StoreError> {
    let caught = {
        let _guarded = Guarded::enter();
        catch_unwind(AssertUnwindSafe(work))
    };
    caught.map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_owned());
        // NOTE: the innermost guard catches (and logs) a panic; the guards
        // around it see an error, no panic.
        tracing::error!(
            path = %path.display(),
            panic = %message,
            "the session database {} is damaged: redb failed reading it; check it with `keel \
             sessions check --db {}` (with the server stopped)",
            path.display(),
            path.display()
        );
        StoreError::Corrupted {
            path: path.to_path_buf(),
            source: format!("redb could not read the file's structure ({message})").into(),
        }
    })
}

fn not_keel(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::NotAKeelDatabase {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// An I/O error of the open, naming the file and what to do.
pub(crate) fn cannot_open(path: &Path, err: io::Error) -> StoreError {
    let remedy = remedy(err.kind());
    cannot_open_with(path, err, remedy)
}

fn cannot_open_with(path: &Path, err: io::Error, remedy: &str) -> StoreError {
    StoreError::CannotOpen {
        path: path.to_path_buf(),
        remedy: remedy.to_owned(),
        source: Box::new(err),
    }
}

fn is_a_directory(path: &Path) -> StoreError {
    cannot_open(
        path,
        io::Error::new(io::ErrorKind::IsADirectory, "is a directory"),
    )
}

/// What the operator can do about an I/O error of kind `kind`.
fn remedy(kind: io::ErrorKind) -> &'static str {
    use io::ErrorKind as K;
    match kind {
        K::PermissionDenied => {
            "check the owner and mode of the file and of its directory: the user running keel \
             needs to read it (and to write it and its directory, except for `keel sessions \
             list|show|stats|export`)"
        }
        K::ReadOnlyFilesystem => {
            "its file system is mounted read-only: remount it read-write or move the database \
             (`keel sessions list|show|stats|export` read it as it is)"
        }
        K::StorageFull | K::QuotaExceeded => {
            "free space on its file system (or raise the quota) and start again; no partial \
             database is left behind"
        }
        K::FileTooLarge => {
            "the file size limit was reached: raise it (`ulimit -f`) or use a file system that \
             allows larger files"
        }
        K::IsADirectory => "give a file path, not a directory (for example DIR/keel.redb)",
        K::NotFound => "check the path (its directory must exist)",
        _ => "check the file and the file system it is on",
    }
}

/// A redb error of the open (or of the creation's first commit), naming the
/// file: in use, damaged, of an old format, or an I/O error.
fn failure(path: &Path, err: impl Into<redb::Error>) -> StoreError {
    let path = path.to_path_buf();
    match err.into() {
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => {
            StoreError::DatabaseInUse { path }
        }
        redb::Error::UpgradeRequired(version) => StoreError::NotAKeelDatabase {
            path,
            reason: format!("a redb database of file format {version}, older than Keel's"),
        },
        redb::Error::Io(io) if io.kind() == io::ErrorKind::InvalidData => StoreError::Corrupted {
            path,
            source: Box::new(io),
        },
        redb::Error::Io(io) => cannot_open(&path, io),
        err @ redb::Error::Corrupted(_) => StoreError::Corrupted {
            path,
            source: Box::new(err),
        },
        redb::Error::RepairAborted => StoreError::Corrupted {
            path,
            source: "the file needs a repair that could not be made".into(),
        },
        other => StoreError::CannotOpen {
            path,
            remedy: remedy(io::ErrorKind::Other).to_owned(),
            source: Box::new(other),
        },
    }
}

/// Before a read-only open of a file: it exists, is a regular file, and is
/// not empty (a read-only open creates nothing).
fn check_readable_file(file: &Path, path: &Path) -> Result<(), StoreError> {
    let meta = fs::metadata(file).map_err(|err| {
        if err.kind() == io::ErrorKind::NotFound {
            cannot_open_with(
                path,
                err,
                "give the path of an existing database (a read-only open creates nothing)",
            )
        } else {
            cannot_open(path, err)
        }
    })?;
    if meta.is_dir() {
        return Err(is_a_directory(path));
    }
    if !meta.is_file() {
        return Err(not_keel(path, "not a regular file"));
    }
    Ok(())
}

/// A new handle on the storage of `target`, reading only if a file; `None`
/// for a missing file.
fn base_backend(
    target: &Target,
    path: &Path,
) -> Result<Option<Box<dyn StorageBackend>>, StoreError> {
    match target {
        Target::File(file) => match File::open(file) {
            Ok(file) => Ok(Some(Box::new(
                FileBackend::new(file).map_err(|err| failure(path, err))?,
            ))),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(cannot_open(path, err)),
        },
        Target::Backend(factory) => factory().map(Some).map_err(|err| cannot_open(path, err)),
    }
}

/// Open the existing database at `target` read-only (see [`Db::Overlaid`]),
/// after checking that it is a Keel database of a readable format with
/// every table.
fn open_read_only(target: &Target, path: &Path, builder: &Builder) -> Result<Db, StoreError> {
    let empty = || {
        not_keel(
            path,
            "the file is empty; a read-only open creates nothing (give the path of an \
             existing database)",
        )
    };
    if look_inside(target, path, &Builder::new())?.is_none() {
        return Err(empty());
    }
    let base = base_backend(target, path)?.ok_or_else(empty)?;
    let overlay = Overlay::new(base).map_err(|err| cannot_open(path, err))?;
    let db = Db::Overlaid(
        guard_panic(path, || builder.create_with_backend(overlay))?
            .map_err(|err| failure(path, err))?,
    );
    check_tables(&db, path)?;
    Ok(db)
}

/// Open the database at `target` without writing to it, after checking
/// that it is a redb database, one of Keel's, in a format this build reads.
/// `None` for a missing or empty file (or storage).
fn look_inside(target: &Target, path: &Path, builder: &Builder) -> Result<Option<Db>, StoreError> {
    let base = || base_backend(target, path);
    if let Target::File(file) = target {
        check_readable_file(file, path)?;
    }
    let Some(first) = base()? else {
        return Ok(None);
    };
    let len = first.len().map_err(|err| cannot_open(path, err))?;
    if len == 0 {
        return Ok(None);
    }
    let mut magic = [0u8; REDB_MAGIC.len()];
    if len < magic.len() as u64 || first.read(0, &mut magic).is_err() || magic != REDB_MAGIC {
        let reason = if magic == [0; REDB_MAGIC.len()] {
            "not a redb database (it starts with zero bytes: a creation that failed, for \
             example on a full disk, before creation was atomic; remove it if it holds nothing \
             you need)"
        } else {
            "not a redb database"
        };
        return Err(not_keel(path, reason));
    }
    let read_only = guard_panic(path, || {
        builder.open_read_only_with_backend(BoxedBackend(first))
    })?;
    let db = match read_only {
        Ok(db) => Db::ReadOnly(db),
        Err(DatabaseError::RepairAborted) => {
            // Not closed cleanly: let redb repair a copy-on-write overlay of
            // the file, and look at the repaired state.
            let Some(second) = base()? else {
                return Ok(None);
            };
            let overlay = Overlay::new(second).map_err(|err| cannot_open(path, err))?;
            Db::Overlaid(
                guard_panic(path, || builder.create_with_backend(overlay))?
                    .map_err(|err| failure(path, err))?,
            )
        }
        Err(err) => return Err(failure(path, err)),
    };
    match &db {
        Db::ReadOnly(db) => check_meta(db, path)?,
        Db::Writable(db) | Db::Overlaid(db) => check_meta(db, path)?,
    }
    Ok(Some(db))
}

/// Check the format version of a database; an empty redb database (no
/// tables at all) is accepted and initialized on open.
fn check_meta(db: &impl ReadableDatabase, path: &Path) -> Result<(), StoreError> {
    let txn = db.begin_read().map_err(|err| failure(path, err))?;
    let meta = match txn.open_table(tables::META) {
        Ok(meta) => meta,
        Err(TableError::TableDoesNotExist(_)) => {
            let has_tables = txn
                .list_tables()
                .map_err(|err| failure(path, err))?
                .next()
                .is_some()
                || txn
                    .list_multimap_tables()
                    .map_err(|err| failure(path, err))?
                    .next()
                    .is_some();
            return if has_tables {
                Err(not_keel(path, "a redb database without a keel_meta table"))
            } else {
                Ok(())
            };
        }
        Err(TableError::Storage(err)) => return Err(failure(path, err)),
        Err(err) => return Err(not_keel(path, format!("unexpected keel_meta table: {err}"))),
    };
    let version = meta
        .get(tables::META_FORMAT_VERSION)
        .map_err(|err| failure(path, err))?
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

/// Whether every table Keel reads exists in the state `txn` sees.
fn has_every_table(txn: &ReadTransaction) -> bool {
    txn.open_table(tables::META).is_ok()
        && txn.open_table(tables::SESSIONS).is_ok()
        && txn.open_table(tables::DATA).is_ok()
        && txn.open_table(tables::BY_ACCESS).is_ok()
        && txn.open_table(tables::BY_CREATED).is_ok()
        && txn.open_table(tables::PRINCIPALS).is_ok()
        && txn.open_table(tables::SETTINGS).is_ok()
}

/// A database opened read-only cannot be initialized: it must have every
/// table already.
fn check_tables(db: &Db, path: &Path) -> Result<(), StoreError> {
    let txn = db.begin_read().map_err(|err| failure(path, err))?;
    if has_every_table(&txn) {
        Ok(())
    } else {
        Err(not_keel(
            path,
            "a redb database without Keel's tables (never fully created); a read-only open \
             cannot create them",
        ))
    }
}

/// Create the tables and the format record if any is missing.
fn initialize(db: &Database, path: &Path) -> Result<(), StoreError> {
    check_meta(db, path)?;
    {
        let txn = db.begin_read().map_err(|err| failure(path, err))?;
        if has_every_table(&txn) {
            return Ok(());
        }
    }
    let fail = |err: redb::Error| failure(path, err);
    let txn = db.begin_write().map_err(|err| fail(err.into()))?;
    {
        let mut meta = txn
            .open_table(tables::META)
            .map_err(|err| fail(err.into()))?;
        if meta
            .get(tables::META_FORMAT_VERSION)
            .map_err(|err| fail(err.into()))?
            .is_none()
        {
            meta.insert(
                tables::META_FORMAT_VERSION,
                tables::FORMAT_VERSION.to_le_bytes().as_slice(),
            )
            .map_err(|err| fail(err.into()))?;
            meta.insert(tables::META_LAST_TID, 0u64.to_le_bytes().as_slice())
                .map_err(|err| fail(err.into()))?;
        }
        txn.open_table(tables::SESSIONS)
            .map_err(|err| fail(err.into()))?;
        txn.open_table(tables::DATA)
            .map_err(|err| fail(err.into()))?;
        txn.open_table(tables::BY_ACCESS)
            .map_err(|err| fail(err.into()))?;
        txn.open_table(tables::BY_CREATED)
            .map_err(|err| fail(err.into()))?;
        txn.open_table(tables::PRINCIPALS)
            .map_err(|err| fail(err.into()))?;
        txn.open_table(tables::SETTINGS)
            .map_err(|err| fail(err.into()))?;
    }
    txn.commit().map_err(|err| fail(err.into()))
}
