//! Files Keel writes hold secrets (the database: the signing key ring and
//! every session's data; exports; generated key files), so Keel creates them
//! readable by their owner only (0600) and never loosens an existing file's
//! mode; a secret file others can read gets one warning naming it and the fix.

#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{Dir, Server, offline};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_database_and_an_export_are_created_0600() {
    let dir = Dir::new();
    std::fs::set_permissions(dir.token_file(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let server = Server::start(&dir, &[]);
    assert_eq!(server.request("POST", "/api/count", None, None).status, 200);
    let logs = server.stop();
    assert_eq!(mode(&dir.db()), 0o600, "the database");
    assert!(!logs.contains("can be read by other users"), "{logs}");

    let export = dir.path().join("export.jsonl");
    offline(&dir.db(), &["export", "-o", export.to_str().unwrap()]).ok();
    assert_eq!(mode(&export), 0o600, "the export");
    assert!(
        std::fs::read_to_string(&export)
            .unwrap()
            .contains("keel.demo")
    );
}

#[test]
fn an_existing_file_keeps_its_mode() {
    let dir = Dir::new();
    std::fs::write(dir.db(), b"").unwrap();
    std::fs::set_permissions(dir.db(), std::fs::Permissions::from_mode(0o640)).unwrap();
    let export = dir.path().join("export.jsonl");
    std::fs::write(&export, b"old").unwrap();
    std::fs::set_permissions(&export, std::fs::Permissions::from_mode(0o644)).unwrap();
    let server = Server::start(&dir, &[]);
    assert_eq!(server.request("POST", "/api/count", None, None).status, 200);
    server.stop();
    offline(&dir.db(), &["export", "-o", export.to_str().unwrap()]).ok();
    assert_eq!(mode(&dir.db()), 0o640);
    assert_eq!(mode(&export), 0o644);
}

#[test]
fn a_secret_file_others_can_read_is_named_in_one_warning() {
    let dir = Dir::new();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "a zope secret\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(dir.token_file(), std::fs::Permissions::from_mode(0o640)).unwrap();
    let server = Server::start(
        &dir,
        &[
            "--id-format",
            "zope",
            "--secret-file",
            secret.to_str().unwrap(),
        ],
    );
    let logs = server.stop();
    for file in [secret, dir.token_file()] {
        let line = logs
            .lines()
            .find(|line| line.contains(&*file.to_string_lossy()))
            .unwrap_or_else(|| panic!("no warning names {}: {logs}", file.display()));
        assert!(line.contains("can be read by other users"), "{line}");
        assert!(
            line.contains(&format!("chmod 600 {}", file.display())),
            "{line}"
        );
    }
    assert!(
        !logs.contains("a zope secret"),
        "the secret itself is never printed"
    );
}
