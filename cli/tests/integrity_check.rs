//! `keel sessions check --db FILE` checks a redb file completely (every
//! page, every record, the indexes), prints a report naming the file and
//! exits non-zero when it finds damage, and never changes a byte of the
//! file, clean or damaged. `keel serve` checks a file of moderate size at
//! start, so a cleanly closed file with damaged pages is refused with an
//! error naming it, and no panic is printed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use common::{Dir, keel, offline, populate};
use redb::{Database, ReadableTable, TableDefinition};
use sha2::{Digest, Sha256};

// The tables of docs/design.md, "On-disk format".
const SESSIONS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("keel_sessions");
const BY_ACCESS: TableDefinition<&[u8], ()> = TableDefinition::new("keel_by_access");

fn sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// A copy of `db` with every 8th of the file from a quarter on overwritten
/// with noise: the header survives, b-tree pages do not.
fn damaged_copy(db: &Path, name: &str) -> PathBuf {
    let mut bytes = std::fs::read(db).unwrap();
    let len = bytes.len();
    let mut offset = len / 4;
    while offset + 4096 <= len {
        for (i, byte) in bytes[offset..offset + 4096].iter_mut().enumerate() {
            *byte = (i as u8).wrapping_mul(31).wrapping_add(201);
        }
        offset += len / 8;
    }
    let copy = db.with_file_name(name);
    std::fs::write(&copy, &bytes).unwrap();
    copy
}

#[test]
fn a_clean_file_passes_and_is_left_unchanged() {
    let dir = Dir::new();
    let db = dir.db();
    populate(&db, 300, 20, &[]);
    let before = sha256(&db);
    let text = offline(&db, &["check"]).ok();
    assert!(text.contains("no problems found"), "{text}");
    assert!(text.contains(db.to_str().unwrap()), "{text}");
    assert!(text.contains("300 sessions"), "{text}");
    let json = offline(&db, &["check", "--json"]).json();
    assert_eq!(json["clean"], true, "{json}");
    assert_eq!(json["sessions"], 300, "{json}");
    assert_eq!(json["by_access_entries"], 300, "{json}");
    assert_eq!(json["pages_ok"], true, "{json}");
    assert_eq!(sha256(&db), before, "check changed the file");
}

#[test]
fn damaged_pages_are_reported_naming_the_file_exit_1_and_the_file_is_left_unchanged() {
    let dir = Dir::new();
    let db = dir.db();
    populate(&db, 3000, 0, &[]);
    let damaged = damaged_copy(&db, "damaged.redb");
    let before = sha256(&damaged);
    let run = offline(&damaged, &["check"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    let name = damaged.to_str().unwrap();
    assert!(
        run.stdout.contains(&format!("{name}: problem:")),
        "{run:#?}"
    );
    assert!(
        run.stderr.contains(name) && run.stderr.contains("damaged"),
        "{run:#?}"
    );
    assert!(!run.all().contains("panicked"), "{run:#?}");
    let json = offline(&damaged, &["check", "--json"]);
    assert_eq!(json.code, Some(1));
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["clean"], false, "{report}");
    assert!(report["problem_count"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(sha256(&damaged), before, "check changed the damaged file");
}

#[test]
fn records_that_do_not_decode_and_stale_index_entries_are_reported() {
    let dir = Dir::new();
    let db = dir.db();
    populate(&db, 10, 0, &[]);
    let ghost = [7u8; 32];
    {
        let database = Database::open(&db).unwrap();
        let txn = database.begin_write().unwrap();
        {
            let mut sessions = txn.open_table(SESSIONS).unwrap();
            let first = *sessions.first().unwrap().unwrap().0.value();
            // Not a postcard session record: a varint that never ends.
            sessions.insert(&first, [0xFF, 0xFF].as_slice()).unwrap();
            let mut by_access = txn.open_table(BY_ACCESS).unwrap();
            let mut entry = 1_000u64.to_be_bytes().to_vec();
            entry.extend_from_slice(&ghost);
            by_access.insert(entry.as_slice(), ()).unwrap();
        }
        txn.commit().unwrap();
    }
    let run = offline(&db, &["check"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("is damaged"), "{run:#?}");
    assert!(
        run.stdout.contains(&format!(
            "keel_by_access entry names session {}",
            hex::encode(ghost)
        )),
        "{run:#?}"
    );
    assert!(run.stdout.contains("9 sessions"), "{run:#?}");
}

#[test]
fn database_servers_and_missing_files_are_clear_errors() {
    let dir = Dir::new();
    for url in ["postgres://u@127.0.0.1:1/db", "redis://127.0.0.1:1"] {
        let stderr = keel(&["sessions", "check", "--db", url]).fails();
        assert!(stderr.contains("redb database files only"), "{stderr}");
    }
    let missing = dir.path().join("typo.redb");
    let stderr = offline(&missing, &["check"]).fails();
    assert!(stderr.contains("no such database file"), "{stderr}");
    assert!(!missing.exists());
}

#[test]
fn serve_refuses_a_cleanly_closed_file_with_damaged_pages_without_a_panic() {
    let dir = Dir::new();
    let db = dir.db();
    populate(&db, 3000, 0, &[]);
    let damaged = damaged_copy(&db, "keel.redb.damaged");
    std::fs::rename(&damaged, &db).unwrap();
    let log = dir.path().join("serve.log");
    let out = dir.path().join("serve.out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--db",
            db.to_str().unwrap(),
        ])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // A server that started would run until killed.
    let exited = common::eventually(Duration::from_secs(60), || {
        child.try_wait().unwrap().is_some()
    });
    let _ = child.kill();
    let status = child.wait().unwrap();
    let output = std::process::Output {
        status,
        stdout: std::fs::read(&out).unwrap(),
        stderr: std::fs::read(&log).unwrap(),
    };
    assert!(exited, "keel serve started on a damaged file");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && !stdout.contains("listening on"),
        "started on a damaged file: {stdout} {stderr}"
    );
    assert!(
        stderr.contains(db.to_str().unwrap()) && stderr.contains("corrupted"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
