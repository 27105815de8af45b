//! Client ids carried in a cookie: the [`ClientIdManager`] trait the session
//! layer uses, and its cookie implementation, [`CookieClientIdManager`]
//! (zope.session's `CookieClientIdManager`, with its weaknesses fixed).
//!
//! ```
//! use http::{HeaderMap, HeaderValue, Method, header};
//! use keel_session::{ClientIdManager, CookieConfig, KeyRing};
//! use std::time::SystemTime;
//!
//! let ids = CookieConfig::keel(KeyRing::generate()?)
//!     .with_secure(true)
//!     .build()?;
//!
//! // A first request has no cookie: mint an id when the session is first
//! // written, and send it.
//! assert!(ids.read_id(&HeaderMap::new()).is_none());
//! let id = ids.mint(&Method::POST)?;
//! let mut response = HeaderMap::new();
//! ids.set_cookie(&mut response, &id, SystemTime::now());
//! let set_cookie = response[header::SET_COOKIE].to_str().unwrap();
//! assert!(set_cookie.starts_with(&format!("keel_session={id}; HttpOnly; SameSite=Lax; Secure; Path=/")));
//!
//! // The next request carries it back.
//! let mut request = HeaderMap::new();
//! request.insert(header::COOKIE, HeaderValue::from_str(&format!("keel_session={id}")).unwrap());
//! assert_eq!(ids.read_id(&request), Some(id));
//!
//! // A client-chosen id is never adopted.
//! request.insert(header::COOKIE, HeaderValue::from_static("keel_session=mine"));
//! assert_eq!(ids.read_id(&request), None);
//! # Ok::<(), keel_session::SessionError>(())
//! ```
//!
//! The reading rules and the differences from zope.session are documented
//! on [`CookieClientIdManager`].

use std::{fmt, sync::Arc, time::SystemTime};

use cookie::{
    Cookie,
    time::{Duration as CookieDuration, OffsetDateTime},
};
use http::{
    HeaderMap, HeaderValue, Method,
    header::{CACHE_CONTROL, COOKIE, EXPIRES, PRAGMA, SET_COOKIE},
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::{
    ClientId, IdFormat, KeelIdFormat, SessionError, SharedKeyRing, ZopeIdFormat,
    verified_ids::VerifiedIds,
};

/// Cookie values longer than this (in bytes) are ignored without further
/// work. Real ids are far shorter (68 or 54 characters); browsers keep
/// cookies up to about 4 KiB.
pub const MAX_COOKIE_VALUE_LEN: usize = 4096;

/// At most this many cookies named like ours are examined per request.
pub const MAX_CANDIDATES: usize = 8;

/// zope.session's "never expires" date, `Tue, 19 Jan 2038 00:00:00 GMT`.
const FAR_FUTURE_UNIX: i64 = 2_147_472_000;

/// The longest sliding lifetime accepted: 100 years.
const MAX_SLIDING_SECS: u64 = 100 * 365 * 24 * 3600;

/// Characters percent-encoded in a cookie path segment: everything except
/// Python's `quote` safe set (`A-Z a-z 0-9 _ . - ~`, and zope's `+ @`).
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~')
    .remove(b'+')
    .remove(b'@');

/// Reads, mints and sends client ids: what the session layer needs from a
/// request and for a response. Object safe; the session layer holds an
/// `Arc<dyn ClientIdManager>`.
///
/// The methods take `http` header maps, so a tower middleware can call them
/// with `request.headers()` (or `Parts::headers`) and
/// `response.headers_mut()`.
pub trait ClientIdManager: fmt::Debug + Send + Sync {
    /// The validly signed client id the request carries, if any. Never
    /// returns a client-chosen or invalid id (except in a documented
    /// unverified mode such as `thirdparty`). Never panics.
    fn read_id(&self, request_headers: &HeaderMap) -> Option<ClientId>;

    /// A new client id for a request with method `method` that carries
    /// none.
    ///
    /// # Errors
    /// [`SessionError::MissingClientId`] if this manager may not mint an id
    /// for this request; [`SessionError::Random`] if the OS random number
    /// generator fails.
    fn mint(&self, method: &Method) -> Result<ClientId, SessionError>;

    /// Add to the response headers what makes the client send `id` from now
    /// on (`now` is the time the cookie's expiry counts from).
    fn set_cookie(&self, response_headers: &mut HeaderMap, id: &ClientId, now: SystemTime);

    /// Add to the response headers what makes the client forget its id (for
    /// invalidation and logout).
    fn expire_cookie(&self, response_headers: &mut HeaderMap);

    /// Whether the id must be re-sent ([`set_cookie`](Self::set_cookie)) on
    /// every request that uses it (a sliding cookie lifetime).
    fn refreshes_on_access(&self) -> bool;

    /// Whether a validly signed id with no session behind it stays the
    /// client's id ([`IdFormat::adopts_unknown_ids`](crate::IdFormat::adopts_unknown_ids));
    /// default `false`.
    fn adopts_unknown_ids(&self) -> bool {
        false
    }
}

/// The cookie `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SameSite {
    /// Sent with same-site requests only.
    Strict,
    /// Also sent on top-level cross-site navigations (the default).
    #[default]
    Lax,
    /// Sent with every request; forces `Secure`.
    None,
}

impl From<SameSite> for cookie::SameSite {
    fn from(value: SameSite) -> Self {
        match value {
            SameSite::Strict => cookie::SameSite::Strict,
            SameSite::Lax => cookie::SameSite::Lax,
            SameSite::None => cookie::SameSite::None,
        }
    }
}

/// How long the client keeps the cookie: zope.session's `cookieLifetime`.
///
/// `From<Option<u64>>` maps zope's setting: `None` is
/// [`BrowserSession`](CookieLifetime::BrowserSession), `Some(0)`
/// [`FarFuture`](CookieLifetime::FarFuture), `Some(n)`
/// [`Sliding`](CookieLifetime::Sliding) of `n` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CookieLifetime {
    /// No `Expires`/`Max-Age`: the browser drops the cookie when it closes
    /// (the default).
    #[default]
    BrowserSession,
    /// `Expires=Tue, 19 Jan 2038 00:00:00 GMT`, zope's "never" (browsers
    /// may cap it, Chrome at 400 days). The cookie is not re-sent.
    FarFuture,
    /// `Max-Age` and `Expires` this long after the response, re-sent on
    /// every request that uses the id, so the cookie expires this long after
    /// the client's last request. Whole seconds, 1 s to 100 years.
    Sliding(std::time::Duration),
}

impl From<Option<u64>> for CookieLifetime {
    fn from(seconds: Option<u64>) -> Self {
        match seconds {
            None => CookieLifetime::BrowserSession,
            Some(0) => CookieLifetime::FarFuture,
            Some(n) => CookieLifetime::Sliding(std::time::Duration::from_secs(n)),
        }
    }
}

/// Settings of a [`CookieClientIdManager`], with secure defaults; consuming
/// `with_*` methods, then [`build`](CookieConfig::build).
///
/// Defaults: cookie name `keel_session`, path `/`, no domain, `HttpOnly`,
/// `SameSite=Lax`, not `Secure` (turn it on behind HTTPS), not
/// `Partitioned`, browser-session lifetime, ids minted on any method, not
/// third-party.
///
/// ```
/// use keel_session::{CookieConfig, CookieLifetime, KeyRing, SameSite};
///
/// let ids = CookieConfig::keel(KeyRing::generate()?)
///     .with_name("__Host-sid")
///     .with_secure(true)
///     .with_same_site(SameSite::Strict)
///     .with_lifetime(Some(3600)) // zope's cookieLifetime = 3600: sliding
///     .build()?;
/// assert_eq!(ids.cookie_name(), "__Host-sid");
///
/// let zope = CookieConfig::zope("the Zope site's secret")
///     .with_path("/my app")
///     .with_lifetime(CookieLifetime::FarFuture)
///     .build()?;
/// assert_eq!(zope.cookie_path(), "/my%20app");
/// # Ok::<(), keel_session::SessionError>(())
/// ```
#[derive(Clone, Debug)]
pub struct CookieConfig {
    name: String,
    format: Arc<dyn IdFormat>,
    path: String,
    domain: Option<String>,
    secure: bool,
    http_only: bool,
    same_site: SameSite,
    partitioned: bool,
    lifetime: CookieLifetime,
    post_only: bool,
    thirdparty: bool,
}

impl CookieConfig {
    /// The default cookie name.
    pub const DEFAULT_NAME: &'static str = "keel_session";

    /// Default settings, with ids in `format`.
    pub fn new(format: impl IdFormat + 'static) -> Self {
        CookieConfig {
            name: Self::DEFAULT_NAME.to_owned(),
            format: Arc::new(format),
            path: "/".to_owned(),
            domain: None,
            secure: false,
            http_only: true,
            same_site: SameSite::Lax,
            partitioned: false,
            lifetime: CookieLifetime::BrowserSession,
            post_only: false,
            thirdparty: false,
        }
    }

    /// Default settings with Keel's id format signed under `ring`: a
    /// [`KeyRing`](crate::KeyRing), or a [`SharedKeyRing`] to replace the
    /// ring while the manager runs.
    pub fn keel(ring: impl Into<SharedKeyRing>) -> Self {
        Self::new(KeelIdFormat::new(ring))
    }

    /// Default settings with zope.session's id format and `secret`.
    pub fn zope(secret: &str) -> Self {
        Self::new(ZopeIdFormat::new(secret))
    }

    /// The cookie name (zope's `namespace`): an RFC 7230 token of 1 to 128
    /// characters. A `__Host-` prefix forces `Secure` and requires path `/`
    /// and no domain; a `__Secure-` prefix forces `Secure`.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The id format.
    pub fn with_id_format(mut self, format: impl IdFormat + 'static) -> Self {
        self.format = Arc::new(format);
        self
    }

    /// The cookie path from the application root, unencoded (like
    /// `SCRIPT_NAME`): each `/`-separated segment is percent-encoded as
    /// zope.session does (UTF-8; `A-Z a-z 0-9 _ . - ~ + @` kept), empty
    /// segments are dropped, so `"/my app/x"` gives `/my%20app/x` and `""`
    /// gives `/`.
    pub fn with_path(mut self, app_root: impl Into<String>) -> Self {
        self.path = app_root.into();
        self
    }

    /// The `Domain` attribute (ASCII letters, digits, `-` and `.`; punycode
    /// for internationalized names). The empty string means none, as in
    /// zope.
    pub fn with_domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// The `Secure` attribute (default off; forced on by `SameSite=None`,
    /// `Partitioned` and the `__Host-`/`__Secure-` name prefixes).
    pub fn with_secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// The `HttpOnly` attribute (default on).
    pub fn with_http_only(mut self, http_only: bool) -> Self {
        self.http_only = http_only;
        self
    }

    /// The `SameSite` attribute (default `Lax`).
    pub fn with_same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = same_site;
        self
    }

    /// The `Partitioned` attribute (CHIPS; default off; forces `Secure`).
    pub fn with_partitioned(mut self, partitioned: bool) -> Self {
        self.partitioned = partitioned;
        self
    }

    /// How long the client keeps the cookie: a [`CookieLifetime`], or
    /// zope's `cookieLifetime` as an `Option<u64>` of seconds.
    pub fn with_lifetime(mut self, lifetime: impl Into<CookieLifetime>) -> Self {
        self.lifetime = lifetime.into();
        self
    }

    /// zope's `postOnly`: mint new ids only for POST requests (an existing
    /// valid id still works with any method).
    pub fn with_post_only(mut self, post_only: bool) -> Self {
        self.post_only = post_only;
        self
    }

    /// zope's `thirdparty`: a front server (nginx `userid`, Apache
    /// `mod_uid`) issues the cookie. The manager then never mints or sends a
    /// cookie, and **returns the cookie value unverified**: anyone can
    /// choose their id, and so reach any session whose id they know or
    /// guess. Use it only behind a front server that overwrites or verifies
    /// the cookie on every request.
    pub fn with_thirdparty(mut self, thirdparty: bool) -> Self {
        self.thirdparty = thirdparty;
        self
    }

    /// Check the settings and build the manager.
    ///
    /// # Errors
    /// [`SessionError::InvalidCookieConfig`] naming the setting: a name
    /// that is empty, too long or not a token; a domain with other than
    /// letters, digits, `-` and `.`; a `__Host-` name with a domain or a
    /// path other than `/`; a sliding lifetime under 1 s or over 100 years.
    pub fn build(mut self) -> Result<CookieClientIdManager, SessionError> {
        let invalid = |setting, reason| SessionError::InvalidCookieConfig { setting, reason };
        if self.name.is_empty() || self.name.len() > 128 {
            return Err(invalid("name", "must be 1 to 128 characters long"));
        }
        if !self.name.bytes().all(is_tchar) {
            return Err(invalid(
                "name",
                "may only contain letters, digits and !#$%&'*+-.^_`|~",
            ));
        }
        self.path = encode_path(&self.path);
        self.domain = match self.domain.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(domain) => {
                let valid = domain.len() <= 253
                    && domain
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                    && domain.bytes().any(|b| b != b'.');
                if !valid {
                    return Err(invalid(
                        "domain",
                        "must be a host name of ASCII letters, digits, '-' and '.'",
                    ));
                }
                Some(domain.to_owned())
            }
        };
        let lower = self.name.to_ascii_lowercase();
        if lower.starts_with("__host-") {
            if self.domain.is_some() || self.path != "/" {
                return Err(invalid(
                    "name",
                    "a __Host- cookie must have path / and no domain",
                ));
            }
            self.secure = true;
        }
        if lower.starts_with("__secure-") || self.same_site == SameSite::None || self.partitioned {
            self.secure = true;
        }
        if let CookieLifetime::Sliding(lifetime) = self.lifetime
            && (lifetime.as_secs() == 0 || lifetime.as_secs() > MAX_SLIDING_SECS)
        {
            return Err(invalid(
                "lifetime",
                "a sliding lifetime must be 1 second to 100 years",
            ));
        }
        Ok(CookieClientIdManager {
            config: self,
            remembered: Arc::default(),
        })
    }
}

/// zope.session's `CookieClientIdManager`: client ids in a signed cookie.
/// Build one with [`CookieConfig`].
///
/// `Debug` shows the settings but never a secret.
///
/// # Reading the cookie
///
/// Every `Cookie` header of the request is split with the `cookie` crate.
/// Each name/value pair stands alone: a malformed pair elsewhere in the
/// header does not hide ours (zope.session drops the whole header), and
/// bytes that are not UTF-8 are replaced before parsing, so they only spoil
/// the pair they are in. A value in double quotes is unquoted. Values longer
/// than [`MAX_COOKIE_VALUE_LEN`] are skipped before any other work.
///
/// **Duplicate cookies: the first validly signed one wins.** Candidates are
/// taken in header order (several `Cookie` headers in the order received),
/// and the first whose signature verifies is the id; invalid ones are
/// skipped. zope.session takes the *last* cookie of the name even when it is
/// invalid, which lets anyone who can add a cookie (a sibling subdomain, a
/// script, a stale path) log the user out by appending garbage. Browsers
/// send the cookie with the most specific path first and, for equal paths,
/// the oldest first, so "first valid" also prefers the cookie the browser
/// ranks first. Neither rule stops an attacker who can plant a *validly
/// signed* id of their own (cookie tossing); the defences for that are the
/// `__Host-` name prefix (accepted here: it forces `Secure`, and requires
/// path `/` and no domain) and cycling the id at login, which the session
/// layer does. At most [`MAX_CANDIDATES`] cookies of our name are examined,
/// which bounds the HMAC work a single request can cause.
///
/// A request with a single `Cookie` header (of up to 256 bytes) that the
/// same thread saw carry a verified id lately is answered from memory,
/// without parsing: a header always parses to the same id. The header is
/// found by a randomly seeded hash and compared in constant time; only
/// headers whose id verified are remembered (up to 4,096 per thread), and
/// all are forgotten when the id format's [epoch](IdFormat::epoch) changes
/// (a key was retired from its [`SharedKeyRing`]).
///
/// # Differences from zope.session
///
/// - Strict mode as in zope, but verification is constant-time, ids have 128
///   bits from the OS CSPRNG, and the default format signs with
///   HMAC-SHA256 under a rotating [`KeyRing`](crate::KeyRing).
/// - Duplicates: first valid wins (above), not last wins; a syntax error in
///   another cookie does not drop ours.
/// - `HttpOnly` and `SameSite=Lax` are on by default; `SameSite`,
///   `Partitioned` and `Max-Age` are supported. `SameSite=None` and
///   `Partitioned` force `Secure`.
/// - A sliding lifetime sends `Max-Age` as well as `Expires`.
/// - Setting the cookie replaces a `Set-Cookie` for the same cookie already
///   in the response instead of merging attributes into it, so expiring and
///   then setting a cookie in one response sends a live cookie (zope sent a
///   new id with the old `Max-Age=0`).
/// - The id must consist of cookie-value characters or it is not sent
///   (zope set any value, even `invalid id`).
/// - `thirdparty` mode ignores an empty cookie value (zope returned `""`,
///   which would put every such client in one session).
/// - [`ClientIdManager::expire_cookie`] exists (zope had no API for it).
/// - The cookie path is configured ([`CookieConfig::with_path`]), not taken
///   from `SCRIPT_NAME` or virtual hosting, which tower has no notion of.
#[derive(Clone, Debug)]
pub struct CookieClientIdManager {
    /// Validated; `path` is already encoded.
    config: CookieConfig,
    /// `Cookie` headers whose id verified lately, under the format's epoch:
    /// a header always parses to the same id, so a returning client's header
    /// is not parsed again.
    remembered: Arc<VerifiedIds>,
}

impl CookieClientIdManager {
    /// The cookie name.
    pub fn cookie_name(&self) -> &str {
        &self.config.name
    }

    /// The `Path` attribute, percent-encoded.
    pub fn cookie_path(&self) -> &str {
        &self.config.path
    }

    /// The `Domain` attribute, if any.
    pub fn cookie_domain(&self) -> Option<&str> {
        self.config.domain.as_deref()
    }

    /// The id format.
    pub fn id_format(&self) -> &dyn IdFormat {
        self.config.format.as_ref()
    }

    /// The cookie lifetime.
    pub fn lifetime(&self) -> CookieLifetime {
        self.config.lifetime
    }

    /// Whether the cookie carries `Secure` (set, or forced by another
    /// setting).
    pub fn is_secure(&self) -> bool {
        self.config.secure
    }

    /// Whether this manager is in zope's unverified `thirdparty` mode.
    pub fn is_thirdparty(&self) -> bool {
        self.config.thirdparty
    }

    /// The cookie with our attributes (no expiry yet) and `value`.
    fn cookie<'a>(&'a self, value: &'a str) -> Cookie<'a> {
        let config = &self.config;
        let mut cookie = Cookie::build((config.name.as_str(), value))
            .path(config.path.as_str())
            .http_only(config.http_only)
            .secure(config.secure)
            .same_site(config.same_site.into())
            .build();
        if config.partitioned {
            cookie.set_partitioned(true);
        }
        if let Some(domain) = &config.domain {
            cookie.set_domain(domain.as_str());
        }
        cookie
    }

    /// Whether a `Set-Cookie` value already in a response is for the same
    /// cookie as ours (name, path and domain).
    fn is_same_cookie(&self, value: &HeaderValue) -> bool {
        let Ok(text) = value.to_str() else {
            return false;
        };
        let Ok(cookie) = Cookie::parse(text) else {
            return false;
        };
        cookie.name() == self.config.name
            && cookie.path() == Some(self.config.path.as_str())
            && cookie.domain()
                == self
                    .config
                    .domain
                    .as_deref()
                    .map(|domain| domain.trim_start_matches('.'))
    }

    /// Put `cookie` in the response in place of any `Set-Cookie` for the
    /// same cookie, and replace the three cache-defeating headers.
    fn send(&self, headers: &mut HeaderMap, cookie: &Cookie<'_>) {
        let Ok(value) = HeaderValue::try_from(cookie.to_string()) else {
            // NOTE: unreachable in practice: the name is a token, the path
            // percent-encoded, the domain checked and the value made of
            // cookie-octets, so the header has visible ASCII only.
            tracing::error!(cookie = %self.config.name, "cannot render the client id cookie as a header");
            return;
        };
        if headers.contains_key(SET_COOKIE) {
            let kept: Vec<HeaderValue> = headers
                .get_all(SET_COOKIE)
                .iter()
                .filter(|existing| !self.is_same_cookie(existing))
                .cloned()
                .collect();
            headers.remove(SET_COOKIE);
            for existing in kept {
                headers.append(SET_COOKIE, existing);
            }
        }
        headers.append(SET_COOKIE, value);
        // zope.session's cache-defeating headers, replacing (not adding to)
        // whatever the application set.
        headers.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("no-cache=\"Set-Cookie,Set-Cookie2\""),
        );
        headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
        headers.insert(
            EXPIRES,
            HeaderValue::from_static("Mon, 26 Jul 1997 05:00:00 GMT"),
        );
    }

    /// The first id in `cookie_headers` that this manager accepts, if any
    /// (zope's rules: the first verified value of our cookie; at most
    /// `MAX_CANDIDATES` values of it are looked at).
    fn parse_cookie_headers<'a>(
        &self,
        cookie_headers: impl IntoIterator<Item = &'a HeaderValue>,
    ) -> Option<ClientId> {
        let mut candidates = 0;
        for header in cookie_headers {
            // NOTE: bytes that are not UTF-8 become U+FFFD; that only spoils
            // the pair they are in (an id is ASCII). No copy for valid input,
            // which `from_utf8` checks a word at a time (`HeaderValue::to_str`
            // and `from_utf8_lossy` go byte by byte).
            let text = match std::str::from_utf8(header.as_bytes()) {
                Ok(text) => std::borrow::Cow::Borrowed(text),
                Err(_) => String::from_utf8_lossy(header.as_bytes()),
            };
            for pair in Cookie::split_parse(text.as_ref()) {
                let Ok(cookie) = pair else { continue };
                if cookie.name() != self.config.name {
                    continue;
                }
                candidates += 1;
                if candidates > MAX_CANDIDATES {
                    return None;
                }
                let value = cookie.value_trimmed();
                if value.len() > MAX_COOKIE_VALUE_LEN {
                    continue;
                }
                if self.config.thirdparty {
                    if !value.is_empty() {
                        return Some(ClientId::from_trusted(value));
                    }
                } else if let Some(id) = self.config.format.parse(value) {
                    return Some(id);
                }
            }
        }
        None
    }

    fn warn_thirdparty(&self) {
        tracing::warn!(
            cookie = %self.config.name,
            "the client id manager is in thirdparty mode; not setting the cookie"
        );
    }
}

impl ClientIdManager for CookieClientIdManager {
    /// A request with one `Cookie` header that this thread saw carry a
    /// verified id lately is answered from memory; any other is parsed.
    fn read_id(&self, request_headers: &HeaderMap) -> Option<ClientId> {
        let mut cookie_headers = request_headers.get_all(COOKIE).iter();
        let (Some(only), None) = (cookie_headers.next(), cookie_headers.next()) else {
            return self.parse_cookie_headers(request_headers.get_all(COOKIE));
        };
        // NOTE: read before verifying, so an answer under a ring replaced
        // meanwhile is remembered under the old epoch and never returned.
        let epoch = self.config.format.epoch();
        if let Some(id) = self.remembered.get(only.as_bytes(), epoch) {
            return Some(id);
        }
        let id = self.parse_cookie_headers([only])?;
        // NOTE: only verified ids are remembered; thirdparty ids are not.
        if !self.config.thirdparty {
            self.remembered.remember(only.as_bytes(), &id, epoch);
        }
        Some(id)
    }

    fn mint(&self, method: &Method) -> Result<ClientId, SessionError> {
        if self.config.thirdparty {
            return Err(SessionError::MissingClientId {
                reason: "thirdparty mode: only the front server issues client ids",
            });
        }
        if self.config.post_only && !method.as_str().eq_ignore_ascii_case("POST") {
            return Err(SessionError::MissingClientId {
                reason: "post_only: new client ids are only minted for POST requests",
            });
        }
        self.config.format.mint()
    }

    fn set_cookie(&self, response_headers: &mut HeaderMap, id: &ClientId, now: SystemTime) {
        if self.config.thirdparty {
            self.warn_thirdparty();
            return;
        }
        if id.as_str().is_empty() || !id.as_str().bytes().all(is_cookie_octet) {
            tracing::error!(
                cookie = %self.config.name,
                "refusing to send a client id that is not a valid cookie value"
            );
            return;
        }
        let mut cookie = self.cookie(id.as_str());
        match self.config.lifetime {
            CookieLifetime::BrowserSession => {}
            CookieLifetime::FarFuture => {
                cookie.set_expires(
                    OffsetDateTime::UNIX_EPOCH + CookieDuration::seconds(FAR_FUTURE_UNIX),
                );
            }
            CookieLifetime::Sliding(lifetime) => {
                // NOTE: at most 100 years (checked in `build`), so the
                // conversion and the additions below cannot overflow.
                let secs = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
                cookie.set_max_age(CookieDuration::seconds(secs));
                let now = now
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |since| since.as_secs());
                let expires = i64::try_from(now)
                    .ok()
                    .and_then(|now| now.checked_add(secs))
                    .and_then(|at| OffsetDateTime::from_unix_timestamp(at).ok());
                if let Some(expires) = expires {
                    cookie.set_expires(expires);
                }
            }
        }
        self.send(response_headers, &cookie);
    }

    fn expire_cookie(&self, response_headers: &mut HeaderMap) {
        if self.config.thirdparty {
            self.warn_thirdparty();
            return;
        }
        let mut cookie = self.cookie("");
        cookie.set_max_age(CookieDuration::ZERO);
        cookie.set_expires(OffsetDateTime::UNIX_EPOCH);
        self.send(response_headers, &cookie);
    }

    fn refreshes_on_access(&self) -> bool {
        !self.config.thirdparty && matches!(self.config.lifetime, CookieLifetime::Sliding(_))
    }

    fn adopts_unknown_ids(&self) -> bool {
        self.config.format.adopts_unknown_ids()
    }
}

/// `app_root` as a cookie path, encoded as zope.session does (§2.7).
fn encode_path(app_root: &str) -> String {
    let mut path = String::new();
    for segment in app_root.split('/').filter(|segment| !segment.is_empty()) {
        path.push('/');
        path.extend(utf8_percent_encode(segment, PATH_SEGMENT));
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

/// RFC 7230 `tchar`: what a cookie name may contain.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 6265 `cookie-octet`: what an unquoted cookie value may contain.
fn is_cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded_like_zope() {
        assert_eq!(encode_path(""), "/");
        assert_eq!(encode_path("/"), "/");
        assert_eq!(encode_path("/app"), "/app");
        assert_eq!(encode_path("/app/"), "/app");
        assert_eq!(encode_path("/my app/x"), "/my%20app/x");
        assert_eq!(encode_path("site/x y"), "/site/x%20y");
        assert_eq!(encode_path("/a+b@c~d_e.f-g"), "/a+b@c~d_e.f-g");
        assert_eq!(encode_path("/é;x=1"), "/%C3%A9%3Bx%3D1");
        assert_eq!(encode_path("/a\r\nb"), "/a%0D%0Ab");
    }

    #[test]
    fn cookie_octets_exclude_separators_and_controls() {
        for b in [b' ', b'"', b',', b';', b'\\', 0x7F, 0x00, b'\n', 0x80] {
            assert!(!is_cookie_octet(b), "{b:#x}");
        }
        for b in b"AZaz09-_.!#+/:<=>?@[]^`{|}~" {
            assert!(is_cookie_octet(*b), "{b:#x}");
        }
    }

    #[test]
    fn zope_cookie_lifetime_maps_onto_the_enum() {
        assert_eq!(CookieLifetime::from(None), CookieLifetime::BrowserSession);
        assert_eq!(CookieLifetime::from(Some(0)), CookieLifetime::FarFuture);
        assert_eq!(
            CookieLifetime::from(Some(3600)),
            CookieLifetime::Sliding(std::time::Duration::from_secs(3600))
        );
    }

    #[test]
    fn the_far_future_date_is_zopes() {
        let at = OffsetDateTime::UNIX_EPOCH + CookieDuration::seconds(FAR_FUTURE_UNIX);
        let mut cookie = Cookie::new("a", "b");
        cookie.set_expires(at);
        assert_eq!(
            cookie.to_string(),
            "a=b; Expires=Tue, 19 Jan 2038 00:00:00 GMT"
        );
    }
}
