//! The crate's one error type.

use std::path::PathBuf;

use keel_txn::BoxError;

use crate::ClientKey;

/// Everything that can go wrong in a session data container.
///
/// [`StoreError::is_retryable`] keeps conflicts (re-run the request) apart
/// from fatal errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A value could not be serialized at commit; nothing of the transaction
    /// was written, in any container.
    #[error("value {key:?} of package {package:?} cannot be serialized: {source}")]
    Unserializable {
        /// The package id.
        package: String,
        /// The key within the package.
        key: String,
        /// The value's own `Serialize` error.
        #[source]
        source: BoxError,
    },
    /// Another transaction changed what this one read or wrote; re-running the
    /// request in a fresh transaction may succeed.
    #[error("conflict on session {client}: {what} changed since this transaction read it")]
    Conflict {
        /// The session concerned.
        client: ClientKey,
        /// What changed (the session record, an item, a package's names).
        what: String,
    },
    /// The file is not a redb database, or not one written by Keel. It was not
    /// modified.
    #[error("{path} is not a Keel session database: {reason}")]
    NotAKeelDatabase {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// The file was written by a newer Keel with a format this build cannot
    /// read. It was not modified.
    #[error("{path} has session format version {found}; this build reads up to {supported}")]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
        /// The format version found in the file.
        found: u32,
        /// The newest format version this build reads.
        supported: u32,
    },
    /// Another process holds the database file open.
    #[error(
        "{path} is in use by another process (is `keel serve` running? use `--url` to manage a running server)"
    )]
    DatabaseInUse {
        /// The file.
        path: PathBuf,
    },
    /// The database file is damaged beyond what redb's repair can fix.
    #[error("{path} is corrupted: {source}")]
    Corrupted {
        /// The file.
        path: PathBuf,
        /// redb's error.
        #[source]
        source: BoxError,
    },
    /// A storage operation failed.
    #[error("storage error while {operation}: {source}")]
    Storage {
        /// What the container was doing.
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// A durable commit failed partway: it may or may not have taken effect.
    /// Not retryable; the container reopens the database before the next
    /// commit.
    #[error("commit outcome unknown after a storage error: {source}")]
    CommitOutcomeUnknown {
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// A stored record could not be decoded.
    #[error("stored record {what} is damaged: {source}")]
    CorruptRecord {
        /// Which record.
        what: String,
        /// The decoder's error.
        #[source]
        source: BoxError,
    },
    /// The session is not live (never created, deleted, or expired).
    #[error("session {client} does not exist or has expired")]
    NoSuchSession {
        /// The session concerned.
        client: ClientKey,
    },
    /// The new id of a renamed session already belongs to a live session.
    #[error("session {client} already exists")]
    SessionExists {
        /// The session concerned.
        client: ClientKey,
    },
    /// A package id, key or principal is too long or otherwise not storable.
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// What was invalid.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The database server cannot be reached (connection refused, lost or
    /// timed out). Nothing was written unless the error says the outcome is
    /// unknown; the container reconnects by itself.
    #[error("the session database {database} is unavailable: {source}")]
    Unavailable {
        /// Which database (its URL without a password).
        database: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },
    /// The container's committer has shut down.
    #[error("the container is closed")]
    Closed,
    /// The transaction could not be joined or used.
    #[error(transparent)]
    Transaction(#[from] keel_txn::TxnError),
    /// The database file could not be opened or created: permissions, a
    /// read-only or full file system, a directory given as the path, a
    /// missing file for a read-only open. `remedy` says what to do. A file
    /// that was being created is not left behind.
    #[error("cannot open the session database {path}: {source}; {remedy}")]
    CannotOpen {
        /// The file.
        path: PathBuf,
        /// What the operator can do about it.
        remedy: String,
        /// The operating system's (or redb's) error.
        #[source]
        source: BoxError,
    },
    /// A write to a database opened read-only (see
    /// [`RedbOptions::with_read_only`](crate::RedbOptions::with_read_only)).
    /// Nothing was written.
    #[error(
        "{path} was opened read-only: nothing was written (open it without read-only mode to change it)"
    )]
    ReadOnly {
        /// The file.
        path: PathBuf,
    },
}

impl StoreError {
    /// Whether re-running the unit of work in a fresh transaction may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Conflict { .. } => true,
            StoreError::Transaction(err) => err.is_retryable(),
            _ => false,
        }
    }

    /// Whether `error`, raised by a container's data manager, is a retryable
    /// `StoreError` (what both containers answer to
    /// `DataManager::should_retry`).
    pub(crate) fn is_retryable_source(error: &(dyn std::error::Error + 'static)) -> bool {
        error
            .downcast_ref::<StoreError>()
            .is_some_and(StoreError::is_retryable)
    }
}

impl StoreError {
    /// The database file this error names, for the errors of opening one
    /// (not a Keel database, a newer format, in use, damaged, cannot be
    /// opened, opened read-only): their message already says which file, so
    /// a caller need not add it (nor sort the variants itself).
    ///
    /// ```
    /// use keel_store::StoreError;
    /// let err = StoreError::DatabaseInUse { path: "s.redb".into() };
    /// assert_eq!(err.path(), Some(std::path::Path::new("s.redb")));
    /// assert_eq!(StoreError::Closed.path(), None);
    /// ```
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            StoreError::NotAKeelDatabase { path, .. }
            | StoreError::UnsupportedFormat { path, .. }
            | StoreError::DatabaseInUse { path }
            | StoreError::Corrupted { path, .. }
            | StoreError::CannotOpen { path, .. }
            | StoreError::ReadOnly { path } => Some(path),
            _ => None,
        }
    }

    /// Whether the storage is unreachable for now (an HTTP server answers
    /// 503): the database server is down or the link to it failed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

impl keel_txn::Retryable for StoreError {
    fn is_retryable(&self) -> bool {
        StoreError::is_retryable(self)
    }
}
