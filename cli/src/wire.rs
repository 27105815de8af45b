//! The JSON shapes of the admin tooling, shared by the admin API (which
//! sends them) and `keel sessions` (which prints them, offline built from the
//! container directly, online parsed from the API). One definition keeps the
//! two modes' `--json` output identical.
//!
//! Sessions are identified only by their `key` (the hashed client id); no
//! field ever holds a client id, cookie value or secret.

use std::collections::BTreeMap;

use keel_store::{ContainerStats, SessionDetail, SessionSummary};
use keel_txn::TxnStats;
use serde::{Deserialize, Serialize};

use crate::policy::PolicyJson;

/// Package id -> name -> value, values as JSON without the app's types.
pub(crate) type DataJson = BTreeMap<String, BTreeMap<String, serde_json::Value>>;

/// One session: a line of `list`, the body of `show`, a line of `export`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SessionJson {
    /// The session's key: SHA-256 of the client id, 64 hex digits.
    pub(crate) key: String,
    /// Creation time, Unix seconds.
    pub(crate) created: u64,
    /// Last access time, Unix seconds.
    pub(crate) last_access: u64,
    /// The attached principal, if any.
    pub(crate) principal: Option<String>,
    /// Bytes of stored values.
    pub(crate) bytes: u64,
    /// Expired but not yet swept.
    pub(crate) expired: bool,
    /// The data (in `show` and `export`, and listings asked for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) data: Option<DataJson>,
}

impl From<&SessionSummary> for SessionJson {
    fn from(summary: &SessionSummary) -> Self {
        SessionJson {
            key: summary.key.to_string(),
            created: summary.created,
            last_access: summary.last_access,
            principal: summary.principal.clone(),
            bytes: summary.bytes,
            expired: summary.expired,
            data: None,
        }
    }
}

impl From<&SessionDetail> for SessionJson {
    fn from(detail: &SessionDetail) -> Self {
        // NOTE: a session's CSRF token is a secret of that session, so no
        // admin output (list, show, export) carries it; a session restored
        // from an export without it mints a new one on first use.
        let data = detail
            .data
            .iter()
            .filter(|(package, _)| package.as_str() != keel_session::CSRF_PACKAGE)
            .map(|(package, values)| {
                let values = values
                    .iter()
                    .map(|(name, value)| (name.clone(), value.to_json()))
                    .collect();
                (package.clone(), values)
            })
            .collect();
        SessionJson {
            data: Some(data),
            ..SessionJson::from(&detail.summary)
        }
    }
}

/// The answer of `rm` / `DELETE /admin/sessions/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RemovedJson {
    /// Sessions deleted.
    pub(crate) removed: u64,
}

/// The answer of `revoke-principal` / `DELETE
/// /admin/principals/{name}/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RevokedJson {
    /// The principal.
    pub(crate) principal: String,
    /// Sessions deleted.
    pub(crate) removed: u64,
}

/// The answer of `sweep` / `POST /admin/sweep`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SweepJson {
    /// Expired sessions deleted.
    pub(crate) removed: u64,
    /// Batches (durable commits) it took.
    pub(crate) batches: u64,
    /// Whether expired sessions remain (the call stopped at its `max`).
    pub(crate) more: bool,
    /// Wall-clock time, seconds.
    pub(crate) seconds: f64,
}

/// Percentiles of a distribution of durations, seconds (nearest rank).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DistributionJson {
    /// Median.
    pub(crate) p50: u64,
    /// 90th percentile.
    pub(crate) p90: u64,
    /// 99th percentile.
    pub(crate) p99: u64,
    /// Largest.
    pub(crate) max: u64,
}

impl DistributionJson {
    /// The distribution of `values`, or `None` if there are none.
    pub(crate) fn of(mut values: Vec<u64>) -> Option<Self> {
        values.sort_unstable();
        let max = *values.last()?;
        Some(DistributionJson {
            p50: nearest_rank(&values, 50),
            p90: nearest_rank(&values, 90),
            p99: nearest_rank(&values, 99),
            max,
        })
    }
}

/// The `percent`th percentile of sorted, non-empty `values` by the nearest
/// rank method.
fn nearest_rank(sorted: &[u64], percent: usize) -> u64 {
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted.get(rank - 1).copied().unwrap_or_default()
}

/// `stats`: the container's figures, plus the server's when online.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StatsJson {
    /// When the figures were taken, Unix seconds.
    pub(crate) now: u64,
    /// Stored sessions, expired or not.
    pub(crate) sessions: u64,
    /// Of which live.
    pub(crate) live: u64,
    /// Of which expired but not yet swept (the sweep backlog).
    pub(crate) expired: u64,
    /// Bytes of stored values.
    pub(crate) value_bytes: u64,
    /// Size of the database file, if there is one.
    pub(crate) file_bytes: Option<u64>,
    /// Ages (now - created) of the live sessions, seconds.
    pub(crate) age_seconds: Option<DistributionJson>,
    /// Idle times (now - last access) of the live sessions, seconds.
    pub(crate) idle_seconds: Option<DistributionJson>,
    /// The expiry policy the figures were judged with.
    pub(crate) expiry: PolicyJson,
    /// The running server's counters (online only; `null` offline).
    pub(crate) server: Option<ServerJson>,
}

impl StatsJson {
    /// The figures of `stats` judged at `now` with `expiry`.
    pub(crate) fn new(stats: ContainerStats, now: u64, expiry: PolicyJson) -> Self {
        StatsJson {
            now,
            sessions: stats.sessions,
            live: stats.sessions.saturating_sub(stats.expired),
            expired: stats.expired,
            value_bytes: stats.value_bytes,
            file_bytes: stats.file_bytes,
            age_seconds: DistributionJson::of(stats.ages),
            idle_seconds: DistributionJson::of(stats.idle),
            expiry,
            server: None,
        }
    }
}

/// Counters of a running server since it started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ServerJson {
    /// Start time, Unix seconds.
    pub(crate) started: u64,
    /// Seconds since start.
    pub(crate) uptime_seconds: u64,
    /// Request transactions.
    pub(crate) transactions: TransactionsJson,
    /// The background sweeper.
    pub(crate) sweeper: SweeperJson,
}

/// Request transaction outcomes since the server started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TransactionsJson {
    /// Transactions begun.
    pub(crate) begun: u64,
    /// Successful commits.
    pub(crate) commits: u64,
    /// Failed commits, of any cause.
    pub(crate) failed_commits: u64,
    /// Failed commits that were conflicts.
    pub(crate) conflicts: u64,
    /// Aborts (explicit, by drop, after a failed commit).
    pub(crate) aborts: u64,
    /// Requests re-run after a conflict.
    pub(crate) retries: u64,
    /// Total time in successful commits, seconds.
    pub(crate) commit_seconds_total: f64,
}

impl From<&TxnStats> for TransactionsJson {
    fn from(stats: &TxnStats) -> Self {
        TransactionsJson {
            begun: stats.begun,
            commits: stats.commits,
            failed_commits: stats.failed_commits,
            conflicts: stats.conflicts,
            aborts: stats.aborts,
            retries: stats.retries,
            commit_seconds_total: stats.commit_time.as_secs_f64(),
        }
    }
}

/// What the background sweeper did since the server started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct SweeperJson {
    /// Seconds between runs.
    pub(crate) interval_seconds: u64,
    /// Sessions per batch.
    pub(crate) batch: usize,
    /// Completed runs.
    pub(crate) runs: u64,
    /// Sessions it deleted.
    pub(crate) removed: u64,
    /// End of the last run, Unix seconds.
    pub(crate) last_run: Option<u64>,
    /// The last error, if the last run failed.
    pub(crate) last_error: Option<String>,
}

/// The body of every admin API error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ErrorJson {
    /// What went wrong.
    pub(crate) error: String,
    /// A stable code for tools: `unauthorized`, `admin_disabled`,
    /// `bad_request`, `no_such_session`, `not_found`, `unavailable`,
    /// `internal`.
    pub(crate) code: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<u64> = (1..=100).rev().collect();
        let dist = DistributionJson::of(values).unwrap();
        assert_eq!(
            dist,
            DistributionJson {
                p50: 50,
                p90: 90,
                p99: 99,
                max: 100
            }
        );
        let one = DistributionJson::of(vec![7]).unwrap();
        assert_eq!((one.p50, one.p99, one.max), (7, 7, 7));
        assert_eq!(DistributionJson::of(Vec::new()), None);
    }
}
