//! No admin output ever reveals a client id, a cookie value or a secret:
//! every cookie value a demo server handed out (before and after a login
//! cycled the id), the admin token and the id-signing secret are absent from
//! every `keel sessions` output (online and offline, text and JSON), every
//! admin API answer, the metrics, and the server's own log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Dir, Server, TOKEN, demo_sessions, keys, offline, request};

/// Assert none of `secrets` occurs in `output` (or, for cookie values, any
/// 16-character piece of one: the id inside a cookie must not leak either).
fn assert_clean(what: &str, output: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(
            !output.contains(secret.as_str()),
            "{what} contains {secret:?}:\n{output}"
        );
        let chars: Vec<char> = secret.chars().collect();
        for piece in chars.windows(16) {
            let piece: String = piece.iter().collect();
            assert!(
                !output.contains(&piece),
                "{what} contains {piece:?} of {secret:?}:\n{output}"
            );
        }
    }
}

/// Every admin output of `server`, online, with a label each.
fn online_outputs(server: &Server) -> Vec<(String, String)> {
    let mut outputs = Vec::new();
    let listing = server.online(&["list", "--json"]);
    let all = keys(&serde_json::from_str(&listing.stdout).unwrap());
    outputs.push(("list --json".to_owned(), listing.all()));
    for args in [
        &["list"][..],
        &["stats"],
        &["stats", "--json"],
        &["export"],
        &["sweep"],
        &["sweep", "--json"],
    ] {
        outputs.push((format!("online {args:?}"), server.online(args).all()));
    }
    for key in &all {
        outputs.push((
            "online show".to_owned(),
            server.online(&["show", key]).all(),
        ));
        outputs.push((
            "online show --json".to_owned(),
            server.online(&["show", key, "--json"]).all(),
        ));
    }
    for path in [
        "/admin/sessions",
        "/admin/sessions?data=true",
        "/admin/stats",
        &format!("/admin/sessions/{}", all[0]),
    ] {
        outputs.push((format!("GET {path}"), server.admin("GET", path).body));
    }
    outputs.push((
        "POST /admin/sweep".to_owned(),
        server.admin("POST", "/admin/sweep").body,
    ));
    outputs.push((
        "GET /metrics".to_owned(),
        request("GET", &format!("{}/metrics", server.url), None, None).body,
    ));
    outputs.push((
        "401".to_owned(),
        server.request("GET", "/admin/sessions", None, None).body,
    ));
    outputs
}

#[test]
fn no_output_contains_a_cookie_value_an_id_the_token_or_the_secret() {
    let dir = Dir::new();
    let secret_file = dir.path().join("ids.secret");
    let server = Server::start(&dir, &["--secret-file", secret_file.to_str().unwrap()]);
    let mut secrets = demo_sessions(&server, 3, "ada");
    // The key ring file the server wrote holds binary keys: check its hex.
    let ring = std::fs::read(&secret_file).unwrap();
    secrets.push(ring.iter().map(|b| format!("{b:02x}")).collect());
    secrets.push(TOKEN.to_owned());
    assert!(secrets.len() >= 6);

    let mut outputs = online_outputs(&server);
    let listing = server.online(&["list", "--json"]).json();
    let victim = keys(&listing)[0].clone();
    for args in [
        &["revoke-principal", "ada"][..],
        &["rm", victim.as_str()],
        &["rm", victim.as_str()],
    ] {
        outputs.push((format!("online {args:?}"), server.online(args).all()));
    }
    outputs.push(("server log".to_owned(), server.stop()));

    let db = dir.db();
    for args in [
        &["list"][..],
        &["list", "--json"],
        &["stats"],
        &["stats", "--json"],
        &["export"],
        &["sweep", "--json"],
        &["revoke-principal", "nobody"],
    ] {
        outputs.push((format!("offline {args:?}"), offline(&db, args).all()));
    }
    for key in keys(&offline(&db, &["list", "--json"]).json()) {
        outputs.push((
            "offline show".to_owned(),
            offline(&db, &["show", &key]).all(),
        ));
        outputs.push((
            "offline show --json".to_owned(),
            offline(&db, &["show", &key, "--json"]).all(),
        ));
        outputs.push(("offline rm".to_owned(), offline(&db, &["rm", &key]).all()));
    }
    // The offline error of a held file, too.
    let server = Server::start(&dir, &["--secret-file", secret_file.to_str().unwrap()]);
    outputs.push(("locked".to_owned(), offline(&db, &["list"]).all()));
    outputs.push(("server log 2".to_owned(), server.stop()));

    for (what, output) in &outputs {
        assert_clean(what, output, &secrets);
    }
}

#[test]
fn a_zope_secret_never_appears_in_admin_output() {
    let dir = Dir::new();
    let secret = "zope-shared-secret-for-tests-81f3";
    let secret_file = dir.path().join("zope.secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let server = Server::start(
        &dir,
        &[
            "--id-format",
            "zope",
            "--secret-file",
            secret_file.to_str().unwrap(),
        ],
    );
    let mut secrets = demo_sessions(&server, 2, "bob");
    assert!(
        secrets.iter().all(|cookie| cookie.len() == 54),
        "{secrets:?}"
    );
    secrets.push(secret.to_owned());
    let outputs = online_outputs(&server);
    let log = server.stop();
    for (what, output) in outputs.iter().chain([&("server log".to_owned(), log)]) {
        assert_clean(what, output, &secrets);
    }
}
