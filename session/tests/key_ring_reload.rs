//! Replacing the key ring of a running cookie manager: a rotated ring signs
//! new ids with its new key and keeps old ids valid; a ring with retired
//! keys stops accepting ids signed only with them at once, even ids the
//! manager (and the format under it) remembered as verified.

#![allow(clippy::unwrap_used)]

use http::{HeaderMap, HeaderValue, Method, header};
use keel_session::{ClientIdManager, CookieConfig, KeelIdFormat, KeyRing, SharedKeyRing};

fn request_with(id: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::COOKIE,
        HeaderValue::from_str(&format!("keel_session={id}")).unwrap(),
    );
    headers
}

#[test]
fn a_rotated_ring_signs_with_the_new_key_and_old_cookies_keep_working() {
    let mut ring = KeyRing::generate().unwrap();
    let shared = SharedKeyRing::new(ring.clone());
    let ids = CookieConfig::keel(shared.clone()).build().unwrap();
    let old = ids.mint(&Method::GET).unwrap();
    assert_eq!(ids.read_id(&request_with(old.as_str())), Some(old.clone()));

    let newest = ring.rotate().unwrap();
    shared.replace(ring.clone());
    let new = ids.mint(&Method::GET).unwrap();
    let format = KeelIdFormat::new(ring);
    assert_eq!(format.signing_key_id(new.as_str()), Some(newest));
    assert_eq!(ids.read_id(&request_with(old.as_str())), Some(old));
    assert_eq!(ids.read_id(&request_with(new.as_str())), Some(new));
}

#[test]
fn a_cookie_signed_with_a_retired_key_stops_working_at_once_though_remembered() {
    let mut ring = KeyRing::generate().unwrap();
    let shared = SharedKeyRing::new(ring.clone());
    let ids = CookieConfig::keel(shared.clone()).build().unwrap();
    let old = ids.mint(&Method::GET).unwrap();
    let request = request_with(old.as_str());
    // Read twice: the second answer comes from the manager's memory.
    for _ in 0..2 {
        assert_eq!(ids.read_id(&request), Some(old.clone()));
    }
    ring.rotate().unwrap();
    shared.replace(ring.clone());
    let new = ids.mint(&Method::GET).unwrap();
    assert_eq!(ids.read_id(&request_with(new.as_str())), Some(new.clone()));

    ring.retain_newest(1);
    assert!(shared.replace(ring), "a key left the ring");
    assert_eq!(ids.read_id(&request), None, "the remembered header");
    assert!(!ids.id_format().verify(old.as_str()));
    assert_eq!(ids.id_format().parse(old.as_str()), None);
    // Other threads forget too.
    std::thread::scope(|scope| {
        scope.spawn(|| assert_eq!(ids.read_id(&request), None));
    });
    assert_eq!(ids.read_id(&request_with(new.as_str())), Some(new));
}
