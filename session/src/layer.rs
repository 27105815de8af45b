//! The tower middleware: one transaction per request, committed when the
//! handler succeeds, aborted when it fails, re-run on conflicts.

use std::{
    convert::Infallible,
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use keel_txn::{TxnError, commit_without_blocking};
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;

use keel_store::SessionContainer;

use crate::{
    Session, SessionError, SessionManager,
    hot_sessions::{HotSessions, Turn},
};

/// Marks a response whose handler hit a retryable session error (a
/// conflict): the layer re-runs the request instead of sending it, while
/// attempts remain. Inserted by `SessionError`'s axum `IntoResponse`, or by
/// any handler into its response's extensions.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryRequest;

/// Builds the response sent when a request's commit fails.
pub type ErrorResponder = Arc<dyn Fn(&CommitFailure) -> Response<Bytes> + Send + Sync>;

/// Why a request's changes were not committed, handed to the
/// [`ErrorResponder`].
#[derive(Debug)]
#[non_exhaustive]
pub enum CommitFailure {
    /// The commit failed; nothing of the request was written.
    Failed(TxnError),
    /// Every attempt ended in a conflict; nothing of the last attempt was
    /// written.
    Conflict {
        /// How many attempts were made.
        attempts: u32,
        /// The last conflict.
        error: Option<TxnError>,
    },
    /// The request body was larger than the layer buffers for retries.
    BodyTooLarge {
        /// The limit, bytes.
        limit: usize,
    },
    /// The session could not be read before the handler ran (its
    /// container's database cannot be reached, or the read failed).
    Unavailable(SessionError),
    /// Reading the request body failed.
    BodyUnreadable {
        /// What the body said.
        message: String,
    },
}

/// A tower [`Layer`] that wraps each request in a transaction of the
/// [`SessionManager`]'s transaction manager.
///
/// - The handler finds its [`Session`] in the request extensions (and, with
///   the `axum` feature, as an extractor).
/// - When the handler answers with a non-5xx response, the transaction is
///   committed without blocking the async runtime
///   ([`keel_txn::commit_without_blocking`]): inline when nothing can block
///   (read-only requests, the RAM container); a durable redb write as a task
///   that awaits the group commit's answer and holds no thread meanwhile.
///   The session cookie is set only if that commit succeeded.
/// - When the handler answers 5xx or fails, the transaction is aborted.
/// - When the commit (or the handler, see [`RetryRequest`]) meets a
///   conflict, the request is re-run in a fresh transaction with the same
///   buffered body, up to the transaction manager's retry policy; then a 503.
///   From its first conflict until no request of it waits, a session's
///   requests in this process take turns (one at a time), so a hot session
///   written by many connections at once does not make requests lose every
///   attempt: a retry then conflicts only with other processes' writes.
/// - Any other commit failure becomes a 500 with a JSON body naming the error
///   (and the package and key of an unserializable value); customise it with
///   [`SessionLayer::with_error_responder`].
#[derive(Clone)]
pub struct SessionLayer {
    manager: SessionManager,
    max_body_bytes: usize,
    responder: ErrorResponder,
    /// Sessions whose requests take turns after a conflict (shared by the
    /// layer's clones).
    hot: Arc<HotSessions>,
}

impl fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayer")
            .field("manager", &self.manager)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

impl SessionLayer {
    /// A layer for `manager`'s sessions; buffers request bodies up to 1 MiB
    /// (needed to re-run a request).
    pub fn new(manager: SessionManager) -> Self {
        SessionLayer {
            manager,
            max_body_bytes: 1024 * 1024,
            responder: Arc::new(default_error_response),
            hot: Arc::new(HotSessions::default()),
        }
    }

    /// The common case in one call: sessions in `container`, client ids in a
    /// cookie with Keel's defaults (HttpOnly, SameSite=Lax; see
    /// [`CookieConfig`](crate::CookieConfig) for Secure and the rest),
    /// signed under a key ring kept in the container
    /// ([`KeyRing::load_or_create`](crate::KeyRing::load_or_create)), so a
    /// restart logs nobody out. Build the pieces yourself
    /// ([`SessionManager::new`]) for several containers, another id format
    /// or an explicit ring.
    ///
    /// ```
    /// use axum::{Router, routing::post};
    /// use keel_session::{RamContainer, Session, SessionError, SessionLayer};
    ///
    /// async fn visit(session: Session) -> Result<String, SessionError> {
    ///     let data = session.pkg("my.app")?;
    ///     let visits = data.get::<u64>("visits")?.unwrap_or(0) + 1;
    ///     data.insert("visits", visits)?;
    ///     Ok(format!("visit number {visits}"))
    /// }
    ///
    /// let layer = SessionLayer::from_container(RamContainer::new())?;
    /// let app: Router = Router::new().route("/", post(visit)).layer(layer);
    /// # Ok::<(), SessionError>(())
    /// ```
    ///
    /// # Errors
    /// As for [`KeyRing::load_or_create`](crate::KeyRing::load_or_create).
    pub fn from_container(container: impl SessionContainer) -> Result<Self, SessionError> {
        let container: Arc<dyn SessionContainer> = Arc::new(container);
        let ring = crate::KeyRing::load_or_create(container.as_ref())?;
        let ids = crate::CookieConfig::keel(ring).build()?;
        let manager =
            SessionManager::new(ids, crate::ContainerRegistry::new().with_default(container));
        Ok(SessionLayer::new(manager))
    }

    /// Buffer request bodies up to `bytes`; larger ones get 413.
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Build commit-failure responses with `responder`.
    pub fn with_error_responder(
        mut self,
        responder: impl Fn(&CommitFailure) -> Response<Bytes> + Send + Sync + 'static,
    ) -> Self {
        self.responder = Arc::new(responder);
        self
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            layer: Arc::new(self.clone()),
        }
    }
}

/// The service [`SessionLayer`] wraps around an inner service.
#[derive(Clone)]
pub struct SessionService<S> {
    inner: S,
    // NOTE: one `Arc` for the whole layer: each request takes a handle on
    // it, and the layer's own fields are three reference counts.
    layer: Arc<SessionLayer>,
}

impl<S> fmt::Debug for SessionService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionService")
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqBody: Body + From<Bytes> + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: std::error::Error + Send + Sync + 'static,
    ResBody: From<Bytes> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The inner service was driven to readiness by `poll_ready`; take that
        // one for the first attempt and leave a fresh clone in its place.
        let fresh = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, fresh);
        let layer = Arc::clone(&self.layer);
        let span = tracing::debug_span!(
            "keel.session",
            method = %request.method(),
            path = request.uri().path(),
        );
        Box::pin(handle(layer, inner, request).instrument(span))
    }
}

async fn handle<S, ReqBody, ResBody>(
    layer: Arc<SessionLayer>,
    inner: S,
    request: Request<ReqBody>,
) -> Result<Response<ResBody>, Infallible>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>, Error = Infallible> + Clone,
    ReqBody: Body + From<Bytes>,
    ReqBody::Error: std::error::Error + Send + Sync + 'static,
    ResBody: From<Bytes>,
{
    let respond = |failure: CommitFailure| (layer.responder)(&failure).map(ResBody::from);
    let (parts, body) = request.into_parts();
    // A request without a body (most GETs) has nothing to buffer, and its
    // first attempt gets the (empty) body it came with.
    let mut empty_body = None;
    let body = if body.is_end_stream() {
        empty_body = Some(body);
        Bytes::new()
    } else {
        match Limited::new(body, layer.max_body_bytes).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(err) => {
                let failure = if err.is::<http_body_util::LengthLimitError>() {
                    CommitFailure::BodyTooLarge {
                        limit: layer.max_body_bytes,
                    }
                } else {
                    CommitFailure::BodyUnreadable {
                        message: err.to_string(),
                    }
                };
                return Ok(respond(failure));
            }
        }
    };
    let transactions = layer.manager.transaction_manager();
    let policy = transactions.retry_policy().clone();
    let mut inner = inner;
    let mut attempt: u32 = 1;
    // This request's turn on a hot session, taken before the attempt that
    // follows a conflict (or the first, if the session is hot already) and
    // held until the response: see `hot_sessions.rs`.
    let mut turn: Option<Turn> = None;
    loop {
        let session = layer.manager.session_for(&parts.method, &parts.headers);
        if turn.is_none()
            && let Some(key) = session.client_key()
            && (attempt > 1 || layer.hot.is_hot(&key))
        {
            // NOTE: the transaction starts after the wait, so that it reads
            // what the turns before it committed.
            session.abort();
            turn = Some(layer.hot.turn(key).await);
            continue;
        }
        // A container that reads over the network reads the session now,
        // awaited here, so the handler's reads never block a worker.
        if let Err(err) = session.preload().await {
            session.abort();
            if err.is_retryable() && attempt < policy.attempts() {
                transactions.record_retry();
                tokio::time::sleep(policy.backoff(attempt)).await;
                attempt += 1;
                continue;
            }
            tracing::warn!(error = %err, "reading the session failed");
            return Ok(respond(CommitFailure::Unavailable(err)));
        }
        let body = match empty_body.take() {
            Some(empty) => empty,
            None => ReqBody::from(body.clone()),
        };
        let mut request = Request::new(body);
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = parts.uri.clone();
        *request.version_mut() = parts.version;
        *request.headers_mut() = parts.headers.clone();
        *request.extensions_mut() = parts.extensions.clone();
        request.extensions_mut().insert(session.clone());

        // The first attempt uses the service `poll_ready` prepared; a retry
        // drives a fresh clone to readiness (no clone unless one is needed).
        let mut response = if attempt == 1 {
            inner.call(request).await?
        } else {
            let mut service = inner.clone();
            std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
            service.call(request).await?
        };

        let retry_requested = response.extensions().get::<RetryRequest>().is_some();
        let conflict: Option<Option<TxnError>> = if retry_requested {
            session.abort();
            Some(None)
        } else if response.status().is_server_error() {
            tracing::debug!(status = %response.status(), "handler failed: aborting");
            session.abort();
            return Ok(response);
        } else {
            match session.take_transaction() {
                // The handler committed or aborted by itself.
                None => return Ok(response),
                Some(tx) => match commit_without_blocking(tx).await {
                    Ok(_) => {
                        session.write_cookie_headers(response.headers_mut());
                        return Ok(response);
                    }
                    Err(err) if err.is_retryable() => Some(Some(err)),
                    Err(err) => {
                        tracing::warn!(error = %err, "commit failed");
                        return Ok(respond(CommitFailure::Failed(err)));
                    }
                },
            }
        };
        if let Some(error) = conflict {
            if attempt >= policy.attempts() {
                tracing::warn!(attempts = attempt, "conflicts on every attempt");
                return Ok(respond(CommitFailure::Conflict {
                    attempts: attempt,
                    error,
                }));
            }
            transactions.record_retry();
            tracing::debug!(attempt, "conflict: re-running the request");
            tokio::time::sleep(policy.backoff(attempt)).await;
            attempt += 1;
        }
    }
}

/// An id for one failure, shown to the client and logged with the details:
/// 64 bits from the OS CSPRNG as 11 base64url characters (the clock's
/// nanoseconds if that fails: the id only names a log line).
fn failure_id() -> String {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
    let mut raw = [0u8; 8];
    if crate::key_ring::fill_random(&mut raw).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        raw.copy_from_slice(&nanos.to_be_bytes()[8..]);
    }
    URL_SAFE_NO_PAD.encode(raw)
}

/// What went wrong, in full, for the log.
fn failure_detail(failure: &CommitFailure) -> String {
    match failure {
        CommitFailure::Failed(err) => err.to_string(),
        CommitFailure::Unavailable(err) => err.to_string(),
        CommitFailure::Conflict { error, attempts } => match error {
            Some(err) => format!("{err} (after {attempts} attempts)"),
            None => format!("a conflict on each of {attempts} attempts"),
        },
        CommitFailure::BodyTooLarge { limit } => format!("request body over {limit} bytes"),
        CommitFailure::BodyUnreadable { message } => format!("request body unreadable: {message}"),
    }
}

/// The default commit-failure response: JSON `{"error": MESSAGE,
/// "request_id": ID}`, plus `"package"` and `"key"` when a value could not be
/// serialized. MESSAGE is short and stable; the details are logged (at
/// `warn`) with the same request id.
pub fn default_error_response(failure: &CommitFailure) -> Response<Bytes> {
    let (status, message) = match failure {
        CommitFailure::Failed(err)
            if err
                .source_as::<keel_store::StoreError>()
                .is_some_and(keel_store::StoreError::is_unavailable) =>
        {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the session store is unavailable; try again".to_owned(),
            )
        }
        // NOTE: not reported as success, and not retried: the change may or
        // may not have been saved.
        CommitFailure::Failed(err)
            if matches!(
                err.source_as::<keel_store::StoreError>(),
                Some(keel_store::StoreError::CommitOutcomeUnknown { .. })
            ) =>
        {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the session store did not confirm the commit: whether this request's \
                 changes were saved is unknown"
                    .to_owned(),
            )
        }
        CommitFailure::Failed(err) => match err.source_as::<keel_store::StoreError>() {
            // NOTE: the storage refused the write (a full disk, a database
            // being reopened): nothing was saved, and a later try may work.
            Some(keel_store::StoreError::Storage { .. } | keel_store::StoreError::Closed) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the session store could not save this request; nothing was saved, try again"
                    .to_owned(),
            ),
            Some(keel_store::StoreError::Unserializable { package, key, .. }) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "the session was not saved: the value {key:?} of package {package:?} cannot be serialized"
                ),
            ),
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the session was not saved; the server's log has the details".to_owned(),
            ),
        },
        CommitFailure::Unavailable(err) if !err.is_unavailable() => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the session could not be read; the server's log has the details".to_owned(),
        ),
        CommitFailure::Unavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the session store is unavailable; try again".to_owned(),
        ),
        CommitFailure::Conflict { attempts, .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the session was changed concurrently on each of {attempts} attempts; try again"
            ),
        ),
        CommitFailure::BodyTooLarge { limit } => (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {limit} bytes"),
        ),
        CommitFailure::BodyUnreadable { message } => (
            StatusCode::BAD_REQUEST,
            format!("the request body could not be read: {message}"),
        ),
    };
    // NOTE: the client gets a short, stable message, never internal names
    // (data manager ids, phases, a serializer's own words); the details go
    // to the log under an id the body carries too.
    let request_id = failure_id();
    tracing::warn!(
        request_id = %request_id,
        status = status.as_u16(),
        detail = %failure_detail(failure),
        "request answered with an error"
    );
    let mut body = serde_json::json!({ "error": message, "request_id": request_id });
    if let CommitFailure::Failed(err) = failure
        && let Some(keel_store::StoreError::Unserializable { package, key, .. }) =
            err.source_as::<keel_store::StoreError>()
    {
        body["package"] = package.clone().into();
        body["key"] = key.clone().into();
    }
    let mut response = Response::new(Bytes::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

impl SessionError {
    /// The response a handler should give for this error: 503 with
    /// [`RetryRequest`] for a conflict (the layer re-runs the request), 400
    /// for a missing client id, 403 for a CSRF token mismatch, 500
    /// otherwise. The body is JSON `{"error": MESSAGE}`, plus `"code":
    /// "csrf_token_mismatch"` for the 403.
    ///
    /// ```
    /// use keel_session::SessionError;
    /// let response = SessionError::CsrfTokenMismatch { reason: "is missing" }.to_response();
    /// assert_eq!(response.status(), 403);
    /// let body: serde_json::Value = serde_json::from_slice(response.body())?;
    /// assert_eq!(body["code"], "csrf_token_mismatch");
    /// assert!(body["error"].as_str().unwrap_or_default().contains("reload the page"));
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn to_response(&self) -> Response<Bytes> {
        let status = if self.is_retryable() || self.is_unavailable() {
            StatusCode::SERVICE_UNAVAILABLE
        } else if matches!(self, SessionError::MissingClientId { .. }) {
            StatusCode::BAD_REQUEST
        } else if matches!(self, SessionError::CsrfTokenMismatch { .. }) {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        let mut body = serde_json::json!({ "error": self.to_string() });
        if matches!(self, SessionError::CsrfTokenMismatch { .. }) {
            body["code"] = "csrf_token_mismatch".into();
        }
        let mut response = Response::new(Bytes::from(body.to_string()));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.is_retryable() {
            response.extensions_mut().insert(RetryRequest);
        }
        response
    }
}

impl Session {
    /// The session the [`SessionLayer`] put in `extensions`, if any.
    pub fn from_extensions(extensions: &http::Extensions) -> Option<Session> {
        extensions.get::<Session>().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storage_failure_is_a_short_503_and_the_details_stay_in_the_log() {
        let failure = CommitFailure::Failed(TxnError::Resource {
            resource: "keel-store/~redb/1".to_owned(),
            phase: keel_txn::Phase::Vote,
            retryable: false,
            source: Box::new(keel_store::StoreError::Storage {
                operation: "committing to the session database",
                source: "No space left on device (os error 28)".into(),
            }),
        });
        let response = default_error_response(&failure);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key(header::RETRY_AFTER));
        let body = String::from_utf8(response.body().to_vec()).unwrap();
        for internal in ["keel-store/", "tpc_vote", "Vote", "No space", "os error"] {
            assert!(!body.contains(internal), "{internal} in {body}");
        }
        assert!(
            body.contains("nothing was saved") && body.contains("request_id"),
            "{body}"
        );
    }
}
