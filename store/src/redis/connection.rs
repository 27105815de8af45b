//! The container's use of Redis: reads, the commit script, and the admin
//! commands, on a single Redis or a Redis Cluster alike (`link.rs` keeps the
//! connections, replaced by fresh ones after any connection error or
//! timeout, so the container reconnects by itself).
//!
//! Cluster rule: every command touches one bucket's keys (`P:{B}:...`, one
//! hash slot), so a command never crosses slots; what spans buckets (listing,
//! deleting many sessions) is one command per bucket, sent concurrently.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc as std_mpsc,
    },
    time::Duration,
};

use redis::{AsyncCommands, FromRedisValue, Script};
use tokio::{runtime::Handle, task::JoinSet};

use crate::{
    ClientKey, Clock, ExpiryPolicy, StoreError, SweepReport, Value,
    engine::{
        apply::{ChangeSet, RecordChange},
        records::{self, ItemKey, RecordKey, SessionRecord},
        remote::{
            Answer, Read, RemoteStore, Reply,
            image::SessionImage,
            runtime::{OwnRuntime, blocking_recv},
        },
    },
    redis::{
        link::{Link, Links, Target},
        scripts,
    },
};

/// The format version this build writes and reads.
pub(crate) const FORMAT_VERSION: i64 = 1;

/// How long a command may wait for Redis before the store counts as
/// unavailable.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connection settings.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) prefix: String,
    pub(crate) connect_timeout: Duration,
    /// Replicas that must have a commit before it is acknowledged (WAIT).
    pub(crate) replicas: u32,
}

/// Round trips since the container was opened.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) reads: AtomicU64,
    pub(crate) commits: AtomicU64,
}

/// One Redis as the container uses it.
pub(crate) struct Rd {
    /// The server, named in errors: its URL without a password.
    pub(crate) target: String,
    pub(crate) prefix: String,
    replicas: u32,
    /// The connections in use. NOTE: own reconnection instead of the
    /// crate's `ConnectionManager`, which was seen to hang for good after
    /// the link came back (a proxy that cut and restored it).
    links: Links,
    commit: Script,
    sweep: Script,
    delete: Script,
    pub(crate) counters: Counters,
    expiry: ExpiryPolicy,
    clock: Arc<dyn Clock>,
    // NOTE: last, so the connection goes before the runtime stops.
    runtime: OwnRuntime,
}

impl std::fmt::Debug for Rd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rd")
            .field("target", &self.target)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Rd {
    /// Connect to `url`, check (or record) Keel's format version under the
    /// prefix.
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`] for a malformed URL or prefix,
    /// [`StoreError::Unavailable`] if Redis does not answer in time,
    /// [`StoreError::UnsupportedFormat`] for a newer format.
    pub(crate) fn connect(
        url: &str,
        settings: &Settings,
        expiry: ExpiryPolicy,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Rd>, StoreError> {
        if settings.prefix.is_empty()
            || !settings
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(StoreError::InvalidInput {
                what: "Redis key prefix",
                reason: format!(
                    "{:?}: use letters, digits, '_', '-' and '.'",
                    settings.prefix
                ),
            });
        }
        let (server, target) = Target::parse(url, settings.connect_timeout, RESPONSE_TIMEOUT)?;
        let runtime = OwnRuntime::start("keel-redis")?;
        let unavailable = {
            let target = target.clone();
            move |err: redis::RedisError| StoreError::Unavailable {
                database: target.clone(),
                source: Box::new(err),
            }
        };
        let rd = Arc::new(Rd {
            target,
            prefix: settings.prefix.clone(),
            replicas: settings.replicas,
            links: Links::new(server, settings.connect_timeout, RESPONSE_TIMEOUT),
            commit: Script::new(scripts::COMMIT),
            sweep: Script::new(scripts::SWEEP),
            delete: Script::new(scripts::DELETE),
            counters: Counters::default(),
            expiry,
            clock,
            runtime,
        });
        let link = Arc::clone(&rd);
        let mut connection = rd.runtime.wait_for(async move { link.link().await })??;
        let meta = format!("{}:meta", rd.prefix);
        let found: Option<i64> = rd.runtime.wait_for(async move {
            let _: bool = connection
                .hset_nx(&meta, "format_version", FORMAT_VERSION)
                .await
                .map_err(unavailable.clone())?;
            connection
                .hget(&meta, "format_version")
                .await
                .map_err(unavailable)
        })??;
        match found {
            Some(found) if found > FORMAT_VERSION => Err(StoreError::UnsupportedFormat {
                path: format!("{} (prefix {})", rd.target, rd.prefix).into(),
                found: u32::try_from(found).unwrap_or(u32::MAX),
                supported: u32::try_from(FORMAT_VERSION).unwrap_or(u32::MAX),
            }),
            _ => Ok(rd),
        }
    }

    /// This runtime's connection, or a fresh one.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if Redis does not accept a connection in
    /// time.
    async fn link(&self) -> Result<Link, StoreError> {
        self.links.get().await.map_err(|err| match err {
            Some(err) => self.unavailable(err),
            None => StoreError::Unavailable {
                database: self.target.clone(),
                source: "no connection within the connect timeout".into(),
            },
        })
    }

    /// Drop this runtime's connection after it failed.
    fn broken(&self) {
        self.links.broken();
    }

    /// Whether this is a Redis Cluster (a commit may touch one bucket).
    pub(crate) fn is_cluster(&self) -> bool {
        self.links.target().is_cluster()
    }

    /// Send `commands` at once, each on its own (in a cluster each may go
    /// to another node); their answers in order.
    async fn concurrently<T: FromRedisValue + Send + 'static>(
        &self,
        operation: &'static str,
        commands: Vec<redis::Cmd>,
    ) -> Result<Vec<T>, StoreError> {
        let link = self.link().await?;
        let mut sent = JoinSet::new();
        for (at, command) in commands.into_iter().enumerate() {
            let mut link = link.clone();
            sent.spawn(async move { (at, command.query_async::<T>(&mut link).await) });
        }
        let mut answers: Vec<Option<T>> =
            std::iter::repeat_with(|| None).take(sent.len()).collect();
        while let Some(joined) = sent.join_next().await {
            let (at, answer) = joined.map_err(|err| StoreError::Storage {
                operation,
                source: Box::new(err),
            })?;
            answers[at] = Some(answer.map_err(|err| self.failed(operation, err))?);
        }
        // NOTE: every index was answered exactly once (the loop ran until
        // the set was empty, one task per index).
        Ok(answers.into_iter().flatten().collect())
    }

    fn unavailable(&self, err: redis::RedisError) -> StoreError {
        StoreError::Unavailable {
            database: self.target.clone(),
            source: Box::new(err),
        }
    }

    /// A failed command: Redis's own refusal (a script error: nothing was
    /// written), or the link's.
    fn failed(&self, operation: &'static str, err: redis::RedisError) -> StoreError {
        if err.is_io_error() || err.is_timeout() || err.is_connection_dropped() {
            self.broken();
            self.unavailable(err)
        } else {
            StoreError::Storage {
                operation,
                source: Box::new(err),
            }
        }
    }

    /// `work`, or [`StoreError::Unavailable`] if Redis does not answer
    /// within the response timeout (whatever the client's reconnection
    /// logic is doing meanwhile).
    pub(crate) async fn within<T>(&self, work: impl Future<Output = T>) -> Result<T, StoreError> {
        tokio::time::timeout(RESPONSE_TIMEOUT, work)
            .await
            .map_err(|_| {
                self.broken();
                StoreError::Unavailable {
                    database: self.target.clone(),
                    source: format!("no answer within {RESPONSE_TIMEOUT:?}").into(),
                }
            })
    }

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

    fn session_key(&self, hex: &str) -> String {
        // NOTE: one allocation, sized up front: this runs for every read.
        let mut key = String::with_capacity(self.prefix.len() + 8 + hex.len());
        key.push_str(&self.prefix);
        key.push_str(":{");
        key.push_str(&hex[..2]);
        key.push_str("}:s:");
        key.push_str(hex);
        key
    }

    /// [`session_key`](Self::session_key) of `client`, without formatting
    /// its hex through `Display`.
    fn session_key_of(&self, client: &ClientKey) -> String {
        let mut hex = [0u8; 64];
        // NOTE: 32 bytes always fit 64 ASCII hex digits; the fallback only
        // keeps a broken invariant from panicking.
        match hex::encode_to_slice(client.as_bytes(), &mut hex) {
            Ok(()) => match std::str::from_utf8(&hex) {
                Ok(hex) => self.session_key(hex),
                Err(_) => self.session_key(&client.to_string()),
            },
            Err(_) => self.session_key(&client.to_string()),
        }
    }

    /// Read a whole session: one HGETALL, one round trip, one snapshot.
    pub(crate) async fn load(
        self: Arc<Self>,
        client: ClientKey,
    ) -> Result<SessionImage, StoreError> {
        const LOAD: &str = "reading a session";
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        let mut connection = self.link().await?;
        let read = connection.hgetall(self.session_key_of(&client));
        let fields: Vec<(Vec<u8>, Vec<u8>)> = self
            .within(read)
            .await?
            .map_err(|err| self.failed(LOAD, err))?;
        image_of(&client, fields)
    }

    async fn commit_one(&self, changes: &ChangeSet<Vec<u8>>) -> Result<Option<u64>, StoreError> {
        const COMMIT: &str = "committing to Redis";
        let mut invocation = self.commit.prepare_invoke();
        invocation.arg(&self.prefix).arg(self.now_for_ttl());
        let idle_ttl = match self.expiry.timeout() {
            0 => 0,
            timeout => timeout.saturating_add(self.expiry.resolution()),
        };
        invocation
            .arg(idle_ttl)
            .arg(self.expiry.absolute_lifetime().unwrap_or(0));
        let mut keys = BTreeSet::new();
        invocation.arg(changes.reads.len());
        for (key, version) in &changes.reads {
            let hex = key.client().to_string();
            keys.insert(self.session_key(&hex));
            let (kind, field): (&str, Vec<u8>) = match key {
                RecordKey::Session(_) => ("0", Vec::new()),
                RecordKey::Packages(_) => ("1", Vec::new()),
                RecordKey::Names(_, package) => ("2", package.as_bytes().to_vec()),
                RecordKey::Item(item) => ("3", item_field(item)),
            };
            invocation.arg(kind).arg(&hex).arg(field).arg(*version);
        }
        invocation.arg(changes.sessions.len());
        for change in &changes.sessions {
            let hex = change.client.to_string();
            keys.insert(self.session_key(&hex));
            let read = changes
                .reads
                .binary_search_by(|(key, _)| key.cmp(&RecordKey::Session(change.client)))
                .map_or(0, |at| changes.reads[at].1);
            invocation.arg(&hex).arg(read).arg(u8::from(change.wipe));
            match &change.record {
                RecordChange::Keep => invocation.arg(0).arg(0).arg(0).arg(0).arg(""),
                RecordChange::Put {
                    created,
                    last_access,
                    principal,
                } => invocation
                    .arg(1)
                    .arg(*created)
                    .arg(*last_access)
                    .arg(u8::from(principal.is_some()))
                    .arg(principal.as_deref().unwrap_or("")),
                RecordChange::Delete => invocation.arg(2).arg(0).arg(0).arg(0).arg(""),
            };
            match change.touch {
                Some(touch) => invocation.arg(touch),
                None => invocation.arg(""),
            };
        }
        invocation.arg(changes.items.len());
        for (key, value) in &changes.items {
            let hex = key.client.to_string();
            keys.insert(self.session_key(&hex));
            invocation
                .arg(&hex)
                .arg(key.package.as_bytes())
                .arg(item_field(key))
                .arg(u8::from(value.is_some()))
                .arg(value.as_deref().unwrap_or(&[]));
        }
        if self.is_cluster() {
            let buckets: BTreeSet<&str> = keys.iter().map(|key| bucket_of(key)).collect();
            if buckets.len() > 1 {
                return Err(StoreError::InvalidInput {
                    what: "transaction on a Redis Cluster",
                    reason: format!(
                        "it touches sessions in {} buckets (hash slots); a commit on a Redis Cluster is one script on one slot, so commit each session in a transaction of its own",
                        buckets.len()
                    ),
                });
            }
        }
        let first_key = keys.first().cloned().unwrap_or_default();
        for key in keys {
            invocation.key(key);
        }
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        let mut connection = self.link().await?;
        let sent = tokio::time::timeout(RESPONSE_TIMEOUT, invocation.invoke_async(&mut connection));
        let Ok(answer) = sent.await else {
            self.broken();
            return Err(StoreError::CommitOutcomeUnknown {
                source: format!("no answer from {} within {RESPONSE_TIMEOUT:?}", self.target)
                    .into(),
            });
        };
        let answer: (i64, i64) = match answer {
            Ok(answer) => answer,
            // The script may or may not have run: the link failed after it
            // was sent.
            Err(err) if err.is_io_error() || err.is_timeout() || err.is_connection_dropped() => {
                self.broken();
                return Err(StoreError::CommitOutcomeUnknown {
                    source: Box::new(err),
                });
            }
            Err(err) => return Err(self.failed(COMMIT, err)),
        };
        match answer {
            (0, 0) => Ok(None),
            (0, tid) => {
                if self.replicas > 0 {
                    self.wait_for_replicas(&mut connection, &first_key).await?;
                }
                Ok(Some(u64::try_from(tid).unwrap_or(0)))
            }
            (_, check) => {
                let key = usize::try_from(check)
                    .ok()
                    .and_then(|at| changes.reads.get(at));
                Err(match key {
                    Some((key, _)) => StoreError::Conflict {
                        client: *key.client(),
                        what: key.describe(),
                    },
                    None => StoreError::Conflict {
                        client: ClientKey::from_bytes([0; 32]),
                        what: "a record this transaction read".to_owned(),
                    },
                })
            }
        }
    }

    /// After a commit Redis applied: wait until `replicas` replicas have it
    /// too (WAIT). Fewer within the time allowed: the commit is applied on
    /// the primary but not as durable as asked, so its outcome is reported
    /// unknown, never success.
    async fn wait_for_replicas(&self, connection: &mut Link, key: &str) -> Result<(), StoreError> {
        let millis = u64::try_from(RESPONSE_TIMEOUT.as_millis() / 2).unwrap_or(u64::MAX);
        let mut command = redis::cmd("WAIT");
        command.arg(self.replicas).arg(millis);
        // NOTE: on a cluster, WAIT must reach the primary the script ran on.
        let wait = connection.on_node_of(key, &command);
        let acknowledged = match tokio::time::timeout(RESPONSE_TIMEOUT, wait).await {
            Ok(Ok(acknowledged)) => i64::from_redis_value(&acknowledged).map_err(|err| {
                StoreError::CommitOutcomeUnknown {
                    source: Box::new(err),
                }
            })?,
            Ok(Err(err)) => {
                self.broken();
                return Err(StoreError::CommitOutcomeUnknown {
                    source: Box::new(err),
                });
            }
            Err(_) => {
                self.broken();
                return Err(StoreError::CommitOutcomeUnknown {
                    source: "no answer to WAIT".into(),
                });
            }
        };
        if acknowledged < i64::from(self.replicas) {
            return Err(StoreError::CommitOutcomeUnknown {
                source: format!(
                    "applied by {} but acknowledged by {acknowledged} of the {} replicas asked for within {millis} ms",
                    self.target, self.replicas
                )
                .into(),
            });
        }
        Ok(())
    }

    /// The container's now (the expiry rules' clock): a TTL is counted from
    /// it, so it fires once the rules say the session has expired.
    fn now_for_ttl(&self) -> u64 {
        self.clock.now()
    }

    /// Every session key of every bucket's access index (which may name
    /// sessions Redis already freed), sorted.
    async fn all_keys(&self) -> Result<Vec<String>, StoreError> {
        const LIST: &str = "listing sessions";
        let commands = (0..=255u8)
            .map(|bucket| {
                let mut command = redis::cmd("ZRANGE");
                command
                    .arg(format!("{}:{{{bucket:02x}}}:a", self.prefix))
                    .arg(0)
                    .arg(-1);
                command
            })
            .collect();
        let buckets: Vec<Vec<String>> = self.concurrently(LIST, commands).await?;
        let mut keys: Vec<String> = buckets.into_iter().flatten().collect();
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    /// The sessions `hexes`, read in one round trip: (key, image, value
    /// bytes) of those that exist.
    async fn records(&self, hexes: &[String]) -> Result<Vec<Stored>, StoreError> {
        const READ: &str = "reading sessions";
        if hexes.is_empty() {
            return Ok(Vec::new());
        }
        let commands = hexes
            .iter()
            .map(|hex| {
                let mut command = redis::cmd("HGETALL");
                command.arg(self.session_key(hex));
                command
            })
            .collect();
        let all: Vec<Vec<(Vec<u8>, Vec<u8>)>> = self.concurrently(READ, commands).await?;
        let mut out = Vec::new();
        for (hex, fields) in hexes.iter().zip(all) {
            let client: ClientKey = hex.parse()?;
            let bytes = fields
                .iter()
                .filter(|(f, _)| f.first() == Some(&b'd'))
                .map(|(_, v)| v.len() as u64)
                .sum();
            let image = image_of(&client, fields)?;
            if image.record.is_some() {
                out.push((client, image, bytes));
            }
        }
        Ok(out)
    }

    /// Up to `limit` sessions after `after`, in key order.
    pub(crate) async fn list(
        self: Arc<Self>,
        after: Option<ClientKey>,
        limit: usize,
    ) -> Result<Vec<Stored>, StoreError> {
        let after = after.map(|key| key.to_string());
        let keys: Vec<String> = self
            .all_keys()
            .await?
            .into_iter()
            .filter(|hex| after.as_ref().is_none_or(|after| hex > after))
            .collect();
        let mut out = Vec::new();
        for chunk in keys.chunks(limit.clamp(1, 1000)) {
            out.extend(self.records(chunk).await?);
            if out.len() >= limit {
                break;
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Every stored session (for stats).
    pub(crate) async fn everything(self: Arc<Self>) -> Result<Vec<Stored>, StoreError> {
        let keys = self.all_keys().await?;
        let mut out = Vec::new();
        for chunk in keys.chunks(1000) {
            out.extend(self.records(chunk).await?);
        }
        Ok(out)
    }

    /// One session with its value bytes.
    pub(crate) async fn detail(
        self: Arc<Self>,
        client: ClientKey,
    ) -> Result<Option<(SessionImage, u64)>, StoreError> {
        Ok(self
            .records(&[client.to_string()])
            .await?
            .pop()
            .map(|(_, image, bytes)| (image, bytes)))
    }

    /// The sessions of `principal`, in key order.
    pub(crate) async fn by_principal(
        self: Arc<Self>,
        principal: String,
    ) -> Result<Vec<ClientKey>, StoreError> {
        const PRINCIPAL: &str = "listing a principal's sessions";
        let commands = (0..=255u8)
            .map(|bucket| {
                let mut key = format!("{}:{{{bucket:02x}}}:p:", self.prefix).into_bytes();
                key.extend_from_slice(principal.as_bytes());
                let mut command = redis::cmd("SMEMBERS");
                command.arg(key);
                command
            })
            .collect();
        let buckets: Vec<Vec<String>> = self.concurrently(PRINCIPAL, commands).await?;
        let mut hexes: Vec<String> = buckets.into_iter().flatten().collect();
        hexes.sort_unstable();
        // A member whose session Redis freed (TTL) is stale: keep the live.
        Ok(self
            .records(&hexes)
            .await?
            .into_iter()
            .filter(|(_, image, _)| {
                image
                    .record
                    .as_ref()
                    .is_some_and(|r| r.principal.as_deref() == Some(principal.as_str()))
            })
            .map(|(client, _, _)| client)
            .collect())
    }

    /// Delete sessions; how many existed.
    pub(crate) async fn delete(self: Arc<Self>, keys: Vec<ClientKey>) -> Result<u64, StoreError> {
        const DELETE: &str = "deleting sessions";
        if keys.is_empty() {
            return Ok(0);
        }
        // One script per bucket (one slot in a cluster), sent at once.
        let mut by_bucket: BTreeMap<u8, Vec<String>> = BTreeMap::new();
        for key in &keys {
            by_bucket
                .entry(key.as_bytes()[0])
                .or_default()
                .push(key.to_string());
        }
        let link = self.link().await?;
        let mut sent = JoinSet::new();
        for hexes in by_bucket.into_values() {
            let keys: Vec<String> = hexes.iter().map(|hex| self.session_key(hex)).collect();
            let (script, prefix, mut link) =
                (self.delete.clone(), self.prefix.clone(), link.clone());
            sent.spawn(async move {
                let mut invocation = script.prepare_invoke();
                invocation.arg(prefix);
                for (key, hex) in keys.into_iter().zip(hexes) {
                    invocation.key(key).arg(hex);
                }
                invocation.invoke_async::<i64>(&mut link).await
            });
        }
        let mut removed: u64 = 0;
        while let Some(joined) = sent.join_next().await {
            let answer = joined.map_err(|err| StoreError::Storage {
                operation: DELETE,
                source: Box::new(err),
            })?;
            let count = answer.map_err(|err| self.failed(DELETE, err))?;
            removed += u64::try_from(count).unwrap_or(0);
        }
        Ok(removed)
    }

    /// Delete up to `batch` expired sessions, bucket by bucket.
    pub(crate) async fn sweep(
        self: Arc<Self>,
        idle_cutoff: Option<u64>,
        age_cutoff: Option<u64>,
        batch: usize,
    ) -> Result<SweepReport, StoreError> {
        const SWEEP: &str = "sweeping expired sessions";
        let idle = idle_cutoff.map_or(-1, |c| i64::try_from(c).unwrap_or(i64::MAX));
        let age = age_cutoff.map_or(-1, |c| i64::try_from(c).unwrap_or(i64::MAX));
        let batch = batch as u64;
        let mut removed: u64 = 0;
        let mut more = false;
        let mut connection = self.link().await?;
        for bucket in 0..=255u8 {
            let left = batch.saturating_sub(removed);
            if left == 0 {
                more = true;
                break;
            }
            let (swept, bucket_more): (u64, i64) = self
                .sweep
                .prepare_invoke()
                .key(format!("{}:{{{bucket:02x}}}:a", self.prefix))
                .arg(&self.prefix)
                .arg(format!("{bucket:02x}"))
                .arg(idle)
                .arg(age)
                .arg(left)
                .invoke_async(&mut connection)
                .await
                .map_err(|err| self.failed(SWEEP, err))?;
            removed += swept;
            if bucket_more == 1 && removed >= batch {
                more = true;
            }
        }
        Ok(SweepReport { removed, more })
    }

    pub(crate) async fn load_setting(
        self: Arc<Self>,
        name: String,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let mut connection = self.link().await?;
        connection
            .hget(format!("{}:settings", self.prefix), name)
            .await
            .map_err(|err| self.failed("reading a setting", err))
    }

    pub(crate) async fn store_setting(
        self: Arc<Self>,
        name: String,
        value: Vec<u8>,
    ) -> Result<(), StoreError> {
        let mut connection = self.link().await?;
        connection
            .hset(format!("{}:settings", self.prefix), name, value)
            .await
            .map_err(|err| self.failed("storing a setting", err))
    }

    /// Store unless present (HSETNX), then read: whoever stored first wins.
    pub(crate) async fn initialize_setting(
        self: Arc<Self>,
        name: String,
        value: Vec<u8>,
    ) -> Result<Vec<u8>, StoreError> {
        const SETTING: &str = "initializing a setting";
        let key = format!("{}:settings", self.prefix);
        let mut connection = self.link().await?;
        let _: bool = connection
            .hset_nx(&key, &name, value)
            .await
            .map_err(|err| self.failed(SETTING, err))?;
        let stored: Option<Vec<u8>> = connection
            .hget(&key, &name)
            .await
            .map_err(|err| self.failed(SETTING, err))?;
        stored.ok_or_else(|| StoreError::Storage {
            operation: SETTING,
            source: "the setting vanished after it was stored".into(),
        })
    }
}

/// The bucket part (`{B}`) of a key Keel writes.
fn bucket_of(key: &str) -> &str {
    key.split_once('{')
        .and_then(|(_, rest)| rest.split_once('}'))
        .map_or(key, |(bucket, _)| bucket)
}

/// A stored session: its key, its image, the bytes of its values.
pub(crate) type Stored = (ClientKey, SessionImage, u64);

impl RemoteStore for Rd {
    /// Polled on a tokio runtime, the read runs right there, on that
    /// runtime's connection (see `link.rs` for why); elsewhere on the
    /// container's own runtime.
    fn read(self: &Arc<Self>, client: ClientKey) -> Read {
        let rd = Arc::clone(self);
        Box::pin(async move {
            if Handle::try_current().is_ok() {
                rd.load(client).await
            } else {
                let own = Arc::clone(&rd);
                rd.runtime.spawn(own.load(client)).await
            }
        })
    }

    fn read_blocking(self: &Arc<Self>, client: ClientKey) -> Result<SessionImage, StoreError> {
        self.runtime.wait_for(Arc::clone(self).load(client))?
    }

    /// One script call per change set: Redis runs scripts one at a time,
    /// and the multiplexed connection pipelines concurrent ones.
    /// An asynchronous vote made on a tokio runtime commits on that
    /// runtime (see `link.rs`); a blocking one on the container's own, as
    /// the voting thread is blocked.
    fn submit(self: &Arc<Self>, changes: ChangeSet<Vec<u8>>, reply: Reply) {
        let here = match (&reply, Handle::try_current()) {
            (Reply::Async(_), Ok(handle)) => Some(handle),
            _ => None,
        };
        let rd = Arc::clone(self);
        let work = async move {
            let result = rd.commit_one(&changes).await;
            reply.send((result, changes));
        };
        match here {
            Some(handle) => drop(handle.spawn(work)),
            None => self.runtime.detach(work),
        }
    }

    /// On a cluster, within the bucket only: see `commit_one`.
    fn can_rename(&self, from: &ClientKey, to: &ClientKey) -> bool {
        !self.is_cluster() || from.as_bytes()[0] == to.as_bytes()[0]
    }

    fn wait(&self, answer: std_mpsc::Receiver<Answer>) -> Result<Answer, StoreError> {
        blocking_recv(answer)
    }
}

/// `len(package)` (u16 BE) ‖ package ‖ name: a value's field suffix.
fn item_field(key: &ItemKey) -> Vec<u8> {
    // NOTE: lengths are checked (`check_part`) before anything is buffered;
    // saturating keeps a missed check from panicking.
    let len = u16::try_from(key.package.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(2 + key.package.len() + key.name.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(key.package.as_bytes());
    out.extend_from_slice(key.name.as_bytes());
    out
}

/// A session's hash as an image (absent without a `v` field).
fn image_of(
    client: &ClientKey,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<SessionImage, StoreError> {
    let corrupt = |what: &str| StoreError::CorruptRecord {
        what: format!("{what} of session {client}"),
        source: "not as Keel writes it".into(),
    };
    let number = |bytes: &[u8], what: &str| -> Result<u64, StoreError> {
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| corrupt(what))
    };
    let text = |bytes: &[u8], what: &str| -> Result<String, StoreError> {
        String::from_utf8(bytes.to_vec()).map_err(|_| corrupt(what))
    };
    let mut image = SessionImage::default();
    let mut record = SessionRecord {
        version: 0,
        created: 0,
        last_access: 0,
        principal: None,
    };
    let mut exists = false;
    let mut versions: HashMap<ItemKey, u64> = HashMap::new();
    let mut values: Vec<(ItemKey, Vec<u8>)> = Vec::new();
    for (field, value) in fields {
        let Some((&tag, rest)) = field.split_first() else {
            continue;
        };
        match tag {
            b'v' if rest.is_empty() => {
                record.version = number(&value, "the version")?;
                exists = true;
            }
            b'c' if rest.is_empty() => record.created = number(&value, "the creation time")?,
            b'a' if rest.is_empty() => record.last_access = number(&value, "the last access")?,
            b'p' if rest.is_empty() => record.principal = Some(text(&value, "the principal")?),
            b'k' if rest.is_empty() => {
                image.packages_version = number(&value, "the package-set version")?;
            }
            b'n' => {
                let package = text(rest, "a package id")?;
                image
                    .names
                    .insert(package, number(&value, "a name-set version")?);
            }
            b'i' | b'd' => {
                let (len, item) = rest
                    .split_at_checked(2)
                    .ok_or_else(|| corrupt("a value's field"))?;
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                let (package, name) = item
                    .split_at_checked(len)
                    .ok_or_else(|| corrupt("a value's field"))?;
                let key = ItemKey {
                    client: *client,
                    package: text(package, "a package id")?,
                    name: text(name, "a name")?,
                };
                if tag == b'i' {
                    versions.insert(key, number(&value, "a value's version")?);
                } else {
                    values.push((key, value));
                }
            }
            _ => {}
        }
    }
    if !exists {
        return Ok(SessionImage::default());
    }
    image.record = Some(record);
    for (key, bytes) in values {
        let version = versions
            .get(&key)
            .copied()
            .ok_or_else(|| corrupt("a value without a version"))?;
        let value: Value = records::decode_value(&key, &bytes)?;
        image
            .items
            .insert((key.package, key.name), (version, Arc::new(value)));
    }
    Ok(image)
}
