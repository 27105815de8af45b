//! Secrets never appear in what Keel prints: the signing key ring (a
//! `--secret-file`), zope.session's secret, and the admin token are looked
//! for in everything `keel serve` logs at `trace` level, every HTTP answer
//! (headers and bodies: pages, the JSON API, errors, the admin API with
//! right and wrong tokens, metrics) and everything the `keel` commands print
//! (`--help` of each, `keel sessions` offline and online, their errors).
//!
//! Key material is binary, so it is looked for in every form a program
//! might print it in: each 15-byte window of the secret file as raw bytes,
//! as hex (lower and upper case) and as base64 (standard and URL-safe; a
//! window at every offset covers every alignment of a longer encoding).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD},
};
use common::{Dir, Response, Server, TOKEN, keel};

/// Every printable form of the secret `bytes` that the output must not
/// contain.
fn forms_of(bytes: &[u8]) -> Vec<String> {
    const WINDOW: usize = 15;
    let mut forms = Vec::new();
    for window in bytes.windows(WINDOW.min(bytes.len())) {
        forms.push(hex::encode(window));
        forms.push(hex::encode_upper(window));
        forms.push(STANDARD_NO_PAD.encode(window));
        forms.push(URL_SAFE_NO_PAD.encode(window));
        if let Ok(text) = std::str::from_utf8(window) {
            forms.push(text.to_owned());
        }
    }
    forms
}

/// Everything one answer shows a client.
fn shown(response: &Response) -> String {
    let headers: Vec<String> = response
        .headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}"))
        .collect();
    format!(
        "{}\n{}\n{}\n",
        response.status,
        headers.join("\n"),
        response.body
    )
}

/// Fail, naming the form and where it was found (not the secret itself
/// beyond the form that leaked).
fn assert_absent(printed: &str, secrets: &[(&str, Vec<String>)]) {
    for (what, forms) in secrets {
        for form in forms {
            if let Some(at) = printed.find(form.as_str()) {
                let from = at.saturating_sub(80);
                let context: String = printed[from..].chars().take(200).collect();
                panic!("{what} printed as {form:?}, in: ...{context}...");
            }
        }
    }
}

#[test]
fn no_secret_is_printed_by_the_server_or_the_commands() {
    let dir = Dir::new();
    let mut printed = String::new();

    // --help of every command, before anything exists.
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["sessions", "--help"],
        &["sessions", "list", "--help"],
        &["sessions", "export", "--help"],
    ] {
        printed.push_str(&keel(args).all());
    }

    // A server with its key ring in a file it creates, logging everything.
    let secret_file = dir.path().join("ring.key");
    let server = Server::start_logging(
        &dir,
        &[
            "--db",
            dir.db().to_str().unwrap(),
            "--admin-token-file",
            dir.token_file().to_str().unwrap(),
            "--secret-file",
            secret_file.to_str().unwrap(),
        ],
        "trace",
    );
    let ring = std::fs::read(&secret_file).expect("the server wrote its key ring");
    assert!(ring.len() >= 32, "a ring holds at least one 32-byte key");

    let first = server.request("POST", "/api/count", None, None);
    printed.push_str(&shown(&first));
    let cookie = first.session_cookie().expect("a session");
    for (method, path, auth, cookie) in [
        ("GET", "/api/count", None, Some(cookie.as_str())),
        ("GET", "/", None, Some(cookie.as_str())),
        ("POST", "/api/login?user=ada", None, Some(cookie.as_str())),
        ("POST", "/api/oops", None, Some(cookie.as_str())),
        ("POST", "/logout", None, Some(cookie.as_str())),
        ("GET", "/api/count", None, Some("forged-cookie-value")),
        ("GET", "/metrics", None, None),
        (
            "GET",
            "/admin/sessions?data=true",
            Some("Bearer wrong-token"),
            None,
        ),
        ("GET", "/admin/sessions?data=true", None, None),
        ("GET", "/admin/nothing", Some("Bearer wrong-token"), None),
    ] {
        printed.push_str(&shown(&server.request(method, path, auth, cookie)));
    }
    let bearer = format!("Bearer {TOKEN}");
    for path in [
        "/admin/sessions?data=true",
        "/admin/stats",
        "/admin/sessions/not-a-key",
    ] {
        printed.push_str(&shown(&server.request("GET", path, Some(&bearer), None)));
    }
    for args in [
        &["list", "--data"][..],
        &["stats"],
        &["export"],
        &["show", "not-a-key"],
    ] {
        printed.push_str(&server.online(args).all());
    }
    // A wrong token file: the error must not echo what it read.
    let wrong = dir.path().join("wrong-token");
    std::fs::write(&wrong, "wrong-admin-token-value\n").unwrap();
    printed.push_str(
        &keel(&[
            "sessions",
            "list",
            "--url",
            &server.url,
            "--token-file",
            wrong.to_str().unwrap(),
        ])
        .all(),
    );
    printed.push_str(&server.stop());

    // Offline, on the same file.
    let db = dir.db();
    for args in [
        &["sessions", "list", "--data"][..],
        &["sessions", "stats"],
        &["sessions", "export"],
    ] {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--db", db.to_str().unwrap()]);
        printed.push_str(&keel(&all).all());
    }

    // zope.session's id format: a text secret.
    let zope_secret = "zope-secret-never-printed-7d31";
    let zope_file = dir.path().join("zope.secret");
    std::fs::write(&zope_file, zope_secret).unwrap();
    let zope = Server::start_logging(
        &dir,
        &[
            "--memory",
            "--id-format",
            "zope",
            "--secret-file",
            zope_file.to_str().unwrap(),
        ],
        "trace",
    );
    let answer = zope.request("POST", "/api/count", None, None);
    printed.push_str(&shown(&answer));
    printed.push_str(&shown(&zope.request(
        "GET",
        "/api/count",
        None,
        Some("bogus"),
    )));
    printed.push_str(&zope.stop());

    // The scenarios ran (and logged at trace level): an empty transcript
    // would pass for the wrong reason.
    assert!(printed.contains("\"count\":1"), "{printed}");
    assert!(printed.contains("401"), "a wrong token was refused");
    assert!(
        printed.len() > 10_000,
        "only {} bytes printed",
        printed.len()
    );

    assert_absent(
        &printed,
        &[
            ("the key ring", forms_of(&ring)),
            ("zope.session's secret", vec![zope_secret.to_owned()]),
            ("the admin token", vec![TOKEN.to_owned()]),
            (
                "a wrong admin token",
                vec!["wrong-admin-token-value".to_owned()],
            ),
        ],
    );
}

/// The check itself: a transcript that does hold the ring, in any of the
/// forms, is caught.
#[test]
fn the_check_finds_a_key_in_each_form() {
    let ring: Vec<u8> = (0u8..=80)
        .map(|b| b.wrapping_mul(37).wrapping_add(11))
        .collect();
    let key = &ring[10..42];
    for printed in [
        format!("secret: {}", hex::encode(key)),
        format!("secret: {}", hex::encode_upper(key)),
        format!("secret: {}", STANDARD_NO_PAD.encode(key)),
        format!("secret: {}", URL_SAFE_NO_PAD.encode(&ring)),
    ] {
        let caught = std::panic::catch_unwind(|| {
            assert_absent(&printed, &[("the key ring", forms_of(&ring))]);
        });
        assert!(caught.is_err(), "not caught: {printed}");
    }
    assert_absent("nothing secret here", &[("the key ring", forms_of(&ring))]);
}
