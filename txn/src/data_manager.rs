//! The two-phase commit protocol a resource implements to join a transaction.

use std::{any::Any, future::Future, pin::Pin};

use crate::BoxError;

/// Opaque state a data manager captured for a savepoint; handed back to
/// [`DataManager::rollback`].
pub type SavepointState = Box<dyn Any + Send>;

/// A vote that is under way and completes later, returned by
/// [`DataManager::tpc_vote_async`]: for example, a change set handed to a
/// committer thread, answered once it is durable.
pub type PendingVote = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

/// A resource that takes part in a [`Transaction`](crate::Transaction).
///
/// The protocol, as in Python's `transaction` package:
///
/// 1. The data manager joins lazily, when the unit of work first touches the
///    resource ([`Transaction::join`](crate::Transaction::join)).
/// 2. At commit, every joined data manager is called in [`sort_key`] order:
///    first [`tpc_begin`] on all, then [`commit`] on all (validate and encode
///    the buffered changes), then [`tpc_vote`] on all (the last chance to
///    refuse), then [`tpc_finish`] on all (make the changes visible; it cannot
///    fail).
/// 3. If any step before `tpc_finish` fails, every data manager that began
///    two-phase commit gets [`tpc_abort`], the others [`abort`], and the error
///    is returned to the caller unchanged as the source of
///    [`TxnError::Resource`](crate::TxnError::Resource).
/// 4. A transaction aborted outside two-phase commit calls [`abort`].
///
/// A resource that makes its changes durable in one step (a single database
/// file) should do so in `tpc_vote` and sort after the resources that only
/// validate there (the "last resource" technique), so that a refusal by any
/// other resource still leaves nothing written. Across several durable
/// resources the commit is best effort, as in Zope: this is not XA.
///
/// [`sort_key`]: DataManager::sort_key
/// [`tpc_begin`]: DataManager::tpc_begin
/// [`commit`]: DataManager::commit
/// [`tpc_vote`]: DataManager::tpc_vote
/// [`tpc_finish`]: DataManager::tpc_finish
/// [`tpc_abort`]: DataManager::tpc_abort
/// [`abort`]: DataManager::abort
pub trait DataManager: Any + Send {
    /// A key that identifies this resource within a transaction and gives a
    /// total order over all resources, so that commits always lock resources
    /// in the same order.
    fn sort_key(&self) -> &str;

    /// Prepare to commit.
    ///
    /// # Errors
    /// Any error aborts the transaction.
    fn tpc_begin(&mut self) -> Result<(), BoxError> {
        Ok(())
    }

    /// Validate and encode the buffered changes; detect conflicts.
    ///
    /// # Errors
    /// Any error aborts the transaction.
    fn commit(&mut self) -> Result<(), BoxError>;

    /// The last chance to refuse the commit.
    ///
    /// # Errors
    /// Any error aborts the transaction.
    fn tpc_vote(&mut self) -> Result<(), BoxError>;

    /// Make the changes permanent and visible. Must not fail: every resource
    /// has voted yes.
    fn tpc_finish(&mut self);

    /// Undo whatever `tpc_begin`, `commit` or `tpc_vote` did.
    fn tpc_abort(&mut self);

    /// Drop the buffered changes (abort outside two-phase commit).
    fn abort(&mut self);

    /// Whether committing may block the calling thread (waiting for a disk
    /// sync, a lock held across I/O, the network). `false` lets async callers
    /// commit inline instead of handing the commit to a blocking thread pool;
    /// the default is the safe `true`.
    fn commit_may_block(&self) -> bool {
        true
    }

    /// Whether this data manager has nothing to commit: no phase of
    /// two-phase commit would validate, write or wait (a read-only use of a
    /// resource whose reads need no validation). When every joined data
    /// manager says so and no commit hook is registered, the transaction
    /// commits without two-phase commit: each data manager gets
    /// [`abort`](DataManager::abort), which drops its (empty) buffers.
    ///
    /// The default, `false`, always runs two-phase commit.
    fn has_nothing_to_commit(&self) -> bool {
        false
    }

    /// Start the vote without blocking the calling thread, for
    /// [`Transaction::commit_async`](crate::Transaction::commit_async): do
    /// what [`tpc_vote`](DataManager::tpc_vote) does up to the point where it
    /// would wait, and return the wait as a future. `None` (the default)
    /// means "vote synchronously": the transaction then calls `tpc_vote`.
    ///
    /// The future's error counts as the vote's error. If the future is
    /// dropped before it completes, the transaction aborts this data manager
    /// (`tpc_abort`), but whatever the vote already handed on may still
    /// complete: an implementation should document that outcome.
    fn tpc_vote_async(&mut self) -> Option<PendingVote> {
        None
    }

    /// Whether committing through
    /// [`Transaction::commit_async`](crate::Transaction::commit_async) may
    /// block the calling thread. The default is
    /// [`commit_may_block`](DataManager::commit_may_block); a data manager
    /// whose only wait is the one [`tpc_vote_async`](DataManager::tpc_vote_async)
    /// returns as a future says `false`.
    fn commit_async_may_block(&self) -> bool {
        self.commit_may_block()
    }

    /// Capture the buffered changes for a savepoint, or `None` if this
    /// resource cannot take savepoints.
    fn savepoint(&mut self) -> Option<SavepointState> {
        None
    }

    /// Restore the buffered changes captured by [`DataManager::savepoint`].
    /// May be called several times with the same state.
    ///
    /// # Errors
    /// Any error puts the transaction in the failed state.
    fn rollback(&mut self, state: &SavepointState) -> Result<(), BoxError> {
        let _ = state;
        Err("this data manager does not support savepoints".into())
    }

    /// Whether `error`, raised by this resource, may go away if the unit of
    /// work is re-run in a fresh transaction (a conflict).
    fn should_retry(&self, error: &(dyn std::error::Error + 'static)) -> bool {
        let _ = error;
        false
    }
}
