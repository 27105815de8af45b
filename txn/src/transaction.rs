//! One unit of work: joined data managers, hooks, savepoints and two-phase
//! commit.

use std::{any::Any, fmt, sync::Arc, time::Instant};

use smallvec::SmallVec;

use crate::{
    BoxError, DataManager, Phase, TxnError,
    counters::Shard,
    data_manager::SavepointState,
    savepoint::{Savepoint, SavepointRecord},
};

/// Where a transaction is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// Open for work.
    Active,
    /// Open for work, but it can only be aborted ([`Transaction::doom`]).
    Doomed,
    /// Inside `commit`: running before-commit hooks or two-phase commit.
    Committing,
    /// Committed.
    Committed,
    /// A commit or rollback failed; only abort is allowed.
    CommitFailed,
    /// Aborted.
    Aborted,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Active => "active",
            Status::Doomed => "doomed",
            Status::Committing => "committing",
            Status::Committed => "committed",
            Status::CommitFailed => "failed",
            Status::Aborted => "aborted",
        })
    }
}

/// What a successful commit reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommitInfo {
    /// The transaction's id (unique within its manager).
    pub transaction_id: u64,
    /// How many data managers took part.
    pub resources: usize,
}

type BeforeCommitHook = Box<dyn FnOnce(&mut Transaction) -> Result<(), BoxError> + Send>;
type AfterCommitHook = Box<dyn FnOnce(bool) -> Result<(), BoxError> + Send>;
type AbortHook = Box<dyn FnOnce() + Send>;

/// A unit of work that commits atomically or not at all.
///
/// Created by [`TransactionManager::begin`](crate::TransactionManager::begin).
/// Data managers [`join`](Transaction::join) it lazily; [`commit`] runs the
/// before-commit hooks, then two-phase commit over the joined data managers in
/// sort-key order, then the after-commit hooks. A transaction is move-only:
/// `commit(self)` and `abort(self)` consume it, and **dropping an unfinished
/// transaction aborts it**.
///
/// [`commit`]: Transaction::commit
pub struct Transaction {
    id: u64,
    status: Status,
    failure: Option<String>,
    /// NOTE: inline up to two: a request joins one data manager per
    /// container it uses (one or two), and the list was an allocation per
    /// request.
    resources: SmallVec<[Box<dyn DataManager>; 2]>,
    savepoints: Vec<SavepointRecord>,
    next_savepoint: u64,
    before_commit: Vec<BeforeCommitHook>,
    after_commit: Vec<AfterCommitHook>,
    before_abort: Vec<AbortHook>,
    after_abort: Vec<AbortHook>,
    /// The counters of the thread that began the transaction.
    counters: Arc<Shard>,
}

impl fmt::Debug for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&str> = self.resources.iter().map(|dm| dm.sort_key()).collect();
        f.debug_struct("Transaction")
            .field("id", &self.id)
            .field("status", &self.status)
            .field("resources", &keys)
            .field("savepoints", &self.savepoints.len())
            .finish_non_exhaustive()
    }
}

impl Transaction {
    pub(crate) fn new(id: u64, counters: Arc<Shard>) -> Self {
        Transaction {
            id,
            status: Status::Active,
            failure: None,
            resources: SmallVec::new(),
            savepoints: Vec::new(),
            next_savepoint: 0,
            before_commit: Vec::new(),
            after_commit: Vec::new(),
            before_abort: Vec::new(),
            after_abort: Vec::new(),
            counters,
        }
    }

    /// The transaction's id, unique within its manager.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Where the transaction is in its life.
    pub fn status(&self) -> Status {
        self.status
    }

    /// Whether [`doom`](Transaction::doom) was called.
    pub fn is_doomed(&self) -> bool {
        self.status == Status::Doomed
    }

    /// Mark the transaction so that it can only be aborted: it stays usable
    /// (data managers may still join), but [`commit`](Transaction::commit)
    /// returns [`TxnError::Doomed`]. Frameworks doom the transaction of a
    /// request whose changes must be discarded.
    ///
    /// # Errors
    /// [`TxnError::InvalidState`] unless the transaction is active or already
    /// doomed.
    pub fn doom(&mut self) -> Result<(), TxnError> {
        match self.status {
            Status::Active | Status::Doomed => {
                self.status = Status::Doomed;
                Ok(())
            }
            status => Err(TxnError::InvalidState {
                action: "doom",
                status,
            }),
        }
    }

    fn check_usable(&self, action: &'static str) -> Result<(), TxnError> {
        match self.status {
            Status::Active | Status::Doomed | Status::Committing => Ok(()),
            Status::CommitFailed => Err(self.failed_error()),
            status => Err(TxnError::InvalidState { action, status }),
        }
    }

    fn failed_error(&self) -> TxnError {
        TxnError::TransactionFailed {
            reason: self
                .failure
                .clone()
                .unwrap_or_else(|| "an earlier error".to_owned()),
        }
    }

    /// Join `dm` to the transaction and return it. A data manager with the same
    /// sort key that already joined is returned instead (and `dm` is dropped),
    /// so joining is idempotent.
    ///
    /// # Errors
    /// [`TxnError::TransactionFailed`] after a failed commit or rollback,
    /// [`TxnError::WrongDataManagerType`] if the joined data manager with that
    /// sort key is of another type.
    pub fn join<D: DataManager>(&mut self, dm: D) -> Result<&mut D, TxnError> {
        self.join_with(dm.sort_key().to_owned().as_str(), || dm)
    }

    /// The joined data manager with sort key `key`, joining the one `make`
    /// creates if there is none. `make` runs only when needed, which is what
    /// lazy joining wants.
    ///
    /// # Errors
    /// As for [`join`](Transaction::join).
    pub fn join_with<D: DataManager>(
        &mut self,
        key: &str,
        make: impl FnOnce() -> D,
    ) -> Result<&mut D, TxnError> {
        self.check_usable("join")?;
        let index = match self.resources.iter().position(|dm| dm.sort_key() == key) {
            Some(index) => index,
            None => {
                let dm = make();
                debug_assert_eq!(dm.sort_key(), key, "sort key must be stable");
                self.resources.push(Box::new(dm));
                self.resources.len() - 1
            }
        };
        let dm: &mut dyn Any = self.resources[index].as_mut();
        dm.downcast_mut::<D>()
            .ok_or_else(|| TxnError::WrongDataManagerType {
                resource: key.to_owned(),
            })
    }

    /// The joined data manager with sort key `key`, if one joined and it is of
    /// type `D`.
    pub fn data_manager<D: DataManager>(&mut self, key: &str) -> Option<&mut D> {
        let dm: &mut dyn Any = self
            .resources
            .iter_mut()
            .find(|dm| dm.sort_key() == key)?
            .as_mut();
        dm.downcast_mut::<D>()
    }

    /// The sort keys of the joined data managers, in join order.
    pub fn resource_keys(&self) -> impl Iterator<Item = &str> {
        self.resources.iter().map(|dm| dm.sort_key())
    }

    /// Whether committing may block the calling thread: true if any joined
    /// data manager says so, or if any commit hook is registered (hooks are
    /// arbitrary code).
    pub fn commit_may_block(&self) -> bool {
        !self.before_commit.is_empty()
            || !self.after_commit.is_empty()
            || self.resources.iter().any(|dm| dm.commit_may_block())
    }

    /// Whether [`commit_async`](Transaction::commit_async) may block the
    /// calling thread: true if any joined data manager says so
    /// ([`DataManager::commit_async_may_block`]), or if any commit hook is
    /// registered.
    pub fn commit_async_may_block(&self) -> bool {
        !self.before_commit.is_empty()
            || !self.after_commit.is_empty()
            || self.resources.iter().any(|dm| dm.commit_async_may_block())
    }

    /// Run `hook` at the start of `commit`, before two-phase commit. Hooks may
    /// change data, join data managers and add more hooks. A failing hook fails
    /// the commit.
    pub fn before_commit(
        &mut self,
        hook: impl FnOnce(&mut Transaction) -> Result<(), BoxError> + Send + 'static,
    ) {
        self.before_commit.push(Box::new(hook));
    }

    /// Run `hook` after the commit with `true` if it succeeded and `false` if
    /// it failed. The place for side effects that must happen only if the
    /// commit did (sending mail, setting a cookie). A hook's error is logged,
    /// not returned: the commit's outcome is already decided.
    pub fn after_commit(
        &mut self,
        hook: impl FnOnce(bool) -> Result<(), BoxError> + Send + 'static,
    ) {
        self.after_commit.push(Box::new(hook));
    }

    /// Run `hook` at the start of an abort (including the abort of a dropped
    /// transaction).
    pub fn before_abort(&mut self, hook: impl FnOnce() + Send + 'static) {
        self.before_abort.push(Box::new(hook));
    }

    /// Run `hook` at the end of an abort.
    pub fn after_abort(&mut self, hook: impl FnOnce() + Send + 'static) {
        self.after_abort.push(Box::new(hook));
    }

    /// Take a savepoint across every joined data manager.
    ///
    /// # Errors
    /// [`TxnError::SavepointUnsupported`] if a joined data manager cannot take
    /// savepoints (use [`savepoint_optimistic`](Transaction::savepoint_optimistic)
    /// to take one anyway); [`TxnError::TransactionFailed`] after a failure.
    pub fn savepoint(&mut self) -> Result<Savepoint, TxnError> {
        self.take_savepoint(false)
    }

    /// Take a savepoint even if some joined data managers cannot: rolling back
    /// to it then fails with [`TxnError::SavepointUnsupported`] (and fails the
    /// transaction), but taking it succeeds.
    ///
    /// # Errors
    /// [`TxnError::TransactionFailed`] after a failure.
    pub fn savepoint_optimistic(&mut self) -> Result<Savepoint, TxnError> {
        self.take_savepoint(true)
    }

    fn take_savepoint(&mut self, optimistic: bool) -> Result<Savepoint, TxnError> {
        self.check_usable("take a savepoint of")?;
        let mut states: Vec<Option<SavepointState>> = Vec::with_capacity(self.resources.len());
        for dm in &mut self.resources {
            match dm.savepoint() {
                Some(state) => states.push(Some(state)),
                None if optimistic => states.push(None),
                None => {
                    return Err(TxnError::SavepointUnsupported {
                        resource: dm.sort_key().to_owned(),
                    });
                }
            }
        }
        let id = self.next_savepoint;
        self.next_savepoint += 1;
        self.savepoints.push(SavepointRecord { id, states });
        Ok(Savepoint::new(self.id, id))
    }

    /// Whether `savepoint` can still be rolled back to.
    pub fn is_valid(&self, savepoint: &Savepoint) -> bool {
        savepoint.transaction_id() == self.id
            && self.savepoints.iter().any(|r| r.id == savepoint.id())
    }

    /// Undo every change made since `savepoint` in every joined data manager.
    /// Data managers that joined after it are aborted and leave the
    /// transaction. Later savepoints become invalid; `savepoint` itself stays
    /// valid and can be rolled back to again.
    ///
    /// # Errors
    /// [`TxnError::InvalidSavepoint`] if it was invalidated;
    /// [`TxnError::Resource`] (phase [`Phase::Rollback`]) or
    /// [`TxnError::SavepointUnsupported`] if a data manager could not roll
    /// back, which also puts the transaction in the failed state.
    pub fn rollback(&mut self, savepoint: &Savepoint) -> Result<(), TxnError> {
        self.check_usable("roll back")?;
        if savepoint.transaction_id() != self.id {
            return Err(TxnError::InvalidSavepoint);
        }
        let Some(position) = self.savepoints.iter().position(|r| r.id == savepoint.id()) else {
            return Err(TxnError::InvalidSavepoint);
        };
        self.savepoints.truncate(position + 1);
        let joined_before = self.savepoints[position].states.len();
        // Data managers that joined after the savepoint did all their work
        // after it: aborting them is their rollback.
        for mut dm in self.resources.drain(joined_before..) {
            dm.abort();
        }
        let mut outcome = Ok(());
        for (dm, state) in self
            .resources
            .iter_mut()
            .zip(&self.savepoints[position].states)
        {
            let result = match state {
                Some(state) => dm.rollback(state).map_err(|source| TxnError::Resource {
                    resource: dm.sort_key().to_owned(),
                    phase: Phase::Rollback,
                    retryable: false,
                    source,
                }),
                None => Err(TxnError::SavepointUnsupported {
                    resource: dm.sort_key().to_owned(),
                }),
            };
            if let Err(err) = result {
                outcome = Err(err);
                break;
            }
        }
        if let Err(err) = &outcome {
            self.fail(format!("rollback to a savepoint failed: {err}"));
        }
        outcome
    }

    fn fail(&mut self, reason: String) {
        self.status = Status::CommitFailed;
        self.failure = Some(reason);
        self.savepoints.clear();
    }

    /// Commit: run the before-commit hooks, then two-phase commit over every
    /// joined data manager in sort-key order, then the after-commit hooks.
    ///
    /// On failure every joined data manager has been aborted and the
    /// transaction is consumed (dropping it completes the abort). Use
    /// [`try_commit`](Transaction::try_commit) to keep a failed transaction.
    ///
    /// # Errors
    /// As for [`try_commit`](Transaction::try_commit).
    pub fn commit(mut self) -> Result<CommitInfo, TxnError> {
        self.try_commit()
    }

    /// Commit, keeping the transaction: after success it is
    /// [`Status::Committed`]; after a failure it is [`Status::CommitFailed`],
    /// every later `try_commit` or `join` returns
    /// [`TxnError::TransactionFailed`], and only [`abort`](Transaction::abort)
    /// is allowed.
    ///
    /// # Errors
    /// - [`TxnError::Doomed`] if the transaction is doomed (nothing is run; it
    ///   stays doomed).
    /// - [`TxnError::Hook`] if a before-commit hook failed.
    /// - [`TxnError::Resource`] if a data manager failed; its error is the
    ///   source, and `is_retryable()` says whether the data manager thinks a
    ///   retry may succeed.
    /// - [`TxnError::TransactionFailed`] if it failed before.
    /// - [`TxnError::InvalidState`] if it already committed or aborted.
    pub fn try_commit(&mut self) -> Result<CommitInfo, TxnError> {
        if let Some(info) = self.commit_without_changes()? {
            return Ok(info);
        }
        let started = self.start_commit();
        let result = self
            .run_before_commit_hooks()
            .and_then(|()| self.two_phase_commit());
        self.finish_commit(started, result)
    }

    /// Commit without blocking the calling thread where the data managers
    /// allow it: as [`commit`](Transaction::commit), but each data manager
    /// that offers an asynchronous vote ([`DataManager::tpc_vote_async`]) is
    /// awaited instead of being waited for on this thread.
    ///
    /// Hooks and the other phases still run on the calling thread: check
    /// [`commit_async_may_block`](Transaction::commit_async_may_block) before
    /// awaiting this on an async executor.
    ///
    /// If this future is dropped before it completes, the transaction is
    /// aborted, but a vote already handed on (a change set queued for a
    /// durable write) may still complete: the outcome is then unknown. Spawn
    /// it as a task (as [`commit_without_blocking`] does) so it always runs
    /// to the end.
    ///
    /// [`commit_without_blocking`]: crate::commit_without_blocking
    ///
    /// # Errors
    /// As for [`try_commit`](Transaction::try_commit).
    pub async fn commit_async(mut self) -> Result<CommitInfo, TxnError> {
        self.try_commit_async().await
    }

    /// [`try_commit`](Transaction::try_commit) with asynchronous votes, as in
    /// [`commit_async`](Transaction::commit_async).
    ///
    /// # Errors
    /// As for [`try_commit`](Transaction::try_commit).
    pub async fn try_commit_async(&mut self) -> Result<CommitInfo, TxnError> {
        if let Some(info) = self.commit_without_changes()? {
            return Ok(info);
        }
        let started = self.start_commit();
        let result = match self.run_before_commit_hooks() {
            Ok(()) => self.two_phase_commit_async().await,
            Err(err) => Err(err),
        };
        self.finish_commit(started, result)
    }

    /// Commit at once if there is nothing to commit: no hook, and every
    /// joined data manager [has nothing to
    /// commit](DataManager::has_nothing_to_commit). `None` if two-phase
    /// commit must run.
    ///
    /// NOTE: most requests only read; this spares them the phases, the
    /// sort and the commit clock.
    fn commit_without_changes(&mut self) -> Result<Option<CommitInfo>, TxnError> {
        self.check_can_commit()?;
        let nothing_to_commit = self.before_commit.is_empty()
            && self.after_commit.is_empty()
            && self.resources.iter().all(|dm| dm.has_nothing_to_commit());
        if !nothing_to_commit {
            return Ok(None);
        }
        self.savepoints.clear();
        let resources = self.resources.len();
        for mut dm in self.resources.drain(..) {
            dm.abort();
        }
        self.status = Status::Committed;
        self.counters.record_commit(std::time::Duration::ZERO);
        Ok(Some(CommitInfo {
            transaction_id: self.id,
            resources,
        }))
    }

    /// Enter [`Status::Committing`] (after
    /// [`commit_without_changes`](Self::commit_without_changes) checked that
    /// a commit may start).
    fn start_commit(&mut self) -> Instant {
        self.savepoints.clear();
        self.status = Status::Committing;
        Instant::now()
    }

    /// Check that the transaction is in a state that may commit.
    fn check_can_commit(&self) -> Result<(), TxnError> {
        match self.status {
            Status::Active => {}
            Status::Doomed => return Err(TxnError::Doomed),
            Status::CommitFailed => return Err(self.failed_error()),
            status => {
                return Err(TxnError::InvalidState {
                    action: "commit",
                    status,
                });
            }
        }
        Ok(())
    }

    /// Record the outcome of a commit and run the after-commit hooks.
    fn finish_commit(
        &mut self,
        started: Instant,
        result: Result<usize, TxnError>,
    ) -> Result<CommitInfo, TxnError> {
        match result {
            Ok(resources) => {
                self.status = Status::Committed;
                self.counters.record_commit(started.elapsed());
                self.run_after_commit_hooks(true);
                self.resources.clear();
                Ok(CommitInfo {
                    transaction_id: self.id,
                    resources,
                })
            }
            Err(err) => {
                self.fail(format!("commit failed: {err}"));
                self.counters.record_failed_commit(err.is_retryable());
                self.run_after_commit_hooks(false);
                Err(err)
            }
        }
    }

    fn run_before_commit_hooks(&mut self) -> Result<(), TxnError> {
        // Hooks may register more hooks: run until none are left.
        while !self.before_commit.is_empty() {
            let hooks = std::mem::take(&mut self.before_commit);
            for hook in hooks {
                hook(self).map_err(|source| TxnError::Hook { source })?;
            }
        }
        Ok(())
    }

    /// Two-phase commit over the joined data managers; returns how many took
    /// part. On failure every data manager has been aborted and removed.
    fn two_phase_commit(&mut self) -> Result<usize, TxnError> {
        // How many data managers got `tpc_begin`: they get `tpc_abort` on
        // failure, the rest get `abort`.
        let mut begun = 0;
        let result = self.prepare(&mut begun).and_then(|()| {
            for dm in self.resources.iter_mut() {
                step(dm.as_mut(), Phase::Vote, |dm| dm.tpc_vote())?;
            }
            Ok(())
        });
        self.conclude(begun, result)
    }

    /// [`two_phase_commit`](Self::two_phase_commit), awaiting the votes that
    /// data managers hand back as futures.
    async fn two_phase_commit_async(&mut self) -> Result<usize, TxnError> {
        let mut begun = 0;
        let mut result = self.prepare(&mut begun);
        if result.is_ok() {
            for dm in self.resources.iter_mut() {
                let vote = match dm.tpc_vote_async() {
                    Some(pending) => pending.await,
                    None => dm.tpc_vote(),
                };
                if let Err(source) = vote {
                    result = Err(resource_error(dm.as_ref(), Phase::Vote, source));
                    break;
                }
            }
        }
        self.conclude(begun, result)
    }

    /// The phases before the vote: `tpc_begin` then `commit` on every data
    /// manager, in sort-key order. `begun` counts the `tpc_begin` calls.
    fn prepare(&mut self, begun: &mut usize) -> Result<(), TxnError> {
        self.resources
            .sort_by(|a, b| a.sort_key().cmp(b.sort_key()));
        for dm in self.resources.iter_mut() {
            *begun += 1;
            step(dm.as_mut(), Phase::Begin, |dm| dm.tpc_begin())?;
        }
        for dm in self.resources.iter_mut() {
            step(dm.as_mut(), Phase::Commit, |dm| dm.commit())?;
        }
        Ok(())
    }

    /// Finish (every vote was yes) or abort every data manager: the first
    /// `begun` with `tpc_abort`, the rest with `abort`.
    fn conclude(&mut self, begun: usize, result: Result<(), TxnError>) -> Result<usize, TxnError> {
        match result {
            Ok(()) => {
                for dm in self.resources.iter_mut() {
                    dm.tpc_finish();
                }
                Ok(self.resources.len())
            }
            Err(err) => {
                for (index, mut dm) in self.resources.drain(..).enumerate() {
                    if index < begun {
                        dm.tpc_abort();
                    } else {
                        dm.abort();
                    }
                }
                Err(err)
            }
        }
    }

    fn run_after_commit_hooks(&mut self, committed: bool) {
        for hook in std::mem::take(&mut self.after_commit) {
            if let Err(err) = hook(committed) {
                tracing::error!(
                    transaction = self.id,
                    committed,
                    error = %err,
                    "after-commit hook failed"
                );
            }
        }
    }

    /// Abort: run the before-abort hooks, drop every joined data manager's
    /// changes, then run the after-abort hooks. Allowed in any status but
    /// committed (where it does nothing).
    pub fn abort(mut self) {
        self.abort_in_place();
    }

    fn abort_in_place(&mut self) {
        if matches!(self.status, Status::Committed | Status::Aborted) {
            return;
        }
        for hook in std::mem::take(&mut self.before_abort) {
            hook();
        }
        // Only a commit future dropped mid-vote (or a panic) leaves a
        // transaction in `Committing`: its data managers are inside two-phase
        // commit.
        let in_two_phase_commit = self.status == Status::Committing;
        for mut dm in self.resources.drain(..) {
            if in_two_phase_commit {
                dm.tpc_abort();
            } else {
                dm.abort();
            }
        }
        self.savepoints.clear();
        self.before_commit.clear();
        self.after_commit.clear();
        self.status = Status::Aborted;
        self.counters.record_abort();
        for hook in std::mem::take(&mut self.after_abort) {
            hook();
        }
    }
}

/// Run one step of two-phase commit on `dm`, wrapping its error.
fn step(
    dm: &mut dyn DataManager,
    phase: Phase,
    f: impl FnOnce(&mut dyn DataManager) -> Result<(), BoxError>,
) -> Result<(), TxnError> {
    f(dm).map_err(|source| resource_error(dm, phase, source))
}

/// Wrap `source`, raised by `dm` in `phase`.
fn resource_error(dm: &dyn DataManager, phase: Phase, source: BoxError) -> TxnError {
    TxnError::Resource {
        resource: dm.sort_key().to_owned(),
        phase,
        retryable: dm.should_retry(source.as_ref()),
        source,
    }
}

impl Drop for Transaction {
    /// Dropping an unfinished transaction aborts it.
    fn drop(&mut self) {
        self.abort_in_place();
    }
}
