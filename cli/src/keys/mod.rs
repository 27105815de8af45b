//! `keel keys ...`: the signing key ring of keel client ids, offline in the
//! database (`--db`) or a key ring file (`--secret-file`), or online through
//! a running server's admin API (`--url`, `--token-file`).
//!
//! - `list` shows each key's id, whether it signs new ids, and its age;
//!   never a secret.
//! - `rotate` adds a new signing key; cookies signed with the older keys
//!   keep verifying.
//! - `retire` keeps only the newest `--keep` keys: every cookie signed only
//!   with a retired key stops verifying, which logs those clients out, so
//!   it refuses without `--yes`.
//!
//! Servers read their stored ring again every `--key-reload-interval`
//! (default [`reload::DEFAULT_RELOAD_INTERVAL`]) and use a changed one from
//! then on, without a restart; a server changed through its admin API uses
//! it at once.

pub(crate) mod reload;
pub(crate) mod source;

use std::{
    io::{BufWriter, Write},
    path::PathBuf,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use clap::Subcommand;
use keel_session::KeyRing;
use keel_store::ExpiryPolicy;
use serde::{Deserialize, Serialize};

use self::source::RingSource;
use crate::{
    CliError,
    database::Database,
    output::{self, Table},
    sessions::{offline, online::Online},
};

/// Options of `keel keys`.
#[derive(Debug, clap::Args)]
pub(crate) struct KeysArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(subcommand)]
    command: KeysCommand,
}

/// Where the key ring is, and how to print it.
#[derive(Debug, clap::Args)]
struct TargetArgs {
    /// The session database holding the key ring (offline mode; default
    /// ./keel.redb): a redb file no server holds open, or a PostgreSQL or
    /// Redis URL, which work while servers run (they reload the ring).
    #[arg(long, global = true)]
    db: Option<PathBuf>,
    /// A key ring file, as given to `keel serve --secret-file` (offline
    /// mode, instead of --db).
    #[arg(long, global = true, conflicts_with = "db")]
    secret_file: Option<PathBuf>,
    /// Base URL of a running `keel serve` (online mode, via its admin API),
    /// e.g. http://127.0.0.1:8080.
    #[arg(long, global = true, conflicts_with_all = ["db", "secret_file"])]
    url: Option<String>,
    /// File holding the admin bearer token (online mode).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// List the keys: id, whether it signs new cookies, creation time and
    /// age (never key material).
    List,
    /// Add a new signing key. Cookies signed with the older keys keep
    /// verifying.
    Rotate,
    /// Remove all but the newest keys. Cookies signed only with a removed
    /// key stop verifying: those clients are logged out.
    Retire {
        /// How many of the newest keys to keep (at least 1).
        #[arg(long, default_value_t = 1)]
        keep: usize,
        /// Do it: without this, only say what would be retired.
        #[arg(long)]
        yes: bool,
    },
}

/// One key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyJson {
    /// The key id (written into every cookie it signs).
    pub(crate) id: u16,
    /// Whether it signs new cookies (the newest key).
    pub(crate) signing: bool,
    /// When it was made, Unix seconds; `null` if unknown (a key from a ring
    /// written by an older Keel).
    pub(crate) created: Option<u64>,
    /// How long ago it was made, seconds; `null` if unknown.
    pub(crate) age_seconds: Option<u64>,
}

/// A key ring, and what a command changed in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeysJson {
    /// The key `rotate` added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) added: Option<u16>,
    /// The keys `retire` removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) retired: Vec<u16>,
    /// The keys, oldest first.
    pub(crate) keys: Vec<KeyJson>,
}

impl KeysJson {
    /// The keys of `ring`, as of `now` (Unix seconds).
    pub(crate) fn of(ring: &KeyRing, now: u64) -> Self {
        let keys = ring
            .key_ids()
            .map(|id| {
                let created = ring
                    .created(id)
                    .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
                    .map(|since| since.as_secs());
                KeyJson {
                    id,
                    signing: id == ring.current_key_id(),
                    created,
                    age_seconds: created.map(|created| now.saturating_sub(created)),
                }
            })
            .collect();
        KeysJson {
            added: None,
            retired: Vec::new(),
            keys,
        }
    }
}

/// Now, Unix seconds.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The stored ring of `source`.
///
/// # Errors
/// As [`RingSource::load`].
pub(crate) fn list(source: &RingSource) -> Result<KeysJson, CliError> {
    Ok(KeysJson::of(&source.load()?, now()))
}

/// Add a new signing key to the ring stored in `source`.
///
/// NOTE: read, change, write: two rotations at the same moment may store
/// only one new key (both rings are valid, and cookies of either key keep
/// verifying only if it was stored). Run one key command at a time.
///
/// # Errors
/// As [`RingSource::load`] and [`RingSource::store`];
/// [`CliError::Session`] if the random number generator fails.
pub(crate) fn rotate(source: &RingSource) -> Result<KeysJson, CliError> {
    let mut ring = source.load()?;
    let added = ring.rotate()?;
    source.store(&ring)?;
    let mut json = KeysJson::of(&ring, now());
    json.added = Some(added);
    Ok(json)
}

/// Keep only the `keep` newest keys (at least one) of the ring stored in
/// `source`; stores nothing if none goes.
///
/// # Errors
/// As [`RingSource::load`] and [`RingSource::store`].
pub(crate) fn retire(source: &RingSource, keep: usize) -> Result<KeysJson, CliError> {
    let mut ring = source.load()?;
    let retired = to_retire(&ring.key_ids().collect::<Vec<_>>(), keep);
    if !retired.is_empty() {
        ring.retain_newest(keep);
        source.store(&ring)?;
    }
    let mut json = KeysJson::of(&ring, now());
    json.retired = retired;
    Ok(json)
}

/// The ids `retire --keep keep` removes from a ring of `ids` (oldest
/// first).
fn to_retire(ids: &[u16], keep: usize) -> Vec<u16> {
    let keep = keep.max(1);
    ids[..ids.len().saturating_sub(keep)].to_vec()
}

/// The key operations, offline or online.
trait Keys {
    fn list(&self) -> Result<KeysJson, CliError>;
    fn rotate(&self) -> Result<KeysJson, CliError>;
    fn retire(&self, keep: usize) -> Result<KeysJson, CliError>;
    /// When running servers use a change: a sentence for the output.
    fn takes_effect(&self) -> &'static str;
}

/// Offline: the ring in a database or a file.
struct Offline(RingSource);

impl Keys for Offline {
    fn list(&self) -> Result<KeysJson, CliError> {
        list(&self.0)
    }

    fn rotate(&self) -> Result<KeysJson, CliError> {
        rotate(&self.0)
    }

    fn retire(&self, keep: usize) -> Result<KeysJson, CliError> {
        retire(&self.0, keep)
    }

    fn takes_effect(&self) -> &'static str {
        "Running servers using this ring take it up within their --key-reload-interval \
         (default 10 s), without a restart."
    }
}

/// Online: a server's admin API.
struct Remote(Online);

impl Keys for Remote {
    fn list(&self) -> Result<KeysJson, CliError> {
        self.0.expect("GET", "/admin/keys")
    }

    fn rotate(&self) -> Result<KeysJson, CliError> {
        self.0.expect("POST", "/admin/keys/rotate")
    }

    fn retire(&self, keep: usize) -> Result<KeysJson, CliError> {
        self.0
            .expect("POST", &format!("/admin/keys/retire?keep={keep}"))
    }

    fn takes_effect(&self) -> &'static str {
        "This server uses it now; other servers sharing its database within their \
         --key-reload-interval (default 10 s), without a restart."
    }
}

/// The database of offline mode by default.
const DEFAULT_DB: &str = "./keel.redb";

/// Run `keel keys`.
pub(crate) fn run(args: KeysArgs) -> Result<(), CliError> {
    let target = args.target;
    let keys: Box<dyn Keys> = match (&target.url, &target.secret_file) {
        (Some(url), _) => {
            let token_file = target.token_file.as_ref().ok_or_else(|| {
                CliError::Usage("--url needs --token-file (the server's admin token)".to_owned())
            })?;
            Box::new(Remote(Online::connect(url, token_file)?))
        }
        (None, Some(path)) => Box::new(Offline(RingSource::File(path.clone()))),
        (None, None) => {
            let db = target.db.unwrap_or_else(|| PathBuf::from(DEFAULT_DB));
            let database = Database::from_arg(&db);
            if let Database::File(path) = &database
                && !path.exists()
            {
                return Err(CliError::NoDatabase { path: path.clone() });
            }
            let read_only = matches!(args.command, KeysCommand::List);
            let (container, name) =
                offline::open_container(&database, ExpiryPolicy::default(), None, read_only)?;
            Box::new(Offline(RingSource::Setting {
                container: Arc::from(container),
                name: name.display().to_string(),
            }))
        }
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    execute(keys.as_ref(), args.command, target.json, &mut out)?;
    out.flush().map_err(CliError::Output)
}

fn execute(
    keys: &dyn Keys,
    command: KeysCommand,
    json: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let result = match command {
        KeysCommand::List => keys.list()?,
        KeysCommand::Rotate => {
            let rotated = keys.rotate()?;
            if !json {
                let added = rotated.added.unwrap_or_default();
                let older: Vec<String> = rotated
                    .keys
                    .iter()
                    .filter(|key| key.id != added)
                    .map(|key| key.id.to_string())
                    .collect();
                write_text(
                    out,
                    &format!(
                        "added key {added}: it signs new cookies from now on; cookies signed \
                         with key{} {} keep working.\n{}\n\n",
                        if older.len() == 1 { "" } else { "s" },
                        older.join(", "),
                        keys.takes_effect()
                    ),
                )?;
            }
            rotated
        }
        KeysCommand::Retire { keep, yes } => {
            let keep = keep.max(1);
            if !yes {
                let ring = keys.list()?;
                let ids: Vec<u16> = ring.keys.iter().map(|key| key.id).collect();
                let retired = to_retire(&ids, keep);
                if retired.is_empty() {
                    if json {
                        return output::json_pretty(out, &ring);
                    }
                    return write_text(
                        out,
                        &format!(
                            "nothing to retire: the ring holds {} key{}, --keep {keep}\n",
                            ids.len(),
                            if ids.len() == 1 { "" } else { "s" }
                        ),
                    );
                }
                return Err(CliError::Usage(format!(
                    "retiring {} would log out every client whose cookie was signed with {} \
                     (a forced logout: their cookies stop working); nothing was changed. \
                     Run again with --yes to do it.",
                    key_list(&retired),
                    if retired.len() == 1 {
                        "it"
                    } else {
                        "one of them"
                    }
                )));
            }
            let retired = keys.retire(keep)?;
            if !json {
                let text = if retired.retired.is_empty() {
                    format!(
                        "nothing to retire: the ring holds {} key{}, --keep {keep}\n",
                        retired.keys.len(),
                        if retired.keys.len() == 1 { "" } else { "s" }
                    )
                } else {
                    format!(
                        "retired {}: clients whose cookie was signed with {} are logged out \
                         (their cookies no longer verify).\n{}\n\n",
                        key_list(&retired.retired),
                        if retired.retired.len() == 1 {
                            "it"
                        } else {
                            "one of them"
                        },
                        keys.takes_effect()
                    )
                };
                write_text(out, &text)?;
            }
            retired
        }
    };
    if json {
        output::json_pretty(out, &result)
    } else {
        write_text(out, &keys_table(&result))
    }
}

/// `key 3` or `keys 1, 2`.
fn key_list(ids: &[u16]) -> String {
    let ids: Vec<String> = ids.iter().map(u16::to_string).collect();
    format!(
        "key{} {}",
        if ids.len() == 1 { "" } else { "s" },
        ids.join(", ")
    )
}

/// The keys as a table.
fn keys_table(keys: &KeysJson) -> String {
    let mut table = Table::new(&["ID", "SIGNS", "CREATED (UTC)", "AGE"]);
    for key in &keys.keys {
        table.row(vec![
            key.id.to_string(),
            if key.signing { "yes" } else { "-" }.to_owned(),
            key.created
                .map_or_else(|| "unknown".to_owned(), output::utc),
            key.age_seconds
                .map_or_else(|| "unknown".to_owned(), output::duration),
        ]);
    }
    table.render()
}

fn write_text(out: &mut impl Write, text: &str) -> Result<(), CliError> {
    out.write_all(text.as_bytes()).map_err(CliError::Output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retire_removes_all_but_the_newest_keep() {
        assert_eq!(to_retire(&[1, 2, 3], 1), [1, 2]);
        assert_eq!(to_retire(&[1, 2, 3], 2), [1]);
        assert_eq!(to_retire(&[1, 2, 3], 0), [1, 2], "at least one is kept");
        assert!(to_retire(&[1, 2, 3], 3).is_empty());
        assert!(to_retire(&[4], 5).is_empty());
    }

    #[test]
    fn the_listing_shows_ids_roles_and_ages_only() {
        let mut ring = KeyRing::generate().unwrap();
        ring.rotate().unwrap();
        let created = ring
            .created(1)
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let json = KeysJson::of(&ring, created + 90);
        assert_eq!(json.keys.len(), 2);
        assert_eq!(json.keys[0].age_seconds, Some(90));
        assert!(!json.keys[0].signing);
        assert!(json.keys[1].signing);
        let text = keys_table(&json);
        assert!(text.starts_with("ID  SIGNS"), "{text}");
        assert!(text.contains("1m30s"), "{text}");
    }
}
