//! `Debug` output, which ends up in logs and panic messages, never contains
//! a client id or a secret: not for ids, key rings, id formats, cookie
//! settings or managers, in compact or pretty form.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use http::Method;
use keel_session::{
    ClientIdManager, CookieConfig, IdFormat, KeelIdFormat, KeyRing, SessionError, ZopeIdFormat,
};

const SECRET: &str = "correct-horse-battery-staple";

fn shows(value: &impl std::fmt::Debug) -> String {
    format!("{value:?}\n{value:#?}")
}

#[test]
fn a_client_id_debug_is_a_placeholder() {
    let id = KeelIdFormat::new(KeyRing::generate().unwrap())
        .mint()
        .unwrap();
    let shown = shows(&id);
    assert!(!shown.contains(id.as_str()), "{shown}");
    assert!(shown.contains("redacted"), "{shown}");
    assert_eq!(id.to_string(), id.as_str(), "Display is the wire form");
    let some = shows(&Some(id.clone()));
    assert!(!some.contains(id.as_str()));
}

#[test]
fn a_key_ring_debug_shows_key_ids_but_no_secret() {
    let mut ring = KeyRing::generate().unwrap();
    ring.rotate().unwrap();
    let shown = shows(&ring);
    assert!(shown.contains("key_ids"), "{shown}");
    // The secrets are bytes 12..44 and 46..78 of the encoding.
    let bytes = ring.to_bytes();
    for secret in [&bytes[12..44], &bytes[46..78]] {
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        let list = format!("{secret:?}");
        assert!(!shown.contains(&hex[..16]), "{shown}");
        assert!(!shown.contains(&list[1..20]), "{shown}");
    }
}

#[test]
fn id_formats_and_managers_never_show_ids_or_secrets() {
    let zope = ZopeIdFormat::new(SECRET);
    assert!(!shows(&zope).contains(SECRET));

    let ids = CookieConfig::zope(SECRET)
        .with_domain("example.org")
        .build()
        .unwrap();
    let id = ids.mint(&Method::POST).unwrap();
    let shown = shows(&ids);
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(!shown.contains(id.as_str()), "{shown}");
    assert!(shown.contains("example.org"), "settings are shown: {shown}");

    let config = CookieConfig::zope(SECRET);
    assert!(!shows(&config).contains(SECRET));

    let keel = CookieConfig::keel(KeyRing::generate().unwrap())
        .build()
        .unwrap();
    let id = keel.mint(&Method::POST).unwrap();
    assert!(!shows(&keel).contains(id.as_str()));
}

#[test]
fn errors_do_not_show_secrets() {
    let err = KeyRing::from_bytes(b"KEELRING\x01\x01 not a ring").unwrap_err();
    assert!(matches!(err, SessionError::InvalidKeyRing { .. }));
    assert!(!shows(&err).contains("not a ring"));
}
