//! With the zope id format, Keel reads ids minted by zope.session with the
//! same secret (the spec's section 2.3 vectors, presented as cookies) and
//! mints ids of zope's exact shape, so a Zope site moves to Keel without
//! logging its users out. A secret file's content is trimmed.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use http::{HeaderMap, HeaderValue, Method, header::COOKIE};
use keel_session::{
    ClientIdManager, CookieClientIdManager, CookieConfig, IdFormat, ZOPE_ID_LEN, ZopeIdFormat,
    digest_encode,
};

const A27: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// `(secret, id)`: every id vector of the spec's section 2.3.
const VECTORS: &[(&str, &str)] = &[
    (
        "some_secret",
        "VEcVoTTmFPcl4Mru.ErZZSRbctM6Jc2bIciINTfkd3sqRupeTncaRE",
    ),
    (
        "some_secret",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAArzWibqJJL6bXXXJl87b.uPpXhIg",
    ),
    (
        "some_secret",
        "abcdefghijklmnopqrstuvwxyzA6OADHIRy5-x.iDTF4Hcj.5SsS0E",
    ),
    (
        "secret",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAqhxfRg-SpWtB.Wi2d0H1wh7vCFU",
    ),
    ("", "AAAAAAAAAAAAAAAAAAAAAAAAAAAKfC9V8T3fHVUZUb9WOo-V.4Tq-8"),
    (
        "zope-peer-bench-secret",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAy0CnSLW.TokZbHeubUfukifskEc",
    ),
];

fn zope(secret: &str) -> CookieClientIdManager {
    CookieConfig::zope(secret)
        .with_name("zsess")
        .build()
        .unwrap()
}

fn cookie(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(COOKIE, HeaderValue::from_str(value).unwrap());
    headers
}

#[test]
fn every_zope_vector_is_read_from_a_cookie_scenario_71() {
    for &(secret, id) in VECTORS {
        let ids = zope(secret);
        let got = ids.read_id(&cookie(&format!("zsess={id}")));
        assert_eq!(got.as_ref().map(|id| id.as_str()), Some(id), "{secret:?}");
        // Quoted, as Python's SimpleCookie would accept it.
        let got = ids.read_id(&cookie(&format!("zsess=\"{id}\"")));
        assert_eq!(got.as_ref().map(|id| id.as_str()), Some(id), "{secret:?}");
    }
}

#[test]
fn the_vectors_are_signed_exactly_by_the_format() {
    for &(secret, id) in VECTORS {
        assert_eq!(ZopeIdFormat::new(secret).sign(&id[..27]).as_str(), id);
    }
    assert_eq!(
        ZopeIdFormat::new("some_secret").sign(A27).as_str(),
        VECTORS[1].1
    );
}

#[test]
fn digest_encode_vectors_scenario_70() {
    assert_eq!(digest_encode(&[0; 20]), A27);
    assert_eq!(digest_encode(&[0xff; 20]), format!("{}8", ".".repeat(26)));
}

#[test]
fn minted_ids_have_zopes_shape_scenario_70() {
    let format = ZopeIdFormat::new("some_secret");
    for _ in 0..50 {
        let id = format.mint().unwrap();
        let s = id.as_str();
        assert_eq!(s.len(), ZOPE_ID_LEN);
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'),
            "{s}"
        );
        for pos in [26, 53] {
            assert!(b"AEIMQUYcgkosw048".contains(&s.as_bytes()[pos]), "{s}");
        }
    }
}

#[test]
fn a_changed_last_character_is_rejected_and_a_new_id_minted_scenario_72() {
    let ids = zope("some_secret");
    let good = VECTORS[1].1;
    let bad = format!("{}h", &good[..53]);
    assert_eq!(ids.read_id(&cookie(&format!("zsess={bad}"))), None);
    let fresh = ids.mint(&Method::GET).unwrap();
    assert_ne!(fresh.as_str(), good);
    assert_eq!(fresh.as_str().len(), 54);
}

#[test]
fn tampering_with_x_times_54_is_rejected_scenario_20() {
    let ids = zope("some_secret");
    let tampered = "x".repeat(54);
    assert_eq!(ids.read_id(&cookie(&format!("zsess={tampered}"))), None);
}

#[test]
fn a_55_character_cookie_and_another_secret_are_rejected_scenario_73() {
    let good = VECTORS[1].1;
    assert_eq!(
        zope("some_secret").read_id(&cookie(&format!("zsess={good}A"))),
        None
    );
    assert_eq!(
        zope("secret").read_id(&cookie(&format!("zsess={good}"))),
        None
    );
}

#[test]
fn duplicate_zope_cookies_resolve_to_the_first_valid_one_scenario_81() {
    let ids = zope("some_secret");
    let valid = VECTORS[1].1;
    for header in [
        format!("zsess={valid}; zsess=bogus"),
        format!("zsess=bogus; zsess={valid}"),
    ] {
        let got = ids.read_id(&cookie(&header));
        assert_eq!(got.as_ref().map(|id| id.as_str()), Some(valid), "{header}");
    }
}

#[test]
fn an_id_minted_by_keel_verifies_under_a_fresh_format_with_the_same_secret() {
    // What a Zope peer with the same secret does: recompute from the text.
    let minted = zope("shared").mint(&Method::POST).unwrap();
    assert!(ZopeIdFormat::new("shared").verify(minted.as_str()));
    assert_eq!(
        ZopeIdFormat::new("shared")
            .sign(&minted.as_str()[..27])
            .as_str(),
        minted.as_str()
    );
}

#[test]
fn the_secret_file_is_trimmed_like_keel_serve_secret_file() {
    let dir = std::env::temp_dir().join(format!("keel-cookie-zope-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("secret");
    std::fs::write(&path, "\n  zope-peer-bench-secret \r\n").unwrap();
    let ids = CookieConfig::new(ZopeIdFormat::from_secret_file(&path).unwrap())
        .with_name("zsess")
        .build()
        .unwrap();
    let got = ids.read_id(&cookie(&format!("zsess={}", VECTORS[5].1)));
    assert_eq!(got.as_ref().map(|id| id.as_str()), Some(VECTORS[5].1));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// zope's rule: an id exists before any data. A validly signed zope id that
/// Keel holds no session for (minted by a Zope site with the same secret) is
/// that client's id when its first data is written: no new cookie. Keel's
/// own format keeps its rule: such an id is replaced by a fresh one.
#[test]
fn a_signed_zope_id_without_a_session_is_kept_and_a_keel_id_is_replaced() {
    use std::sync::Arc;

    use http::header::SET_COOKIE;
    use keel_session::{ContainerRegistry, KeyRing, SessionManager};
    use keel_store::{ClientKey, RamContainer};

    let registry = || ContainerRegistry::new().with_default(Arc::new(RamContainer::new()));
    let (_, id) = VECTORS[0];
    let manager = SessionManager::new(zope("some_secret"), registry());
    let session = manager.session_for(&Method::POST, &cookie(&format!("zsess={id}")));
    session.pkg("app").unwrap().insert("n", 1_u64).unwrap();
    assert_eq!(session.client_key(), Some(ClientKey::from_client_id(id)));
    session.commit().unwrap();
    let mut headers = HeaderMap::new();
    session.write_cookie_headers(&mut headers);
    assert!(
        headers.get(SET_COOKIE).is_none(),
        "the id is kept: {headers:?}"
    );
    let again = manager.session_for(&Method::GET, &cookie(&format!("zsess={id}")));
    assert_eq!(again.value::<u64>("app", "n").unwrap(), Some(1));

    let keel = CookieConfig::keel(KeyRing::generate().unwrap())
        .build()
        .unwrap();
    let signed = keel.mint(&Method::POST).unwrap();
    let manager = SessionManager::new(keel, registry());
    let headers = cookie(&format!("keel_session={}", signed.as_str()));
    let session = manager.session_for(&Method::POST, &headers);
    session.pkg("app").unwrap().insert("n", 1_u64).unwrap();
    assert_ne!(session.client_key(), Some(signed.key()), "replaced");
    session.commit().unwrap();
    let mut headers = HeaderMap::new();
    session.write_cookie_headers(&mut headers);
    assert!(headers.get(SET_COOKIE).is_some(), "a new id is sent");
}
