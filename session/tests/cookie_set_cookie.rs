//! The `Set-Cookie` header the manager sends carries exactly the configured
//! attributes (Path, Domain, Secure, HttpOnly, SameSite, Partitioned, and
//! Expires/Max-Age per lifetime), parses back with the `cookie` crate, and
//! comes with zope's three cache-defeating headers, which replace any the
//! application set. Expiring the cookie sends an empty value with
//! `Max-Age=0` for the same path and domain. A second cookie for the same
//! name, path and domain in one response replaces the first.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cookie::{Cookie, SameSite as CookieSameSite, time::OffsetDateTime};
use http::{
    HeaderMap, HeaderValue, Method,
    header::{CACHE_CONTROL, EXPIRES, PRAGMA, SET_COOKIE},
};
use keel_session::{
    ClientId, ClientIdManager, CookieClientIdManager, CookieConfig, CookieLifetime, KeyRing,
    SameSite, SessionError,
};

fn config() -> CookieConfig {
    CookieConfig::keel(KeyRing::generate().unwrap())
}

/// 1700000000.9 s after the epoch (the spec's example).
fn spec_now() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_700_000_000_900)
}

fn set(ids: &CookieClientIdManager) -> (ClientId, HeaderMap) {
    let id = ids.mint(&Method::POST).unwrap();
    let mut headers = HeaderMap::new();
    ids.set_cookie(&mut headers, &id, spec_now());
    (id, headers)
}

fn set_cookies(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn parsed(headers: &HeaderMap) -> Cookie<'static> {
    let all = set_cookies(headers);
    assert_eq!(all.len(), 1, "{all:?}");
    Cookie::parse(all[0].clone()).unwrap()
}

#[test]
fn the_defaults_are_httponly_lax_path_root_and_a_browser_session_scenario_23_24() {
    let ids = config().build().unwrap();
    let (id, headers) = set(&ids);
    let cookie = parsed(&headers);
    assert_eq!(cookie.name(), "keel_session");
    assert_eq!(cookie.value(), id.as_str());
    assert_eq!(cookie.path(), Some("/"));
    assert_eq!(cookie.domain(), None);
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.same_site(), Some(CookieSameSite::Lax));
    assert_eq!(cookie.secure(), None);
    assert_eq!(cookie.partitioned(), None);
    assert_eq!(cookie.max_age(), None);
    assert_eq!(cookie.expires(), None);
    assert_eq!(
        set_cookies(&headers)[0],
        format!("keel_session={id}; HttpOnly; SameSite=Lax; Path=/")
    );
}

#[test]
fn secure_and_domain_are_added_when_set_scenario_28_29() {
    let ids = config()
        .with_secure(true)
        .with_domain(".example.org")
        .build()
        .unwrap();
    let (_, headers) = set(&ids);
    let cookie = parsed(&headers);
    assert_eq!(cookie.secure(), Some(true));
    assert_eq!(cookie.domain(), Some("example.org"));
    assert_eq!(cookie.path(), Some("/"));
}

#[test]
fn an_empty_domain_means_none() {
    let ids = config().with_domain("").build().unwrap();
    assert_eq!(parsed(&set(&ids).1).domain(), None);
}

#[test]
fn http_only_can_be_turned_off_and_on_scenario_31() {
    let off = config().with_http_only(false).build().unwrap();
    assert_eq!(parsed(&set(&off).1).http_only(), None);
    let on = config().with_http_only(true).build().unwrap();
    assert_eq!(parsed(&set(&on).1).http_only(), Some(true));
}

#[test]
fn every_same_site_value_renders() {
    for (ours, theirs, secure) in [
        (SameSite::Strict, CookieSameSite::Strict, None),
        (SameSite::Lax, CookieSameSite::Lax, None),
        (SameSite::None, CookieSameSite::None, Some(true)),
    ] {
        let ids = config().with_same_site(ours).build().unwrap();
        let cookie = parsed(&set(&ids).1);
        assert_eq!(cookie.same_site(), Some(theirs));
        assert_eq!(cookie.secure(), secure, "SameSite=None forces Secure");
    }
}

#[test]
fn same_site_none_forces_secure_even_when_secure_is_off() {
    let ids = config()
        .with_secure(false)
        .with_same_site(SameSite::None)
        .build()
        .unwrap();
    assert!(ids.is_secure());
    assert_eq!(parsed(&set(&ids).1).secure(), Some(true));
}

#[test]
fn partitioned_renders_and_forces_secure() {
    let ids = config().with_partitioned(true).build().unwrap();
    assert!(ids.is_secure());
    let cookie = parsed(&set(&ids).1);
    assert_eq!(cookie.partitioned(), Some(true));
    assert_eq!(cookie.secure(), Some(true));
}

#[test]
fn the_path_is_percent_encoded_from_the_app_root_scenario_76() {
    let ids = config().with_path("/my app/x").build().unwrap();
    assert_eq!(ids.cookie_path(), "/my%20app/x");
    assert_eq!(parsed(&set(&ids).1).path(), Some("/my%20app/x"));
    let ids = config().with_path("site/x y/").build().unwrap();
    assert_eq!(parsed(&set(&ids).1).path(), Some("/site/x%20y"));
    let ids = config()
        .with_path("/a;Domain=evil.example")
        .build()
        .unwrap();
    let cookie = parsed(&set(&ids).1);
    assert_eq!(cookie.path(), Some("/a%3BDomain%3Devil.example"));
    assert_eq!(cookie.domain(), None);
}

#[test]
fn every_combination_of_options_parses_back_to_its_settings() {
    let same_sites = [SameSite::Strict, SameSite::Lax, SameSite::None];
    let lifetimes = [None, Some(0), Some(3600)];
    let mut combinations = 0;
    for secure in [false, true] {
        for http_only in [false, true] {
            for partitioned in [false, true] {
                for same_site in same_sites {
                    for domain in [None, Some("example.org")] {
                        for path in ["/", "/app"] {
                            for lifetime in lifetimes {
                                combinations += 1;
                                let mut config = config()
                                    .with_secure(secure)
                                    .with_http_only(http_only)
                                    .with_partitioned(partitioned)
                                    .with_same_site(same_site)
                                    .with_path(path)
                                    .with_lifetime(lifetime);
                                if let Some(domain) = domain {
                                    config = config.with_domain(domain);
                                }
                                let ids = config.build().unwrap();
                                let (id, headers) = set(&ids);
                                let cookie = parsed(&headers);
                                let what = format!("{:?}", set_cookies(&headers));
                                assert_eq!(cookie.value(), id.as_str(), "{what}");
                                let want_secure =
                                    secure || partitioned || same_site == SameSite::None;
                                assert_eq!(cookie.secure().unwrap_or(false), want_secure, "{what}");
                                assert_eq!(
                                    cookie.http_only().unwrap_or(false),
                                    http_only,
                                    "{what}"
                                );
                                assert_eq!(
                                    cookie.partitioned().unwrap_or(false),
                                    partitioned,
                                    "{what}"
                                );
                                assert_eq!(
                                    cookie.same_site(),
                                    Some(match same_site {
                                        SameSite::Strict => CookieSameSite::Strict,
                                        SameSite::Lax => CookieSameSite::Lax,
                                        SameSite::None => CookieSameSite::None,
                                    }),
                                    "{what}"
                                );
                                assert_eq!(cookie.domain(), domain, "{what}");
                                assert_eq!(cookie.path(), Some(path), "{what}");
                                match lifetime {
                                    None => {
                                        assert_eq!(cookie.expires(), None, "{what}");
                                        assert_eq!(cookie.max_age(), None, "{what}");
                                    }
                                    Some(0) => {
                                        assert!(cookie.expires_datetime().is_some(), "{what}");
                                        assert_eq!(cookie.max_age(), None, "{what}");
                                    }
                                    Some(n) => {
                                        assert_eq!(
                                            cookie.max_age().unwrap().whole_seconds(),
                                            n as i64,
                                            "{what}"
                                        );
                                        assert!(cookie.expires_datetime().is_some(), "{what}");
                                    }
                                }
                                assert!(headers.contains_key(CACHE_CONTROL));
                            }
                        }
                    }
                }
            }
        }
    }
    assert_eq!(combinations, 2 * 2 * 2 * 3 * 2 * 2 * 3);
}

#[test]
fn a_browser_session_cookie_has_no_expiry_scenario_24() {
    let ids = config()
        .with_lifetime(CookieLifetime::BrowserSession)
        .build()
        .unwrap();
    let cookie = parsed(&set(&ids).1);
    assert_eq!(cookie.expires(), None);
    assert_eq!(cookie.max_age(), None);
    assert!(!ids.refreshes_on_access());
}

#[test]
fn lifetime_zero_expires_in_2038_and_is_not_refreshed_scenario_25_74() {
    let ids = config().with_lifetime(Some(0)).build().unwrap();
    assert_eq!(ids.lifetime(), CookieLifetime::FarFuture);
    let (id, headers) = set(&ids);
    assert_eq!(
        set_cookies(&headers)[0],
        format!(
            "keel_session={id}; HttpOnly; SameSite=Lax; Path=/; Expires=Tue, 19 Jan 2038 00:00:00 GMT"
        )
    );
    assert!(!ids.refreshes_on_access());
}

#[test]
fn a_sliding_lifetime_expires_that_long_after_now_truncated_scenario_26_74() {
    let ids = config().with_lifetime(Some(3600)).build().unwrap();
    assert!(ids.refreshes_on_access());
    let (id, headers) = set(&ids);
    // now = 1700000000.9, fraction truncated, + 3600.
    assert_eq!(
        set_cookies(&headers)[0],
        format!(
            "keel_session={id}; HttpOnly; SameSite=Lax; Path=/; Max-Age=3600; Expires=Tue, 14 Nov 2023 23:13:20 GMT"
        )
    );
}

#[test]
fn a_sliding_cookie_set_now_expires_more_than_55_minutes_ahead_scenario_26() {
    let ids = config().with_lifetime(Some(3600)).build().unwrap();
    let id = ids.mint(&Method::GET).unwrap();
    let mut headers = HeaderMap::new();
    ids.set_cookie(&mut headers, &id, SystemTime::now());
    let expires = parsed(&headers).expires_datetime().unwrap();
    assert!(expires > OffsetDateTime::now_utc() + cookie::time::Duration::minutes(55));
}

#[test]
fn the_cache_defeating_headers_replace_the_applications_scenario_30() {
    let ids = config().build().unwrap();
    let id = ids.mint(&Method::GET).unwrap();
    let mut headers = HeaderMap::new();
    headers.append(CACHE_CONTROL, HeaderValue::from_static("max-age=600"));
    headers.append(CACHE_CONTROL, HeaderValue::from_static("public"));
    headers.insert(PRAGMA, HeaderValue::from_static("cache"));
    headers.insert(
        EXPIRES,
        HeaderValue::from_static("Thu, 01 Jan 2099 00:00:00 GMT"),
    );
    ids.set_cookie(&mut headers, &id, spec_now());
    let all = |name| {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(all(CACHE_CONTROL), ["no-cache=\"Set-Cookie,Set-Cookie2\""]);
    assert_eq!(all(PRAGMA), ["no-cache"]);
    assert_eq!(all(EXPIRES), ["Mon, 26 Jul 1997 05:00:00 GMT"]);
}

#[test]
fn other_set_cookie_headers_are_kept() {
    let ids = config().build().unwrap();
    let id = ids.mint(&Method::GET).unwrap();
    let mut headers = HeaderMap::new();
    headers.append(SET_COOKIE, HeaderValue::from_static("theme=dark; Path=/"));
    headers.append(
        SET_COOKIE,
        HeaderValue::from_static("keel_session=x; Path=/other"),
    );
    ids.set_cookie(&mut headers, &id, spec_now());
    let all = set_cookies(&headers);
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(all[0], "theme=dark; Path=/");
    assert_eq!(all[1], "keel_session=x; Path=/other");
    assert!(all[2].starts_with(&format!("keel_session={id};")));
}

#[test]
fn setting_twice_in_one_response_leaves_only_the_last_cookie() {
    let ids = config().with_domain("example.org").build().unwrap();
    let first = ids.mint(&Method::GET).unwrap();
    let second = ids.mint(&Method::GET).unwrap();
    let mut headers = HeaderMap::new();
    ids.set_cookie(&mut headers, &first, spec_now());
    ids.set_cookie(&mut headers, &second, spec_now());
    assert_eq!(parsed(&headers).value(), second.as_str());
}

#[test]
fn expiring_sends_an_empty_value_with_max_age_zero_for_the_same_cookie() {
    let ids = config()
        .with_path("/app")
        .with_domain("example.org")
        .with_secure(true)
        .with_same_site(SameSite::Strict)
        .build()
        .unwrap();
    let mut headers = HeaderMap::new();
    ids.expire_cookie(&mut headers);
    let cookie = parsed(&headers);
    assert_eq!(cookie.name(), "keel_session");
    assert_eq!(cookie.value(), "");
    assert_eq!(cookie.max_age(), Some(cookie::time::Duration::ZERO));
    assert_eq!(cookie.expires_datetime(), Some(OffsetDateTime::UNIX_EPOCH));
    assert_eq!(cookie.path(), Some("/app"));
    assert_eq!(cookie.domain(), Some("example.org"));
    assert_eq!(cookie.secure(), Some(true));
    assert_eq!(cookie.same_site(), Some(CookieSameSite::Strict));
    assert_eq!(headers[PRAGMA], "no-cache");
}

#[test]
fn expiring_a_partitioned_cookie_is_partitioned_too() {
    let ids = config().with_partitioned(true).build().unwrap();
    let mut headers = HeaderMap::new();
    ids.expire_cookie(&mut headers);
    assert_eq!(parsed(&headers).partitioned(), Some(true));
}

#[test]
fn expiring_then_setting_in_one_response_sends_a_live_cookie_scenario_80() {
    // zope merged the new id into the expired cookie (Max-Age=0 stuck).
    let ids = config().build().unwrap();
    let id = ids.mint(&Method::GET).unwrap();
    let mut headers = HeaderMap::new();
    ids.expire_cookie(&mut headers);
    ids.set_cookie(&mut headers, &id, spec_now());
    let cookie = parsed(&headers);
    assert_eq!(cookie.value(), id.as_str());
    assert_eq!(cookie.max_age(), None);
    assert_eq!(cookie.expires(), None);
}

#[test]
fn an_id_that_is_not_a_cookie_value_is_not_sent_scenario_22() {
    // zope set the cookie to `invalid id` anyway.
    let ids = config().build().unwrap();
    for bad in ["invalid id", "", "a;b", "a\"b", "a,b", "é"] {
        let mut headers = HeaderMap::new();
        ids.set_cookie(&mut headers, &ClientId::from_trusted(bad), spec_now());
        assert!(headers.is_empty(), "{bad:?}");
    }
}

#[test]
fn the_exact_header_with_every_option() {
    let ids = config()
        .with_name("zs")
        .with_domain(".example.org")
        .with_path("/app")
        .with_secure(true)
        .with_same_site(SameSite::Strict)
        .with_partitioned(true)
        .with_lifetime(Some(3600))
        .build()
        .unwrap();
    let (id, headers) = set(&ids);
    assert_eq!(
        set_cookies(&headers)[0],
        format!(
            "zs={id}; HttpOnly; SameSite=Strict; Partitioned; Secure; Path=/app; \
             Domain=example.org; Max-Age=3600; Expires=Tue, 14 Nov 2023 23:13:20 GMT"
        )
    );
}

#[test]
fn invalid_settings_are_named_in_the_error_scenario_82() {
    let cases: Vec<(CookieConfig, &str)> = vec![
        (config().with_name(""), "name"),
        (config().with_name("a b"), "name"),
        (config().with_name("a;b"), "name"),
        (config().with_name("a=b"), "name"),
        (config().with_name("é"), "name"),
        (config().with_name("x".repeat(129)), "name"),
        (config().with_domain("evil.example; Path=/"), "domain"),
        (config().with_domain("a b"), "domain"),
        (config().with_domain("..."), "domain"),
        (config().with_name("__Host-id").with_path("/app"), "name"),
        (
            config().with_name("__Host-id").with_domain("example.org"),
            "name",
        ),
        (
            config().with_lifetime(CookieLifetime::Sliding(Duration::from_millis(500))),
            "lifetime",
        ),
        (
            config().with_lifetime(CookieLifetime::Sliding(Duration::from_secs(u64::MAX))),
            "lifetime",
        ),
    ];
    for (config, setting) in cases {
        let shown = format!("{config:?}");
        match config.build() {
            Err(SessionError::InvalidCookieConfig { setting: got, .. }) => {
                assert_eq!(got, setting, "{shown}")
            }
            other => panic!("{shown}: {other:?}"),
        }
    }
}

#[test]
fn name_prefixes_force_secure() {
    for name in ["__Host-id", "__Secure-id", "__host-id"] {
        let ids = config().with_name(name).build().unwrap();
        assert!(ids.is_secure(), "{name}");
        assert_eq!(parsed(&set(&ids).1).secure(), Some(true), "{name}");
    }
    // zope's namespace characters and RFC 7230 token characters are names.
    for name in ["zope3_cs_2f6c6c80", "service_cookie", "a-b.c!~"] {
        assert!(config().with_name(name).build().is_ok(), "{name}");
    }
}

#[test]
fn a_cookie_copied_from_the_response_is_read_back_scenario_18() {
    let ids = config().with_lifetime(Some(3600)).build().unwrap();
    let (id, headers) = set(&ids);
    let cookie = parsed(&headers);
    let mut request = HeaderMap::new();
    request.insert(
        http::header::COOKIE,
        HeaderValue::from_str(&cookie.stripped().to_string()).unwrap(),
    );
    assert_eq!(ids.read_id(&request), Some(id));
}
