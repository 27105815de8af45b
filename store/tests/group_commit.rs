//! Group commit: concurrent commits share durable redb commits (fewer syncs
//! than commits), every caller's data is durable when its commit returns, and
//! a conflicting commit fails alone without failing its batch.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Barrier};

use common::SimDisk;
use keel_store::{ClientKey, RedbContainer, SessionContainer, SessionValue};
use keel_txn::{TransactionManager, commit_without_blocking};

fn key(n: usize) -> ClientKey {
    ClientKey::from_client_id(&format!("client-{n}"))
}

#[test]
fn concurrent_commits_share_syncs_and_are_all_durable_when_answered() {
    let disk = SimDisk::new();
    let container = Arc::new(RedbContainer::open_with("sim", disk.options()).unwrap());
    let manager = TransactionManager::new();
    let threads = 32;
    let per_thread = 20;
    let barrier = Arc::new(Barrier::new(threads));
    let syncs_before = disk.syncs();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (container, manager, barrier) = (
                Arc::clone(&container),
                manager.clone(),
                Arc::clone(&barrier),
            );
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..per_thread {
                    let mut tx = manager.begin();
                    container.create_session(&mut tx, &key(t)).unwrap();
                    container
                        .insert(
                            &mut tx,
                            &key(t),
                            "app",
                            &format!("n{i}"),
                            SessionValue::new(i),
                        )
                        .unwrap();
                    tx.commit().unwrap();
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    let commits = (threads * per_thread) as u64;
    let syncs = disk.syncs() - syncs_before;
    assert!(syncs < commits, "{syncs} syncs for {commits} commits");

    // Everything acknowledged survives a crash right now.
    drop(container);
    disk.crash();
    let container = RedbContainer::open_with("sim", disk.options()).unwrap();
    let mut tx = manager.begin();
    for t in 0..threads {
        let names = container.names(&mut tx, &key(t), "app").unwrap();
        assert_eq!(names.len(), per_thread, "client {t}");
    }
}

#[test]
fn a_conflicting_commit_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let container = Arc::new(RedbContainer::open(dir.path().join("s.redb")).unwrap());
    let manager = TransactionManager::new();
    let mut tx = manager.begin();
    for n in 0..16 {
        container.create_session(&mut tx, &key(n)).unwrap();
    }
    container
        .insert(&mut tx, &key(0), "app", "hot", SessionValue::new(0))
        .unwrap();
    tx.commit().unwrap();

    // 16 transactions, all prepared before any commits: two of them write
    // the same value, the others disjoint sessions.
    let mut transactions = Vec::new();
    for n in 0..16 {
        let mut tx = manager.begin();
        let (client, name) = if n < 2 { (0, "hot") } else { (n, "cold") };
        let _ = container.get(&mut tx, &key(client), "app", name).unwrap();
        container
            .insert(&mut tx, &key(client), "app", name, SessionValue::new(n))
            .unwrap();
        transactions.push(tx);
    }
    let barrier = Arc::new(Barrier::new(transactions.len()));
    let handles: Vec<_> = transactions
        .into_iter()
        .map(|tx| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                tx.commit()
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let hot_failures = results[..2].iter().filter(|r| r.is_err()).count();
    assert_eq!(
        hot_failures, 1,
        "exactly one of the two hot writers conflicts"
    );
    assert!(
        results[..2]
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| e.is_retryable())
    );
    assert!(results[2..].iter().all(Result::is_ok), "{results:?}");
}

/// Asynchronous votes: a commit waiting for the group commit's fsync holds no
/// thread. The runtime may run at most one blocking task, so if commits held
/// a blocking thread while they waited, they would go one at a time: one sync
/// per commit. They share syncs, and each is durable when answered.
#[test]
fn async_commits_hold_no_thread_while_they_wait_and_share_syncs() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .build()
        .unwrap();
    let disk = SimDisk::new();
    let container = Arc::new(RedbContainer::open_with("sim", disk.options()).unwrap());
    let manager = TransactionManager::new();
    let (tasks, per_task) = (64, 10);
    let syncs_before = disk.syncs();
    runtime.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let (container, manager) = (Arc::clone(&container), manager.clone());
                tokio::spawn(async move {
                    for i in 0..per_task {
                        let mut tx = manager.begin();
                        container.create_session(&mut tx, &key(t)).unwrap();
                        container
                            .insert(
                                &mut tx,
                                &key(t),
                                "app",
                                &format!("n{i}"),
                                SessionValue::new(i),
                            )
                            .unwrap();
                        assert!(!tx.commit_async_may_block());
                        commit_without_blocking(tx).await.unwrap();
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await.unwrap();
        }
    });
    let commits = (tasks * per_task) as u64;
    let syncs = disk.syncs() - syncs_before;
    assert!(syncs * 2 <= commits, "{syncs} syncs for {commits} commits");

    drop(container);
    disk.crash();
    let container = RedbContainer::open_with("sim", disk.options()).unwrap();
    let mut tx = manager.begin();
    for t in 0..tasks {
        let names = container.names(&mut tx, &key(t), "app").unwrap();
        assert_eq!(names.len(), per_task, "client {t}");
    }
}

/// A conflict found by the committer reaches an asynchronous vote as the
/// same retryable error a blocking one gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_commit_that_conflicts_fails_retryably_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let container = Arc::new(RedbContainer::open(dir.path().join("s.redb")).unwrap());
    let manager = TransactionManager::new();
    let mut tx = manager.begin();
    container.create_session(&mut tx, &key(0)).unwrap();
    container
        .insert(&mut tx, &key(0), "app", "hot", SessionValue::new(0))
        .unwrap();
    commit_without_blocking(tx).await.unwrap();

    let mut prepared = Vec::new();
    for n in 1..=2 {
        let mut tx = manager.begin();
        let _ = container.get(&mut tx, &key(0), "app", "hot").unwrap();
        container
            .insert(&mut tx, &key(0), "app", "hot", SessionValue::new(n))
            .unwrap();
        prepared.push(tx);
    }
    let second = prepared.pop().unwrap();
    let first = prepared.pop().unwrap();
    first.commit_async().await.unwrap();
    let err = second.commit_async().await.unwrap_err();
    assert!(err.is_retryable(), "{err}");

    let mut tx = manager.begin();
    let value = container.get(&mut tx, &key(0), "app", "hot").unwrap();
    assert_eq!(value.unwrap().to_typed::<i32>().unwrap(), 1);
}

/// Requests share the snapshot the committer publishes after each batch; it
/// is published before the batch is answered, so a transaction begun after
/// a commit returned reads that commit (read-your-writes across requests),
/// however the commits of many threads were grouped.
#[test]
fn a_commit_is_visible_to_the_next_transaction_as_soon_as_it_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let container = Arc::new(RedbContainer::open(dir.path().join("s.redb")).unwrap());
    let manager = TransactionManager::new();
    let (threads, rounds) = (8, 150);
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (container, manager, barrier) = (
                Arc::clone(&container),
                manager.clone(),
                Arc::clone(&barrier),
            );
            std::thread::spawn(move || {
                barrier.wait();
                for n in 1..=rounds {
                    let mut tx = manager.begin();
                    container.create_session(&mut tx, &key(t)).unwrap();
                    container
                        .insert(&mut tx, &key(t), "app", "n", SessionValue::new(n))
                        .unwrap();
                    tx.commit().unwrap();

                    let mut tx = manager.begin();
                    let seen = container.get(&mut tx, &key(t), "app", "n").unwrap();
                    assert_eq!(
                        seen.map(|v| v.to_typed::<u32>().unwrap()),
                        Some(n),
                        "thread {t} did not read its own commit {n}"
                    );
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
}
