//! Group commit: one thread owns redb's single writer.
//!
//! A data manager's vote sends its change set here and waits until it is
//! answered: blocking its thread ([`CommitterHandle::submit`]), or as a
//! future that holds no thread ([`CommitterHandle::submit_async`]). The committer takes the first queued request, drains whatever
//! else is queued (up to a batch limit), and runs them all in one redb write
//! transaction: each commit is validated against the current versions, which
//! include the earlier members of the batch, and applied only if valid. One
//! durable redb commit (one fsync) then covers the whole batch, and only after
//! it returns is anyone answered. A conflict fails its own request alone.
//!
//! A storage error fails the whole batch: before redb's commit, nothing was
//! written ([`StoreError::Storage`]); during it, the outcome is unknown
//! ([`StoreError::CommitOutcomeUnknown`]). Either way the database is closed
//! and reopened before the next batch, since redb refuses further work after
//! an I/O error.

use std::{
    path::PathBuf,
    sync::{Arc, mpsc},
    thread,
};

use parking_lot::RwLock;
use redb::{Durability, ReadableTable};
use tokio::sync::oneshot;

use crate::{
    ClientKey, ExpiryPolicy, StoreError, SweepReport,
    engine::apply::{self, ChangeSet},
    redb::{
        codec,
        open::{Db, guard_panic},
        snapshot::LatestSnapshot,
        tables,
        view::{WriteTables, storage},
    },
};

/// The database, shared by the committer (which may replace it) and readers.
pub(crate) type DbSlot = Arc<RwLock<Option<Db>>>;

/// Opens the database again after a storage error.
/// Open the database again: for writing (`false`), or read-only (`true`:
/// nothing is written, for readers while writes fail).
pub(crate) type Reopen = Box<dyn FnMut(bool) -> Result<Db, StoreError> + Send>;

/// After a storage error, how often the database is reopened for writing at
/// most (five times a second). In between, a commit waits for the next try
/// and readers read the last good state from a read-only open: a full disk
/// must not cost thousands of reopens a second, nor the reads. Writes resume
/// within this long of the disk healing.
const REOPEN_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Work for the committer.
#[derive(Debug)]
pub(crate) enum Job {
    /// A transaction's validated-at-commit change set.
    Commit(ChangeSet<Vec<u8>>),
    /// Admin: delete sessions.
    DeleteSessions(Vec<ClientKey>),
    /// Admin: delete up to `batch` expired sessions.
    Sweep {
        policy: ExpiryPolicy,
        now: u64,
        batch: usize,
    },
    /// Admin: store a setting.
    StoreSetting { name: String, value: Vec<u8> },
    /// Admin: store a setting unless it exists; answer the stored value.
    InitializeSetting { name: String, value: Vec<u8> },
    /// Reopen the database if a storage error closed it (a reader found it
    /// closed).
    Reopen,
}

/// What a job did.
#[derive(Debug)]
pub(crate) enum Done {
    Committed,
    Deleted(u64),
    Swept(SweepReport),
    Stored,
    Initialized(Vec<u8>),
    Reopened,
}

struct Request {
    job: Job,
    reply: Reply,
}

/// Where a job's answer goes.
enum Reply {
    /// A thread blocked in [`CommitterHandle::submit`].
    Blocking(mpsc::Sender<Result<Done, StoreError>>),
    /// A future returned by [`CommitterHandle::submit_async`].
    Async(oneshot::Sender<Result<Done, StoreError>>),
}

impl Reply {
    fn send(self, result: Result<Done, StoreError>) {
        // A waiter that went away needs no answer.
        match self {
            Reply::Blocking(sender) => drop(sender.send(result)),
            Reply::Async(sender) => drop(sender.send(result)),
        }
    }
}

/// The handle the container keeps: submits jobs, and stops the thread when
/// dropped (after it has answered everything queued).
#[derive(Debug)]
pub(crate) struct CommitterHandle {
    /// The file, if it was opened read-only: every job but a reopen is
    /// refused before it is queued.
    read_only: Option<PathBuf>,
    sender: Option<mpsc::Sender<Request>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl CommitterHandle {
    /// Start the committer thread.
    ///
    /// # Errors
    /// [`StoreError::Storage`] if the thread cannot be spawned.
    pub(crate) fn start(
        path: PathBuf,
        db: DbSlot,
        latest: Arc<LatestSnapshot>,
        reopen: Reopen,
        last_tid: u64,
        max_batch: usize,
        index_created: bool,
    ) -> Result<Self, StoreError> {
        // A database opened read-only stays read-only across reopening.
        let read_only = db
            .read()
            .as_ref()
            .is_some_and(|db| db.writable().is_none())
            .then(|| path.clone());
        let (sender, requests) = mpsc::channel();
        let committer = Committer {
            path,
            db,
            latest,
            reopen,
            requests,
            last_tid,
            max_batch: max_batch.max(1),
            index_created,
            broken: false,
            last_reopen: None,
        };
        let thread = thread::Builder::new()
            .name("keel-committer".to_owned())
            .spawn(move || committer.run())
            .map_err(storage("starting the committer thread"))?;
        Ok(CommitterHandle {
            read_only,
            sender: Some(sender),
            thread: Some(thread),
        })
    }

    /// Queue `job` and wait for its answer (after the durable commit).
    ///
    /// # Errors
    /// The job's own error; [`StoreError::Closed`] if the committer stopped.
    pub(crate) fn submit(&self, job: Job) -> Result<Done, StoreError> {
        let (reply, answer) = mpsc::channel();
        self.queue(job, Reply::Blocking(reply))?;
        answer.recv().map_err(|_| StoreError::Closed)?
    }

    /// Queue `job` now, and return a future of its answer (after the
    /// durable commit) that holds no thread while it waits. Dropping the
    /// future does not withdraw the job.
    ///
    /// # Errors
    /// As for [`submit`](Self::submit).
    pub(crate) fn submit_async(
        &self,
        job: Job,
    ) -> impl Future<Output = Result<Done, StoreError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self.queue(job, Reply::Async(reply));
        async move {
            queued?;
            answer.await.map_err(|_| StoreError::Closed)?
        }
    }

    fn queue(&self, job: Job, reply: Reply) -> Result<(), StoreError> {
        if let Some(path) = &self.read_only
            && !matches!(job, Job::Reopen)
        {
            return Err(StoreError::ReadOnly { path: path.clone() });
        }
        let sender = self.sender.as_ref().ok_or(StoreError::Closed)?;
        sender
            .send(Request { job, reply })
            .map_err(|_| StoreError::Closed)
    }
}

impl Drop for CommitterHandle {
    fn drop(&mut self) {
        // Closing the channel ends the committer's loop once the queue is
        // empty.
        self.sender = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the keel committer thread panicked");
        }
    }
}

/// Why a batch failed as a whole.
enum Failure {
    /// Before redb's commit: nothing was written.
    NotWritten(StoreError),
    /// In redb's commit: it may or may not be durable.
    Unknown(StoreError),
}

struct Committer {
    /// Names the database in errors.
    path: PathBuf,
    db: DbSlot,
    /// Where the state of each commit is published for readers, before the
    /// commit is answered.
    latest: Arc<LatestSnapshot>,
    reopen: Reopen,
    requests: mpsc::Receiver<Request>,
    last_tid: u64,
    max_batch: usize,
    /// Maintain the creation-time index (an absolute lifetime is set).
    index_created: bool,
    /// A batch failed on a storage error: reopen before the next.
    broken: bool,
    /// When the database was last reopened for writing.
    last_reopen: Option<std::time::Instant>,
}

impl Committer {
    fn run(mut self) {
        while let Ok(first) = self.requests.recv() {
            let mut batch = vec![first];
            while batch.len() < self.max_batch {
                match self.requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            self.process(batch);
        }
    }

    fn process(&mut self, batch: Vec<Request>) {
        if self.broken
            && let Err(err) = self.recover()
        {
            let err = Arc::new(err);
            for request in batch {
                request.reply.send(Err(StoreError::Storage {
                    operation: "reopening the session database after a storage error",
                    source: Box::new(Arc::clone(&err)),
                }));
            }
            return;
        }
        // NOTE: redb may panic on a file damaged outside redb; the committer
        // must survive it (every request would fail with `Closed` after).
        let outcome = guard_panic(&self.path.clone(), || self.run_batch(&batch))
            .unwrap_or_else(|corrupted| Err(Failure::NotWritten(corrupted)));
        match outcome {
            Ok(results) => {
                if let Some(db) = self.db.read().as_ref() {
                    self.latest.publish(db);
                }
                for (request, result) in batch.into_iter().zip(results) {
                    request.reply.send(result);
                }
            }
            Err(failure) => {
                self.broken = true;
                // Reopen at once, so readers do not meet the failed database
                // (for writing if the last try is a second old, else
                // read-only); if that fails too, the next request tries
                // again.
                let reopened = if self.reopen_due() {
                    self.reopen_now()
                } else {
                    self.open_for_readers()
                };
                if let Err(err) = reopened {
                    tracing::error!(error = %err, "reopening the session database failed");
                }
                let (err, unknown) = match failure {
                    Failure::NotWritten(err) => (Arc::new(err), false),
                    Failure::Unknown(err) => (Arc::new(err), true),
                };
                tracing::error!(error = %err, unknown, "a group commit failed");
                for request in batch {
                    let source = Box::new(Arc::clone(&err));
                    request.reply.send(Err(if unknown {
                        StoreError::CommitOutcomeUnknown { source }
                    } else {
                        StoreError::Storage {
                            operation: "committing to the session database",
                            source,
                        }
                    }));
                }
            }
        }
    }

    /// Whether the database may be reopened for writing now (see
    /// [`REOPEN_EVERY`]).
    fn reopen_due(&self) -> bool {
        self.last_reopen
            .is_none_or(|at| at.elapsed() >= REOPEN_EVERY)
    }

    /// Before a batch, after a storage error: reopen for writing, waiting
    /// first until that is due (the batch waits; readers go on meanwhile
    /// from the read-only open).
    fn recover(&mut self) -> Result<(), StoreError> {
        if let Some(at) = self.last_reopen {
            thread::sleep(REOPEN_EVERY.saturating_sub(at.elapsed()));
        }
        self.reopen_now()
    }

    /// Reopen for writing; if that fails, open read-only for readers (the
    /// disk may refuse writes while the file is intact), and report why the
    /// writing open failed.
    fn reopen_now(&mut self) -> Result<(), StoreError> {
        self.last_reopen = Some(std::time::Instant::now());
        // Close the failed database first: it holds the file lock (and so
        // does a snapshot of it).
        self.latest.clear();
        let mut slot = self.db.write();
        drop(slot.take());
        match (self.reopen)(false) {
            Ok(db) => {
                self.last_tid = read_last_tid(&db)?;
                self.latest.publish(&db);
                *slot = Some(db);
                self.broken = false;
                Ok(())
            }
            Err(err) => {
                if let Ok(db) = (self.reopen)(true) {
                    self.latest.publish(&db);
                    *slot = Some(db);
                }
                Err(err)
            }
        }
    }

    /// Replace the failed database with a read-only open of the file, for
    /// readers, until reopening for writing is due.
    fn open_for_readers(&mut self) -> Result<(), StoreError> {
        self.latest.clear();
        let mut slot = self.db.write();
        drop(slot.take());
        let db = (self.reopen)(true)?;
        self.latest.publish(&db);
        *slot = Some(db);
        Ok(())
    }

    fn run_batch(&mut self, batch: &[Request]) -> Result<Vec<Result<Done, StoreError>>, Failure> {
        if batch.iter().all(|r| matches!(r.job, Job::Reopen)) {
            return Ok(batch.iter().map(|_| Ok(Done::Reopened)).collect());
        }
        let mut txn = {
            let slot = self.db.read();
            let db = slot
                .as_ref()
                .ok_or(Failure::NotWritten(StoreError::Closed))?;
            db.writable()
                .ok_or_else(|| {
                    Failure::NotWritten(StoreError::ReadOnly {
                        path: self.path.clone(),
                    })
                })?
                .begin_write()
                .map_err(storage(BEGIN))
                .map_err(Failure::NotWritten)?
        };
        txn.set_durability(Durability::Immediate)
            .map_err(storage(BEGIN))
            .map_err(Failure::NotWritten)?;
        let mut tid = self.last_tid;
        let results = {
            let mut tables =
                WriteTables::open(&txn, self.index_created).map_err(Failure::NotWritten)?;
            let mut results = Vec::with_capacity(batch.len());
            for request in batch {
                let result = run_job(&mut tables, &txn, &request.job, &mut tid)
                    .map_err(Failure::NotWritten)?;
                results.push(result);
            }
            results
        };
        if tid != self.last_tid {
            let mut meta = txn
                .open_table(tables::META)
                .map_err(storage(APPLY))
                .map_err(Failure::NotWritten)?;
            meta.insert(tables::META_LAST_TID, tid.to_le_bytes().as_slice())
                .map_err(storage(APPLY))
                .map_err(Failure::NotWritten)?;
        }
        txn.commit()
            .map_err(storage(COMMIT))
            .map_err(Failure::Unknown)?;
        self.last_tid = tid;
        Ok(results)
    }
}

const BEGIN: &str = "beginning a write transaction";
const APPLY: &str = "applying a commit";
const COMMIT: &str = "committing a write transaction";

/// Run one job inside the batch's write transaction. The outer error fails
/// the batch; the inner one (a conflict) fails this job alone.
fn run_job(
    tables: &mut WriteTables<'_>,
    txn: &redb::WriteTransaction,
    job: &Job,
    tid: &mut u64,
) -> Result<Result<Done, StoreError>, StoreError> {
    Ok(Ok(match job {
        Job::Commit(changes) => {
            match apply::validate(tables, changes) {
                Ok(()) => {}
                Err(conflict @ StoreError::Conflict { .. }) => return Ok(Err(conflict)),
                // Validation writes nothing: a record it cannot decode (a
                // damaged file) fails this commit alone, not its batch.
                Err(damaged @ StoreError::CorruptRecord { .. }) => return Ok(Err(damaged)),
                Err(err) => return Err(err),
            }
            if changes.has_writes() {
                *tid += 1;
                apply::apply(tables, changes, *tid)?;
            }
            Done::Committed
        }
        Job::DeleteSessions(clients) => Done::Deleted(apply::delete_sessions(tables, clients)?),
        Job::Sweep { policy, now, batch } => {
            Done::Swept(apply::sweep(tables, policy, *now, *batch)?)
        }
        Job::StoreSetting { name, value } => {
            let mut settings = txn.open_table(tables::SETTINGS).map_err(storage(APPLY))?;
            settings
                .insert(name.as_str(), value.as_slice())
                .map_err(storage(APPLY))?;
            Done::Stored
        }
        Job::InitializeSetting { name, value } => {
            let mut settings = txn.open_table(tables::SETTINGS).map_err(storage(APPLY))?;
            let stored = settings
                .get(name.as_str())
                .map_err(storage(APPLY))?
                .map(|guard| guard.value().to_vec());
            match stored {
                Some(stored) => Done::Initialized(stored),
                None => {
                    settings
                        .insert(name.as_str(), value.as_slice())
                        .map_err(storage(APPLY))?;
                    Done::Initialized(value.clone())
                }
            }
        }
        Job::Reopen => Done::Reopened,
    }))
}

/// The last commit sequence number recorded in `db`.
///
/// # Errors
/// [`StoreError::Storage`] if it cannot be read.
pub(crate) fn read_last_tid(db: &Db) -> Result<u64, StoreError> {
    const READ: &str = "reading the commit sequence number";
    let txn = db.begin_read().map_err(storage(READ))?;
    let meta = txn.open_table(tables::META).map_err(storage(READ))?;
    Ok(meta
        .get(tables::META_LAST_TID)
        .map_err(storage(READ))?
        .and_then(|guard| codec::meta_u64(guard.value()))
        .unwrap_or(0))
}
