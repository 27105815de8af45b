//! The admin API of `keel serve` (under `/admin/`) and its `/metrics`
//! endpoint.
//!
//! - Every `/admin/...` request needs `Authorization: Bearer TOKEN`, the
//!   token being the trimmed content of `--admin-token-file`; a missing or
//!   wrong token gets 401. The comparison is constant-time, over SHA-256
//!   digests (so neither the content nor the length of the token leaks).
//! - Without `--admin-token-file` the admin API is disabled and every
//!   `/admin/...` path answers 404 (`code` `admin_disabled`): there is no
//!   token that would open it.
//! - `/metrics` needs no token: it holds only aggregate counters and gauges,
//!   never a key, principal or id. Keep it off public networks like the
//!   admin API (scrape it from inside, or filter it at the proxy).
//!
//! Answers are JSON (the `wire` types); errors are `{"error": MESSAGE,
//! "code": CODE}` with `code` one of `unauthorized`, `admin_disabled`,
//! `bad_request`, `method_not_allowed`, `no_such_session`, `not_found`,
//! `too_many_failures` (429 with `Retry-After`: more than 10 failed
//! authentications from one address, then one more every 6 s),
//! `no_key_ring`, `unavailable`, `internal`: also for what axum's extractors
//! refuse and for a wrong method.
//! Container work runs on tokio's blocking pool.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, Query, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{any, delete, get, post},
};
use keel_store::{SessionContainer, StoreError};
use keel_txn::TransactionManager;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{
    CliError,
    keys::{self, KeysJson, reload::ServerKeys},
    metrics::Metrics,
    ops,
    sweeper::{self, SweeperStatus},
    wire::{
        ErrorJson, RemovedJson, RevokedJson, ServerJson, SessionJson, StatsJson, SweepJson,
        TransactionsJson,
    },
};

/// Sessions per page of `GET /admin/sessions` by default.
pub(crate) const DEFAULT_LIMIT: usize = 1000;

/// The largest page `GET /admin/sessions` gives.
pub(crate) const MAX_LIMIT: usize = 10_000;

/// The admin bearer token, kept only as its SHA-256 digest.
#[derive(Clone)]
pub(crate) struct AdminToken([u8; 32]);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// The token from the content of a token file (trimmed).
    ///
    /// # Errors
    /// [`CliError::Usage`] if it is empty.
    pub(crate) fn from_file_content(
        content: &str,
        path: &std::path::Path,
    ) -> Result<Self, CliError> {
        let token = content.trim();
        if token.is_empty() {
            return Err(CliError::Usage(format!(
                "the admin token file {} is empty",
                path.display()
            )));
        }
        Ok(AdminToken(Sha256::digest(token.as_bytes()).into()))
    }

    fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.0.ct_eq(&digest).into()
    }
}

/// What the admin routes work on.
#[derive(Clone)]
pub(crate) struct AdminState {
    /// The server's container.
    pub(crate) container: Arc<dyn SessionContainer>,
    /// The token; `None` disables the admin API.
    pub(crate) token: Option<AdminToken>,
    /// The request transaction manager (for its counters).
    pub(crate) transactions: TransactionManager,
    /// Server start, Unix seconds.
    pub(crate) started: u64,
    /// The background sweeper's status.
    pub(crate) sweeper: Arc<SweeperStatus>,
    /// The key ring of keel ids; `None` with zope ids.
    pub(crate) keys: Option<Arc<ServerKeys>>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("container", &self.container)
            .field("enabled", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

/// The `/admin/...` routes.
pub(crate) fn router(state: AdminState) -> Router {
    if state.token.is_none() {
        return Router::new()
            .route("/admin", any(disabled))
            .route("/admin/", any(disabled))
            .route("/admin/{*rest}", any(disabled));
    }
    Router::new()
        .route("/admin/sessions", get(list_sessions))
        .route(
            "/admin/sessions/{key}",
            get(show_session).delete(delete_session),
        )
        .route(
            "/admin/principals/{name}/sessions",
            delete(revoke_principal),
        )
        .route("/admin/sweep", post(sweep))
        .route("/admin/stats", get(stats))
        .route("/admin/keys", get(list_keys))
        .route("/admin/keys/rotate", post(rotate_keys))
        .route("/admin/keys/retire", post(retire_keys))
        .route("/admin", any(unknown))
        .route("/admin/", any(unknown))
        .route("/admin/{*rest}", any(unknown))
        .route_layer(middleware::from_fn_with_state(
            Gate {
                state: state.clone(),
                failures: Arc::new(FailedAuthentications::default()),
            },
            require_token,
        ))
        .layer(middleware::map_response(json_errors))
        .with_state(state)
}

/// Every error of the admin API in its JSON form: the rejections of axum's
/// extractors (a path that is not UTF-8 once decoded, `?limit=abc`) and its
/// 405 for a wrong method come as plain text or an empty body; they get the
/// `{"error", "code"}` body of the API's own errors, the same status and
/// headers (a 405 keeps its `Allow`).
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // NOTE: axum's rejection texts are one line; anything longer is cut.
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = parts
                .headers
                .get(header::ALLOW)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("")
                .to_owned();
            (
                "method_not_allowed",
                format!("this admin route does not take that method; it takes: {allowed}"),
            )
        }
        StatusCode::NOT_FOUND => ("not_found", "no such admin route".to_owned()),
        _ if status.is_client_error() => (
            "bad_request",
            if text.is_empty() {
                "bad request".to_owned()
            } else {
                text
            },
        ),
        _ => (
            "internal",
            "internal error; see the server's log".to_owned(),
        ),
    };
    let json = ApiError::new(status, code, message).into_response();
    let (json_parts, json_body) = json.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in &json_parts.headers {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, json_body)
}

/// What `/metrics` reads.
#[derive(Clone, Debug)]
pub(crate) struct MetricsState {
    /// The recorder.
    pub(crate) metrics: Metrics,
    /// The request transaction manager.
    pub(crate) transactions: TransactionManager,
}

/// The `/metrics` route.
pub(crate) fn metrics_router(state: MetricsState) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .with_state(state)
}

async fn render_metrics(State(state): State<MetricsState>) -> Response {
    let body = state.metrics.render(&state.transactions.stats());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// An admin API error: status, code and message.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorJson {
                error: self.message,
                code: self.code.to_owned(),
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"keel-admin\""),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::InvalidInput { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_request", err.to_string())
            }
            StoreError::Closed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                err.to_string(),
            ),
            _ => {
                tracing::warn!(error = %err, "admin operation failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    err.to_string(),
                )
            }
        }
    }
}

impl From<CliError> for ApiError {
    fn from(err: CliError) -> Self {
        match err {
            CliError::Store(err) => ApiError::from(err),
            CliError::NotFound(message) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
            }
            other => {
                tracing::warn!(error = %other, "admin operation failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    other.to_string(),
                )
            }
        }
    }
}

fn no_such_session(key: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_such_session",
        format!("no session {key}"),
    )
}

/// Run container work on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| ApiError::from(CliError::Task(err)))?
        .map_err(ApiError::from)
}

/// What the token check needs: the admin state, and the failed
/// authentications per client address.
#[derive(Clone)]
struct Gate {
    state: AdminState,
    failures: Arc<FailedAuthentications>,
}

/// Failed admin authentications allowed per client address in a burst;
/// then one more every [`FAILURE_REFILL`].
const FAILURES_ALLOWED: u32 = 10;

/// How long one allowed failure takes to come back.
const FAILURE_REFILL: std::time::Duration = std::time::Duration::from_secs(6);

/// Addresses remembered at most; when full, those whose allowance is whole
/// again are forgotten first.
const ADDRESSES_KEPT: usize = 10_000;

/// A token bucket of failed authentications per client address. NOTE: only
/// failures spend it: a request with the right token is never delayed or
/// refused, whatever its address did before (the token is long and random,
/// so the limit guards the log and the server's time rather than the
/// token).
#[derive(Debug, Default)]
struct FailedAuthentications {
    /// Address -> (failures still allowed, when that was last computed).
    buckets:
        std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (u32, std::time::Instant)>>,
}

impl FailedAuthentications {
    /// Spend one failure of `address`; `Err(wait)` when none is left.
    fn spend(&self, address: std::net::IpAddr) -> Result<(), std::time::Duration> {
        let now = std::time::Instant::now();
        let refilled = |(left, since): (u32, std::time::Instant)| {
            let earned = now.duration_since(since).as_secs() / FAILURE_REFILL.as_secs();
            let left = (u64::from(left) + earned).min(u64::from(FAILURES_ALLOWED));
            let since = since + FAILURE_REFILL * u32::try_from(earned).unwrap_or(u32::MAX);
            (u32::try_from(left).unwrap_or(FAILURES_ALLOWED), since)
        };
        // NOTE: a panic while the lock was held leaves counts, not broken
        // invariants: carry on with them.
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= ADDRESSES_KEPT && !buckets.contains_key(&address) {
            buckets.retain(|_, bucket| refilled(*bucket).0 < FAILURES_ALLOWED);
            if buckets.len() >= ADDRESSES_KEPT {
                // Still full: the oldest entries go (an attacker with many
                // addresses then gets fresh allowances, never the memory).
                buckets.clear();
            }
        }
        let bucket = buckets.entry(address).or_insert((FAILURES_ALLOWED, now));
        let (left, since) = refilled(*bucket);
        if left == 0 {
            *bucket = (0, since);
            return Err((since + FAILURE_REFILL).saturating_duration_since(now));
        }
        *bucket = (left - 1, if left == FAILURES_ALLOWED { now } else { since });
        Ok(())
    }
}

async fn require_token(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    let Some(token) = &gate.state.token else {
        return disabled().await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer);
    if let Some(presented) = presented
        && token.matches(presented)
    {
        return next.run(request).await;
    }
    let address = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip());
    if let Some(address) = address
        && let Err(wait) = gate.failures.spend(address)
    {
        let seconds = wait.as_secs().max(1);
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_failures",
            format!(
                "too many failed admin authentications from {address}; try again in {seconds} s"
            ),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return response;
    }
    // NOTE: never the presented token: it may be a real one mistyped.
    tracing::warn!(
        client = %address.map_or_else(|| "unknown".to_owned(), |a| a.to_string()),
        method = %request.method(),
        path = request.uri().path(),
        token_given = presented.is_some(),
        "admin request refused: missing or wrong token"
    );
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a valid admin token is required: `Authorization: Bearer TOKEN`",
    )
    .into_response()
}

/// The token of an `Authorization: Bearer TOKEN` header value.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

async fn disabled() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "admin_disabled",
        "the admin API is disabled: start keel serve with --admin-token-file",
    )
    .into_response()
}

async fn unknown() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such admin route")
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    after: Option<String>,
    limit: Option<usize>,
    data: Option<bool>,
}

/// `GET /admin/sessions?after=KEY&limit=N&data=BOOL`: a JSON array of up to
/// `limit` sessions (default 1000, at most 10000) with keys after `after`, in
/// key order. A full page means there may be more: ask again with `after` =
/// the last key. `data=true` includes each session's data (for export).
async fn list_sessions(
    State(state): State<AdminState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<SessionJson>>, ApiError> {
    let after = query.after.as_deref().map(ops::parse_key).transpose()?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let data = query.data.unwrap_or(false);
    let container = state.container;
    let page =
        blocking(move || ops::list_page(container.as_ref(), after.as_ref(), limit, data)).await?;
    Ok(Json(page))
}

/// `GET /admin/sessions/{key}`: the session with its data; 404 if there is
/// none.
async fn show_session(
    State(state): State<AdminState>,
    Path(key): Path<String>,
) -> Result<Json<SessionJson>, ApiError> {
    let client = ops::parse_key(&key)?;
    let container = state.container;
    blocking(move || ops::show(container.as_ref(), &client))
        .await?
        .map(Json)
        .ok_or_else(|| no_such_session(&key))
}

/// `DELETE /admin/sessions/{key}`: `{"removed": 1}`; 404 if there was none.
async fn delete_session(
    State(state): State<AdminState>,
    Path(key): Path<String>,
) -> Result<Json<RemovedJson>, ApiError> {
    let client = ops::parse_key(&key)?;
    let container = state.container;
    let removed = blocking(move || ops::remove(container.as_ref(), &client)).await?;
    if removed == 0 {
        return Err(no_such_session(&key));
    }
    tracing::info!(key = %key, "admin deleted a session");
    Ok(Json(RemovedJson { removed }))
}

/// `DELETE /admin/principals/{name}/sessions`: deletes every session of the
/// principal; `{"principal": NAME, "removed": N}` (N may be 0).
async fn revoke_principal(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<RevokedJson>, ApiError> {
    let container = state.container;
    let revoked = blocking(move || ops::revoke_principal(container.as_ref(), &name)).await?;
    tracing::info!(
        removed = revoked.removed,
        "admin revoked the sessions of a principal"
    );
    Ok(Json(revoked))
}

#[derive(Debug, Deserialize)]
struct SweepQuery {
    batch: Option<usize>,
    max: Option<u64>,
}

/// `POST /admin/sweep?batch=N&max=M`: deletes expired sessions in batches of
/// `batch` (default 250) until none remain, or at least `max` were removed;
/// `{"removed", "batches", "more", "seconds"}`.
async fn sweep(
    State(state): State<AdminState>,
    Query(query): Query<SweepQuery>,
) -> Result<Json<SweepJson>, ApiError> {
    let batch = query
        .batch
        .unwrap_or(sweeper::DEFAULT_BATCH)
        .clamp(1, sweeper::MAX_BATCH);
    let swept = sweeper::sweep(state.container, batch, query.max).await?;
    if swept.removed > 0 {
        tracing::info!(
            removed = swept.removed,
            batches = swept.batches,
            "admin swept expired sessions"
        );
    }
    Ok(Json(swept))
}

/// Run `keel keys` work on the blocking pool.
async fn blocking_keys<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, CliError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| ApiError::from(CliError::Task(err)))?
        .map_err(ApiError::from)
}

/// The server's key ring, or 409 `no_key_ring` (zope ids).
fn server_keys(state: &AdminState) -> Result<Arc<ServerKeys>, ApiError> {
    state.keys.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "no_key_ring",
            "this server uses zope ids, which have one secret (--secret-file) and no key ring",
        )
    })
}

/// `GET /admin/keys`: the stored key ring, `{"keys": [{"id", "signing",
/// "created", "age_seconds"}]}` oldest first; never a secret.
async fn list_keys(State(state): State<AdminState>) -> Result<Json<KeysJson>, ApiError> {
    let keys = server_keys(&state)?;
    Ok(Json(
        blocking_keys(move || keys::list(keys.source())).await?,
    ))
}

/// `POST /admin/keys/rotate`: adds a new signing key to the stored ring and
/// uses it at once; the ring with `"added": ID`. Other servers sharing the
/// database take it up at their next reload.
async fn rotate_keys(State(state): State<AdminState>) -> Result<Json<KeysJson>, ApiError> {
    let keys = server_keys(&state)?;
    let rotated = blocking_keys(move || {
        let rotated = keys::rotate(keys.source())?;
        keys.reload()?;
        Ok(rotated)
    })
    .await?;
    tracing::info!(added = ?rotated.added, "admin rotated the key ring");
    Ok(Json(rotated))
}

#[derive(Debug, Deserialize)]
struct RetireQuery {
    keep: Option<usize>,
}

/// `POST /admin/keys/retire?keep=N`: keeps only the `keep` (default 1, at
/// least 1) newest keys of the stored ring and uses it at once: cookies
/// signed only with a retired key stop verifying here now, on other servers
/// sharing the database at their next reload. The ring with `"retired":
/// [IDS]`.
async fn retire_keys(
    State(state): State<AdminState>,
    Query(query): Query<RetireQuery>,
) -> Result<Json<KeysJson>, ApiError> {
    let keys = server_keys(&state)?;
    let keep = query.keep.unwrap_or(1).max(1);
    let retired = blocking_keys(move || {
        let retired = keys::retire(keys.source(), keep)?;
        keys.reload()?;
        Ok(retired)
    })
    .await?;
    if !retired.retired.is_empty() {
        tracing::warn!(retired = ?retired.retired, "admin retired keys: their cookies no longer verify");
    }
    Ok(Json(retired))
}

/// `GET /admin/stats`: the container's figures and the server's counters.
async fn stats(State(state): State<AdminState>) -> Result<Json<StatsJson>, ApiError> {
    let container = Arc::clone(&state.container);
    let mut stats = blocking(move || ops::stats(container.as_ref())).await?;
    crate::metrics::set_store_gauges(&stats);
    stats.server = Some(ServerJson {
        started: state.started,
        uptime_seconds: stats.now.saturating_sub(state.started),
        transactions: TransactionsJson::from(&state.transactions.stats()),
        sweeper: state.sweeper.snapshot(),
    });
    Ok(Json(stats))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn bearer_tokens_are_parsed_case_insensitively() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer   abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
    }

    #[test]
    fn tokens_match_only_exactly() {
        let token = AdminToken::from_file_content("  s3cret\n", Path::new("t")).unwrap();
        assert!(token.matches("s3cret"));
        assert!(!token.matches("s3cre"));
        assert!(!token.matches("s3cret2"));
        assert!(AdminToken::from_file_content(" \n", Path::new("t")).is_err());
        assert!(!format!("{token:?}").contains("s3cret"));
    }
}
