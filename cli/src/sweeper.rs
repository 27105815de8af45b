//! Sweeping expired sessions from a running server: the background sweeper
//! task of `keel serve`, and the batch loop behind `POST /admin/sweep`.
//!
//! Each batch is one [`SessionAdmin::sweep`](keel_store::SessionAdmin::sweep)
//! call (one durable commit, reading only expired index entries) on tokio's
//! blocking pool, followed by a pause as long as the batch took, so requests
//! keep being served and committed during a long sweep, and no request ever
//! scans for expired sessions.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use keel_store::SessionContainer;

use crate::{CliError, metrics, wire::SweepJson, wire::SweeperJson};

/// Expired sessions deleted per batch by a running server by default: small
/// enough that a request commit queued behind a batch waits little (see
/// docs/PERFORMANCE.md, "Admin: sweep").
pub(crate) const DEFAULT_BATCH: usize = 250;

/// Expired sessions deleted per batch by an offline sweep by default: no
/// request waits for it, so larger batches go faster.
pub(crate) const OFFLINE_BATCH: usize = 1000;

/// The largest batch the admin API accepts.
pub(crate) const MAX_BATCH: usize = 100_000;

/// Sweep expired sessions of `container` in batches of `batch`, until none
/// remain or at least `max` were removed.
///
/// # Errors
/// The container's commit errors; [`CliError::Task`] if a batch panicked.
pub(crate) async fn sweep(
    container: Arc<dyn SessionContainer>,
    batch: usize,
    max: Option<u64>,
) -> Result<SweepJson, CliError> {
    let started = Instant::now();
    let mut result = SweepJson {
        removed: 0,
        batches: 0,
        more: false,
        seconds: 0.0,
    };
    loop {
        let job = Arc::clone(&container);
        let batch_started = Instant::now();
        let report = tokio::task::spawn_blocking(move || job.sweep(batch)).await??;
        metrics::record_sweep_batch(&report, batch_started);
        result.removed += report.removed;
        result.batches += 1;
        result.more = report.more;
        // NOTE: a batch that removed nothing but claims more would loop
        // forever; stop and let the next run try again.
        if !report.more || report.removed == 0 || max.is_some_and(|max| result.removed >= max) {
            break;
        }
        // NOTE: pause as long as the batch took, so a long sweep holds the
        // store's single writer at most about half of the time and request
        // commits queued behind a batch go first.
        tokio::time::sleep(batch_started.elapsed()).await;
    }
    result.seconds = started.elapsed().as_secs_f64();
    Ok(result)
}

/// What the background sweeper did, for `GET /admin/stats`.
#[derive(Debug, Default)]
pub(crate) struct SweeperStatus {
    state: Mutex<SweeperJson>,
}

impl SweeperStatus {
    /// The status of a sweeper running every `interval` in batches of
    /// `batch` (interval 0: no background sweeper).
    pub(crate) fn new(interval: Duration, batch: usize) -> Self {
        SweeperStatus {
            state: Mutex::new(SweeperJson {
                interval_seconds: interval.as_secs(),
                batch,
                ..SweeperJson::default()
            }),
        }
    }

    /// A copy of the current status.
    pub(crate) fn snapshot(&self) -> SweeperJson {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn record(&self, outcome: Result<u64, String>, now: u64) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.runs += 1;
        state.last_run = Some(now);
        match outcome {
            Ok(removed) => {
                state.removed += removed;
                state.last_error = None;
            }
            Err(error) => state.last_error = Some(error),
        }
    }
}

/// Start the background sweeper: every `interval` (the first run at once), it
/// sweeps all expired sessions in batches of `batch`, logs what it removed,
/// and now and then recounts the store for the session gauges.
pub(crate) fn spawn(
    container: Arc<dyn SessionContainer>,
    interval: Duration,
    batch: usize,
    status: Arc<SweeperStatus>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(container, interval, batch, status))
}

async fn run(
    container: Arc<dyn SessionContainer>,
    interval: Duration,
    batch: usize,
    status: Arc<SweeperStatus>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_count = Instant::now();
    loop {
        ticker.tick().await;
        match sweep(Arc::clone(&container), batch, None).await {
            Ok(swept) => {
                if swept.removed > 0 {
                    tracing::info!(
                        removed = swept.removed,
                        batches = swept.batches,
                        seconds = swept.seconds,
                        "swept expired sessions"
                    );
                }
                status.record(Ok(swept.removed), container.now());
            }
            Err(err) => {
                tracing::warn!(error = %err, "sweeping expired sessions failed");
                status.record(Err(err.to_string()), container.now());
            }
        }
        // NOTE: the cheap counts (on redb they read no session: see
        // `SessionAdmin::counts`); still never more than a tenth of the
        // time, for a container whose counts are a full scan.
        if Instant::now() >= next_count {
            let started = Instant::now();
            let job = Arc::clone(&container);
            match tokio::task::spawn_blocking(move || job.counts().map(|c| (c, job.now()))).await {
                Ok(Ok((counts, now))) => metrics::set_count_gauges(&counts, now),
                Ok(Err(err)) => tracing::warn!(error = %err, "counting sessions failed"),
                Err(err) => tracing::warn!(error = %err, "counting sessions failed"),
            }
            next_count = Instant::now() + started.elapsed() * 10;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use keel_store::{ClientKey, ExpiryPolicy, ManualClock, RamContainer};
    use keel_txn::TransactionManager;

    use super::*;

    fn expired_sessions(count: usize) -> (Arc<dyn SessionContainer>, ManualClock) {
        let clock = ManualClock::new(1_000_000);
        let container = RamContainer::new()
            .with_expiry(ExpiryPolicy::default().with_timeout(10).with_resolution(1))
            .with_clock(Arc::new(clock.clone()));
        let manager = TransactionManager::new();
        let mut tx = manager.begin();
        for i in 0..count {
            let key = ClientKey::from_client_id(&format!("client {i}"));
            container.create_session(&mut tx, &key).unwrap();
        }
        tx.commit().unwrap();
        clock.advance(100);
        (Arc::new(container), clock)
    }

    #[tokio::test]
    async fn a_sweep_removes_everything_in_bounded_batches() {
        let (container, _clock) = expired_sessions(25);
        let swept = sweep(Arc::clone(&container), 10, None).await.unwrap();
        assert_eq!((swept.removed, swept.batches, swept.more), (25, 3, false));
        assert!(container.list_sessions(None, 100).unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_sweep_stops_at_its_max() {
        let (container, _clock) = expired_sessions(25);
        let swept = sweep(Arc::clone(&container), 10, Some(10)).await.unwrap();
        assert_eq!((swept.removed, swept.batches, swept.more), (10, 1, true));
    }
}
