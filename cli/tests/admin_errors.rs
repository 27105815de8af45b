//! `keel sessions` fails clearly and harmlessly: on a file a running server
//! holds (naming the file and suggesting `--url`), on a foreign, a non-Keel
//! redb or a corrupted file (naming the file, exiting non-zero, and leaving
//! every byte as it was), on a missing file (which it does not create), on a
//! malformed key, and on a bad token file or URL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{Dir, Server, TOKEN, keel, offline, populate};

/// Every subcommand, with arguments that would be valid on a good file.
const COMMANDS: [&[&str]; 8] = [
    &["list"],
    &["list", "--json"],
    &[
        "show",
        "0000000000000000000000000000000000000000000000000000000000000000",
    ],
    &[
        "rm",
        "0000000000000000000000000000000000000000000000000000000000000000",
    ],
    &["revoke-principal", "ada"],
    &["stats"],
    &["sweep"],
    &["export"],
];

/// Run every subcommand offline on `db`; each must fail naming the file,
/// with a message containing `expected`, and leave the file's bytes as they
/// were.
fn every_command_refuses(db: &Path, expected: &str) {
    let before = std::fs::read(db).unwrap();
    for command in COMMANDS {
        let run = offline(db, command);
        assert_eq!(run.code, Some(1), "{command:?}: {run:#?}");
        assert!(run.stdout.is_empty(), "{command:?}: {run:#?}");
        let stderr = run.stderr;
        assert!(
            stderr.contains(db.to_str().unwrap()),
            "{command:?}: {stderr}"
        );
        assert!(stderr.contains(expected), "{command:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{command:?}: {stderr}");
        assert!(
            std::fs::read(db).unwrap() == before,
            "{command:?} modified {}",
            db.display()
        );
    }
}

#[test]
fn offline_on_a_file_a_running_server_holds_is_refused_naming_it_and_suggesting_url() {
    let dir = Dir::new();
    let server = Server::start(&dir, &[]);
    assert_eq!(server.request("POST", "/api/count", None, None).status, 200);
    let db = dir.db();
    for command in COMMANDS {
        let stderr = offline(&db, command).fails();
        assert!(
            stderr.contains(db.to_str().unwrap()),
            "{command:?}: {stderr}"
        );
        assert!(stderr.contains("in use"), "{command:?}: {stderr}");
        assert!(stderr.contains("--url"), "{command:?}: {stderr}");
    }
    // The server did not notice.
    assert_eq!(server.request("GET", "/api/count", None, None).status, 200);
}

#[test]
fn a_foreign_file_is_refused_by_name_and_left_unchanged() {
    let dir = Dir::new();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "these are not sessions\n".repeat(500)).unwrap();
    every_command_refuses(&text, "not a Keel session database");

    let noise = dir.path().join("noise.bin");
    let bytes: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&noise, bytes).unwrap();
    every_command_refuses(&noise, "not a Keel session database");
}

#[test]
fn a_redb_database_not_written_by_keel_is_refused_and_left_unchanged() {
    let dir = Dir::new();
    let path = dir.path().join("other.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let table: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("inventory");
            let mut table = txn.open_table(table).unwrap();
            table.insert("apples", 3).unwrap();
        }
        txn.commit().unwrap();
    }
    every_command_refuses(&path, "not a Keel session database");
}

#[test]
fn a_corrupted_keel_database_is_refused_and_left_unchanged() {
    let dir = Dir::new();
    let db = dir.db();
    populate(&db, 3000, 0, &[]);
    let mut bytes = std::fs::read(&db).unwrap();
    // Overwrite every 8th of the file from a quarter on with noise: the
    // header survives, the b-tree pages do not.
    let len = bytes.len();
    let mut offset = len / 4;
    while offset + 4096 <= len {
        for (i, byte) in bytes[offset..offset + 4096].iter_mut().enumerate() {
            *byte = (i as u8).wrapping_mul(31).wrapping_add(201);
        }
        offset += len / 8;
    }
    std::fs::write(&db, &bytes).unwrap();
    every_command_refuses(&db, "corrupted");
}

#[test]
fn a_missing_database_file_is_an_error_and_is_not_created() {
    let dir = Dir::new();
    let db = dir.path().join("typo.redb");
    for command in COMMANDS {
        let stderr = offline(&db, command).fails();
        assert!(stderr.contains("no such database file"), "{stderr}");
        assert!(stderr.contains(db.to_str().unwrap()), "{stderr}");
        assert!(!db.exists());
    }
}

#[test]
fn malformed_keys_are_refused_before_anything_is_touched() {
    let dir = Dir::new();
    let db = dir.db();
    populate(&db, 3, 0, &[]);
    for key in ["abc", "zz".repeat(32).as_str(), "../../etc/passwd"] {
        for command in [&["show", key][..], &["rm", key], &["list", "--after", key]] {
            let stderr = offline(&db, command).fails();
            assert!(
                stderr.contains("invalid session key"),
                "{command:?}: {stderr}"
            );
        }
    }
    assert_eq!(
        offline(&db, &["list", "--json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn bad_token_files_and_urls_are_clear_errors() {
    let dir = Dir::new();
    let missing = dir.path().join("no-token");
    let run = keel(&[
        "sessions",
        "list",
        "--url",
        "http://127.0.0.1:9",
        "--token-file",
        missing.to_str().unwrap(),
    ]);
    assert!(run.fails().contains("no-token"));

    let run = keel(&["sessions", "list", "--url", "http://127.0.0.1:9"]);
    assert!(run.fails().contains("--token-file"));

    let token = dir.token_file();
    let token = token.to_str().unwrap();
    let both = keel(&[
        "sessions",
        "list",
        "--url",
        "http://127.0.0.1:9",
        "--token-file",
        token,
        "--db",
        "x.redb",
    ]);
    assert!(both.fails().contains("offline mode"));

    let https = keel(&[
        "sessions",
        "list",
        "--url",
        "https://example.invalid",
        "--token-file",
        token,
    ]);
    assert!(https.fails().contains("plain HTTP"));

    // Nothing listens on port 9 of loopback (discard is not served here).
    let unreachable = keel(&[
        "sessions",
        "stats",
        "--url",
        "http://127.0.0.1:9",
        "--token-file",
        token,
    ]);
    let stderr = unreachable.fails();
    assert!(
        stderr.contains("cannot reach http://127.0.0.1:9"),
        "{stderr}"
    );
    assert!(!stderr.contains(TOKEN), "{stderr}");

    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, "  \n").unwrap();
    let db = dir.db();
    let serve = keel(&[
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--db",
        db.to_str().unwrap(),
        "--admin-token-file",
        empty.to_str().unwrap(),
    ]);
    let stderr = serve.fails();
    assert!(stderr.contains("empty"), "{stderr}");
    assert!(!db.exists(), "refused before the database was opened");
}

/// The admin API answers every error in its JSON form, with the status the
/// error deserves: a path that is not UTF-8 once decoded, a query that does
/// not parse, a wrong method (keeping `Allow`); a refused token is logged
/// without the token.
#[test]
fn every_admin_api_error_is_json_and_a_refused_token_is_logged_without_it() {
    let dir = Dir::new();
    let server = Server::start(&dir, &[]);
    let bearer = format!("Bearer {TOKEN}");
    for (method, path, status, code) in [
        ("GET", "/admin/sessions/%ff", 400, "bad_request"),
        ("GET", "/admin/sessions?limit=abc", 400, "bad_request"),
        ("GET", "/admin/sessions?data=maybe", 400, "bad_request"),
        ("PUT", "/admin/stats", 405, "method_not_allowed"),
        ("GET", "/admin/sweep", 405, "method_not_allowed"),
        ("GET", "/admin/nothing-here", 404, "not_found"),
    ] {
        let r = server.request(method, path, Some(&bearer), None);
        assert_eq!(r.status, status, "{method} {path}: {r:?}");
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "{method} {path}: {r:?}"
        );
        let json = r.json();
        assert_eq!(json["code"], code, "{method} {path}: {json}");
        assert!(
            json["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{method} {path}: {json}"
        );
        if status == 405 {
            assert!(r.header("allow").is_some(), "{method} {path}: {r:?}");
        }
    }
    let refused = server.request(
        "GET",
        "/admin/stats",
        Some("Bearer a-mistyped-admin-token"),
        None,
    );
    assert_eq!(refused.status, 401);
    let logs = server.stop();
    assert!(logs.contains("admin request refused"), "{logs}");
    assert!(!logs.contains("a-mistyped-admin-token"), "{logs}");
}

/// Failed admin authentications are limited per client address: after 10,
/// a wrong or missing token gets 429 with `Retry-After`; the right token from
/// the same address still gets in at once.
#[test]
fn failed_admin_authentications_are_rate_limited_but_the_right_token_never_is() {
    let dir = Dir::new();
    let server = Server::start(&dir, &[]);
    let wrong = Some("Bearer wrong-token-guess");
    for n in 0..10 {
        let r = server.request("GET", "/admin/stats", wrong, None);
        assert_eq!(r.status, 401, "failure {n}: {r:?}");
    }
    for auth in [wrong, None] {
        let r = server.request("GET", "/admin/stats", auth, None);
        assert_eq!(r.status, 429, "{r:?}");
        assert_eq!(r.json()["code"], "too_many_failures");
        let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=6).contains(&wait), "Retry-After {wait}");
    }
    let started = std::time::Instant::now();
    let right = server.admin("GET", "/admin/stats");
    assert_eq!(right.status, 200, "{right:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    let logs = server.stop();
    assert!(logs.contains("admin request refused"), "{logs}");
    assert!(!logs.contains("wrong-token-guess"), "{logs}");
}
