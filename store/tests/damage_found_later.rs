//! A file damaged outside redb and opened without the integrity check meets
//! its damage when redb reads a damaged page (at the open, or later, when a
//! read reaches it): redb may then panic. The container catches it: the caller gets
//! `StoreError::Corrupted` naming the file and carrying the panic's
//! message, and a panic hook can tell (with `RedbContainer::panic_is_caught`)
//! that the panic is caught, so a server prints no panic for it.
//! `RedbContainer::check_file` finds the same damage up front, and never
//! changes a byte of the file.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use keel_store::{
    ClientKey, RedbContainer, RedbOptions, SessionAdmin, SessionContainer, SessionValue, StoreError,
};
use keel_txn::TransactionManager;

/// A database of 500 sessions with a 100-byte value each, closed cleanly.
fn populated(path: &Path) {
    let container = RedbContainer::open(path).unwrap();
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

/// A copy of `original` with page `page` (4 KiB) flipped.
fn damaged_copy(original: &[u8], dir: &Path, page: usize) -> std::path::PathBuf {
    let mut bytes = original.to_vec();
    for byte in &mut bytes[page * 4096..(page + 1) * 4096] {
        *byte ^= 0x5A;
    }
    let path = dir.join(format!("damaged-{page}.redb"));
    std::fs::write(&path, &bytes).unwrap();
    path
}

fn sha(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn damage_redb_panics_on_is_an_error_naming_the_file_and_a_caught_panic() {
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean.redb");
    populated(&clean);
    let original = std::fs::read(&clean).unwrap();
    let pages = original.len() / 4096;

    // Every panic, and whether the container said it catches it.
    let panics: Arc<Mutex<Vec<bool>>> = Arc::default();
    let seen = Arc::clone(&panics);
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let caught = RedbContainer::panic_is_caught();
        seen.lock().unwrap().push(caught);
        if !caught {
            default(info);
        }
    }));

    let mut corrupted = 0;
    for page in 1..pages {
        let path = damaged_copy(&original, dir.path(), page);
        let container = match RedbContainer::open(&path) {
            Ok(container) => container,
            // Met by the open already (a small file: its pages are read).
            Err(err @ StoreError::Corrupted { .. }) => {
                corrupted += 1;
                let text = err.to_string();
                assert!(text.contains(path.to_str().unwrap()), "{text}");
                continue;
            }
            Err(_) => continue,
        };
        let results = [
            container.list_sessions(None, 1000).map(drop),
            container.stats().map(drop),
        ];
        for result in results {
            match result {
                Ok(()) => {}
                Err(err @ StoreError::Corrupted { .. }) => {
                    corrupted += 1;
                    let text = err.to_string();
                    assert!(text.contains(path.to_str().unwrap()), "{text}");
                }
                // A record that does not decode, or redb's own error.
                Err(StoreError::CorruptRecord { .. } | StoreError::Storage { .. }) => {}
                Err(other) => panic!("page {page}: unexpected error {other}"),
            }
        }
    }
    let _ = std::panic::take_hook();
    let panics = panics.lock().unwrap();
    assert!(
        corrupted > 0 && !panics.is_empty(),
        "no damaged page made redb panic ({pages} pages tried)"
    );
    assert!(
        panics.iter().all(|caught| *caught),
        "a panic was not marked as caught: {panics:?}"
    );
}

#[test]
fn the_full_check_finds_a_damaged_page_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean.redb");
    populated(&clean);
    let before = sha(&clean);
    let report = RedbContainer::check_file(&clean, RedbOptions::new()).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert!(report.pages_ok && report.records_checked);
    assert_eq!((report.sessions, report.values), (500, 500));
    assert_eq!(report.by_access_entries, 500);
    assert_eq!(sha(&clean), before, "the check changed the file");

    let original = before;
    let pages = original.len() / 4096;
    let mut found = 0;
    for page in 1..pages {
        let path = damaged_copy(&original, dir.path(), page);
        let damaged = sha(&path);
        let report = RedbContainer::check_file(&path, RedbOptions::new()).unwrap();
        if !report.is_clean() {
            found += 1;
            assert!(!report.problems.is_empty());
            assert_eq!(report.path, path);
        }
        assert_eq!(
            sha(&path),
            damaged,
            "page {page}: the check changed the file"
        );
    }
    assert!(found > 0, "no damaged page was found ({pages} pages)");
}
