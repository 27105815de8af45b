//! Offline mode: the admin operations directly on a database file.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use keel_store::{
    ClientKey, Clock, ExpiryPolicy, ManualClock, PostgresContainer, PostgresOptions, RedbContainer,
    RedbOptions, RedisContainer, RedisOptions, SessionContainer, SessionValue, StoreError,
};
use keel_txn::TransactionManager;

use super::Admin;
use crate::{
    CliError,
    database::Database,
    ops, policy,
    progress::Progress,
    wire::{RevokedJson, SessionJson, StatsJson, SweepJson},
};

/// A database opened by `keel sessions`: a redb file no server holds, or a
/// PostgreSQL database (servers may be running on it: nothing is locked).
#[derive(Debug)]
pub(super) struct Offline {
    container: Box<dyn SessionContainer>,
    /// The expiry policy the server recorded in the database, if any.
    recorded: Option<ExpiryPolicy>,
    /// Names the database in errors (a PostgreSQL URL without its password).
    path: PathBuf,
}

#[cfg(test)]
impl Offline {
    /// An offline admin over `container` (tests).
    pub(super) fn over(container: Box<dyn SessionContainer>) -> Self {
        let recorded = policy::load(container.as_ref()).ok().flatten();
        Offline {
            container,
            recorded,
            path: PathBuf::from("test"),
        }
    }
}

/// Open the container `db` names, judging expiry with `policy` and taking
/// the time from `clock` if given; a redb file read-only if `read_only`
/// (the file is never written). Returns it with the name errors give it.
pub(crate) fn open_container(
    db: &Database,
    policy: ExpiryPolicy,
    clock: Option<Arc<dyn Clock>>,
    read_only: bool,
) -> Result<(Box<dyn SessionContainer>, PathBuf), CliError> {
    match db {
        Database::File(path) => {
            let mut options = RedbOptions::new()
                .with_expiry(policy)
                .with_read_only(read_only);
            if let Some(clock) = clock {
                options = options.with_clock(clock);
            }
            let container = RedbContainer::open_with(path, options).map_err(in_file(path))?;
            Ok((Box::new(container), path.clone()))
        }
        Database::Postgres { url, schema } => {
            let mut options = PostgresOptions::new().with_expiry(policy);
            if let Some(schema) = schema {
                options = options.with_schema(schema.clone());
            }
            if let Some(clock) = clock {
                options = options.with_clock(clock);
            }
            let container = PostgresContainer::connect(url, options)?;
            let name = PathBuf::from(container.database());
            Ok((Box::new(container), name))
        }
        Database::Redis {
            url,
            prefix,
            replicas,
        } => {
            let mut options = RedisOptions::new().with_expiry(policy);
            if let Some(clock) = clock {
                options = options.with_clock(clock);
            }
            if let Some(prefix) = prefix {
                options = options.with_prefix(prefix.clone());
            }
            // Admin commands wait for no replica.
            let _ = replicas;
            let container = RedisContainer::connect(url, options)?;
            let name = PathBuf::from(container.database());
            Ok((Box::new(container), name))
        }
    }
}

/// `err` as a CLI error that names the file `path`.
pub(crate) fn in_file(path: &Path) -> impl Fn(StoreError) -> CliError + '_ {
    move |err| {
        if err.path().is_some() {
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
    /// Open the existing database `path`, read-only if `read_only` (a redb
    /// file is then opened for reading only and never written). Expiry is
    /// judged with `timeout` and `resolution` where given, else with what
    /// `keel serve` recorded in the file, else with the defaults.
    ///
    /// # Errors
    /// [`CliError::NoDatabase`] if there is no such file (it is not
    /// created); the store's open errors, which name the file
    /// (`DatabaseInUse` suggests `--url`; an empty file is not a database
    /// for a read-only open).
    pub(super) fn open(
        db: &Database,
        timeout: Option<u64>,
        resolution: Option<u64>,
        read_only: bool,
    ) -> Result<Self, CliError> {
        if let Database::File(path) = db
            && !path.exists()
        {
            return Err(CliError::NoDatabase {
                path: path.to_owned(),
            });
        }
        let defaults = apply(ExpiryPolicy::default(), timeout, resolution);
        let (mut container, path) = open_container(db, defaults, None, read_only)?;
        let recorded = policy::load(container.as_ref()).map_err(in_file(&path))?;
        if let Some(recorded) = recorded {
            let wanted = apply(recorded, timeout, resolution);
            if wanted != defaults {
                // The policy is fixed at open: close and open again with it.
                drop(container);
                container = open_container(db, wanted, None, read_only)?.0;
            }
        }
        Ok(Offline {
            container,
            recorded,
            path,
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
        ops::list_page(self.container.as_ref(), after.as_ref(), limit, data).map_err(self.err())
    }

    fn show(&self, key: &str) -> Result<Option<SessionJson>, CliError> {
        let key = ops::parse_key(key)?;
        ops::show(self.container.as_ref(), &key).map_err(self.err())
    }

    fn remove(&self, key: &str) -> Result<u64, CliError> {
        let key = ops::parse_key(key)?;
        ops::remove(self.container.as_ref(), &key).map_err(self.err())
    }

    fn revoke(&self, principal: &str) -> Result<RevokedJson, CliError> {
        ops::revoke_principal(self.container.as_ref(), principal).map_err(self.err())
    }

    fn stats(&self) -> Result<StatsJson, CliError> {
        ops::stats(self.container.as_ref()).map_err(self.err())
    }

    fn default_sweep_batch(&self) -> usize {
        crate::sweeper::OFFLINE_BATCH
    }

    fn policies(&self) -> Option<(Option<ExpiryPolicy>, ExpiryPolicy)> {
        Some((self.recorded, *self.container.expiry()))
    }

    fn sweep_step(&self, batch: usize) -> Result<SweepJson, CliError> {
        let started = Instant::now();
        let report = self.container.sweep(batch).map_err(self.err())?;
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
    db: &Database,
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
    let (container, path) = open_container(db, policy, Some(Arc::new(clock.clone())), false)?;
    let path = path.as_path();
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
                .declare_fresh(&mut tx, &key)
                .map_err(in_file(path))?;
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
