//! Before/after-commit and before/after-abort hooks run in the documented
//! order, exactly once, and an after-commit hook's failure never changes the
//! commit's outcome.

mod common;

use common::{FailAt, Log, Recorder, db};
use keel_txn::{TransactionManager, TxnError};

#[test]
fn hooks_run_in_order_around_two_phase_commit() {
    let (log, data) = (Log::default(), db());
    let mut tx = TransactionManager::new().begin();
    tx.join(Recorder::new("a", &log, &data)).unwrap();
    let l = log.clone();
    tx.before_commit(move |_| {
        l.push("before-commit 1");
        Ok(())
    });
    let l = log.clone();
    tx.before_commit(move |_| {
        l.push("before-commit 2");
        Ok(())
    });
    let l = log.clone();
    tx.after_commit(move |ok| {
        l.push(format!("after-commit {ok}"));
        Ok(())
    });
    tx.commit().unwrap();
    assert_eq!(
        log.take(),
        [
            "before-commit 1",
            "before-commit 2",
            "a:tpc_begin",
            "a:commit",
            "a:tpc_vote",
            "a:tpc_finish",
            "after-commit true"
        ]
    );
}

#[test]
fn a_before_commit_hook_can_join_a_data_manager_and_add_hooks() {
    let (log, data) = (Log::default(), db());
    let mut tx = TransactionManager::new().begin();
    let (l, d) = (log.clone(), data.clone());
    tx.before_commit(move |tx| {
        tx.join(Recorder::new("late", &l, &d))?.pending.push(7);
        let l2 = l.clone();
        tx.before_commit(move |_| {
            l2.push("nested hook");
            Ok(())
        });
        Ok(())
    });
    tx.commit().unwrap();
    assert_eq!(*data.lock(), [7]);
    assert_eq!(log.take()[0], "nested hook");
}

#[test]
fn a_failing_before_commit_hook_fails_the_commit_and_aborts_everything() {
    let (log, data) = (Log::default(), db());
    let mut tx = TransactionManager::new().begin();
    tx.join(Recorder::new("a", &log, &data))
        .unwrap()
        .pending
        .push(1);
    tx.before_commit(|_| Err("hook refused".into()));
    let l = log.clone();
    tx.after_commit(move |ok| {
        l.push(format!("after-commit {ok}"));
        Ok(())
    });
    let err = tx.commit().unwrap_err();
    assert!(matches!(&err, TxnError::Hook { source } if source.to_string() == "hook refused"));
    assert!(data.lock().is_empty());
    let events = log.take();
    assert!(
        events.contains(&"after-commit false".to_owned()),
        "{events:?}"
    );
    assert!(events.contains(&"a:abort".to_owned()), "{events:?}");
}

#[test]
fn after_commit_hooks_learn_that_the_commit_failed() {
    let (log, data) = (Log::default(), db());
    let mut tx = TransactionManager::new().begin();
    tx.join(Recorder::new("a", &log, &data)).unwrap().fail_at = FailAt::Vote;
    let l = log.clone();
    tx.after_commit(move |ok| {
        l.push(format!("after-commit {ok}"));
        Ok(())
    });
    tx.commit().unwrap_err();
    assert_eq!(log.take().last().unwrap(), "after-commit false");
}

#[test]
fn a_failing_after_commit_hook_is_logged_not_raised() {
    let (log, data) = (Log::default(), db());
    let mut tx = TransactionManager::new().begin();
    tx.join(Recorder::new("a", &log, &data))
        .unwrap()
        .pending
        .push(1);
    tx.after_commit(|_| Err("mail server down".into()));
    let l = log.clone();
    tx.after_commit(move |ok| {
        l.push(format!("second hook {ok}"));
        Ok(())
    });
    tx.commit()
        .expect("the commit succeeded whatever the hook says");
    assert_eq!(*data.lock(), [1]);
    assert_eq!(log.take().last().unwrap(), "second hook true");
}

#[test]
fn abort_hooks_run_around_the_abort_of_every_manager() {
    let (log, data) = (Log::default(), db());
    let mut tx = TransactionManager::new().begin();
    tx.join(Recorder::new("a", &log, &data)).unwrap();
    let l = log.clone();
    tx.before_abort(move || l.push("before-abort"));
    let l = log.clone();
    tx.after_abort(move || l.push("after-abort"));
    drop(tx);
    assert_eq!(log.take(), ["before-abort", "a:abort", "after-abort"]);
}

#[test]
fn abort_hooks_do_not_run_after_a_successful_commit() {
    let log = Log::default();
    let mut tx = TransactionManager::new().begin();
    let l = log.clone();
    tx.before_abort(move || l.push("before-abort"));
    tx.commit().unwrap();
    assert!(log.take().is_empty());
}
