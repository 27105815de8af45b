//! Cross-site request forgery protection: a random token kept in the session
//! ([`Session::csrf_token`]), and an opt-in tower layer ([`CsrfLayer`]) that
//! refuses requests with unsafe methods unless they carry it.
//!
//! As in Django (`CSRF_USE_SESSIONS`) and Rails (`protect_from_forgery`), the
//! token lives in the session, on the server: a page renders it into its
//! forms (or a script sends it in a header), and a cross-site request cannot,
//! because another site can neither read the page nor the session.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use keel_store::ClientKey;
use keel_txn::Transaction;
use subtle::ConstantTimeEq;
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    CommitFailure, ContainerRegistry, Session, SessionError, default_error_response,
    key_ring::fill_random,
};

/// The package id, reserved for Keel, under which a session keeps its CSRF
/// token (name `"token"`).
pub const CSRF_PACKAGE: &str = "keel.csrf";

/// The name of the token in [`CSRF_PACKAGE`].
const TOKEN_NAME: &str = "token";

/// The request header that carries the token (`X-CSRF-Token`; header names
/// are case-insensitive).
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The field of an `application/x-www-form-urlencoded` body that carries the
/// token.
pub const CSRF_FORM_FIELD: &str = "csrf_token";

/// Random bytes in a token: 256 bits from the OS CSPRNG.
const TOKEN_BYTES: usize = 32;

/// The body [`CsrfLayer`] buffers by default to find the form field: the
/// [`SessionLayer`](crate::SessionLayer)'s default, so that a form it accepts
/// is never refused here for its size.
const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// A session's CSRF token: 256 random bits from the operating system's
/// CSPRNG, as 43 characters of unpadded base64url (safe in an HTML attribute,
/// a form field and a header without escaping).
///
/// [`Display`](fmt::Display) and [`as_str`](CsrfToken::as_str) give the
/// token, to render into a page; `Debug` prints a placeholder, so tokens do
/// not leak into logs. Equality compares in constant time.
///
/// ```
/// # use keel_session::doc_support::session_for_docs;
/// let session = session_for_docs();
/// let token = session.csrf_token()?;
/// assert_eq!(token.as_str().len(), 43);
/// assert_eq!(format!("{token:?}"), "CsrfToken(<redacted>)");
/// let form = format!(r#"<input type="hidden" name="csrf_token" value="{token}">"#);
/// # let _ = form;
/// # Ok::<(), keel_session::SessionError>(())
/// ```
#[derive(Clone, Eq)]
pub struct CsrfToken(String);

impl CsrfToken {
    /// A fresh token from the OS CSPRNG.
    fn generate() -> Result<Self, SessionError> {
        let mut raw = [0u8; TOKEN_BYTES];
        fill_random(&mut raw)?;
        Ok(CsrfToken(URL_SAFE_NO_PAD.encode(raw)))
    }

    /// The token, to render into a form or send in the `X-CSRF-Token` header.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl PartialEq for CsrfToken {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl fmt::Debug for CsrfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CsrfToken(<redacted>)")
    }
}

impl fmt::Display for CsrfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Session {
    /// The session's CSRF token, minted on first use and kept in the session
    /// (package [`CSRF_PACKAGE`]) until [`cycle_id`](Session::cycle_id) or
    /// [`invalidate`](Session::invalidate) drops it; the next call then mints
    /// a new one.
    ///
    /// Created lazily like the session itself: on a request without a
    /// session, this creates one (minting a client id, sent as a cookie once
    /// the transaction commits), as [`pkg`](Session::pkg) does. Render it into
    /// every form that changes state (field [`CSRF_FORM_FIELD`]) or send it in
    /// the [`CSRF_HEADER`] header, and put those routes behind a
    /// [`CsrfLayer`].
    ///
    /// ```
    /// # use keel_session::doc_support::session_for_docs;
    /// let session = session_for_docs();
    /// let token = session.csrf_token()?;
    /// assert!(session.client_key().is_some(), "the session was created");
    /// assert_eq!(session.csrf_token()?, token, "the same token for the session");
    /// assert!(session.verify_csrf_token(token.as_str())?);
    ///
    /// session.cycle_id()?; // at login
    /// assert!(!session.verify_csrf_token(token.as_str())?);
    /// assert_ne!(session.csrf_token()?, token);
    /// # Ok::<(), keel_session::SessionError>(())
    /// ```
    ///
    /// # Errors
    /// [`SessionError::Random`] if the OS random number generator fails;
    /// otherwise as for [`pkg`](Session::pkg) ([`SessionError::NoContainer`]
    /// if no container serves [`CSRF_PACKAGE`],
    /// [`SessionError::MissingClientId`] if a session is needed but no id may
    /// be minted here).
    pub fn csrf_token(&self) -> Result<CsrfToken, SessionError> {
        if let Some(token) = self.stored_csrf_token()? {
            return Ok(CsrfToken(token));
        }
        let token = CsrfToken::generate()?;
        self.pkg(CSRF_PACKAGE)?
            .insert(TOKEN_NAME, token.as_str().to_owned())?;
        Ok(token)
    }

    /// Whether `presented` is this session's CSRF token, compared in constant
    /// time. `false` when the request has no session or the session has no
    /// token yet. Never creates anything (it reads like
    /// [`value`](Session::value)).
    ///
    /// [`CsrfLayer`] calls it for each request with an unsafe method; call it
    /// yourself to check a token that arrives some other way.
    ///
    /// ```
    /// # use keel_session::doc_support::session_for_docs;
    /// let session = session_for_docs();
    /// assert!(!session.verify_csrf_token("guess")?);
    /// assert!(session.client_key().is_none(), "still no session");
    /// let token = session.csrf_token()?;
    /// assert!(session.verify_csrf_token(token.as_str())?);
    /// # Ok::<(), keel_session::SessionError>(())
    /// ```
    ///
    /// # Errors
    /// As for [`value`](Session::value): [`SessionError::NoContainer`] if no
    /// container serves [`CSRF_PACKAGE`], [`SessionError::Store`] if it fails.
    pub fn verify_csrf_token(&self, presented: &str) -> Result<bool, SessionError> {
        self.verify_csrf_bytes(presented.as_bytes())
    }

    fn verify_csrf_bytes(&self, presented: &[u8]) -> Result<bool, SessionError> {
        let Some(stored) = self.stored_csrf_token()? else {
            return Ok(false);
        };
        // NOTE: `ct_eq` answers at once for a different length; the length
        // of a token is public, its bytes are compared in constant time.
        Ok(!stored.is_empty() && bool::from(stored.as_bytes().ct_eq(presented)))
    }

    fn stored_csrf_token(&self) -> Result<Option<String>, SessionError> {
        self.value::<String>(CSRF_PACKAGE, TOKEN_NAME)
    }
}

/// Drop the CSRF token of the session `key` (just given a new id), so that
/// the next [`Session::csrf_token`] mints a new one. Nothing to do when no
/// container serves the package, or the session has no token.
pub(crate) fn forget_token(
    containers: &ContainerRegistry,
    tx: &mut Transaction,
    key: &ClientKey,
) -> Result<(), SessionError> {
    match containers.lookup(CSRF_PACKAGE) {
        Ok(container) => {
            container.remove(tx, key, CSRF_PACKAGE, TOKEN_NAME)?;
            Ok(())
        }
        Err(SessionError::NoContainer { .. }) => Ok(()),
        Err(err) => Err(err),
    }
}

/// A tower [`Layer`] that refuses requests with unsafe methods (POST, PUT,
/// PATCH, DELETE and any other method that is not GET, HEAD, OPTIONS or
/// TRACE) unless they carry the session's CSRF token
/// ([`Session::csrf_token`]).
///
/// - The token is read from the [`CSRF_HEADER`] header (`X-CSRF-Token`) or,
///   without that header, from the [`CSRF_FORM_FIELD`] field (`csrf_token`)
///   of an `application/x-www-form-urlencoded` body. The header takes
///   precedence: when it is present, the body is not read. The body (buffered
///   up to 1 MiB, see [`with_max_body_bytes`](CsrfLayer::with_max_body_bytes))
///   reaches the inner service unchanged. Other bodies (JSON, multipart) must
///   use the header.
/// - The token is compared with the session's in constant time
///   ([`Session::verify_csrf_token`]). A missing or wrong token, or a request
///   without a session, gets 403 with the JSON body of
///   [`SessionError::CsrfTokenMismatch`], and the inner service is not
///   called.
/// - Safe methods pass untouched, and the check never creates a session.
///
/// Opt in per route: put it inside a [`SessionLayer`](crate::SessionLayer)
/// (it needs the request's [`Session`]; without one it answers 500), around
/// the routes of pages and forms. Routes outside it (a JSON API
/// authenticated otherwise) work as before.
///
/// ```
/// use std::sync::Arc;
/// use axum::{Router, routing::{get, post}};
/// use keel_session::{
///     ContainerRegistry, CookieConfig, CsrfLayer, KeyRing, Session, SessionError,
///     SessionLayer, SessionManager,
/// };
/// use keel_store::RamContainer;
///
/// async fn form(session: Session) -> Result<String, SessionError> {
///     let token = session.csrf_token()?;
///     Ok(format!(
///         r#"<form method="post" action="/save"><input type="hidden" name="csrf_token" value="{token}"><button>Save</button></form>"#
///     ))
/// }
///
/// async fn save(session: Session) -> Result<&'static str, SessionError> {
///     session.pkg("my.app")?.insert("saved", true)?; // reached only with the token
///     Ok("saved")
/// }
///
/// # fn main() -> Result<(), SessionError> {
/// let ids = CookieConfig::keel(KeyRing::generate()?).build()?;
/// let containers = ContainerRegistry::new().with_default(Arc::new(RamContainer::new()));
/// let app: Router = Router::new()
///     .route("/", get(form))
///     .route("/save", post(save))
///     .route_layer(CsrfLayer::new()) // inside the session layer
///     .layer(SessionLayer::new(SessionManager::new(ids, containers)));
/// # let _ = app;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct CsrfLayer {
    max_body_bytes: usize,
}

impl Default for CsrfLayer {
    fn default() -> Self {
        CsrfLayer::new()
    }
}

impl CsrfLayer {
    /// A layer that buffers form bodies up to 1 MiB to find the token.
    pub fn new() -> Self {
        CsrfLayer {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }

    /// Buffer form bodies up to `bytes` to find the token; a larger form
    /// without the header gets 413. Other bodies are never buffered here.
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }
}

impl<S> Layer<S> for CsrfLayer {
    type Service = CsrfService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CsrfService {
            inner,
            max_body_bytes: self.max_body_bytes,
        }
    }
}

/// The service [`CsrfLayer`] wraps around an inner service.
#[derive(Clone)]
pub struct CsrfService<S> {
    inner: S,
    max_body_bytes: usize,
}

impl<S> fmt::Debug for CsrfService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsrfService")
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CsrfService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body + From<Bytes> + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: std::error::Error + Send + Sync + 'static,
    ResBody: From<Bytes> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The inner service was driven to readiness by `poll_ready`: take
        // that one and leave a fresh clone in its place.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let max_body_bytes = self.max_body_bytes;
        Box::pin(async move {
            if request.method().is_safe() {
                return inner.call(request).await;
            }
            match check(request, max_body_bytes).await {
                Ok(request) => inner.call(request).await,
                Err(response) => Ok(response.map(ResBody::from)),
            }
        })
    }
}

/// The request, given back whole, if it carries its session's token; else
/// the response to send instead.
async fn check<ReqBody>(
    request: Request<ReqBody>,
    max_body_bytes: usize,
) -> Result<Request<ReqBody>, Response<Bytes>>
where
    ReqBody: Body + From<Bytes>,
    ReqBody::Error: std::error::Error + Send + Sync + 'static,
{
    let Some(session) = Session::from_extensions(request.extensions()) else {
        return Err(no_session_response());
    };
    let (request, presented) = if let Some(value) = request.headers().get(CSRF_HEADER) {
        let presented = value.as_bytes().to_vec();
        (request, Some(presented))
    } else if is_form(request.headers()) {
        let (parts, body) = request.into_parts();
        let body = read_body(body, max_body_bytes).await?;
        let presented = form_field(&body, CSRF_FORM_FIELD);
        (Request::from_parts(parts, ReqBody::from(body)), presented)
    } else {
        (request, None)
    };
    let reason = match presented {
        None => "is missing",
        Some(presented) => match session.verify_csrf_bytes(&presented) {
            Ok(true) => return Ok(request),
            Ok(false) => "does not match the session's",
            Err(err) => return Err(err.to_response()),
        },
    };
    tracing::debug!(reason, "CSRF check failed: refusing the request");
    Err(SessionError::CsrfTokenMismatch { reason }.to_response())
}

/// The whole body, up to `limit` bytes.
async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, Response<Bytes>>
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) => Err(default_error_response(
            &if err.is::<http_body_util::LengthLimitError>() {
                CommitFailure::BodyTooLarge { limit }
            } else {
                CommitFailure::BodyUnreadable {
                    message: err.to_string(),
                }
            },
        )),
    }
}

/// The 500 for a [`CsrfLayer`] that no session layer wraps.
fn no_session_response() -> Response<Bytes> {
    let body = serde_json::json!({
        "error": "no session: add keel_session::SessionLayer around keel_session::CsrfLayer",
    });
    let mut response = Response::new(Bytes::from(body.to_string()));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Whether the body is `application/x-www-form-urlencoded` (parameters such
/// as `charset` allowed).
fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| {
            essence
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// The decoded value of the first field `name` of a urlencoded form body
/// (the `form_urlencoded` crate's parser: `+` is a space, then
/// percent-decoding; invalid UTF-8 becomes U+FFFD, which no token holds).
fn form_field(body: &[u8], name: &str) -> Option<Vec<u8>> {
    form_urlencoded::parse(body)
        .find(|(field, _)| field == name)
        .map(|(_, value)| value.into_owned().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_field_is_found_and_decoded() {
        let body = b"user=a+b&csrf_token=abc%2Ddef_1&csrf_token=second";
        assert_eq!(
            form_field(body, "csrf_token").as_deref(),
            Some(&b"abc-def_1"[..])
        );
        assert_eq!(form_field(body, "user").as_deref(), Some(&b"a b"[..]));
        assert_eq!(
            form_field(b"csrf_token", "csrf_token").as_deref(),
            Some(&b""[..])
        );
        assert_eq!(
            form_field(b"csrf%5Ftoken=x", "csrf_token").as_deref(),
            Some(&b"x"[..])
        );
        assert_eq!(form_field(b"", "csrf_token"), None);
        assert_eq!(
            form_field(b"xcsrf_token=1&csrf_tokens=2", "csrf_token"),
            None
        );
    }

    #[test]
    fn only_urlencoded_bodies_are_forms() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            is_form(&headers)
        };
        assert!(with("application/x-www-form-urlencoded"));
        assert!(with("Application/X-WWW-Form-Urlencoded; charset=UTF-8"));
        assert!(!with("application/json"));
        assert!(!with("multipart/form-data; boundary=x"));
        assert!(!is_form(&HeaderMap::new()));
    }

    #[test]
    fn tokens_are_43_base64url_characters_and_differ() {
        let a = CsrfToken::generate().unwrap();
        let b = CsrfToken::generate().unwrap();
        assert_eq!(a.as_str().len(), 43);
        assert!(
            a.as_str()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_ne!(a, b);
        assert_eq!(a, a.clone());
    }
}
