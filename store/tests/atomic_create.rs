//! Creating a database is atomic: a file at the path is either a complete
//! Keel database or was never created by Keel. A creation that fails (here
//! on a file size limit, as on a full disk) leaves no file at the path, and
//! neither does a process killed while creating; what a killed process
//! leaves (a temporary file beside the path) never blocks a later start.
//!
//! The failure is real: the creation runs in a child process (this test
//! binary again) under `ulimit -f`, where growing a file fails with `EFBIG`
//! (or, unless ignored, the signal `SIGXFSZ` kills the process).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(unix)]

use std::{
    os::unix::process::ExitStatusExt,
    path::Path,
    process::{Command, Output},
};

use keel_store::{ClientKey, RedbContainer, SessionContainer, SessionValue, StoreError};
use keel_txn::TransactionManager;

/// Set in the child process: the database file to create.
const CHILD: &str = "KEEL_TEST_CREATE_AT";

/// `SIGXFSZ` on Linux and the BSDs.
const SIGXFSZ: i32 = 25;

/// Not a test of its own: the child process's work, a no-op in a normal
/// run. Creates the database at `$KEEL_TEST_CREATE_AT` and exits 0, or
/// prints the error and exits 3.
#[test]
fn child_process_creates_the_database() {
    let Some(path) = std::env::var_os(CHILD) else {
        return;
    };
    match RedbContainer::open(&path) {
        Ok(container) => {
            drop(container);
            std::process::exit(0)
        }
        Err(err) => {
            eprintln!("open failed: {err}");
            std::process::exit(3)
        }
    }
}

/// Create `path` in a child process limited to files of a few KiB; the
/// child dies of `SIGXFSZ` unless `survive`.
fn create_under_size_limit(path: &Path, survive: bool) -> Output {
    let trap = if survive { "trap '' XFSZ; " } else { "" };
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{trap}ulimit -f 4 && exec \"$0\" --exact child_process_creates_the_database \
             --test-threads=1 --nocapture"
        ))
        .arg(std::env::current_exe().unwrap())
        .env(CHILD, path)
        .output()
        .unwrap()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The database at `path` opens, and keeps what is written to it.
fn works(path: &Path) {
    let key = ClientKey::from_client_id("after");
    let container = RedbContainer::open(path).unwrap();
    let manager = TransactionManager::new();
    let mut tx = manager.begin();
    container.create_session(&mut tx, &key).unwrap();
    container
        .insert(&mut tx, &key, "app", "x", SessionValue::new(7u32))
        .unwrap();
    tx.commit().unwrap();
    drop(container);
    let container = RedbContainer::open(path).unwrap();
    let mut tx = manager.begin();
    let value = container.get(&mut tx, &key, "app", "x").unwrap().unwrap();
    assert_eq!(value.to_typed::<u32>().unwrap(), 7);
}

#[test]
fn a_creation_that_fails_for_lack_of_space_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.redb");
    let output = create_under_size_limit(&path, true);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert!(stderr.contains("sessions.redb"), "{stderr}");
    assert!(stderr.contains("file size limit"), "{stderr}");
    assert!(!path.exists(), "a failed creation left {}", path.display());
    assert_eq!(names_in(dir.path()), Vec::<String>::new());
    // Nothing blocks the next start.
    works(&path);
}

#[test]
fn a_process_killed_while_creating_leaves_no_file_at_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.redb");
    let output = create_under_size_limit(&path, false);
    assert_eq!(output.status.signal(), Some(SIGXFSZ), "{output:?}");
    assert!(!path.exists(), "a killed creation left {}", path.display());
    // Its temporary file, if any, is beside the path and blocks nothing.
    for name in names_in(dir.path()) {
        assert!(name.starts_with(".sessions.redb.keel-new."), "{name}");
    }
    works(&path);
}

#[test]
fn an_empty_file_is_replaced_by_a_complete_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.redb");
    std::fs::write(&path, b"").unwrap();
    works(&path);
    assert_eq!(names_in(dir.path()), vec!["empty.redb".to_owned()]);
}

#[test]
fn a_file_left_zero_filled_by_an_older_build_is_refused_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zeros.redb");
    std::fs::write(&path, vec![0u8; 8192]).unwrap();
    let err = RedbContainer::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::NotAKeelDatabase { .. }), "{err}");
    assert!(err.to_string().contains("full disk"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), vec![0u8; 8192]);
}
