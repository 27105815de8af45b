//! Outcome counters of a transaction manager, kept per thread.
//!
//! Every transaction counts its begin and its outcome. One set of shared
//! atomics made that a cache line moved between cores on every request (see
//! `per_thread`), so each thread counts in a shard of its own and
//! [`Counters::stats`] adds the shards up.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use thread_local::ThreadLocal;

use crate::TxnStats;

/// How many transaction ids a shard takes from the shared counter at once.
const ID_BLOCK: u64 = 1024;

/// Outcome counters shared by a manager and its transactions.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    shards: ThreadLocal<Arc<Shard>>,
    /// The first id of the next block of ids handed to a shard.
    next_id_block: AtomicU64,
}

/// One thread's counts. A transaction keeps the shard of the thread that
/// began it, and counts its outcome there wherever it ends.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Shard {
    begun: AtomicU64,
    commits: AtomicU64,
    failed_commits: AtomicU64,
    conflicts: AtomicU64,
    aborts: AtomicU64,
    retries: AtomicU64,
    commit_nanos: AtomicU64,
    /// The shard's next transaction id, and the end of its block. Only the
    /// shard's own thread begins transactions on it, so plain loads and
    /// stores suffice.
    next_id: AtomicU64,
    id_limit: AtomicU64,
}

impl Counters {
    /// The calling thread's shard.
    pub(crate) fn local(&self) -> &Arc<Shard> {
        self.shards.get_or(Arc::default)
    }

    /// Count a transaction begun on the calling thread; returns the shard it
    /// counts its outcome in, and its id (unique within the manager).
    pub(crate) fn begin(&self) -> (Arc<Shard>, u64) {
        let shard = self.local();
        shard.begun.fetch_add(1, Relaxed);
        let mut id = shard.next_id.load(Relaxed);
        if id >= shard.id_limit.load(Relaxed) {
            // Ids start at 1.
            id = self.next_id_block.fetch_add(ID_BLOCK, Relaxed) + 1;
            shard.id_limit.store(id + ID_BLOCK, Relaxed);
        }
        shard.next_id.store(id + 1, Relaxed);
        (Arc::clone(shard), id)
    }

    /// The totals over every thread.
    pub(crate) fn stats(&self) -> TxnStats {
        let mut stats = TxnStats::default();
        let mut commit_nanos = 0u64;
        for shard in self.shards.iter() {
            stats.begun += shard.begun.load(Relaxed);
            stats.commits += shard.commits.load(Relaxed);
            stats.failed_commits += shard.failed_commits.load(Relaxed);
            stats.conflicts += shard.conflicts.load(Relaxed);
            stats.aborts += shard.aborts.load(Relaxed);
            stats.retries += shard.retries.load(Relaxed);
            commit_nanos = commit_nanos.saturating_add(shard.commit_nanos.load(Relaxed));
        }
        stats.commit_time = Duration::from_nanos(commit_nanos);
        stats
    }
}

impl Shard {
    pub(crate) fn record_commit(&self, took: Duration) {
        self.commits.fetch_add(1, Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.commit_nanos.fetch_add(nanos, Relaxed);
    }

    pub(crate) fn record_failed_commit(&self, retryable: bool) {
        self.failed_commits.fetch_add(1, Relaxed);
        if retryable {
            self.conflicts.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn record_abort(&self) {
        self.aborts.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }
}
