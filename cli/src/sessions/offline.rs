//! Offline mode: the admin operations directly on a database file.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use keel_store::{
    ClientKey, ExpiryPolicy, ManualClock, RedbContainer, RedbOptions, SessionContainer,
    SessionValue, StoreError,
};
use keel_txn::TransactionManager;

use super::Admin;
use crate::{
    CliError, ops, policy,
    progress::Progress,
    wire::{RevokedJson, SessionJson, StatsJson, SweepJson},
};

/// A database file opened by `keel sessions`.
#[derive(Debug)]
pub(super) struct Offline {
    container: RedbContainer,
    path: PathBuf,
}

/// Whether a store error already names the database file.
fn names_the_file(err: &StoreError) -> bool {
    matches!(
        err,
        StoreError::NotAKeelDatabase { .. }
            | StoreError::UnsupportedFormat { .. }
            | StoreError::DatabaseInUse { .. }
            | StoreError::Corrupted { .. }
    )
}

/// `err` as a CLI error that names the file `path`.
fn in_file(path: &Path) -> impl Fn(StoreError) -> CliError + '_ {
    move |err| {
        if names_the_file(&err) {
            CliError::Store(err)
        } else {
            CliError::Database {
                path: path.to_owned(),
                source: err,
            }
        }
    }
}

fn apply(mut policy: ExpiryPolicy, timeout: Option<u64>, resolution: Option<u64>) -> ExpiryPolicy {
    if let Some(timeout) = timeout {
        policy = policy.with_timeout(timeout);
    }
    if let Some(resolution) = resolution {
        policy = policy.with_resolution(resolution);
    }
    policy
}

impl Offline {
    /// Open the existing database `path`. Expiry is judged with `timeout` and
    /// `resolution` where given, else with what `keel serve` recorded in
    /// the file, else with the defaults.
    ///
    /// # Errors
    /// [`CliError::NoDatabase`] if there is no such file (it is not
    /// created); the store's open errors, which name the file
    /// (`DatabaseInUse` suggests `--url`).
    pub(super) fn open(
        path: &Path,
        timeout: Option<u64>,
        resolution: Option<u64>,
    ) -> Result<Self, CliError> {
        if !path.exists() {
            return Err(CliError::NoDatabase {
                path: path.to_owned(),
            });
        }
        let open = |policy: ExpiryPolicy| {
            RedbContainer::open_with(path, RedbOptions::new().with_expiry(policy))
                .map_err(in_file(path))
        };
        let defaults = apply(ExpiryPolicy::default(), timeout, resolution);
        let mut container = open(defaults)?;
        let recorded = policy::load(&container).map_err(in_file(path))?;
        if let Some(recorded) = recorded {
            let wanted = apply(recorded, timeout, resolution);
            if wanted != defaults {
                // The policy is fixed at open: close and open again with it.
                drop(container);
                container = open(wanted)?;
            }
        }
        Ok(Offline {
            container,
            path: path.to_owned(),
        })
    }

    fn err(&self) -> impl Fn(StoreError) -> CliError + '_ {
        in_file(&self.path)
    }
}

impl Admin for Offline {
    fn now(&self) -> u64 {
        self.container.now()
    }

    fn list(
        &self,
        after: Option<&str>,
        limit: usize,
        data: bool,
    ) -> Result<Vec<SessionJson>, CliError> {
        let after = after.map(ops::parse_key).transpose()?;
        ops::list_page(&self.container, after.as_ref(), limit, data).map_err(self.err())
    }

    fn show(&self, key: &str) -> Result<Option<SessionJson>, CliError> {
        let key = ops::parse_key(key)?;
        ops::show(&self.container, &key).map_err(self.err())
    }

    fn remove(&self, key: &str) -> Result<u64, CliError> {
        let key = ops::parse_key(key)?;
        ops::remove(&self.container, &key).map_err(self.err())
    }

    fn revoke(&self, principal: &str) -> Result<RevokedJson, CliError> {
        ops::revoke_principal(&self.container, principal).map_err(self.err())
    }

    fn stats(&self) -> Result<StatsJson, CliError> {
        ops::stats(&self.container).map_err(self.err())
    }

    fn default_sweep_batch(&self) -> usize {
        crate::sweeper::OFFLINE_BATCH
    }

    fn sweep_step(&self, batch: usize) -> Result<SweepJson, CliError> {
        let started = Instant::now();
        let report = keel_store::SessionAdmin::sweep(&self.container, batch).map_err(self.err())?;
        Ok(SweepJson {
            removed: report.removed,
            batches: 1,
            more: report.more,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// `keel sessions populate`: add `count` generated sessions to the database
/// `path` (created if missing), the first `expired` of them already expired,
/// `batch` sessions per transaction. Each session holds a demo `count` and
/// every tenth a principal. For measurements.
///
/// # Errors
/// The store's open and commit errors; [`CliError::Usage`] for expired
/// sessions under a timeout of 0 (nothing expires).
pub(super) fn populate(
    path: &Path,
    timeout: Option<u64>,
    resolution: Option<u64>,
    count: u64,
    expired: u64,
    batch: usize,
) -> Result<(), CliError> {
    let policy = apply(ExpiryPolicy::default(), timeout, resolution);
    if expired > 0 && policy.timeout() == 0 {
        return Err(CliError::Usage(
            "with --timeout 0 nothing expires: cannot make expired sessions".to_owned(),
        ));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    // Last accessed a minute before the idle cutoff: expired now.
    let stale = now
        .saturating_sub(policy.timeout())
        .saturating_sub(policy.resolution())
        .saturating_sub(60);
    let clock = ManualClock::new(now);
    let container = RedbContainer::open_with(
        path,
        RedbOptions::new()
            .with_expiry(policy)
            .with_clock(Arc::new(clock.clone())),
    )
    .map_err(in_file(path))?;
    let manager = TransactionManager::new();
    let started = Instant::now();
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut progress = Progress::on_terminal("populating", "sessions");
    let batch = batch.max(1) as u64;
    let mut done = 0;
    while done < count {
        // A transaction holds only expired or only live sessions, so the
        // clock stays put from its first write to its commit.
        let end = if done < expired {
            expired.min(count).min(done + batch)
        } else {
            count.min(done + batch)
        };
        clock.set(if done < expired { stale } else { now });
        let mut tx = manager.begin();
        for i in done..end {
            let key = ClientKey::from_client_id(&format!("populate-{seed}-{i}"));
            container
                .create_session(&mut tx, &key)
                .map_err(in_file(path))?;
            container
                .insert(
                    &mut tx,
                    &key,
                    "keel.demo",
                    "count",
                    SessionValue::new(i % 1000),
                )
                .map_err(in_file(path))?;
            if i % 10 == 0 {
                container
                    .set_principal(&mut tx, &key, Some(&format!("user-{}", i % 1000)))
                    .map_err(in_file(path))?;
            }
        }
        tx.commit().map_err(|source| CliError::Commit {
            path: path.to_owned(),
            source,
        })?;
        done = end;
        progress.update(done);
    }
    progress.finish(done);
    println!(
        "populated {} with {count} sessions ({} expired) in {:.1} s",
        path.display(),
        expired.min(count),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
