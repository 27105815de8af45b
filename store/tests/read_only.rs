//! A database opened read-only is never changed by a single byte: a clean
//! file, one that was not closed cleanly (repaired in memory, not on disk),
//! a damaged one, a file without write permission. Every write is refused
//! with `StoreError::ReadOnly`. A missing or empty file is an error, never
//! made a database; a directory, or a file the user may not read, is an
//! error naming the path and what to do.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use keel_store::{
    ClientKey, RedbContainer, RedbOptions, SessionAdmin, SessionContainer, SessionValue, StoreError,
};
use keel_txn::TransactionManager;

fn read_only() -> RedbOptions {
    RedbOptions::new().with_read_only(true)
}

fn key(n: u32) -> ClientKey {
    ClientKey::from_client_id(&format!("read-only-{n}"))
}

/// A database at `path` with `count` sessions, closed cleanly.
fn database_with(path: &Path, count: u32) -> RedbContainer {
    let container = RedbContainer::open(path).unwrap();
    let manager = TransactionManager::new();
    let mut tx = manager.begin();
    for n in 0..count {
        container.create_session(&mut tx, &key(n)).unwrap();
        container
            .insert(&mut tx, &key(n), "app", "n", SessionValue::new(n))
            .unwrap();
    }
    tx.commit().unwrap();
    container.store_setting("keel.test", b"v").unwrap();
    container
}

/// Read everything an admin command reads.
fn read_everything(container: &RedbContainer, count: u32) {
    let sessions = container.list_sessions(None, 1000).unwrap();
    assert_eq!(sessions.len(), count as usize);
    for summary in &sessions {
        assert!(container.session_detail(&summary.key).unwrap().is_some());
    }
    assert_eq!(container.stats().unwrap().sessions, u64::from(count));
    assert_eq!(
        container.load_setting("keel.test").unwrap().as_deref(),
        Some(&b"v"[..])
    );
    let manager = TransactionManager::new();
    let mut tx = manager.begin();
    let value = container
        .get(&mut tx, &key(0), "app", "n")
        .unwrap()
        .unwrap();
    assert_eq!(value.to_typed::<u32>().unwrap(), 0);
    tx.commit().unwrap();
}

fn is_root() -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // The owner of a file this process creates is its user.
        let probe = tempfile::NamedTempFile::new().unwrap();
        probe.as_file().metadata().unwrap().uid() == 0
    }
    #[cfg(not(unix))]
    false
}

#[test]
fn a_read_only_open_never_changes_a_byte_and_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clean.redb");
    drop(database_with(&path, 5));
    let before = std::fs::read(&path).unwrap();

    let container = RedbContainer::open_with(&path, read_only()).unwrap();
    read_everything(&container, 5);
    let manager = TransactionManager::new();
    let mut tx = manager.begin();
    container.create_session(&mut tx, &key(99)).unwrap();
    let err = tx.commit().unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
    for err in [
        container.delete_sessions(&[key(0)]).unwrap_err(),
        container.sweep(100).unwrap_err(),
        container.store_setting("keel.test", b"w").unwrap_err(),
    ] {
        assert!(matches!(err, StoreError::ReadOnly { .. }), "{err}");
        assert!(err.to_string().contains("clean.redb"), "{err}");
    }
    drop(container);

    assert!(std::fs::read(&path).unwrap() == before, "the file changed");
    // And it still opens for writing, with nothing lost.
    let container = RedbContainer::open(&path).unwrap();
    read_everything(&container, 5);
}

#[test]
fn a_file_not_closed_cleanly_is_repaired_in_memory_not_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.redb");
    let copy = dir.path().join("crashed.redb");
    let writer = database_with(&path, 3);
    // A copy taken while the writer holds the file: as after a crash.
    std::fs::copy(&path, &copy).unwrap();
    drop(writer);
    assert!(
        matches!(
            redb::ReadOnlyDatabase::open(&copy),
            Err(redb::DatabaseError::RepairAborted)
        ),
        "the copy should need a repair"
    );
    let before = std::fs::read(&copy).unwrap();
    let container = RedbContainer::open_with(&copy, read_only()).unwrap();
    read_everything(&container, 3);
    let err = container.sweep(100).unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err}");
    drop(container);
    assert!(std::fs::read(&copy).unwrap() == before, "the file changed");
}

#[test]
fn a_damaged_file_is_never_changed_by_a_read_only_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("original.redb");
    drop(database_with(&path, 200));
    let original = std::fs::read(&path).unwrap();
    let pages = original.len() / 4096;
    // A damaged page here and there: some are met by the open, some by the
    // reads, some by nothing.
    for page in [1, pages / 4, pages / 2, pages * 3 / 4, pages - 1] {
        let damaged = dir.path().join(format!("damaged-{page}.redb"));
        let mut bytes = original.clone();
        for byte in &mut bytes[page * 4096..(page + 1) * 4096] {
            *byte ^= 0x5A;
        }
        std::fs::write(&damaged, &bytes).unwrap();
        if let Ok(container) = RedbContainer::open_with(&damaged, read_only()) {
            let _ = container.stats();
            if let Ok(sessions) = container.list_sessions(None, 1000) {
                for summary in sessions {
                    let _ = container.session_detail(&summary.key);
                }
            }
        }
        assert!(
            std::fs::read(&damaged).unwrap() == bytes,
            "page {page}: the file changed"
        );
    }
}

#[cfg(unix)]
#[test]
fn a_file_without_write_permission_opens_read_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("444.redb");
    drop(database_with(&path, 2));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    // NOTE: root writes a 0444 file all the same; what holds for everyone is
    // that the bytes do not change.
    let before = std::fs::read(&path).unwrap();
    let container = RedbContainer::open_with(&path, read_only()).unwrap();
    read_everything(&container, 2);
    drop(container);
    assert!(std::fs::read(&path).unwrap() == before, "the file changed");
}

#[test]
fn a_missing_or_empty_file_is_an_error_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.redb");
    let err = RedbContainer::open_with(&missing, read_only()).unwrap_err();
    assert!(matches!(err, StoreError::CannotOpen { .. }), "{err}");
    assert!(err.to_string().contains("missing.redb"), "{err}");
    assert!(err.to_string().contains("creates nothing"), "{err}");
    assert!(!missing.exists());

    let empty = dir.path().join("empty.redb");
    std::fs::write(&empty, b"").unwrap();
    let err = RedbContainer::open_with(&empty, read_only()).unwrap_err();
    assert!(matches!(err, StoreError::NotAKeelDatabase { .. }), "{err}");
    assert!(err.to_string().contains("empty.redb"), "{err}");
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn a_directory_is_named_as_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    for options in [RedbOptions::new(), read_only()] {
        let err = RedbContainer::open_with(dir.path(), options).unwrap_err();
        assert!(matches!(err, StoreError::CannotOpen { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert!(text.contains("is a directory"), "{text}");
        assert!(text.contains("give a file path"), "{text}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[cfg(unix)]
#[test]
fn a_file_the_user_may_not_read_is_named_with_what_to_do() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("private.redb");
    drop(database_with(&path, 1));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    if is_root() {
        // NOTE: root bypasses file modes: there is no permission error to
        // see. The assertion runs for any other user.
        return;
    }
    for options in [RedbOptions::new(), read_only()] {
        let err = RedbContainer::open_with(&path, options).unwrap_err();
        assert!(matches!(err, StoreError::CannotOpen { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("private.redb"), "{text}");
        assert!(text.contains("owner and mode"), "{text}");
    }
}
