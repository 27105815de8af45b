//! The full integrity check of a redb file (`keel sessions check`): redb's
//! own check of every page of the file, then a walk of every Keel record.
//!
//! The file is opened read-only (see [`RedbOptions::with_read_only`]): redb
//! runs over a copy-on-write overlay, so its check, which repairs what it
//! can, repairs an in-memory copy and never changes a byte of the file.
//!
//! The walk checks what redb cannot know: every session record and every
//! value decodes, every data record belongs to a session, and the indexes
//! agree with the session records (each session has its `keel_by_access`
//! entry, and its `keel_principals` entry if it has a principal; no index
//! entry names a missing session or another time). A session without a
//! `keel_by_created` entry is no damage: that index is written only while an
//! absolute lifetime is configured (docs/design.md); such sessions are
//! counted apart.

use std::{
    fs,
    path::{Path, PathBuf},
};

use redb::{ReadTransaction, ReadableTable};

use crate::{
    ClientKey, StoreError,
    engine::records::{self, ItemKey},
    redb::{
        READ, RedbOptions, codec,
        codec::DataKey,
        open::{Db, Target, guard_panic, open_database},
        tables,
        view::storage,
    },
};

/// At most this many problems are described in a report; the others are
/// only counted ([`IntegrityReport::problem_count`]).
const MAX_DESCRIBED: usize = 100;

/// What [`RedbContainer::check_file`](crate::RedbContainer::check_file)
/// found in a database file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IntegrityReport {
    /// The file checked.
    pub path: PathBuf,
    /// Its size in bytes (`None` for a custom storage backend).
    pub file_bytes: Option<u64>,
    /// Whether redb's check of every page (checksums and b-tree structure)
    /// passed.
    pub pages_ok: bool,
    /// Whether Keel's records were walked (not after the page check failed:
    /// redb cannot read a damaged tree reliably).
    pub records_checked: bool,
    /// Session records that decode.
    pub sessions: u64,
    /// Values (items) that decode.
    pub values: u64,
    /// Entries of the inactivity index (`keel_by_access`).
    pub by_access_entries: u64,
    /// Entries of the absolute-lifetime index (`keel_by_created`).
    pub by_created_entries: u64,
    /// Sessions without a `keel_by_created` entry: created while no absolute
    /// lifetime was set (no damage).
    pub sessions_without_created_entry: u64,
    /// Entries of the principal index (`keel_principals`).
    pub principal_entries: u64,
    /// Every problem found.
    pub problem_count: u64,
    /// The first problems found (up to 100), in words.
    pub problems: Vec<String>,
}

impl IntegrityReport {
    fn new(path: &Path, file_bytes: Option<u64>) -> Self {
        IntegrityReport {
            path: path.to_path_buf(),
            file_bytes,
            pages_ok: false,
            records_checked: false,
            sessions: 0,
            values: 0,
            by_access_entries: 0,
            by_created_entries: 0,
            sessions_without_created_entry: 0,
            principal_entries: 0,
            problem_count: 0,
            problems: Vec::new(),
        }
    }

    /// Whether nothing was found wrong.
    pub fn is_clean(&self) -> bool {
        self.problem_count == 0
    }

    fn problem(&mut self, what: impl Into<String>) {
        self.problem_count += 1;
        if self.problems.len() < MAX_DESCRIBED {
            self.problems.push(what.into());
        }
    }
}

/// Check the database at `target` (named `path`) as described in the
/// module documentation.
pub(crate) fn check(
    target: &Target,
    path: &Path,
    options: RedbOptions,
) -> Result<IntegrityReport, StoreError> {
    let file_bytes = match target {
        Target::File(file) => fs::metadata(file).ok().map(|meta| meta.len()),
        Target::Backend(_) => None,
    };
    let mut report = IntegrityReport::new(path, file_bytes);
    let options = options.with_read_only(true);
    let mut db = match open_database(target, path, &options) {
        Ok(db) => db,
        Err(err @ StoreError::Corrupted { .. }) => {
            report.problem(format!("the file cannot be opened: {}", describe(&err)));
            return Ok(report);
        }
        Err(err) => return Err(err),
    };
    // NOTE: a read-only open is always `Db::Overlaid`: redb's check may
    // repair, and on the overlay a repair stays in memory.
    let Db::Overlaid(database) = &mut db else {
        return Err(StoreError::ReadOnly {
            path: path.to_path_buf(),
        });
    };
    match guard_panic(path, || database.check_integrity()) {
        Ok(Ok(true)) => report.pages_ok = true,
        Ok(Ok(false)) => report.problem(
            "redb's page check found damage it could repair (repaired in memory only: the file \
             is unchanged; a server opening it repairs it on disk)",
        ),
        Ok(Err(err)) => report.problem(format!("redb's page check failed: {err}")),
        Err(err) => report.problem(format!("redb's page check failed: {}", describe(&err))),
    }
    if !report.pages_ok {
        return Ok(report);
    }
    report.records_checked = true;
    let walked = guard_panic(path, || {
        let txn = db.begin_read().map_err(storage(READ))?;
        walk(&txn, &mut report)
    });
    match walked {
        Ok(Ok(())) => {}
        Ok(Err(err)) => report.problem(format!("the records cannot be read: {err}")),
        Err(err) => report.problem(format!("the records cannot be read: {}", describe(&err))),
    }
    Ok(report)
}

/// The cause of a [`StoreError::Corrupted`] (the report names the file
/// once), any other error as it is.
fn describe(err: &StoreError) -> String {
    match err {
        StoreError::Corrupted { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// Walk every Keel record of the state `txn` sees.
fn walk(txn: &ReadTransaction, report: &mut IntegrityReport) -> Result<(), StoreError> {
    let sessions = txn.open_table(tables::SESSIONS).map_err(storage(READ))?;
    let data = txn.open_table(tables::DATA).map_err(storage(READ))?;
    let by_access = txn.open_table(tables::BY_ACCESS).map_err(storage(READ))?;
    let by_created = txn.open_table(tables::BY_CREATED).map_err(storage(READ))?;
    let principals = txn.open_table(tables::PRINCIPALS).map_err(storage(READ))?;
    let record_of = |client: &ClientKey| -> Result<Option<records::SessionRecord>, StoreError> {
        match sessions.get(client.as_bytes()).map_err(storage(READ))? {
            Some(guard) => Ok(codec::decode_session(client, guard.value()).ok()),
            None => Ok(None),
        }
    };

    // Each session record, and the index entries it implies.
    for entry in sessions.iter().map_err(storage(READ))? {
        let (key, record) = entry.map_err(storage(READ))?;
        let client = ClientKey::from_bytes(*key.value());
        let record = match codec::decode_session(&client, record.value()) {
            Ok(record) => record,
            Err(err) => {
                report.problem(err.to_string());
                continue;
            }
        };
        report.sessions += 1;
        let access = codec::time_key(record.last_access, &client);
        if by_access
            .get(access.as_slice())
            .map_err(storage(READ))?
            .is_none()
        {
            report.problem(format!(
                "session {client} has no keel_by_access entry (it would never expire)"
            ));
        }
        let created = codec::time_key(record.created, &client);
        if by_created
            .get(created.as_slice())
            .map_err(storage(READ))?
            .is_none()
        {
            report.sessions_without_created_entry += 1;
        }
        if let Some(principal) = &record.principal {
            let key = codec::principal_key(principal, &client);
            if principals
                .get(key.as_slice())
                .map_err(storage(READ))?
                .is_none()
            {
                report.problem(format!(
                    "session {client} of principal {principal:?} has no keel_principals entry"
                ));
            }
        }
    }

    // Each data record: it decodes and belongs to a session. Keys are in
    // client order, so one lookup per session suffices.
    let mut last: Option<ClientKey> = None;
    for entry in data.iter().map_err(storage(READ))? {
        let (key, record) = entry.map_err(storage(READ))?;
        let (client, data_key) = match codec::split_data_key(key.value()) {
            Ok(split) => split,
            Err(err) => {
                report.problem(err.to_string());
                continue;
            }
        };
        if last != Some(client) {
            last = Some(client);
            if sessions
                .get(client.as_bytes())
                .map_err(storage(READ))?
                .is_none()
            {
                report.problem(format!("data of session {client}, which does not exist"));
            }
        }
        match data_key {
            DataKey::PackagesVersion | DataKey::NamesVersion(_) => {
                if let Err(err) = codec::decode_version(&client, record.value()) {
                    report.problem(err.to_string());
                }
            }
            DataKey::Item(package, name) => {
                let item = ItemKey {
                    client,
                    package,
                    name,
                };
                let decoded = codec::split_item(&item, record.value())
                    .and_then(|(_, encoded)| records::decode_value(&item, encoded));
                match decoded {
                    Ok(_) => report.values += 1,
                    Err(err) => report.problem(err.to_string()),
                }
            }
        }
    }

    // Each expiry index entry names a session at the time it records.
    for (index, name, by_created) in [
        (&by_access, "keel_by_access", false),
        (&by_created, "keel_by_created", true),
    ] {
        for entry in index.iter().map_err(storage(READ))? {
            let (key, _) = entry.map_err(storage(READ))?;
            let raw = key.value();
            if by_created {
                report.by_created_entries += 1;
            } else {
                report.by_access_entries += 1;
            }
            let client = match codec::client_of_index_key(raw) {
                Ok(client) if raw.len() == 40 => client,
                _ => {
                    report.problem(format!("a {name} entry of {} bytes", raw.len()));
                    continue;
                }
            };
            match record_of(&client)? {
                None => report.problem(format!(
                    "a {name} entry names session {client}, which does not exist (or does not \
                     decode)"
                )),
                Some(record) => {
                    let time = if by_created {
                        record.created
                    } else {
                        record.last_access
                    };
                    if raw != codec::time_key(time, &client) {
                        report.problem(format!(
                            "a {name} entry of session {client} records another time than its \
                             session record"
                        ));
                    }
                }
            }
        }
    }

    // Each principal index entry names a session of that principal.
    for entry in principals.iter().map_err(storage(READ))? {
        let (key, _) = entry.map_err(storage(READ))?;
        report.principal_entries += 1;
        let raw = key.value();
        let Ok(client) = codec::client_of_index_key(raw) else {
            report.problem(format!("a keel_principals entry of {} bytes", raw.len()));
            continue;
        };
        let matches = record_of(&client)?.is_some_and(|record| {
            record
                .principal
                .is_some_and(|p| codec::principal_key(&p, &client) == raw)
        });
        if !matches {
            report.problem(format!(
                "a keel_principals entry names session {client}, which does not exist or has \
                 another principal"
            ));
        }
    }
    Ok(())
}
