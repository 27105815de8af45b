//! `Transaction::commit_async` and `commit_without_blocking`: asynchronous
//! votes are awaited in sort-key order, fail like synchronous ones, and a
//! commit whose caller stops waiting still runs to the end.

mod common;

use std::{sync::Arc, time::Duration};

use common::{Log, OwnError, Recorder};
use keel_txn::{
    BoxError, DataManager, PendingVote, Phase, Status, TransactionManager, TxnError,
    commit_without_blocking,
};
use parking_lot::Mutex;
use tokio::sync::Semaphore;

/// A data manager whose vote is a future that waits for `gate` to open, like
/// a change set handed to a committer thread and answered after its fsync.
struct DeferredVoter {
    key: String,
    log: Log,
    db: Arc<Mutex<Vec<i64>>>,
    pending: Vec<i64>,
    gate: Arc<Semaphore>,
    fail_vote: bool,
    /// What `commit_async_may_block` answers.
    async_may_block: bool,
}

impl DeferredVoter {
    fn new(key: &str, log: &Log, db: &Arc<Mutex<Vec<i64>>>, gate: &Arc<Semaphore>) -> Self {
        DeferredVoter {
            key: key.to_owned(),
            log: log.clone(),
            db: db.clone(),
            pending: Vec::new(),
            gate: gate.clone(),
            fail_vote: false,
            async_may_block: false,
        }
    }

    fn event(&self, what: &str) {
        self.log.push(format!("{}:{what}", self.key));
    }
}

impl DataManager for DeferredVoter {
    fn sort_key(&self) -> &str {
        &self.key
    }
    fn commit(&mut self) -> Result<(), BoxError> {
        self.event("commit");
        Ok(())
    }
    fn tpc_vote(&mut self) -> Result<(), BoxError> {
        self.event("tpc_vote");
        Ok(())
    }
    fn tpc_vote_async(&mut self) -> Option<PendingVote> {
        self.event("vote_queued");
        let (gate, log, key, fail) = (
            self.gate.clone(),
            self.log.clone(),
            self.key.clone(),
            self.fail_vote,
        );
        Some(Box::pin(async move {
            let permit = gate.acquire().await.map_err(|_| "gate closed")?;
            permit.forget();
            log.push(format!("{key}:vote_answered"));
            if fail {
                return Err(Box::new(OwnError("the disk is full")) as BoxError);
            }
            Ok(())
        }))
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
    fn commit_async_may_block(&self) -> bool {
        self.async_may_block
    }
}

fn fixture() -> (TransactionManager, Log, Arc<Mutex<Vec<i64>>>) {
    (TransactionManager::new(), Log::default(), Arc::default())
}

#[tokio::test]
async fn commit_async_awaits_each_vote_in_sort_key_order_then_finishes_all() {
    let (manager, log, db) = fixture();
    let gate = Arc::new(Semaphore::new(1));
    let mut tx = manager.begin();
    tx.join(Recorder::new("c", &log, &db))
        .expect("join")
        .pending
        .push(3);
    tx.join(DeferredVoter::new("b", &log, &db, &gate))
        .expect("join")
        .pending
        .push(2);
    tx.join(Recorder::new("a", &log, &db))
        .expect("join")
        .pending
        .push(1);

    let info = tx.commit_async().await.expect("commit");

    assert_eq!(info.resources, 3);
    assert_eq!(
        log.take(),
        [
            "a:tpc_begin",
            "c:tpc_begin",
            "a:commit",
            "b:commit",
            "c:commit",
            "a:tpc_vote",
            "b:vote_queued",
            "b:vote_answered",
            "c:tpc_vote",
            "a:tpc_finish",
            "b:tpc_finish",
            "c:tpc_finish",
        ]
    );
    assert_eq!(*db.lock(), [1, 2, 3]);
    assert_eq!(manager.stats().commits, 1);
}

#[tokio::test]
async fn a_failing_async_vote_aborts_every_data_manager_and_surfaces_unchanged() {
    let (manager, log, db) = fixture();
    let gate = Arc::new(Semaphore::new(1));
    let mut tx = manager.begin();
    tx.join(Recorder::new("a", &log, &db))
        .expect("join")
        .pending
        .push(1);
    let voter = tx
        .join(DeferredVoter::new("b", &log, &db, &gate))
        .expect("join");
    voter.pending.push(2);
    voter.fail_vote = true;
    tx.join(Recorder::new("c", &log, &db))
        .expect("join")
        .pending
        .push(3);

    let err = tx.try_commit_async().await.expect_err("the vote fails");

    match &err {
        TxnError::Resource {
            resource, phase, ..
        } => {
            assert_eq!(resource, "b");
            assert_eq!(*phase, Phase::Vote);
        }
        other => panic!("expected a resource error, got {other:?}"),
    }
    assert_eq!(
        err.source_as::<OwnError>().map(|e| e.0),
        Some("the disk is full")
    );
    let events = log.take();
    assert!(
        !events.iter().any(|e| e == "c:tpc_vote"),
        "no vote after a refusal: {events:?}"
    );
    for key in ["a", "b", "c"] {
        assert!(
            events.contains(&format!("{key}:tpc_abort")),
            "{key} aborted: {events:?}"
        );
    }
    assert!(db.lock().is_empty(), "nothing applied");
    assert_eq!(tx.status(), Status::CommitFailed);
    assert!(matches!(
        tx.try_commit_async().await,
        Err(TxnError::TransactionFailed { .. })
    ));
}

#[test]
fn commit_async_may_block_follows_data_managers_and_hooks() {
    let (manager, log, db) = fixture();
    let gate = Arc::new(Semaphore::new(1));

    let mut tx = manager.begin();
    tx.join(DeferredVoter::new("b", &log, &db, &gate))
        .expect("join");
    assert!(tx.commit_may_block(), "its synchronous vote would block");
    assert!(!tx.commit_async_may_block(), "its only wait is a future");

    tx.join(Recorder::new("a", &log, &db)).expect("join");
    assert!(
        tx.commit_async_may_block(),
        "a data manager without an async vote may block by default"
    );

    let mut tx = manager.begin();
    tx.join(DeferredVoter::new("b", &log, &db, &gate))
        .expect("join");
    tx.after_commit(|_| Ok(()));
    assert!(tx.commit_async_may_block(), "hooks are arbitrary code");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_without_blocking_awaits_an_async_vote_instead_of_calling_tpc_vote() {
    let (manager, log, db) = fixture();
    let gate = Arc::new(Semaphore::new(2));

    let mut tx = manager.begin();
    tx.join(DeferredVoter::new("b", &log, &db, &gate))
        .expect("join")
        .pending
        .push(1);
    commit_without_blocking(tx).await.expect("commit");
    let events = log.take();
    assert!(events.contains(&"b:vote_answered".to_owned()), "{events:?}");
    assert!(!events.contains(&"b:tpc_vote".to_owned()), "{events:?}");

    // When a data manager says even its async commit may block, the whole
    // commit goes to the blocking pool, which votes synchronously.
    let mut tx = manager.begin();
    let voter = tx
        .join(DeferredVoter::new("b", &log, &db, &gate))
        .expect("join");
    voter.pending.push(2);
    voter.async_may_block = true;
    commit_without_blocking(tx).await.expect("commit");
    let events = log.take();
    assert!(events.contains(&"b:tpc_vote".to_owned()), "{events:?}");
    assert!(!events.contains(&"b:vote_queued".to_owned()), "{events:?}");
    assert_eq!(*db.lock(), [1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_caller_stops_waiting_still_runs_to_the_end() {
    let (manager, log, db) = fixture();
    let gate = Arc::new(Semaphore::new(0));
    let mut tx = manager.begin();
    tx.join(DeferredVoter::new("b", &log, &db, &gate))
        .expect("join")
        .pending
        .push(7);

    // The caller (a request whose client went away) gives up mid-vote.
    let gave_up =
        tokio::time::timeout(Duration::from_millis(50), commit_without_blocking(tx)).await;
    assert!(
        gave_up.is_err(),
        "the vote cannot finish while the gate is shut"
    );
    assert!(db.lock().is_empty());

    // The durable write completes later: the transaction still finishes.
    gate.add_permits(1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while db.lock().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the commit never finished: {:?}",
            log.take()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(*db.lock(), [7]);
    assert!(log.take().contains(&"b:tpc_finish".to_owned()));
    assert_eq!(manager.stats().commits, 1);
}

#[tokio::test]
async fn dropping_commit_async_mid_vote_aborts_the_transaction() {
    let (manager, log, db) = fixture();
    let gate = Arc::new(Semaphore::new(0));
    let mut tx = manager.begin();
    tx.join(DeferredVoter::new("b", &log, &db, &gate))
        .expect("join")
        .pending
        .push(7);
    let gave_up = tokio::time::timeout(Duration::from_millis(20), tx.commit_async()).await;
    assert!(gave_up.is_err());
    let events = log.take();
    assert_eq!(
        events.last().map(String::as_str),
        Some("b:tpc_abort"),
        "{events:?}"
    );
    assert!(db.lock().is_empty());
    assert_eq!(manager.stats().aborts, 1);
}
