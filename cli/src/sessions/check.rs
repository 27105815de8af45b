//! `keel sessions check`: the full integrity check of a redb database file
//! (offline only), a report, and an exit status (non-zero when damage is
//! found). The file is opened read-only: not a byte of it changes.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::Instant,
};

use keel_store::{IntegrityReport, RedbContainer, RedbOptions};
use serde::Serialize;

use crate::{CliError, database::Database, output, sessions::offline::in_file};

/// The `--json` form of a check's report.
#[derive(Debug, Serialize)]
struct CheckJson<'a> {
    path: &'a Path,
    clean: bool,
    file_bytes: Option<u64>,
    seconds: f64,
    pages_ok: bool,
    records_checked: bool,
    sessions: u64,
    values: u64,
    by_access_entries: u64,
    by_created_entries: u64,
    sessions_without_created_entry: u64,
    principal_entries: u64,
    problem_count: u64,
    problems: &'a [String],
}

/// Check `db`, print the report to `out` (JSON if `json`).
///
/// # Errors
/// [`CliError::Usage`] for a database server URL (only redb files are
/// checked); [`CliError::NoDatabase`] for a missing file; the store's error
/// when the file cannot be opened for another reason than damage (in use,
/// not a Keel database, permissions); [`CliError::Damaged`] after the
/// report when problems were found.
pub(crate) fn run(db: &Database, json: bool, out: &mut impl Write) -> Result<(), CliError> {
    let path = match db {
        Database::File(path) => path,
        Database::Postgres { .. } | Database::Redis { .. } => {
            return Err(CliError::Usage(
                "`keel sessions check` checks redb database files only (--db FILE); \
                 PostgreSQL and Redis check their own storage"
                    .to_owned(),
            ));
        }
    };
    if !path.exists() {
        return Err(CliError::NoDatabase { path: path.clone() });
    }
    let started = Instant::now();
    let report = RedbContainer::check_file(path, RedbOptions::new()).map_err(in_file(path))?;
    let seconds = started.elapsed().as_secs_f64();
    if json {
        output::json_pretty(out, &to_json(&report, seconds))?;
    } else {
        write(out, &text(&report, seconds))?;
    }
    if report.is_clean() {
        Ok(())
    } else {
        Err(CliError::Damaged {
            path: PathBuf::from(path),
            problems: report.problem_count,
        })
    }
}

fn to_json(report: &IntegrityReport, seconds: f64) -> CheckJson<'_> {
    CheckJson {
        path: &report.path,
        clean: report.is_clean(),
        file_bytes: report.file_bytes,
        seconds,
        pages_ok: report.pages_ok,
        records_checked: report.records_checked,
        sessions: report.sessions,
        values: report.values,
        by_access_entries: report.by_access_entries,
        by_created_entries: report.by_created_entries,
        sessions_without_created_entry: report.sessions_without_created_entry,
        principal_entries: report.principal_entries,
        problem_count: report.problem_count,
        problems: &report.problems,
    }
}

fn write(out: &mut impl Write, text: &str) -> Result<(), CliError> {
    out.write_all(text.as_bytes()).map_err(CliError::Output)
}

/// The report in words: what was checked, the counts, each problem
/// naming the file.
fn text(report: &IntegrityReport, seconds: f64) -> String {
    let path = report.path.display();
    let size = report
        .file_bytes
        .map(|bytes| format!(" ({:.1} MB)", bytes as f64 / 1e6))
        .unwrap_or_default();
    let mut text =
        format!("checked {path}{size} in {seconds:.2} s (read-only: the file is unchanged)\n");
    text.push_str(if report.pages_ok {
        "  pages:   every page's checksum and the b-tree structure verified by redb: ok\n"
    } else {
        "  pages:   redb's check of the pages and b-trees FAILED\n"
    });
    if report.records_checked {
        text.push_str(&format!(
            "  records: {} session{}, {} value{}; index entries: {} by access, {} by creation, \
             {} by principal\n",
            report.sessions,
            plural(report.sessions),
            report.values,
            plural(report.values),
            report.by_access_entries,
            report.by_created_entries,
            report.principal_entries,
        ));
        if report.sessions_without_created_entry > 0 {
            text.push_str(&format!(
                "           ({} session{} without a by-creation entry: made while no absolute \
                 lifetime was set; not damage)\n",
                report.sessions_without_created_entry,
                plural(report.sessions_without_created_entry),
            ));
        }
    } else {
        text.push_str("  records: not checked (the pages they are in cannot be trusted)\n");
    }
    for problem in &report.problems {
        text.push_str(&format!("{path}: problem: {problem}\n"));
    }
    if report.is_clean() {
        text.push_str("no problems found\n");
    } else {
        let shown = report.problems.len() as u64;
        let more = if shown < report.problem_count {
            format!(" (the first {shown} shown)")
        } else {
            String::new()
        };
        text.push_str(&format!(
            "{} problem{} found{more}: restore {path} from a backup, or export what can still \
             be read (`keel sessions export`)\n",
            report.problem_count,
            plural(report.problem_count),
        ));
    }
    text
}

fn plural(count: u64) -> &'static str {
    if count == 1 { "" } else { "s" }
}
