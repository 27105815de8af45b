//! `keel`: the demo server (`keel serve`) and session administration
//! (`keel sessions ...`, offline on a database file or online against a
//! running server's admin API).

// The server allocates a little on every request (headers, futures, the
// session's buffers); mimalloc's thread-local free lists serve that faster
// than glibc's malloc, which showed as 12% of a read-only request's CPU
// under load (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin_api;
mod database;
mod http_server;
mod keys;
mod metrics;
mod ops;
mod output;
mod policy;
mod progress;
mod serve;
mod sessions;
mod sweeper;
mod wire;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};

/// Keel: server-side HTTP sessions in a transactional store.
#[derive(Debug, Parser)]
#[command(name = "keel", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the demo: a durable page counter with a JSON API, the admin API
    /// and Prometheus metrics.
    Serve(ServeArgs),
    /// Inspect and manage sessions: offline on a database file (`--db`) or
    /// online against a running server (`--url`, `--token-file`).
    Sessions(sessions::SessionsArgs),
    /// Manage the signing key ring of keel client ids: list, rotate,
    /// retire; offline (`--db`, `--secret-file`) or online (`--url`,
    /// `--token-file`). Running servers take up a change within
    /// `--key-reload-interval`.
    Keys(keys::KeysArgs),
}

/// Client id formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum IdFormat {
    /// 128-bit random ids signed with HMAC-SHA256 under a persisted key ring.
    Keel,
    /// zope.session's 54-character HMAC-SHA1 ids (needs --secret-file).
    Zope,
}

/// Options of `keel serve`.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The session database: a redb file, or a database several servers
    /// share: postgres://USER@HOST:PORT/DB[?schema=NAME] (default schema
    /// keel), redis://HOST:PORT[/DB][?prefix=NAME][&replicas=N] (default
    /// prefix keel; replicas: acknowledge a commit once N replicas have it)
    /// or redis+cluster://HOST:PORT[,HOST:PORT...][?prefix=NAME] (a Redis
    /// Cluster, any of its nodes).
    #[arg(long, default_value = "./keel.redb")]
    db: PathBuf,
    /// Keep sessions in memory (the RAM container) instead of a file.
    #[arg(long, conflicts_with = "db")]
    memory: bool,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Seconds a client has to send a request's headers, counted from the
    /// connection's start or the previous response; then the connection is
    /// closed.
    #[arg(long, default_value_t = 60, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout: u64,
    /// Seconds a client may pause while sending a request body; then the
    /// request is refused and the connection closed.
    #[arg(long, default_value_t = 60, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    body_timeout: u64,
    /// Seconds a keep-alive connection may stay silent between requests
    /// before it is closed (never longer than --header-timeout, whose clock
    /// also runs while a connection waits for a request).
    #[arg(long, default_value_t = 60, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
    /// Seconds in-flight requests get after SIGTERM or Ctrl-C; then the
    /// connections still open are closed. Commits already started finish
    /// first in any case.
    #[arg(long, default_value_t = 20, value_name = "SECONDS")]
    shutdown_timeout: u64,
    /// Session inactivity timeout, seconds (0 = never).
    #[arg(long)]
    timeout: Option<u64>,
    /// Last-access resolution, seconds.
    #[arg(long)]
    resolution: Option<u64>,
    /// File holding the id signing secret (trimmed). Required with
    /// `--id-format zope`; with `keel` ids and `--memory` it keeps ids valid
    /// across restarts.
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// File holding the bearer token of the admin API (trimmed). Without it
    /// the admin API is disabled: `/admin/...` answers 404.
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// Name of the session cookie.
    #[arg(long, default_value = "keel_session")]
    cookie_name: String,
    /// Keep the session cookie SECS seconds after the client's last request
    /// (Max-Age, re-sent with each request that uses the session, like
    /// zope.session's cookieLifetime); 0: until 2038, zope's "never".
    /// Default: a browser-session cookie, dropped when the browser closes.
    #[arg(long, value_name = "SECS")]
    cookie_lifetime: Option<u64>,
    /// The redb page cache, MiB: the most memory the database's pages take
    /// (pages are cached as requests, sweeps and `GET /admin/stats` read
    /// them). Smaller costs reads from the OS page cache instead.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    cache_size: usize,
    /// Client id format.
    #[arg(long, value_enum, default_value_t = IdFormat::Keel)]
    id_format: IdFormat,
    /// Seconds between background sweeps of expired sessions (default: the
    /// resolution, at least 1).
    #[arg(long)]
    sweep_interval: Option<u64>,
    /// Expired sessions deleted per sweep batch (one durable commit each).
    #[arg(long, default_value_t = sweeper::DEFAULT_BATCH)]
    sweep_batch: usize,
    /// Seconds between reads of the stored key ring (keel ids): a ring
    /// changed by `keel keys` is used at most this long after, without a
    /// restart (0 = never re-read; changes through this server's admin API
    /// still apply at once).
    #[arg(long, default_value_t = keys::reload::DEFAULT_RELOAD_INTERVAL.as_secs())]
    key_reload_interval: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,keel=info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Keys(args) => keys::run(args),
        Command::Sessions(args) => {
            quiet_panics();
            match std::panic::catch_unwind(|| sessions::run(args)) {
                Ok(result) => result,
                Err(_) => {
                    eprintln!(
                        "keel: internal error: {}",
                        last_panic().unwrap_or_else(|| "a panic".to_owned())
                    );
                    return ExitCode::from(101);
                }
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let mut shown = err.to_string();
            eprintln!("keel: {shown}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                // Most messages already end with their cause's text.
                let text = cause.to_string();
                if !shown.contains(&text) {
                    eprintln!("  caused by: {text}");
                    shown.push_str(&text);
                }
                source = cause.source();
            }
            if let Some(panic) = last_panic() {
                eprintln!("  detail: {panic}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The message of the last panic, recorded by [`quiet_panics`].
static LAST_PANIC: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Record panics instead of printing them with a backtrace.
///
/// NOTE: the store turns a panic of redb on a damaged file into
/// `StoreError::Corrupted`; the default hook would still print a backtrace
/// before that clear error. The recorded message is printed as a detail of
/// the error instead (or as the error, if nothing caught the panic).
fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = match info.payload().downcast_ref::<&str>() {
            Some(text) => (*text).to_owned(),
            None => info
                .payload()
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "a panic".to_owned()),
        };
        let location = info
            .location()
            .map(|l| format!(" (at {}:{})", l.file(), l.line()))
            .unwrap_or_default();
        let mut last = LAST_PANIC
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *last = Some(format!("{message}{location}"));
    }));
}

fn last_panic() -> Option<String> {
    LAST_PANIC
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
}

/// Errors of the `keel` command.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Store(#[from] keel_store::StoreError),
    /// A store error that does not name the database file by itself.
    #[error("{path}: {source}")]
    Database {
        path: PathBuf,
        #[source]
        source: keel_store::StoreError,
    },
    #[error(
        "{path}: no such database file (give the right --db, or --url to manage a running server)"
    )]
    NoDatabase { path: PathBuf },
    #[error("{path}: commit failed: {source}")]
    Commit {
        path: PathBuf,
        #[source]
        source: keel_txn::TxnError,
    },
    #[error(transparent)]
    Session(#[from] keel_session::SessionError),
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: ureq::Error,
    },
    #[error("{url} answered {status}: {message}")]
    Http {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{url} answered with unexpected JSON: {source}")]
    BadResponse {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0}")]
    NotFound(String),
    /// `keel sessions check` found damage (the report says which).
    #[error("{path} is damaged: {problems} problem(s) found (see the report above)")]
    Damaged { path: PathBuf, problems: u64 },
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
    #[error("cannot listen on {addr}: {source} (choose another address with --addr)")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
    #[error("a background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}
