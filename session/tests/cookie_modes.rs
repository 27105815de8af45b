//! zope's `postOnly` and `thirdparty` modes. `post_only` refuses to *mint*
//! on anything but POST (an existing valid id works with any method).
//! `thirdparty` never mints or sends a cookie (logging a warning instead),
//! and returns the front server's cookie value unverified.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use http::{HeaderMap, HeaderValue, Method, header::COOKIE};
use keel_session::{ClientId, ClientIdManager, CookieConfig, KeyRing, SessionError};

fn request_with(cookie: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(COOKIE, HeaderValue::from_str(cookie).unwrap());
    headers
}

#[test]
fn post_only_refuses_to_mint_on_get_and_put_scenario_12_77() {
    let ids = CookieConfig::keel(KeyRing::generate().unwrap())
        .with_post_only(true)
        .build()
        .unwrap();
    for method in [Method::GET, Method::PUT, Method::HEAD, Method::DELETE] {
        assert!(
            matches!(ids.mint(&method), Err(SessionError::MissingClientId { .. })),
            "{method}"
        );
    }
}

#[test]
fn post_only_mints_on_post_in_any_case_scenario_13_77() {
    let ids = CookieConfig::keel(KeyRing::generate().unwrap())
        .with_post_only(true)
        .build()
        .unwrap();
    assert!(ids.mint(&Method::POST).is_ok());
    let lowercase = Method::from_bytes(b"post").unwrap();
    assert!(ids.mint(&lowercase).is_ok());
}

#[test]
fn post_only_still_reads_a_valid_id_on_get_scenario_77() {
    let ids = CookieConfig::keel(KeyRing::generate().unwrap())
        .with_post_only(true)
        .build()
        .unwrap();
    let id = ids.mint(&Method::POST).unwrap();
    assert_eq!(
        ids.read_id(&request_with(&format!("keel_session={id}"))),
        Some(id)
    );
}

#[test]
fn thirdparty_never_mints_scenario_14_78() {
    let ids = CookieConfig::keel(KeyRing::generate().unwrap())
        .with_thirdparty(true)
        .build()
        .unwrap();
    for method in [Method::GET, Method::POST] {
        let err = ids.mint(&method).unwrap_err();
        assert!(matches!(err, SessionError::MissingClientId { .. }));
        assert!(err.to_string().contains("thirdparty"), "{err}");
    }
    assert_eq!(ids.read_id(&HeaderMap::new()), None);
}

#[test]
fn thirdparty_returns_the_value_unverified_scenario_21_78() {
    let ids = CookieConfig::keel(KeyRing::generate().unwrap())
        .with_name("uid")
        .with_thirdparty(true)
        .build()
        .unwrap();
    assert!(ids.is_thirdparty());
    let id = ids
        .read_id(&request_with("uid=AQAAf0Y4gjgAAAQ3AwMEAg=="))
        .unwrap();
    assert_eq!(id.as_str(), "AQAAf0Y4gjgAAAQ3AwMEAg==");
    let id = ids.read_id(&request_with("uid=anything at all")).unwrap();
    assert_eq!(id.as_str(), "anything at all");
}

#[test]
fn thirdparty_ignores_an_empty_value() {
    // zope returned "", putting every such client in one session.
    let ids = CookieConfig::keel(KeyRing::generate().unwrap())
        .with_name("uid")
        .with_thirdparty(true)
        .build()
        .unwrap();
    assert_eq!(ids.read_id(&request_with("uid=")), None);
    assert_eq!(ids.read_id(&request_with("uid=\"\"")), None);
    let id = ids.read_id(&request_with("uid=; uid=abc")).unwrap();
    assert_eq!(id.as_str(), "abc");
}

/// Counts WARN events.
struct WarnCounter(Arc<AtomicUsize>);

impl tracing::Subscriber for WarnCounter {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn thirdparty_set_cookie_logs_one_warning_and_sets_nothing_scenario_27_78() {
    let ids = CookieConfig::keel(KeyRing::generate().unwrap())
        .with_thirdparty(true)
        .with_lifetime(Some(3600))
        .build()
        .unwrap();
    assert!(!ids.refreshes_on_access(), "lifetime is ignored");
    let warnings = Arc::new(AtomicUsize::new(0));
    let mut headers = HeaderMap::new();
    tracing::subscriber::with_default(WarnCounter(warnings.clone()), || {
        ids.set_cookie(
            &mut headers,
            &ClientId::from_trusted("2345"),
            SystemTime::now(),
        );
    });
    assert_eq!(warnings.load(Ordering::SeqCst), 1);
    assert!(headers.is_empty());
    ids.expire_cookie(&mut headers);
    assert!(headers.is_empty());
}

#[test]
fn a_sliding_lifetime_is_refreshed_on_access_and_others_are_not_scenario_10_11() {
    let with = |lifetime: Option<u64>| {
        CookieConfig::keel(KeyRing::generate().unwrap())
            .with_lifetime(lifetime)
            .build()
            .unwrap()
            .refreshes_on_access()
    };
    assert!(!with(None));
    assert!(!with(Some(0)));
    assert!(with(Some(3600)));
    assert!(with(Some(1)));
    let ids = CookieConfig::keel(KeyRing::generate().unwrap())
        .with_lifetime(keel_session::CookieLifetime::Sliding(Duration::from_secs(
            60,
        )))
        .build()
        .unwrap();
    assert!(ids.refreshes_on_access());
}

#[test]
fn the_manager_is_usable_as_a_trait_object() {
    let ids: Arc<dyn ClientIdManager> =
        Arc::new(CookieConfig::zope("some_secret").build().unwrap());
    let id = ids.mint(&Method::GET).unwrap();
    assert_eq!(id.as_str().len(), 54);
    assert_eq!(
        ids.read_id(&request_with(&format!("keel_session={id}"))),
        Some(id)
    );
}
