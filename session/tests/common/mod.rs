//! A small harness: sessions over RAM containers with a manual clock, driven
//! request by request, with cookies carried like a browser would.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, header};
use keel_session::{ContainerRegistry, CookieConfig, KeyRing, Session, SessionManager};
use keel_store::{ExpiryPolicy, ManualClock, RamContainer, SessionContainer};

pub const COOKIE: &str = "keel_session";

pub struct Harness {
    pub manager: SessionManager,
    pub clock: ManualClock,
    pub container: Arc<RamContainer>,
}

impl Harness {
    /// One RAM container (timeout 100, resolution 10) as the default.
    pub fn new() -> Self {
        Self::with_config(CookieConfig::keel(KeyRing::generate().unwrap()))
    }

    pub fn with_config(config: CookieConfig) -> Self {
        let clock = ManualClock::new(1_000_000);
        let container = Arc::new(
            RamContainer::new()
                .with_expiry(
                    ExpiryPolicy::default()
                        .with_timeout(100)
                        .with_resolution(10),
                )
                .with_clock(Arc::new(clock.clone())),
        );
        let registry =
            ContainerRegistry::new().with_default(container.clone() as Arc<dyn SessionContainer>);
        Harness {
            manager: SessionManager::new(config.build().unwrap(), registry),
            clock,
            container,
        }
    }

    pub fn with_registry(registry: ContainerRegistry, clock: ManualClock) -> Self {
        let config = CookieConfig::keel(KeyRing::generate().unwrap());
        Harness {
            manager: SessionManager::new(config.build().unwrap(), registry),
            clock,
            container: Arc::new(RamContainer::new()),
        }
    }

    /// Begin a request carrying `cookie` (an id) if given.
    pub fn request(&self, method: Method, cookie: Option<&str>) -> Session {
        let mut headers = HeaderMap::new();
        if let Some(id) = cookie {
            headers.insert(
                header::COOKIE,
                HeaderValue::from_str(&format!("{COOKIE}={id}")).unwrap(),
            );
        }
        self.manager.session_for(&method, &headers)
    }

    pub fn get(&self, cookie: Option<&str>) -> Session {
        self.request(Method::GET, cookie)
    }

    pub fn post(&self, cookie: Option<&str>) -> Session {
        self.request(Method::POST, cookie)
    }
}

/// What the response of a committed request says about the cookie.
#[derive(Debug, PartialEq, Eq)]
pub enum Cookie {
    None,
    Set(String),
    Expired,
}

/// Commit `session` like the layer does and return the response's cookie.
pub fn finish(session: &Session) -> Cookie {
    session.commit().unwrap();
    response_cookie(session)
}

/// The Set-Cookie the response of `session` carries.
pub fn response_cookie(session: &Session) -> Cookie {
    let mut headers = HeaderMap::new();
    session.write_cookie_headers(&mut headers);
    let Some(value) = headers.get(header::SET_COOKIE) else {
        return Cookie::None;
    };
    let parsed = cookie::Cookie::parse(value.to_str().unwrap().to_owned()).unwrap();
    assert_eq!(parsed.name(), COOKIE);
    if parsed.max_age() == Some(cookie::time::Duration::ZERO) {
        Cookie::Expired
    } else {
        Cookie::Set(parsed.value().to_owned())
    }
}

/// Run one request that sets `package`/`name` to `value`; returns the id in
/// use afterwards.
pub fn write(h: &Harness, cookie: Option<&str>, package: &str, name: &str, value: u64) -> String {
    let s = h.post(cookie);
    s.pkg(package).unwrap().insert(name, value).unwrap();
    match finish(&s) {
        Cookie::Set(id) => id,
        Cookie::None => cookie.unwrap().to_owned(),
        Cookie::Expired => panic!("unexpected cookie expiry"),
    }
}

/// Read `package`/`name` in a fresh read-only request.
pub fn read(h: &Harness, cookie: Option<&str>, package: &str, name: &str) -> Option<u64> {
    let s = h.get(cookie);
    let value = s
        .get(package)
        .unwrap()
        .and_then(|data| data.get::<u64>(name).unwrap());
    s.commit().unwrap();
    value
}
