//! The transaction manager: begins transactions, counts outcomes, and re-runs
//! units of work on retryable errors.

use std::{sync::Arc, time::Duration};

use crate::{RetryPolicy, Retryable, Transaction, TxnError, counters::Counters};

/// A snapshot of a manager's outcome counters since it was created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TxnStats {
    /// Transactions begun.
    pub begun: u64,
    /// Successful commits.
    pub commits: u64,
    /// Failed commits (of any cause).
    pub failed_commits: u64,
    /// Failed commits whose error was retryable (conflicts).
    pub conflicts: u64,
    /// Aborts (explicit, by drop, or after a failed commit).
    pub aborts: u64,
    /// Units of work re-run by the retry helpers.
    pub retries: u64,
    /// Total time spent in successful commits.
    pub commit_time: Duration,
}

/// Begins transactions and re-runs units of work on retryable errors.
///
/// Cheap to clone: clones share counters and policy. There is no ambient
/// "current transaction" (no thread-locals): each unit of work gets an explicit
/// [`Transaction`], because async handlers move between threads.
///
/// ```
/// use keel_txn::{TransactionManager, TxnError};
///
/// let manager = TransactionManager::new();
/// let answer = manager.run(|tx| -> Result<u32, TxnError> {
///     // Touch data managers through `tx` here; the commit happens after.
///     assert!(tx.resource_keys().next().is_none());
///     Ok(42)
/// })?;
/// assert_eq!(answer, 42);
/// assert_eq!(manager.stats().commits, 1);
/// # Ok::<(), TxnError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct TransactionManager {
    counters: Arc<Counters>,
    retry: RetryPolicy,
}

impl TransactionManager {
    /// A manager with the default [`RetryPolicy`] (3 attempts).
    pub fn new() -> Self {
        Self::default()
    }

    /// Use `policy` in [`run`](Self::run) and [`run_async`](Self::run_async).
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The retry policy of [`run`](Self::run).
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Begin a new transaction.
    pub fn begin(&self) -> Transaction {
        let (shard, id) = self.counters.begin();
        Transaction::new(id, shard)
    }

    /// The outcome counters since this manager was created.
    pub fn stats(&self) -> TxnStats {
        self.counters.stats()
    }

    /// Count a retry made by a retry loop outside this crate (a middleware
    /// that re-runs a request handler), so [`stats`](Self::stats) sees it.
    pub fn record_retry(&self) {
        self.counters.local().record_retry();
    }

    /// Run `work` in a fresh transaction and commit it; while the work or the
    /// commit fails with a retryable error (a conflict) and attempts remain,
    /// abort, wait a jittered backoff, and run it again in a new transaction.
    ///
    /// `work` may run several times: side effects that must happen once belong
    /// in [`Transaction::after_commit`] hooks.
    ///
    /// # Errors
    /// The first non-retryable error, or the last error once the attempts of
    /// the [`RetryPolicy`] are used up, unchanged.
    pub fn run<T, E>(&self, mut work: impl FnMut(&mut Transaction) -> Result<T, E>) -> Result<T, E>
    where
        E: From<TxnError> + Retryable,
    {
        let mut attempt = 1;
        loop {
            let mut tx = self.begin();
            let error = match work(&mut tx) {
                Ok(value) => match tx.commit() {
                    Ok(_) => return Ok(value),
                    Err(err) => E::from(err),
                },
                Err(err) => {
                    tx.abort();
                    err
                }
            };
            if !error.is_retryable() || attempt >= self.retry.attempts() {
                return Err(error);
            }
            self.record_retry();
            std::thread::sleep(self.retry.backoff(attempt));
            attempt += 1;
        }
    }

    /// [`run`](Self::run) for async work on a tokio runtime. The commit goes
    /// through [`commit_without_blocking`]: inline when no data manager may
    /// block, as a task awaiting asynchronous votes when every data manager
    /// offers them (a durable commit waiting for its write holds no thread),
    /// else on tokio's blocking pool; the backoff is an async sleep.
    ///
    /// # Errors
    /// As for [`run`](Self::run); a commit whose blocking task panicked or was
    /// cancelled gives [`TxnError::CommitInterrupted`].
    #[cfg(feature = "async")]
    pub async fn run_async<T, E, F>(&self, mut work: F) -> Result<T, E>
    where
        F: AsyncFnMut(&mut Transaction) -> Result<T, E>,
        E: From<TxnError> + Retryable,
    {
        let mut attempt = 1;
        loop {
            let mut tx = self.begin();
            let error = match work(&mut tx).await {
                Ok(value) => match commit_without_blocking(tx).await {
                    Ok(_) => return Ok(value),
                    Err(err) => E::from(err),
                },
                Err(err) => {
                    tx.abort();
                    err
                }
            };
            if !error.is_retryable() || attempt >= self.retry.attempts() {
                return Err(error);
            }
            self.record_retry();
            tokio::time::sleep(self.retry.backoff(attempt)).await;
            attempt += 1;
        }
    }
}

/// Commit `tx` without blocking an async worker thread, choosing the
/// cheapest way that is safe:
///
/// 1. inline, when no joined data manager may block
///    ([`Transaction::commit_may_block`]): a read-only request pays no thread
///    hand-off at all;
/// 2. as a spawned task with asynchronous votes
///    ([`Transaction::commit_async`]), when every wait is one a data manager
///    hands back as a future ([`Transaction::commit_async_may_block`]): a
///    commit waiting for its durable write holds no thread. The task runs to
///    the end even if the caller stops waiting (a client that disconnects),
///    so the transaction is never left half-finished;
/// 3. otherwise on tokio's blocking pool ([`commit_on_blocking_pool`]).
///
/// # Errors
/// The commit's own error, or [`TxnError::CommitInterrupted`] if the task
/// running it panicked or was cancelled (the outcome is then unknown).
#[cfg(feature = "async")]
pub async fn commit_without_blocking(tx: Transaction) -> Result<crate::CommitInfo, TxnError> {
    if !tx.commit_may_block() {
        tx.commit()
    } else if !tx.commit_async_may_block() {
        interrupted_as_error(tokio::spawn(tx.commit_async()).await)
    } else {
        commit_on_blocking_pool(tx).await
    }
}

/// Commit `tx` on tokio's blocking pool, so that a commit that waits for a
/// durable write never stalls an async worker thread.
///
/// # Errors
/// The commit's own error, or [`TxnError::CommitInterrupted`] if the blocking
/// task panicked or was cancelled (the outcome is then unknown).
#[cfg(feature = "async")]
pub async fn commit_on_blocking_pool(tx: Transaction) -> Result<crate::CommitInfo, TxnError> {
    interrupted_as_error(tokio::task::spawn_blocking(move || tx.commit()).await)
}

/// A commit task's outcome; a task that panicked or was cancelled gives
/// [`TxnError::CommitInterrupted`].
#[cfg(feature = "async")]
fn interrupted_as_error(
    joined: Result<Result<crate::CommitInfo, TxnError>, tokio::task::JoinError>,
) -> Result<crate::CommitInfo, TxnError> {
    joined.unwrap_or_else(|join_error| {
        Err(TxnError::CommitInterrupted {
            reason: join_error.to_string(),
        })
    })
}
