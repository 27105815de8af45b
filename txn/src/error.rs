//! The crate's one error type.

use std::fmt;

/// A boxed error from a data manager or a hook, kept unchanged as a source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The step of a transaction's life in which a data manager or hook failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// A before-commit hook.
    BeforeCommitHook,
    /// `tpc_begin`: the data manager prepares to commit.
    Begin,
    /// `commit`: the data manager validates and encodes its changes.
    Commit,
    /// `tpc_vote`: the data manager's last chance to refuse (and, for the
    /// "last resource", the durable write).
    Vote,
    /// Taking a savepoint.
    Savepoint,
    /// Rolling back to a savepoint.
    Rollback,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::BeforeCommitHook => "before-commit hook",
            Phase::Begin => "tpc_begin",
            Phase::Commit => "commit",
            Phase::Vote => "tpc_vote",
            Phase::Savepoint => "savepoint",
            Phase::Rollback => "rollback",
        })
    }
}

/// Everything that can go wrong with a transaction.
///
/// Errors are either *retryable* (a conflict: re-running the unit of work in a
/// fresh transaction may succeed) or fatal; [`TxnError::is_retryable`] says which.
/// An error raised by a data manager or hook is kept unchanged as the
/// [`source`](std::error::Error::source), so callers can downcast it to the
/// data manager's own error type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TxnError {
    /// A data manager failed in one step of two-phase commit, a savepoint or a
    /// rollback. Every joined data manager was aborted.
    #[error("{phase} failed in data manager `{resource}`: {source}")]
    Resource {
        /// The sort key of the data manager that failed.
        resource: String,
        /// The step that failed.
        phase: Phase,
        /// Whether the data manager said that a retry may succeed.
        retryable: bool,
        /// The data manager's own error, unchanged.
        #[source]
        source: BoxError,
    },
    /// A before-commit hook failed; nothing was committed.
    #[error("a before-commit hook failed: {source}")]
    Hook {
        /// The hook's error, unchanged.
        #[source]
        source: BoxError,
    },
    /// `commit` was called on a doomed transaction; it can only be aborted.
    #[error("the transaction is doomed: it cannot commit, only abort")]
    Doomed,
    /// The transaction failed earlier (a failed commit or rollback); only
    /// `abort` is allowed now.
    #[error("the transaction failed earlier ({reason}); only abort is allowed")]
    TransactionFailed {
        /// What made the transaction fail.
        reason: String,
    },
    /// A joined data manager cannot take savepoints, and the savepoint was not
    /// taken as optimistic (or an optimistic one was rolled back).
    #[error("data manager `{resource}` does not support savepoints")]
    SavepointUnsupported {
        /// The sort key of the data manager without savepoint support.
        resource: String,
    },
    /// The savepoint was invalidated (by a commit, an abort or a rollback to an
    /// earlier savepoint) or belongs to another transaction.
    #[error("the savepoint is no longer valid for this transaction")]
    InvalidSavepoint,
    /// A data manager with this sort key already joined the transaction, but
    /// it is of another type than the one asked for.
    #[error("data manager `{resource}` is joined, but not of the requested type")]
    WrongDataManagerType {
        /// The sort key that was looked up.
        resource: String,
    },
    /// The operation is not allowed in the transaction's current status.
    #[error("cannot {action} a transaction that is {status}")]
    InvalidState {
        /// What was attempted.
        action: &'static str,
        /// The transaction's status at the time.
        status: crate::Status,
    },
    /// The commit was interrupted (the task running it panicked or was
    /// cancelled); whether it took effect is unknown. Never retried.
    #[error("the commit was interrupted and its outcome is unknown: {reason}")]
    CommitInterrupted {
        /// What interrupted it.
        reason: String,
    },
}

impl TxnError {
    /// Whether re-running the unit of work in a fresh transaction may succeed:
    /// true for conflicts and for errors a data manager declared retryable.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TxnError::Resource {
                retryable: true,
                ..
            }
        )
    }

    /// The data manager's or hook's own error, if it is of type `E`.
    ///
    /// ```
    /// # use keel_txn::TxnError;
    /// let err = TxnError::Hook { source: "disk full".into() };
    /// assert!(err.source_as::<std::io::Error>().is_none());
    /// ```
    pub fn source_as<E: std::error::Error + 'static>(&self) -> Option<&E> {
        match self {
            TxnError::Resource { source, .. } | TxnError::Hook { source } => {
                source.downcast_ref::<E>()
            }
            _ => None,
        }
    }
}

/// Errors that know whether a retry may succeed; used by the retry helpers
/// ([`TransactionManager::run`](crate::TransactionManager::run)).
///
/// Implement it for an application error type that wraps [`TxnError`] so the
/// retry loop can see through it.
pub trait Retryable {
    /// Whether re-running the unit of work in a fresh transaction may succeed.
    fn is_retryable(&self) -> bool;
}

impl Retryable for TxnError {
    fn is_retryable(&self) -> bool {
        TxnError::is_retryable(self)
    }
}
