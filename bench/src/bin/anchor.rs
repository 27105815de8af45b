//! `anchor`: the demo's page counter rebuilt on tower-sessions, the yardstick
//! of the HTTP load benchmark.
//!
//! The same routes and semantics as `keel serve`'s JSON API:
//! - `GET /api/count` answers `{"count": N}` without writing (N = 0 for a new
//!   client);
//! - `POST /api/count` does `session["count"] += 1` through tower-sessions'
//!   `Session` API and answers `{"count": N}`; tower-sessions saves the
//!   record to the store before the response (and its `Set-Cookie`) leaves.
//!
//! Stores (`--store`):
//! - `sqlite`: tower-sessions-sqlx-store's `SqliteStore` on a file on disk,
//!   opened with sqlx's defaults: rollback journal (`journal_mode` left at
//!   SQLite's default, DELETE), `synchronous = FULL` (SQLite's default, not
//!   overridden by sqlx), `busy_timeout` 5 s, a pool of at most 10
//!   connections. Each acknowledged write is one fsync'd SQLite transaction.
//!   `--sqlite-wal` switches to `journal_mode = WAL` (keeping `synchronous =
//!   FULL`, so still durable) for a tuned variant.
//! - `postgres`: tower-sessions-sqlx-store's `PostgresStore` on the
//!   PostgreSQL database `--pg-url` (`postgres://USER@HOST:PORT/DB`), through
//!   an sqlx `PgPool` with sqlx's defaults (at most 10 connections;
//!   PostgreSQL's own defaults: `synchronous_commit = on`, READ COMMITTED).
//!   `migrate()` creates schema `tower_sessions` and its table `session` at
//!   start. Each acknowledged write is one committed (WAL-flushed) upsert;
//!   the session layer reads the record, the handler changes it, and the
//!   layer writes it back whole, so concurrent requests of one session race
//!   (last writer wins).
//! - `redis`: tower-sessions-redis-store's `RedisStore` on `--redis-url`
//!   (`redis://HOST:PORT/DB`), through a fred `Pool` of 6 clients built as
//!   the store's README does (`Pool::new(config, None, None, None, 6)`, the
//!   config from the URL, fred's defaults otherwise). A session is one
//!   Redis string under the bare session id (no prefix: give it a database
//!   of its own), the MessagePack-encoded record, written with `SET ... XX
//!   EXAT`; each acknowledged write is one `SET` that Redis has applied
//!   (durable for as long as Redis runs, or as Redis's own persistence
//!   makes it). Read, change, write back whole: last writer wins, as with
//!   the SQL stores.
//! - `memory`: tower-sessions' `MemoryStore` (a mutex-guarded `HashMap`).
//! - `keel`: not tower-sessions but Keel's library (`SessionLayer` over a
//!   `RedbContainer` on `--db`), with the same two handlers as `inproc`:
//!   `keel serve` without its extras (metrics, admin routes, the HTML page),
//!   to tell the library's cost from the demo's.
//!
//! Uses mimalloc as its global allocator, like `keel serve`.
//!
//! Prints `listening on http://ADDR` once ready (`--addr 127.0.0.1:0` picks a
//! free port) and stops gracefully on SIGTERM or Ctrl-C.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
};

// The allocator `keel serve` uses (cli/src/main.rs): both servers run on the
// same one, so the comparison is of the session libraries.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use axum::{Json, Router, http::StatusCode, routing::get};
use clap::{Parser, ValueEnum};
use keel_session::{
    ContainerRegistry, CookieConfig, KeyRing, SessionError, SessionLayer, SessionManager,
};
use keel_store::{RedbContainer, SessionAdmin as _};
use serde::Serialize;
use tokio::net::TcpListener;
use tower_sessions::{MemoryStore, Session, SessionManagerLayer, SessionStore};
use tower_sessions_redis_store::{
    RedisStore,
    fred::prelude::{ClientLike as _, Config, Pool},
};
use tower_sessions_sqlx_store::{
    PostgresStore, SqliteStore,
    sqlx::{
        PgPool, SqlitePool,
        sqlite::{SqliteConnectOptions, SqliteJournalMode},
    },
};

/// The count lives under this key of the tower-sessions record (and of
/// Keel's package).
const COUNT_KEY: &str = "count";

/// The package of `keel serve`'s counter.
const KEEL_PACKAGE: &str = "keel.demo";

/// The setting that keeps the key ring (`keel serve` uses the same name).
const KEY_RING_SETTING: &str = "keel.key_ring";

/// The page counter on tower-sessions.
#[derive(Debug, Parser)]
#[command(name = "anchor", about)]
struct Args {
    /// Which tower-sessions store keeps the sessions.
    #[arg(long, value_enum)]
    store: StoreKind,
    /// The SQLite database file (`--store sqlite`); created if missing.
    #[arg(long, default_value = "./anchor.sqlite")]
    db: PathBuf,
    /// Use `journal_mode = WAL` instead of sqlx's default (rollback journal).
    #[arg(long)]
    sqlite_wal: bool,
    /// The PostgreSQL database (`--store postgres`),
    /// `postgres://USER@HOST:PORT/DB`; it must exist.
    #[arg(long, required_if_eq("store", "postgres"))]
    pg_url: Option<String>,
    /// The Redis database (`--store redis`), `redis://HOST:PORT/DB`. The
    /// store's keys are bare session ids: use a database number of its own.
    #[arg(long, required_if_eq("store", "redis"))]
    redis_url: Option<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    addr: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StoreKind {
    /// tower-sessions-sqlx-store's `SqliteStore`, on a file.
    Sqlite,
    /// tower-sessions-sqlx-store's `PostgresStore`, on `--pg-url`.
    Postgres,
    /// tower-sessions-redis-store's `RedisStore`, on `--redis-url`.
    Redis,
    /// tower-sessions' `MemoryStore`.
    Memory,
    /// Keel's library (no tower-sessions): `SessionLayer` over a redb file.
    Keel,
}

#[derive(Debug, Serialize)]
struct Count {
    count: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("anchor: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("anchor: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    match args.store {
        StoreKind::Memory => serve(args.addr, MemoryStore::default()).await,
        StoreKind::Keel => serve_keel(args.addr, &args.db).await,
        StoreKind::Sqlite => {
            let mut options = SqliteConnectOptions::new()
                .filename(&args.db)
                .create_if_missing(true);
            if args.sqlite_wal {
                options = options.journal_mode(SqliteJournalMode::Wal);
            }
            let pool = SqlitePool::connect_with(options).await?;
            let store = SqliteStore::new(pool.clone());
            store.migrate().await?;
            let served = serve(args.addr, store).await;
            pool.close().await;
            served
        }
        StoreKind::Postgres => {
            let url = args
                .pg_url
                .as_deref()
                .ok_or("--store postgres needs --pg-url")?;
            // sqlx's default pool: at most 10 connections.
            let pool = PgPool::connect(url).await?;
            let store = PostgresStore::new(pool.clone());
            store.migrate().await?;
            let served = serve(args.addr, store).await;
            pool.close().await;
            served
        }
        StoreKind::Redis => {
            let url = args
                .redis_url
                .as_deref()
                .ok_or("--store redis needs --redis-url")?;
            // The store's README: `Pool::new(Config::default(), None, None,
            // None, 6)`, connect, wait; here the config comes from the URL
            // (for the database number), fred's defaults otherwise.
            let pool = Pool::new(Config::from_url(url)?, None, None, None, 6)?;
            let connection = pool.connect();
            pool.wait_for_connect().await?;
            let served = serve(args.addr, RedisStore::new(pool.clone())).await;
            pool.quit().await?;
            connection.await??;
            served
        }
    }
}

async fn serve<S: SessionStore + Clone>(
    addr: SocketAddr,
    store: S,
) -> Result<(), Box<dyn std::error::Error>> {
    // NOTE: `Secure` off because the benchmark speaks plain HTTP; the client
    // ignores cookie attributes anyway, so this changes no work done.
    let sessions = SessionManagerLayer::new(store).with_secure(false);
    let app = Router::new()
        .route("/api/count", get(read_count).post(increment))
        .layer(sessions);
    listen(addr, app).await
}

/// Serve `app` on `addr` until SIGTERM or Ctrl-C, announcing the address.
async fn listen(addr: SocketAddr, app: Router) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}

/// The same page counter on Keel's library: `SessionLayer` over a
/// `RedbContainer` on `db`.
async fn serve_keel(addr: SocketAddr, db: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let container = Arc::new(RedbContainer::open(db)?);
    // The key ring lives in the database, as with `keel serve`, so that the
    // cookies still name their sessions after a restart on the same file.
    let stored =
        container.initialize_setting(KEY_RING_SETTING, &KeyRing::generate()?.to_bytes())?;
    let ids = CookieConfig::keel(KeyRing::from_bytes(&stored)?).build()?;
    let manager = SessionManager::new(ids, ContainerRegistry::new().with_default(container));
    let app = Router::new()
        .route("/api/count", get(keel_read).post(keel_increment))
        .layer(SessionLayer::new(manager));
    listen(addr, app).await
}

async fn keel_read(session: keel_session::Session) -> Result<Json<Count>, SessionError> {
    let count = session.value::<u64>(KEEL_PACKAGE, COUNT_KEY)?.unwrap_or(0);
    Ok(Json(Count { count }))
}

async fn keel_increment(session: keel_session::Session) -> Result<Json<Count>, SessionError> {
    let data = session.pkg(KEEL_PACKAGE)?;
    let count = data.get::<u64>(COUNT_KEY)?.unwrap_or(0) + 1;
    data.insert(COUNT_KEY, count)?;
    Ok(Json(Count { count }))
}

async fn read_count(session: Session) -> Result<Json<Count>, (StatusCode, String)> {
    let count = session
        .get::<u64>(COUNT_KEY)
        .await
        .map_err(internal)?
        .unwrap_or(0);
    Ok(Json(Count { count }))
}

async fn increment(session: Session) -> Result<Json<Count>, (StatusCode, String)> {
    let count = session
        .get::<u64>(COUNT_KEY)
        .await
        .map_err(internal)?
        .unwrap_or(0)
        + 1;
    session.insert(COUNT_KEY, count).await.map_err(internal)?;
    Ok(Json(Count { count }))
}

fn internal(err: tower_sessions::session::Error) -> (StatusCode, String) {
    (StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
}

/// Resolves on SIGTERM or Ctrl-C; axum then lets in-flight requests finish.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
