//! The in-memory container: the same transactional semantics as the redb
//! container (values serialized at commit, optimistic versions, touches
//! merged by maximum), without durability.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    ops::Bound,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use keel_txn::{BoxError, DataManager, PerThread, SavepointState, ThreadHandle, Transaction};
use parking_lot::{Condvar, Mutex};

use crate::{
    ClientKey, Clock, ContainerStats, ExpiryPolicy, SessionAdmin, SessionDetail, SessionSummary,
    StoreError, SweepReport, SystemClock, Value,
    engine::{
        admin::{StatsBuilder, summary},
        apply::{self, ChangeSet},
        buffer::{At, Buffer, Validation, to_tree},
        container::BufferedContainer,
        records::{self, ItemKey, SessionRecord},
        view::{ReadView, Taken, WriteView},
    },
};

/// Process-wide counter that makes every RAM container's sort key unique.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A session data container in memory: transactional, but lost when the
/// process exits. zope.session's `RAMSessionDataContainer`, with the same
/// semantics as [`RedbContainer`](crate::RedbContainer): values are
/// serialized when the transaction commits (so an unserializable value fails
/// the commit), every record is versioned and validated optimistically.
///
/// Unlike the redb container, reads come from the current state rather than a
/// snapshot. To keep what a transaction sees consistent, reading something
/// committed after the transaction began is a [`StoreError::Conflict`] at
/// once, and every read is validated again at commit, even in a read-only
/// transaction; the retry loop re-runs such a transaction.
///
/// # Errors at commit
/// [`Transaction::commit`] fails with [`keel_txn::TxnError::Resource`], the
/// container's [`StoreError`] as its source: [`StoreError::Unserializable`]
/// (nothing written anywhere) or [`StoreError::Conflict`] (retryable).
///
/// ```
/// use keel_store::{ClientKey, RamContainer, SessionContainer, SessionValue};
/// use keel_txn::TransactionManager;
///
/// let container = RamContainer::new();
/// let manager = TransactionManager::new();
/// let key = ClientKey::from_client_id("client");
///
/// let mut tx = manager.begin();
/// container.create_session(&mut tx, &key)?;
/// container.insert(&mut tx, &key, "app", "count", SessionValue::new(1u32))?;
/// tx.commit()?;
///
/// let mut tx = manager.begin();
/// let value = container.get(&mut tx, &key, "app", "count")?.expect("stored");
/// assert_eq!(value.to_typed::<u32>()?, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RamContainer {
    // NOTE: a per-thread handle for each transaction's data manager, so that
    // requests on different cores do not share a reference count.
    shared: PerThread<Shared>,
    expiry: ExpiryPolicy,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for RamContainer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RamContainer")
            .field("sort_key", &self.shared.sort_key)
            .field("expiry", &self.expiry)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl Default for RamContainer {
    fn default() -> Self {
        Self::new()
    }
}

impl RamContainer {
    /// An empty container with [`ExpiryPolicy::ram_default`] and the system
    /// clock.
    pub fn new() -> Self {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        RamContainer {
            shared: PerThread::new(Shared {
                sort_key: format!("keel-store/ram/{id}"),
                state: Mutex::new(RamState::default()),
                commit_lock: CommitLock::default(),
            }),
            expiry: ExpiryPolicy::ram_default(),
            clock: Arc::new(SystemClock),
        }
    }

    /// Use `expiry` instead of [`ExpiryPolicy::ram_default`].
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

    /// Run `op` on the state as one commit of its own (admin operations),
    /// between other transactions' votes and finishes, never inside.
    fn commit_alone<T>(
        &self,
        op: impl FnOnce(&mut RamState) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _lock = self.shared.commit_lock.acquire();
        let mut state = self.shared.state.lock();
        op(&mut state)
    }
}

/// What the container shares with its data managers.
#[derive(Debug)]
struct Shared {
    sort_key: String,
    state: Mutex<RamState>,
    commit_lock: CommitLock,
}

/// Held from a data manager's vote to its finish or abort, so that nothing
/// commits between validation and apply. Not a guard object: a data manager
/// must be `Send` and outlive the calls that take and release it.
#[derive(Debug, Default)]
struct CommitLock {
    held: Mutex<bool>,
    released: Condvar,
}

impl CommitLock {
    fn lock(&self) {
        let mut held = self.held.lock();
        while *held {
            self.released.wait(&mut held);
        }
        *held = true;
    }

    fn unlock(&self) {
        *self.held.lock() = false;
        self.released.notify_one();
    }

    fn acquire(&self) -> CommitLockGuard<'_> {
        self.lock();
        CommitLockGuard(self)
    }
}

struct CommitLockGuard<'a>(&'a CommitLock);

impl Drop for CommitLockGuard<'_> {
    fn drop(&mut self) {
        self.0.unlock();
    }
}

/// A stored value: its tree, and the size of its encoding (what the redb
/// container would store).
#[derive(Debug, Clone)]
struct RamValue {
    /// Shared with the requests that read it.
    tree: Arc<Value>,
    size: u64,
}

#[derive(Debug, Clone)]
struct RamItem {
    version: u64,
    value: RamValue,
}

/// The committed state.
#[derive(Debug, Default)]
struct RamState {
    last_tid: u64,
    sessions: BTreeMap<ClientKey, SessionRecord>,
    items: BTreeMap<ItemKey, RamItem>,
    names: BTreeMap<(ClientKey, String), u64>,
    packages: HashMap<ClientKey, u64>,
    by_access: BTreeSet<(u64, ClientKey)>,
    by_created: BTreeSet<(u64, ClientKey)>,
    principals: BTreeSet<(String, ClientKey)>,
    settings: BTreeMap<String, Vec<u8>>,
}

impl RamState {
    fn items_of<'a>(
        &'a self,
        client: &'a ClientKey,
        package: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a ItemKey, &'a RamItem)> + 'a {
        let start = ItemKey {
            client: *client,
            package: package.unwrap_or_default().to_owned(),
            name: String::new(),
        };
        self.items.range(start..).take_while(move |(key, _)| {
            key.client == *client && package.is_none_or(|p| key.package == p)
        })
    }

    fn value_bytes(&self, client: &ClientKey) -> u64 {
        self.items_of(client, None).map(|(_, i)| i.value.size).sum()
    }
}

impl ReadView for RamState {
    fn session(&mut self, client: &ClientKey) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.sessions.get(client).cloned())
    }

    fn item(&mut self, key: &ItemKey) -> Result<Option<(u64, Arc<Value>)>, StoreError> {
        Ok(self
            .items
            .get(key)
            .map(|item| (item.version, Arc::clone(&item.value.tree))))
    }

    fn item_version(&mut self, key: &ItemKey) -> Result<u64, StoreError> {
        Ok(self.items.get(key).map_or(0, |item| item.version))
    }

    fn names_version(&mut self, client: &ClientKey, package: &str) -> Result<u64, StoreError> {
        Ok(self
            .names
            .get(&(*client, package.to_owned()))
            .copied()
            .unwrap_or(0))
    }

    fn packages_version(&mut self, client: &ClientKey) -> Result<u64, StoreError> {
        Ok(self.packages.get(client).copied().unwrap_or(0))
    }

    fn names(&mut self, client: &ClientKey, package: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .items_of(client, Some(package))
            .map(|(key, _)| key.name.clone())
            .collect())
    }

    fn packages(&mut self, client: &ClientKey) -> Result<Vec<String>, StoreError> {
        let mut packages: Vec<String> = Vec::new();
        for (key, _) in self.items_of(client, None) {
            if packages.last() != Some(&key.package) {
                packages.push(key.package.clone());
            }
        }
        Ok(packages)
    }
}

impl WriteView for RamState {
    type Stored = RamValue;

    fn put_session(
        &mut self,
        client: &ClientKey,
        old: Option<&SessionRecord>,
        new: &SessionRecord,
    ) -> Result<(), StoreError> {
        if let Some(old) = old {
            self.unindex(client, old);
        }
        self.by_access.insert((new.last_access, *client));
        self.by_created.insert((new.created, *client));
        if let Some(principal) = &new.principal {
            self.principals.insert((principal.clone(), *client));
        }
        self.sessions.insert(*client, new.clone());
        Ok(())
    }

    fn delete_session(
        &mut self,
        client: &ClientKey,
        old: &SessionRecord,
    ) -> Result<(), StoreError> {
        self.unindex(client, old);
        self.sessions.remove(client);
        Ok(())
    }

    fn take_session(&mut self, client: &ClientKey) -> Result<Taken, StoreError> {
        // RAM holds decoded records: none is ever damaged.
        Ok(match self.sessions.remove(client) {
            Some(old) => {
                self.unindex(client, &old);
                Taken::Record(old)
            }
            None => Taken::Absent,
        })
    }

    fn wipe(&mut self, client: &ClientKey) -> Result<(), StoreError> {
        let items: Vec<ItemKey> = self
            .items_of(client, None)
            .map(|(key, _)| key.clone())
            .collect();
        for key in items {
            self.items.remove(&key);
        }
        let names: Vec<(ClientKey, String)> = self
            .names
            .range((*client, String::new())..)
            .take_while(|((c, _), _)| c == client)
            .map(|(key, _)| key.clone())
            .collect();
        for key in names {
            self.names.remove(&key);
        }
        self.packages.remove(client);
        Ok(())
    }

    fn put_item(
        &mut self,
        key: &ItemKey,
        version: u64,
        value: &RamValue,
    ) -> Result<bool, StoreError> {
        let item = RamItem {
            version,
            value: value.clone(),
        };
        Ok(self.items.insert(key.clone(), item).is_some())
    }

    fn remove_item(&mut self, key: &ItemKey) -> Result<bool, StoreError> {
        Ok(self.items.remove(key).is_some())
    }

    fn set_names_version(
        &mut self,
        client: &ClientKey,
        package: &str,
        version: u64,
    ) -> Result<(), StoreError> {
        self.names.insert((*client, package.to_owned()), version);
        Ok(())
    }

    fn set_packages_version(&mut self, client: &ClientKey, version: u64) -> Result<(), StoreError> {
        self.packages.insert(*client, version);
        Ok(())
    }

    fn expired(
        &mut self,
        idle_before: Option<u64>,
        created_before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ClientKey>, StoreError> {
        let mut found = BTreeSet::new();
        for (cutoff, index) in [
            (idle_before, &self.by_access),
            (created_before, &self.by_created),
        ] {
            let Some(cutoff) = cutoff else { continue };
            for (_, client) in index.range(..(cutoff, ClientKey::from_bytes([0; 32]))) {
                if found.len() >= limit {
                    break;
                }
                found.insert(*client);
            }
        }
        Ok(found.into_iter().collect())
    }
}

impl RamState {
    fn unindex(&mut self, client: &ClientKey, old: &SessionRecord) {
        self.by_access.remove(&(old.last_access, *client));
        self.by_created.remove(&(old.created, *client));
        if let Some(principal) = &old.principal {
            self.principals.remove(&(principal.clone(), *client));
        }
    }
}

/// The state as a transaction that began at commit `start` may read it:
/// anything committed later is a conflict (there is no snapshot to read the
/// older version from).
pub(crate) struct Snapshot<'a> {
    state: &'a RamState,
    start: u64,
}

impl Snapshot<'_> {
    fn check(&self, client: &ClientKey, what: &str, version: u64) -> Result<u64, StoreError> {
        if version > self.start {
            return Err(StoreError::Conflict {
                client: *client,
                what: format!("{what} (changed after this transaction began)"),
            });
        }
        Ok(version)
    }
}

impl ReadView for Snapshot<'_> {
    fn session(&mut self, client: &ClientKey) -> Result<Option<SessionRecord>, StoreError> {
        let record = self.state.sessions.get(client).cloned();
        if let Some(record) = &record {
            self.check(client, "the session record", record.version)?;
        }
        Ok(record)
    }

    fn item(&mut self, key: &ItemKey) -> Result<Option<(u64, Arc<Value>)>, StoreError> {
        let Some(item) = self.state.items.get(key) else {
            return Ok(None);
        };
        let version = self.check(&key.client, &format!("value {:?}", key.name), item.version)?;
        Ok(Some((version, Arc::clone(&item.value.tree))))
    }

    fn item_version(&mut self, key: &ItemKey) -> Result<u64, StoreError> {
        let version = self.state.items.get(key).map_or(0, |item| item.version);
        self.check(&key.client, &format!("value {:?}", key.name), version)
    }

    fn names_version(&mut self, client: &ClientKey, package: &str) -> Result<u64, StoreError> {
        let version = self
            .state
            .names
            .get(&(*client, package.to_owned()))
            .copied()
            .unwrap_or(0);
        self.check(
            client,
            &format!("the names of package {package:?}"),
            version,
        )
    }

    fn packages_version(&mut self, client: &ClientKey) -> Result<u64, StoreError> {
        let version = self.state.packages.get(client).copied().unwrap_or(0);
        self.check(client, "the session's set of packages", version)
    }

    fn names(&mut self, client: &ClientKey, package: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .state
            .items_of(client, Some(package))
            .map(|(key, _)| key.name.clone())
            .collect())
    }

    fn packages(&mut self, client: &ClientKey) -> Result<Vec<String>, StoreError> {
        let mut packages: Vec<String> = Vec::new();
        for (key, _) in self.state.items_of(client, None) {
            if packages.last() != Some(&key.package) {
                packages.push(key.package.clone());
            }
        }
        Ok(packages)
    }
}

/// A transaction's data manager for one RAM container.
struct RamDm {
    shared: ThreadHandle<Shared>,
    /// The last commit when the transaction first used the container.
    start: u64,
    buffer: Buffer,
    prepared: Option<ChangeSet<RamValue>>,
    holds_commit_lock: bool,
}

impl RamDm {
    fn new(shared: ThreadHandle<Shared>) -> Self {
        let start = shared.state.lock().last_tid;
        RamDm {
            shared,
            start,
            buffer: Buffer::default(),
            prepared: None,
            holds_commit_lock: false,
        }
    }

    fn release(&mut self) {
        if self.holds_commit_lock {
            self.holds_commit_lock = false;
            self.shared.commit_lock.unlock();
        }
    }

    fn reset(&mut self) {
        self.prepared = None;
        self.buffer = Buffer::default();
        self.release();
    }
}

impl DataManager for RamDm {
    fn sort_key(&self) -> &str {
        &self.shared.sort_key
    }

    /// In memory: the commit lock is held only for the in-memory apply.
    fn commit_may_block(&self) -> bool {
        false
    }

    fn commit(&mut self) -> Result<(), BoxError> {
        let changes =
            std::mem::take(&mut self.buffer).change_set(Validation::Always, |key, value| {
                let tree = to_tree(key, value)?;
                let size = records::encode_value(&tree).len() as u64;
                Ok(RamValue {
                    tree: Arc::new(tree),
                    size,
                })
            })?;
        self.prepared = Some(changes);
        Ok(())
    }

    fn tpc_vote(&mut self) -> Result<(), BoxError> {
        let Some(changes) = &self.prepared else {
            return Ok(());
        };
        if changes.is_empty() {
            return Ok(());
        }
        self.shared.commit_lock.lock();
        self.holds_commit_lock = true;
        let mut state = self.shared.state.lock();
        apply::validate(&mut *state, changes)?;
        Ok(())
    }

    fn tpc_finish(&mut self) {
        if let Some(changes) = self.prepared.take()
            && changes.has_writes()
        {
            let mut state = self.shared.state.lock();
            let tid = state.last_tid + 1;
            // NOTE: the RAM view's writes cannot fail; the Result is the
            // trait's, shared with redb.
            if let Err(err) = apply::apply(&mut *state, &changes, tid) {
                tracing::error!(error = %err, "applying a validated RAM commit failed");
            }
            state.last_tid = tid;
        }
        self.reset();
    }

    fn tpc_abort(&mut self) {
        self.reset();
    }

    fn abort(&mut self) {
        self.reset();
    }

    fn savepoint(&mut self) -> Option<SavepointState> {
        Some(self.buffer.savepoint())
    }

    fn rollback(&mut self, state: &SavepointState) -> Result<(), BoxError> {
        self.buffer.rollback(state)
    }

    fn should_retry(&self, error: &(dyn std::error::Error + 'static)) -> bool {
        StoreError::is_retryable_source(error)
    }
}

impl Drop for RamDm {
    fn drop(&mut self) {
        self.release();
    }
}

impl BufferedContainer for RamContainer {
    type View<'a> = Snapshot<'a>;

    fn policy(&self) -> &ExpiryPolicy {
        &self.expiry
    }

    fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    /// Run `op` on this transaction's buffer, against the current state.
    fn with_buffer<T>(
        &self,
        tx: &mut Transaction,
        op: impl for<'v> FnOnce(&mut Buffer, &mut Self::View<'v>, At) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let at = self.at();
        let dm = tx.join_with(&self.shared.sort_key, || RamDm::new(self.shared.handle()))?;
        let state = self.shared.state.lock();
        let mut view = Snapshot {
            state: &state,
            start: dm.start,
        };
        op(&mut dm.buffer, &mut view, at)
    }
}

impl SessionAdmin for RamContainer {
    fn list_sessions(
        &self,
        after: Option<&ClientKey>,
        limit: usize,
    ) -> Result<Vec<SessionSummary>, StoreError> {
        let now = self.clock.now();
        let state = self.shared.state.lock();
        let start = after.map_or(Bound::Unbounded, |key| Bound::Excluded(*key));
        Ok(state
            .sessions
            .range((start, Bound::Unbounded))
            .take(limit)
            .map(|(client, record)| {
                let bytes = state.value_bytes(client);
                summary(client, record, bytes, &self.expiry, now)
            })
            .collect())
    }

    fn session_detail(&self, key: &ClientKey) -> Result<Option<SessionDetail>, StoreError> {
        let now = self.clock.now();
        let state = self.shared.state.lock();
        let Some(record) = state.sessions.get(key) else {
            return Ok(None);
        };
        let mut data: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
        for (item_key, item) in state.items_of(key, None) {
            data.entry(item_key.package.clone())
                .or_default()
                .insert(item_key.name.clone(), Value::clone(&item.value.tree));
        }
        let bytes = state.value_bytes(key);
        Ok(Some(SessionDetail {
            summary: summary(key, record, bytes, &self.expiry, now),
            data,
        }))
    }

    fn delete_sessions(&self, keys: &[ClientKey]) -> Result<u64, StoreError> {
        self.commit_alone(|state| apply::delete_sessions(state, keys))
    }

    fn sessions_of_principal(&self, principal: &str) -> Result<Vec<ClientKey>, StoreError> {
        records::check_part("principal", principal)?;
        let state = self.shared.state.lock();
        Ok(state
            .principals
            .range((principal.to_owned(), ClientKey::from_bytes([0; 32]))..)
            .take_while(|(p, _)| p == principal)
            .map(|(_, client)| *client)
            .collect())
    }

    fn stats(&self) -> Result<ContainerStats, StoreError> {
        let mut stats = StatsBuilder::new(self.expiry, self.clock.now());
        let state = self.shared.state.lock();
        for record in state.sessions.values() {
            stats.add_session(record);
        }
        for item in state.items.values() {
            stats.add_value_bytes(item.value.size);
        }
        Ok(stats.finish(None))
    }

    fn sweep(&self, batch: usize) -> Result<SweepReport, StoreError> {
        let now = self.clock.now();
        self.commit_alone(|state| apply::sweep(state, &self.expiry, now, batch))
    }

    fn load_setting(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.shared.state.lock().settings.get(name).cloned())
    }

    fn store_setting(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.shared
            .state
            .lock()
            .settings
            .insert(name.to_owned(), value.to_vec());
        Ok(())
    }

    fn initialize_setting(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        Ok(self
            .shared
            .state
            .lock()
            .settings
            .entry(name.to_owned())
            .or_insert_with(|| value.to_vec())
            .clone())
    }
}
