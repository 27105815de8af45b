//! Human-readable output of `keel sessions`: tables, times, durations and
//! sizes. Machine-readable output is the `wire` types as JSON.

use std::{fmt::Write as _, io::Write};

use serde::Serialize;

use crate::{
    CliError,
    wire::{DistributionJson, SessionJson, StatsJson},
};

/// Write `value` as one line of JSON.
pub(crate) fn json_line(out: &mut impl Write, value: &impl Serialize) -> Result<(), CliError> {
    serde_json::to_writer(&mut *out, value)
        .map_err(|err| CliError::Output(std::io::Error::other(err)))?;
    out.write_all(b"\n").map_err(CliError::Output)
}

/// Write `value` as indented JSON.
pub(crate) fn json_pretty(out: &mut impl Write, value: &impl Serialize) -> Result<(), CliError> {
    serde_json::to_writer_pretty(&mut *out, value)
        .map_err(|err| CliError::Output(std::io::Error::other(err)))?;
    out.write_all(b"\n").map_err(CliError::Output)
}

/// A text table: a header row and left-aligned columns separated by two
/// spaces.
#[derive(Debug)]
pub(crate) struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub(crate) fn new(header: &[&str]) -> Self {
        Table {
            rows: vec![header.iter().map(|title| (*title).to_owned()).collect()],
        }
    }

    /// A table without a header row.
    pub(crate) fn plain() -> Self {
        Table { rows: Vec::new() }
    }

    /// Append a row.
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row.
    pub(crate) fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|col| {
                self.rows
                    .iter()
                    .filter_map(|row| row.get(col))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut text = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (col, cell) in row.iter().enumerate() {
                if col + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let width = widths.get(col).copied().unwrap_or(0);
                    let _ = write!(line, "{cell:<width$}  ");
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// The session listing as a table.
pub(crate) fn sessions_table(sessions: &[SessionJson], now: u64) -> String {
    let mut table = Table::new(&[
        "KEY",
        "PRINCIPAL",
        "CREATED (UTC)",
        "LAST ACCESS (UTC)",
        "IDLE",
        "BYTES",
        "STATE",
    ]);
    for session in sessions {
        table.row(vec![
            session.key.clone(),
            session.principal.clone().unwrap_or_else(|| "-".to_owned()),
            utc(session.created),
            utc(session.last_access),
            duration(now.saturating_sub(session.last_access)),
            session.bytes.to_string(),
            state(session).to_owned(),
        ]);
    }
    table.render()
}

fn state(session: &SessionJson) -> &'static str {
    if session.expired { "expired" } else { "live" }
}

/// One session with its data, for `show`.
pub(crate) fn session_text(session: &SessionJson, now: u64) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "key          {}", session.key);
    let _ = writeln!(
        text,
        "principal    {}",
        session.principal.as_deref().unwrap_or("-")
    );
    let _ = writeln!(
        text,
        "created      {} ({} ago)",
        utc(session.created),
        duration(now.saturating_sub(session.created))
    );
    let _ = writeln!(
        text,
        "last access  {} ({} ago)",
        utc(session.last_access),
        duration(now.saturating_sub(session.last_access))
    );
    let _ = writeln!(text, "state        {}", state(session));
    let _ = writeln!(text, "bytes        {}", session.bytes);
    match &session.data {
        Some(data) if !data.is_empty() => {
            let _ = writeln!(text, "data");
            for (package, values) in data {
                let _ = writeln!(text, "  {package}");
                for (name, value) in values {
                    let _ = writeln!(text, "    {name} = {value}");
                }
            }
        }
        _ => {
            let _ = writeln!(text, "data         (none)");
        }
    }
    text
}

/// The `stats` figures as text.
pub(crate) fn stats_text(stats: &StatsJson) -> String {
    let mut table = Table::plain();
    table.row(vec![
        "sessions".to_owned(),
        format!(
            "{} ({} live, {} expired awaiting sweep)",
            stats.sessions, stats.live, stats.expired
        ),
    ]);
    table.row(vec!["value bytes".to_owned(), bytes(stats.value_bytes)]);
    if let Some(file) = stats.file_bytes {
        table.row(vec!["file size".to_owned(), bytes(file)]);
    }
    table.row(vec![
        "age of live".to_owned(),
        distribution(stats.age_seconds.as_ref()),
    ]);
    table.row(vec![
        "idle of live".to_owned(),
        distribution(stats.idle_seconds.as_ref()),
    ]);
    table.row(vec![
        "expiry".to_owned(),
        format!(
            "timeout {}, resolution {}{}",
            if stats.expiry.timeout == 0 {
                "never".to_owned()
            } else {
                duration(stats.expiry.timeout)
            },
            duration(stats.expiry.resolution),
            stats
                .expiry
                .absolute_lifetime
                .map(|lifetime| format!(", absolute lifetime {}", duration(lifetime)))
                .unwrap_or_default()
        ),
    ]);
    if let Some(server) = &stats.server {
        let t = &server.transactions;
        table.row(vec![
            "server uptime".to_owned(),
            format!(
                "{} (since {})",
                duration(server.uptime_seconds),
                utc(server.started)
            ),
        ]);
        let mean = if t.commits == 0 {
            "-".to_owned()
        } else {
            format!(
                "{:.2} ms",
                t.commit_seconds_total * 1000.0 / t.commits as f64
            )
        };
        table.row(vec![
            "transactions".to_owned(),
            format!(
                "{} commits, {} failed ({} conflicts), {} aborts, {} retries; mean commit {mean}",
                t.commits, t.failed_commits, t.conflicts, t.aborts, t.retries
            ),
        ]);
        let s = &server.sweeper;
        table.row(vec![
            "sweeper".to_owned(),
            format!(
                "every {}, batches of {}; {} runs removed {} sessions; last run {}{}",
                duration(s.interval_seconds),
                s.batch,
                s.runs,
                s.removed,
                s.last_run.map_or_else(|| "never".to_owned(), utc),
                s.last_error
                    .as_ref()
                    .map(|err| format!(" (failed: {err})"))
                    .unwrap_or_default()
            ),
        ]);
    }
    table.render()
}

fn distribution(dist: Option<&DistributionJson>) -> String {
    match dist {
        None => "-".to_owned(),
        Some(d) => format!(
            "p50 {}  p90 {}  p99 {}  max {}",
            duration(d.p50),
            duration(d.p90),
            duration(d.p99),
            duration(d.max)
        ),
    }
}

/// A number of seconds, compactly: `45s`, `12m`, `3h05m`, `2d04h`.
pub(crate) fn duration(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        3600..86400 => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{}d{:02}h", seconds / 86400, seconds % 86400 / 3600),
    }
}

/// A byte count with a binary unit.
pub(crate) fn bytes(count: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if count < 1024 {
        return format!("{count} B");
    }
    let mut value = count as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS` (UTC).
pub(crate) fn utc(unix: u64) -> String {
    let days = unix / 86400;
    let secs = unix % 86400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20");
        assert_eq!(utc(4_102_444_799), "2099-12-31 23:59:59");
    }

    #[test]
    fn durations_and_sizes_are_compact() {
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(65), "1m05s");
        assert_eq!(duration(3 * 3600 + 300), "3h05m");
        assert_eq!(duration(2 * 86400 + 4 * 3600), "2d04h");
        assert_eq!(bytes(12), "12 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
    }

    #[test]
    fn tables_align_columns() {
        let mut table = Table::new(&["A", "BB"]);
        table.row(vec!["long cell".to_owned(), "x".to_owned()]);
        assert_eq!(table.render(), "A          BB\nlong cell  x\n");
    }
}
