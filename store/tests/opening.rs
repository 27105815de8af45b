//! Opening a database file: a new or empty file becomes a Keel database and
//! keeps its data across reopening; a foreign file, another program's redb
//! database, a newer format, a file in use or a damaged file is refused with
//! a typed error naming the file, and is never modified.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::SimDisk;
use keel_store::{
    ClientKey, RedbContainer, RedbOptions, SessionAdmin, SessionContainer, SessionValue, StoreError,
};
use keel_txn::TransactionManager;
use redb::TableDefinition;

fn key() -> ClientKey {
    ClientKey::from_client_id("opening")
}

fn write_one(container: &RedbContainer) {
    let manager = TransactionManager::new();
    let mut tx = manager.begin();
    container.create_session(&mut tx, &key()).unwrap();
    container
        .insert(&mut tx, &key(), "app", "x", SessionValue::new(42u32))
        .unwrap();
    tx.commit().unwrap();
}

fn read_one(container: &RedbContainer) -> Option<u32> {
    let manager = TransactionManager::new();
    let mut tx = manager.begin();
    container
        .get(&mut tx, &key(), "app", "x")
        .unwrap()
        .map(|v| v.to_typed().unwrap())
}

fn refused(path: &Path, options: RedbOptions) -> StoreError {
    let before = std::fs::read(path).unwrap();
    let err = RedbContainer::open_with(path, options).unwrap_err();
    assert_eq!(
        std::fs::read(path).unwrap(),
        before,
        "{} was modified",
        path.display()
    );
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    err
}

#[test]
fn a_new_file_keeps_its_data_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let container = RedbContainer::open(&path).unwrap();
    write_one(&container);
    container.store_setting("ring", b"k1").unwrap();
    drop(container);
    let container = RedbContainer::open(&path).unwrap();
    assert_eq!(read_one(&container), Some(42));
    assert_eq!(
        container.load_setting("ring").unwrap().as_deref(),
        Some(&b"k1"[..])
    );
    assert!(container.stats().unwrap().file_bytes.unwrap() > 0);
}

#[test]
fn an_empty_file_becomes_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.redb");
    std::fs::write(&path, b"").unwrap();
    let container = RedbContainer::open(&path).unwrap();
    write_one(&container);
    assert_eq!(read_one(&container), Some(42));
}

#[test]
fn a_foreign_file_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("text.redb", b"hello, this is not a database\n".to_vec()),
        ("short.redb", b"redb".to_vec()),
        (
            "noise.redb",
            (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect(),
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let err = refused(&path, RedbOptions::new());
        assert!(
            matches!(err, StoreError::NotAKeelDatabase { .. }),
            "{name}: {err}"
        );
    }
}

#[test]
fn another_programs_redb_database_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let table: TableDefinition<&str, u64> = TableDefinition::new("accounts");
            txn.open_table(table).unwrap().insert("alice", 10).unwrap();
        }
        txn.commit().unwrap();
    }
    let err = refused(&path, RedbOptions::new());
    assert!(matches!(err, StoreError::NotAKeelDatabase { .. }), "{err}");
}

#[test]
fn another_programs_crashed_redb_database_is_refused_and_left_untouched() {
    let disk = SimDisk::new();
    {
        let db = redb::Builder::new()
            .create_with_backend(BackendOf(disk.handle()))
            .unwrap();
        let txn = db.begin_write().unwrap();
        {
            let table: TableDefinition<&str, u64> = TableDefinition::new("accounts");
            txn.open_table(table).unwrap().insert("alice", 10).unwrap();
        }
        txn.commit().unwrap();
        disk.crash(); // no clean close: a repair is needed
    }
    let before = disk.durable();
    let err = RedbContainer::open_with("other", disk.options()).unwrap_err();
    assert!(matches!(err, StoreError::NotAKeelDatabase { .. }), "{err}");
    assert_eq!(disk.durable(), before);
}

#[test]
fn a_newer_format_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.redb");
    drop(RedbContainer::open(&path).unwrap());
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let meta: TableDefinition<&str, &[u8]> = TableDefinition::new("keel_meta");
            txn.open_table(meta)
                .unwrap()
                .insert("format_version", 2u32.to_le_bytes().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let err = refused(&path, RedbOptions::new());
    assert!(
        matches!(
            err,
            StoreError::UnsupportedFormat {
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_file_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.redb");
    let first = RedbContainer::open(&path).unwrap();
    write_one(&first);
    let err = RedbContainer::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::DatabaseInUse { .. }), "{err}");
    assert!(err.to_string().contains("busy.redb"), "{err}");
    assert_eq!(read_one(&first), Some(42));
}

#[test]
fn a_damaged_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged.redb");
    drop(RedbContainer::open(&path).unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    // Keep the magic number, destroy the rest of the header.
    for byte in &mut bytes[9..512] {
        *byte = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = refused(&path, RedbOptions::new());
    assert!(
        matches!(
            err,
            StoreError::Corrupted { .. } | StoreError::NotAKeelDatabase { .. }
        ),
        "{err}"
    );
}

#[test]
fn a_damaged_page_is_an_error_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pages.redb");
    {
        let container = RedbContainer::open(&path).unwrap();
        let manager = TransactionManager::new();
        let mut tx = manager.begin();
        for n in 0..500 {
            let key = ClientKey::from_client_id(&n.to_string());
            container.create_session(&mut tx, &key).unwrap();
            container
                .insert(
                    &mut tx,
                    &key,
                    "app",
                    "x",
                    SessionValue::new("y".repeat(100)),
                )
                .unwrap();
        }
        tx.commit().unwrap();
    }
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2 / 4096 * 4096;
    for byte in &mut bytes[middle..middle + 4096] {
        *byte ^= 0x5A;
    }
    std::fs::write(&path, &bytes).unwrap();
    let copy = dir.path().join("copy.redb");
    std::fs::copy(&path, &copy).unwrap();
    match RedbContainer::open_with(&path, RedbOptions::new().with_integrity_check(true)) {
        Err(err) => assert!(matches!(err, StoreError::Corrupted { .. }), "{err}"),
        // The damaged page may belong to no live tree (freed space).
        Ok(container) => drop(container),
    }

    // Without the check: errors (or data) wherever the damage is met, never
    // a panic out of the container.
    if let Ok(container) = RedbContainer::open(&copy) {
        let manager = TransactionManager::new();
        let _ = container.stats();
        if let Ok(sessions) = container.list_sessions(None, 1000) {
            for summary in sessions {
                let _ = container.session_detail(&summary.key);
            }
        }
        for n in 0..500 {
            let key = ClientKey::from_client_id(&n.to_string());
            let mut tx = manager.begin();
            let _ = container.get(&mut tx, &key, "app", "x");
            let _ = container.insert(&mut tx, &key, "app", "x", SessionValue::new(1));
            let _ = tx.commit();
        }
        let _ = container.sweep(1000);
    }
}

/// A boxed backend handed to raw redb.
#[derive(Debug)]
struct BackendOf(Box<dyn redb::StorageBackend>);

impl redb::StorageBackend for BackendOf {
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.write(offset, data)
    }
}

#[cfg(unix)]
#[test]
fn a_new_database_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.redb");
    drop(keel_store::RedbContainer::open(&path).unwrap());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
