//! Savepoints span every joined data manager: rolling back undoes later
//! changes in all of them, aborts managers that joined later, and invalidates
//! later savepoints.

mod common;

use common::{FailAt, Log, Recorder, db};
use keel_txn::{Status, TransactionManager, TxnError};

#[test]
fn rollback_to_a_savepoint_undoes_later_changes_across_two_managers() {
    let (log, data) = (Log::default(), db());
    let mut tx = TransactionManager::new().begin();
    tx.join(Recorder::new("a", &log, &data))
        .unwrap()
        .pending
        .push(1);
    tx.join(Recorder::new("b", &log, &data))
        .unwrap()
        .pending
        .push(10);
    let sp = tx.savepoint().unwrap();
    tx.data_manager::<Recorder>("a").unwrap().pending.push(2);
    tx.data_manager::<Recorder>("b").unwrap().pending.push(20);
    tx.rollback(&sp).unwrap();
    assert_eq!(tx.data_manager::<Recorder>("a").unwrap().pending, [1]);
    assert_eq!(tx.data_manager::<Recorder>("b").unwrap().pending, [10]);

    // The savepoint stays valid: change and roll back again.
    tx.data_manager::<Recorder>("a").unwrap().pending.push(3);
    tx.rollback(&sp).unwrap();
    assert_eq!(tx.data_manager::<Recorder>("a").unwrap().pending, [1]);
    tx.commit().unwrap();
    assert_eq!(*data.lock(), [1, 10]);
}

#[test]
fn rollback_invalidates_later_savepoints_only() {
    let (log, data) = (Log::default(), db());
    let mut tx = TransactionManager::new().begin();
    tx.join(Recorder::new("a", &log, &data)).unwrap();
    let first = tx.savepoint().unwrap();
    let second = tx.savepoint().unwrap();
    tx.rollback(&first).unwrap();
    assert!(tx.is_valid(&first));
    assert!(!tx.is_valid(&second));
    assert!(matches!(
        tx.rollback(&second).unwrap_err(),
        TxnError::InvalidSavepoint
    ));
}

#[test]
fn a_manager_that_joined_after_the_savepoint_is_aborted_by_rollback() {
    let (log, data) = (Log::default(), db());
    let mut tx = TransactionManager::new().begin();
    tx.join(Recorder::new("a", &log, &data)).unwrap();
    let sp = tx.savepoint().unwrap();
    tx.join(Recorder::new("late", &log, &data))
        .unwrap()
        .pending
        .push(5);
    tx.rollback(&sp).unwrap();
    assert_eq!(tx.resource_keys().collect::<Vec<_>>(), ["a"]);
    assert_eq!(log.take(), ["late:abort"]);
    tx.commit().unwrap();
    assert!(data.lock().is_empty());
}

#[test]
fn a_manager_without_savepoints_makes_the_savepoint_fail_unless_optimistic() {
    let (log, data) = (Log::default(), db());
    let mut tx = TransactionManager::new().begin();
    tx.join(Recorder::new("a", &log, &data)).unwrap().savepoints = false;
    assert!(matches!(
        tx.savepoint().unwrap_err(),
        TxnError::SavepointUnsupported { resource } if resource == "a"
    ));
    assert_eq!(
        tx.status(),
        Status::Active,
        "a refused savepoint fails nothing"
    );

    let sp = tx.savepoint_optimistic().unwrap();
    assert!(matches!(
        tx.rollback(&sp).unwrap_err(),
        TxnError::SavepointUnsupported { .. }
    ));
    assert_eq!(
        tx.status(),
        Status::CommitFailed,
        "a failed rollback fails the transaction"
    );
    assert!(matches!(
        tx.try_commit().unwrap_err(),
        TxnError::TransactionFailed { .. }
    ));
}

#[test]
fn a_failed_rollback_puts_the_transaction_in_the_failed_state() {
    let (log, data) = (Log::default(), db());
    let mut tx = TransactionManager::new().begin();
    tx.join(Recorder::new("a", &log, &data)).unwrap();
    let sp = tx.savepoint().unwrap();
    tx.data_manager::<Recorder>("a").unwrap().fail_at = FailAt::Rollback;
    assert!(matches!(
        tx.rollback(&sp).unwrap_err(),
        TxnError::Resource { .. }
    ));
    assert!(matches!(
        tx.try_commit().unwrap_err(),
        TxnError::TransactionFailed { .. }
    ));
}

#[test]
fn commit_invalidates_savepoints_and_a_foreign_savepoint_is_refused() {
    let manager = TransactionManager::new();
    let mut tx = manager.begin();
    let sp = tx.savepoint().unwrap();
    let mut other = manager.begin();
    assert!(matches!(
        other.rollback(&sp).unwrap_err(),
        TxnError::InvalidSavepoint
    ));
    tx.try_commit().unwrap();
    assert!(!tx.is_valid(&sp));
}
