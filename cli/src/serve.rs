//! `keel serve`: the demo application, a durable page counter.
//!
//! Routes and output are a contract (docs/design.md, "Demo and admin
//! contract"); tests outside this crate depend on them.
//!
//! The HTML page (`GET /`) and the routes of its forms (`POST /login`,
//! `/logout`, `/reset`) are behind [`CsrfLayer`]: each form carries the
//! session's CSRF token. The JSON API under `/api/` is not, and works without
//! a token.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Query, State},
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use keel_session::{
    CSRF_FORM_FIELD, ContainerRegistry, CookieConfig, CsrfLayer, KeyRing, Session, SessionError,
    SessionLayer, SessionManager, ZopeIdFormat, template_object,
};
use keel_store::{
    ExpiryPolicy, PostgresContainer, PostgresOptions, RamContainer, RedbContainer, RedbOptions,
    RedisContainer, RedisOptions, SessionContainer,
};
use serde::{Deserialize, Serialize, Serializer, ser::Error as _};
use serde_json::json;
use tokio::net::TcpListener;

use crate::{
    CliError, IdFormat, ServeArgs,
    admin_api::{self, AdminState, AdminToken, MetricsState},
    database::Database,
    http_server::{self, CommitsInFlight, Timeouts},
    keys::{self, reload::ServerKeys, source::RingSource},
    metrics::{Metrics, TimedContainer},
    policy,
    sweeper::{self, SweeperStatus},
};

/// The package id of the demo's data.
pub(crate) const DEMO_PACKAGE: &str = "keel.demo";

const INDEX_TEMPLATE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Keel page counter</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 42rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.5; color: #222; }
.box { border: 1px solid #ccc; border-radius: 6px; padding: 0.75rem 1rem; margin: 1rem 0; }
button { margin-right: 0.5rem; }
#result { font-family: ui-monospace, monospace; white-space: pre-wrap; min-height: 1.5em; }
dt { font-weight: 600; }
dd { margin: 0 0 0.5rem 0; }
</style>
</head>
<body>
<h1>Keel page counter</h1>
<p>Your count is <strong id="count">{{ session("keel.demo").count }}</strong>. Showing this page adds one, and each visit is saved durably before the page is sent.</p>
<div class="box">
<button id="plus" type="button">+1</button>
<button id="oops" type="button">+1 with a value that cannot be saved</button>
<p id="result" aria-live="polite"></p>
</div>
<dl>
<dt>Session created</dt><dd id="created">{{ created }}</dd>
<dt>Last used</dt><dd id="last-access">{{ last_access }}</dd>
<dt>Expires if left idle</dt><dd id="expires">{{ expires }}</dd>
</dl>
<div class="box">
{% if user %}<p>Logged in as <strong id="user">{{ user }}</strong>.</p>
<form method="post" action="/logout">
<input type="hidden" name="{{ csrf_field }}" value="{{ csrf_token }}">
<button>Log out</button>
</form>
{% else %}<form method="post" action="/login">
<input type="hidden" name="{{ csrf_field }}" value="{{ csrf_token }}">
<label>User name <input name="user" required maxlength="200"></label>
<button>Log in</button>
</form>
{% endif %}<form method="post" action="/reset">
<input type="hidden" name="{{ csrf_field }}" value="{{ csrf_token }}">
<button>Reset the counter</button>
</form>
</div>
<p><a href="/api/count">/api/count</a> gives the count as JSON (<code>POST</code> adds one).</p>
<script>
async function post(path) {
  const response = await fetch(path, { method: "POST", credentials: "same-origin" });
  return [response.status, await response.json()];
}
const result = document.getElementById("result");
document.getElementById("plus").onclick = async () => {
  const [status, body] = await post("/api/count");
  if (status === 200) {
    document.getElementById("count").textContent = body.count;
    result.textContent = "saved: the count is " + body.count;
  } else {
    result.textContent = "HTTP " + status + ", nothing saved: " + body.error;
  }
};
document.getElementById("oops").onclick = async () => {
  const [status, body] = await post("/api/oops");
  result.textContent = "HTTP " + status + ", the commit was refused and nothing was saved: " + body.error;
};
</script>
</body>
</html>
"#;

#[derive(Clone)]
struct AppState {
    templates: Arc<minijinja::Environment<'static>>,
    /// The container's expiry policy (when an idle session expires).
    expiry: keel_store::ExpiryPolicy,
}

/// Run the demo server until SIGTERM or Ctrl-C.
pub(crate) fn run(args: ServeArgs) -> Result<(), CliError> {
    quiet_caught_panics();
    for secret in [&args.secret_file, &args.admin_token_file]
        .into_iter()
        .flatten()
    {
        warn_if_readable_by_others(secret);
    }
    let token = admin_token(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // NOTE: bound before the database is opened, so that a port in use
    // leaves no new database file behind.
    let listener = runtime
        .block_on(TcpListener::bind(args.addr))
        .map_err(|source| CliError::Listen {
            addr: args.addr,
            source,
        })?;
    let container = open_container(&args)?;
    if !args.memory {
        // Offline `keel sessions` then judges expiry as this server does.
        policy::store(container.as_ref(), container.expiry())?;
    }
    let (ids, keys) = client_id_manager(&args, &container)?;
    // The demo's counter is one hot record per client: retry conflicts enough
    // that 32 concurrent increments of one client all succeed.
    let transactions = keel_txn::TransactionManager::new().with_retry_policy(
        keel_txn::RetryPolicy::default()
            .with_attempts(32)
            .with_backoff(Duration::from_micros(500), Duration::from_millis(20)),
    );
    // Installed first: the commit timer takes its histogram from it.
    let metrics = Metrics::install()?;
    // Requests see the container through a wrapper that times each commit
    // and counts the commits shutdown waits for.
    let commits = Arc::new(CommitsInFlight::default());
    let timed: Arc<dyn SessionContainer> = Arc::new(TimedContainer::new(
        Arc::clone(&container),
        Arc::clone(&commits),
    ));
    let manager = SessionManager::new(ids, ContainerRegistry::new().with_default(timed))
        .with_transaction_manager(transactions);
    let server = Server {
        listener,
        commits,
        timeouts: Timeouts {
            header: Duration::from_secs(args.header_timeout),
            body: Duration::from_secs(args.body_timeout),
            idle: Duration::from_secs(args.idle_timeout),
            shutdown: Duration::from_secs(args.shutdown_timeout),
        },
    };
    runtime.block_on(serve(
        args, server, manager, container, token, metrics, keys,
    ))
}

/// A panic a redb container catches (redb reading a file damaged outside
/// it) is not printed: the container logs one error line naming the file,
/// and the request or admin call gets an error naming it. Every other panic
/// is printed as before.
fn quiet_caught_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !RedbContainer::panic_is_caught() {
            default(info);
        }
    }));
}

/// Files up to this size get redb's full integrity check (every page's
/// checksum, every b-tree) when `keel serve` opens them; larger files are
/// opened without it. The check reads the whole file; measured (release
/// build, file in the page cache, `keel sessions check`, which also walks
/// every record): 0.04 s for 20k sessions (17.7 MB), 2.2-3.5 s for 1.02M
/// sessions (615 MB). NOTE: the check also pulls every page through redb's
/// page cache, so the server's memory grows with the file (issue 17: at a
/// million sessions a start must stay fast and small): only files up to
/// 64 MiB (about 70,000 sessions, a tenth of a second) are checked
/// (docs/PERFORMANCE.md, "Integrity check at start").
const FULL_CHECK_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Open the redb file at `path` for the server: with the full integrity
/// check if it is at most [`FULL_CHECK_MAX_BYTES`] long, so that a damaged
/// file is refused at start, naming the file, rather than met by a request.
fn open_redb(
    path: &Path,
    expiry: ExpiryPolicy,
    cache_mib: usize,
) -> Result<RedbContainer, CliError> {
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let check = bytes > 0 && bytes <= FULL_CHECK_MAX_BYTES;
    let started = std::time::Instant::now();
    let container = RedbContainer::open_with(
        path,
        RedbOptions::new()
            .with_expiry(expiry)
            .with_integrity_check(check)
            .with_cache_size(cache_mib.saturating_mul(1024 * 1024)),
    )?;
    if check {
        tracing::info!(
            "checked every page of {} ({:.1} MB) in {:.2} s",
            path.display(),
            bytes as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
    } else if bytes > 0 {
        tracing::info!(
            "{} is {:.0} MB, over the {} MB checked at start: not checked (for a full check \
             run `keel sessions check --db {}` with the server stopped)",
            path.display(),
            bytes as f64 / 1e6,
            FULL_CHECK_MAX_BYTES / (1024 * 1024),
            path.display()
        );
    }
    Ok(container)
}

/// What [`http_server::serve`] needs besides the app.
struct Server {
    listener: TcpListener,
    commits: Arc<CommitsInFlight>,
    timeouts: Timeouts,
}

/// Warn, in one line naming the file and the fix, when a secret file can be
/// read by its group or by other users. Not refused: container platforms
/// mount secrets 0644 by default.
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(metadata) = std::fs::metadata(path)
            && metadata.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                "{} can be read by other users (mode {:o}); run `chmod 600 {}`",
                path.display(),
                metadata.permissions().mode() & 0o777,
                path.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// The admin token, if `--admin-token-file` was given.
fn admin_token(args: &ServeArgs) -> Result<Option<AdminToken>, CliError> {
    let Some(path) = &args.admin_token_file else {
        return Ok(None);
    };
    let content = std::fs::read_to_string(path).map_err(|source| CliError::ReadFile {
        path: path.clone(),
        source,
    })?;
    AdminToken::from_file_content(&content, path).map(Some)
}

/// Time between background sweeps: `--sweep-interval`, else the resolution
/// (at least 1 s); `None` for `--sweep-interval 0` (no background sweeper).
fn sweep_interval(args: &ServeArgs, container: &dyn SessionContainer) -> Option<Duration> {
    match args.sweep_interval {
        Some(0) => None,
        Some(seconds) => Some(Duration::from_secs(seconds)),
        None => Some(Duration::from_secs(container.expiry().resolution().max(1))),
    }
}

fn open_container(args: &ServeArgs) -> Result<Arc<dyn SessionContainer>, CliError> {
    let base = if args.memory {
        ExpiryPolicy::ram_default()
    } else {
        ExpiryPolicy::default()
    };
    let mut expiry = base;
    if let Some(timeout) = args.timeout {
        expiry = expiry.with_timeout(timeout);
    }
    if let Some(resolution) = args.resolution {
        expiry = expiry.with_resolution(resolution);
    }
    Ok(if args.memory {
        Arc::new(RamContainer::new().with_expiry(expiry))
    } else {
        match Database::from_arg(&args.db) {
            Database::File(path) => Arc::new(open_redb(&path, expiry, args.cache_size)?),
            Database::Postgres { url, schema } => {
                let mut options = PostgresOptions::new().with_expiry(expiry);
                if let Some(schema) = schema {
                    options = options.with_schema(schema);
                }
                Arc::new(PostgresContainer::connect(&url, options)?)
            }
            Database::Redis {
                url,
                prefix,
                replicas,
            } => {
                let mut options = RedisOptions::new().with_expiry(expiry);
                if let Some(prefix) = prefix {
                    options = options.with_prefix(prefix);
                }
                if let Some(replicas) = replicas {
                    let replicas = replicas.parse().map_err(|_| {
                        CliError::Usage(format!(
                            "--db ...?replicas={replicas}: expected a number of replicas"
                        ))
                    })?;
                    options = options.with_replicas(replicas);
                }
                Arc::new(RedisContainer::connect(&url, options)?)
            }
        }
    })
}

/// The client id manager, and with keel ids the key ring it signs with
/// (reloaded every `--key-reload-interval` from where it is stored).
fn client_id_manager(
    args: &ServeArgs,
    container: &Arc<dyn SessionContainer>,
) -> Result<(keel_session::CookieClientIdManager, Option<Arc<ServerKeys>>), CliError> {
    let (config, keys) = match args.id_format {
        IdFormat::Zope => {
            let path = args.secret_file.as_ref().ok_or_else(|| {
                CliError::Usage("--id-format zope needs --secret-file".to_owned())
            })?;
            (
                CookieConfig::new(ZopeIdFormat::from_secret_file(path)?),
                None,
            )
        }
        IdFormat::Keel => {
            let ring = load_key_ring(args, container.as_ref())?;
            let source = match &args.secret_file {
                Some(path) => RingSource::File(path.clone()),
                None => RingSource::Setting {
                    container: Arc::clone(container),
                    name: if args.memory {
                        "in memory".to_owned()
                    } else {
                        "of the server".to_owned()
                    },
                },
            };
            let interval = (args.key_reload_interval > 0)
                .then(|| Duration::from_secs(args.key_reload_interval));
            let keys = Arc::new(ServerKeys::new(source, ring, interval));
            (CookieConfig::keel(keys.shared()), Some(keys))
        }
    };
    Ok((
        config
            .with_name(args.cookie_name.clone())
            .with_lifetime(args.cookie_lifetime)
            .build()?,
        keys,
    ))
}

/// The keel-format key ring: from `--secret-file` (created if missing), else
/// from the database (created on first start; with `--memory`, a fresh one
/// per process, kept in the RAM container for `keel keys --url`).
fn load_key_ring(args: &ServeArgs, container: &dyn SessionContainer) -> Result<KeyRing, CliError> {
    if let Some(path) = &args.secret_file {
        return key_ring_file(path);
    }
    // Servers starting at once on a new shared database agree on the ring
    // stored first.
    Ok(KeyRing::load_or_create(container)?)
}

fn key_ring_file(path: &Path) -> Result<KeyRing, CliError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(KeyRing::from_bytes(&bytes)?),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let ring = KeyRing::generate()?;
            write_private(path, &ring.to_bytes()).map_err(|source| CliError::ReadFile {
                path: path.to_owned(),
                source,
            })?;
            Ok(ring)
        }
        Err(source) => Err(CliError::ReadFile {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Write a secret file readable only by its owner.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}

async fn serve(
    args: ServeArgs,
    server: Server,
    manager: SessionManager,
    container: Arc<dyn SessionContainer>,
    token: Option<AdminToken>,
    metrics: Metrics,
    keys: Option<Arc<ServerKeys>>,
) -> Result<(), CliError> {
    let mut templates = minijinja::Environment::new();
    templates
        .add_template("index.html", INDEX_TEMPLATE)
        .map_err(|err| CliError::Usage(format!("bad built-in template: {err}")))?;
    let state = AppState {
        templates: Arc::new(templates),
        expiry: *container.expiry(),
    };
    let transactions = manager.transaction_manager().clone();
    let interval = sweep_interval(&args, container.as_ref());
    let batch = args.sweep_batch.max(1);
    let status = Arc::new(SweeperStatus::new(interval.unwrap_or_default(), batch));
    let sweeper = interval.map(|interval| {
        sweeper::spawn(Arc::clone(&container), interval, batch, Arc::clone(&status))
    });
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let admin = admin_api::router(AdminState {
        container,
        token,
        transactions: transactions.clone(),
        started,
        sweeper: status,
        keys: keys.clone(),
    });
    let reloader = keys.and_then(keys::reload::spawn);
    // Without a listener of its own, the exporter needs its histogram
    // buffers drained now and then, scraped or not.
    let upkeep = {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(5));
            loop {
                ticker.tick().await;
                metrics.upkeep();
            }
        })
    };
    let metrics_routes = admin_api::metrics_router(MetricsState {
        metrics,
        transactions,
    });
    // The admin and metrics routes are merged after the session layer is
    // applied: they run outside request transactions and set no cookie.
    // NOTE: only `/` gets the state: axum clones a route's state with the
    // route on every request, and the templates' shared reference count,
    // bumped by both workers, showed in the profile of `GET /api/count`.
    // The page and its forms need the session's CSRF token; the JSON API
    // does not (its contract predates the token).
    let pages = Router::new()
        .route("/", get(index).with_state(state))
        .route("/login", post(login_form))
        .route("/logout", post(logout_form))
        .route("/reset", post(reset_form))
        .route_layer(CsrfLayer::new());
    let app = Router::new()
        .merge(pages)
        .route("/api/count", get(read_count).post(increment))
        .route("/api/oops", post(oops))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .layer(SessionLayer::new(manager))
        .merge(admin)
        .merge(metrics_routes);
    let shutdown = shutdown_signal();
    let local = server.listener.local_addr()?;
    println!("listening on http://{local}");
    http_server::serve(
        server.listener,
        app,
        server.timeouts,
        server.commits,
        shutdown,
    )
    .await;
    upkeep.abort();
    if let Some(sweeper) = sweeper {
        sweeper.abort();
    }
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C; the server then stops accepting and lets
/// in-flight requests (and their commits) finish, within
/// `--shutdown-timeout` (see [`http_server`]).
///
/// NOTE: the handlers are installed when this is called, not when the future
/// is first polled, so a SIGTERM sent right after `listening on` is printed
/// still shuts down gracefully instead of killing the process.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (mut terminate, mut interrupt) = signals;
            let terminate = async {
                match terminate.as_mut() {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let interrupt = async {
                match interrupt.as_mut() {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = terminate => {},
                () = interrupt => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The stored count, 0 for a client without one.
fn current_count(session: &Session) -> Result<u64, SessionError> {
    Ok(session.value::<u64>(DEMO_PACKAGE, "count")?.unwrap_or(0))
}

fn increment_count(session: &Session) -> Result<u64, SessionError> {
    let data = session.pkg(DEMO_PACKAGE)?;
    let count = data.get::<u64>("count")?.unwrap_or(0) + 1;
    data.insert("count", count)?;
    Ok(count)
}

async fn index(State(state): State<AppState>, session: Session) -> Result<Html<String>, Response> {
    increment_count(&session).map_err(IntoResponse::into_response)?;
    let csrf_token = session.csrf_token().map_err(IntoResponse::into_response)?;
    let info = session.info().map_err(IntoResponse::into_response)?;
    let (created, last_access, expires) = match &info {
        Some(info) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let expires = match state.expiry.expires_at(info.created, info.last_access) {
                Some(at) => format!(
                    "{} UTC (in {} min, unless you come back)",
                    crate::output::utc(at),
                    at.saturating_sub(now).div_ceil(60)
                ),
                None => "never (no timeout)".to_owned(),
            };
            (
                format!("{} UTC", crate::output::utc(info.created)),
                format!("{} UTC", crate::output::utc(info.last_access)),
                expires,
            )
        }
        None => Default::default(),
    };
    let user = info.and_then(|info| info.principal);
    let render = state.templates.get_template("index.html").and_then(|t| {
        t.render(minijinja::context! {
            session => template_object(&session),
            csrf_field => CSRF_FORM_FIELD,
            csrf_token => csrf_token.as_str(),
            user => user,
            created => created,
            last_access => last_access,
            expires => expires,
        })
    });
    match render {
        Ok(html) => Ok(Html(html)),
        Err(err) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("template error: {err}"),
        )
            .into_response()),
    }
}

/// The decoded value of the first field `name` of a urlencoded form body.
fn form_value(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(field, _)| field == name)
        .map(|(_, value)| value.into_owned())
}

/// The page's login form: cycles the id (against session fixation; the
/// CSRF token changes with it), attaches the principal, back to the page.
async fn login_form(session: Session, body: Bytes) -> Result<Response, SessionError> {
    let user = form_value(&body, "user").unwrap_or_default();
    let user = user.trim();
    if let Some(refused) = refuse_user_name(user) {
        return Ok(refused);
    }
    session.cycle_id()?;
    session.set_principal(Some(user))?;
    Ok(Redirect::to("/").into_response())
}

/// The page's logout form: invalidates the session, back to the page.
async fn logout_form(session: Session) -> Result<Redirect, SessionError> {
    session.invalidate()?;
    Ok(Redirect::to("/"))
}

/// The page's reset form: forgets the count, back to the page (which counts
/// that visit as the first).
async fn reset_form(session: Session) -> Result<Redirect, SessionError> {
    if let Some(data) = session.get(DEMO_PACKAGE)? {
        data.remove("count")?;
    }
    Ok(Redirect::to("/"))
}

#[derive(Serialize)]
struct Count {
    count: u64,
}

async fn read_count(session: Session) -> Result<Json<Count>, SessionError> {
    Ok(Json(Count {
        count: current_count(&session)?,
    }))
}

async fn increment(session: Session) -> Result<Json<Count>, SessionError> {
    Ok(Json(Count {
        count: increment_count(&session)?,
    }))
}

/// A value whose serialization always fails: the seed's `NoPickle`.
struct NoPickle;

impl Serialize for NoPickle {
    fn serialize<S: Serializer>(&self, _serializer: S) -> Result<S::Ok, S::Error> {
        Err(S::Error::custom("I cannot be pickled"))
    }
}

/// Increments the count AND stores a value that cannot be serialized: the
/// commit fails, the layer answers 500 `{"error": ..., "key": "oops"}`, and
/// the increment is not persisted.
async fn oops(session: Session) -> Result<Json<Count>, SessionError> {
    let count = increment_count(&session)?;
    session.pkg(DEMO_PACKAGE)?.insert("oops", NoPickle)?;
    Ok(Json(Count { count }))
}

#[derive(Deserialize)]
struct LoginQuery {
    user: String,
}

/// Cycles the id (against session fixation) and attaches the principal.
async fn login(
    session: Session,
    Query(query): Query<LoginQuery>,
) -> Result<Response, SessionError> {
    if let Some(refused) = refuse_user_name(&query.user) {
        return Ok(refused);
    }
    session.cycle_id()?;
    session.set_principal(Some(&query.user))?;
    Ok(Json(json!({ "user": query.user })).into_response())
}

/// The longest user name (principal) the demo accepts, in bytes. NOTE: a
/// principal must fit the admin API's URL to be revoked
/// (`/admin/principals/{name}/sessions`, percent-encoded: up to 3 bytes of
/// URL per byte of name), and a login is no place for kilobytes.
const MAX_USER_NAME_BYTES: usize = 200;

/// A 400 with a JSON body, unless `user` is 1 to [`MAX_USER_NAME_BYTES`]
/// bytes long.
fn refuse_user_name(user: &str) -> Option<Response> {
    if user.is_empty() || user.len() > MAX_USER_NAME_BYTES {
        let message = format!(
            "a user name of 1 to {MAX_USER_NAME_BYTES} bytes is needed (got {} bytes)",
            user.len()
        );
        return Some((StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response());
    }
    None
}

/// Invalidates the session: data deleted, cookie expired.
async fn logout(session: Session) -> Result<Json<serde_json::Value>, SessionError> {
    session.invalidate()?;
    Ok(Json(json!({ "logged_out": true })))
}
