//! The link to PostgreSQL: a small tokio runtime of the container's own that
//! drives a pool of `tokio-postgres` connections (`deadpool-postgres`), the
//! statements, and the group committer. Async callers await its answers
//! without holding a thread; blocking callers wait on a channel.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc as std_mpsc,
    },
    time::Duration,
};

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod};
use tokio::sync::{Semaphore, mpsc};
use tokio_postgres::{NoTls, Row, types::ToSql};

use crate::{
    ClientKey, StoreError, SweepReport, Value,
    engine::remote::{
        Answer, Read, RemoteStore, Reply,
        image::SessionImage,
        runtime::{OwnRuntime, blocking_recv},
    },
    engine::{
        apply::{ChangeSet, RecordChange},
        records::{self, ItemKey, RecordKey, SessionRecord},
    },
    postgres::schema::{self, FORMAT_VERSION, Statements},
};

/// How long a read or an admin statement may take before the database
/// counts as unavailable.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection settings of [`Pg::connect`].
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) schema: String,
    pub(crate) pool_size: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_batch: usize,
    pub(crate) concurrent_commits: usize,
}

/// Round trips to PostgreSQL since the container was opened.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) reads: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) committed_change_sets: AtomicU64,
}

/// One PostgreSQL database as the container uses it.
#[derive(Debug)]
pub(crate) struct Pg {
    /// The database, named in errors: its URL without a password.
    pub(crate) target: String,
    pub(crate) schema: String,
    pool: Pool,
    statements: Statements,
    pub(crate) counters: Counters,
    committer: Option<mpsc::UnboundedSender<CommitRequest>>,
    // NOTE: last, so the committer's channel closes before the runtime
    // stops.
    runtime: OwnRuntime,
}

impl Pg {
    /// Connect to `url`, check (or create) Keel's schema, and start the
    /// committer.
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`] for a malformed URL or schema name,
    /// [`StoreError::Unavailable`] if the server does not answer within the
    /// connect timeout, [`StoreError::NotAKeelDatabase`] if the schema holds
    /// tables Keel did not create, [`StoreError::UnsupportedFormat`] for a
    /// newer format, [`StoreError::Storage`] for any other failure.
    pub(crate) fn connect(url: &str, settings: &Settings) -> Result<Arc<Pg>, StoreError> {
        if !schema::valid_schema_name(&settings.schema) {
            return Err(StoreError::InvalidInput {
                what: "PostgreSQL schema name",
                reason: format!(
                    "{:?}: use lower-case letters, digits and _ (at most 63, not starting with a digit)",
                    settings.schema
                ),
            });
        }
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|err| StoreError::InvalidInput {
                what: "PostgreSQL URL",
                reason: format!("{err} (expected postgres://USER@HOST:PORT/DATABASE)"),
            })?;
        config.connect_timeout(settings.connect_timeout);
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        config.application_name("keel");
        // NOTE: Keel's statements have fixed shapes; a plan made once per
        // connection serves them all. PostgreSQL's default (a custom plan
        // while it judges the generic one costlier) re-planned the array
        // lookups of `commit_batch` at every call.
        let options = match config.get_options() {
            Some(given) => format!("{given} -c plan_cache_mode=force_generic_plan"),
            None => "-c plan_cache_mode=force_generic_plan".to_owned(),
        };
        config.options(&options);
        let target = describe(&config);
        let runtime = OwnRuntime::start("keel-postgres")?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(settings.connect_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .build()
            .map_err(|err| StoreError::Storage {
                operation: "building the PostgreSQL connection pool",
                source: Box::new(err),
            })?;
        let mut pg = Pg {
            statements: Statements::new(&settings.schema),
            schema: settings.schema.clone(),
            target,
            pool,
            counters: Counters::default(),
            committer: None,
            runtime,
        };
        pg.wait_for(setup(pg.pool.clone(), pg.target.clone(), pg.schema.clone()))??;
        let (sender, requests) = mpsc::unbounded_channel();
        pg.committer = Some(sender);
        let pg = Arc::new(pg);
        pg.runtime.detach(run_committer(
            Arc::downgrade(&pg),
            requests,
            settings.max_batch.max(1),
            settings.concurrent_commits.max(1),
        ));
        Ok(pg)
    }

    fn unavailable(&self, err: impl Into<keel_txn::BoxError>) -> StoreError {
        StoreError::Unavailable {
            database: self.target.clone(),
            source: err.into(),
        }
    }

    /// A statement's error: the server's own (the statement failed, nothing
    /// was written), or the link's (unavailable).
    fn statement_error(&self, operation: &'static str, err: tokio_postgres::Error) -> StoreError {
        if err.as_db_error().is_some() {
            StoreError::Storage {
                operation,
                source: Box::new(err),
            }
        } else {
            self.unavailable(err)
        }
    }

    fn pool_error(&self, err: PoolError) -> StoreError {
        self.unavailable(err)
    }

    /// Run one statement with a timeout, on a pooled connection.
    async fn query(
        &self,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let work = async {
            let client = self.pool.get().await.map_err(|err| self.pool_error(err))?;
            let statement = client
                .prepare_cached(sql)
                .await
                .map_err(|err| self.statement_error(operation, err))?;
            client
                .query(&statement, params)
                .await
                .map_err(|err| self.statement_error(operation, err))
        };
        tokio::time::timeout(STATEMENT_TIMEOUT, work)
            .await
            .map_err(|_| self.unavailable(format!("no answer within {STATEMENT_TIMEOUT:?}")))?
    }

    /// Read a whole session, in one statement (one snapshot, one round
    /// trip).
    pub(crate) async fn load(
        self: Arc<Self>,
        client: ClientKey,
    ) -> Result<SessionImage, StoreError> {
        const LOAD: &str = "reading sessions";
        let key: &[u8] = client.as_bytes();
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        let rows = self.query(LOAD, &self.statements.load, &[&key]).await?;
        let mut image = SessionImage::default();
        for row in rows {
            let kind: i16 = row.try_get(1).map_err(corrupt(LOAD))?;
            let version = to_u64(row.try_get(4).map_err(corrupt(LOAD))?);
            match kind {
                0 => {
                    let principal: Option<&[u8]> = row.try_get(7).map_err(corrupt(LOAD))?;
                    image.record = Some(SessionRecord {
                        version,
                        created: to_u64(row.try_get(5).map_err(corrupt(LOAD))?),
                        last_access: to_u64(row.try_get(6).map_err(corrupt(LOAD))?),
                        principal: principal.map(|p| text(&client, p)).transpose()?,
                    });
                    image.packages_version = to_u64(row.try_get(8).map_err(corrupt(LOAD))?);
                }
                1 => {
                    let package = text(&client, row.try_get(2).map_err(corrupt(LOAD))?)?;
                    image.names.insert(package, version);
                }
                _ => {
                    let key = ItemKey {
                        client,
                        package: text(&client, row.try_get(2).map_err(corrupt(LOAD))?)?,
                        name: text(&client, row.try_get(3).map_err(corrupt(LOAD))?)?,
                    };
                    let bytes: &[u8] = row.try_get(9).map_err(corrupt(LOAD))?;
                    let value = records::decode_value(&key, bytes)?;
                    image
                        .items
                        .insert((key.package, key.name), (version, Arc::new(value)));
                }
            }
        }
        // Data never outlives its session record: without one, the session
        // is absent whatever else the read met.
        if image.record.is_none() {
            image = SessionImage::default();
        }
        Ok(image)
    }

    /// Queue a change set for the group committer; the answer comes after
    /// PostgreSQL's COMMIT returned.
    pub(crate) fn submit(&self, changes: ChangeSet<Vec<u8>>, reply: Reply) {
        let request = CommitRequest { changes, reply };
        match &self.committer {
            Some(sender) => {
                if let Err(mpsc::error::SendError(request)) = sender.send(request) {
                    request
                        .reply
                        .send((Err(StoreError::Closed), request.changes));
                }
            }
            None => request
                .reply
                .send((Err(StoreError::Closed), request.changes)),
        }
    }

    /// Delete sessions and their data; how many existed.
    pub(crate) async fn delete(self: Arc<Self>, keys: Vec<ClientKey>) -> Result<u64, StoreError> {
        let keys: Vec<&[u8]> = keys.iter().map(|c| c.as_bytes().as_slice()).collect();
        let rows = self
            .query("deleting sessions", &self.statements.delete, &[&keys])
            .await?;
        Ok(rows
            .first()
            .and_then(|row| row.try_get::<_, i64>(0).ok())
            .map_or(0, to_u64))
    }

    /// Delete up to `batch` expired sessions.
    pub(crate) async fn sweep(
        self: Arc<Self>,
        idle_cutoff: Option<u64>,
        age_cutoff: Option<u64>,
        batch: usize,
    ) -> Result<SweepReport, StoreError> {
        const SWEEP: &str = "sweeping expired sessions";
        let idle = idle_cutoff.map(to_i64);
        let age = age_cutoff.map(to_i64);
        let limit = i32::try_from(batch).unwrap_or(i32::MAX);
        let rows = self
            .query(SWEEP, &self.statements.sweep, &[&idle, &age, &limit])
            .await?;
        let row = rows.first().ok_or_else(|| StoreError::Storage {
            operation: SWEEP,
            source: "the sweep function returned no row".into(),
        })?;
        Ok(SweepReport {
            removed: to_u64(row.try_get(0).map_err(corrupt(SWEEP))?),
            more: row.try_get(1).map_err(corrupt(SWEEP))?,
        })
    }

    /// Up to `limit` sessions after `after`: key, record, value bytes.
    pub(crate) async fn list(
        self: Arc<Self>,
        after: Option<ClientKey>,
        limit: usize,
    ) -> Result<Vec<(ClientKey, SessionRecord, u64)>, StoreError> {
        const LIST: &str = "listing sessions";
        let after: &[u8] = after.as_ref().map_or(&[], |key| key.as_bytes().as_slice());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .query(LIST, &self.statements.list, &[&after, &limit])
            .await?;
        rows.iter()
            .map(|row| {
                let client = client_of(row.try_get(0).map_err(corrupt(LIST))?)?;
                let principal: Option<&[u8]> = row.try_get(3).map_err(corrupt(LIST))?;
                let record = SessionRecord {
                    version: 0,
                    created: to_u64(row.try_get(1).map_err(corrupt(LIST))?),
                    last_access: to_u64(row.try_get(2).map_err(corrupt(LIST))?),
                    principal: principal.map(|p| text(&client, p)).transpose()?,
                };
                Ok((
                    client,
                    record,
                    to_u64(row.try_get(4).map_err(corrupt(LIST))?),
                ))
            })
            .collect()
    }

    /// The values of a session with their encoded sizes.
    pub(crate) async fn values_of(
        self: Arc<Self>,
        client: ClientKey,
    ) -> Result<Vec<(ItemKey, Value, u64)>, StoreError> {
        const VALUES: &str = "reading a session's values";
        let key: &[u8] = client.as_bytes();
        let rows = self
            .query(VALUES, &self.statements.values_of, &[&key])
            .await?;
        rows.iter()
            .map(|row| {
                let item = ItemKey {
                    client,
                    package: text(&client, row.try_get(0).map_err(corrupt(VALUES))?)?,
                    name: text(&client, row.try_get(1).map_err(corrupt(VALUES))?)?,
                };
                let bytes: &[u8] = row.try_get(2).map_err(corrupt(VALUES))?;
                let value = records::decode_value(&item, bytes)?;
                Ok((item, value, bytes.len() as u64))
            })
            .collect()
    }

    /// The sessions of `principal`, in key order.
    pub(crate) async fn by_principal(
        self: Arc<Self>,
        principal: String,
    ) -> Result<Vec<ClientKey>, StoreError> {
        const PRINCIPAL: &str = "listing a principal's sessions";
        let principal: &[u8] = principal.as_bytes();
        let rows = self
            .query(PRINCIPAL, &self.statements.by_principal, &[&principal])
            .await?;
        rows.iter()
            .map(|row| client_of(row.try_get(0).map_err(corrupt(PRINCIPAL))?))
            .collect()
    }

    /// Every session's (created, last access), and the bytes of all values.
    pub(crate) async fn stats(self: Arc<Self>) -> Result<(Vec<(u64, u64)>, u64), StoreError> {
        const STATS: &str = "counting sessions";
        let rows = self
            .query(STATS, &self.statements.stats_sessions, &[])
            .await?;
        let mut times = Vec::with_capacity(rows.len());
        for row in &rows {
            times.push((
                to_u64(row.try_get(0).map_err(corrupt(STATS))?),
                to_u64(row.try_get(1).map_err(corrupt(STATS))?),
            ));
        }
        let bytes = self
            .query(STATS, &self.statements.stats_bytes, &[])
            .await?
            .first()
            .and_then(|row| row.try_get::<_, i64>(0).ok())
            .map_or(0, to_u64);
        Ok((times, bytes))
    }

    pub(crate) async fn load_setting(
        self: Arc<Self>,
        name: String,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        const SETTING: &str = "reading a setting";
        let rows = self
            .query(SETTING, &self.statements.load_setting, &[&name])
            .await?;
        rows.first()
            .map(|row| row.try_get::<_, Vec<u8>>(0).map_err(corrupt(SETTING)))
            .transpose()
    }

    pub(crate) async fn initialize_setting(
        self: Arc<Self>,
        name: String,
        value: Vec<u8>,
    ) -> Result<Vec<u8>, StoreError> {
        const SETTING: &str = "initializing a setting";
        // NOTE: when another server inserts the setting at the same moment,
        // our insert waits for it and does nothing, and the statement's
        // snapshot, taken before that insert committed, does not show it
        // either: the next attempt does.
        for _ in 0..3 {
            let rows = self
                .query(
                    SETTING,
                    &self.statements.initialize_setting,
                    &[&name, &value],
                )
                .await?;
            if let Some(row) = rows.first() {
                return row.try_get::<_, Vec<u8>>(0).map_err(corrupt(SETTING));
            }
        }
        Err(StoreError::Storage {
            operation: SETTING,
            source: "the setting is neither stored nor storable".into(),
        })
    }

    pub(crate) async fn store_setting(
        self: Arc<Self>,
        name: String,
        value: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.query(
            "storing a setting",
            &self.statements.store_setting,
            &[&name, &value],
        )
        .await
        .map(|_| ())
    }
}

impl Pg {
    /// See [`OwnRuntime::wait_for`].
    ///
    /// # Errors
    /// [`StoreError::Closed`] if the runtime is gone.
    pub(crate) fn wait_for<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.runtime.wait_for(work)
    }

    /// See [`OwnRuntime::spawn`].
    pub(crate) fn spawn<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static {
        self.runtime.spawn(work)
    }
}

impl RemoteStore for Pg {
    fn read(self: &Arc<Self>, client: ClientKey) -> Read {
        Box::pin(self.spawn(Arc::clone(self).load(client)))
    }

    fn read_blocking(self: &Arc<Self>, client: ClientKey) -> Result<SessionImage, StoreError> {
        self.wait_for(Arc::clone(self).load(client))?
    }

    fn submit(self: &Arc<Self>, changes: ChangeSet<Vec<u8>>, reply: Reply) {
        Pg::submit(self, changes, reply);
    }

    fn wait(&self, answer: std_mpsc::Receiver<Answer>) -> Result<Answer, StoreError> {
        blocking_recv(answer)
    }
}

/// `postgres://USER@HOST:PORT/DATABASE`, never the password.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".to_owned());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("");
    let database = config.get_dbname().unwrap_or(user);
    format!("postgres://{user}@{host}:{port}/{database}")
}

/// Create Keel's schema if it is missing, or check its format version.
async fn setup(pool: Pool, target: String, schema: String) -> Result<(), StoreError> {
    const SETUP: &str = "creating or checking Keel's PostgreSQL schema";
    let unavailable = |err: keel_txn::BoxError| StoreError::Unavailable {
        database: target.clone(),
        source: err,
    };
    let failed = |err: tokio_postgres::Error| {
        if err.as_db_error().is_some() {
            StoreError::Storage {
                operation: SETUP,
                source: Box::new(err),
            }
        } else {
            unavailable(Box::new(err))
        }
    };
    let where_ = format!("{target} (schema {schema})");
    let mut client = pool.get().await.map_err(|err| unavailable(Box::new(err)))?;
    let txn = client.transaction().await.map_err(failed)?;
    // One server at a time creates or upgrades the schema.
    txn.execute("SELECT pg_advisory_xact_lock(7433781295163550313)", &[])
        .await
        .map_err(failed)?;
    let row = txn
        .query_one(
            "SELECT to_regclass(format('%I.meta', $1::text)) IS NOT NULL, \
                    EXISTS (SELECT 1 FROM pg_catalog.pg_class c \
                            JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                            WHERE n.nspname = $1::text)",
            &[&schema],
        )
        .await
        .map_err(failed)?;
    let has_meta: bool = row.get(0);
    let has_relations: bool = row.get(1);
    if has_meta {
        let found: Option<i64> = txn
            .query_opt(
                &format!(
                    "SELECT value FROM {}.meta WHERE name = 'format_version'",
                    schema::quoted(&schema)
                ),
                &[],
            )
            .await
            .map_err(failed)?
            .map(|row| row.get(0));
        match found {
            Some(found) if found > FORMAT_VERSION => {
                return Err(StoreError::UnsupportedFormat {
                    path: where_.into(),
                    found: u32::try_from(found).unwrap_or(u32::MAX),
                    supported: u32::try_from(FORMAT_VERSION).unwrap_or(u32::MAX),
                });
            }
            Some(_) => {}
            None => {
                return Err(StoreError::NotAKeelDatabase {
                    path: where_.into(),
                    reason: "its meta table holds no format version".to_owned(),
                });
            }
        }
    } else if has_relations {
        return Err(StoreError::NotAKeelDatabase {
            path: where_.into(),
            reason: "the schema holds tables Keel did not create; give Keel a schema of its own"
                .to_owned(),
        });
    }
    txn.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {};\n{}",
        schema::quoted(&schema),
        schema::ddl(&schema)
    ))
    .await
    .map_err(failed)?;
    txn.execute(
        &format!(
            "INSERT INTO {}.meta (name, value) VALUES ('format_version', $1) \
             ON CONFLICT (name) DO NOTHING",
            schema::quoted(&schema)
        ),
        &[&FORMAT_VERSION],
    )
    .await
    .map_err(failed)?;
    txn.commit().await.map_err(failed)
}

#[derive(Debug)]
struct CommitRequest {
    changes: ChangeSet<Vec<u8>>,
    reply: Reply,
}

/// Take queued change sets in batches and commit each batch with one call
/// of `commit_batch` (one round trip, one PostgreSQL transaction, one WAL
/// flush), up to `concurrent` batches at a time.
async fn run_committer(
    pg: std::sync::Weak<Pg>,
    mut requests: mpsc::UnboundedReceiver<CommitRequest>,
    max_batch: usize,
    concurrent: usize,
) {
    let permits = Arc::new(Semaphore::new(concurrent));
    while let Some(first) = requests.recv().await {
        // Waiting for a permit lets the next batch fill up meanwhile.
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let Some(pg) = pg.upgrade() else {
            for request in batch {
                request
                    .reply
                    .send((Err(StoreError::Closed), request.changes));
            }
            return;
        };
        tokio::spawn(async move {
            let results = pg.commit_batch(&batch).await;
            for (request, result) in batch.into_iter().zip(results) {
                request.reply.send((result, request.changes));
            }
            drop(permit);
        });
    }
}

/// The arrays of one `commit_batch` call.
#[derive(Default)]
struct BatchArrays<'a> {
    lock_keys: Vec<&'a [u8]>,
    c_end: Vec<i32>,
    c_kind: Vec<i16>,
    c_key: Vec<&'a [u8]>,
    c_pkg: Vec<Option<&'a [u8]>>,
    c_name: Vec<Option<&'a [u8]>>,
    c_version: Vec<i64>,
    s_end: Vec<i32>,
    s_key: Vec<&'a [u8]>,
    s_expect: Vec<i64>,
    s_wipe: Vec<bool>,
    s_op: Vec<i16>,
    s_created: Vec<i64>,
    s_last: Vec<i64>,
    s_principal: Vec<Option<&'a [u8]>>,
    s_touch: Vec<Option<i64>>,
    i_end: Vec<i32>,
    i_key: Vec<&'a [u8]>,
    i_pkg: Vec<&'a [u8]>,
    i_name: Vec<&'a [u8]>,
    i_value: Vec<Option<&'a [u8]>>,
}

impl<'a> BatchArrays<'a> {
    fn add(&mut self, changes: &'a ChangeSet<Vec<u8>>) {
        for (key, version) in &changes.reads {
            self.lock_keys.push(key.client().as_bytes());
            self.c_key.push(key.client().as_bytes());
            self.c_version.push(to_i64(*version));
            let (kind, package, name): (i16, Option<&str>, Option<&str>) = match key {
                RecordKey::Session(_) => (0, None, None),
                RecordKey::Packages(_) => (1, None, None),
                RecordKey::Names(_, package) => (2, Some(package), None),
                RecordKey::Item(item) => (3, Some(&item.package), Some(&item.name)),
            };
            self.c_kind.push(kind);
            self.c_pkg.push(package.map(str::as_bytes));
            self.c_name.push(name.map(str::as_bytes));
        }
        self.c_end.push(end(self.c_key.len()));
        for change in &changes.sessions {
            self.lock_keys.push(change.client.as_bytes());
            self.s_key.push(change.client.as_bytes());
            // The version this change set read of the session record (0:
            // absent): a record it creates must still be absent.
            let read = changes
                .reads
                .binary_search_by(|(key, _)| key.cmp(&RecordKey::Session(change.client)))
                .map_or(0, |at| changes.reads[at].1);
            self.s_expect.push(to_i64(read));
            self.s_wipe.push(change.wipe);
            self.s_touch.push(change.touch.map(to_i64));
            match &change.record {
                RecordChange::Keep => self.push_record(0, 0, 0, None),
                RecordChange::Put {
                    created,
                    last_access,
                    principal,
                } => self.push_record(
                    1,
                    *created,
                    *last_access,
                    principal.as_deref().map(str::as_bytes),
                ),
                RecordChange::Delete => self.push_record(2, 0, 0, None),
            }
        }
        self.s_end.push(end(self.s_key.len()));
        for (key, value) in &changes.items {
            self.lock_keys.push(key.client.as_bytes());
            self.i_key.push(key.client.as_bytes());
            self.i_pkg.push(key.package.as_bytes());
            self.i_name.push(key.name.as_bytes());
            self.i_value.push(value.as_deref());
        }
        self.i_end.push(end(self.i_key.len()));
    }

    fn push_record(&mut self, op: i16, created: u64, last: u64, principal: Option<&'a [u8]>) {
        self.s_op.push(op);
        self.s_created.push(to_i64(created));
        self.s_last.push(to_i64(last));
        self.s_principal.push(principal);
    }
}

fn end(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

impl Pg {
    /// Commit a batch; one answer per change set, in order.
    async fn commit_batch(&self, batch: &[CommitRequest]) -> Vec<Result<Option<u64>, StoreError>> {
        let mut arrays = BatchArrays::default();
        for request in batch {
            arrays.add(&request.changes);
        }
        arrays.lock_keys.sort_unstable();
        arrays.lock_keys.dedup();
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        let outcome = tokio::time::timeout(COMMIT_TIMEOUT, self.call_commit(&arrays))
            .await
            .unwrap_or(Err(CommitFailure::TimedOut));
        let rows = match outcome {
            Ok(rows) => rows,
            Err(failure) => {
                let failure = Arc::new(failure);
                return batch
                    .iter()
                    .map(|_| Err(failure.for_one(&self.target)))
                    .collect();
            }
        };
        batch
            .iter()
            .enumerate()
            .map(|(at, request)| {
                let row = rows
                    .get(at)
                    .ok_or_else(|| StoreError::CommitOutcomeUnknown {
                        source: "commit_batch returned fewer rows than change sets".into(),
                    })?;
                let failed: Option<i32> = row.try_get(1).map_err(corrupt(COMMIT))?;
                match failed {
                    None => {
                        self.counters
                            .committed_change_sets
                            .fetch_add(1, Ordering::Relaxed);
                        let tid: Option<i64> = row.try_get(0).map_err(corrupt(COMMIT))?;
                        Ok(tid.map(to_u64))
                    }
                    Some(check) => Err(conflict(&request.changes, check)),
                }
            })
            .collect()
    }

    async fn call_commit(&self, a: &BatchArrays<'_>) -> Result<Vec<Row>, CommitFailure> {
        let client = self
            .pool
            .get()
            .await
            .map_err(|err| CommitFailure::NotSent(Box::new(err)))?;
        let statement = client
            .prepare_cached(&self.statements.commit)
            .await
            .map_err(CommitFailure::from_statement)?;
        let params: [&(dyn ToSql + Sync); 21] = [
            &a.lock_keys,
            &a.c_end,
            &a.c_kind,
            &a.c_key,
            &a.c_pkg,
            &a.c_name,
            &a.c_version,
            &a.s_end,
            &a.s_key,
            &a.s_expect,
            &a.s_wipe,
            &a.s_op,
            &a.s_created,
            &a.s_last,
            &a.s_principal,
            &a.s_touch,
            &a.i_end,
            &a.i_key,
            &a.i_pkg,
            &a.i_name,
            &a.i_value,
        ];
        client
            .query(&statement, &params)
            .await
            .map_err(CommitFailure::from_statement)
    }
}

const COMMIT: &str = "committing to PostgreSQL";

/// How long a commit may wait for PostgreSQL's answer; after that its
/// outcome is unknown.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a whole batch failed.
#[derive(Debug)]
enum CommitFailure {
    /// No connection: nothing was sent.
    NotSent(keel_txn::BoxError),
    /// PostgreSQL refused the statement: it rolled back. A serialization
    /// failure or deadlock is a conflict.
    Refused(tokio_postgres::Error),
    /// The link failed after the statement may have been sent: the commit
    /// may or may not have happened.
    Unknown(tokio_postgres::Error),
    /// No answer in time: the commit may or may not happen.
    TimedOut,
}

impl CommitFailure {
    fn from_statement(err: tokio_postgres::Error) -> Self {
        if err.as_db_error().is_some() {
            CommitFailure::Refused(err)
        } else {
            CommitFailure::Unknown(err)
        }
    }

    fn for_one(self: &Arc<Self>, target: &str) -> StoreError {
        use tokio_postgres::error::SqlState;
        let shared = || Box::new(SharedFailure(Arc::clone(self)));
        match &**self {
            CommitFailure::NotSent(_) => StoreError::Unavailable {
                database: target.to_owned(),
                source: shared(),
            },
            CommitFailure::Refused(err)
                if matches!(
                    err.code(),
                    Some(&SqlState::T_R_SERIALIZATION_FAILURE | &SqlState::T_R_DEADLOCK_DETECTED)
                ) =>
            {
                StoreError::Conflict {
                    client: ClientKey::from_bytes([0; 32]),
                    what: format!("PostgreSQL ended the commit: {err}"),
                }
            }
            CommitFailure::Refused(_) => StoreError::Storage {
                operation: COMMIT,
                source: shared(),
            },
            CommitFailure::Unknown(_) | CommitFailure::TimedOut => {
                StoreError::CommitOutcomeUnknown { source: shared() }
            }
        }
    }
}

/// One batch failure shared by the errors of each of its change sets.
#[derive(Debug)]
struct SharedFailure(Arc<CommitFailure>);

impl std::fmt::Display for SharedFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.0 {
            CommitFailure::NotSent(err) => write!(f, "no connection: {err}"),
            CommitFailure::Refused(err) => write!(f, "{err}"),
            CommitFailure::Unknown(err) => write!(f, "the connection failed: {err}"),
            CommitFailure::TimedOut => write!(f, "no answer within {COMMIT_TIMEOUT:?}"),
        }
    }
}

impl std::error::Error for SharedFailure {}

/// The conflict `commit_batch` reported for `changes`: the index of its
/// first check that failed, or -1 for a session created concurrently.
fn conflict(changes: &ChangeSet<Vec<u8>>, check: i32) -> StoreError {
    match usize::try_from(check)
        .ok()
        .and_then(|at| changes.reads.get(at))
    {
        Some((key, _)) => StoreError::Conflict {
            client: *key.client(),
            what: key.describe(),
        },
        None => StoreError::Conflict {
            client: changes
                .sessions
                .first()
                .map_or(ClientKey::from_bytes([0; 32]), |change| change.client),
            what: "the session record (created concurrently)".to_owned(),
        },
    }
}

fn corrupt(what: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |err| StoreError::CorruptRecord {
        what: format!("a row met while {what}"),
        source: Box::new(err),
    }
}

fn client_of(bytes: &[u8]) -> Result<ClientKey, StoreError> {
    let raw: [u8; 32] = bytes.try_into().map_err(|_| StoreError::CorruptRecord {
        what: "a session key".to_owned(),
        source: format!("{} bytes instead of 32", bytes.len()).into(),
    })?;
    Ok(ClientKey::from_bytes(raw))
}

fn text(client: &ClientKey, bytes: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(bytes.to_vec()).map_err(|err| StoreError::CorruptRecord {
        what: format!("a name of session {client}"),
        source: Box::new(err),
    })
}

/// Times and versions are `bigint`; Keel's never exceed `i64::MAX`.
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}
