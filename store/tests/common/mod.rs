//! Helpers shared by the store's integration tests: containers under a
//! manual clock, a simulated disk that keeps only synced bytes (crash
//! simulation) and can fail writes or syncs on demand (fault injection), and
//! a value that cannot be serialized.

// Test code: a failed unwrap is a failed test.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeSet,
    io,
    sync::{Arc, Mutex},
};

use keel_store::{
    ExpiryPolicy, ManualClock, RamContainer, RedbContainer, RedbOptions, SessionContainer,
};
use keel_txn::TransactionManager;
use redb::StorageBackend;
use tempfile::TempDir;

/// zope.session's `NoPickle`: a value whose serialization always fails.
#[derive(Debug)]
pub struct NoPickle;

impl serde::Serialize for NoPickle {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("I cannot be pickled"))
    }
}

/// Which container a conformance test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ram,
    Redb,
    #[cfg(feature = "postgres")]
    Postgres,
    #[cfg(feature = "redis")]
    Redis,
    /// The three-master Redis Cluster.
    #[cfg(feature = "redis")]
    RedisCluster,
}

/// A container with its clock and a transaction manager; keeps the
/// database's directory alive.
pub struct Env {
    pub container: Arc<dyn SessionContainer>,
    pub clock: ManualClock,
    pub manager: TransactionManager,
    pub dir: Option<TempDir>,
    /// The PostgreSQL schema of this test, dropped with the `Env`.
    #[cfg(feature = "postgres")]
    pub schema: Option<postgres::Schema>,
    /// The Redis key prefix of this test, its keys deleted with the `Env`.
    #[cfg(feature = "redis")]
    pub prefix: Option<redis_server::Prefix>,
}

impl Env {
    /// A container of `kind` with `policy`, its clock at `now`.
    pub fn new(kind: Kind, policy: ExpiryPolicy, now: u64) -> Env {
        let clock = ManualClock::new(now);
        #[cfg(feature = "postgres")]
        let mut schema = None;
        #[cfg(feature = "redis")]
        let mut prefix = None;
        let (container, dir): (Arc<dyn SessionContainer>, _) = match kind {
            Kind::Ram => (
                Arc::new(
                    RamContainer::new()
                        .with_expiry(policy)
                        .with_clock(Arc::new(clock.clone())),
                ),
                None,
            ),
            Kind::Redb => {
                let dir = tempfile::tempdir().expect("temp dir");
                let options = RedbOptions::new()
                    .with_expiry(policy)
                    .with_clock(Arc::new(clock.clone()));
                let container = RedbContainer::open_with(dir.path().join("s.redb"), options)
                    .expect("open redb container");
                (Arc::new(container), Some(dir))
            }
            #[cfg(feature = "postgres")]
            Kind::Postgres => {
                let name = postgres::Schema::new();
                let options = keel_store::PostgresOptions::new()
                    .with_schema(name.name.clone())
                    .with_pool_size(4)
                    .with_expiry(policy)
                    .with_clock(Arc::new(clock.clone()));
                let container = keel_store::PostgresContainer::connect(&postgres::url(), options)
                    .expect("connect the PostgreSQL container");
                schema = Some(name);
                (Arc::new(container), None)
            }
            #[cfg(feature = "redis")]
            Kind::Redis | Kind::RedisCluster => {
                let (name, url) = if kind == Kind::Redis {
                    (redis_server::Prefix::new(), redis_server::url())
                } else {
                    (
                        redis_server::Prefix::on_cluster(),
                        redis_server::cluster_url(),
                    )
                };
                let options = keel_store::RedisOptions::new()
                    .with_prefix(name.name.clone())
                    .with_expiry(policy)
                    .with_clock(Arc::new(clock.clone()));
                let container = keel_store::RedisContainer::connect(&url, options)
                    .expect("connect the Redis container");
                prefix = Some(name);
                (Arc::new(container), None)
            }
        };
        Env {
            container,
            clock,
            manager: TransactionManager::new(),
            dir,
            #[cfg(feature = "postgres")]
            schema,
            #[cfg(feature = "redis")]
            prefix,
        }
    }

    /// A container of `kind` with timeout 3600 s and resolution 600 s at
    /// second 1000.
    pub fn default_for(kind: Kind) -> Env {
        Env::new(
            kind,
            ExpiryPolicy::default()
                .with_timeout(3600)
                .with_resolution(600),
            1000,
        )
    }
}

#[cfg(feature = "redis")]
pub mod redis_server {
    //! The Redis every test run needs, and the three-master Redis Cluster:
    //! under `CI=true` an unreachable server fails the test; elsewhere the
    //! test says loudly that it was skipped. Each test gets a key prefix of
    //! its own, its keys deleted at the end.

    use std::{
        sync::{
            OnceLock,
            atomic::{AtomicU64, Ordering},
        },
        time::{SystemTime, UNIX_EPOCH},
    };

    /// The test server: `KEEL_TEST_REDIS`, or the machine's own.
    pub fn url() -> String {
        std::env::var("KEEL_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
    }

    /// The test cluster: `KEEL_TEST_REDIS_CLUSTER`, or the one
    /// `scripts/redis-cluster.sh` starts.
    pub fn cluster_url() -> String {
        std::env::var("KEEL_TEST_REDIS_CLUSTER").unwrap_or_else(|_| {
            "redis+cluster://127.0.0.1:17001,127.0.0.1:17002,127.0.0.1:17003".to_owned()
        })
    }

    /// Plain URLs of the cluster's nodes.
    pub fn cluster_nodes() -> Vec<String> {
        let url = cluster_url();
        let hosts = url.trim_start_matches("redis+cluster://");
        hosts
            .split(',')
            .map(|host| format!("redis://{host}"))
            .collect()
    }

    /// Run `work` on a fresh connection to `server`.
    pub fn run_on<T>(
        server: &str,
        work: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, String> {
        let client = redis::Client::open(server).map_err(|e| e.to_string())?;
        let mut connection = client
            .get_connection_with_timeout(std::time::Duration::from_secs(3))
            .map_err(|e| e.to_string())?;
        work(&mut connection).map_err(|e| e.to_string())
    }

    /// Run `work` on a fresh connection to the test server.
    pub fn run<T>(
        work: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, String> {
        run_on(&url(), work)
    }

    /// Whether to skip a Redis test: the server does not answer and this is
    /// not CI (where that fails the test instead).
    pub fn skip() -> bool {
        static REACHABLE: OnceLock<Result<(), String>> = OnceLock::new();
        let reachable =
            REACHABLE.get_or_init(|| run(|c| redis::cmd("PING").query::<String>(c)).map(|_| ()));
        decide(reachable, &url())
    }

    /// Whether to skip a Redis Cluster test. A cluster that does not answer
    /// is started first (`scripts/redis-cluster.sh start`, which needs
    /// `redis-server`), unless `KEEL_TEST_REDIS_CLUSTER` names another.
    pub fn skip_cluster() -> bool {
        static REACHABLE: OnceLock<Result<(), String>> = OnceLock::new();
        let reachable = REACHABLE.get_or_init(|| {
            if cluster_ok().is_err() && std::env::var_os("KEEL_TEST_REDIS_CLUSTER").is_none() {
                let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/redis-cluster.sh");
                let started = std::process::Command::new("bash")
                    .arg(script)
                    .arg("start")
                    .output()
                    .map_err(|err| format!("{script} start: {err}"))?;
                if !started.status.success() {
                    return Err(format!(
                        "{script} start failed: {}",
                        String::from_utf8_lossy(&started.stderr).trim()
                    ));
                }
            }
            cluster_ok()
        });
        decide(reachable, &cluster_url())
    }

    fn cluster_ok() -> Result<(), String> {
        for node in cluster_nodes() {
            let info: String = run_on(&node, |c| redis::cmd("CLUSTER").arg("INFO").query(c))?;
            if !info.lines().any(|line| line.trim() == "cluster_state:ok") {
                return Err(format!("{node}: cluster_state is not ok"));
            }
        }
        Ok(())
    }

    fn decide(reachable: &Result<(), String>, url: &str) -> bool {
        match reachable {
            Ok(()) => false,
            Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("Redis at {url} is unreachable under CI=true: {why}")
            }
            Err(why) => {
                eprintln!("SKIPPED: Redis at {url} is unreachable ({why}); this test ran nothing");
                true
            }
        }
    }

    /// A key prefix no other test (or earlier run) uses; its keys are
    /// deleted when this goes.
    #[derive(Debug)]
    pub struct Prefix {
        pub name: String,
        /// The servers its keys may be on (every node of a cluster).
        servers: Vec<String>,
    }

    impl Prefix {
        /// A prefix on the test server.
        pub fn new() -> Prefix {
            Prefix::on(vec![url()])
        }

        /// A prefix on the test cluster.
        pub fn on_cluster() -> Prefix {
            Prefix::on(cluster_nodes())
        }

        fn on(servers: Vec<String>) -> Prefix {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            Prefix {
                name: format!(
                    "keel_t{}_{}_{}",
                    std::process::id(),
                    nanos,
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ),
                servers,
            }
        }
    }

    impl Drop for Prefix {
        fn drop(&mut self) {
            let pattern = format!("{}:*", self.name);
            for server in &self.servers {
                let dropped = run_on(server, |c| {
                    let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(c)?;
                    // One DEL a key: on a cluster node they span slots.
                    let mut pipe = redis::pipe();
                    for key in keys {
                        pipe.cmd("DEL").arg(key).ignore();
                    }
                    pipe.query::<()>(c)
                });
                if let Err(err) = dropped {
                    eprintln!("could not delete test keys {pattern} on {server}: {err}");
                }
            }
        }
    }
}

#[cfg(feature = "postgres")]
pub mod postgres {
    //! The PostgreSQL every test run needs: under `CI=true` an unreachable
    //! server fails the test; elsewhere the test says loudly that it was
    //! skipped, and why. Each test gets a schema of its own, dropped at the
    //! end.

    use std::{
        sync::{
            OnceLock,
            atomic::{AtomicU64, Ordering},
        },
        time::{Duration, SystemTime, UNIX_EPOCH},
    };

    /// The test database: `KEEL_TEST_POSTGRES`, or the machine's own.
    pub fn url() -> String {
        std::env::var("KEEL_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
    }

    /// Whether to skip a PostgreSQL test: the server does not answer and
    /// this is not CI (where that fails the test instead).
    pub fn skip() -> bool {
        static REACHABLE: OnceLock<Result<(), String>> = OnceLock::new();
        let reachable = REACHABLE.get_or_init(|| {
            run(|client| async move { client.simple_query("SELECT 1").await.map(|_| ()) })
        });
        match reachable {
            Ok(()) => false,
            Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!(
                    "PostgreSQL at {} is unreachable under CI=true: {why}",
                    url()
                )
            }
            Err(why) => {
                eprintln!(
                    "SKIPPED: PostgreSQL at {} is unreachable ({why}); \
                     this test ran nothing",
                    url()
                );
                true
            }
        }
    }

    /// Run `work` on a fresh connection to the test database.
    pub fn run<F, Fut>(work: F) -> Result<(), String>
    where
        F: FnOnce(tokio_postgres::Client) -> Fut,
        Fut: std::future::Future<Output = Result<(), tokio_postgres::Error>>,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let url = url();
            let connect = tokio_postgres::connect(&url, tokio_postgres::NoTls);
            let (client, connection) = tokio::time::timeout(Duration::from_secs(5), connect)
                .await
                .map_err(|_| "no answer within 5 s".to_owned())?
                .map_err(|e| e.to_string())?;
            let driver = tokio::spawn(connection);
            let result = work(client).await.map_err(|e| e.to_string());
            driver.abort();
            result
        })
    }

    /// A schema name no other test (or earlier run) uses; dropped with its
    /// tables when this goes.
    #[derive(Debug)]
    pub struct Schema {
        pub name: String,
    }

    impl Schema {
        pub fn new() -> Schema {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            Schema {
                name: format!(
                    "keel_t{}_{}_{}",
                    std::process::id(),
                    nanos,
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ),
            }
        }
    }

    impl Drop for Schema {
        fn drop(&mut self) {
            let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
            if let Err(err) = run(|client| async move { client.batch_execute(&sql).await }) {
                eprintln!("could not drop test schema {}: {err}", self.name);
            }
        }
    }
}

const BLOCK: usize = 4096;

/// A disk in memory that distinguishes written from synced bytes.
///
/// [`SimDisk::crash`] forgets everything not synced and disowns every
/// handle made before it (their operations fail, as a dead process's
/// would). Writes or syncs can be made to fail after a number of calls.
#[derive(Debug, Default)]
pub struct SimDisk {
    state: Mutex<DiskState>,
}

#[derive(Debug, Default)]
struct DiskState {
    generation: u64,
    durable: Vec<u8>,
    volatile: Vec<u8>,
    dirty: BTreeSet<usize>,
    writes_left: Option<u64>,
    syncs_left: Option<u64>,
    failures: u64,
    syncs: u64,
}

impl SimDisk {
    pub fn new() -> Arc<SimDisk> {
        Arc::new(SimDisk::default())
    }

    /// A new handle on the disk, for a [`RedbOptions::with_storage_backend`]
    /// factory.
    pub fn handle(self: &Arc<Self>) -> Box<dyn StorageBackend> {
        let generation = self.lock().generation;
        Box::new(SimHandle {
            disk: Arc::clone(self),
            generation,
        })
    }

    /// Options that store the database on this disk.
    pub fn options(self: &Arc<Self>) -> RedbOptions {
        let disk = Arc::clone(self);
        RedbOptions::new().with_storage_backend(move || Ok(disk.handle()))
    }

    /// The process dies: unsynced bytes are lost, old handles go dead.
    pub fn crash(&self) {
        let mut state = self.lock();
        state.generation += 1;
        state.volatile = state.durable.clone();
        state.dirty.clear();
    }

    /// Let `n` more writes succeed, then fail every write.
    pub fn fail_writes_after(&self, n: u64) {
        self.lock().writes_left = Some(n);
    }

    /// Let `n` more syncs succeed, then fail every sync.
    pub fn fail_syncs_after(&self, n: u64) {
        self.lock().syncs_left = Some(n);
    }

    /// Stop failing.
    pub fn heal(&self) {
        let mut state = self.lock();
        state.writes_left = None;
        state.syncs_left = None;
    }

    /// How many syncs succeeded.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// The durable bytes (what a crash now would leave).
    pub fn durable(&self) -> Vec<u8> {
        self.lock().durable.clone()
    }

    /// How many operations failed on purpose.
    pub fn failures(&self) -> u64 {
        self.lock().failures
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DiskState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug)]
struct SimHandle {
    disk: Arc<SimDisk>,
    generation: u64,
}

fn dead() -> io::Error {
    io::Error::other("the simulated process crashed")
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected {what} failure"))
}

impl SimHandle {
    fn state(&self) -> io::Result<std::sync::MutexGuard<'_, DiskState>> {
        let state = self.disk.lock();
        if state.generation != self.generation {
            return Err(dead());
        }
        Ok(state)
    }
}

fn spend(left: &mut Option<u64>, failures: &mut u64) -> bool {
    match left {
        Some(0) => {
            *failures += 1;
            false
        }
        Some(n) => {
            *n -= 1;
            true
        }
        None => true,
    }
}

impl StorageBackend for SimHandle {
    fn len(&self) -> io::Result<u64> {
        Ok(self.state()?.volatile.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let state = self.state()?;
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let source = state
            .volatile
            .get(start..start + out.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past end"))?;
        out.copy_from_slice(source);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.state()?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        let old = state.volatile.len();
        state.volatile.resize(len, 0);
        let (from, to) = (old.min(len), old.max(len));
        for block in from / BLOCK..=to / BLOCK {
            state.dirty.insert(block);
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.state()?;
        let state = &mut *state;
        if !spend(&mut state.syncs_left, &mut state.failures) {
            return Err(injected("sync"));
        }
        state.syncs += 1;
        let len = state.volatile.len();
        state.durable.resize(len, 0);
        for block in std::mem::take(&mut state.dirty) {
            let start = block * BLOCK;
            if start >= len {
                continue;
            }
            let end = (start + BLOCK).min(len);
            let (durable, volatile) = (&mut state.durable, &state.volatile);
            durable[start..end].copy_from_slice(&volatile[start..end]);
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.state()?;
        let state = &mut *state;
        if !spend(&mut state.writes_left, &mut state.failures) {
            return Err(injected("write"));
        }
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let end = start + data.len();
        if state.volatile.len() < end {
            state.volatile.resize(end, 0);
        }
        state.volatile[start..end].copy_from_slice(data);
        for block in start / BLOCK..=end.saturating_sub(1) / BLOCK {
            state.dirty.insert(block);
        }
        Ok(())
    }
}
