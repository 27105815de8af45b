//! Reading the id from `Cookie` headers never panics, whatever the bytes,
//! and never accepts anything but a validly signed id. Duplicates resolve
//! deterministically: the first validly signed cookie of our name wins, in
//! header order, across several `Cookie` headers. A syntax error or
//! non-UTF-8 bytes elsewhere do not hide our cookie; double quotes are
//! removed; huge values are skipped before any cryptography.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use http::{HeaderMap, HeaderValue, Method, header::COOKIE};
use keel_session::{
    ClientId, ClientIdManager, CookieClientIdManager, CookieConfig, KeyRing, MAX_CANDIDATES,
};
use proptest::prelude::*;

fn manager() -> CookieClientIdManager {
    CookieConfig::keel(KeyRing::generate().unwrap())
        .build()
        .unwrap()
}

fn headers(values: &[&[u8]]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for value in values {
        headers.append(COOKIE, HeaderValue::from_bytes(value).unwrap());
    }
    headers
}

fn one(value: &str) -> HeaderMap {
    headers(&[value.as_bytes()])
}

struct Fixture {
    ids: CookieClientIdManager,
    a: ClientId,
    b: ClientId,
}

fn fixture() -> Fixture {
    let ids = manager();
    let a = ids.mint(&Method::GET).unwrap();
    let b = ids.mint(&Method::GET).unwrap();
    Fixture { ids, a, b }
}

#[test]
fn of_two_valid_duplicates_in_one_header_the_first_wins() {
    let Fixture { ids, a, b } = fixture();
    let got = ids.read_id(&one(&format!("keel_session={a}; keel_session={b}")));
    assert_eq!(got, Some(a.clone()));
    let got = ids.read_id(&one(&format!("keel_session={b}; keel_session={a}")));
    assert_eq!(got, Some(b));
}

#[test]
fn an_invalid_duplicate_does_not_hide_a_valid_one_scenario_81() {
    // zope: last wins, so `VALID; bogus` had no id. Keel: first valid wins.
    let Fixture { ids, a, .. } = fixture();
    for header in [
        format!("keel_session={a}; keel_session=bogus"),
        format!("keel_session=bogus; keel_session={a}"),
        format!("keel_session=; keel_session={a}; keel_session=deleted"),
    ] {
        assert_eq!(ids.read_id(&one(&header)), Some(a.clone()), "{header}");
    }
}

#[test]
fn duplicates_across_headers_are_taken_in_header_order() {
    let Fixture { ids, a, b } = fixture();
    let first = format!("keel_session={a}");
    let second = format!("keel_session={b}");
    let got = ids.read_id(&headers(&[first.as_bytes(), second.as_bytes()]));
    assert_eq!(got, Some(a.clone()));
    let got = ids.read_id(&headers(&[b"keel_session=junk", second.as_bytes()]));
    assert_eq!(got, Some(b));
    let got = ids.read_id(&headers(&[b"other=1", first.as_bytes()]));
    assert_eq!(got, Some(a));
}

#[test]
fn a_quoted_value_is_unquoted() {
    let Fixture { ids, a, .. } = fixture();
    assert_eq!(
        ids.read_id(&one(&format!("keel_session=\"{a}\""))),
        Some(a.clone())
    );
    // Unbalanced quotes are not removed, so the value does not verify.
    assert_eq!(ids.read_id(&one(&format!("keel_session=\"{a}"))), None);
    assert_eq!(ids.read_id(&one(&format!("keel_session={a}\""))), None);
}

#[test]
fn whitespace_around_names_and_values_is_ignored() {
    let Fixture { ids, a, .. } = fixture();
    assert_eq!(
        ids.read_id(&one(&format!("  keel_session =  {a}  ;other=1"))),
        Some(a)
    );
}

#[test]
fn syntax_errors_in_other_cookies_do_not_hide_ours_scenario_81() {
    // zope: any syntax error drops the whole header. Keel: per pair.
    let Fixture { ids, a, .. } = fixture();
    for header in [
        format!("a b=1; keel_session={a}"),
        format!("\"unterminated=1; keel_session={a}"),
        format!("=novalue; keel_session={a}"),
        format!("justaname; keel_session={a}; ;;"),
        format!(";;;keel_session={a};;;"),
        format!("x=\"; keel_session={a}"),
    ] {
        assert_eq!(ids.read_id(&one(&header)), Some(a.clone()), "{header}");
    }
}

#[test]
fn degenerate_headers_have_no_id() {
    let ids = manager();
    for header in [
        "",
        " ",
        ";",
        ";;;",
        "=",
        "==",
        "keel_session",
        "keel_session;",
        "keel_session=",
        "keel_session=\"\"",
        "=keel_session",
        "KEEL_SESSION=x",
    ] {
        assert_eq!(ids.read_id(&one(header)), None, "{header:?}");
    }
}

#[test]
fn non_utf8_bytes_are_ignored_and_do_not_hide_our_cookie() {
    let Fixture { ids, a, .. } = fixture();
    let ours = format!("keel_session={a}");
    let mut header = b"junk=\xff\xfe\x80; ".to_vec();
    header.extend_from_slice(ours.as_bytes());
    assert_eq!(ids.read_id(&headers(&[&header])), Some(a.clone()));

    // Inside our own value, it just fails verification.
    let mut spoiled = format!("keel_session={}", &a.as_str()[..60]).into_bytes();
    spoiled.extend_from_slice(b"\xff\xff\xff\xff\xff\xff\xff\xff");
    assert_eq!(ids.read_id(&headers(&[&spoiled])), None);

    // A header of nothing but high bytes.
    assert_eq!(ids.read_id(&headers(&[&[0xffu8; 300]])), None);
    // Across headers: a bad one before a good one.
    assert_eq!(
        ids.read_id(&headers(&[b"\xc3\x28=\xa0\xa1", ours.as_bytes()])),
        Some(a)
    );
}

#[test]
fn a_64_kib_value_is_skipped_without_hiding_a_later_valid_cookie() {
    let Fixture { ids, a, .. } = fixture();
    let huge = "A".repeat(64 * 1024);
    assert_eq!(ids.read_id(&one(&format!("keel_session={huge}"))), None);
    assert_eq!(
        ids.read_id(&one(&format!("keel_session={huge}; keel_session={a}"))),
        Some(a.clone())
    );
    assert_eq!(
        ids.read_id(&one(&format!("big={huge}; keel_session={a}"))),
        Some(a)
    );
}

#[test]
fn a_64_kib_value_in_thirdparty_mode_is_not_returned() {
    let ids = CookieConfig::keel(KeyRing::generate().unwrap())
        .with_thirdparty(true)
        .build()
        .unwrap();
    let huge = "A".repeat(64 * 1024);
    assert_eq!(ids.read_id(&one(&format!("keel_session={huge}"))), None);
}

#[test]
fn at_most_max_candidates_cookies_of_our_name_are_examined() {
    let Fixture { ids, a, .. } = fixture();
    let junk = "keel_session=junk; ".repeat(MAX_CANDIDATES - 1);
    assert_eq!(
        ids.read_id(&one(&format!("{junk}keel_session={a}"))),
        Some(a.clone())
    );
    let junk = "keel_session=junk; ".repeat(MAX_CANDIDATES);
    assert_eq!(ids.read_id(&one(&format!("{junk}keel_session={a}"))), None);
}

#[test]
fn the_cookie_name_must_match_exactly() {
    let Fixture { ids, a, .. } = fixture();
    for header in [
        format!("Keel_session={a}"),
        format!("keel_session_x={a}"),
        format!("xkeel_session={a}"),
        format!("keel session={a}"),
    ] {
        assert_eq!(ids.read_id(&one(&header)), None, "{header}");
    }
}

#[test]
fn percent_encoded_ids_are_not_decoded() {
    let Fixture { ids, a, .. } = fixture();
    let encoded: String = a.as_str().bytes().map(|b| format!("%{b:02X}")).collect();
    assert_eq!(ids.read_id(&one(&format!("keel_session={encoded}"))), None);
}

/// A byte a header value may hold (RFC 9110 field-value: visible ASCII,
/// space, tab, and obs-text 0x80-0xFF), so that every generated case is a
/// header `http` accepts and reaches its assertion.
fn header_byte() -> impl Strategy<Value = u8> {
    prop_oneof![Just(b'\t'), 0x20u8..=0x7e, 0x80u8..=0xff]
}

/// Header-value bytes of `len` bytes.
fn header_bytes(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(header_byte(), len)
}

#[test]
fn the_generated_header_bytes_are_all_valid_header_values() {
    // The property tests below unwrap `HeaderValue::from_bytes`: here is
    // why it cannot fail for what they generate.
    for byte in (0..=255u8).filter(|b| *b == b'\t' || (0x20..=0x7e).contains(b) || *b >= 0x80) {
        assert!(
            HeaderValue::from_bytes(&[b'a', byte, b'a']).is_ok(),
            "{byte:#x}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary header bytes as Cookie header values: no panic, no id.
    #[test]
    fn arbitrary_cookie_bytes_never_panic_and_are_never_accepted(
        values in proptest::collection::vec(header_bytes(0..300), 0..4),
    ) {
        let ids = manager();
        let mut map = HeaderMap::new();
        for value in &values {
            map.append(COOKIE, HeaderValue::from_bytes(value).unwrap());
        }
        prop_assert_eq!(ids.read_id(&map), None);
    }

    /// Arbitrary text around our cookie name: no panic, no id.
    #[test]
    fn arbitrary_values_of_our_cookie_are_never_accepted(
        prefix in "[ -~]{0,40}",
        value in "[ -~]{0,100}",
        suffix in "[ -~]{0,40}",
    ) {
        let ids = manager();
        let header = format!("{prefix}keel_session={value}{suffix}");
        let mut map = HeaderMap::new();
        map.insert(COOKIE, HeaderValue::from_str(&header).unwrap());
        prop_assert_eq!(ids.read_id(&map), None);
    }

    /// Junk around a valid cookie, in its own `;`-separated pair: the
    /// junk neither hides it nor replaces it.
    #[test]
    fn junk_around_a_valid_cookie_yields_that_id(
        before in header_bytes(0..120),
        after in header_bytes(0..120),
    ) {
        let Fixture { ids, a, .. } = fixture();
        let mut value = before.clone();
        value.extend_from_slice(format!("; keel_session={a}; ").as_bytes());
        value.extend_from_slice(&after);
        let mut map = HeaderMap::new();
        map.insert(COOKIE, HeaderValue::from_bytes(&value).unwrap());
        prop_assert_eq!(ids.read_id(&map), Some(a));
    }
}

/// One `Cookie` header of the remembered-headers model test.
#[derive(Debug, Clone)]
enum Part {
    /// `keel_session=` one of the two valid ids.
    Valid(bool),
    /// One of the valid ids with one character replaced: a forgery.
    Forged(bool, usize, char),
    Other,
    Junk,
}

fn render(part: &Part, a: &ClientId, b: &ClientId) -> String {
    let pick = |first: bool| if first { a.as_str() } else { b.as_str() };
    match part {
        Part::Valid(first) => format!("keel_session={}", pick(*first)),
        Part::Forged(first, at, with) => {
            let mut id: Vec<char> = pick(*first).chars().collect();
            let at = at % id.len();
            id[at] = if id[at] == *with { 'Z' } else { *with };
            format!("keel_session={}", id.into_iter().collect::<String>())
        }
        Part::Other => "other=1".to_owned(),
        Part::Junk => "keel_session=junk".to_owned(),
    }
}

fn part() -> impl Strategy<Value = Part> {
    prop_oneof![
        any::<bool>().prop_map(Part::Valid),
        (
            any::<bool>(),
            any::<usize>(),
            prop::sample::select(vec!['A', 'z', '0', '-', '_'])
        )
            .prop_map(|(first, at, with)| Part::Forged(first, at, with)),
        Just(Part::Other),
        Just(Part::Junk),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A manager remembers the `Cookie` headers whose id verified; whatever
    /// sequence of requests it reads, it answers each exactly as a manager
    /// that remembers nothing (a fresh one over the same key ring), so a
    /// forgery that differs from a remembered header in one character is
    /// still refused, and several headers still follow the parsing rules.
    #[test]
    fn remembered_headers_answer_as_a_fresh_manager_would(
        requests in proptest::collection::vec(
            proptest::collection::vec(proptest::collection::vec(part(), 1..4), 1..3),
            1..12,
        ),
    ) {
        let ring = KeyRing::generate().unwrap();
        let ids = CookieConfig::keel(ring.clone()).build().unwrap();
        let a = ids.mint(&Method::GET).unwrap();
        let b = ids.mint(&Method::GET).unwrap();
        for request in &requests {
            let values: Vec<String> = request
                .iter()
                .map(|pairs| {
                    pairs.iter().map(|p| render(p, &a, &b)).collect::<Vec<_>>().join("; ")
                })
                .collect();
            let map = headers(&values.iter().map(|v| v.as_bytes()).collect::<Vec<_>>());
            let fresh = CookieConfig::keel(ring.clone()).build().unwrap();
            let expected = fresh.read_id(&map);
            prop_assert_eq!(ids.read_id(&map), expected.clone(), "{:?}", values);
            // Read again: now possibly from memory.
            prop_assert_eq!(ids.read_id(&map), expected, "{:?}", values);
        }
    }
}
