//! Opening a redb file: look inside without writing (is it a redb
//! database, one of Keel's, of a format this build reads?), let redb repair
//! a file that was not closed cleanly, create the tables of a new one, and
//! name the file in every error. redb may panic on a file damaged outside
//! redb: every step is guarded.

use std::{
    io,
    panic::{AssertUnwindSafe, catch_unwind},
    path::Path,
    sync::Arc,
};

use redb::{
    Builder, Database, DatabaseError, ReadableDatabase, ReadableTable, StorageBackend,
    StorageError, TableError, backends::FileBackend,
};

use crate::{
    StoreError,
    redb::{
        RedbOptions, codec,
        storage::{BoxedBackend, Overlay},
        tables,
        view::storage,
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

/// The magic number every redb file starts with.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

const OPEN: &str = "opening the session database";

/// Open (creating if new) the database at `target`, after checking that it
/// is a Keel database of a readable format; initialize it if new.
pub(crate) fn open_database(
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
        Target::File(file) => {
            create_private(file).map_err(storage(OPEN))?;
            guard_panic(path, || builder.create(file))?
        }
        Target::Backend(factory) => {
            let backend = BoxedBackend(factory().map_err(storage(OPEN))?);
            guard_panic(path, || builder.create_with_backend(backend))?
        }
    };
    let db = opened.map_err(|err| open_error(path, err))?;
    initialize(&db, path)?;
    Ok(db)
}

/// Create `file`, empty, readable and writable by its owner only (mode 0600:
/// it will hold the signing key ring and every session's data), unless it
/// exists; an existing file's mode is left as it is.
fn create_private(file: &Path) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(file) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(err),
    }
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
