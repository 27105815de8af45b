//! A transaction manager: units of work that commit atomically, through
//! two-phase commit over the data managers they touched, or not at all.
//!
//! It is the Rust counterpart of Python's `transaction` package (the one ZODB
//! and zope.session rely on), with explicit, move-only transactions instead of
//! thread-locals. It does no I/O itself: storage lives in the
//! [`DataManager`]s that join a transaction (keel-store's session containers).
//!
//! ```
//! use keel_txn::{BoxError, DataManager, TransactionManager, TxnError};
//! use std::sync::{Arc, Mutex};
//!
//! /// Buffers additions to a shared total; applies them only at commit.
//! struct Adder { total: Arc<Mutex<i64>>, pending: i64 }
//!
//! impl DataManager for Adder {
//!     fn sort_key(&self) -> &str { "adder" }
//!     fn commit(&mut self) -> Result<(), BoxError> { Ok(()) }
//!     fn tpc_vote(&mut self) -> Result<(), BoxError> { Ok(()) }
//!     fn tpc_finish(&mut self) { *self.total.lock().unwrap() += self.pending; }
//!     fn tpc_abort(&mut self) { self.pending = 0; }
//!     fn abort(&mut self) { self.pending = 0; }
//! }
//!
//! let total = Arc::new(Mutex::new(0));
//! let manager = TransactionManager::new();
//!
//! let mut tx = manager.begin();
//! tx.join_with("adder", || Adder { total: total.clone(), pending: 0 })?.pending += 5;
//! tx.commit()?;
//! assert_eq!(*total.lock().unwrap(), 5);
//!
//! let mut tx = manager.begin();
//! tx.join_with("adder", || Adder { total: total.clone(), pending: 0 })?.pending += 7;
//! drop(tx); // dropping an unfinished transaction aborts it
//! assert_eq!(*total.lock().unwrap(), 5);
//! # Ok::<(), TxnError>(())
//! ```
//!
//! # What it provides
//! - [`TransactionManager`]: begins [`Transaction`]s, counts outcomes
//!   ([`TxnStats`]), and re-runs units of work on retryable errors
//!   ([`TransactionManager::run`], [`TransactionManager::run_async`]) under a
//!   [`RetryPolicy`] with jittered backoff.
//! - [`Transaction`]: lazy joining, two-phase commit in sort-key order,
//!   [`doom`](Transaction::doom), savepoints across all joined data managers,
//!   before/after-commit and before/after-abort hooks.
//! - Commits that wait without blocking a thread: a data manager may hand its
//!   vote back as a future ([`DataManager::tpc_vote_async`]), which
//!   [`Transaction::commit_async`] awaits; with the `async` feature,
//!   `commit_without_blocking` commits inline, as a task, or on tokio's
//!   blocking pool, whichever is the cheapest safe choice.
//! - [`PerThread`]: handles on a long-lived shared value whose reference
//!   counts are per thread, for data managers that every transaction creates
//!   (a shared count is a cache line moved between cores on every request).
//! - [`TxnError`]: one error type; a data manager's error comes back
//!   unchanged as the source, and [`TxnError::is_retryable`] keeps conflicts
//!   apart from fatal errors.
//!
//! # Differences from Python's `transaction`
//! - No ambient current transaction and no synchronizers: pass the
//!   `Transaction` explicitly.
//! - `commit(self)` consumes the transaction, so "use after commit" does not
//!   compile; [`Transaction::try_commit`] keeps a failed transaction around in
//!   the failed state, where only `abort` is allowed.
//! - Data managers are owned by the transaction and reached by sort key and
//!   type ([`Transaction::join_with`], [`Transaction::data_manager`]).

mod counters;
mod data_manager;
mod error;
mod manager;
mod per_thread;
mod retry;
mod savepoint;
mod transaction;

pub use data_manager::{DataManager, PendingVote, SavepointState};
pub use error::{BoxError, Phase, Retryable, TxnError};
pub use manager::{TransactionManager, TxnStats};
#[cfg(feature = "async")]
pub use manager::{commit_on_blocking_pool, commit_without_blocking};
pub use per_thread::{PerThread, ThreadHandle};
pub use retry::RetryPolicy;
pub use savepoint::Savepoint;
pub use transaction::{CommitInfo, Status, Transaction};
