//! A recording data manager shared by the keel-txn tests.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use keel_txn::{BoxError, DataManager, SavepointState};
use parking_lot::Mutex;

/// A shared event log: "<key>:<event>" entries in call order.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn push(&self, entry: impl Into<String>) {
        self.0.lock().push(entry.into());
    }
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock())
    }
}

/// Where a `Recorder` should fail.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FailAt {
    Nowhere,
    Begin,
    Commit,
    Vote,
    Rollback,
}

/// An error type of the data manager's own, to check it surfaces unchanged.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OwnError(pub &'static str);

/// A data manager that buffers integer writes to a shared "database" and logs
/// every protocol call.
pub struct Recorder {
    pub key: String,
    pub log: Log,
    pub db: Arc<Mutex<Vec<i64>>>,
    pub pending: Vec<i64>,
    pub fail_at: FailAt,
    pub savepoints: bool,
    pub retryable: bool,
    /// Say it has nothing to commit.
    pub read_only: bool,
}

impl Recorder {
    pub fn new(key: &str, log: &Log, db: &Arc<Mutex<Vec<i64>>>) -> Self {
        Recorder {
            key: key.to_owned(),
            log: log.clone(),
            db: db.clone(),
            pending: Vec::new(),
            fail_at: FailAt::Nowhere,
            savepoints: true,
            retryable: false,
            read_only: false,
        }
    }

    fn event(&self, what: &str) {
        self.log.push(format!("{}:{what}", self.key));
    }

    fn maybe_fail(&self, at: FailAt) -> Result<(), BoxError> {
        if self.fail_at == at {
            Err(Box::new(OwnError("I cannot be pickled")))
        } else {
            Ok(())
        }
    }
}

impl DataManager for Recorder {
    fn sort_key(&self) -> &str {
        &self.key
    }
    fn tpc_begin(&mut self) -> Result<(), BoxError> {
        self.event("tpc_begin");
        self.maybe_fail(FailAt::Begin)
    }
    fn commit(&mut self) -> Result<(), BoxError> {
        self.event("commit");
        self.maybe_fail(FailAt::Commit)
    }
    fn tpc_vote(&mut self) -> Result<(), BoxError> {
        self.event("tpc_vote");
        self.maybe_fail(FailAt::Vote)
    }
    fn tpc_finish(&mut self) {
        self.event("tpc_finish");
        self.db.lock().extend(self.pending.drain(..));
    }
    fn tpc_abort(&mut self) {
        self.event("tpc_abort");
        self.pending.clear();
    }
    fn abort(&mut self) {
        self.event("abort");
        self.pending.clear();
    }
    fn savepoint(&mut self) -> Option<SavepointState> {
        self.savepoints
            .then(|| Box::new(self.pending.clone()) as SavepointState)
    }
    fn rollback(&mut self, state: &SavepointState) -> Result<(), BoxError> {
        self.maybe_fail(FailAt::Rollback)?;
        let saved = state
            .downcast_ref::<Vec<i64>>()
            .ok_or("savepoint state of another data manager")?;
        self.pending = saved.clone();
        Ok(())
    }
    fn has_nothing_to_commit(&self) -> bool {
        self.read_only
    }
    fn should_retry(&self, error: &(dyn std::error::Error + 'static)) -> bool {
        self.retryable && error.downcast_ref::<OwnError>().is_some()
    }
}

pub fn db() -> Arc<Mutex<Vec<i64>>> {
    Arc::new(Mutex::new(Vec::new()))
}
