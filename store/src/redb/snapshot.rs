//! Request snapshots of the redb container, and the newest one, shared.
//!
//! A request reads one consistent snapshot: a redb read transaction with the
//! two tables it reads open. Opening one costs a lock in redb's transaction
//! tracker and a lookup of each table's root, which was a tenth of the CPU of
//! a read-only request under load. So the committer, the only writer,
//! publishes a snapshot of each state it commits ([`LatestSnapshot`]), and
//! requests share it: one snapshot per group commit instead of one per
//! request.
//!
//! Read-your-writes across requests holds because the committer publishes
//! the new snapshot *before* it answers the commits of the batch: a client
//! that got its answer and sends its next request is served the new state.
//! Only the committer publishes; a reader that finds nothing published opens
//! a snapshot of its own and keeps it to itself, since publishing it could
//! replace a newer one.
//!
//! Requests take the snapshot through a handle of their thread
//! ([`ThreadHandle`]): a reference count shared by every request moved its
//! cache line between cores on each request (see `keel_txn::PerThread`).
//! Each thread keeps its handle until the next publish, which empties every
//! thread's slot, so no thread pins an old state while it is idle. Beside
//! the handle, the slot keeps what the thread's requests read from that
//! snapshot (`crate::read_cache`).

use std::sync::Arc;

use keel_txn::ThreadHandle;
use parking_lot::{Mutex, RwLock};
use redb::ReadTransaction;
use thread_local::ThreadLocal;

use crate::{
    StoreError,
    redb::{
        open::Db,
        read_cache::ReadCache,
        view::{SnapshotTables, snapshot_tables, storage},
    },
};

/// A consistent view of one committed state: a redb read transaction and
/// its open tables.
pub(crate) struct Snapshot {
    // NOTE: field order: the tables are dropped before their transaction.
    pub(crate) tables: SnapshotTables,
    _txn: ReadTransaction,
}

impl Snapshot {
    /// A snapshot of `db`'s newest committed state.
    ///
    /// # Errors
    /// [`StoreError::Storage`] if redb cannot begin a read transaction or
    /// open a table.
    pub(crate) fn begin(db: &Db) -> Result<Self, StoreError> {
        let txn = db
            .begin_read()
            .map_err(storage("reading the session database"))?;
        Self::of(txn)
    }

    /// The snapshot that `txn` sees.
    ///
    /// # Errors
    /// [`StoreError::Storage`] if a table cannot be opened.
    pub(crate) fn of(txn: ReadTransaction) -> Result<Self, StoreError> {
        let tables = snapshot_tables(&txn)?;
        Ok(Snapshot { tables, _txn: txn })
    }
}

/// The snapshot of the newest committed state, if the committer has one.
#[derive(Default)]
pub(crate) struct LatestSnapshot {
    current: RwLock<Option<Arc<Snapshot>>>,
    /// Each thread's handle on `current`, taken on its first use after a
    /// publish.
    handles: ThreadLocal<Slot>,
}

/// One thread's handle, and its reads. Padded: `ThreadLocal` keeps the
/// values of threads side by side, and two threads locking neighbouring
/// slots would share a cache line again.
#[derive(Default)]
#[repr(align(128))]
struct Slot(Mutex<Option<Cached>>);

struct Cached {
    handle: ThreadHandle<Snapshot>,
    reads: ReadCache,
}

impl LatestSnapshot {
    /// The newest published snapshot, through the calling thread's handle.
    pub(crate) fn get(&self) -> Option<ThreadHandle<Snapshot>> {
        let mut cached = self.handles.get_or(Slot::default).0.lock();
        if let Some(cached) = cached.as_ref() {
            return Some(cached.handle.clone());
        }
        // NOTE: read under the slot's lock: a publish that replaces
        // `current` meanwhile empties this slot after we fill it.
        let handle = ThreadHandle::new(self.current.read().clone()?);
        *cached = Some(Cached {
            handle: handle.clone(),
            reads: ReadCache::default(),
        });
        Some(handle)
    }

    /// Run `op` with the calling thread's reads of `snapshot`, if the
    /// thread's slot holds that snapshot (`None` otherwise: a request that
    /// moved to another thread, or a snapshot of its own).
    pub(crate) fn with_reads<R>(
        &self,
        snapshot: &ThreadHandle<Snapshot>,
        op: impl FnOnce(Option<&mut ReadCache>) -> R,
    ) -> R {
        let mut cached = self.handles.get_or(Slot::default).0.lock();
        match cached.as_mut() {
            Some(cached) if std::ptr::eq::<Snapshot>(&*cached.handle, &**snapshot) => {
                op(Some(&mut cached.reads))
            }
            _ => op(None),
        }
    }

    /// Publish a snapshot of `db`'s newest state (the committer, after each
    /// commit and before answering it). If one cannot be opened, nothing is
    /// published, so that readers open their own and meet the error
    /// themselves rather than read an older state.
    pub(crate) fn publish(&self, db: &Db) {
        let snapshot = match Snapshot::begin(db) {
            Ok(snapshot) => Some(Arc::new(snapshot)),
            Err(err) => {
                tracing::warn!(error = %err, "cannot open a snapshot of the new state");
                None
            }
        };
        self.replace(snapshot);
    }

    /// Withdraw the published snapshot (the database is about to close).
    pub(crate) fn clear(&self) {
        self.replace(None);
    }

    /// Make `snapshot` the current one and empty every thread's slot; the
    /// old snapshot is released outside the locks.
    fn replace(&self, snapshot: Option<Arc<Snapshot>>) {
        let old = std::mem::replace(&mut *self.current.write(), snapshot);
        let stale: Vec<_> = self
            .handles
            .iter()
            .filter_map(|slot| slot.0.lock().take())
            .collect();
        drop(stale);
        drop(old);
    }
}
