//! `keel`: the demo server (`keel serve`) and session administration.

mod serve;

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
    /// Run the demo: a durable page counter with a JSON API.
    Serve(ServeArgs),
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
    /// The session database file (redb).
    #[arg(long, default_value = "./keel.redb")]
    db: PathBuf,
    /// Keep sessions in memory (the RAM container) instead of a file.
    #[arg(long, conflicts_with = "db")]
    memory: bool,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
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
    /// the admin API is disabled.
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// Name of the session cookie.
    #[arg(long, default_value = "keel_session")]
    cookie_name: String,
    /// Client id format.
    #[arg(long, value_enum, default_value_t = IdFormat::Keel)]
    id_format: IdFormat,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("keel: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

/// Errors of the `keel` command.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Store(#[from] keel_store::StoreError),
    #[error(transparent)]
    Session(#[from] keel_session::SessionError),
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}
