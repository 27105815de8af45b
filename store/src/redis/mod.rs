//! The Redis container: several servers share one Redis. The transactional
//! core is the same as the other backends'; Redis stores a session as one
//! hash, and one script checks the versions a commit recorded and applies
//! its change set atomically (`scripts.rs`).

mod connection;
mod link;
mod scripts;

use std::{
    collections::BTreeMap,
    fmt,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use self::connection::{Rd, Settings};
use crate::{
    ClientKey, Clock, ContainerStats, ExpiryPolicy, SessionAdmin, SessionDetail, SessionSummary,
    StoreError, SweepReport, SystemClock,
    engine::{
        admin::{StatsBuilder, summary},
        records,
        remote::{RemoteContainer, RemoteCore},
    },
};

/// Process-wide counter that makes every Redis container's sort key unique.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// How to connect a [`RedisContainer`]: a builder with safe defaults.
///
/// ```
/// use keel_store::{ExpiryPolicy, RedisOptions};
/// let options = RedisOptions::new()
///     .with_prefix("my_app")
///     .with_expiry(ExpiryPolicy::default().with_timeout(1800));
/// # let _ = options;
/// ```
#[derive(Clone)]
pub struct RedisOptions {
    expiry: ExpiryPolicy,
    clock: Arc<dyn Clock>,
    settings: Settings,
    remembered: usize,
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("expiry", &self.expiry)
            .field("clock", &self.clock)
            .field("settings", &self.settings)
            .field("remembered", &self.remembered)
            .finish()
    }
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl RedisOptions {
    /// The defaults: [`ExpiryPolicy::default`], the system clock, key prefix
    /// `keel`, 5 s to connect, up to 65,536 sessions remembered for writing
    /// requests.
    pub fn new() -> Self {
        RedisOptions {
            expiry: ExpiryPolicy::default(),
            clock: Arc::new(SystemClock),
            settings: Settings {
                prefix: "keel".to_owned(),
                connect_timeout: Duration::from_secs(5),
                replicas: 0,
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

    /// Keep every key under `prefix` (letters, digits, `_`, `-`, `.`);
    /// default `keel`. Keel touches no key outside it.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.settings.prefix = prefix.into();
        self
    }

    /// Give up connecting after `timeout`: [`StoreError::Unavailable`].
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// Acknowledge a commit only once `replicas` replicas have it too
    /// (Redis `WAIT`, up to 2.5 s); default 0: once the primary applied it.
    /// A commit the replicas do not confirm in time is reported with an
    /// unknown outcome ([`StoreError::CommitOutcomeUnknown`]), never as
    /// success. NOTE: WAIT holds the container's one connection meanwhile.
    pub fn with_replicas(mut self, replicas: u32) -> Self {
        self.settings.replicas = replicas;
        self
    }

    /// Remember up to `sessions` sessions for writing requests (0: off); see
    /// [`PostgresOptions::with_remembered_sessions`](crate::PostgresOptions::with_remembered_sessions)
    /// where that backend is built, and `docs/design.md`.
    pub fn with_remembered_sessions(mut self, sessions: usize) -> Self {
        self.remembered = sessions;
        self
    }
}

/// A session data container in Redis: several app servers given the same
/// Redis share sessions, with every guarantee of the other containers.
///
/// A session is one hash, read whole by one HGETALL (one round trip, one
/// snapshot), ahead of the handler. A commit is one script (EVALSHA) that
/// checks every version the transaction read and applies its change set
/// atomically, or changes nothing and reports a conflict; it is answered
/// when Redis has applied it (durable as Redis's `appendfsync` and
/// replication make it: see the README). Each session's hash expires (TTL)
/// once Keel's expiry rules say it has, so Redis frees dead sessions by
/// itself; until the TTL fires, the rules decide what is live.
///
/// ```no_run
/// use keel_store::{ClientKey, RedisContainer, RedisOptions, SessionContainer, SessionValue};
/// use keel_txn::TransactionManager;
///
/// let container = RedisContainer::connect("redis://127.0.0.1:6379", RedisOptions::new())?;
/// let key = ClientKey::from_client_id("client");
/// let manager = TransactionManager::new();
///
/// let mut tx = manager.begin();
/// container.create_session(&mut tx, &key)?;
/// container.insert(&mut tx, &key, "app", "name", SessionValue::new("Ada"))?;
/// tx.commit()?; // applied by Redis when this returns
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RedisContainer {
    core: RemoteCore<Rd>,
}

impl fmt::Debug for RedisContainer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisContainer")
            .field("server", &self.rd().target)
            .field("prefix", &self.rd().prefix)
            .field("sort_key", &self.core.sort_key())
            .field("expiry", self.core.expiry())
            .finish_non_exhaustive()
    }
}

impl RedisContainer {
    /// Connect to the Redis at `url` (`redis://HOST:PORT[/DB]`).
    ///
    /// # Errors
    /// - [`StoreError::InvalidInput`]: a malformed URL or prefix.
    /// - [`StoreError::Unavailable`]: Redis did not answer within the
    ///   connect timeout (the error names the server).
    /// - [`StoreError::UnsupportedFormat`]: written by a newer Keel.
    pub fn connect(url: &str, options: RedisOptions) -> Result<Self, StoreError> {
        let rd = Rd::connect(
            url,
            &options.settings,
            options.expiry,
            Arc::clone(&options.clock),
        )?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Ok(RedisContainer {
            core: RemoteCore::new(
                format!("keel-store/~redis/{id}"),
                rd,
                options.remembered,
                options.expiry,
                options.clock,
            ),
        })
    }

    /// The server, as named in errors (its URL without a password).
    pub fn database(&self) -> &str {
        &self.core.store().target
    }

    /// Reads and commits sent so far: (reads, commits).
    pub fn round_trips(&self) -> (u64, u64) {
        let counters = &self.rd().counters;
        (
            counters.reads.load(Ordering::Relaxed),
            counters.commits.load(Ordering::Relaxed),
        )
    }

    fn rd(&self) -> Arc<Rd> {
        Arc::clone(self.core.store())
    }

    /// Run an admin operation and wait for it (Unavailable after a minute
    /// without an answer: a sweep or listing makes many round trips).
    fn wait<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let target = self.database().to_owned();
        self.core.store().wait_for(async move {
            tokio::time::timeout(Duration::from_secs(60), work)
                .await
                .map_err(|_| StoreError::Unavailable {
                    database: target,
                    source: "no answer within 60 s".into(),
                })?
        })?
    }
}

impl RemoteContainer for RedisContainer {
    type Store = Rd;

    fn core(&self) -> &RemoteCore<Rd> {
        &self.core
    }
}

impl SessionAdmin for RedisContainer {
    fn list_sessions(
        &self,
        after: Option<&ClientKey>,
        limit: usize,
    ) -> Result<Vec<SessionSummary>, StoreError> {
        let now = self.core.clock().now();
        let stored = self.wait(self.rd().list(after.copied(), limit))?;
        Ok(stored
            .iter()
            .filter_map(|(client, image, bytes)| {
                let record = image.record.as_ref()?;
                Some(summary(client, record, *bytes, self.core.expiry(), now))
            })
            .collect())
    }

    fn session_detail(&self, key: &ClientKey) -> Result<Option<SessionDetail>, StoreError> {
        let now = self.core.clock().now();
        let Some((image, bytes)) = self.wait(self.rd().detail(*key))? else {
            return Ok(None);
        };
        let Some(record) = &image.record else {
            return Ok(None);
        };
        let mut data: BTreeMap<String, BTreeMap<String, crate::Value>> = BTreeMap::new();
        for ((package, name), (_, value)) in &image.items {
            data.entry(package.clone())
                .or_default()
                .insert(name.clone(), crate::Value::clone(value));
        }
        Ok(Some(SessionDetail {
            summary: summary(key, record, bytes, self.core.expiry(), now),
            data,
        }))
    }

    fn delete_sessions(&self, keys: &[ClientKey]) -> Result<u64, StoreError> {
        self.wait(self.rd().delete(keys.to_vec()))
    }

    fn sessions_of_principal(&self, principal: &str) -> Result<Vec<ClientKey>, StoreError> {
        records::check_part("principal", principal)?;
        self.wait(self.rd().by_principal(principal.to_owned()))
    }

    fn stats(&self) -> Result<ContainerStats, StoreError> {
        let mut stats = StatsBuilder::new(*self.core.expiry(), self.core.clock().now());
        for (_, image, bytes) in self.wait(self.rd().everything())? {
            if let Some(record) = &image.record {
                stats.add_session(record);
                stats.add_value_bytes(bytes);
            }
        }
        Ok(stats.finish(None))
    }

    fn sweep(&self, batch: usize) -> Result<SweepReport, StoreError> {
        let now = self.core.clock().now();
        let policy = self.core.expiry();
        let (idle, age) = (policy.idle_cutoff(now), policy.age_cutoff(now));
        self.wait(self.rd().sweep(idle, age, batch))
    }

    fn load_setting(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.wait(self.rd().load_setting(name.to_owned()))
    }

    fn store_setting(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.wait(self.rd().store_setting(name.to_owned(), value.to_vec()))
    }

    fn initialize_setting(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.wait(
            self.rd()
                .initialize_setting(name.to_owned(), value.to_vec()),
        )
    }
}
