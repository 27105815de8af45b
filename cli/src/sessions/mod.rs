//! `keel sessions ...`: session administration, offline on a database file
//! (`--db`) or online against a running server's admin API (`--url`,
//! `--token-file`). Both modes print the same tables and the same `--json`.
//!
//! Sessions are shown only by their `key` (the hashed client id); nothing
//! here prints a client id, a cookie value or a secret.

mod check;
pub(crate) mod offline;
pub(crate) mod online;

use std::{
    io::{BufWriter, Write},
    path::PathBuf,
};

use clap::Subcommand;
use keel_store::ExpiryPolicy;

use crate::{
    CliError,
    database::Database,
    ops, output,
    progress::Progress,
    wire::{RevokedJson, SessionJson, StatsJson, SweepJson},
};

/// Options of `keel sessions`.
#[derive(Debug, clap::Args)]
pub(crate) struct SessionsArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(subcommand)]
    command: SessionsCommand,
}

/// Where the sessions are, and how to print them.
#[derive(Debug, clap::Args)]
struct TargetArgs {
    /// The session database (offline mode; default ./keel.redb): a redb file,
    /// which must exist and no server may hold open, or a PostgreSQL URL
    /// (postgres://USER@HOST:PORT/DB) or Redis URL (redis://HOST:PORT, or
    /// redis+cluster://HOST:PORT,... for a Redis Cluster), which
    /// work while servers run.
    #[arg(long, global = true)]
    db: Option<PathBuf>,
    /// Base URL of a running `keel serve` (online mode, via its admin API),
    /// e.g. http://127.0.0.1:8080.
    #[arg(long, global = true)]
    url: Option<String>,
    /// File holding the admin bearer token (online mode).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Offline: the session timeout to judge expiry with, seconds (default:
    /// what the server last recorded in the file, else 3600).
    #[arg(long, global = true)]
    timeout: Option<u64>,
    /// Offline: the last-access resolution, seconds (default: what the
    /// server last recorded in the file, else 600).
    #[arg(long, global = true)]
    resolution: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum SessionsCommand {
    /// List sessions by key, in key order.
    List {
        /// Show at most this many sessions.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// Start after this key (the last key of the previous page).
        #[arg(long)]
        after: Option<String>,
        /// List every session (ignores --limit).
        #[arg(long)]
        all: bool,
    },
    /// Show one session with its data (values as JSON).
    Show {
        /// The session's key (64 hex digits, from `list`), or a unique
        /// prefix of it (8 hex digits or more).
        key: String,
    },
    /// Delete sessions.
    Rm {
        /// The sessions' keys, or unique prefixes of them (8 hex digits or
        /// more).
        #[arg(required = true)]
        keys: Vec<String>,
        /// Say which sessions would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete every session of a principal ("log out everywhere").
    RevokePrincipal {
        /// The principal (user name).
        name: String,
        /// Say how many sessions would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Session count, bytes, age and idle time distribution, sweep backlog;
    /// online also the server's transaction counters.
    Stats,
    /// Delete every expired session, in bounded batches (progress on a
    /// terminal).
    Sweep {
        /// Sessions per batch, one durable commit each (default: 1000
        /// offline, 250 online).
        #[arg(long)]
        batch: Option<usize>,
        /// Say how many sessions would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Offline, with a --timeout or --resolution stricter than the
        /// policy the server recorded: delete the sessions that policy still
        /// counts as live too (without it, such a sweep is refused).
        #[arg(long)]
        yes: bool,
    },
    /// Write every session with its data as JSON lines (progress on a
    /// terminal).
    Export {
        /// Write to this file instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Check a redb database file completely (offline only, with no server
    /// holding it): every page's checksum and b-tree, every session record
    /// and value, the indexes. Never changes a byte of the file; exits 1
    /// when damage is found.
    Check,
    /// Fill a database with generated sessions (for measurements; offline
    /// only).
    #[command(hide = true)]
    Populate {
        /// Sessions to create.
        #[arg(long)]
        count: u64,
        /// Of which this many already expired.
        #[arg(long, default_value_t = 0)]
        expired: u64,
        /// Sessions per transaction.
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
    },
}

impl SessionsCommand {
    /// Whether the command only reads: offline, it opens the database file
    /// read-only and never changes a byte of it.
    fn only_reads(&self) -> bool {
        match self {
            SessionsCommand::List { .. }
            | SessionsCommand::Show { .. }
            | SessionsCommand::Stats
            | SessionsCommand::Export { .. }
            | SessionsCommand::Check => true,
            SessionsCommand::Rm { dry_run, .. }
            | SessionsCommand::RevokePrincipal { dry_run, .. }
            | SessionsCommand::Sweep { dry_run, .. } => *dry_run,
            SessionsCommand::Populate { .. } => false,
        }
    }
}

/// The admin operations, offline or online. Keys are validated before they
/// get here.
trait Admin {
    /// The current time, Unix seconds (for "ago" columns).
    fn now(&self) -> u64;
    fn list(
        &self,
        after: Option<&str>,
        limit: usize,
        data: bool,
    ) -> Result<Vec<SessionJson>, CliError>;
    fn show(&self, key: &str) -> Result<Option<SessionJson>, CliError>;
    /// Delete one session: 1 if it existed, else 0.
    fn remove(&self, key: &str) -> Result<u64, CliError>;
    fn revoke(&self, principal: &str) -> Result<RevokedJson, CliError>;
    fn stats(&self) -> Result<StatsJson, CliError>;
    /// The sweep batch size when none is given.
    fn default_sweep_batch(&self) -> usize;
    /// Sweep a few batches of at most `batch` expired sessions each.
    fn sweep_step(&self, batch: usize) -> Result<SweepJson, CliError>;
    /// Offline: the expiry policy the server recorded in the database, if
    /// any, and the one this command judges with (the recorded one, or
    /// --timeout/--resolution over it). `None` online (the server's own).
    fn policies(&self) -> Option<(Option<ExpiryPolicy>, ExpiryPolicy)> {
        None
    }
}

/// The database of offline mode by default.
const DEFAULT_DB: &str = "./keel.redb";

/// Run `keel sessions`.
pub(crate) fn run(args: SessionsArgs) -> Result<(), CliError> {
    let target = args.target;
    if target.url.is_some()
        && (target.db.is_some() || target.timeout.is_some() || target.resolution.is_some())
    {
        return Err(CliError::Usage(
            "--db, --timeout and --resolution are for offline mode; with --url the server \
             judges expiry"
                .to_owned(),
        ));
    }
    let db = target
        .db
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DB));
    if let SessionsCommand::Populate {
        count,
        expired,
        batch,
    } = args.command
    {
        if target.url.is_some() {
            return Err(CliError::Usage(
                "populate works offline only (--db)".to_owned(),
            ));
        }
        return offline::populate(
            &Database::from_arg(&db),
            target.timeout,
            target.resolution,
            count,
            expired,
            batch,
        );
    }
    if let SessionsCommand::Check = args.command {
        if target.url.is_some() {
            return Err(CliError::Usage(
                "check works offline only (--db FILE, with the server stopped or on a copy)"
                    .to_owned(),
            ));
        }
        let stdout = std::io::stdout();
        let mut out = BufWriter::new(stdout.lock());
        let checked = check::run(&Database::from_arg(&db), target.json, &mut out);
        out.flush().map_err(CliError::Output)?;
        return checked;
    }
    let admin: Box<dyn Admin> = match &target.url {
        Some(url) => {
            let token_file = target.token_file.as_ref().ok_or_else(|| {
                CliError::Usage("--url needs --token-file (the server's admin token)".to_owned())
            })?;
            Box::new(online::Online::connect(url, token_file)?)
        }
        None => Box::new(offline::Offline::open(
            &Database::from_arg(&db),
            target.timeout,
            target.resolution,
            args.command.only_reads(),
        )?),
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    execute(admin.as_ref(), args.command, target.json, &mut out)?;
    out.flush().map_err(CliError::Output)
}

fn execute(
    admin: &dyn Admin,
    command: SessionsCommand,
    json: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    match command {
        SessionsCommand::List { limit, after, all } => {
            list(admin, after, (!all).then_some(limit), json, out)
        }
        SessionsCommand::Show { key } => {
            let key = resolve_key(admin, &key)?;
            let session = admin
                .show(&key)?
                .ok_or_else(|| CliError::NotFound(format!("no session {key}")))?;
            if json {
                output::json_pretty(out, &session)
            } else {
                write_text(out, &output::session_text(&session, admin.now()))
            }
        }
        SessionsCommand::Rm { keys, dry_run } => {
            let keys = keys
                .iter()
                .map(|key| resolve_key(admin, key))
                .collect::<Result<Vec<_>, _>>()?;
            if dry_run {
                return rm_dry_run(admin, &keys, json, out);
            }
            let mut removed = 0;
            let mut missing = Vec::new();
            for key in &keys {
                if admin.remove(key)? == 0 {
                    missing.push(key.clone());
                } else {
                    removed += 1;
                    if !json {
                        write_text(out, &format!("removed session {key}\n"))?;
                    }
                }
            }
            if json {
                output::json_pretty(out, &crate::wire::RemovedJson { removed })?;
            }
            no_missing_sessions(&missing)
        }
        SessionsCommand::RevokePrincipal { name, dry_run } => {
            if dry_run {
                let removed = count_sessions(admin, |s| s.principal.as_deref() == Some(&name))?;
                return dry_run_report(
                    out,
                    json,
                    removed,
                    &format!("session{} of principal {name:?}", plural(removed)),
                );
            }
            let revoked = admin.revoke(&name)?;
            if json {
                output::json_pretty(out, &revoked)
            } else {
                write_text(
                    out,
                    &format!(
                        "removed {} session{} of principal {:?}\n",
                        revoked.removed,
                        plural(revoked.removed),
                        revoked.principal
                    ),
                )
            }
        }
        SessionsCommand::Stats => {
            let stats = admin.stats()?;
            if json {
                output::json_pretty(out, &stats)
            } else {
                write_text(out, &output::stats_text(&stats))
            }
        }
        SessionsCommand::Sweep {
            batch,
            dry_run,
            yes,
        } => {
            check_sweep_policy(admin, yes || dry_run)?;
            if dry_run {
                let now = admin.now();
                let policy = admin.policies().map(|(_, effective)| effective);
                let removed = count_sessions(admin, |s| match &policy {
                    Some(policy) => policy.is_expired(s.created, s.last_access, now),
                    None => s.expired,
                })?;
                return dry_run_report(
                    out,
                    json,
                    removed,
                    &format!("expired session{}", plural(removed)),
                );
            }
            let batch = batch.unwrap_or_else(|| admin.default_sweep_batch()).max(1);
            let swept = sweep(admin, batch)?;
            if json {
                output::json_pretty(out, &swept)
            } else {
                write_text(
                    out,
                    &format!(
                        "swept {} expired session{} in {} batch{} ({:.2} s)\n",
                        swept.removed,
                        plural(swept.removed),
                        swept.batches,
                        if swept.batches == 1 { "" } else { "es" },
                        swept.seconds
                    ),
                )
            }
        }
        SessionsCommand::Export { output: path } => match path {
            None => export(admin, out),
            Some(path) => {
                // Every session's data: readable by its owner only (a file
                // that exists keeps its mode).
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create(true).truncate(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let file = options.open(&path).map_err(|source| CliError::WriteFile {
                    path: path.clone(),
                    source,
                })?;
                let mut file = BufWriter::new(file);
                export(admin, &mut file)?;
                file.flush()
                    .map_err(|source| CliError::WriteFile { path, source })
            }
        },
        SessionsCommand::Populate { .. } => Err(CliError::Usage(
            "populate works offline only (--db)".to_owned(),
        )),
        SessionsCommand::Check => Err(CliError::Usage(
            "check works offline only (--db FILE)".to_owned(),
        )),
    }
}

fn plural(count: u64) -> &'static str {
    if count == 1 { "" } else { "s" }
}

fn write_text(out: &mut impl Write, text: &str) -> Result<(), CliError> {
    out.write_all(text.as_bytes()).map_err(CliError::Output)
}

/// Refuse a malformed key before asking anyone.
fn check_key(key: &str) -> Result<(), CliError> {
    ops::parse_key(key).map(|_| ()).map_err(CliError::Store)
}

/// How many stored sessions `pick` picks (paging through all of them).
fn count_sessions(
    admin: &dyn Admin,
    mut pick: impl FnMut(&SessionJson) -> bool,
) -> Result<u64, CliError> {
    let mut cursor: Option<String> = None;
    let mut picked = 0;
    loop {
        let page = admin.list(cursor.as_deref(), PAGE, false)?;
        picked += page.iter().filter(|s| pick(s)).count() as u64;
        if page.len() < PAGE {
            return Ok(picked);
        }
        cursor = page.last().map(|s| s.key.clone());
    }
}

/// What a `--dry-run` found: `would remove N WHAT (nothing was written)`.
fn dry_run_report(
    out: &mut impl Write,
    json: bool,
    would_remove: u64,
    what: &str,
) -> Result<(), CliError> {
    if json {
        output::json_pretty(
            out,
            &serde_json::json!({ "dry_run": true, "would_remove": would_remove }),
        )
    } else {
        write_text(
            out,
            &format!("would remove {would_remove} {what} (dry run: nothing was written)\n"),
        )
    }
}

/// `rm --dry-run`: which of `keys` exist; an error naming the others, as
/// `rm` gives.
fn rm_dry_run(
    admin: &dyn Admin,
    keys: &[String],
    json: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let mut found = 0;
    let mut missing = Vec::new();
    for key in keys {
        if admin.show(key)?.is_some() {
            found += 1;
            if !json {
                write_text(out, &format!("would remove session {key}\n"))?;
            }
        } else {
            missing.push(key.clone());
        }
    }
    if json {
        output::json_pretty(
            out,
            &serde_json::json!({ "dry_run": true, "would_remove": found }),
        )?;
    } else {
        write_text(out, "(dry run: nothing was written)\n")?;
    }
    no_missing_sessions(&missing)
}

/// `Ok` when no key of `rm` was missing, else the error naming them.
fn no_missing_sessions(missing: &[String]) -> Result<(), CliError> {
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CliError::NotFound(format!(
            "no session {}",
            missing.join(", no session ")
        )))
    }
}

/// Offline, an explicit --timeout/--resolution stricter than the policy the
/// server recorded would sweep sessions the server counts as live: refused
/// unless `confirmed` (`--yes`, or a `--dry-run` that writes nothing).
fn check_sweep_policy(admin: &dyn Admin, confirmed: bool) -> Result<(), CliError> {
    let Some((Some(recorded), effective)) = admin.policies() else {
        return Ok(());
    };
    if confirmed || recorded == effective {
        return Ok(());
    }
    let now = admin.now();
    let live_swept = count_sessions(admin, |s| {
        effective.is_expired(s.created, s.last_access, now)
            && !recorded.is_expired(s.created, s.last_access, now)
    })?;
    if live_swept == 0 {
        return Ok(());
    }
    Err(CliError::Usage(format!(
        "with timeout {} s and resolution {} s this sweep would delete {live_swept} session{} that the server's recorded policy (timeout {} s, resolution {} s) counts as live; add --yes to delete them, or see the count with --dry-run",
        effective.timeout(),
        effective.resolution(),
        plural(live_swept),
        recorded.timeout(),
        recorded.resolution(),
    )))
}

/// The shortest key prefix `show` and `rm` take.
const MIN_PREFIX: usize = 8;

/// `key` itself if it is a whole key (64 hex digits); the one stored key
/// that starts with it if it is a prefix of 8 or more hex digits.
///
/// # Errors
/// [`CliError::Store`] (Keel's words) for what is not hex or too short;
/// [`CliError::NotFound`] when no key starts with the prefix, or when
/// several do (naming them, so the user can pick).
fn resolve_key(admin: &dyn Admin, key: &str) -> Result<String, CliError> {
    if key.len() >= 64 || key.chars().any(|c| !c.is_ascii_hexdigit()) {
        check_key(key)?;
        return Ok(key.to_owned());
    }
    if key.len() < MIN_PREFIX {
        return Err(CliError::Store(keel_store::StoreError::InvalidInput {
            what: "session key",
            reason: format!(
                "{key:?} is too short to name a session: give its 64 hex digits or a prefix of {MIN_PREFIX} or more"
            ),
        }));
    }
    let prefix = key.to_ascii_lowercase();
    // The keys in order start at prefix + "000…": list after the key just
    // before that one (none if it is the very first key).
    let lowest = format!("{prefix:0<64}");
    let after = key_before(&lowest);
    const SHOWN: usize = 10;
    let matches: Vec<String> = admin
        .list(after.as_deref(), SHOWN + 1, false)?
        .into_iter()
        .map(|session| session.key)
        .take_while(|found| found.starts_with(&prefix))
        .collect();
    match matches.as_slice() {
        [] => Err(CliError::NotFound(format!(
            "no session whose key starts with {prefix}"
        ))),
        [one] => Ok(one.clone()),
        several => {
            let more = if several.len() > SHOWN { ", ..." } else { "" };
            let listed: Vec<&str> = several.iter().take(SHOWN).map(String::as_str).collect();
            Err(CliError::NotFound(format!(
                "{prefix} is the start of several session keys ({}{more}): give more digits",
                listed.join(", ")
            )))
        }
    }
}

/// The 64-hex-digit key just before `key` in order, `None` for the first.
fn key_before(key: &str) -> Option<String> {
    let mut bytes = *ops::parse_key(key).ok()?.as_bytes();
    for byte in bytes.iter_mut().rev() {
        if *byte > 0 {
            *byte -= 1;
            return Some(keel_store::ClientKey::from_bytes(bytes).to_string());
        }
        *byte = 0xff;
    }
    None
}

/// Sessions per request when paging through everything.
const PAGE: usize = 500;

fn list(
    admin: &dyn Admin,
    after: Option<String>,
    limit: Option<usize>,
    json: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    if let Some(after) = &after {
        check_key(after)?;
    }
    let mut sessions = Vec::new();
    let mut cursor = after;
    let mut more = false;
    loop {
        let want = match limit {
            Some(limit) => (limit - sessions.len()).min(PAGE),
            None => PAGE,
        };
        if want == 0 {
            // The limit is reached: is there anything after it?
            more = !admin.list(cursor.as_deref(), 1, false)?.is_empty();
            break;
        }
        let page = admin.list(cursor.as_deref(), want, false)?;
        let full = page.len() == want;
        cursor = page.last().map(|s| s.key.clone()).or(cursor);
        sessions.extend(page);
        if !full {
            break;
        }
    }
    if json {
        output::json_pretty(out, &sessions)?;
    } else if sessions.is_empty() {
        write_text(out, "no sessions\n")?;
    } else {
        write_text(out, &output::sessions_table(&sessions, admin.now()))?;
    }
    if more && let Some(last) = sessions.last() {
        eprintln!(
            "(the first {} sessions; for more: --after {} or --all)",
            sessions.len(),
            last.key
        );
    }
    Ok(())
}

/// Sweep until nothing expired remains, one batch at a time, with progress.
fn sweep(admin: &dyn Admin, batch: usize) -> Result<SweepJson, CliError> {
    let started = std::time::Instant::now();
    let mut progress = Progress::on_terminal("sweeping", "expired sessions removed");
    let mut total = SweepJson {
        removed: 0,
        batches: 0,
        more: false,
        seconds: 0.0,
    };
    loop {
        let step = admin.sweep_step(batch)?;
        total.removed += step.removed;
        total.batches += step.batches;
        progress.update(total.removed);
        if !step.more || step.removed == 0 {
            break;
        }
    }
    progress.finish(total.removed);
    total.seconds = started.elapsed().as_secs_f64();
    Ok(total)
}

/// Every session with its data, one JSON object per line.
fn export(admin: &dyn Admin, out: &mut impl Write) -> Result<(), CliError> {
    let mut progress = Progress::on_terminal("exporting", "sessions");
    let mut cursor: Option<String> = None;
    let mut exported = 0;
    loop {
        let page = admin.list(cursor.as_deref(), PAGE, true)?;
        for session in &page {
            output::json_line(out, session)?;
        }
        exported += page.len() as u64;
        progress.update(exported);
        // NOTE: a page can be short because sessions were deleted between
        // being listed and being read, so only an empty page ends it.
        match page.last() {
            Some(last) => cursor = Some(last.key.clone()),
            None => break,
        }
    }
    progress.finish(exported);
    Ok(())
}

#[cfg(test)]
mod tests {
    use keel_store::{ClientKey, RamContainer, SessionContainer};
    use keel_txn::TransactionManager;

    use super::*;

    /// An offline admin over sessions with the keys `keys`.
    fn admin_with(keys: &[ClientKey]) -> offline::Offline {
        let container = RamContainer::new();
        let manager = TransactionManager::new();
        for key in keys {
            let mut tx = manager.begin();
            container.create_session(&mut tx, key).unwrap();
            tx.commit().unwrap();
        }
        offline::Offline::over(Box::new(container))
    }

    fn key(first: [u8; 4], last: u8) -> ClientKey {
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&first);
        bytes[31] = last;
        ClientKey::from_bytes(bytes)
    }

    fn run(admin: &offline::Offline, command: SessionsCommand) -> Result<String, CliError> {
        let mut out = Vec::new();
        execute(admin, command, false, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    fn show(key: &str) -> SessionsCommand {
        SessionsCommand::Show {
            key: key.to_owned(),
        }
    }

    #[test]
    fn a_unique_prefix_names_a_session_and_an_ambiguous_one_lists_the_matches() {
        let (a, b) = (
            key([0xab, 0xcd, 0xef, 0x01], 1),
            key([0xab, 0xcd, 0xef, 0x01], 2),
        );
        let (c, zero) = (
            key([0x12, 0x34, 0x56, 0x78], 9),
            ClientKey::from_bytes([0; 32]),
        );
        let admin = admin_with(&[a, b, c, zero]);

        let shown = run(&admin, show("12345678")).unwrap();
        assert!(shown.contains(&c.to_string()), "{shown}");
        // Upper case, and the very first key (nothing before it).
        assert!(run(&admin, show("1234567800")).is_ok());
        let first = run(&admin, show("00000000")).unwrap();
        assert!(first.contains(&zero.to_string()), "{first}");

        let err = run(&admin, show("ABCDEF01")).unwrap_err().to_string();
        assert!(err.contains("several"), "{err}");
        assert!(
            err.contains(&a.to_string()) && err.contains(&b.to_string()),
            "{err}"
        );

        let err = run(&admin, show("1234567")).unwrap_err().to_string();
        assert!(err.contains("too short"), "{err}");
        let err = run(&admin, show("99999999")).unwrap_err().to_string();
        assert!(
            err.contains("no session whose key starts with 99999999"),
            "{err}"
        );
        let err = run(&admin, show("12345678zz")).unwrap_err().to_string();
        assert!(
            err.contains("'z' at position 9 is not a hex digit"),
            "{err}"
        );

        let removed = run(
            &admin,
            SessionsCommand::Rm {
                keys: vec![a.to_string(), "12345678".to_owned()],
                dry_run: false,
            },
        )
        .unwrap();
        assert!(
            removed.contains(&a.to_string()) && removed.contains(&c.to_string()),
            "{removed}"
        );
        let left = run(&admin, show("abcdef01")).unwrap();
        assert!(
            left.contains(&b.to_string()),
            "only b starts with it now: {left}"
        );
    }

    /// Sessions made at second 1000 and at 1100, the clock at 1200, the
    /// server's recorded policy 3600 s / 600 s, this command's 60 s / 10 s.
    fn stricter_than_recorded() -> (offline::Offline, Vec<ClientKey>) {
        let clock = keel_store::ManualClock::new(1000);
        let strict = ExpiryPolicy::default().with_timeout(60).with_resolution(10);
        let container = RamContainer::new()
            .with_expiry(strict)
            .with_clock(std::sync::Arc::new(clock.clone()));
        let recorded = ExpiryPolicy::default()
            .with_timeout(3600)
            .with_resolution(600);
        crate::policy::store(&container, &recorded).unwrap();
        let manager = TransactionManager::new();
        let mut keys = Vec::new();
        for (n, at) in [(1, 1000), (2, 1000), (3, 1100), (4, 1190)] {
            clock.set(at);
            let key = ClientKey::from_client_id(&format!("client {n}"));
            let mut tx = manager.begin();
            container.create_session(&mut tx, &key).unwrap();
            tx.commit().unwrap();
            keys.push(key);
        }
        clock.set(1200);
        (offline::Offline::over(Box::new(container)), keys)
    }

    fn sweep(dry_run: bool, yes: bool) -> SessionsCommand {
        SessionsCommand::Sweep {
            batch: None,
            dry_run,
            yes,
        }
    }

    #[test]
    fn a_sweep_stricter_than_the_recorded_policy_asks_for_yes_and_a_dry_run_writes_nothing() {
        let (admin, keys) = stricter_than_recorded();
        // 1000 + 60 + 10 < 1200: three sessions are expired by this
        // command's policy, none by the server's.
        let err = run(&admin, sweep(false, false)).unwrap_err().to_string();
        assert!(err.contains("would delete 3 sessions"), "{err}");
        assert!(err.contains("--yes"), "{err}");
        let dry = run(&admin, sweep(true, false)).unwrap();
        assert_eq!(
            dry,
            "would remove 3 expired sessions (dry run: nothing was written)\n"
        );
        assert_eq!(admin.stats().unwrap().sessions, 4, "nothing was written");

        let rm = run(
            &admin,
            SessionsCommand::Rm {
                keys: vec![keys[0].to_string()],
                dry_run: true,
            },
        )
        .unwrap();
        assert!(
            rm.contains(&format!("would remove session {}", keys[0])),
            "{rm}"
        );
        let revoke = run(
            &admin,
            SessionsCommand::RevokePrincipal {
                name: "nobody".to_owned(),
                dry_run: true,
            },
        )
        .unwrap();
        assert!(revoke.starts_with("would remove 0 sessions"), "{revoke}");
        assert_eq!(admin.stats().unwrap().sessions, 4, "nothing was written");

        let swept = run(&admin, sweep(false, true)).unwrap();
        assert!(swept.starts_with("swept 3 expired sessions"), "{swept}");
        assert_eq!(admin.stats().unwrap().sessions, 1);
    }

    #[test]
    fn an_empty_listing_says_so() {
        let admin = admin_with(&[]);
        let listed = run(
            &admin,
            SessionsCommand::List {
                limit: 10,
                after: None,
                all: false,
            },
        )
        .unwrap();
        assert_eq!(listed, "no sessions\n");
    }
}
