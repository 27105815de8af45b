//! Prometheus metrics of `keel serve`, fed through the `metrics` facade and
//! rendered by `metrics-exporter-prometheus` at `GET /metrics` (no listener
//! of its own).
//!
//! | metric | type | source |
//! |---|---|---|
//! | `keel_transactions_begun_total`, `keel_commits_total`, `keel_commit_failures_total`, `keel_conflicts_total`, `keel_aborts_total`, `keel_retries_total` | counter | the request [`TransactionManager`](keel_txn::TransactionManager)'s stats, read at each scrape |
//! | `keel_commit_duration_seconds` | histogram | every commit of a request that changed session data (created, wrote, removed, deleted, renamed), timed by [`CommitTimer`] |
//! | `keel_sweep_removed_total`, `keel_sweep_batches_total` | counter | every sweep batch (background or admin) |
//! | `keel_sweep_batch_duration_seconds` | histogram | every sweep batch |
//! | `keel_sessions`, `keel_sessions_expired`, `keel_db_file_bytes`, `keel_sessions_updated_timestamp_seconds` | gauge | the container's cheap counts (`SessionAdmin::counts`: on redb, the sessions table's length and the expired index entries, not every session), after each background sweep; also by `GET /admin/stats` |
//! | `keel_session_value_bytes` | gauge | a whole-store count, by `GET /admin/stats` only (it reads every session) |
//!
//! No metric carries a session key, principal or any other per-session
//! label.

use std::{fmt, sync::Arc, time::Instant};

use keel_store::{
    ClientKey, ContainerStats, ExpiryPolicy, Preload, ReadAhead, SessionAdmin, SessionContainer,
    SessionDetail, SessionInfo, SessionSummary, SessionValue, StoreError, SweepReport,
};
use keel_txn::{BoxError, DataManager, SavepointState, Transaction, TxnStats};
use metrics::{
    Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::{
    CliError,
    http_server::{CommitGuard, CommitsInFlight},
    wire::StatsJson,
};

const BEGUN: &str = "keel_transactions_begun_total";
const COMMITS: &str = "keel_commits_total";
const COMMIT_FAILURES: &str = "keel_commit_failures_total";
const CONFLICTS: &str = "keel_conflicts_total";
const ABORTS: &str = "keel_aborts_total";
const RETRIES: &str = "keel_retries_total";
const COMMIT_DURATION: &str = "keel_commit_duration_seconds";
const SWEEP_REMOVED: &str = "keel_sweep_removed_total";
const SWEEP_BATCHES: &str = "keel_sweep_batches_total";
const SWEEP_DURATION: &str = "keel_sweep_batch_duration_seconds";
const SESSIONS: &str = "keel_sessions";
const SESSIONS_EXPIRED: &str = "keel_sessions_expired";
const VALUE_BYTES: &str = "keel_session_value_bytes";
const FILE_BYTES: &str = "keel_db_file_bytes";
const SESSIONS_UPDATED: &str = "keel_sessions_updated_timestamp_seconds";

/// Histogram buckets, seconds: commits wait for an fsync, so they span
/// sub-millisecond (RAM) to tens of milliseconds (a slow disk).
const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The process's Prometheus recorder.
#[derive(Clone)]
pub(crate) struct Metrics {
    handle: PrometheusHandle,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Install the Prometheus recorder as the process's global `metrics`
    /// recorder and describe every metric.
    ///
    /// # Errors
    /// [`CliError::Usage`] if a recorder is already installed.
    pub(crate) fn install() -> Result<Self, CliError> {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(COMMIT_DURATION.to_owned()), &LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(SWEEP_DURATION.to_owned()), &LATENCY_BUCKETS)
            })
            .map_err(|err| CliError::Usage(format!("cannot set up metrics: {err}")))?;
        let handle = builder
            .install_recorder()
            .map_err(|err| CliError::Usage(format!("cannot set up metrics: {err}")))?;
        describe();
        Ok(Metrics { handle })
    }

    /// The metrics in the Prometheus text format, with the transaction
    /// counters read from `txn` now.
    pub(crate) fn render(&self, txn: &TxnStats) -> String {
        counter!(BEGUN).absolute(txn.begun);
        counter!(COMMITS).absolute(txn.commits);
        counter!(COMMIT_FAILURES).absolute(txn.failed_commits);
        counter!(CONFLICTS).absolute(txn.conflicts);
        counter!(ABORTS).absolute(txn.aborts);
        counter!(RETRIES).absolute(txn.retries);
        self.handle.run_upkeep();
        self.handle.render()
    }

    /// Drain the histograms' buffers (the exporter asks for this periodically
    /// when it has no listener of its own).
    pub(crate) fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}

fn describe() {
    describe_counter!(BEGUN, Unit::Count, "Request transactions begun.");
    describe_counter!(COMMITS, Unit::Count, "Successful request commits.");
    describe_counter!(
        COMMIT_FAILURES,
        Unit::Count,
        "Failed request commits, of any cause."
    );
    describe_counter!(
        CONFLICTS,
        Unit::Count,
        "Failed request commits that were conflicts (retryable)."
    );
    describe_counter!(ABORTS, Unit::Count, "Aborted request transactions.");
    describe_counter!(RETRIES, Unit::Count, "Requests re-run after a conflict.");
    describe_histogram!(
        COMMIT_DURATION,
        Unit::Seconds,
        "Time from the start of two-phase commit to its end (serialization, validation, durable write)."
    );
    describe_counter!(SWEEP_REMOVED, Unit::Count, "Expired sessions swept.");
    describe_counter!(
        SWEEP_BATCHES,
        Unit::Count,
        "Sweep batches (each one durable commit)."
    );
    describe_histogram!(
        SWEEP_DURATION,
        Unit::Seconds,
        "Duration of one sweep batch."
    );
    describe_gauge!(SESSIONS, Unit::Count, "Live sessions at the last count.");
    describe_gauge!(
        SESSIONS_EXPIRED,
        Unit::Count,
        "Expired sessions awaiting the sweeper at the last count."
    );
    describe_gauge!(VALUE_BYTES, Unit::Bytes, "Bytes of stored session values.");
    describe_gauge!(
        FILE_BYTES,
        Unit::Bytes,
        "Size of the session database file."
    );
    describe_gauge!(
        SESSIONS_UPDATED,
        Unit::Seconds,
        "When the session gauges were last counted, Unix seconds."
    );
}

/// Count one sweep batch.
pub(crate) fn record_sweep_batch(report: &SweepReport, started: Instant) {
    counter!(SWEEP_REMOVED).increment(report.removed);
    counter!(SWEEP_BATCHES).increment(1);
    histogram!(SWEEP_DURATION).record(started.elapsed().as_secs_f64());
}

/// Set the session gauges from the container's cheap counts at `now`.
pub(crate) fn set_count_gauges(counts: &keel_store::SessionCounts, now: u64) {
    gauge!(SESSIONS).set(counts.sessions.saturating_sub(counts.expired) as f64);
    gauge!(SESSIONS_EXPIRED).set(counts.expired as f64);
    if let Some(file) = counts.file_bytes {
        gauge!(FILE_BYTES).set(file as f64);
    }
    gauge!(SESSIONS_UPDATED).set(now as f64);
}

/// Set the session gauges from a whole-store count.
pub(crate) fn set_store_gauges(stats: &StatsJson) {
    gauge!(SESSIONS).set(stats.live as f64);
    gauge!(SESSIONS_EXPIRED).set(stats.expired as f64);
    gauge!(VALUE_BYTES).set(stats.value_bytes as f64);
    if let Some(file) = stats.file_bytes {
        gauge!(FILE_BYTES).set(file as f64);
    }
    gauge!(SESSIONS_UPDATED).set(stats.now as f64);
}

/// The sort key of [`CommitTimer`]. It sorts before the containers'
/// (`keel-store/...`), so its `tpc_begin` runs before theirs; its
/// `tpc_finish` runs after every vote, where the durable write happens.
const COMMIT_TIMER_KEY: &str = "keel-cli/commit-timer";

/// A data manager that holds no data and only times two-phase commit, from
/// `tpc_begin` to `tpc_finish`, into `keel_commit_duration_seconds`.
#[derive(Debug)]
struct CommitTimer {
    histogram: Histogram,
    started: Option<Instant>,
    /// Counts this transaction among the commits shutdown waits for, until
    /// the transaction (and this timer with it) is dropped: committed,
    /// aborted, or given up.
    _in_flight: CommitGuard,
}

impl DataManager for CommitTimer {
    fn sort_key(&self) -> &str {
        COMMIT_TIMER_KEY
    }

    /// Only reads a clock: whether the commit blocks is up to the others.
    fn commit_may_block(&self) -> bool {
        false
    }

    fn tpc_begin(&mut self) -> Result<(), BoxError> {
        self.started = Some(Instant::now());
        Ok(())
    }

    fn commit(&mut self) -> Result<(), BoxError> {
        Ok(())
    }

    fn tpc_vote(&mut self) -> Result<(), BoxError> {
        Ok(())
    }

    fn tpc_finish(&mut self) {
        if let Some(started) = self.started.take() {
            self.histogram.record(started.elapsed().as_secs_f64());
        }
    }

    fn tpc_abort(&mut self) {
        self.started = None;
    }

    fn abort(&mut self) {
        self.started = None;
    }

    fn savepoint(&mut self) -> Option<SavepointState> {
        // Nothing to roll back: never stand in the way of a savepoint.
        Some(Box::new(()))
    }

    fn rollback(&mut self, _state: &SavepointState) -> Result<(), BoxError> {
        Ok(())
    }
}

/// A container that joins a [`CommitTimer`] to every transaction that
/// changes session data through it, and otherwise forwards every call to the
/// container it wraps. Reads do not join it: a read-only request's commit
/// has nothing to make durable, and timing it cost a clock read, a histogram
/// sample and a data manager per request.
///
/// NOTE: the session layer commits inside its middleware, out of reach of
/// the application; joining a data manager to the transaction is the one
/// place where a commit can be timed individually.
pub(crate) struct TimedContainer {
    inner: Arc<dyn SessionContainer>,
    /// `keel_commit_duration_seconds`, looked up once: a lookup in the
    /// recorder's registry per commit showed in request profiles.
    commit_duration: Histogram,
    commits: Arc<CommitsInFlight>,
}

impl fmt::Debug for TimedContainer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimedContainer")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl TimedContainer {
    /// Time the commits of transactions that use `inner`, into the
    /// histogram of the `metrics` recorder installed now, and count them in
    /// `commits` until each is committed or aborted.
    pub(crate) fn new(inner: Arc<dyn SessionContainer>, commits: Arc<CommitsInFlight>) -> Self {
        TimedContainer {
            inner,
            commit_duration: histogram!(COMMIT_DURATION),
            commits,
        }
    }

    fn time(&self, tx: &mut Transaction) {
        // A transaction that can no longer be joined fails in the container
        // call that follows, with the container's own error.
        let _ = tx.join_with(COMMIT_TIMER_KEY, || CommitTimer {
            histogram: self.commit_duration.clone(),
            started: None,
            _in_flight: self.commits.enter(),
        });
    }
}

impl SessionContainer for TimedContainer {
    fn expiry(&self) -> &ExpiryPolicy {
        self.inner.expiry()
    }

    fn now(&self) -> u64 {
        self.inner.now()
    }

    fn preload(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
        read_ahead: ReadAhead,
    ) -> Result<Option<Preload>, StoreError> {
        self.inner.preload(tx, client, read_ahead)
    }

    fn declare_fresh(&self, tx: &mut Transaction, client: &ClientKey) -> Result<(), StoreError> {
        self.inner.declare_fresh(tx, client)
    }

    fn can_rename(&self, from: &ClientKey, to: &ClientKey) -> bool {
        self.inner.can_rename(from, to)
    }

    fn session(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
    ) -> Result<Option<SessionInfo>, StoreError> {
        self.inner.session(tx, client)
    }

    fn create_session(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
    ) -> Result<SessionInfo, StoreError> {
        self.time(tx);
        self.inner.create_session(tx, client)
    }

    fn delete_session(&self, tx: &mut Transaction, client: &ClientKey) -> Result<bool, StoreError> {
        self.time(tx);
        self.inner.delete_session(tx, client)
    }

    fn rename_session(
        &self,
        tx: &mut Transaction,
        from: &ClientKey,
        to: &ClientKey,
    ) -> Result<(), StoreError> {
        self.time(tx);
        self.inner.rename_session(tx, from, to)
    }

    fn set_principal(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
        principal: Option<&str>,
    ) -> Result<(), StoreError> {
        self.time(tx);
        self.inner.set_principal(tx, client, principal)
    }

    fn get(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
        package: &str,
        name: &str,
    ) -> Result<Option<SessionValue>, StoreError> {
        self.inner.get(tx, client, package, name)
    }

    fn touch_and_get(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
        package: &str,
        name: &str,
    ) -> Result<Option<SessionValue>, StoreError> {
        self.inner.touch_and_get(tx, client, package, name)
    }

    fn insert(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
        package: &str,
        name: &str,
        value: SessionValue,
    ) -> Result<(), StoreError> {
        self.time(tx);
        self.inner.insert(tx, client, package, name, value)
    }

    fn remove(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
        package: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        self.time(tx);
        self.inner.remove(tx, client, package, name)
    }

    fn names(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
        package: &str,
    ) -> Result<Vec<String>, StoreError> {
        self.inner.names(tx, client, package)
    }

    fn has_names(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
        package: &str,
    ) -> Result<bool, StoreError> {
        self.inner.has_names(tx, client, package)
    }

    fn packages(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
    ) -> Result<Vec<String>, StoreError> {
        self.inner.packages(tx, client)
    }
}

impl SessionAdmin for TimedContainer {
    fn list_sessions(
        &self,
        after: Option<&ClientKey>,
        limit: usize,
    ) -> Result<Vec<SessionSummary>, StoreError> {
        self.inner.list_sessions(after, limit)
    }

    fn session_detail(&self, key: &ClientKey) -> Result<Option<SessionDetail>, StoreError> {
        self.inner.session_detail(key)
    }

    fn delete_sessions(&self, keys: &[ClientKey]) -> Result<u64, StoreError> {
        self.inner.delete_sessions(keys)
    }

    fn sessions_of_principal(&self, principal: &str) -> Result<Vec<ClientKey>, StoreError> {
        self.inner.sessions_of_principal(principal)
    }

    fn stats(&self) -> Result<ContainerStats, StoreError> {
        self.inner.stats()
    }

    fn counts(&self) -> Result<keel_store::SessionCounts, StoreError> {
        self.inner.counts()
    }

    fn sweep(&self, batch: usize) -> Result<SweepReport, StoreError> {
        self.inner.sweep(batch)
    }

    fn load_setting(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.load_setting(name)
    }

    fn store_setting(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.inner.store_setting(name, value)
    }

    fn initialize_setting(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.inner.initialize_setting(name, value)
    }
}

#[cfg(test)]
mod tests {
    use keel_store::RamContainer;
    use keel_txn::TransactionManager;

    use super::*;

    #[test]
    fn the_timer_joins_once_and_does_not_change_outcomes() {
        let commits = Arc::new(CommitsInFlight::default());
        let container = TimedContainer::new(Arc::new(RamContainer::new()), Arc::clone(&commits));
        let manager = TransactionManager::new();
        let key = ClientKey::from_client_id("client");
        let mut tx = manager.begin();
        container.create_session(&mut tx, &key).unwrap();
        container
            .insert(&mut tx, &key, "pkg", "n", SessionValue::new(1u8))
            .unwrap();
        let _savepoint = tx.savepoint().unwrap();
        assert_eq!(
            tx.resource_keys()
                .filter(|k| *k == COMMIT_TIMER_KEY)
                .count(),
            1
        );
        assert_eq!(commits.count(), 1, "a writing transaction is counted");
        tx.commit().unwrap();
        assert_eq!(commits.count(), 0, "a committed one is not");
        let mut tx = manager.begin();
        let value = container.get(&mut tx, &key, "pkg", "n").unwrap().unwrap();
        assert_eq!(value.to_typed::<u8>().unwrap(), 1);
    }
}
