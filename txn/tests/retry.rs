//! The retry helpers re-run a unit of work in a fresh transaction while the
//! error is retryable, a bounded number of times, and surface the last error
//! unchanged.

mod common;

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use common::{FailAt, Log, Recorder, db};
use keel_txn::{RetryPolicy, TransactionManager, TxnError};

fn fast(attempts: u32) -> TransactionManager {
    TransactionManager::new().with_retry_policy(
        RetryPolicy::default()
            .with_attempts(attempts)
            .with_backoff(Duration::from_micros(10), Duration::from_micros(100)),
    )
}

/// Joins a recorder that fails its vote with a retryable error while
/// `attempt < succeed_on`.
fn work(
    attempt: &AtomicU32,
    succeed_on: u32,
    log: &Log,
    data: &std::sync::Arc<parking_lot::Mutex<Vec<i64>>>,
    tx: &mut keel_txn::Transaction,
) -> Result<u32, TxnError> {
    let n = attempt.fetch_add(1, Ordering::SeqCst) + 1;
    let rec = tx.join(Recorder::new("a", log, data))?;
    rec.pending.push(i64::from(n));
    rec.retryable = true;
    if n < succeed_on {
        rec.fail_at = FailAt::Vote;
    }
    Ok(n)
}

#[test]
fn a_retry_succeeds_on_the_third_attempt() {
    let (log, data) = (Log::default(), db());
    let manager = fast(3);
    let attempt = AtomicU32::new(0);
    let result = manager.run(|tx| work(&attempt, 3, &log, &data, tx));
    assert_eq!(result.unwrap(), 3);
    assert_eq!(
        *data.lock(),
        [3],
        "only the successful attempt's write lands"
    );
    let stats = manager.stats();
    assert_eq!((stats.retries, stats.conflicts, stats.commits), (2, 2, 1));
}

#[test]
fn retries_give_up_after_the_last_attempt_with_the_last_error() {
    let (log, data) = (Log::default(), db());
    let manager = fast(3);
    let attempt = AtomicU32::new(0);
    let err = manager
        .run(|tx| work(&attempt, 99, &log, &data, tx))
        .unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(attempt.load(Ordering::SeqCst), 3);
    assert!(data.lock().is_empty());
}

#[test]
fn a_fatal_error_is_not_retried() {
    let (log, data) = (Log::default(), db());
    let manager = fast(5);
    let attempt = AtomicU32::new(0);
    let err = manager
        .run(|tx| {
            attempt.fetch_add(1, Ordering::SeqCst);
            tx.join(Recorder::new("a", &log, &data))?.fail_at = FailAt::Commit;
            Ok::<_, TxnError>(())
        })
        .unwrap_err();
    assert!(!err.is_retryable());
    assert_eq!(attempt.load(Ordering::SeqCst), 1);
}

#[test]
fn an_error_from_the_work_itself_aborts_and_is_retried_if_retryable() {
    #[derive(Debug)]
    enum AppError {
        Busy,
        Txn(TxnError),
    }
    impl From<TxnError> for AppError {
        fn from(err: TxnError) -> Self {
            AppError::Txn(err)
        }
    }
    impl keel_txn::Retryable for AppError {
        fn is_retryable(&self) -> bool {
            match self {
                AppError::Busy => true,
                AppError::Txn(err) => err.is_retryable(),
            }
        }
    }
    let (log, data) = (Log::default(), db());
    let manager = fast(3);
    let attempt = AtomicU32::new(0);
    let value = manager
        .run(|tx| {
            tx.join(Recorder::new("a", &log, &data))
                .map_err(AppError::from)?
                .pending
                .push(1);
            if attempt.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(AppError::Busy);
            }
            Ok("done")
        })
        .unwrap();
    assert_eq!(value, "done");
    assert_eq!(log.take()[0], "a:abort", "the failed attempt was aborted");
    assert_eq!(*data.lock(), [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_async_retry_succeeds_on_the_third_attempt() {
    let (log, data) = (Log::default(), db());
    let manager = fast(3);
    let attempt = AtomicU32::new(0);
    let result = manager
        .run_async(async |tx| {
            tokio::task::yield_now().await;
            work(&attempt, 3, &log, &data, tx)
        })
        .await;
    assert_eq!(result.unwrap(), 3);
    assert_eq!(*data.lock(), [3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_async_retry_gives_up_after_the_last_attempt() {
    let (log, data) = (Log::default(), db());
    let manager = fast(2);
    let attempt = AtomicU32::new(0);
    let err = manager
        .run_async(async |tx| work(&attempt, 99, &log, &data, tx))
        .await
        .unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(attempt.load(Ordering::SeqCst), 2);
}
