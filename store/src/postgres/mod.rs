//! The PostgreSQL container: several servers share one database. The
//! transactional core is the same as redb's and RAM's; PostgreSQL stores the
//! records, checks the versions a commit recorded under the rows' locks and
//! applies the change set atomically (`schema.rs`).

mod connection;
mod schema;

use std::{
    fmt,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use self::connection::{Pg, Settings};
use crate::{
    ClientKey, Clock, ContainerStats, ExpiryPolicy, SessionAdmin, SessionDetail, SessionSummary,
    StoreError, SweepReport, SystemClock,
    engine::{
        admin::{StatsBuilder, summary},
        records::{self, SessionRecord},
        remote::{RemoteContainer, RemoteCore},
    },
};

/// Process-wide counter that makes every PostgreSQL container's sort key
/// unique.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// How to connect a [`PostgresContainer`]: a builder with safe defaults.
///
/// ```
/// use keel_store::{ExpiryPolicy, PostgresOptions};
/// let options = PostgresOptions::new()
///     .with_schema("keel")
///     .with_expiry(ExpiryPolicy::default().with_timeout(1800))
///     .with_pool_size(8);
/// # let _ = options;
/// ```
#[derive(Clone)]
pub struct PostgresOptions {
    expiry: ExpiryPolicy,
    clock: Arc<dyn Clock>,
    settings: Settings,
    remembered: usize,
}

impl fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("expiry", &self.expiry)
            .field("clock", &self.clock)
            .field("settings", &self.settings)
            .field("remembered", &self.remembered)
            .finish()
    }
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl PostgresOptions {
    /// The defaults: [`ExpiryPolicy::default`], the system clock, schema
    /// `keel`, a pool of 8 connections, 5 s to connect, group commits of up
    /// to 256 change sets, 2 group commits in flight, up to 65,536 sessions
    /// remembered for writing requests.
    pub fn new() -> Self {
        PostgresOptions {
            expiry: ExpiryPolicy::default(),
            clock: Arc::new(SystemClock),
            settings: Settings {
                schema: "keel".to_owned(),
                pool_size: 8,
                connect_timeout: Duration::from_secs(5),
                max_batch: 256,
                concurrent_commits: 2,
            },
            remembered: 65_536,
        }
    }

    /// Use `expiry` instead of [`ExpiryPolicy::default`].
    pub fn with_expiry(mut self, expiry: ExpiryPolicy) -> Self {
        self.expiry = expiry;
        self
    }

    /// Take the time from `clock` (tests use a
    /// [`ManualClock`](crate::ManualClock)).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Keep Keel's tables in schema `schema` (lower-case letters, digits
    /// and `_`); default `keel`. Keel creates it on first use and never
    /// touches a schema that holds tables it did not create.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.settings.schema = schema.into();
        self
    }

    /// Keep at most `connections` connections open (at least 1).
    pub fn with_pool_size(mut self, connections: usize) -> Self {
        self.settings.pool_size = connections.max(1);
        self
    }

    /// Give up connecting (and waiting for a pooled connection) after
    /// `timeout`; the operation then fails with
    /// [`StoreError::Unavailable`].
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// Group at most `change_sets` concurrent commits into one PostgreSQL
    /// transaction (at least 1).
    pub fn with_max_batch(mut self, change_sets: usize) -> Self {
        self.settings.max_batch = change_sets.max(1);
        self
    }

    /// Remember the state of up to `sessions` sessions after each read and
    /// commit, so that a writing request ([`ReadAhead::Remembered`]) needs
    /// no read: one round trip, its commit, which validates every version
    /// it read (a state another server changed meanwhile is a conflict, and
    /// the request runs again on a fresh read). 0 turns it off. When full,
    /// the memory starts afresh.
    pub fn with_remembered_sessions(mut self, sessions: usize) -> Self {
        self.remembered = sessions;
        self
    }
}

/// A session data container in PostgreSQL: several app servers given the
/// same database share sessions, with every guarantee of
/// [`RedbContainer`](crate::RedbContainer).
///
/// A request reads a session whole, in one statement (one snapshot, one
/// round trip): the session layer starts that read before the handler runs
/// ([`SessionContainer::preload`](crate::SessionContainer::preload)), so no
/// worker thread waits on it. Writes are buffered as live values; at commit
/// they are serialized and sent, with the version of everything the
/// transaction read, to one server-side function that locks the sessions'
/// rows in key order, checks every version and applies the change set, or
/// changes nothing and reports a conflict. Concurrent commits of one process
/// share one PostgreSQL transaction (group commit); a conflict fails its own
/// change set alone. A commit is acknowledged only after PostgreSQL's COMMIT
/// returned.
///
/// Sort key `keel-store/~postgres/<id>`: like redb, it votes after every
/// other resource.
///
/// # Errors at commit
/// [`Transaction::commit`] fails with [`keel_txn::TxnError::Resource`], the
/// container's [`StoreError`] as its source: [`StoreError::Unserializable`]
/// (nothing written anywhere), [`StoreError::Conflict`] (retryable),
/// [`StoreError::Unavailable`] (nothing sent), [`StoreError::Storage`]
/// (PostgreSQL refused it: nothing written), [`StoreError::CommitOutcomeUnknown`]
/// (the link failed after the commit was sent).
///
/// ```no_run
/// use keel_store::{ClientKey, PostgresContainer, PostgresOptions, SessionContainer, SessionValue};
/// use keel_txn::TransactionManager;
///
/// let container = PostgresContainer::connect(
///     "postgres://postgres@127.0.0.1:5432/test",
///     PostgresOptions::new().with_schema("my_app_sessions"),
/// )?;
/// let key = ClientKey::from_client_id("client");
/// let manager = TransactionManager::new();
///
/// let mut tx = manager.begin();
/// container.create_session(&mut tx, &key)?;
/// container.insert(&mut tx, &key, "app", "name", SessionValue::new("Ada"))?;
/// tx.commit()?; // committed in PostgreSQL when this returns
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PostgresContainer {
    core: RemoteCore<Pg>,
}

impl fmt::Debug for PostgresContainer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresContainer")
            .field("database", &self.pg().target)
            .field("schema", &self.pg().schema)
            .field("sort_key", &self.core.sort_key())
            .field("expiry", self.core.expiry())
            .finish_non_exhaustive()
    }
}

/// Round trips a [`PostgresContainer`] made since it was connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RoundTrips {
    /// Reads of sessions (each one statement).
    pub reads: u64,
    /// Group commits (each one statement, one PostgreSQL transaction).
    pub commits: u64,
    /// Change sets committed by them.
    pub committed_change_sets: u64,
}

impl PostgresContainer {
    /// Connect to the database at `url` (`postgres://USER@HOST:PORT/DB`),
    /// creating Keel's schema on first use.
    ///
    /// # Errors
    /// - [`StoreError::InvalidInput`]: a malformed URL or schema name.
    /// - [`StoreError::Unavailable`]: the server did not answer within the
    ///   connect timeout (the error names host and database).
    /// - [`StoreError::NotAKeelDatabase`]: the schema holds tables Keel did
    ///   not create.
    /// - [`StoreError::UnsupportedFormat`]: written by a newer Keel.
    /// - [`StoreError::Storage`]: PostgreSQL refused the set-up.
    pub fn connect(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let pg = Pg::connect(url, &options.settings)?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Ok(PostgresContainer {
            core: RemoteCore::new(
                format!("keel-store/~postgres/{id}"),
                pg,
                options.remembered,
                options.expiry,
                options.clock,
            ),
        })
    }

    /// The database, as named in errors (its URL without a password).
    pub fn database(&self) -> &str {
        &self.core.store().target
    }

    /// Round trips made so far (reads and group commits).
    pub fn round_trips(&self) -> RoundTrips {
        let counters = &self.pg().counters;
        RoundTrips {
            reads: counters.reads.load(Ordering::Relaxed),
            commits: counters.commits.load(Ordering::Relaxed),
            committed_change_sets: counters.committed_change_sets.load(Ordering::Relaxed),
        }
    }

    fn pg(&self) -> Arc<Pg> {
        Arc::clone(self.core.store())
    }

    /// Run an admin operation and wait for it.
    fn wait<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.core.store().wait_for(work)?
    }
}

impl RemoteContainer for PostgresContainer {
    type Store = Pg;

    fn core(&self) -> &RemoteCore<Pg> {
        &self.core
    }
}

impl SessionAdmin for PostgresContainer {
    fn list_sessions(
        &self,
        after: Option<&ClientKey>,
        limit: usize,
    ) -> Result<Vec<SessionSummary>, StoreError> {
        let now = self.core.clock().now();
        let rows = self.wait(self.pg().list(after.copied(), limit))?;
        Ok(rows
            .iter()
            .map(|(client, record, bytes)| summary(client, record, *bytes, self.core.expiry(), now))
            .collect())
    }

    fn session_detail(&self, key: &ClientKey) -> Result<Option<SessionDetail>, StoreError> {
        let now = self.core.clock().now();
        let pg = self.pg();
        let client = *key;
        let (record, values) = self.wait(async move {
            let record = Arc::clone(&pg).load(client).await?.record;
            let values = match &record {
                Some(_) => pg.values_of(client).await?,
                None => Vec::new(),
            };
            Ok((record, values))
        })?;
        let Some(record) = record else {
            return Ok(None);
        };
        let mut data = std::collections::BTreeMap::new();
        let mut bytes = 0;
        for (item, value, size) in values {
            bytes += size;
            data.entry(item.package)
                .or_insert_with(std::collections::BTreeMap::new)
                .insert(item.name, value);
        }
        Ok(Some(SessionDetail {
            summary: summary(key, &record, bytes, self.core.expiry(), now),
            data,
        }))
    }

    fn delete_sessions(&self, keys: &[ClientKey]) -> Result<u64, StoreError> {
        self.wait(self.pg().delete(keys.to_vec()))
    }

    fn sessions_of_principal(&self, principal: &str) -> Result<Vec<ClientKey>, StoreError> {
        records::check_part("principal", principal)?;
        self.wait(self.pg().by_principal(principal.to_owned()))
    }

    fn stats(&self) -> Result<ContainerStats, StoreError> {
        let mut stats = StatsBuilder::new(*self.core.expiry(), self.core.clock().now());
        let (times, bytes) = self.wait(self.pg().stats())?;
        for (created, last_access) in times {
            stats.add_session(&SessionRecord {
                version: 0,
                created,
                last_access,
                principal: None,
            });
        }
        stats.add_value_bytes(bytes);
        Ok(stats.finish(None))
    }

    fn sweep(&self, batch: usize) -> Result<SweepReport, StoreError> {
        let now = self.core.clock().now();
        let (idle, age) = (
            self.core.expiry().idle_cutoff(now),
            self.core.expiry().age_cutoff(now),
        );
        self.wait(self.pg().sweep(idle, age, batch))
    }

    fn load_setting(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.wait(self.pg().load_setting(name.to_owned()))
    }

    fn store_setting(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.wait(self.pg().store_setting(name.to_owned(), value.to_vec()))
    }

    fn initialize_setting(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.wait(
            self.pg()
                .initialize_setting(name.to_owned(), value.to_vec()),
        )
    }
}
