//! The commands that only read (`keel sessions list|show|stats|export`)
//! open the database file read-only and never change a byte of it: a clean
//! file, a damaged one, a file without write permission. A missing or empty
//! file is an error for them, and nothing is created. Every open error names
//! the path and says what to do: a directory given as `--db`, a file the
//! user may not read.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{Dir, keys, offline, populate};
use sha2::{Digest, Sha256};

fn sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
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

/// Run every read command on `db`; `ok` says whether they must succeed.
fn read_commands(db: &Path, ok: bool) {
    let listing = offline(db, &["list", "--json"]);
    let key = if ok {
        keys(&listing.json()).into_iter().next().unwrap()
    } else {
        "0".repeat(64)
    };
    for args in [
        vec!["list"],
        vec!["show", &key],
        vec!["stats"],
        vec!["stats", "--json"],
        vec!["export"],
    ] {
        let run = offline(db, &args);
        if ok {
            run.ok();
        }
    }
}

#[test]
fn read_commands_never_change_a_byte_of_the_file() {
    let dir = Dir::new();
    let db = dir.db();
    populate(&db, 20, 5, &[]);
    let before = sha256(&db);
    read_commands(&db, true);
    assert_eq!(sha256(&db), before, "a read command changed the file");
}

#[test]
fn read_commands_never_change_a_byte_of_a_damaged_file() {
    let dir = Dir::new();
    let db = dir.db();
    populate(&db, 200, 0, &[]);
    let original = std::fs::read(&db).unwrap();
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
        let before = sha256(&damaged);
        read_commands(&damaged, false);
        assert_eq!(sha256(&damaged), before, "page {page}: the file changed");
    }
}

#[cfg(unix)]
#[test]
fn a_file_without_write_permission_can_be_listed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir::new();
    let db = dir.db();
    populate(&db, 3, 0, &[]);
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444)).unwrap();
    // NOTE: root writes a 0444 file all the same; the bytes not changing is
    // what holds for every user.
    let before = sha256(&db);
    let listing = offline(&db, &["list", "--json"]).json();
    assert_eq!(listing.as_array().unwrap().len(), 3);
    read_commands(&db, true);
    assert_eq!(sha256(&db), before, "a read command changed the file");
}

#[test]
fn a_missing_or_empty_file_is_an_error_and_nothing_is_created() {
    let dir = Dir::new();
    let missing = dir.path().join("missing.redb");
    for command in ["list", "stats", "export"] {
        let stderr = offline(&missing, &[command]).fails();
        assert!(stderr.contains("missing.redb"), "{stderr}");
        assert!(!missing.exists(), "{command} created {}", missing.display());
    }
    let empty = dir.path().join("empty.redb");
    std::fs::write(&empty, b"").unwrap();
    for command in ["list", "stats", "export"] {
        let stderr = offline(&empty, &[command]).fails();
        assert!(stderr.contains("empty.redb"), "{stderr}");
        assert!(stderr.contains("empty"), "{stderr}");
        assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);
    }
}

#[test]
fn a_directory_as_db_is_called_a_directory() {
    let dir = Dir::new();
    let folder = dir.path().join("sessions");
    std::fs::create_dir(&folder).unwrap();
    for args in [
        vec!["list"],
        vec!["sweep"],
        vec!["populate", "--count", "1"],
    ] {
        let stderr = offline(&folder, &args).fails();
        assert!(stderr.contains("sessions"), "{stderr}");
        assert!(stderr.contains("is a directory"), "{stderr}");
        assert!(stderr.contains("give a file path"), "{stderr}");
        assert!(!stderr.contains("not a redb database"), "{stderr}");
    }
    assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 0);
}

#[cfg(unix)]
#[test]
fn a_file_the_user_may_not_read_is_named_with_what_to_do() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir::new();
    let db = dir.db();
    populate(&db, 1, 0, &[]);
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o000)).unwrap();
    if is_root() {
        // NOTE: root bypasses file modes: there is no permission error to
        // see. The assertion runs for any other user.
        return;
    }
    for command in ["list", "sweep"] {
        let stderr = offline(&db, &[command]).fails();
        assert!(stderr.contains(&db.display().to_string()), "{stderr}");
        assert!(stderr.contains("owner and mode"), "{stderr}");
    }
}
