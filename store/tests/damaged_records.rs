//! A session record that does not decode (a file damaged outside Keel) is
//! removed with all its data when the sweep meets it through an expired
//! index entry, or when an admin delete names it: neither fails (which would
//! fail every commit grouped with it), and no part of it stays behind.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{path::Path, sync::Arc};

use keel_store::{
    ClientKey, ExpiryPolicy, ManualClock, RedbContainer, RedbOptions, SessionAdmin,
    SessionContainer, SessionValue,
};
use keel_txn::TransactionManager;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

// The tables of docs/design.md, "On-disk format".
const SESSIONS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("keel_sessions");
const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("keel_data");
const BY_ACCESS: TableDefinition<&[u8], ()> = TableDefinition::new("keel_by_access");

/// Not a postcard session record: a varint that never ends.
const GARBAGE: &[u8] = &[0xFF, 0xFF];

fn key(name: &str) -> ClientKey {
    ClientKey::from_client_id(name)
}

fn options(clock: &ManualClock) -> RedbOptions {
    RedbOptions::new()
        .with_expiry(
            ExpiryPolicy::default()
                .with_timeout(3_600)
                .with_resolution(600),
        )
        .with_clock(Arc::new(clock.clone()))
}

fn create(container: &RedbContainer, client: &ClientKey) {
    let manager = TransactionManager::new();
    let mut tx = manager.begin();
    container.create_session(&mut tx, client).unwrap();
    container
        .insert(&mut tx, client, "shop", "cart", SessionValue::new(7u32))
        .unwrap();
    tx.commit().unwrap();
}

/// Overwrite the session records of `clients` with bytes that do not
/// decode, as damage outside Keel would.
fn damage(path: &Path, clients: &[ClientKey]) {
    let db = Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut sessions = txn.open_table(SESSIONS).unwrap();
        for client in clients {
            assert!(
                sessions
                    .insert(client.as_bytes(), GARBAGE)
                    .unwrap()
                    .is_some()
            );
        }
    }
    txn.commit().unwrap();
}

/// Whether the file holds a session record, a data key or an expiry entry
/// of `client`.
fn traces(path: &Path, client: &ClientKey) -> (bool, bool, bool) {
    let db = Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let record = txn
        .open_table(SESSIONS)
        .unwrap()
        .get(client.as_bytes())
        .unwrap()
        .is_some();
    let data = txn
        .open_table(DATA)
        .unwrap()
        .iter()
        .unwrap()
        .any(|entry| entry.unwrap().0.value().starts_with(client.as_bytes()));
    let indexed = txn
        .open_table(BY_ACCESS)
        .unwrap()
        .iter()
        .unwrap()
        .any(|entry| entry.unwrap().0.value().ends_with(client.as_bytes()));
    (record, data, indexed)
}

#[test]
fn the_sweep_removes_an_expired_session_whose_record_does_not_decode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged.redb");
    let clock = ManualClock::new(1_000);
    let (damaged, healthy, live) = (key("damaged"), key("healthy"), key("live"));
    {
        let container = RedbContainer::open_with(&path, options(&clock)).unwrap();
        create(&container, &damaged);
        create(&container, &healthy);
        clock.set(9_000);
        create(&container, &live);
    }
    damage(&path, &[damaged]);

    // Expired: last access 1,000 before the cutoff 10,000 - 3,600 - 600.
    clock.set(10_000);
    {
        let container = RedbContainer::open_with(&path, options(&clock)).unwrap();
        let report = container.sweep(16).unwrap();
        assert_eq!(report.removed, 1, "only the healthy session counts");
        assert!(!report.more);
        assert_eq!(container.sweep(16).unwrap().removed, 0);
    }
    assert_eq!(traces(&path, &damaged), (false, false, false));
    assert_eq!(traces(&path, &healthy), (false, false, false));
    assert_eq!(traces(&path, &live), (true, true, true));
}

#[test]
fn an_admin_delete_removes_a_session_whose_record_does_not_decode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged.redb");
    let clock = ManualClock::new(1_000);
    let (damaged, live) = (key("damaged"), key("live"));
    {
        let container = RedbContainer::open_with(&path, options(&clock)).unwrap();
        create(&container, &damaged);
        create(&container, &live);
    }
    damage(&path, &[damaged]);
    {
        let container = RedbContainer::open_with(&path, options(&clock)).unwrap();
        assert_eq!(container.delete_sessions(&[damaged, live]).unwrap(), 2);
        // The committer did not fail: a request still commits.
        create(&container, &key("after"));
    }
    // Its expiry entry cannot be computed from a damaged record: it stays
    // until the sweep meets it and finds no record (the next test).
    assert_eq!(traces(&path, &damaged), (false, false, true));
    assert_eq!(traces(&path, &live), (false, false, false));
}

#[test]
fn the_sweep_drops_the_stale_entry_a_deleted_damaged_record_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.redb");
    let clock = ManualClock::new(1_000);
    let damaged = key("damaged");
    {
        let container = RedbContainer::open_with(&path, options(&clock)).unwrap();
        create(&container, &damaged);
    }
    damage(&path, &[damaged]);
    {
        let container = RedbContainer::open_with(&path, options(&clock)).unwrap();
        assert_eq!(container.delete_sessions(&[damaged]).unwrap(), 1);
        clock.set(10_000);
        let report = container.sweep(16).unwrap();
        assert_eq!((report.removed, report.more), (0, false));
    }
    assert_eq!(traces(&path, &damaged), (false, false, false));
}
