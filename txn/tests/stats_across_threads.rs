//! Outcome counters are kept per thread: the totals still count every
//! transaction once, wherever it began and ended, and ids stay unique.

use std::collections::HashSet;

use keel_txn::{PerThread, TransactionManager, TxnStats};

#[test]
fn stats_add_up_transactions_of_every_thread_and_ids_are_unique() {
    let manager = TransactionManager::new();
    // Enough per thread to use more than one block of ids.
    const PER_THREAD: u64 = 2_500;
    const THREADS: u64 = 4;
    let ids: Vec<Vec<u64>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let manager = manager.clone();
                scope.spawn(move || {
                    let mut ids = Vec::new();
                    for n in 0..PER_THREAD {
                        let tx = manager.begin();
                        ids.push(tx.id());
                        match (n + thread) % 3 {
                            0 => {
                                tx.commit().unwrap();
                            }
                            1 => tx.abort(),
                            // Ended on another thread than the one it began on.
                            _ => std::thread::spawn(move || drop(tx)).join().unwrap(),
                        }
                    }
                    manager.record_retry();
                    ids
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let all: Vec<u64> = ids.into_iter().flatten().collect();
    let unique: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len() as u64, THREADS * PER_THREAD, "ids repeat");
    assert!(!unique.contains(&0), "ids start at 1");

    let stats = manager.stats();
    let commits = (0..THREADS)
        .map(|t| (0..PER_THREAD).filter(|n| (n + t) % 3 == 0).count() as u64)
        .sum::<u64>();
    let mut expected = TxnStats::default();
    expected.begun = THREADS * PER_THREAD;
    expected.commits = commits;
    expected.aborts = THREADS * PER_THREAD - commits;
    expected.retries = THREADS;
    expected.commit_time = stats.commit_time;
    assert_eq!(stats, expected);
}

#[test]
fn per_thread_handles_share_one_value_and_keep_it_alive() {
    let shared = PerThread::new(vec![1, 2, 3]);
    let here = shared.handle();
    let there = std::thread::scope(|scope| scope.spawn(|| shared.handle()).join().unwrap());
    assert!(
        std::ptr::eq(&*here, &*there),
        "one value behind every handle"
    );
    assert!(std::ptr::eq(&*here, shared.get()));
    drop(shared);
    assert_eq!(*there, [1, 2, 3], "a handle outlives its PerThread");
}
