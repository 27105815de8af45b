//! I/O errors during a commit (a write or a sync that fails, injected through
//! redb's `StorageBackend`) give a typed error that is not retryable; a
//! transaction is never half applied; the container reopens the database by
//! itself, so later commits work; and after a crash every acknowledged commit
//! is still there.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::SimDisk;
use keel_store::{ClientKey, RedbContainer, SessionContainer, SessionValue, StoreError};
use keel_txn::{TransactionManager, TxnError};

fn key() -> ClientKey {
    ClientKey::from_client_id("faulty")
}

/// One transaction writing two values that must appear together.
fn commit_pair(container: &RedbContainer, n: u32) -> Result<(), TxnError> {
    let manager = TransactionManager::new();
    let mut tx = manager.begin();
    let result = (|| {
        container.create_session(&mut tx, &key())?;
        container.insert(&mut tx, &key(), "a", &n.to_string(), SessionValue::new(n))?;
        container.insert(&mut tx, &key(), "b", &n.to_string(), SessionValue::new(n))
    })();
    if let Err(err) = result {
        // Reads may fail while the disk fails; report it as a commit failure.
        return Err(TxnError::Hook {
            source: Box::new(err),
        });
    }
    tx.commit().map(|_| ())
}

/// Commit transaction `n` once the disk healed (the container reopens the
/// database for writing at most every 200 ms: the first commit waits for
/// that, and may meet the old failure once).
fn commit_after_heal(container: &RedbContainer, n: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        match commit_pair(container, n) {
            Ok(()) => return,
            Err(err) if std::time::Instant::now() < deadline => {
                let _ = err;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(err) => panic!("no commit within 3 s of healing: {err}"),
        }
    }
}

/// Whether transaction `n` is present; panics if only half of it is.
fn present(container: &RedbContainer, n: u32) -> bool {
    let manager = TransactionManager::new();
    let mut tx = manager.begin();
    let a = container.get(&mut tx, &key(), "a", &n.to_string()).unwrap();
    let b = container.get(&mut tx, &key(), "b", &n.to_string()).unwrap();
    assert_eq!(a.is_some(), b.is_some(), "transaction {n} is half applied");
    a.is_some()
}

#[test]
fn a_failing_write_or_sync_never_half_applies_a_transaction() {
    for fail_syncs in [false, true] {
        for after in 0..10 {
            let disk = SimDisk::new();
            let container = RedbContainer::open_with("faulty", disk.options()).unwrap();
            commit_pair(&container, 0).unwrap();
            if fail_syncs {
                disk.fail_syncs_after(after);
            } else {
                disk.fail_writes_after(after);
            }
            let mut acknowledged = vec![0];
            let mut n = 0;
            let mut failed_commits = 0;
            // Commit until the fault hits, and twice more while it lasts.
            while failed_commits < 3 && n < 100 {
                n += 1;
                match commit_pair(&container, n) {
                    Ok(()) => acknowledged.push(n),
                    Err(err) => {
                        failed_commits += 1;
                        assert!(!err.is_retryable(), "{err}");
                        let store = err.source_as::<StoreError>();
                        assert!(
                            matches!(
                                store,
                                Some(
                                    StoreError::CommitOutcomeUnknown { .. }
                                        | StoreError::Storage { .. }
                                        | StoreError::Closed
                                )
                            ) || matches!(err, TxnError::Hook { .. }),
                            "{err:?}"
                        );
                    }
                }
            }
            assert!(disk.failures() > 0, "no fault was injected (after {after})");
            disk.heal();
            // The container reopens the database: commits work again.
            let last = n + 1;
            commit_after_heal(&container, last);
            acknowledged.push(last);
            for n in 0..=last {
                let here = present(&container, n);
                if acknowledged.contains(&n) {
                    assert!(here, "acknowledged transaction {n} is missing");
                }
            }
            drop(container);
            disk.crash();
            let container = RedbContainer::open_with("faulty", disk.options()).unwrap();
            for n in 0..=last {
                let here = present(&container, n);
                if acknowledged.contains(&n) {
                    assert!(here, "acknowledged transaction {n} is lost in a crash");
                }
            }
        }
    }
}

#[test]
fn a_disk_that_keeps_failing_gives_errors_until_it_heals() {
    let disk = SimDisk::new();
    let container = RedbContainer::open_with("faulty", disk.options()).unwrap();
    commit_pair(&container, 0).unwrap();
    disk.fail_writes_after(0);
    for n in 1..4 {
        assert!(commit_pair(&container, n).is_err());
    }
    disk.heal();
    commit_after_heal(&container, 4);
    assert!(present(&container, 0));
    assert!(present(&container, 4));
}

/// While the disk refuses writes (full), reads keep answering from the last
/// good state, however many commits fail meanwhile; once it heals, writes
/// work again without a restart.
#[test]
fn reads_keep_working_while_writes_fail() {
    let disk = SimDisk::new();
    let container = RedbContainer::open_with("full", disk.options()).unwrap();
    commit_pair(&container, 0).unwrap();
    disk.fail_writes_after(0);
    let started = std::time::Instant::now();
    for n in 1..11 {
        assert!(commit_pair(&container, n).is_err());
        assert!(present(&container, 0), "read {n} while the disk is full");
    }
    // Each failed commit tried to reopen the database for writing: at most
    // every 200 ms, so ten of them took at least 9 x 200 ms.
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(1800),
        "10 reopening attempts in {:?}",
        started.elapsed()
    );
    disk.heal();
    commit_after_heal(&container, 99);
    assert!(present(&container, 0) && present(&container, 99));
}
