//! The container contract, written once and run against every container
//! (RAM and redb): session lifecycle, read-your-own-writes, the touch rule and
//! expiry boundaries of zope.session, serialization at commit, the isolation
//! anomalies optimistic versioning forbids, sweeping, and the admin view.
//! A new backend joins by adding one module to the macro at the bottom
//! (PostgreSQL's runs against the machine's server, see `common::postgres`).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::BTreeMap,
    sync::{Arc, Barrier},
};

use common::{Env, Kind, NoPickle};
use keel_store::{ClientKey, ExpiryPolicy, SessionValue, StoreError};
use keel_txn::{Transaction, TxnError};

/// Session `n`. On a Redis Cluster all in one bucket (the first byte of
/// the key, 0x00): some tests put several sessions in one transaction, which
/// a cluster commits only within one hash slot; elsewhere spread over
/// buckets as ids are.
fn key(n: u32) -> ClientKey {
    if !ONE_BUCKET.get() {
        return ClientKey::from_client_id(&format!("client-{n}"));
    }
    // Remembered: ~256 SHA-256 hashes a key are slow in a debug build.
    static KEYS: std::sync::Mutex<BTreeMap<u32, ClientKey>> =
        std::sync::Mutex::new(BTreeMap::new());
    *KEYS.lock().unwrap().entry(n).or_insert_with(|| {
        (0u32..)
            .map(|draw| ClientKey::from_client_id(&format!("client-{n}-{draw}")))
            .find(|key| key.as_bytes()[0] == 0)
            .expect("one of 2^32 draws lands in bucket 0")
    })
}

thread_local! {
    /// Set by the Redis Cluster tests: [`key`] keeps to one bucket.
    static ONE_BUCKET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn int(value: Option<SessionValue>) -> Option<i64> {
    value.map(|v| v.to_typed::<i64>().expect("an integer"))
}

fn store_error(err: &TxnError) -> &StoreError {
    err.source_as::<StoreError>()
        .unwrap_or_else(|| panic!("not a store error: {err:?}"))
}

impl Env {
    /// Commit a transaction creating session `n` with `app/count = count`.
    fn seed(&self, n: u32, count: i64) {
        let mut tx = self.manager.begin();
        self.container.create_session(&mut tx, &key(n)).unwrap();
        self.put(&mut tx, n, "app", "count", count);
        tx.commit().unwrap();
    }

    fn put(&self, tx: &mut Transaction, n: u32, package: &str, name: &str, value: i64) {
        self.container
            .insert(tx, &key(n), package, name, SessionValue::new(value))
            .unwrap();
    }

    fn read(&self, tx: &mut Transaction, n: u32, package: &str, name: &str) -> Option<i64> {
        int(self.container.get(tx, &key(n), package, name).unwrap())
    }

    /// The committed value, read in a fresh transaction.
    fn committed(&self, n: u32, package: &str, name: &str) -> Option<i64> {
        let mut tx = self.manager.begin();
        let value = self.read(&mut tx, n, package, name);
        tx.abort();
        value
    }

    fn exists(&self, n: u32) -> bool {
        let mut tx = self.manager.begin();
        let live = self.container.session(&mut tx, &key(n)).unwrap().is_some();
        tx.abort();
        live
    }
}

fn session_lifecycle(kind: Kind) {
    let env = Env::default_for(kind);
    let c = &env.container;
    let mut tx = env.manager.begin();
    assert_eq!(c.session(&mut tx, &key(1)).unwrap(), None);
    assert_eq!(
        c.get(&mut tx, &key(1), "app", "x").unwrap().map(|_| ()),
        None
    );
    assert!(matches!(
        c.insert(&mut tx, &key(1), "app", "x", SessionValue::new(1)),
        Err(StoreError::NoSuchSession { .. })
    ));
    let info = c.create_session(&mut tx, &key(1)).unwrap();
    assert_eq!(
        (info.created, info.last_access, info.principal),
        (1000, 1000, None)
    );
    env.put(&mut tx, 1, "b.pkg", "two", 2);
    env.put(&mut tx, 1, "a.pkg", "one", 1);
    env.put(&mut tx, 1, "a.pkg", "zero", 0);
    tx.commit().unwrap();

    let mut tx = env.manager.begin();
    assert_eq!(c.packages(&mut tx, &key(1)).unwrap(), ["a.pkg", "b.pkg"]);
    assert_eq!(c.names(&mut tx, &key(1), "a.pkg").unwrap(), ["one", "zero"]);
    assert_eq!(env.read(&mut tx, 1, "a.pkg", "one"), Some(1));
    assert!(c.remove(&mut tx, &key(1), "a.pkg", "one").unwrap());
    assert!(!c.remove(&mut tx, &key(1), "a.pkg", "one").unwrap());
    tx.commit().unwrap();
    assert_eq!(env.committed(1, "a.pkg", "one"), None);
    assert_eq!(env.committed(1, "a.pkg", "zero"), Some(0));

    let mut tx = env.manager.begin();
    assert!(c.delete_session(&mut tx, &key(1)).unwrap());
    assert!(!c.delete_session(&mut tx, &key(1)).unwrap());
    tx.commit().unwrap();
    assert!(!env.exists(1));
    assert_eq!(env.committed(1, "a.pkg", "zero"), None);
    assert!(c.session_detail(&key(1)).unwrap().is_none());
}

fn create_session_returns_the_live_one(kind: Kind) {
    let env = Env::default_for(kind);
    env.seed(1, 5);
    env.clock.advance(10);
    let mut tx = env.manager.begin();
    let info = env.container.create_session(&mut tx, &key(1)).unwrap();
    assert_eq!(info.created, 1000);
    assert_eq!(env.read(&mut tx, 1, "app", "count"), Some(5));
}

fn a_transaction_reads_its_own_writes(kind: Kind) {
    let env = Env::default_for(kind);
    env.seed(1, 1);
    let c = &env.container;
    let mut tx = env.manager.begin();
    env.put(&mut tx, 1, "app", "count", 2);
    env.put(&mut tx, 1, "app", "new", 3);
    assert_eq!(env.read(&mut tx, 1, "app", "count"), Some(2));
    assert_eq!(c.names(&mut tx, &key(1), "app").unwrap(), ["count", "new"]);
    assert!(c.remove(&mut tx, &key(1), "app", "new").unwrap());
    assert_eq!(env.read(&mut tx, 1, "app", "new"), None);
    env.put(&mut tx, 1, "other", "x", 4);
    assert_eq!(c.packages(&mut tx, &key(1)).unwrap(), ["app", "other"]);
    assert!(c.remove(&mut tx, &key(1), "other", "x").unwrap());
    assert_eq!(c.packages(&mut tx, &key(1)).unwrap(), ["app"]);
    // Another transaction sees none of it.
    assert_eq!(env.committed(1, "app", "count"), Some(1));
    tx.commit().unwrap();
    assert_eq!(env.committed(1, "app", "count"), Some(2));
}

fn an_aborted_transaction_leaves_no_trace(kind: Kind) {
    let env = Env::default_for(kind);
    env.seed(1, 1);
    let mut tx = env.manager.begin();
    env.put(&mut tx, 1, "app", "count", 2);
    env.container.create_session(&mut tx, &key(2)).unwrap();
    tx.abort();
    let mut tx = env.manager.begin();
    env.put(&mut tx, 1, "app", "count", 3);
    drop(tx); // dropping aborts too
    assert_eq!(env.committed(1, "app", "count"), Some(1));
    assert!(!env.exists(2));
}

fn expiry_boundaries_follow_zope(kind: Kind) {
    // Timeout 100, resolution 10: L = 2000 is live at 2110, expired at 2111.
    let env = Env::new(
        kind,
        ExpiryPolicy::default()
            .with_timeout(100)
            .with_resolution(10),
        2000,
    );
    env.seed(1, 1);
    env.clock.set(2110);
    let mut tx = env.manager.begin();
    assert!(env.container.session(&mut tx, &key(1)).unwrap().is_some());
    tx.abort(); // the touch is not kept
    env.clock.set(2111);
    assert!(!env.exists(1));
    assert_eq!(env.committed(1, "app", "count"), None);
    let mut tx = env.manager.begin();
    assert!(matches!(
        env.container
            .insert(&mut tx, &key(1), "app", "x", SessionValue::new(1)),
        Err(StoreError::NoSuchSession { .. })
    ));
    // Re-creating it starts empty.
    env.container.create_session(&mut tx, &key(1)).unwrap();
    assert_eq!(env.read(&mut tx, 1, "app", "count"), None);
    tx.commit().unwrap();
    assert_eq!(env.committed(1, "app", "count"), None);
    assert!(env.exists(1));
}

fn the_touch_rule_follows_zope(kind: Kind) {
    // L = 1000, resolution 10: not rewritten at 1010, rewritten at 1011.
    let env = Env::new(
        kind,
        ExpiryPolicy::default()
            .with_timeout(100)
            .with_resolution(10),
        1000,
    );
    env.seed(1, 1);
    let last_access = |env: &Env| {
        let mut tx = env.manager.begin();
        let info = env.container.session(&mut tx, &key(1)).unwrap().unwrap();
        tx.commit().unwrap();
        info.last_access
    };
    env.clock.set(1010);
    assert_eq!(last_access(&env), 1000);
    env.clock.set(1011);
    assert_eq!(last_access(&env), 1011);
    env.clock.set(1012);
    assert_eq!(last_access(&env), 1011);
    let detail = env.container.session_detail(&key(1)).unwrap().unwrap();
    assert_eq!(detail.summary.last_access, 1011);
}

fn timeout_zero_never_expires(kind: Kind) {
    let env = Env::new(kind, ExpiryPolicy::default().with_timeout(0), 1000);
    env.seed(1, 1);
    env.clock.advance(10 * 365 * 86_400);
    assert!(env.exists(1));
    assert_eq!(env.container.sweep(100).unwrap().removed, 0);
    assert_eq!(env.committed(1, "app", "count"), Some(1));
}

fn an_absolute_lifetime_expires_active_sessions(kind: Kind) {
    let policy = ExpiryPolicy::default()
        .with_timeout(100)
        .with_resolution(10)
        .with_absolute_lifetime(Some(50));
    let env = Env::new(kind, policy, 1000);
    env.seed(1, 1);
    for now in [1020, 1040, 1050] {
        env.clock.set(now);
        assert!(env.exists(1), "live at {now}");
    }
    env.clock.set(1051);
    assert!(!env.exists(1));
    assert_eq!(env.container.sweep(10).unwrap().removed, 1);
}

fn an_unserializable_value_fails_the_commit_and_writes_nothing(kind: Kind) {
    let env = Env::default_for(kind);
    env.seed(1, 1);
    let mut tx = env.manager.begin();
    env.put(&mut tx, 1, "app", "count", 2);
    env.container.create_session(&mut tx, &key(2)).unwrap();
    env.container
        .insert(&mut tx, &key(1), "app", "oops", SessionValue::new(NoPickle))
        .unwrap();
    let err = tx.commit().unwrap_err();
    assert!(!err.is_retryable());
    match store_error(&err) {
        StoreError::Unserializable {
            package,
            key,
            source,
        } => {
            assert_eq!((package.as_str(), key.as_str()), ("app", "oops"));
            assert!(
                source.to_string().contains("I cannot be pickled"),
                "{source}"
            );
        }
        other => panic!("expected Unserializable, got {other:?}"),
    }
    assert_eq!(env.committed(1, "app", "count"), Some(1));
    assert_eq!(env.committed(1, "app", "oops"), None);
    assert!(!env.exists(2));
}

fn lost_update_is_prevented(kind: Kind) {
    let env = Env::default_for(kind);
    env.seed(1, 0);
    let mut t1 = env.manager.begin();
    let mut t2 = env.manager.begin();
    let v1 = env.read(&mut t1, 1, "app", "count").unwrap();
    let v2 = env.read(&mut t2, 1, "app", "count").unwrap();
    env.put(&mut t1, 1, "app", "count", v1 + 1);
    env.put(&mut t2, 1, "app", "count", v2 + 1);
    t1.commit().unwrap();
    let err = t2.commit().unwrap_err();
    assert!(err.is_retryable());
    assert!(matches!(store_error(&err), StoreError::Conflict { .. }));
    assert_eq!(env.committed(1, "app", "count"), Some(1));

    // With retries, concurrent increments all count.
    let env = Arc::new(env);
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let env = Arc::clone(&env);
            let barrier = Arc::clone(&barrier);
            let one_bucket = ONE_BUCKET.get();
            std::thread::spawn(move || {
                ONE_BUCKET.set(one_bucket);
                barrier.wait();
                let manager = env
                    .manager
                    .clone()
                    .with_retry_policy(keel_txn::RetryPolicy::default().with_attempts(100));
                manager
                    .run(|tx| -> Result<(), StoreError> {
                        let n = env
                            .container
                            .get(tx, &key(1), "app", "count")?
                            .map_or(0, |v| v.to_typed::<i64>().unwrap());
                        env.container
                            .insert(tx, &key(1), "app", "count", SessionValue::new(n + 1))
                    })
                    .unwrap();
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    assert_eq!(env.committed(1, "app", "count"), Some(1 + threads as i64));
}

fn dirty_write_is_prevented(kind: Kind) {
    // Two transactions write x and y; they cannot both commit, and the result
    // is entirely one of them.
    let env = Env::default_for(kind);
    env.seed(1, 0);
    let mut t1 = env.manager.begin();
    let mut t2 = env.manager.begin();
    env.put(&mut t1, 1, "app", "x", 1);
    env.put(&mut t2, 1, "app", "x", 2);
    env.put(&mut t2, 1, "app", "y", 2);
    env.put(&mut t1, 1, "app", "y", 1);
    t2.commit().unwrap();
    let err = t1.commit().unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(env.committed(1, "app", "x"), Some(2));
    assert_eq!(env.committed(1, "app", "y"), Some(2));
}

fn aborted_read_is_prevented(kind: Kind) {
    let env = Env::default_for(kind);
    env.seed(1, 0);
    let mut writer = env.manager.begin();
    env.put(&mut writer, 1, "app", "count", 99);
    // Uncommitted: invisible.
    let mut reader = env.manager.begin();
    assert_eq!(env.read(&mut reader, 1, "app", "count"), Some(0));
    writer.abort();
    // Aborted: never visible.
    assert_eq!(env.read(&mut reader, 1, "app", "count"), Some(0));
    reader.commit().unwrap();
    assert_eq!(env.committed(1, "app", "count"), Some(0));
}

fn read_skew_is_prevented(kind: Kind) {
    // Invariant x == y. A reader that saw the old x must not see the new y.
    let env = Env::default_for(kind);
    let mut tx = env.manager.begin();
    env.container.create_session(&mut tx, &key(1)).unwrap();
    env.put(&mut tx, 1, "app", "x", 0);
    env.put(&mut tx, 1, "app", "y", 0);
    tx.commit().unwrap();

    let mut reader = env.manager.begin();
    assert_eq!(env.read(&mut reader, 1, "app", "x"), Some(0));
    let mut writer = env.manager.begin();
    env.put(&mut writer, 1, "app", "x", 1);
    env.put(&mut writer, 1, "app", "y", 1);
    writer.commit().unwrap();
    match env.container.get(&mut reader, &key(1), "app", "y") {
        // A snapshot (redb): the old y.
        Ok(y) => {
            assert_eq!(int(y), Some(0));
            reader.commit().unwrap();
        }
        // No snapshot (RAM): refused at once, retryable.
        Err(err) => {
            assert!(err.is_retryable(), "{err}");
            assert!(reader.commit().unwrap_err().is_retryable());
        }
    }
}

fn disjoint_names_packages_and_clients_never_conflict(kind: Kind) {
    let env = Env::default_for(kind);
    env.seed(1, 0);
    env.seed(2, 0);
    let pairs: [[(u32, &str, &str); 2]; 3] = [
        [(1, "app", "a"), (1, "app", "b")],
        [(1, "app", "c"), (1, "other", "c")],
        [(1, "app", "count"), (2, "app", "count")],
    ];
    for [(n1, p1, k1), (n2, p2, k2)] in pairs {
        let mut t1 = env.manager.begin();
        let mut t2 = env.manager.begin();
        assert!(env.container.session(&mut t1, &key(n1)).unwrap().is_some());
        assert!(env.container.session(&mut t2, &key(n2)).unwrap().is_some());
        let _ = env.read(&mut t1, n1, p1, k1);
        let _ = env.read(&mut t2, n2, p2, k2);
        env.put(&mut t1, n1, p1, k1, 10);
        env.put(&mut t2, n2, p2, k2, 20);
        t1.commit().unwrap();
        t2.commit().unwrap();
        assert_eq!(env.committed(n1, p1, k1), Some(10));
        assert_eq!(env.committed(n2, p2, k2), Some(20));
    }
}

fn concurrent_touches_never_conflict(kind: Kind) {
    let env = Env::new(
        kind,
        ExpiryPolicy::default()
            .with_timeout(100)
            .with_resolution(10),
        1000,
    );
    env.seed(1, 0);
    env.clock.set(1050);
    let mut t1 = env.manager.begin();
    assert_eq!(
        env.container
            .session(&mut t1, &key(1))
            .unwrap()
            .unwrap()
            .last_access,
        1050
    );
    env.clock.set(1070);
    let mut t2 = env.manager.begin();
    assert_eq!(
        env.container
            .session(&mut t2, &key(1))
            .unwrap()
            .unwrap()
            .last_access,
        1070
    );
    // A writer of the same session in between does not conflict with them.
    let mut writer = env.manager.begin();
    env.put(&mut writer, 1, "app", "count", 1);
    writer.commit().unwrap();
    t2.commit().unwrap();
    t1.commit().unwrap();
    let detail = env.container.session_detail(&key(1)).unwrap().unwrap();
    assert_eq!(detail.summary.last_access, 1070, "touches merge by maximum");
    assert_eq!(env.committed(1, "app", "count"), Some(1));
}

fn a_deleted_session_is_never_resurrected(kind: Kind) {
    let env = Env::default_for(kind);
    env.seed(1, 0);
    // By a request in flight while another deletes it.
    let mut writer = env.manager.begin();
    assert!(
        env.container
            .session(&mut writer, &key(1))
            .unwrap()
            .is_some()
    );
    env.put(&mut writer, 1, "app", "count", 1);
    let mut deleter = env.manager.begin();
    assert!(env.container.delete_session(&mut deleter, &key(1)).unwrap());
    deleter.commit().unwrap();
    let err = writer.commit().unwrap_err();
    assert!(err.is_retryable());
    assert!(!env.exists(1));
    assert!(env.container.session_detail(&key(1)).unwrap().is_none());

    // By a request in flight while the admin deletes it.
    env.seed(2, 0);
    let mut writer = env.manager.begin();
    env.put(&mut writer, 2, "app", "count", 1);
    assert_eq!(env.container.delete_sessions(&[key(2), key(3)]).unwrap(), 1);
    assert!(writer.commit().unwrap_err().is_retryable());
    assert!(env.container.session_detail(&key(2)).unwrap().is_none());

    // By a touch in flight: dropped.
    env.seed(4, 0);
    env.clock.advance(1000);
    let mut toucher = env.manager.begin();
    assert!(
        env.container
            .session(&mut toucher, &key(4))
            .unwrap()
            .is_some()
    );
    env.container.delete_sessions(&[key(4)]).unwrap();
    let _ = toucher.commit();
    assert!(env.container.session_detail(&key(4)).unwrap().is_none());
}

fn a_typed_read_of_the_wrong_type_is_an_error(kind: Kind) {
    let env = Env::default_for(kind);
    let mut tx = env.manager.begin();
    env.container.create_session(&mut tx, &key(1)).unwrap();
    env.container
        .insert(&mut tx, &key(1), "app", "name", SessionValue::new("Ada"))
        .unwrap();
    tx.commit().unwrap();
    let mut tx = env.manager.begin();
    let value = env
        .container
        .get(&mut tx, &key(1), "app", "name")
        .unwrap()
        .unwrap();
    assert!(value.to_typed::<u32>().is_err());
    assert_eq!(value.to_typed::<String>().unwrap(), "Ada");
}

fn sweeping_removes_exactly_the_expired(kind: Kind) {
    let env = Env::new(
        kind,
        ExpiryPolicy::default()
            .with_timeout(100)
            .with_resolution(10),
        1000,
    );
    for n in 0..10 {
        env.clock.set(1000 + u64::from(n) * 10);
        env.seed(n, i64::from(n));
    }
    // At 1161 sessions with L + 110 < 1161 (L <= 1050: n = 0..=5) expired.
    env.clock.set(1161);
    assert_eq!(env.container.stats().unwrap().expired, 6);
    let first = env.container.sweep(4).unwrap();
    assert_eq!((first.removed, first.more), (4, true));
    let second = env.container.sweep(4).unwrap();
    assert_eq!((second.removed, second.more), (2, false));
    assert_eq!(env.container.sweep(4).unwrap().removed, 0);
    for n in 0..10 {
        let stored = env.container.session_detail(&key(n)).unwrap().is_some();
        assert_eq!(stored, n >= 6, "session {n}");
    }
    assert_eq!(env.committed(7, "app", "count"), Some(7));
    let stats = env.container.stats().unwrap();
    assert_eq!((stats.sessions, stats.expired), (4, 0));
}

fn renaming_moves_the_data(kind: Kind) {
    let env = Env::default_for(kind);
    env.seed(1, 7);
    env.seed(3, 0);
    let mut tx = env.manager.begin();
    env.put(&mut tx, 1, "other", "x", 8);
    env.container
        .set_principal(&mut tx, &key(1), Some("ada"))
        .unwrap();
    env.container
        .rename_session(&mut tx, &key(1), &key(2))
        .unwrap();
    assert_eq!(env.read(&mut tx, 2, "app", "count"), Some(7));
    assert!(env.container.session(&mut tx, &key(1)).unwrap().is_none());
    assert!(matches!(
        env.container.rename_session(&mut tx, &key(2), &key(3)),
        Err(StoreError::SessionExists { .. })
    ));
    assert!(matches!(
        env.container.rename_session(&mut tx, &key(9), &key(8)),
        Err(StoreError::NoSuchSession { .. })
    ));
    tx.commit().unwrap();
    assert!(!env.exists(1));
    assert_eq!(env.committed(2, "app", "count"), Some(7));
    assert_eq!(env.committed(2, "other", "x"), Some(8));
    assert_eq!(
        env.container.sessions_of_principal("ada").unwrap(),
        [key(2)]
    );

    // A value written into the old session meanwhile is not lost: conflict.
    let mut renamer = env.manager.begin();
    env.container
        .rename_session(&mut renamer, &key(2), &key(4))
        .unwrap();
    let mut writer = env.manager.begin();
    env.put(&mut writer, 2, "app", "late", 1);
    writer.commit().unwrap();
    assert!(renamer.commit().unwrap_err().is_retryable());
    assert_eq!(env.committed(2, "app", "late"), Some(1));
}

fn principals_are_indexed(kind: Kind) {
    let env = Env::default_for(kind);
    for n in 0..3 {
        env.seed(n, 0);
    }
    let mut tx = env.manager.begin();
    for n in 0..2 {
        env.container
            .set_principal(&mut tx, &key(n), Some("ada"))
            .unwrap();
    }
    env.container
        .set_principal(&mut tx, &key(2), Some("bob"))
        .unwrap();
    tx.commit().unwrap();
    let mut ada = env.container.sessions_of_principal("ada").unwrap();
    ada.sort();
    let mut expected = vec![key(0), key(1)];
    expected.sort();
    assert_eq!(ada, expected);
    let mut tx = env.manager.begin();
    env.container.set_principal(&mut tx, &key(0), None).unwrap();
    let info = env.container.session(&mut tx, &key(1)).unwrap().unwrap();
    assert_eq!(info.principal.as_deref(), Some("ada"));
    tx.commit().unwrap();
    assert_eq!(
        env.container.sessions_of_principal("ada").unwrap(),
        [key(1)]
    );
    assert_eq!(
        env.container
            .delete_sessions(&env.container.sessions_of_principal("bob").unwrap())
            .unwrap(),
        1
    );
    assert!(
        env.container
            .sessions_of_principal("bob")
            .unwrap()
            .is_empty()
    );
    assert!(!env.exists(2));
}

fn the_admin_view_lists_and_counts(kind: Kind) {
    let env = Env::default_for(kind);
    for n in 0..5 {
        env.seed(n, i64::from(n));
    }
    let all = env.container.list_sessions(None, 100).unwrap();
    assert_eq!(all.len(), 5);
    assert!(all.windows(2).all(|w| w[0].key < w[1].key));
    assert!(all.iter().all(|s| s.bytes > 0 && !s.expired));
    let page = env.container.list_sessions(Some(&all[1].key), 2).unwrap();
    assert_eq!(
        page.iter().map(|s| s.key).collect::<Vec<_>>(),
        [all[2].key, all[3].key]
    );
    let detail = env.container.session_detail(&key(3)).unwrap().unwrap();
    let value = &detail.data["app"]["count"];
    assert_eq!(keel_store::from_value::<i64>(value).unwrap(), 3);
    let stats = env.container.stats().unwrap();
    assert_eq!((stats.sessions, stats.expired), (5, 0));
    assert!(stats.value_bytes > 0);
    assert_eq!(stats.ages.len(), 5);

    assert_eq!(env.container.load_setting("keys").unwrap(), None);
    env.container.store_setting("keys", b"ring").unwrap();
    assert_eq!(
        env.container.load_setting("keys").unwrap().as_deref(),
        Some(&b"ring"[..])
    );
}

fn savepoints_roll_back_buffered_writes(kind: Kind) {
    let env = Env::default_for(kind);
    env.seed(1, 0);
    let mut tx = env.manager.begin();
    env.put(&mut tx, 1, "app", "a", 1);
    let savepoint = tx.savepoint().unwrap();
    env.put(&mut tx, 1, "app", "b", 2);
    env.put(&mut tx, 1, "app", "a", 3);
    tx.rollback(&savepoint).unwrap();
    assert_eq!(env.read(&mut tx, 1, "app", "a"), Some(1));
    assert_eq!(env.read(&mut tx, 1, "app", "b"), None);
    tx.commit().unwrap();
    assert_eq!(env.committed(1, "app", "a"), Some(1));
    assert_eq!(env.committed(1, "app", "b"), None);
}

fn deleting_and_recreating_in_one_transaction_starts_empty(kind: Kind) {
    let env = Env::default_for(kind);
    env.seed(1, 5);
    let mut tx = env.manager.begin();
    assert!(env.container.delete_session(&mut tx, &key(1)).unwrap());
    env.container.create_session(&mut tx, &key(1)).unwrap();
    assert_eq!(env.read(&mut tx, 1, "app", "count"), None);
    env.put(&mut tx, 1, "app", "fresh", 1);
    tx.commit().unwrap();
    assert_eq!(env.committed(1, "app", "count"), None);
    assert_eq!(env.committed(1, "app", "fresh"), Some(1));
}

fn bad_input_is_a_typed_error(kind: Kind) {
    let env = Env::default_for(kind);
    env.seed(1, 0);
    let mut tx = env.manager.begin();
    let long = "p".repeat(70_000);
    assert!(matches!(
        env.container
            .insert(&mut tx, &key(1), &long, "x", SessionValue::new(1)),
        Err(StoreError::InvalidInput { .. })
    ));
    assert!(matches!(
        env.container.set_principal(&mut tx, &key(1), Some(&long)),
        Err(StoreError::InvalidInput { .. })
    ));
    assert!("not hex".parse::<ClientKey>().is_err());
    // Empty ids and names are ordinary values.
    env.put(&mut tx, 1, "", "", 1);
    tx.commit().unwrap();
    assert_eq!(env.committed(1, "", ""), Some(1));
}

/// `has_names` (answered without listing stored names when nothing of the
/// package is buffered) agrees with `names`, and `touch_and_get` with
/// `session` then `get`, after every step of random
/// sequences: stored and buffered inserts and removals, commits, aborts,
/// deletes, expiry, in neighbouring packages ("a" and "ab" are adjacent in
/// key order).
fn has_names_agrees_with_names(kind: Kind) {
    use proptest::{collection::vec, test_runner::TestRunner};

    const PACKAGES: [&str; 3] = ["a", "ab", "b"];
    let ops = vec((0u8..6, 0usize..3, 0u8..2), 1..30);
    let mut runner = TestRunner::default();
    runner
        .run(&ops, |ops| {
            let env = Env::default_for(kind);
            let c = &env.container;
            let mut tx = env.manager.begin();
            for (op, p, n) in ops {
                let (package, name) = (PACKAGES[p], format!("n{n}"));
                match op {
                    0 => {
                        c.create_session(&mut tx, &key(1)).unwrap();
                        env.put(&mut tx, 1, package, &name, 1);
                    }
                    1 => {
                        // Fails harmlessly when there is no live session.
                        let _ = c.remove(&mut tx, &key(1), package, &name);
                    }
                    2 => {
                        tx.commit().unwrap();
                        tx = env.manager.begin();
                    }
                    3 => {
                        tx.abort();
                        tx = env.manager.begin();
                    }
                    4 => {
                        c.delete_session(&mut tx, &key(1)).unwrap();
                    }
                    _ => {
                        // Past the timeout: the session expires.
                        tx.abort();
                        env.clock.advance(5_000);
                        tx = env.manager.begin();
                    }
                }
                for package in PACKAGES {
                    let names = c.names(&mut tx, &key(1), package).unwrap();
                    let has = c.has_names(&mut tx, &key(1), package).unwrap();
                    assert_eq!(has, !names.is_empty(), "{package}: {names:?}");
                    let short = c.touch_and_get(&mut tx, &key(1), package, "n0").unwrap();
                    let long = match c.session(&mut tx, &key(1)).unwrap() {
                        Some(_) => c.get(&mut tx, &key(1), package, "n0").unwrap(),
                        None => None,
                    };
                    assert_eq!(int(short), int(long), "{package}");
                }
            }
            Ok(())
        })
        .unwrap();
}

/// Asking whether a package holds names reads its name set: a commit after
/// it conflicts exactly when another transaction changed that name set
/// meanwhile, for a small package and for one with many names.
fn a_names_probe_conflicts_exactly_when_the_name_set_changed(kind: Kind) {
    for (client, names) in [(1, 1), (2, 12)] {
        let env = Env::default_for(kind);
        let c = &env.container;
        let mut tx = env.manager.begin();
        c.create_session(&mut tx, &key(client)).unwrap();
        for n in 0..names {
            env.put(&mut tx, client, "app", &format!("n{n:02}"), 0);
        }
        tx.commit().unwrap();

        for name_set_changes in [false, true] {
            let mut probe = env.manager.begin();
            assert!(c.has_names(&mut probe, &key(client), "app").unwrap());
            env.put(&mut probe, client, "other", "x", 1);

            let mut other = env.manager.begin();
            let name = if name_set_changes {
                format!("added{name_set_changes}")
            } else {
                "n00".to_owned()
            };
            env.put(&mut other, client, "app", &name, 7);
            other.commit().unwrap();

            let result = probe.commit();
            assert_eq!(
                result.is_err(),
                name_set_changes,
                "{names} names, name set changed: {name_set_changes}: {result:?}"
            );
            if let Err(err) = result {
                assert!(err.is_retryable(), "{err}");
            }
        }
    }
}

/// `touch_and_get` is `session` (with its touch) followed by `get`: the
/// same answers, the same last-access writes, and it never creates a
/// session.
fn touch_and_get_is_session_then_get(kind: Kind) {
    let env = Env::new(
        kind,
        ExpiryPolicy::default()
            .with_timeout(100)
            .with_resolution(10),
        1000,
    );
    env.seed(1, 7);
    let touch_and_get = |n: u32, name: &str| {
        let mut tx = env.manager.begin();
        let value = int(env
            .container
            .touch_and_get(&mut tx, &key(n), "app", name)
            .unwrap());
        tx.commit().unwrap();
        value
    };
    let last_access = || {
        let detail = env.container.session_detail(&key(1)).unwrap().unwrap();
        detail.summary.last_access
    };

    env.clock.set(1010);
    assert_eq!(touch_and_get(1, "count"), Some(7));
    assert_eq!(last_access(), 1000, "within the resolution: no touch");
    env.clock.set(1011);
    assert_eq!(touch_and_get(1, "count"), Some(7));
    assert_eq!(last_access(), 1011, "touched");
    env.clock.set(1022);
    assert_eq!(touch_and_get(1, "missing"), None);
    assert_eq!(last_access(), 1022, "a miss still counts as an access");

    // No session: nothing, and nothing created.
    assert_eq!(touch_and_get(2, "count"), None);
    assert!(!env.exists(2));

    // Buffered writes of the transaction are seen, as `get` sees them.
    let mut tx = env.manager.begin();
    env.put(&mut tx, 1, "app", "count", 8);
    let value = env
        .container
        .touch_and_get(&mut tx, &key(1), "app", "count");
    assert_eq!(int(value.unwrap()), Some(8));
    tx.commit().unwrap();

    // Expired: nothing.
    env.clock.set(5_000);
    assert_eq!(touch_and_get(1, "count"), None);
}

fn a_setting_is_initialized_once_whoever_comes_first(kind: Kind) {
    let env = Env::default_for(kind);
    let c = &env.container;
    assert_eq!(c.load_setting("ring").unwrap(), None);
    let start = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8u8)
        .map(|n| {
            let (c, start) = (Arc::clone(c), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                c.initialize_setting("ring", &[n; 4]).unwrap()
            })
        })
        .collect();
    let answers: Vec<Vec<u8>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let stored = c.load_setting("ring").unwrap().expect("stored");
    assert!(
        answers.iter().all(|a| *a == stored),
        "{answers:?} vs {stored:?}"
    );
    assert_eq!(c.initialize_setting("ring", b"later").unwrap(), stored);
    c.store_setting("ring", b"rotated").unwrap();
    assert_eq!(c.initialize_setting("ring", b"later").unwrap(), b"rotated");
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod ram {
            $( #[test] fn $test() { super::$test(super::Kind::Ram) } )*
        }
        mod redb {
            $( #[test] fn $test() { super::$test(super::Kind::Redb) } )*
        }
        #[cfg(feature = "redis")]
        mod redis {
            $( #[test] fn $test() {
                if super::common::redis_server::skip() {
                    return;
                }
                super::$test(super::Kind::Redis)
            } )*
        }
        #[cfg(feature = "redis")]
        mod redis_cluster {
            $( #[test] fn $test() {
                if super::common::redis_server::skip_cluster() {
                    return;
                }
                super::ONE_BUCKET.set(true);
                super::$test(super::Kind::RedisCluster)
            } )*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $( #[test] fn $test() {
                if super::common::postgres::skip() {
                    return;
                }
                super::$test(super::Kind::Postgres)
            } )*
        }
    };
}

conformance!(
    session_lifecycle,
    has_names_agrees_with_names,
    touch_and_get_is_session_then_get,
    a_names_probe_conflicts_exactly_when_the_name_set_changed,
    create_session_returns_the_live_one,
    a_transaction_reads_its_own_writes,
    an_aborted_transaction_leaves_no_trace,
    expiry_boundaries_follow_zope,
    the_touch_rule_follows_zope,
    timeout_zero_never_expires,
    an_absolute_lifetime_expires_active_sessions,
    an_unserializable_value_fails_the_commit_and_writes_nothing,
    lost_update_is_prevented,
    dirty_write_is_prevented,
    aborted_read_is_prevented,
    read_skew_is_prevented,
    disjoint_names_packages_and_clients_never_conflict,
    concurrent_touches_never_conflict,
    a_deleted_session_is_never_resurrected,
    a_typed_read_of_the_wrong_type_is_an_error,
    sweeping_removes_exactly_the_expired,
    renaming_moves_the_data,
    principals_are_indexed,
    the_admin_view_lists_and_counts,
    savepoints_roll_back_buffered_writes,
    deleting_and_recreating_in_one_transaction_starts_empty,
    bad_input_is_a_typed_error,
    a_setting_is_initialized_once_whoever_comes_first,
);
