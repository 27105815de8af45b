//! Strict mode: the cookie manager returns an id only if it was validly
//! signed by this site's key ring (or zope secret). A missing, malformed,
//! forged, foreign or truncated id, or any client-chosen value, is never
//! adopted: the caller mints a fresh id instead. Rotating the key ring keeps
//! ids signed by older keys valid while new ids use the newest key.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use http::{HeaderMap, HeaderValue, Method, header::COOKIE};
use keel_session::{
    ClientId, ClientIdManager, CookieClientIdManager, CookieConfig, IdFormat, KEEL_ID_LEN,
    KeelIdFormat, KeyRing, ZopeIdFormat,
};

fn keel_manager(ring: KeyRing) -> CookieClientIdManager {
    CookieConfig::keel(ring).build().unwrap()
}

fn request_with(cookie: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(COOKIE, HeaderValue::from_str(cookie).unwrap());
    headers
}

fn read(ids: &CookieClientIdManager, value: &str) -> Option<ClientId> {
    ids.read_id(&request_with(&format!("keel_session={value}")))
}

#[test]
fn a_request_without_a_cookie_has_no_id_scenario_16() {
    let ids = keel_manager(KeyRing::generate().unwrap());
    assert_eq!(ids.read_id(&HeaderMap::new()), None);
    assert_eq!(ids.read_id(&request_with("other=1")), None);
}

#[test]
fn a_minted_id_is_read_back_from_the_next_request_scenario_7() {
    let ids = keel_manager(KeyRing::generate().unwrap());
    let id = ids.mint(&Method::GET).unwrap();
    assert!(!id.as_str().is_empty(), "scenario 8: the id is non-empty");
    assert_eq!(read(&ids, id.as_str()), Some(id));
}

#[test]
fn two_minted_ids_differ_scenario_15() {
    let ids = keel_manager(KeyRing::generate().unwrap());
    let a = ids.mint(&Method::GET).unwrap();
    let b = ids.mint(&Method::GET).unwrap();
    assert_ne!(a, b);
    assert_ne!(a.key(), b.key());
}

#[test]
fn client_chosen_values_are_never_adopted() {
    let ids = keel_manager(KeyRing::generate().unwrap());
    for value in [
        "",
        "1",
        "mine",
        "deleted",
        "x".repeat(KEEL_ID_LEN).as_str(),
        "A".repeat(KEEL_ID_LEN).as_str(),
        "AQAAf0Y4gjgAAAQ3AwMEAg==",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAArzWibqJJL6bXXXJl87b.uPpXhIg",
    ] {
        assert_eq!(read(&ids, value), None, "{value:?}");
    }
}

#[test]
fn a_forged_id_with_the_right_shape_but_a_wrong_tag_is_rejected() {
    let ids = keel_manager(KeyRing::generate().unwrap());
    let id = ids.mint(&Method::GET).unwrap();
    // Keep version, key id and nonce (the first 25 characters encode the
    // first 18.75 bytes), replace the tag with another valid-looking one.
    let forged = format!("{}{}", &id.as_str()[..26], "A".repeat(KEEL_ID_LEN - 26));
    assert_eq!(forged.len(), KEEL_ID_LEN);
    assert_eq!(read(&ids, &forged), None);
    // The tag of another id on this id's nonce.
    let other = ids.mint(&Method::GET).unwrap();
    let spliced = format!("{}{}", &id.as_str()[..26], &other.as_str()[26..]);
    assert_eq!(read(&ids, &spliced), None);
}

#[test]
fn every_flipped_character_of_a_valid_id_is_rejected_scenario_72() {
    let ids = keel_manager(KeyRing::generate().unwrap());
    let id = ids.mint(&Method::GET).unwrap();
    for pos in 0..KEEL_ID_LEN {
        let mut bytes = id.as_str().as_bytes().to_vec();
        bytes[pos] = if bytes[pos] == b'B' { b'C' } else { b'B' };
        let changed = String::from_utf8(bytes).unwrap();
        assert_eq!(read(&ids, &changed), None, "position {pos}");
    }
}

#[test]
fn truncated_and_extended_ids_are_rejected_scenario_73() {
    let ids = keel_manager(KeyRing::generate().unwrap());
    let id = ids.mint(&Method::GET).unwrap();
    for len in 0..KEEL_ID_LEN {
        assert_eq!(read(&ids, &id.as_str()[..len]), None, "length {len}");
    }
    assert_eq!(read(&ids, &format!("{id}A")), None);
    assert_eq!(read(&ids, &format!("A{id}")), None);
}

#[test]
fn an_id_signed_by_another_key_ring_is_foreign() {
    let ours = keel_manager(KeyRing::generate().unwrap());
    let theirs = keel_manager(KeyRing::generate().unwrap());
    let id = theirs.mint(&Method::GET).unwrap();
    assert_eq!(read(&ours, id.as_str()), None);
    assert_eq!(read(&theirs, id.as_str()), Some(id));
}

#[test]
fn an_id_with_the_same_key_id_but_another_secret_is_foreign() {
    // Both rings have one key with id 1.
    let a = KeyRing::generate().unwrap();
    let b = KeyRing::generate().unwrap();
    assert_eq!(a.current_key_id(), b.current_key_id());
    let id = KeelIdFormat::new(b).mint().unwrap();
    assert!(!KeelIdFormat::new(a).verify(id.as_str()));
}

#[test]
fn ids_of_one_format_are_foreign_to_the_other() {
    let keel = keel_manager(KeyRing::generate().unwrap());
    let zope = CookieConfig::zope("some_secret").build().unwrap();
    let keel_id = keel.mint(&Method::GET).unwrap();
    let zope_id = zope.mint(&Method::GET).unwrap();
    assert_eq!(read(&zope, keel_id.as_str()), None);
    assert_eq!(read(&keel, zope_id.as_str()), None);
}

#[test]
fn a_zope_id_under_another_secret_is_foreign_scenario_73() {
    let ours = CookieConfig::zope("some_secret").build().unwrap();
    let theirs = ZopeIdFormat::new("other_secret");
    let id = theirs.mint().unwrap();
    assert_eq!(read(&ours, id.as_str()), None);
    assert_eq!(
        read(&ours, &format!("{}A", &id.as_str())),
        None,
        "55 characters"
    );
}

#[test]
fn after_rotation_old_ids_verify_and_new_ids_use_the_newest_key() {
    let mut ring = KeyRing::generate().unwrap();
    let before = KeelIdFormat::new(ring.clone());
    let old_id = before.mint().unwrap();
    assert_eq!(before.signing_key_id(old_id.as_str()), Some(1));

    let newest = ring.rotate().unwrap();
    let after = KeelIdFormat::new(ring.clone());
    let new_id = after.mint().unwrap();
    assert_eq!(after.signing_key_id(old_id.as_str()), Some(1));
    assert_eq!(after.signing_key_id(new_id.as_str()), Some(newest));
    // The old ring does not know the new key.
    assert!(!before.verify(new_id.as_str()));

    // Through a manager, and after persisting and reloading the ring.
    let reloaded = KeyRing::from_bytes(&ring.to_bytes()).unwrap();
    let ids = keel_manager(reloaded);
    assert_eq!(read(&ids, old_id.as_str()), Some(old_id.clone()));
    assert_eq!(read(&ids, new_id.as_str()), Some(new_id));

    // Dropping the old key finally invalidates its ids.
    ring.retain_newest(1);
    let ids = keel_manager(ring);
    assert_eq!(read(&ids, old_id.as_str()), None);
}

#[test]
fn verification_is_exact_so_near_misses_fail_like_total_misses() {
    // Constant-time comparison is a property of the code (`verify_slice` for
    // Keel ids, `subtle::ConstantTimeEq` for zope ids); what a test can show
    // is that the decision depends on the whole tag: an id that differs
    // only in its last tag character fails exactly like one that differs
    // in every character.
    let format = KeelIdFormat::new(KeyRing::generate().unwrap());
    let id = format.mint().unwrap();
    let s = id.as_str();
    let last = s.as_bytes()[KEEL_ID_LEN - 1];
    // The last character carries the low 6 bits of the final tag byte.
    let near = format!(
        "{}{}",
        &s[..KEEL_ID_LEN - 1],
        if last == b'A' { 'E' } else { 'A' }
    );
    assert!(!format.verify(&near));
    assert!(format.verify(s));

    let zope = ZopeIdFormat::new("some_secret");
    let good = "AAAAAAAAAAAAAAAAAAAAAAAAAAArzWibqJJL6bXXXJl87b.uPpXhIg";
    assert!(zope.verify(good));
    assert!(!zope.verify(&format!("{}A", &good[..53])));
}

#[test]
fn the_client_key_is_the_sha256_of_the_wire_form_and_not_the_id() {
    let ids = keel_manager(KeyRing::generate().unwrap());
    let id = ids.mint(&Method::GET).unwrap();
    let key = id.key();
    assert_eq!(key, keel_store::ClientKey::from_client_id(id.as_str()));
    assert!(!key.to_string().contains(id.as_str()));
}
