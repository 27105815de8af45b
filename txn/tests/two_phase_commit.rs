//! Two-phase commit: every joined data manager commits, in sort-key order, or
//! none does; the error that stopped a commit comes back unchanged; a failed
//! transaction can only be aborted.

mod common;

use common::{FailAt, Log, OwnError, Recorder, db};
use keel_txn::{Phase, Status, TransactionManager, TxnError};

#[test]
fn commit_calls_each_phase_on_all_managers_in_sort_key_order() {
    let (log, data) = (Log::default(), db());
    let manager = TransactionManager::new();
    let mut tx = manager.begin();
    // Joined in the opposite order of their sort keys.
    tx.join(Recorder::new("b", &log, &data))
        .unwrap()
        .pending
        .push(2);
    tx.join(Recorder::new("a", &log, &data))
        .unwrap()
        .pending
        .push(1);
    let info = tx.commit().unwrap();
    assert_eq!(info.resources, 2);
    assert_eq!(
        log.take(),
        [
            "a:tpc_begin",
            "b:tpc_begin",
            "a:commit",
            "b:commit",
            "a:tpc_vote",
            "b:tpc_vote",
            "a:tpc_finish",
            "b:tpc_finish"
        ]
    );
    assert_eq!(*data.lock(), [1, 2]);
    assert_eq!(manager.stats().commits, 1);
}

#[test]
fn joining_twice_returns_the_same_data_manager() {
    let (log, data) = (Log::default(), db());
    let mut tx = TransactionManager::new().begin();
    tx.join(Recorder::new("a", &log, &data))
        .unwrap()
        .pending
        .push(1);
    tx.join_with("a", || -> Recorder { panic!("must not be created again") })
        .unwrap()
        .pending
        .push(2);
    assert_eq!(tx.resource_keys().collect::<Vec<_>>(), ["a"]);
    assert_eq!(tx.data_manager::<Recorder>("a").unwrap().pending, [1, 2]);
    tx.commit().unwrap();
    assert_eq!(*data.lock(), [1, 2]);
}

#[test]
fn a_sort_key_joined_with_another_type_is_reported() {
    struct Other;
    impl keel_txn::DataManager for Other {
        fn sort_key(&self) -> &str {
            "a"
        }
        fn commit(&mut self) -> Result<(), keel_txn::BoxError> {
            Ok(())
        }
        fn tpc_vote(&mut self) -> Result<(), keel_txn::BoxError> {
            Ok(())
        }
        fn tpc_finish(&mut self) {}
        fn tpc_abort(&mut self) {}
        fn abort(&mut self) {}
    }
    let (log, data) = (Log::default(), db());
    let mut tx = TransactionManager::new().begin();
    tx.join(Recorder::new("a", &log, &data)).unwrap();
    let err = tx.join(Other).map(|_| ()).unwrap_err();
    assert!(matches!(err, TxnError::WrongDataManagerType { resource } if resource == "a"));
}

#[test]
fn a_vote_failure_in_the_second_manager_aborts_the_first() {
    let (log, data) = (Log::default(), db());
    let mut tx = TransactionManager::new().begin();
    tx.join(Recorder::new("a", &log, &data))
        .unwrap()
        .pending
        .push(1);
    let b = tx.join(Recorder::new("b", &log, &data)).unwrap();
    b.pending.push(2);
    b.fail_at = FailAt::Vote;
    let err = tx.commit().unwrap_err();
    assert!(matches!(
        &err,
        TxnError::Resource { resource, phase: Phase::Vote, retryable: false, .. } if resource == "b"
    ));
    let events = log.take();
    assert!(events.contains(&"a:tpc_abort".to_owned()), "{events:?}");
    assert!(events.contains(&"b:tpc_abort".to_owned()), "{events:?}");
    assert!(
        !events.iter().any(|e| e.ends_with("tpc_finish")),
        "{events:?}"
    );
    assert!(data.lock().is_empty(), "nothing may be written");
}

#[test]
fn the_data_managers_own_error_surfaces_unchanged_as_the_source() {
    let (log, data) = (Log::default(), db());
    let mut tx = TransactionManager::new().begin();
    tx.join(Recorder::new("a", &log, &data)).unwrap().fail_at = FailAt::Commit;
    let err = tx.commit().unwrap_err();
    let own = err
        .source_as::<OwnError>()
        .expect("source is the data manager's error");
    assert_eq!(own.to_string(), "I cannot be pickled");
    let source = std::error::Error::source(&err).unwrap();
    assert_eq!(source.to_string(), "I cannot be pickled");
    assert!(err.to_string().contains("I cannot be pickled"), "{err}");
}

#[test]
fn managers_that_never_began_are_aborted_not_tpc_aborted() {
    let (log, data) = (Log::default(), db());
    let mut tx = TransactionManager::new().begin();
    tx.join(Recorder::new("a", &log, &data)).unwrap().fail_at = FailAt::Begin;
    tx.join(Recorder::new("b", &log, &data)).unwrap();
    tx.commit().unwrap_err();
    assert_eq!(log.take(), ["a:tpc_begin", "a:tpc_abort", "b:abort"]);
}

#[test]
fn after_a_failed_commit_only_abort_is_allowed() {
    let (log, data) = (Log::default(), db());
    let manager = TransactionManager::new();
    let mut tx = manager.begin();
    tx.join(Recorder::new("a", &log, &data)).unwrap().fail_at = FailAt::Vote;
    let first = tx.try_commit().unwrap_err();
    assert!(matches!(first, TxnError::Resource { .. }));
    assert_eq!(tx.status(), Status::CommitFailed);

    let second = tx.try_commit().unwrap_err();
    assert!(
        matches!(&second, TxnError::TransactionFailed { reason } if reason.contains("I cannot be pickled")),
        "{second}"
    );
    let join = tx
        .join(Recorder::new("b", &log, &data))
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(join, TxnError::TransactionFailed { .. }));
    assert!(matches!(
        tx.savepoint().unwrap_err(),
        TxnError::TransactionFailed { .. }
    ));
    assert!(matches!(
        tx.doom().unwrap_err(),
        TxnError::InvalidState { .. }
    ));

    tx.abort();
    let stats = manager.stats();
    assert_eq!(
        (stats.commits, stats.failed_commits, stats.aborts),
        (0, 1, 1)
    );
}

#[test]
fn a_doomed_transaction_cannot_commit_but_can_abort() {
    let (log, data) = (Log::default(), db());
    let mut tx = TransactionManager::new().begin();
    tx.join(Recorder::new("a", &log, &data))
        .unwrap()
        .pending
        .push(1);
    tx.doom().unwrap();
    assert!(tx.is_doomed());
    // Still usable: data managers can join.
    tx.join(Recorder::new("b", &log, &data)).unwrap();
    assert!(matches!(tx.try_commit().unwrap_err(), TxnError::Doomed));
    assert!(tx.is_doomed(), "a refused commit leaves it doomed");
    tx.abort();
    assert_eq!(log.take(), ["a:abort", "b:abort"]);
    assert!(data.lock().is_empty());
}

#[test]
fn dropping_an_unfinished_transaction_aborts_it() {
    let (log, data) = (Log::default(), db());
    let manager = TransactionManager::new();
    {
        let mut tx = manager.begin();
        tx.join(Recorder::new("a", &log, &data))
            .unwrap()
            .pending
            .push(1);
    }
    assert_eq!(log.take(), ["a:abort"]);
    assert!(data.lock().is_empty());
    assert_eq!(manager.stats().aborts, 1);
}

#[test]
fn a_committed_transaction_cannot_commit_again_or_be_doomed() {
    let mut tx = TransactionManager::new().begin();
    tx.try_commit().unwrap();
    assert_eq!(tx.status(), Status::Committed);
    assert!(matches!(
        tx.try_commit().unwrap_err(),
        TxnError::InvalidState {
            action: "commit",
            status: Status::Committed
        }
    ));
    assert!(matches!(
        tx.doom().unwrap_err(),
        TxnError::InvalidState { .. }
    ));
}

#[test]
fn retryable_errors_are_those_the_data_manager_says_so() {
    let (log, data) = (Log::default(), db());
    let mut tx = TransactionManager::new().begin();
    let a = tx.join(Recorder::new("a", &log, &data)).unwrap();
    a.fail_at = FailAt::Vote;
    a.retryable = true;
    let err = tx.commit().unwrap_err();
    assert!(err.is_retryable());

    let mut tx = TransactionManager::new().begin();
    tx.join(Recorder::new("a", &log, &data)).unwrap().fail_at = FailAt::Vote;
    assert!(!tx.commit().unwrap_err().is_retryable());
}

#[test]
fn a_commit_may_block_if_a_data_manager_or_a_hook_says_so() {
    let (log, data) = (Log::default(), db());
    let mut tx = TransactionManager::new().begin();
    assert!(!tx.commit_may_block(), "nothing joined: nothing can block");
    tx.after_commit(|_| Ok(()));
    assert!(tx.commit_may_block(), "hooks are arbitrary code");
    let mut tx = TransactionManager::new().begin();
    tx.join(Recorder::new("a", &log, &data)).unwrap();
    assert!(tx.commit_may_block(), "data managers may block by default");
}

#[test]
fn a_transaction_with_nothing_to_commit_ends_without_two_phase_commit() {
    let (log, data) = (Log::default(), db());
    let manager = TransactionManager::new();
    let read_only = |key: &str| {
        let mut dm = Recorder::new(key, &log, &data);
        dm.read_only = true;
        dm
    };

    let mut tx = manager.begin();
    tx.join(read_only("b")).unwrap();
    tx.join(read_only("a")).unwrap();
    let info = tx.commit().unwrap();
    assert_eq!(info.resources, 2);
    assert_eq!(log.take(), ["b:abort", "a:abort"]);
    assert_eq!(manager.stats().commits, 1);

    // One data manager with something to commit: all of them take part.
    let mut tx = manager.begin();
    tx.join(read_only("a")).unwrap();
    tx.join(Recorder::new("b", &log, &data))
        .unwrap()
        .pending
        .push(7);
    tx.commit().unwrap();
    assert_eq!(
        log.take(),
        [
            "a:tpc_begin",
            "b:tpc_begin",
            "a:commit",
            "b:commit",
            "a:tpc_vote",
            "b:tpc_vote",
            "a:tpc_finish",
            "b:tpc_finish"
        ]
    );
    assert_eq!(*data.lock(), [7]);

    // A commit hook is arbitrary code: it gets the full protocol.
    let mut tx = manager.begin();
    tx.join(read_only("a")).unwrap();
    let hook_log = log.clone();
    tx.after_commit(move |committed| {
        hook_log.push(format!("hook:{committed}"));
        Ok(())
    });
    tx.commit().unwrap();
    assert_eq!(
        log.take(),
        [
            "a:tpc_begin",
            "a:commit",
            "a:tpc_vote",
            "a:tpc_finish",
            "hook:true"
        ]
    );

    // A doomed transaction still refuses to commit.
    let mut tx = manager.begin();
    tx.join(read_only("a")).unwrap();
    tx.doom().unwrap();
    assert!(matches!(tx.try_commit(), Err(TxnError::Doomed)));
    assert_eq!(manager.stats().commits, 3);
}
