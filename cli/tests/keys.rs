//! `keel keys list|rotate|retire`, offline (`--secret-file`, `--db`) and
//! online (`--url`): a listing shows key ids, roles and ages and never key
//! material; rotating keeps every cookie working and signs new ones with the
//! new key; retiring refuses without `--yes` and changes nothing, and with
//! `--yes` makes cookies signed only with a retired key stop working on
//! every running server sharing the ring within the reload interval, without
//! a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use common::{Dir, Server, TOKEN, eventually, keel, shared};

/// `keel keys ARGS...`.
fn keys(args: &[&str]) -> common::Run {
    let mut all = vec!["keys"];
    all.extend_from_slice(args);
    keel(&all)
}

/// `keel keys ARGS... --url URL --token-file TOKEN`.
fn keys_online(server: &Server, dir: &Dir, args: &[&str]) -> common::Run {
    let token = dir.token_file();
    let mut all = args.to_vec();
    all.extend_from_slice(&[
        "--url",
        &server.url,
        "--token-file",
        token.to_str().unwrap(),
    ]);
    keys(&all)
}

/// The secrets of a stored key ring (version 2: id, creation time, secret
/// per key).
fn secrets(ring: &[u8]) -> Vec<[u8; 32]> {
    assert_eq!(&ring[..8], b"KEELRING");
    assert_eq!(ring[8], 2, "a ring written by this Keel is version 2");
    let count = usize::from(ring[9]);
    (0..count)
        .map(|i| {
            let at = 10 + i * 42 + 10;
            ring[at..at + 32].try_into().unwrap()
        })
        .collect()
}

/// Assert that `text` shows no form of any secret of `ring`.
fn assert_no_key_material(text: &str, ring: &[u8]) {
    let lower = text.to_lowercase();
    for secret in secrets(ring) {
        let hex = hex::encode(secret);
        assert!(!lower.contains(&hex), "hex secret in {text}");
        for encoded in [
            URL_SAFE_NO_PAD.encode(secret),
            base64::engine::general_purpose::STANDARD.encode(secret),
        ] {
            assert!(!text.contains(&encoded[..20]), "base64 secret in {text}");
        }
        let decimal = format!("{}, {}, {}, {}", secret[0], secret[1], secret[2], secret[3]);
        assert!(!text.contains(&decimal), "byte array of a secret in {text}");
        assert!(
            !text.as_bytes().windows(8).any(|w| w == &secret[..8]),
            "raw secret in output"
        );
    }
}

/// The key id a keel cookie was signed with.
fn key_id(cookie: &str) -> u16 {
    let raw = URL_SAFE_NO_PAD.decode(cookie).unwrap();
    u16::from_be_bytes([raw[1], raw[2]])
}

/// A new client's cookie (its count is 1).
fn new_cookie(server: &Server) -> String {
    let response = server.request("POST", "/api/count", None, None);
    assert_eq!(response.status, 200, "{response:?}");
    response.session_cookie().unwrap()
}

/// Whether the server still accepts `cookie`: its session's count is seen.
fn accepted(server: &Server, cookie: &str) -> bool {
    let response = server.request("GET", "/api/count", None, Some(cookie));
    assert_eq!(response.status, 200, "{response:?}");
    response.json()["count"].as_u64().unwrap() > 0
}

fn ring_ids(listing: &serde_json::Value) -> Vec<u64> {
    listing["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["id"].as_u64().unwrap())
        .collect()
}

#[test]
fn list_shows_ids_roles_and_ages_and_never_key_material() {
    let dir = Dir::new();
    let ring_file = dir.path().join("ring");
    let ring = ring_file.to_str().unwrap();
    let server = Server::start(&dir, &["--secret-file", ring]);
    keys_online(&server, &dir, &["rotate"]).ok();
    let bytes = std::fs::read(&ring_file).unwrap();
    assert_eq!(secrets(&bytes).len(), 2);

    let outputs = [
        keys(&["list", "--secret-file", ring]).ok(),
        keys(&["list", "--secret-file", ring, "--json"]).ok(),
        keys_online(&server, &dir, &["list"]).ok(),
        keys_online(&server, &dir, &["list", "--json"]).ok(),
        keys_online(&server, &dir, &["rotate", "--json"]).ok(),
    ];
    let bytes = std::fs::read(&ring_file).unwrap();
    for output in &outputs {
        assert_no_key_material(output, &bytes);
    }
    let table = &outputs[0];
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ID  SIGNS  CREATED (UTC)"), "{table}");
    assert!(lines[1].starts_with("1   -"), "{table}");
    assert!(lines[2].starts_with("2   yes"), "{table}");
    assert!(lines[2].trim_end().ends_with('s'), "an age: {table}");
    let listing: serde_json::Value = serde_json::from_str(&outputs[1]).unwrap();
    assert_eq!(ring_ids(&listing), [1, 2]);
    assert_eq!(listing["keys"][1]["signing"], true);
    assert!(listing["keys"][0]["age_seconds"].as_u64().unwrap() < 600);
    assert!(listing["keys"][0]["created"].as_u64().unwrap() > 1_600_000_000);
    assert_no_key_material(&server.stop(), &bytes);
}

#[test]
fn list_reads_the_ring_from_a_database_file_offline() {
    let dir = Dir::new();
    let server = Server::start(&dir, &[]);
    new_cookie(&server);
    // Offline needs the file: a running server holds it.
    let refused = keys(&["list", "--db", dir.db().to_str().unwrap()]).fails();
    assert!(refused.contains("--url"), "{refused}");
    server.stop();
    let listing = keys(&["list", "--db", dir.db().to_str().unwrap(), "--json"]).json();
    assert_eq!(ring_ids(&listing), [1]);
    assert_eq!(listing["keys"][0]["signing"], true);
    keys(&["rotate", "--db", dir.db().to_str().unwrap()]).ok();
    let listing = keys(&["list", "--db", dir.db().to_str().unwrap(), "--json"]).json();
    assert_eq!(ring_ids(&listing), [1, 2]);
}

#[test]
fn rotate_keeps_old_cookies_working_and_signs_new_ones_with_the_new_key() {
    let dir = Dir::new();
    let server = Server::start(&dir, &[]);
    let old = new_cookie(&server);
    assert_eq!(key_id(&old), 1);

    let text = keys_online(&server, &dir, &["rotate"]).ok();
    assert!(text.contains("added key 2"), "{text}");
    assert!(text.contains("keep working"), "{text}");

    assert!(accepted(&server, &old));
    let again = server.request("POST", "/api/count", None, Some(&old));
    assert_eq!(again.json()["count"], 2, "{again:?}");
    let new = new_cookie(&server);
    assert_eq!(key_id(&new), 2);
    assert!(accepted(&server, &new));
}

#[test]
fn retire_without_yes_refuses_says_what_it_would_do_and_changes_nothing() {
    let dir = Dir::new();
    let ring_file = dir.path().join("ring");
    let ring = ring_file.to_str().unwrap();
    // Make a ring of three keys offline.
    let server = Server::start(&dir, &["--secret-file", ring]);
    server.stop();
    keys(&["rotate", "--secret-file", ring]).ok();
    keys(&["rotate", "--secret-file", ring]).ok();
    let before = std::fs::read(&ring_file).unwrap();

    for args in [
        vec!["retire", "--secret-file", ring],
        vec!["retire", "--secret-file", ring, "--keep", "2", "--json"],
    ] {
        let run = keys(&args);
        let refused = run.fails();
        assert!(refused.contains("--yes"), "{refused}");
        assert!(refused.contains("log out"), "{refused}");
        assert_eq!(std::fs::read(&ring_file).unwrap(), before);
    }
    let refused = keys(&["retire", "--secret-file", ring]).fails();
    assert!(refused.contains("keys 1, 2"), "{refused}");

    // Nothing to retire is not an error, and changes nothing either.
    let text = keys(&["retire", "--secret-file", ring, "--keep", "3"]).ok();
    assert!(text.contains("nothing to retire"), "{text}");
    assert_eq!(std::fs::read(&ring_file).unwrap(), before);
}

/// Start a server on `args` with a reload interval of 1 s.
fn reloading_server(dir: &Dir, args: &[&str]) -> Server {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--key-reload-interval", "1"]);
    Server::start(dir, &all)
}

/// How long a change may take to reach a server reloading every second:
/// the interval, a read, and slack for a loaded test machine.
const BOUND: Duration = Duration::from_secs(5);

#[test]
fn retire_yes_logs_out_old_cookies_on_a_running_server_within_the_reload_interval() {
    let dir = Dir::new();
    let ring_file = dir.path().join("ring");
    let ring = ring_file.to_str().unwrap();
    let server = reloading_server(&dir, &["--secret-file", ring]);
    let old = new_cookie(&server);
    // Used twice: answered from the server's memory of verified ids.
    assert!(accepted(&server, &old));
    assert!(accepted(&server, &old));

    // Rotated behind the server's back, in the file it reads.
    keys(&["rotate", "--secret-file", ring]).ok();
    let started = Instant::now();
    let mut new = String::new();
    assert!(
        eventually(BOUND, || {
            new = new_cookie(&server);
            key_id(&new) == 2
        }),
        "the server never signed with the rotated key"
    );
    assert!(started.elapsed() < BOUND);
    assert!(accepted(&server, &old), "rotation logs nobody out");

    let text = keys(&["retire", "--secret-file", ring, "--yes"]).ok();
    assert!(text.contains("retired key 1"), "{text}");
    assert!(text.contains("logged out"), "{text}");
    let started = Instant::now();
    assert!(
        eventually(BOUND, || !accepted(&server, &old)),
        "a cookie signed with a retired key still works after {BOUND:?}: the server did not \
         reload its key ring"
    );
    assert!(started.elapsed() < BOUND);
    assert!(accepted(&server, &new), "the kept key's cookie still works");
    let logs = server.stop();
    assert!(logs.contains("key ring reloaded"), "{logs}");
}

#[test]
fn retire_through_the_admin_api_logs_out_old_cookies_at_once() {
    let dir = Dir::new();
    // No periodic reload: the admin API applies its change itself.
    let server = Server::start(&dir, &["--key-reload-interval", "0"]);
    let old = new_cookie(&server);
    assert!(accepted(&server, &old));
    keys_online(&server, &dir, &["rotate"]).ok();
    let new = new_cookie(&server);
    assert_eq!(key_id(&new), 2);

    let refused = keys_online(&server, &dir, &["retire"]).fails();
    assert!(refused.contains("--yes"), "{refused}");
    assert!(accepted(&server, &old), "a refused retire changes nothing");

    let retired = keys_online(&server, &dir, &["retire", "--yes", "--json"]).json();
    assert_eq!(retired["retired"], serde_json::json!([1]));
    assert_eq!(ring_ids(&retired), [2]);
    assert!(!accepted(&server, &old));
    assert!(accepted(&server, &new));

    // Without the token: refused, nothing changed.
    let response = server.request("POST", "/admin/keys/rotate", None, None);
    assert_eq!(response.status, 401);
    let response = server.request(
        "POST",
        "/admin/keys/retire",
        Some(&format!("Bearer {TOKEN}x")),
        None,
    );
    assert_eq!(response.status, 401);
    let listing = server.admin("GET", "/admin/keys").json();
    assert_eq!(ring_ids(&listing), [2]);
}

#[test]
fn a_zope_id_server_has_no_key_ring_to_manage() {
    let dir = Dir::new();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "zope secret").unwrap();
    let server = Server::start(
        &dir,
        &[
            "--id-format",
            "zope",
            "--secret-file",
            secret.to_str().unwrap(),
        ],
    );
    let refused = keys_online(&server, &dir, &["list"]).fails();
    assert!(refused.contains("zope"), "{refused}");
}

#[test]
fn servers_sharing_postgresql_take_up_a_retired_ring_without_a_restart() {
    if shared::skip() {
        return;
    }
    let database = shared::TestDatabase::new();
    let url = database.url(None);
    let (dir_a, dir_b) = (Dir::new(), Dir::new());
    let serve = |dir: &Dir| Server::start_with(dir, &["--db", &url, "--key-reload-interval", "1"]);
    let (a, b) = (serve(&dir_a), serve(&dir_b));
    let old = new_cookie(&a);
    assert!(accepted(&b, &old), "the servers share the ring");

    keys(&["rotate", "--db", &url]).ok();
    let listing = keys(&["list", "--db", &url, "--json"]).json();
    assert_eq!(ring_ids(&listing), [1, 2]);
    assert!(eventually(BOUND, || key_id(&new_cookie(&b)) == 2));
    assert!(eventually(BOUND, || key_id(&new_cookie(&a)) == 2));
    let new = new_cookie(&a);
    assert!(accepted(&a, &old) && accepted(&b, &old));

    keys(&["retire", "--db", &url, "--yes"]).ok();
    let started = Instant::now();
    assert!(eventually(BOUND, || !accepted(&a, &old) && !accepted(&b, &old)));
    assert!(started.elapsed() < BOUND);
    assert!(accepted(&a, &new) && accepted(&b, &new));
}
