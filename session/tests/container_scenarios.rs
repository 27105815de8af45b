//! The seed's container scenarios (zope-session-spec.md section 8: 40-46, 58,
//! 86, 89, 91, 92), run against both containers through the container
//! contract, with a manual clock. Where Keel deliberately differs from zope
//! the test says so in its name and comment.

#![allow(clippy::unwrap_used)]

use std::sync::{
    Arc,
    atomic::{AtomicU32, Ordering},
};

use keel_store::{
    ClientKey, ExpiryPolicy, ManualClock, RamContainer, RedbContainer, RedbOptions,
    SessionContainer, SessionValue, StoreError,
};
use keel_txn::{TransactionManager, TxnError};

/// A container under test, with its clock; the redb file is removed on drop.
struct Subject {
    container: Arc<dyn SessionContainer>,
    clock: ManualClock,
    dir: Option<std::path::PathBuf>,
}

impl Drop for Subject {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn ram(policy: ExpiryPolicy) -> Subject {
    let clock = ManualClock::new(1000);
    let container = RamContainer::new()
        .with_expiry(policy)
        .with_clock(Arc::new(clock.clone()));
    Subject {
        container: Arc::new(container),
        clock,
        dir: None,
    }
}

fn redb(policy: ExpiryPolicy) -> Subject {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "keel-container-scenarios-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let clock = ManualClock::new(1000);
    let options = RedbOptions::new()
        .with_expiry(policy)
        .with_clock(Arc::new(clock.clone()));
    let container = RedbContainer::open_with(dir.join("s.redb"), options).unwrap();
    Subject {
        container: Arc::new(container),
        clock,
        dir: Some(dir),
    }
}

fn key(n: u8) -> ClientKey {
    ClientKey::from_bytes([n; 32])
}

fn tm() -> TransactionManager {
    TransactionManager::new()
}

fn policy(timeout: u64, resolution: u64) -> ExpiryPolicy {
    ExpiryPolicy::default()
        .with_timeout(timeout)
        .with_resolution(resolution)
}

fn create(s: &Subject, k: ClientKey) {
    let mut tx = tm().begin();
    s.container.create_session(&mut tx, &k).unwrap();
    tx.commit().unwrap();
}

/// Access the session in its own committed transaction; its last access.
fn access(s: &Subject, k: ClientKey) -> Option<u64> {
    let mut tx = tm().begin();
    let info = s.container.session(&mut tx, &k).unwrap();
    tx.commit().unwrap();
    info.map(|i| i.last_access)
}

fn is_conflict(err: &TxnError) -> bool {
    err.is_retryable()
        && matches!(
            err.source_as::<StoreError>(),
            Some(StoreError::Conflict { .. })
        )
}

macro_rules! scenarios {
    ($($container:ident),*) => {$(
        mod $container {
            use super::*;

            #[test]
            fn a_new_session_is_stamped_with_now_scenario_40_44() {
                let s = $container(policy(60, 3));
                create(&s, key(1));
                assert_eq!(access(&s, key(1)), Some(1000));
            }

            #[test]
            fn last_access_moves_only_past_the_resolution_scenario_41_86() {
                let s = $container(policy(100, 10));
                create(&s, key(1));
                s.clock.set(1010); // L + resolution == now: unchanged
                assert_eq!(access(&s, key(1)), Some(1000));
                s.clock.set(1011); // L + resolution < now: touched
                assert_eq!(access(&s, key(1)), Some(1011));
            }

            #[test]
            fn expiry_boundaries_are_exact_scenario_86() {
                let s = $container(policy(100, 10));
                s.clock.set(2000);
                create(&s, key(1));
                s.clock.set(2110); // now == L + timeout + resolution: kept
                let mut tx = tm().begin();
                assert!(s.container.session(&mut tx, &key(1)).unwrap().is_some());
                drop(tx); // abort: no touch
                s.clock.set(2111);
                assert_eq!(access(&s, key(1)), None);
            }

            #[test]
            fn timeout_zero_never_expires_and_never_touches_scenario_42() {
                let s = $container(policy(0, 3));
                create(&s, key(1));
                s.clock.advance(5000);
                assert_eq!(access(&s, key(1)), Some(1000));
                assert_eq!(s.container.sweep(100).unwrap().removed, 0);
            }

            #[test]
            fn sweep_removes_only_expired_sessions_scenario_46() {
                let s = $container(policy(100, 10));
                create(&s, key(1));
                s.clock.advance(200);
                create(&s, key(2));
                s.clock.advance(1);
                let report = s.container.sweep(100).unwrap();
                assert_eq!(report.removed, 1);
                assert!(s.container.session_detail(&key(1)).unwrap().is_none());
                assert!(s.container.session_detail(&key(2)).unwrap().is_some());
            }

            #[test]
            fn a_manual_sweep_with_timeout_zero_removes_nothing_deliberately_not_scenario_89() {
                // zope's manual sweep() with timeout 0 removed sessions idle
                // longer than the resolution; in Keel timeout 0 means never.
                let s = $container(policy(0, 10));
                create(&s, key(1));
                s.clock.advance(100_000);
                assert_eq!(s.container.sweep(100).unwrap().removed, 0);
            }

            #[test]
            fn concurrent_touches_of_one_session_both_commit_scenario_58() {
                let s = $container(policy(60, 3));
                create(&s, key(1));
                s.clock.advance(10);
                let (mut a, mut b) = (tm().begin(), tm().begin());
                assert!(s.container.session(&mut a, &key(1)).unwrap().is_some());
                assert!(s.container.session(&mut b, &key(1)).unwrap().is_some());
                a.commit().unwrap();
                b.commit().unwrap();
                assert_eq!(access(&s, key(1)), Some(1010));
            }

            #[test]
            fn uncommitted_data_is_invisible_and_abort_rolls_back_scenario_91() {
                let s = $container(policy(60, 3));
                create(&s, key(1));
                let mut writer = tm().begin();
                s.container
                    .insert(&mut writer, &key(1), "p", "k", SessionValue::new(1u8))
                    .unwrap();
                let mut reader = tm().begin();
                assert!(s.container.get(&mut reader, &key(1), "p", "k").unwrap().is_none());
                writer.abort();
                let mut reader = tm().begin();
                assert!(s.container.get(&mut reader, &key(1), "p", "k").unwrap().is_none());
            }

            #[test]
            fn concurrent_writes_of_the_same_key_conflict_scenario_92() {
                let s = $container(policy(60, 3));
                create(&s, key(1));
                let (mut a, mut b) = (tm().begin(), tm().begin());
                for tx in [&mut a, &mut b] {
                    s.container
                        .insert(tx, &key(1), "p", "k", SessionValue::new(1u8))
                        .unwrap();
                }
                a.commit().unwrap();
                assert!(is_conflict(&b.commit().unwrap_err()));
            }

            #[test]
            fn different_keys_packages_and_new_clients_never_conflict_scenario_91_92() {
                // zope's RAM container raised ConflictError for two new
                // clients; Keel's containers do not (deliberate improvement).
                let s = $container(policy(60, 3));
                create(&s, key(1));
                let writes: [(u8, &str, &str); 4] =
                    [(1, "p", "a"), (1, "p", "b"), (1, "q", "a"), (2, "p", "a")];
                let mut txs: Vec<_> = writes
                    .iter()
                    .map(|&(client, pkg, name)| {
                        let mut tx = tm().begin();
                        if client == 2 {
                            s.container.create_session(&mut tx, &key(2)).unwrap();
                        }
                        s.container
                            .insert(&mut tx, &key(client), pkg, name, SessionValue::new(1u8))
                            .unwrap();
                        tx
                    })
                    .collect();
                for tx in txs.drain(..) {
                    tx.commit().unwrap();
                }
            }

            #[test]
            fn a_write_into_a_session_swept_meanwhile_conflicts_instead_of_being_lost_scenario_92() {
                // zope: both succeed and the write lands in an unreachable
                // object (a lost update). Keel: the write conflicts, and the
                // retry finds no session.
                let s = $container(policy(100, 10));
                create(&s, key(1));
                s.clock.advance(105);
                let mut writer = tm().begin();
                s.container
                    .insert(&mut writer, &key(1), "p", "k", SessionValue::new(1u8))
                    .unwrap();
                s.clock.advance(10);
                assert_eq!(s.container.sweep(100).unwrap().removed, 1);
                assert!(is_conflict(&writer.commit().unwrap_err()));
                assert!(s.container.session_detail(&key(1)).unwrap().is_none());
            }
        }
    )*};
}

scenarios!(ram, redb);

/// Read-only requests never wait for the disk: only a commit that writes
/// (data, or a due last-access touch) may block, so the layer commits the
/// others inline.
#[test]
fn only_a_writing_commit_may_block_on_redb() {
    let s = redb(policy(100, 10));
    create(&s, key(1));
    let mut tx = tm().begin();
    assert!(s.container.session(&mut tx, &key(1)).unwrap().is_some());
    assert!(
        s.container
            .get(&mut tx, &key(1), "p", "k")
            .unwrap()
            .is_none()
    );
    assert!(
        !tx.commit_may_block(),
        "a read within the resolution writes nothing"
    );
    tx.commit().unwrap();

    s.clock.advance(11);
    let mut tx = tm().begin();
    s.container.session(&mut tx, &key(1)).unwrap();
    assert!(tx.commit_may_block(), "a due touch is a durable write");
    drop(tx);

    let mut tx = tm().begin();
    s.container
        .insert(&mut tx, &key(1), "p", "k", SessionValue::new(1u8))
        .unwrap();
    assert!(tx.commit_may_block());
}
