//! `cookie_client_id`: the bytes of an input are the `Cookie` header(s) of a
//! request (split at `\n`, up to [`MAX_HEADERS`] headers; pieces that are no
//! valid header value are left out, as an HTTP server would refuse them),
//! read by [`CookieClientIdManager::read_id`] in three configurations: the
//! keel format, the zope format, and zope's unverified `thirdparty` mode.
//!
//! Invariants:
//! - `read_id` never panics;
//! - it returns exactly the id that the documented reading rules give (an
//!   independent reading of the header: split at `;`, trim, one pair of
//!   double quotes removed, the first of at most [`MAX_CANDIDATES`] cookies
//!   of our name that the format verifies, values over
//!   [`MAX_COOKIE_VALUE_LEN`] skipped);
//! - so an accepted id always verifies and has the format's length (68 or
//!   54 characters), and `thirdparty` never returns an empty value;
//! - reading the same headers again gives the same id and key (the keel
//!   format now answers an accepted id from the ids it remembers; the
//!   managers live for the whole fuzzing run, so mutations of ids accepted
//!   earlier meet a format that remembers them);
//! - the id formats' `verify` is total on any string, and agrees with
//!   `signing_key_id`.

use std::sync::OnceLock;

use http::{HeaderMap, HeaderValue, header::COOKIE};
use keel_session::{
    ClientId, ClientIdManager, CookieClientIdManager, CookieConfig, IdFormat, KEEL_ID_LEN,
    KeelIdFormat, KeyRing, MAX_CANDIDATES, MAX_COOKIE_VALUE_LEN, ZOPE_ID_LEN, ZopeIdFormat,
    digest_encode,
};
use sha2::{Digest, Sha256};

/// The most `Cookie` headers one input is split into.
pub const MAX_HEADERS: usize = 8;

/// The cookie name of every manager under test (the default).
pub const COOKIE_NAME: &str = CookieConfig::DEFAULT_NAME;

/// The zope secret of the zope manager: the one of zope.session's test
/// vectors, so their ids are valid seeds.
pub const ZOPE_SECRET: &str = "some_secret";

/// The keys of the fixed ring the keel managers verify against: `(key id,
/// secret)`. Not secret: fuzzing needs valid ids in its seeds.
pub const RING_KEYS: [(u16, [u8; 32]); 2] = [(1, [0x11; 32]), (7, [0x77; 32])];

/// The fixed key ring, in its persistent encoding (see
/// [`KeyRing::from_bytes`]).
pub fn ring_bytes() -> Vec<u8> {
    let mut out = b"KEELRING".to_vec();
    out.push(1);
    out.push(RING_KEYS.len() as u8);
    for (id, secret) in RING_KEYS {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&secret);
    }
    let checksum = Sha256::digest(&out);
    out.extend_from_slice(&checksum);
    out
}

struct Managers {
    keel_format: KeelIdFormat,
    zope_format: ZopeIdFormat,
    keel: CookieClientIdManager,
    zope: CookieClientIdManager,
    thirdparty: CookieClientIdManager,
}

fn managers() -> &'static Managers {
    static MANAGERS: OnceLock<Managers> = OnceLock::new();
    MANAGERS.get_or_init(|| {
        let ring = match KeyRing::from_bytes(&ring_bytes()) {
            Ok(ring) => ring,
            Err(err) => panic!("the fixed key ring does not decode: {err}"),
        };
        let built = |config: CookieConfig| match config.build() {
            Ok(manager) => manager,
            Err(err) => panic!("a fuzzing cookie config does not build: {err}"),
        };
        Managers {
            keel_format: KeelIdFormat::new(ring.clone()),
            zope_format: ZopeIdFormat::new(ZOPE_SECRET),
            keel: built(CookieConfig::keel(ring.clone())),
            zope: built(CookieConfig::zope(ZOPE_SECRET)),
            thirdparty: built(CookieConfig::keel(ring).with_thirdparty(true)),
        }
    })
}

/// The request headers an input stands for.
pub fn request_headers(data: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for piece in data.split(|&b| b == b'\n').take(MAX_HEADERS) {
        if let Ok(value) = HeaderValue::from_bytes(piece) {
            headers.append(COOKIE, value);
        }
    }
    headers
}

/// The values of the cookies named [`COOKIE_NAME`], in header order, read
/// independently of the `cookie` crate from the documented rules.
fn reference_candidates(headers: &HeaderMap) -> Vec<String> {
    let mut candidates = Vec::new();
    for header in headers.get_all(COOKIE) {
        let text = String::from_utf8_lossy(header.as_bytes());
        for pair in text.split(';') {
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            if name.trim() != COOKIE_NAME {
                continue;
            }
            let value = value.trim();
            let value = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                Some(unquoted) => unquoted,
                None => value,
            };
            candidates.push(value.to_owned());
        }
    }
    candidates
}

/// What `read_id` must return for these candidates: the first accepted one
/// among the first [`MAX_CANDIDATES`], skipping over-long values.
fn expected_id(candidates: &[String], accept: impl Fn(&str) -> bool) -> Option<&str> {
    for (seen, value) in candidates.iter().enumerate() {
        if seen >= MAX_CANDIDATES {
            return None;
        }
        if value.len() <= MAX_COOKIE_VALUE_LEN && accept(value) {
            return Some(value);
        }
    }
    None
}

/// The check of the `cookie_client_id` fuzz target.
///
/// # Panics
/// If an invariant of the module documentation is broken.
pub fn cookie_client_id(data: &[u8]) {
    let m = managers();
    let headers = request_headers(data);
    let candidates = reference_candidates(&headers);

    let keel = m.keel.read_id(&headers);
    let expected = expected_id(&candidates, |v| m.keel_format.verify(v));
    assert_eq!(keel.as_ref().map(ClientId::as_str), expected, "keel format");
    // Read again: an accepted id now comes from the ids the format
    // remembers (and every other candidate is still checked in full).
    let again = m.keel.read_id(&headers);
    assert_eq!(again, keel, "keel format, remembered ids");
    assert_eq!(
        again.as_ref().map(ClientId::key),
        keel.as_ref().map(ClientId::key)
    );
    if let Some(id) = &keel {
        assert_eq!(id.as_str().len(), KEEL_ID_LEN);
        assert!(m.keel_format.verify(id.as_str()));
    }

    let zope = m.zope.read_id(&headers);
    let expected = expected_id(&candidates, |v| m.zope_format.verify(v));
    assert_eq!(zope.as_ref().map(ClientId::as_str), expected, "zope format");
    if let Some(id) = &zope {
        assert_eq!(id.as_str().len(), ZOPE_ID_LEN);
        assert!(m.zope_format.verify(id.as_str()));
    }

    let thirdparty = m.thirdparty.read_id(&headers);
    let expected = expected_id(&candidates, |v| !v.is_empty());
    assert_eq!(
        thirdparty.as_ref().map(ClientId::as_str),
        expected,
        "thirdparty mode"
    );
    if let Some(id) = &thirdparty {
        assert!(!id.as_str().is_empty());
        assert!(id.as_str().len() <= MAX_COOKIE_VALUE_LEN);
    }

    // The formats on the whole input as one candidate.
    let text = String::from_utf8_lossy(data);
    let signer = m.keel_format.signing_key_id(&text);
    assert_eq!(m.keel_format.verify(&text), signer.is_some());
    if let Some(key_id) = signer {
        assert_eq!(text.len(), KEEL_ID_LEN);
        assert!(RING_KEYS.iter().any(|(id, _)| *id == key_id));
    }
    if m.zope_format.verify(&text) {
        assert_eq!(text.len(), ZOPE_ID_LEN);
    }
    // zope's encoder is public and total.
    let encoded = digest_encode(&data[..data.len().min(256)]);
    assert!(encoded.is_ascii());
}
